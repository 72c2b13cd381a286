"""A run's report: each stage measured (task metrics, parameters, size on disk, CPU latency, the stages timed in
interleaved rounds), the comparison table (results.md, results.json), the stages' model cards and the recipe."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path

import torch

from ..engines import describe, on_engine
from ..measure import count_parameters, folder_size_mb, interleaved_latency_ms, latency_setup, machine_info
from ..model_card import ModelRow, recipe_from_config, teacher_hub_id, teacher_name, write_model_card
from .recipe import EvalArguments, Recipe, write_recipe
from .stages import write_text

logger = logging.getLogger("distilkit.pipeline")

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"
LATENCY_ROUNDS = 10  # rounds of the interleaved latency measurement


@dataclasses.dataclass
class StageResult:
    """One model of a run as measured: `source` is its folder (or the Hub id / folder it was read from)."""

    stage: str
    source: str
    metrics: dict[str, float]
    parameters: int
    size_mb: float | None
    latency_ms: float | None
    layers: int | None
    heads: int | None

    def row(self, this_model: bool = False) -> ModelRow:
        """The model card's table row of this stage."""
        return ModelRow(name=self.stage, metrics=self.metrics, parameters=self.parameters, size_mb=self.size_mb,
                        latency_ms=self.latency_ms, this_model=this_model)


def metric_names(eval_args: EvalArguments, task: str) -> list[str]:
    if task == "causal-lm":
        return ["perplexity"]
    return list(eval_args.metrics or ["accuracy"])


def load_metrics(names: list[str]) -> list:
    from ..metrics import load_metric

    # keep_in_memory: no cache files, so processes of a distributed run never contend for one.
    return [load_metric(name, keep_in_memory=True) for name in names]


def compute_metrics_function(eval_args: EvalArguments, task: str):
    """`compute_metrics` for the Trainer's evaluations during training (None for causal LMs: eval_loss says it)."""
    if task == "causal-lm":
        return None
    modules = load_metrics(metric_names(eval_args, task))

    def compute(prediction):
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        predicted = logits.argmax(-1)
        scores = {}
        for module in modules:
            scores.update(module.compute(predictions=predicted, references=prediction.label_ids))
        return scores

    return compute


@torch.inference_mode()
def task_metrics(model, dataset, collator, eval_args: EvalArguments, task: str, batch_size: int,
                 description: str, progress: bool = True) -> dict[str, float]:
    """The task metrics of `model` on `dataset`, one pass with a progress bar (single process), on the device the
    model is on."""
    from tqdm.auto import tqdm

    model.eval()
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collator)
    predictions, references, losses, weights = [], [], [], []
    for batch in tqdm(loader, desc=description, leave=False, disable=not progress):
        batch = {key: value.to(model.device) for key, value in batch.items()}
        outputs = model(**batch)
        if task == "causal-lm":
            tokens = int((batch["labels"][:, 1:] != -100).sum())
            losses.append(float(outputs.loss) * tokens)
            weights.append(tokens)
        else:
            predictions.append(outputs.logits.argmax(-1).cpu())
            references.append(batch["labels"].cpu())
    if task == "causal-lm":
        return {"perplexity": math.exp(sum(losses) / max(sum(weights), 1))}
    predicted, labels = torch.cat(predictions).numpy(), torch.cat(references).numpy()
    scores: dict[str, float] = {}
    for module in load_metrics(metric_names(eval_args, task)):
        scores.update(module.compute(predictions=predicted, references=labels))
    return scores


def measure(stage: str, model, source: str | Path, data, eval_args: EvalArguments, task: str,
            batch_size: int, progress: bool = True) -> StageResult:
    """Task metrics (on data.validation, when there is one), parameters and size on disk of one stage; its
    latency is measured beside the other stages' (`add_latencies`)."""
    metrics = {}
    if data is not None and data.validation is not None:
        metrics = task_metrics(model, data.validation, data.collator, eval_args, task, batch_size,
                               f"evaluating {stage}", progress)
    folder = Path(source)
    size = folder_size_mb(folder) if folder.is_dir() else None
    return StageResult(stage=stage, source=str(source), metrics=metrics, parameters=count_parameters(model),
                       size_mb=size, latency_ms=None, layers=getattr(model.config, "num_hidden_layers", None),
                       heads=head_count(model))


def latency_seq_len(models, eval_args: EvalArguments) -> int:
    """The latency measurement's sequence length: latency_seq_len, clamped to the shortest model's positions."""
    seq_len = eval_args.latency_seq_len
    limit = min((getattr(m.config, "max_position_embeddings", None) or seq_len for m in models), default=seq_len)
    if limit < seq_len:
        logger.warning("latency_seq_len=%d is longer than a model's %d positions; measuring at %d.",
                       seq_len, limit, limit)
    return min(seq_len, limit)


def add_latencies(results: list[StageResult], models: list, eval_args: EvalArguments, progress: bool = False
                  ) -> None:
    """Each result's CPU latency in the evaluation section's engine (`distilkit.engines.on_engine`: with
    onnxruntime, each model exported to ONNX first): the median over rounds in which every model runs once, in turn
    (`distilkit.measure.interleaved_latency_ms`), so a change of load on the machine affects them alike."""
    if not eval_args.latency or not results:
        return
    with on_engine({str(i): model for i, model in enumerate(models)}, eval_args.engine,
                   eval_args.latency_threads) as running:
        timed = interleaved_latency_ms(running, eval_args.latency_batch_size, latency_seq_len(models, eval_args),
                                       threads=eval_args.latency_threads, rounds=LATENCY_ROUNDS, progress=progress)
    for i, result in enumerate(results):
        result.latency_ms = timed[str(i)]["median"]


def head_count(model) -> int | None:
    """Attention heads left in the model (None for a family distilkit cannot prune)."""
    try:
        from ..pruning import kept_heads

        return sum(len(heads) for heads in kept_heads(model))
    except (ImportError, ValueError, KeyError, AttributeError):
        return None


def describe_latency(eval_args: EvalArguments, machine: dict) -> str:
    """How latency was measured (`distilkit.measure.latency_setup`) with the evaluation section's settings."""
    return latency_setup(eval_args.latency_batch_size, eval_args.latency_seq_len, eval_args.latency_threads,
                         machine) + describe(eval_args.engine)


def markdown_table(results: list[StageResult]) -> str:
    names = list(dict.fromkeys(name for r in results for name in r.metrics))
    header = ["Stage", *names, "Parameters", "Size on disk (MB)", "Latency (ms)", "Layers", "Heads"]
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in results:
        cells = [r.stage, *(f"{r.metrics[n]:.4f}" if n in r.metrics else "–" for n in names),
                 f"{r.parameters / 1e6:.2f}M", "–" if r.size_mb is None else f"{r.size_mb:.1f}",
                 "–" if r.latency_ms is None else f"{r.latency_ms:.1f}",
                 "–" if r.layers is None else str(r.layers), "–" if r.heads is None else str(r.heads)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(results: list[StageResult], folder: str | Path, eval_args: EvalArguments, *,
                  data_description: str, extra: dict | None = None) -> tuple[Path, Path]:
    """results.md (table plus how it was measured) and results.json in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    machine = machine_info()
    setup = describe_latency(eval_args, machine)
    table = markdown_table(results)
    notes = [f"Metrics on {data_description}."]
    if eval_args.latency:
        notes.append(f"Latency: median over {LATENCY_ROUNDS} rounds in which every model runs once in turn, {setup}.")
    notes.append("Size on disk counts the weight files only. Parameters of int8 layers count their int8 weights.")
    md, js = folder / RESULTS_MD, folder / RESULTS_JSON
    write_text(md, table + "\n\n" + "\n".join(notes) + "\n")
    payload = {"data": data_description, "latency_setup": setup if eval_args.latency else None,
               "machine": machine, "stages": stages_json(results, folder), **(extra or {})}
    write_text(js, json.dumps(payload, indent=2) + "\n")
    return md, js


def stages_json(results: list[StageResult], folder: str | Path) -> list[dict]:
    """The results as results.json stores them: a stage folder inside the run's `folder` relative to it (the
    file stays true when the run folder moves); any other source as it was given."""
    root = Path(folder).resolve()
    out = []
    for result in results:
        source = Path(result.source)
        if source.is_absolute() and source.resolve().is_relative_to(root):
            source = source.resolve().relative_to(root)
        out.append({**dataclasses.asdict(result), "source": str(source)})
    return out


def write_cards(results: list[StageResult], *, teacher: str | None, teacher_hub_id: str | None,
                recipe_groups: dict, datasets: list[str] | None = None, latency_setup: str | None = None,
                limitations: list[str] = (), data_name: str | None = None, run_name: str | None = None,
                output_dir: str | Path | None = None) -> list[Path]:
    """A model card (README.md) in every stage folder under `output_dir`, each with the whole table and its stage's
    `recipe_groups[stage]`. `teacher` / `teacher_hub_id`: how the cards name the teacher and link it
    (`distilkit.model_card.teacher_name` / `teacher_hub_id`); the teacher's own stage names none.

    Folders outside `output_dir` (a teacher given as a folder, the input of `prune`) are never written to.
    """
    written = []
    for this in results:
        folder = Path(this.source)
        if not (folder / "config.json").is_file():
            continue  # e.g. a teacher given as a Hub id: its card is on the Hub
        if output_dir is not None and not folder.resolve().is_relative_to(Path(output_dir).resolve()):
            continue  # an input of this run, not one of its outputs
        distilled = this.stage != "teacher"
        written.append(write_model_card(
            folder, teacher=teacher if distilled else None, teacher_hub_id=teacher_hub_id if distilled else None,
            rows=[r.row(this_model=r is this) for r in results],
            model_name=f"{run_name}-{this.stage}" if run_name else None,
            recipe=recipe_groups.get(this.stage, {}), datasets=datasets, eval_dataset_name=data_name,
            latency_setup=latency_setup, limitations=list(limitations),
        ))
    return written


def card_recipe(args, distilled: bool = True, extra: dict | None = None) -> dict:
    """The card's recipe groups for a stage trained with `args` (`recipe_from_config`; only its training settings
    when not `distilled`), with the groups of `extra` merged in."""
    groups = recipe_from_config(args)
    if not distilled:
        groups = {"Training": groups["Training"]}
    for title, settings in (extra or {}).items():
        groups[title] = {**groups.get(title, {}), **settings}
    return groups


def hub_datasets(data_args) -> list[str] | None:
    """The data set's Hub id for the card's metadata (None for local files)."""
    return [data_args.dataset] if data_args.dataset and not Path(data_args.dataset).exists() else None


def print_table(results: list[StageResult]) -> None:
    print("\n" + markdown_table(results) + "\n", flush=True)


def finish(recipe: Recipe, results: list[StageResult], groups: dict, *, data, teacher_source: str | None,
           started: float, limitations: list[str] = ()) -> None:
    """The end of a run, on the main process: results.md/json, the stages' model cards and the recipe written
    under output_dir, and the table printed."""
    training = recipe.training
    write_results(results, training.output_dir, recipe.evaluation, data_description=data.description,
                  extra={"command": recipe.command, "recipe": recipe.values,
                         "wall_time_s": round(time.perf_counter() - started, 1)})
    e = recipe.evaluation
    write_cards(results, teacher=teacher_name(teacher_source), teacher_hub_id=teacher_hub_id(teacher_source),
                recipe_groups=groups, datasets=hub_datasets(recipe.data),
                latency_setup=describe_latency(e, machine_info()) if e.latency else None,
                limitations=list(limitations), data_name=data.description, run_name=Path(training.output_dir).name,
                output_dir=training.output_dir)
    write_recipe(recipe, training.output_dir)
    print_table(results)
    folders = ", ".join(f"{r.stage}/" for r in results if Path(r.source).parent == Path(training.output_dir))
    print(f"Saved under {training.output_dir}: {folders} results.md, results.json.")
