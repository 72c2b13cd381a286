"""Multi-seed experiment: does augmenting sentence pairs help distillation on MRPC?

    pip install ".[bench]"
    python benchmarks/augment_mrpc.py

GLUE MRPC from ../shared/data/mrpc. train.tsv (4,076 pairs) is shuffled once (seed 0) and cut in two: the first
400 rows are the selection slice (epochs are chosen on it, never on test), the other 3,676 the labelled rows.
Every figure is on MRPC test.tsv (1,725 pairs, GLUE's "validation" split here): accuracy and the F1 of the positive
class (1, "paraphrase").

Teacher: MiniLM-L6 (all-MiniLM-L6-v2) fine-tuned on the labelled rows, 3 epochs, lr 5e-5, seed 42; one teacher for
all rows, kept in --work-dir (outside the repo). Student, for every row: 3 of the 6 layers (0, 2, 4) of the
pretrained, NOT fine-tuned, MiniLM-L6 with a fresh 2-label head (distilkit.student.student_from_teacher), so the
no-teacher row gets no teacher knowledge through its initialisation; lr 1e-4, warmup 6%, weight decay 0.01.
Everything: batch 32, max_length 128, dynamic padding, batches grouped by length. Rows, each for every --seeds
value (the student's training seed: head init, data order, dropout):
  * no_teacher:       plain fine-tuning on the labelled rows, up to --epochs epochs;
  * logits_labelled:  logit KD (alpha 0.5, T 2, cached teacher logits) on the labelled rows, up to --epochs epochs;
  * logits_augmented: the same KD plus --augment-copies augmented copies of every labelled pair as transfer data
    (distilkit.augment: TinyBERT word replacement, replace_prob 0.4, 15 candidates from the nearest neighbours in
    the teacher's input embeddings, seed 42; both sentences of a pair altered, labels dropped: the teacher labels
    them), up to --augment-epochs epochs. The copies are made once and kept in --work-dir.
After each epoch the student is scored on the selection slice and on test (accuracy, F1, agreement with the
teacher's test predictions); the epoch with the best selection accuracy (the earliest on a tie) is the run's result.
Seconds per training step and training seconds are recorded.

Writes benchmarks/results/augment_mrpc.json after every finished run (atomically) and augment_mrpc.md (table, the
gains and whether they exceed the spread across seeds). Resumable: a finished (row, seed) in the json is skipped;
results made with other settings are set aside, not mixed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

# Before torch loads its OpenMP runtime (see transfer_benchmark.py).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import harness  # noqa: E402
import torch  # noqa: E402

DEFAULT_WORK = Path.home() / ".cache" / "distilkit" / "augment-mrpc-bench"
NAME = "augment_mrpc"
ROWS = ("no_teacher", "logits_labelled", "logits_augmented")
DISTILLED = ("logits_labelled", "logits_augmented")
LABELS = {"no_teacher": "3-layer student, no teacher (labelled pairs)",
          "logits_labelled": "3-layer student, logit KD, labelled pairs",
          "logits_augmented": "3-layer student, logit KD, labelled pairs + augmented copies"}
# The questions, as (row, baseline) pairs: distillation at all, augmentation over no teacher, augmentation over KD.
COMPARISONS = (("logits_labelled", "no_teacher"), ("logits_augmented", "no_teacher"),
               ("logits_augmented", "logits_labelled"))
METRICS = ("accuracy", "f1")
TASK = "mrpc"
STUDENT_LAYERS = 3
AUGMENT = {"methods": ["replace"], "replace_prob": 0.4, "num_candidates": 15, "augment_seed": 42}
# Settings that change a figure: a json made with other values is set aside, not mixed with new runs.
SETTINGS_KEYS = ("labelled_rows", "selection_rows", "test_rows", "split_seed", "max_length", "batch_size", "epochs",
                 "augment_epochs", "augment_copies", "teacher_epochs", "teacher_learning_rate", "teacher_seed",
                 "student_learning_rate", "warmup", "weight_decay", "alpha", "temperature", "sampling")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/augment_mrpc.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="Folder with mrpc/train.tsv and mrpc/test.tsv "
                   "(default ../shared/data).")
    p.add_argument("--labelled-rows", type=int, default=None,
                   help="At most N labelled rows (default: all rows after the selection slice; smoke tests).")
    p.add_argument("--selection-rows", type=int, default=400)
    p.add_argument("--test-rows", type=int, default=None, help="Only the first N test rows (smoke tests).")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--epochs", type=int, default=3, help="Epochs of no_teacher and logits_labelled (best on the "
                   "selection slice is kept).")
    p.add_argument("--augment-epochs", type=int, default=2, help="Epochs of logits_augmented.")
    p.add_argument("--augment-copies", type=int, default=4, help="Augmented copies per labelled pair.")
    p.add_argument("--teacher-epochs", type=float, default=3.0)
    harness.add_distillation_arguments(p, max_length=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--work-dir", default=str(DEFAULT_WORK),
                   help="Teacher, augmented copies, teacher-output caches and run folders (outside the repo).")
    p.add_argument("--results-dir", default=str(harness.RESULTS_DIR))
    return p


# ---------------------------------------------------------------------------------------------- statistics

def verdict(gain: float | None, spread: float | None) -> str | None:
    """'gain' / 'loss' when |gain| is at least the larger std of the two rows, else 'no measurable gain'."""
    measurable = harness.measurable(gain, spread)
    if measurable is None:
        return None if gain is None else "spread n/a (1 seed)"
    if not measurable:
        return "no measurable gain"
    return "gain" if gain > 0 else "loss"


def compare(row: dict, base: dict, metric: str) -> dict:
    """`row` minus `base` on a metric's means, in points, with the per-seed differences (paired by seed) and
    whether the difference exceeds the larger sample std of the two rows."""
    a, b = row[metric], base[metric]
    if a["mean"] is None or b["mean"] is None:
        return {"gain_points": None, "spread_points": None, "measurable": None, "verdict": None}
    gain = 100 * (a["mean"] - b["mean"])
    spread = harness.spread_points(a["std"], b["std"])
    by_seed = dict(zip(base["seeds"], base[f"test_{metric}"]))
    return {"gain_points": gain, "spread_points": spread, "measurable": harness.measurable(gain, spread),
            "verdict": verdict(gain, spread),
            "gain_points_per_seed": {str(seed): 100 * (v - by_seed[seed])
                                     for seed, v in zip(row["seeds"], row[f"test_{metric}"]) if seed in by_seed}}


def summarize(results: dict) -> dict:
    """Per row: the per-seed figures, mean and sample std of test accuracy and F1, % of the teacher, and the gain
    over no_teacher; plus every comparison of COMPARISONS."""
    teacher = results.get("teacher") or {}
    summary = {}
    for row in ROWS:
        runs = results.get("runs", {}).get(row, {})
        seeds = sorted(runs, key=int)
        s = {"seeds": [int(seed) for seed in seeds], "n": len(seeds)}
        for key in ("test_accuracy", "test_f1", "chosen_epoch", "selection_accuracy", "test_agreement_with_teacher",
                    "seconds_per_step", "train_seconds"):
            s[key] = [runs[seed][key] for seed in seeds]
        for metric in METRICS:
            mean, std = harness.mean_std(s[f"test_{metric}"])
            of_teacher = teacher.get(f"test_{metric}")
            s[metric] = {"mean": mean, "std": std,
                         "percent_of_teacher": 100 * mean / of_teacher if mean is not None and of_teacher else None}
        summary[row] = s
    for row in DISTILLED:
        for metric in METRICS:
            summary[row][metric].update(compare(summary[row], summary["no_teacher"], metric))
    summary["comparisons"] = {f"{row} vs {base}": {metric: compare(summary[row], summary[base], metric)
                                                   for metric in METRICS} for row, base in COMPARISONS}
    return summary


# ------------------------------------------------------------------------------------------------- report

def _mean_std_text(m: dict) -> str:
    if m["mean"] is None:
        return "n/a"
    return f"{100 * m['mean']:.2f}" + (f" ± {100 * m['std']:.2f}" if m["std"] is not None else " (1 seed)")


def _comparison_line(name: str, c: dict) -> str:
    parts = []
    for metric in METRICS:
        v = c[metric]
        if v["gain_points"] is None:
            parts.append(f"{metric}: not run")
            continue
        spread = "" if v["spread_points"] is None else f", spread {v['spread_points']:.2f}"
        parts.append(f"{metric} {v['gain_points']:+.2f} points ({v['verdict']}{spread})")
    return f"- {name}: " + "; ".join(parts) + "."


def markdown(results: dict) -> str:
    summary, st, data = results["summary"], results["settings"], results["data"]
    teacher = results.get("teacher") or {}
    augment = results.get("augment")
    lines = [
        "# Augmented sentence pairs on MRPC: 3-layer student, MiniLM-L6 teacher, several seeds",
        "",
        f"Data: {data['source']}; train.tsv shuffled with seed {st['split_seed']} and cut into "
        f"{data['selection_rows']:,} selection rows (epochs chosen here, never on test) and "
        f"{data['labelled_rows']:,} labelled rows. Evaluation: MRPC test.tsv, {data['test_rows']:,} pairs; F1 of the "
        f"positive class (paraphrase). max_length {st['max_length']}, dynamic padding, batch {st['batch_size']}, "
        "batches grouped by length.",
        "",
        f"Teacher: MiniLM-L6 (all-MiniLM-L6-v2) fine-tuned on the labelled rows ({st['teacher_epochs']:g} epochs, lr "
        f"{st['teacher_learning_rate']:g}, seed {st['teacher_seed']}): test accuracy "
        f"**{harness.pct(teacher.get('test_accuracy'))}%**, F1 **{harness.pct(teacher.get('test_f1'))}%** "
        f"(selection slice accuracy {harness.pct(teacher.get('selection_accuracy'))}%).",
        f"Students: layers 0, 2, 4 of the pretrained (not fine-tuned) MiniLM-L6 with a fresh head, seeded per seed; "
        f"lr {st['student_learning_rate']:g}, warmup {100 * st['warmup']:g}%, weight decay {st['weight_decay']:g}; "
        f"KD rows alpha {st['alpha']:g}, T {st['temperature']:g}, cached teacher logits. no_teacher and "
        f"logits_labelled: up to {st['epochs']} epochs, logits_augmented: up to {st['augment_epochs']}; the epoch "
        "with the best selection accuracy is reported.",
    ]
    if augment:
        lines += ["", f"Augmented copies (logits_augmented): {augment['num_copies']} per labelled pair, "
                  f"{augment['rows']:,} pairs, methods {'+'.join(augment['methods'])}, replace_prob "
                  f"{augment['replace_prob']}, {augment['num_candidates']} candidates, seed {augment['augment_seed']}; "
                  f"candidates: {augment['candidates']}; both sentences altered, labels dropped (the teacher labels "
                  "them)."]
    lines += [
        "",
        f"Seeds (student training seed): {results['seeds']}. Finished runs: "
        + "; ".join(f"{row} seeds {', '.join(map(str, summary[row]['seeds'])) or 'none'}" for row in ROWS)
        + ". Mean ± sample std over seeds (%).",
        "",
        "| row | test acc. | test F1 | % of teacher: acc. / F1 | gain over no_teacher: acc. / F1 (points) "
        "| per seed: acc. / F1 (epoch) | agreement with teacher | s/step | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in ROWS:
        s = summary[row]
        if not s["n"]:
            lines.append(f"| {row}: {LABELS[row]} | not run | | | | | | | |")
            continue
        acc, f1 = s["accuracy"], s["f1"]
        pot = " / ".join("n/a" if m["percent_of_teacher"] is None else f"{m['percent_of_teacher']:.1f}%"
                         for m in (acc, f1))
        gain = "–" if row == "no_teacher" else f"{harness.gain_text(acc)} / {harness.gain_text(f1)}"
        per_seed = ", ".join(f"s{seed}: {100 * a:.2f} / {100 * f:.2f} (ep {e})" for seed, a, f, e in
                             zip(s["seeds"], s["test_accuracy"], s["test_f1"], s["chosen_epoch"]))
        lines.append(f"| {row}: {LABELS[row]} | {_mean_std_text(acc)} | {_mean_std_text(f1)} | {pot} | {gain} | "
                     f"{per_seed} | {100 * statistics.fmean(s['test_agreement_with_teacher']):.1f}% | "
                     f"{statistics.fmean(s['seconds_per_step']):.3f} | {statistics.fmean(s['train_seconds']):.0f} |")
    lines += ["", "Gain is mean minus no_teacher's mean; \"no measurable gain\" means the gain is smaller than the "
              "larger sample std of the two rows. Agreement: share of test pairs where the student's argmax equals "
              "the teacher's. train s: seconds of training (all epochs, per-epoch scoring included).",
              "", "## Comparisons (means over seeds)", ""]
    lines += [_comparison_line(name, c) for name, c in summary["comparisons"].items()]
    m = results.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} cores, VNNI flags: "
              f"{results.get('lscpu_vnni') or 'none'}; {results['threads']} threads, OMP_WAIT_POLICY="
              f"{results.get('omp_wait_policy')}; torch {m.get('torch')}, transformers {m.get('transformers')}.",
              "", "Reproduce:", "", "```", results["command"], "```", ""]
    return "\n".join(lines)


def save(results: dict, results_dir: Path) -> None:
    results["machine"] = harness.machine_info()
    results["summary"] = summarize(results)
    harness.write_results(results_dir, {f"{NAME}.json": json.dumps(results, indent=2),
                                        f"{NAME}.md": markdown(results)})


# ---------------------------------------------------------------------------------------------- experiment

class Experiment:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work_dir)
        self.results_dir = Path(args.results_dir)
        self.settings = {k: getattr(args, k) for k in SETTINGS_KEYS}
        self.results = harness.load_previous(self.results_dir / f"{NAME}.json",
                                             {"experiment": NAME, "settings": self.settings, "runs": {}})
        self._cache: dict = {}

    def done(self, row: str, seed: int) -> bool:
        return str(seed) in self.results["runs"].get(row, {})

    def save(self) -> None:
        a = self.args
        self.results.update(settings=self.settings, seeds=harness.all_seeds(a.seeds, self.results["runs"]),
                            command=a.command, threads=a.threads, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                            lscpu_vnni=harness.lscpu_vnni())

    def portable(self, folder: Path) -> str:
        """A folder of this run as its results file records it: "<work-dir>/..." (harness.portable_path)."""
        return harness.portable_path(folder, {"work-dir": self.work})
        save(self.results, self.results_dir)

    # -- data
    def splits(self):
        """(labelled, selection, test) raw datasets."""
        if "raw" not in self._cache:
            a = self.args
            data_dir = Path(a.data_dir or harness.default_data_dir() or "")
            if not (data_dir / TASK / harness.GLUE_LOCAL[TASK]["train"]).is_file():
                raise SystemExit(f"augment_mrpc: no {TASK}/train.tsv under {data_dir}; pass --data-dir.")
            train, spec = harness.load_glue_local(TASK, data_dir, "train")
            train = train.shuffle(seed=a.split_seed)
            test, _ = harness.load_glue_local(TASK, data_dir, "validation")
            if a.test_rows:
                test = test.select(range(min(a.test_rows, len(test))))
            if a.selection_rows >= len(train):
                raise SystemExit(f"augment_mrpc: --selection-rows {a.selection_rows} leaves no labelled rows of "
                                 f"train.tsv ({len(train)}).")
            end = len(train) if a.labelled_rows is None else min(len(train), a.selection_rows + a.labelled_rows)
            selection = train.select(range(a.selection_rows))
            labelled = train.select(range(a.selection_rows, end))
            self._cache["raw"] = labelled, selection, test

            def positive(dataset):
                return round(statistics.fmean(int(v) for v in dataset[spec["label"]]), 4)

            self.results["data"] = {
                "source": f"{harness.portable_path(data_dir / TASK)} (train.tsv: selection + labelled rows; "
                          f"{spec['validation']} for "
                          "evaluation)",
                "labelled_rows": len(labelled), "selection_rows": len(selection), "test_rows": len(test),
                "train_file_rows": len(train), "labelled_positive_share": positive(labelled),
                "test_positive_share": positive(test)}
        return self._cache["raw"]

    def tokenizer(self):
        if "tokenizer" not in self._cache:
            from transformers import AutoTokenizer

            self._cache["tokenizer"] = AutoTokenizer.from_pretrained(harness.minilm_dir())
        return self._cache["tokenizer"]

    def tokenized(self, split: str):
        """A split tokenised as pairs (teacher and student share MiniLM's tokenizer); the augmented copies without
        labels."""
        from distilkit.data import prepare_classification, tokenize_texts

        if split not in self._cache:
            spec = harness.GLUE_LOCAL[TASK]
            if split == "augmented":
                self._cache[split] = tokenize_texts(self.augmented_pairs(), self.tokenizer(), spec["text"],
                                                    spec["text_pair"], max_length=self.args.max_length)
            else:
                raw = dict(zip(("labelled", "selection", "test"), self.splits()))[split]
                self._cache[split] = prepare_classification(raw, self.tokenizer(), spec["text"], spec["label"],
                                                            text_pair_column=spec["text_pair"],
                                                            max_length=self.args.max_length, num_labels=2)
        return self._cache[split]

    def collator(self):
        from transformers import DataCollatorWithPadding

        return DataCollatorWithPadding(self.tokenizer())

    # -- the teacher
    def teacher_folder(self) -> Path:
        a = self.args
        return (self.work / "teachers" / f"mrpc-minilm-l6-sel{a.selection_rows}-rows{len(self.splits()[0])}"
                f"-split{a.split_seed}-ep{a.teacher_epochs:g}-lr{a.teacher_learning_rate:g}-bs{a.batch_size}"
                f"-len{a.max_length}-warm{a.warmup:g}-wd{a.weight_decay:g}-seed{a.teacher_seed}")

    def teacher(self):
        if "teacher" not in self._cache:
            self._cache["teacher"] = harness.load_or_train_teacher(self.teacher_folder(), self.train_teacher)
        return self._cache["teacher"]

    def train_teacher(self) -> None:
        from transformers import AutoModelForSequenceClassification, set_seed

        a = self.args
        folder = self.teacher_folder()
        print(f"teacher: fine-tuning MiniLM-L6 on {len(self.splits()[0])} pairs -> {folder}", flush=True)
        set_seed(a.teacher_seed)
        model = AutoModelForSequenceClassification.from_pretrained(harness.minilm_dir(), num_labels=2)
        config = harness.training_config(a, self.work / "runs" / "teacher", seed=a.teacher_seed,
                                         learning_rate=a.teacher_learning_rate, epochs=a.teacher_epochs)
        info = harness.train(model, config, self.tokenized("labelled"), self.collator(), self.tokenizer())
        harness.publish_teacher(folder, model, self.tokenizer(), info)

    def run_teacher(self) -> None:
        if self.results.get("teacher", {}).get("test_predictions") and \
                (self.teacher_folder() / "model.safetensors").is_file():
            return
        model, collator = self.teacher(), self.collator()
        info = json.loads((self.teacher_folder() / "train_info.json").read_text())
        test, selection = self.tokenized("test"), self.tokenized("selection")
        test_pred = harness.predict(model, test, collator)
        scores = harness.accuracy_and_f1(test_pred, test["labels"])
        self.results["teacher"] = {
            "model": "MiniLM-L6 (all-MiniLM-L6-v2), fine-tuned", "folder": self.portable(self.teacher_folder()),
            "test_accuracy": round(scores["accuracy"], 4), "test_f1": round(scores["f1"], 4),
            "selection_accuracy": harness.accuracy(harness.predict(model, selection, collator), selection["labels"]),
            "steps": info["steps"], "seconds_per_step": info["seconds_per_step"],
            "train_seconds": info["train_seconds"], "last_log": info["last_log"], "test_predictions": test_pred}
        self.save()
        print(f"teacher: test accuracy {self.results['teacher']['test_accuracy']}, F1 "
              f"{self.results['teacher']['test_f1']}, selection {self.results['teacher']['selection_accuracy']}",
              flush=True)

    # -- the augmented copies
    def augmented_pairs(self):
        """--augment-copies augmented copies of every labelled pair (no labels), made once with distilkit.augment
        and kept in --work-dir; replacements are the teacher's embedding neighbours."""
        if "augmented_raw" not in self._cache:
            from datasets import load_from_disk

            from distilkit.augment import AugmentArguments, augment_dataset
            from distilkit.serialization.atomic import publishing_folder

            copies = self.args.augment_copies
            folder = self.work / "augmented" / (
                f"{self.teacher_folder().name}-copies{copies}-{'+'.join(AUGMENT['methods'])}-"
                f"p{AUGMENT['replace_prob']:g}-m{AUGMENT['num_candidates']}-seed{AUGMENT['augment_seed']}")
            if not folder.is_dir():
                spec = harness.GLUE_LOCAL[TASK]
                augmented = augment_dataset(self.splits()[0], self.tokenizer(), spec["text"], spec["text_pair"],
                                            teacher=self.teacher(), args=AugmentArguments(num_copies=copies, **AUGMENT))
                with publishing_folder(folder) as staging:
                    augmented.save_to_disk(str(staging))
            self._cache["augmented_raw"] = load_from_disk(str(folder))
            self.results["augment"] = {
                "num_copies": copies, **AUGMENT, "rows": len(self._cache["augmented_raw"]),
                "folder": self.portable(folder),
                "source": "labelled pairs, labels dropped",
                "candidates": "nearest neighbours in the fine-tuned teacher's input embeddings (no masked-LM head)"}
            print(f"augmented pairs: {len(self._cache['augmented_raw'])} rows from {folder}", flush=True)
        return self._cache["augmented_raw"]

    # -- the students
    def scores(self, model) -> dict:
        """Selection accuracy; test accuracy, F1 and agreement with the teacher's test predictions."""
        collator = self.collator()
        selection, test = self.tokenized("selection"), self.tokenized("test")
        test_pred = harness.predict(model, test, collator)
        scores = harness.accuracy_and_f1(test_pred, test["labels"])
        return {"selection_accuracy": harness.accuracy(harness.predict(model, selection, collator),
                                                       selection["labels"]),
                "test_accuracy": round(scores["accuracy"], 4), "test_f1": round(scores["f1"], 4),
                "test_agreement_with_teacher": harness.accuracy(test_pred,
                                                                self.results["teacher"]["test_predictions"])}

    def student(self, seed: int):
        """Layers every_kth of the pretrained MiniLM-L6 with a fresh 2-label head seeded by `seed`."""
        from transformers import AutoModelForSequenceClassification, set_seed

        from distilkit.student import student_from_teacher

        set_seed(seed)
        pretrained = AutoModelForSequenceClassification.from_pretrained(harness.minilm_dir(), num_labels=2)
        return student_from_teacher(pretrained, STUDENT_LAYERS)

    def run_student(self, row: str, seed: int) -> None:
        a = self.args
        distil = row != "no_teacher"
        print(f"{row} seed {seed}: start {time.strftime('%H:%M:%S')}", flush=True)
        transfer = self.tokenized("augmented") if row == "logits_augmented" else None
        epochs = a.augment_epochs if row == "logits_augmented" else a.epochs
        student = self.student(seed)
        config = harness.training_config(a, self.work / "runs" / f"{row}-seed{seed}", seed=seed,
                                         learning_rate=a.student_learning_rate, epochs=epochs,
                                         alpha=a.alpha if distil else 0.0,
                                         cache_dir=self.work / "teacher-outputs" if distil else None)
        info = harness.train(student, config, self.tokenized("labelled"), self.collator(), self.tokenizer(),
                             teacher=self.teacher() if distil else None, transfer=transfer, epoch_eval=self.scores)
        records = info.pop("epochs")
        if len(records) != epochs:
            raise RuntimeError(f"{row} seed {seed}: {len(records)} epoch evaluations for {epochs} epochs.")
        best = harness.best_epoch(records)
        info.pop("step_durations")
        run = {"seed": seed, "chosen_epoch": best["epoch"],
               **{k: best[k] for k in ("selection_accuracy", "test_accuracy", "test_f1",
                                       "test_agreement_with_teacher")},
               "per_epoch": records, "epochs_trained": epochs, **info}
        self.results["runs"].setdefault(row, {})[str(seed)] = run
        self.save()
        print(f"{row} seed {seed}: test accuracy {run['test_accuracy']}, F1 {run['test_f1']} (epoch "
              f"{run['chosen_epoch']}), {run['steps']} steps, {run['seconds_per_step']} s/step, done "
              f"{time.strftime('%H:%M:%S')}", flush=True)

    def run(self) -> None:
        self.splits()
        self.run_teacher()
        for seed in self.args.seeds:
            for row in ROWS:
                if row in self.args.rows and not self.done(row, seed):
                    self.run_student(row, seed)
                elif row in self.args.rows:
                    print(f"{row} seed {seed}: finished before, skipped", flush=True)
        self.save()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = harness.portable_command("augment_mrpc.py", argv)
    args.sampling = "group_by_length"
    for flag in ("selection_rows", "epochs", "augment_epochs", "augment_copies", "batch_size", "max_length",
                 "threads"):
        if getattr(args, flag) <= 0:
            raise SystemExit(f"augment_mrpc: --{flag.replace('_', '-')} must be positive.")
    if args.labelled_rows is not None and args.labelled_rows <= 0:
        raise SystemExit("augment_mrpc: --labelled-rows must be positive.")
    if not 0 < args.alpha <= 1 or not math.isfinite(args.temperature) or args.temperature <= 0:
        raise SystemExit("augment_mrpc: --alpha must be in (0, 1] and --temperature > 0.")
    torch.set_num_threads(args.threads)
    Experiment(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
