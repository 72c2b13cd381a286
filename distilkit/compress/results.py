"""What a `compress` run reports: every stage measured against the teacher, the verdict on the target, and the
files that say so (results.json, results.md, tradeoff.png, and a model card in every stage folder).

Latency is measured in ONE interleaved run over the teacher and every stage (`measure.interleaved_timing`), so
the speedups compare models under the same machine load; a latency is the 20th percentile of the rounds (what load
cannot fake; the median and spread are reported beside it), and the run reads the load other processes put on the
cores meanwhile. The verdict is "met", "missed" or, when the machine was busy (`measure.Timing.busy`), "unreliable":
results.md then says why and gives the command that measures again (`--measure_only true`; `CompressArguments.
measure_only`). Sizes are the stage folders' weight files (`measure.folder_size_mb`; the teacher's, which may have
no folder, is its exact weight size from the plan); metrics come from a Trainer's evaluation with the run's
`compute_metrics`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch

from .. import measure
from ..engines import describe, on_engine
from ..export.folder import ONNX_FILE
from ..pipeline import report
from ..pipeline.report import StageResult, head_count
from ..pipeline.stages import write_text
from ..quantization.attention import float_attention
from ..serialization.atomic import publishing_file
from .plan import PLAN_MD, Plan, cell
from .target import MET, MISSED, UNRELIABLE

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
TRADEOFF_PNG = "tradeoff.png"
# Trainer.evaluate's bookkeeping, not metrics of the model.
NOT_METRICS = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time", "epoch")
# How results.md tells a Python caller to measure again (the command line passes its own command).
PYTHON_REMEASURE = "compress(...)  # the same arguments, with CompressArguments(..., measure_only=True)"


@dataclasses.dataclass
class StageOutcome(StageResult):
    """One model of the run (the teacher, then each stage) as measured at the end: `latency_ms` is its estimate
    (the 20th percentile of the interleaved rounds), `median_ms` and `spread` (p25..p75 over the median) beside it,
    `speedup` the teacher's estimate over its own, in the same measurement."""

    speedup: float | None = None
    median_ms: float | None = None
    spread: float | None = None


@dataclasses.dataclass
class CompressResult:
    """The plan, every model measured (teacher first, the final stage last) and the `verdict` on the final one:
    "met", "missed", or "unreliable" when a latency or speedup target was measured on a busy machine (`timing`:
    the final measurement, with its load report; None without machine settings). `achieved`: the final model's
    speedup, latency or size, in the target's unit. `remeasure`: how to measure again (for an unreliable verdict)."""

    plan: Plan
    stages: list[StageOutcome]
    verdict: str
    achieved: float
    plot: str | None  # tradeoff.png, or why it was not drawn
    timing: measure.Timing | None = None
    remeasure: str = PYTHON_REMEASURE
    onnx: dict | None = None  # engine onnxruntime: the final stage's export (folder, size, metrics in ONNX Runtime)
    refine_rounds: list = dataclasses.field(default_factory=list)  # the closed loop's `refine.RefineRound`s
    refine_note: str | None = None  # why the closed loop stopped before the target was met
    # A miss measured again before the closed loop acted (`timing` pools both): the first measurement's rounds and
    # what it measured, in the target's unit. None when the verdict is one measurement's.
    confirmed_miss: dict | None = None

    @property
    def target_met(self) -> bool:
        """True only for a target met on a quiet machine (verdict "met"); False when it was missed and when the
        measurement is unreliable (busy machine), which proves neither."""
        return self.verdict == MET

    @property
    def final(self) -> StageOutcome:
        return self.stages[-1]

    @property
    def rounds(self) -> int | None:
        """The rounds of the final latency measurement (None without one)."""
        return None if self.timing is None else self.timing[self.timing.reference].rounds

    def summary(self) -> str:
        target = self.plan.target
        verdict = {MET: "met", MISSED: "NOT met", UNRELIABLE: "unreliable, measured on a busy machine"}[self.verdict]
        text = (f"{target}: {verdict}; {self.final.stage} measures {target.format(self.achieved)} "
                f"(planned {self.plan.chosen}).")
        if self.verdict == UNRELIABLE:
            text += " Measure again on quiet cores with --measure_only true (results.md)."
        return text

    def to_dict(self) -> dict:
        return {"target": str(self.plan.target), "verdict": self.verdict, "target_met": self.target_met,
                "achieved": self.achieved, "summary": self.summary(), "plan": self.plan.chosen,
                "plan_busy": self.plan.busy, "plot": self.plot,
                "measurement": None if self.timing is None else self.timing.to_dict(),
                "remeasure": self.remeasure if self.verdict == UNRELIABLE else None, "onnx": self.onnx,
                "refine_rounds": [r.to_dict() for r in self.refine_rounds], "refine_note": self.refine_note,
                "confirmed_miss": self.confirmed_miss,
                "stages": [dataclasses.asdict(s) for s in self.stages]}


def write_outcome(plan: Plan, teacher, tokenizer, stage_names: list[str], output_dir: Path, training_args, *,
                  eval_dataset=None, compute_metrics=None, data_collator=None, rounds: int = 10,
                  teacher_name: str | None = None, teacher_hub_id: str | None = None, transfer_examples: int = 0,
                  progress: bool = True, remeasure: str | None = None, onnx_folder: Path | None = None,
                  refine_rounds: list | None = None, earlier: CompressResult | None = None) -> CompressResult:
    """Measure the teacher and the stages, write results.json / results.md / tradeoff.png and the stages' cards.

    Latencies are measured in the plan's engine (`MachineSettings.engine`, `distilkit.engines.on_engine`): with
    "onnxruntime" every model is exported to ONNX and run by ONNX Runtime, the last stage as its export in
    `onnx_folder` (the deployed file), whose metrics are also measured in ONNX Runtime (`CompressResult.onnx`).

    `progress`: a bar over the latency rounds (each evaluation shows the Trainer's, unless disable_tqdm).
    `remeasure`: the command that measures this run again, for results.md when the machine was busy (default: how
    to do it from Python, `PYTHON_REMEASURE`).

    `earlier`: this same run's result, measured just before (a miss the closed loop confirms before it prunes): the
    new rounds are pooled with its rounds (`measure.Timing.pooled`), so the verdict is over both measurements, and
    its stages' metrics are kept instead of evaluating the same models again."""
    from .. import from_pretrained

    models = {"teacher": teacher, **{name: from_pretrained(output_dir / name) for name in stage_names}}
    machine = plan.machine
    timing = None
    if machine is not None:
        # The teacher is timed with the attention implementation the stages were loaded with (the deployed one),
        # not the eager one attention distillation needs; in float32, as a float model runs it (an int8 stage may
        # run its attention products in bfloat16).
        trained_with = teacher.config._attn_implementation
        teacher.set_attn_implementation(float_attention(models[stage_names[0]].config._attn_implementation))
        exported = {stage_names[-1]: onnx_folder} if onnx_folder is not None else None
        try:
            with on_engine(models, machine.engine, machine.threads, exported) as running:
                timing = measure.interleaved_timing(running, machine.batch_size, machine.seq_len,
                                                    machine.threads, rounds=rounds, progress=progress,
                                                    reference="teacher")
        finally:
            teacher.set_attn_implementation(trained_with)
        if earlier is not None and earlier.timing is not None:
            timing = earlier.timing.pooled(timing)
    known = {s.stage: s.metrics for s in earlier.stages} if earlier is not None else {}
    teacher_ms = timing["teacher"].estimate if timing else None
    stages = []
    for name, model in models.items():
        folder = None if name == "teacher" else output_dir / name
        stats = timing[name] if timing else None
        ms = stats.estimate if stats else None
        stages.append(StageOutcome(
            stage=name, source=(teacher_name or "teacher") if folder is None else str(folder),
            metrics=known[name] if name in known else evaluate(model, training_args, output_dir, eval_dataset,
                                                               compute_metrics, data_collator, tokenizer),
            parameters=measure.count_parameters(model),
            size_mb=plan.teacher_candidate.size_mb if folder is None else measure.folder_size_mb(folder),
            latency_ms=ms, layers=model.config.num_hidden_layers, heads=head_count(model),
            speedup=None if ms is None else teacher_ms / ms, median_ms=stats.median if stats else None,
            spread=stats.spread if stats else None))
    final = stages[-1]
    cost = final.latency_ms if plan.target.is_latency else final.size_mb
    plot = draw_tradeoff(plan, stages, output_dir / TRADEOFF_PNG)
    verdict = plan.target.verdict(cost, teacher_ms, busy=timing is not None and timing.busy)
    onnx = earlier.onnx if earlier is not None else None
    if onnx_folder is not None and onnx is None:
        onnx = {"folder": onnx_folder.name, "size_mb": (onnx_folder / ONNX_FILE).stat().st_size / 1e6,
                "metrics": evaluate_in_onnxruntime(onnx_folder, eval_dataset, compute_metrics, data_collator,
                                                   tokenizer, training_args.per_device_eval_batch_size,
                                                   machine.threads if machine else 2)}
    result = CompressResult(plan, stages, verdict, plan.target.achieved(cost, teacher_ms), plot, timing,
                            remeasure or PYTHON_REMEASURE, onnx, list(refine_rounds or []),
                            confirmed_miss=None if earlier is None or earlier.timing is None else
                            {"rounds": earlier.rounds, "achieved": earlier.achieved})
    write_files(result, output_dir, training_args, teacher_name, teacher_hub_id, transfer_examples)
    return result


def write_files(result: CompressResult, output_dir: Path, training_args, teacher_name: str | None = None,
                teacher_hub_id: str | None = None, transfer_examples: int = 0) -> None:
    """results.json, results.md and every stage's model card, from `result` (nothing is measured)."""
    write_text(output_dir / RESULTS_JSON, json.dumps({**result.to_dict(), "machine": measure.machine_info(),
                                                      "latency_setup": latency_setup(result.plan, result.rounds),
                                                      "stages": report.stages_json(result.stages, output_dir)},
                                                     indent=1) + "\n")
    write_text(output_dir / RESULTS_MD, results_markdown(result))
    write_cards(result, output_dir, training_args, teacher_name, teacher_hub_id, transfer_examples)


def evaluate(model, training_args, output_dir: Path, eval_dataset, compute_metrics, data_collator,
             tokenizer) -> dict[str, float]:
    """The model's metrics on `eval_dataset` ({} without one), named without the "eval_" prefix, in the model's own
    precision (as it is saved and runs): mixed precision is off. Trainer's evaluation with `bf16`/`fp16` would score
    an int8 model differently than it runs, and would leave `model.forward` wrapped in autocast for good (accelerate
    wraps the model it prepares), so a teacher measured after its evaluation would be timed in half precision."""
    if eval_dataset is None:
        return {}
    from transformers import Trainer

    args = dataclasses.replace(training_args, output_dir=str(output_dir), bf16=False, fp16=False,
                               bf16_full_eval=False, fp16_full_eval=False)
    trainer = Trainer(model=model, args=args, eval_dataset=eval_dataset, data_collator=data_collator,
                      processing_class=tokenizer, compute_metrics=compute_metrics)
    scores = trainer.evaluate()
    return {key.removeprefix("eval_"): float(value) for key, value in scores.items()
            if key.startswith("eval_") and key.removeprefix("eval_") not in NOT_METRICS}


def evaluate_in_onnxruntime(folder: Path, eval_dataset, compute_metrics, data_collator, tokenizer,
                            batch_size: int, threads: int) -> dict[str, float]:
    """`compute_metrics` of the export in `folder` run by ONNX Runtime on `eval_dataset` ({} without either):
    the columns the graph does not take are dropped (as Trainer drops the model's unused ones), the rest batched
    by `data_collator` (Trainer's default without one)."""
    if eval_dataset is None or compute_metrics is None:
        return {}
    from torch.utils.data import DataLoader
    from transformers import DataCollatorWithPadding, EvalPrediction, default_data_collator

    from ..export import OnnxRuntimeModel

    model = OnnxRuntimeModel(folder, threads)
    keep = {*model.input_names, "label", "labels"}
    if hasattr(eval_dataset, "remove_columns"):
        eval_dataset = eval_dataset.remove_columns([c for c in eval_dataset.column_names if c not in keep])
    collator = data_collator or (DataCollatorWithPadding(tokenizer) if tokenizer is not None
                                 else default_data_collator)
    logits, labels = [], []
    for batch in DataLoader(eval_dataset, batch_size=batch_size, collate_fn=collator):
        labels.append(batch.pop("labels"))
        logits.append(model(**batch).logits)
    scores = compute_metrics(EvalPrediction(predictions=torch.cat(logits).numpy(),
                                            label_ids=torch.cat(labels).numpy()))
    return {name: float(value) for name, value in scores.items()}


def latency_setup(plan: Plan, rounds: int | None = None) -> str | None:
    if plan.machine is None:
        return None
    m = plan.machine
    over = f"{rounds} interleaved rounds" if rounds else "the rounds of one interleaved run"
    return (measure.latency_setup(m.batch_size, m.seq_len, m.threads, measure.machine_info())
            + f", 20th percentile of {over} over the teacher and every stage" + describe(m.engine))


def results_markdown(result: CompressResult) -> str:
    """The table (stage, metrics, parameters, size, latency with its median and spread, speedup, target met?), the
    verdict's warning when the machine was busy, and how it was measured."""
    names = list(dict.fromkeys(name for s in result.stages for name in s.metrics))
    header = ["Stage", *names, "Parameters", "Size (MB)", "Latency (ms)", "Median (ms)", "Spread", "Speedup",
              "Target met"]
    lines = [f"# {result.summary()}", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    met = {MET: "yes", MISSED: "no", UNRELIABLE: "unreliable"}[result.verdict]
    for s in result.stages:
        lines.append("| " + " | ".join([
            s.stage, *(cell(s.metrics.get(n), ".4f") for n in names), f"{s.parameters / 1e6:.3f}M",
            f"{s.size_mb:.3f}", cell(s.latency_ms, ".2f"), cell(s.median_ms, ".2f"),
            cell(None if s.spread is None else 100 * s.spread, ".1f", "%"), cell(s.speedup, ".2f", "x"),
            met if s is result.final else "–"]) + " |")
    lines += busy_warning(result) + confirmation_lines(result) + refine_lines(result)
    notes = ["", f"Plan: {result.plan.chosen} ({PLAN_MD}). {result.plan.reason}"]
    if result.plan.busy:
        notes.append(f"The plan's twins were timed on a busy machine: {result.plan.busy}")
    setup = latency_setup(result.plan, result.rounds)
    if setup:
        notes.append(f"Latency: {setup}; spread: p25..p75 over the median. Speedup: the teacher's latency over the "
                     "stage's.")
    if result.timing is not None:
        notes.append(f"Machine during the measurement: {result.timing.describe()}.")
    notes.append("Size: weight files of each stage folder (the teacher: its exact weight size).")
    if result.onnx is not None:
        o = result.onnx
        scores = ", ".join(f"{name} {value:.4f}" for name, value in o["metrics"].items()) or "no metrics"
        notes.append(f"Deployed: {o['folder']}/ ({ONNX_FILE}, {o['size_mb']:.3f} MB), the {result.final.stage} "
                     f"stage exported to ONNX; its latency above is this file's in ONNX Runtime; its metrics in "
                     f"ONNX Runtime: {scores}.")
    notes.append(f"Plot: {result.plot}")
    return "\n".join(lines + notes) + "\n"


def confirmation_lines(result: CompressResult) -> list[str]:
    """results.md's line for a miss measured again before the closed loop acted on it."""
    first = result.confirmed_miss
    if first is None:
        return []
    target = result.plan.target
    return ["", f"The first measurement of these models missed the target ({target.format(first['achieved'])}); "
                f"before pruning further they were measured again and the verdict is over both measurements' "
                f"{result.rounds} rounds together (the first's {first['rounds']} and "
                f"{result.rounds - first['rounds']} more): one measurement on a noisy machine is not enough to prune "
                "by."]


def refine_lines(result: CompressResult) -> list[str]:
    """results.md's account of the closed loop: each round (what the result it started from measured, the shape
    it pruned to, what that shape was expected at), and why the loop stopped if the target was still missed."""
    if not result.refine_rounds and not result.refine_note:
        return []
    count = len(result.refine_rounds)
    lines = ["", f"## Closed loop: {count} round{'s' * (count != 1)}", ""]
    lines += [f"- {r.describe(result.plan)}, {r.steps} recovery step{'s' * (r.steps != 1)} of distillation: "
              + ", ".join(f"{name}/" for name in r.stages()) for r in result.refine_rounds]
    if result.refine_note:
        lines.append(f"- stopped: {result.refine_note}.")
    return lines


def busy_warning(result: CompressResult) -> list[str]:
    """results.md's lines for a measurement made on a busy machine: what was seen, why the verdict is unreliable,
    and the command that measures again. None for a quiet one."""
    if result.timing is None or not result.timing.busy:
        return []
    lines = ["", "## The machine was busy: this measurement is unreliable", "",
             f"While the teacher and the stages were timed: {'; '.join(result.timing.reasons)}."]
    if result.verdict == UNRELIABLE:
        lines.append("Load slows the large teacher more than the smaller stages, so a speedup measured under it "
                     "comes out too high (and a latency too slow): this measurement can say neither met nor missed.")
    else:
        lines.append("The verdict stands (a size does not depend on load), but the latencies and speedups above are "
                     "not to be trusted.")
    return lines + ["", "Measure again on quiet cores (stop training and other heavy processes first); nothing is "
                    "made or trained again:", "", f"    {result.remeasure}"]


def candidate_positions(plan: Plan, teacher: StageOutcome) -> list[float]:
    """The candidates' planned costs on the plot's axis: sizes as they are; latencies, timed when the plan was
    made, scaled by the teacher's latency now over then, so each sits where its planned speedup puts it."""
    scale = 1.0
    if plan.target.is_latency and teacher.latency_ms and plan.teacher_candidate.latency_ms:
        scale = teacher.latency_ms / plan.teacher_candidate.latency_ms
    return [plan.cost(c) * scale for c in plan.candidates if plan.cost(c) is not None]


def draw_tradeoff(plan: Plan, stages: list[StageOutcome], path: Path) -> str:
    """tradeoff.png: the first metric of each model against its latency (size, for a size target), with the
    target and the candidates' latencies (sizes) as ticks. Returns the file name, or why it was not drawn."""
    metric = next((name for s in stages for name in s.metrics if name != "loss"), None)
    if metric is None:
        return "not drawn: no evaluation metrics (give eval data and compute_metrics)."
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "not drawn: matplotlib is not installed (pip install matplotlib)."
    latency = plan.target.is_latency
    unit = "latency (ms)" if latency else "size (MB)"
    points = [(s.latency_ms if latency else s.size_mb, s.metrics.get(metric), s.stage) for s in stages]
    figure, axes = plt.subplots(figsize=(6, 4))
    for x, y, label in points:
        if x is not None and y is not None:
            axes.scatter([x], [y])
            axes.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    limit = plan.target.budget(stages[0].latency_ms) / (1 - plan.target.margin)
    axes.axvline(limit, linestyle="--", color="grey", label=str(plan.target))
    costs = candidate_positions(plan, stages[0])
    axes.plot(costs, [axes.get_ylim()[0]] * len(costs), "|", color="grey", alpha=0.5,
              label="candidates (planned, at this run's teacher speed)" if latency else "candidates")
    axes.set_xlabel(unit)
    axes.set_ylabel(metric)
    axes.legend(fontsize=8)
    figure.tight_layout()
    with publishing_file(path) as staging:
        figure.savefig(staging, format="png")
    plt.close(figure)
    return path.name


def write_cards(result: CompressResult, output_dir: Path, training_args, teacher_name: str | None,
                teacher_hub_id: str | None, transfer_examples: int) -> None:
    """A model card in every stage folder: the whole table, the recipe, and the target with the measured result."""
    from ..model_card import recipe_from_config

    plan = result.plan
    setup = latency_setup(plan, result.rounds)
    compression = {"target": str(plan.target) + (f" at {setup}" if setup else ""),
                   "plan": f"{plan.chosen}, teacher layers {', '.join(map(str, plan.keep_layers))}",
                   "measured": result.summary()}
    heads_fraction, ffn_fraction = plan.prune_fractions
    from .run import stage_arguments  # the layer map the distillation used (the kept layers' for layer terms)

    stage_args = stage_arguments(plan, training_args, prune_heads_fraction=heads_fraction,
                                 prune_ffn_fraction=ffn_fraction)
    recipe = recipe_from_config(stage_args, transfer_examples=transfer_examples)
    groups = {s.stage: {**recipe, "Compression target": compression} for s in result.stages[1:]}
    report.write_cards(result.stages, teacher=teacher_name, teacher_hub_id=teacher_hub_id, recipe_groups=groups,
                       latency_setup=setup, run_name=output_dir.name, output_dir=output_dir)
