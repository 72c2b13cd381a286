"""Why does logit KD on the labelled rows alone add little? A small sweep of alpha, T, learning rate and epochs.

    pip install ".[bench]"
    python benchmarks/kd_sweep.py                 # every configuration, seeds 1 2 3, then the report
    python benchmarks/kd_sweep.py --report-only   # the report from the results already there

The same SST-2 split, teacher (MPNet-base fine-tuned on the 4,000 labelled rows) and MiniLM-L6 student as
benchmarks/transfer_benchmark.py; each configuration is one `transfer_benchmark.py` run (its command line, in a
child process) with the labelled rows alone
(row logits_labelled, or no_teacher for the baseline at another learning rate), in its own folder
benchmarks/results/kd_sweep/<name>/ (resumable: finished seeds are skipped). The reference configuration
(alpha 0.5, T 2, lr 1e-4, up to 3 epochs) and the no-teacher baseline at lr 1e-4 are the rows of the main run,
benchmarks/results/transfer_sst2.json. Epochs: every run scores each epoch on the selection slice (never dev) and
keeps the best, so "up to N epochs" is the epoch sweep.

Beside dev accuracy the report gives the checks that the soft targets reach the student: the share of the labelled
(training) rows on which the student's prediction equals the teacher's, and the student's accuracy on them; and how
far the teacher's soft labels can differ from the hard ones at all (the teacher's accuracy and mean top-class
probability on its own training rows).

Writes benchmarks/results/kd_sweep.json and kd_sweep.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import harness

TRANSFER_BENCHMARK = Path(__file__).resolve().parent / "transfer_benchmark.py"
# name -> (row, flags). Each changes one setting of the reference (alpha 0.5, T 2, lr 1e-4, up to 3 epochs), except
# kd_a1.0_T2_6ep: the epochs of the alpha that did best. A learning rate that helps KD is tried without a teacher too.
CONFIGS = {
    "kd_a1.0_T2": ("logits_labelled", ["--alpha", "1.0"]),
    "kd_a0.5_T4": ("logits_labelled", ["--temperature", "4"]),
    "kd_a0.5_T2_lr2e-4": ("logits_labelled", ["--student-learning-rate", "2e-4"]),
    "no_teacher_lr2e-4": ("no_teacher", ["--student-learning-rate", "2e-4"]),
    "kd_a1.0_T2_6ep": ("logits_labelled", ["--alpha", "1.0", "--epochs", "6"]),
}
REFERENCE = {"kd_a0.5_T2 (reference)": "logits_labelled", "no_teacher (reference)": "no_teacher"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/kd_sweep.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--results-dir", default=str(harness.RESULTS_DIR))
    p.add_argument("--report-only", action="store_true")
    return p


def config_row(name: str, row: str, results: dict) -> dict:
    """One sweep line from a transfer_benchmark results dict."""
    settings = results["settings"]
    runs = results["runs"].get(row, {})
    seeds = sorted(runs, key=int)
    accs = [runs[s]["dev_accuracy"] for s in seeds]
    mean, std = harness.mean_std(accs)
    train_agree = [runs[s].get("train_agreement_with_teacher") for s in seeds]
    train_acc = [runs[s].get("train_accuracy") for s in seeds]
    return {"name": name, "row": row, "alpha": settings["alpha"] if row != "no_teacher" else None,
            "temperature": settings["temperature"] if row != "no_teacher" else None,
            "learning_rate": settings["student_learning_rate"], "max_epochs": settings["epochs"],
            "seeds": [int(s) for s in seeds], "dev_accuracy": accs, "mean": mean, "std": std,
            "chosen_epoch": [runs[s]["chosen_epoch"] for s in seeds],
            "dev_agreement_with_teacher": [runs[s]["dev_agreement_with_teacher"] for s in seeds],
            "train_agreement_with_teacher": train_agree, "train_accuracy": train_acc}


def _mean_pct(values) -> str:
    values = [v for v in values if v is not None]
    return f"{100 * statistics.fmean(values):.1f}" if values else "n/a"


FLAG_SETTINGS = {"--alpha": "alpha", "--temperature": "temperature", "--student-learning-rate":
                 "student_learning_rate", "--epochs": "epochs"}


def check_one_change(name: str, flags: list[str], settings: dict, reference: dict) -> None:
    """A configuration must differ from the reference run only in the settings its flags name."""
    named = {FLAG_SETTINGS[f] for f in flags if f in FLAG_SETTINGS}
    differ = {k for k in reference if settings.get(k) != reference[k]}
    if differ - named:
        raise SystemExit(f"kd_sweep: {name} differs from the reference run in {sorted(differ - named)}, not only in "
                         f"{sorted(named)}; its line would not compare one setting. Run both with the same flags.")


def report(results_dir: Path) -> dict:
    main = json.loads((results_dir / "transfer_sst2.json").read_text())
    lines_data = [config_row(name, row, main) for name, row in REFERENCE.items()]
    for name, (row, flags) in CONFIGS.items():
        path = results_dir / "kd_sweep" / name / "transfer_sst2.json"
        if path.is_file():
            results = json.loads(path.read_text())
            check_one_change(name, flags, results["settings"], main["settings"])
            lines_data.append(config_row(name, row, results))
    base = next(line for line in lines_data if line["name"] == "no_teacher (reference)")
    for line in lines_data:
        line["gain_points"] = None if line["mean"] is None or line is base else 100 * (line["mean"] - base["mean"])
        line["spread_points"] = harness.spread_points(line["std"], base["std"])
    teacher = main["teacher"]
    out = {"experiment": "kd_sweep_sst2", "teacher": {k: v for k, v in teacher.items() if "predictions" not in k},
           "settings": main["settings"], "configs": lines_data, "command": "python benchmarks/kd_sweep.py",
           "machine": main.get("machine")}
    md = ["# Logit KD on the labelled rows alone: sweep of alpha, T, learning rate, epochs (SST-2)", "",
          "Same split, teacher and MiniLM-L6 student as transfer_sst2.md; labelled rows only (4,000), seeds "
          "per row as listed; each run keeps the epoch with the best selection-slice accuracy. Gain: mean minus the "
          "no-teacher reference (lr 1e-4), in points; '(within spread)' when smaller than the larger sample std.",
          "",
          f"Teacher: dev {100 * teacher['dev_accuracy']:.2f}%; on its own labelled (training) rows accuracy "
          + (f"{100 * teacher['labelled_accuracy']:.2f}%, mean top-class probability "
             + ", ".join(f"{k.rsplit('_', 1)[1]} {v:.3f}" for k, v in teacher.items()
                         if k.startswith("labelled_mean_top_probability"))
             if "labelled_accuracy" in teacher else "n/a") + ".",
          "",
          "| configuration | alpha | T | lr | max epochs | dev acc. mean ± std | gain (points) | seeds | chosen epochs "
          "| agreement with teacher: dev / train rows | student accuracy on train rows |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for line in lines_data:
        if line["mean"] is None:
            md.append(f"| {line['name']} | | | | | not run | | | | | |")
            continue
        std = f" ± {100 * line['std']:.2f}" if line["std"] is not None else ""
        gain = "–"
        if line["gain_points"] is not None:
            gain = f"{line['gain_points']:+.2f}"
            if line["spread_points"] is not None and abs(line["gain_points"]) < line["spread_points"]:
                gain += " (within spread)"
        fmt = lambda v: "–" if v is None else f"{v:g}"  # noqa: E731
        md.append(f"| {line['name']} | {fmt(line['alpha'])} | {fmt(line['temperature'])} | "
                  f"{line['learning_rate']:g} | {line['max_epochs']} | {100 * line['mean']:.2f}{std} | {gain} | "
                  f"{', '.join(map(str, line['seeds']))} | {', '.join(map(str, line['chosen_epoch']))} | "
                  f"{_mean_pct(line['dev_agreement_with_teacher'])}% / "
                  f"{_mean_pct(line['train_agreement_with_teacher'])}% | {_mean_pct(line['train_accuracy'])}% |")
    md += ["", "Reproduce:", "", "```", out["command"], "```", ""]
    harness.write_results(results_dir, {"kd_sweep.json": json.dumps(out, indent=2), "kd_sweep.md": "\n".join(md)})
    return out


def transfer_command(name: str, seeds: list[int], threads: int, results_dir: Path) -> list[str]:
    """The transfer_benchmark.py command line of one configuration: its row and flags, the main run's teacher
    facts reused, results in results_dir/kd_sweep/<name>/."""
    row, flags = CONFIGS[name]
    return [sys.executable, str(TRANSFER_BENCHMARK), "--rows", row, *flags, "--seeds", *map(str, seeds),
            "--threads", str(threads), "--skip-step-timing", "--teacher-from", str(results_dir / "transfer_sst2.json"),
            "--results-dir", str(results_dir / "kd_sweep" / name)]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    results_dir = Path(args.results_dir)
    if not args.report_only:
        for name in args.configs:
            row, flags = CONFIGS[name]
            print(f"== {name}: {row} {' '.join(flags)}", flush=True)
            # A run of the other script's own command line (a child process), not a call into its code: its
            # results file records the command that made it, and each configuration gets a fresh process.
            subprocess.run(transfer_command(name, args.seeds, args.threads, results_dir), check=True)
            report(results_dir)
    report(results_dir)
    print((results_dir / "kd_sweep.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
