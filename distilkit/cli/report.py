"""Measuring each stage (task metric, parameters, size on disk, CPU latency) and writing the comparison table."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from pathlib import Path

import torch

from ..measure import count_parameters, cpu_latency_ms, folder_size_mb, machine_info
from ..model_card import ModelRow, recipe_from_config, teacher_hub_id, teacher_name, write_model_card
from .recipe import EvalArguments

logger = logging.getLogger("distilkit.cli")

RESULTS_MD = "results.md"
RESULTS_JSON = "results.json"


@dataclasses.dataclass
class StageResult:
    stage: str
    source: str
    metrics: dict[str, float]
    parameters: int
    size_mb: float | None
    latency_ms: float | None
    layers: int | None
    heads: int | None


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


def latency_ms(model, eval_args: EvalArguments) -> tuple[float, int]:
    """Median CPU latency at the configured batch and length (clamped to the model's maximum length)."""
    seq_len = eval_args.latency_seq_len
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit and seq_len > limit:
        logger.warning("latency_seq_len=%d is longer than the model's %d positions; measuring at %d.",
                       seq_len, limit, limit)
        seq_len = limit
    value = cpu_latency_ms(model, eval_args.latency_batch_size, seq_len, threads=eval_args.latency_threads)
    return value, seq_len


def measure(stage: str, model, source: str | Path, data, eval_args: EvalArguments, task: str,
            batch_size: int, progress: bool = True) -> StageResult:
    from .steps import head_count

    metrics = {}
    if data is not None and data.validation is not None:
        metrics = task_metrics(model, data.validation, data.collator, eval_args, task, batch_size,
                               f"evaluating {stage}", progress)
    folder = Path(source)
    size = folder_size_mb(folder) if folder.is_dir() else None
    latency = latency_ms(model, eval_args)[0] if eval_args.latency else None
    return StageResult(stage=stage, source=str(source), metrics=metrics, parameters=count_parameters(model),
                       size_mb=size, latency_ms=latency, layers=getattr(model.config, "num_hidden_layers", None),
                       heads=head_count(model))


def latency_setup(eval_args: EvalArguments, machine: dict) -> str:
    from ..measure import latency_setup as describe

    return describe(eval_args.latency_batch_size, eval_args.latency_seq_len, eval_args.latency_threads, machine)


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
    setup = latency_setup(eval_args, machine)
    table = markdown_table(results)
    notes = [f"Metrics on {data_description}."]
    if eval_args.latency:
        notes.append(f"Latency: median of 10 forward passes, {setup}.")
    notes.append("Size on disk counts the weight files only. Parameters of int8 layers count their int8 weights.")
    md = folder / RESULTS_MD
    md.write_text(table + "\n\n" + "\n".join(notes) + "\n", encoding="utf-8")
    payload = {"data": data_description, "latency_setup": setup if eval_args.latency else None,
               "machine": machine, "stages": [dataclasses.asdict(r) for r in results], **(extra or {})}
    js = folder / RESULTS_JSON
    js.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    return md, js


def write_cards(results: list[StageResult], *, teacher_source: str | None, recipe_groups: dict,
                datasets: list[str] | None,
                eval_args: EvalArguments, limitations: list[str] = (), data_name: str | None = None,
                run_name: str | None = None, output_dir: str | Path | None = None) -> list[Path]:
    """A model card (README.md) in every stage folder under `output_dir`, each with the whole table.

    Folders outside `output_dir` (a teacher given as a folder, the input of `prune`) are never written to.
    `teacher_source`: the teacher's folder or Hub id, as given (None: not distilled); a Hub id becomes the cards'
    `base_model`, a folder is only named.
    """
    machine = machine_info()
    written = []
    for this in results:
        folder = Path(this.source)
        if not (folder / "config.json").is_file():
            continue  # e.g. a teacher given as a Hub id: its card is on the Hub
        if output_dir is not None and not folder.resolve().is_relative_to(Path(output_dir).resolve()):
            continue  # an input of this run, not one of its outputs
        rows = [ModelRow(name=r.stage, metrics=r.metrics, parameters=r.parameters, size_mb=r.size_mb,
                         latency_ms=r.latency_ms, this_model=r is this) for r in results]
        distilled = this.stage != "teacher"
        written.append(write_model_card(
            folder, teacher=teacher_name(teacher_source) if distilled else None,
            teacher_hub_id=teacher_hub_id(teacher_source) if distilled else None, rows=rows,
            model_name=f"{run_name}-{this.stage}" if run_name else None,
            recipe=recipe_groups.get(this.stage, {}), datasets=datasets,
            eval_dataset_name=data_name, latency_setup=latency_setup(eval_args, machine) if eval_args.latency else None,
            limitations=list(limitations),
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
