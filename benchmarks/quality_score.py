"""Does the plan's quality score predict accuracy? Score shapes, distil each as `compress` would, and correlate.

`distilkit compress` chooses, among the shapes that fit the budget, the one with the best quality score
(`distilkit.compress.quality`: KL(teacher ‖ the teacher pruned one-shot to the shape) on held-out training rows,
lower is better). This script checks that choice against what it stands for, the accuracy each shape reaches once
distilled. For every shape and seed it does exactly what `compress`'s student stage does, with the same public
pieces: the probe built on the labelled rows with the run's seed (`QualityProbe.build`), the layers it keeps
(`keep_layers`), `student_from_teacher`, then distillation with gradual pruning to the shape's heads and FFN
neurons per layer (`distilkit.compress.run.shape_pruning`), and the dev accuracy of the float student (a shape
scores the same in int8). It reports Spearman's rank correlation between the score and the mean accuracy over the
shapes (with the sign flipped, so +1 means "a better score, a better model"), beside the correlation of the
criterion the plan used before (parameter count).

Data: SST-2 from ../shared/data. The labelled rows are the ones `distilkit train --max_train_samples N` gave the
teacher (train.tsv shuffled with --split-seed, its first N rows); the transfer text is the next --transfer-rows rows
of that shuffle (labels dropped), so the student sees text the teacher did not train on; dev.tsv (872 rows) only
measures. Nothing is chosen on dev.

Default shapes: eight shapes of an all-MiniLM-L6-v2 teacher (6 layers x 12 heads x 1,536 FFN), from 1 to 6 layers,
trading heads against FFN width, all of them within the budget of one plan (`--target_speedup 3`, batch 8 x 128,
2 threads, in float or int8): the choice that plan makes among them is the one the score must get right.

    python benchmarks/quality_score.py --teacher runs/ort-teacher/teacher --seeds 1 2 3

Resumable: a finished (shape, seed) keeps its result.json under --work-dir. Results:
benchmarks/results/quality_score.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import harness
import torch

DEFAULT_WORK = Path.home() / ".cache" / "distilkit" / "quality-score-bench"
DEFAULT_SHAPES = ["L6-h6-f512", "L6-h4-f768", "L3-h12-f1152", "L4-h6-f768", "L4-h3-f1536", "L2-h12-f1536",
                  "L3-h6-f192", "L1-h12-f1536"]
GOAL_CORRELATION = 0.7  # issue 23: rank correlation with final accuracy >= 0.7 over >= 6 shapes
RESULTS_NAME = "quality_score"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/quality_score.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="A fine-tuned SST-2 sequence classifier folder.")
    p.add_argument("--teacher-name", default="all-MiniLM-L6-v2 fine-tuned on 4,000 SST-2 rows")
    p.add_argument("--shapes", nargs="+", default=DEFAULT_SHAPES,
                   help="Uniform shapes L<layers>-h<heads>-f<ffn> (default: %(default)s).")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--labelled-rows", type=int, default=4000)
    p.add_argument("--transfer-rows", type=int, default=4000)
    p.add_argument("--split-seed", type=int, default=42, help="The shuffle `distilkit train` drew the teacher's "
                   "rows with (its seed).")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--prune-every-steps", type=int, default=20)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="Weight of the hidden-state loss (MSE), each student layer matched to the teacher layer it "
                        "was copied from, as compress does (distilkit.config.kept_layer_map); 0: logits alone.")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--dev-rows", type=int, default=None, help="Only the first N dev rows (smoke tests).")
    p.add_argument("--work-dir", default=str(DEFAULT_WORK))
    p.add_argument("--order-cache", default=None, help="JSON file of measured layer rankings, per teacher and seed "
                   "(default: <work-dir>/layer-orders.json); share it between work dirs of the same teacher.")
    p.add_argument("--results-dir", default=str(harness.RESULTS_DIR))
    return p


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = Path(args.work_dir)
        from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

        self.teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(args.teacher)
        self.collator = DataCollatorWithPadding(self.tokenizer)
        self.labelled, self.transfer, self.dev, self.data_facts = self._data()
        self._probes: dict[int, object] = {}  # seed -> QualityProbe: one per seed, as one compress run builds one

    def probe(self, seed: int):
        """The quality probe a compress run with this seed builds (on the labelled rows), built once per seed."""
        from distilkit.compress.quality import DEFAULT_IMPORTANCE_ROWS, DEFAULT_SCORE_ROWS, QualityProbe

        if seed not in self._probes:
            # The layer ranking (77 forward passes on a 12-layer teacher) is kept on disk per seed, so another run
            # of this script on the same teacher and rows (other shapes, other losses) does not measure it again.
            from distilkit.teacher_cache import teacher_fingerprint

            orders = Path(self.args.order_cache or self.work / "layer-orders.json")
            key = (f"{teacher_fingerprint(self.teacher)}|{self.labelled._fingerprint}|seed{seed}|"
                   f"importance{DEFAULT_IMPORTANCE_ROWS}|score{DEFAULT_SCORE_ROWS}")
            known = json.loads(orders.read_text()) if orders.is_file() else {}
            probe = QualityProbe.build(self.teacher, self.labelled, self.collator, seed=seed,
                                       removal_order=known.get(key))
            if key not in known:  # read again: another run may have added its own since
                known = json.loads(orders.read_text()) if orders.is_file() else {}
                harness.write_results(orders.parent, {orders.name: json.dumps(
                    {**known, key: probe.removal_order}, indent=1) + "\n"})
            self._probes[seed] = probe
        return self._probes[seed]

    def _data(self):
        """(labelled, transfer, dev, facts): train.tsv cut as `harness.sst2_split` cuts it (no selection slice),
        tokenised for the teacher."""
        from distilkit.data import prepare_classification, tokenize_texts

        a = self.args
        (labelled, _, transfer, dev), facts = harness.sst2_split(
            a.data_dir or harness.default_data_dir() or "", a.labelled_rows, 0, a.transfer_rows, a.split_seed,
            a.dev_rows)
        facts["split_seed"] = a.split_seed
        labelled, dev = (prepare_classification(raw, self.tokenizer, "sentence", "label", max_length=a.max_length,
                                                num_labels=2) for raw in (labelled, dev))
        transfer = tokenize_texts(transfer, self.tokenizer, "sentence", max_length=a.max_length)
        return labelled, transfer, dev, facts

    def training_arguments(self, seed: int, output_dir: Path, keep: list[int]):
        from distilkit import DistillationConfig
        from distilkit.config import kept_layer_map

        a = self.args
        return DistillationConfig(
            output_dir=str(output_dir), num_train_epochs=a.epochs, learning_rate=a.learning_rate,
            per_device_train_batch_size=32, per_device_eval_batch_size=64, warmup_steps=0.06, weight_decay=0.01,
            alpha=1.0, temperature=a.temperature, hidden_weight=a.hidden_weight, layer_map=kept_layer_map(keep),
            teacher_cache_dir=None if a.hidden_weight else str(self.work / "teacher-outputs"),
            prune_every_steps=a.prune_every_steps, save_strategy="no", logging_steps=50, report_to="none",
            seed=seed, use_cpu=True, disable_tqdm=True, train_sampling_strategy="group_by_length",
            dataloader_num_workers=0)

    def run(self, name: str, shape, seed: int) -> dict:
        """One shape and seed as compress's student stage makes it: score, distil, evaluate (cached on disk)."""
        from distilkit import DistillationTrainer, student_from_teacher
        from distilkit.compress import ModelShape
        from distilkit.compress.plan import teacher_summary
        from distilkit.compress.run import shape_pruning

        folder = self.work / f"{name}-seed{seed}"
        done = folder / "result.json"
        if done.is_file():
            result = json.loads(done.read_text())
            if result.get("hidden_weight", 0.0) != self.args.hidden_weight:
                raise SystemExit(f"{done} was distilled with hidden_weight={result.get('hidden_weight', 0.0)}, this "
                                 f"run asks for {self.args.hidden_weight}: use another --work-dir.")
            return result
        start = time.perf_counter()  # score_seconds: the score, and the seed's probe when this run builds it
        probe = self.probe(seed)
        keep = probe.keep_layers(shape.num_layers)
        arguments = self.training_arguments(seed, folder / "training", keep)
        score = probe.score(shape)
        score_seconds = time.perf_counter() - start
        student = student_from_teacher(self.teacher, keep)
        trainer = DistillationTrainer(model=student, args=arguments, teacher_model=self.teacher,
                                      train_dataset=self.labelled, eval_dataset=self.dev,
                                      transfer_dataset=self.transfer, data_collator=self.collator,
                                      processing_class=self.tokenizer, compute_metrics=harness.accuracy_metric)
        callback = shape_pruning(shape, teacher_summary(self.teacher.config), arguments)
        if callback is not None:
            trainer.add_callback(callback)
        start = time.perf_counter()
        trainer.train()
        train_seconds = time.perf_counter() - start
        made = ModelShape.of(trainer.model)
        if (made.heads, made.ffn) != (shape.heads, shape.ffn):
            raise SystemExit(f"{name} seed {seed}: the distilled model is {made.key()}, not {shape.key()}.")
        metrics = trainer.evaluate()
        result = {"shape": name, "seed": seed, "hidden_weight": self.args.hidden_weight, "score": score,
                  "keep_layers": keep,
                  "parameters": sum(p.numel() for p in trainer.model.parameters()),
                  "accuracy": metrics["eval_accuracy"], "steps": trainer.state.global_step,
                  "score_seconds": round(score_seconds, 1), "train_seconds": round(train_seconds, 1)}
        folder.mkdir(parents=True, exist_ok=True)
        done.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps(result), flush=True)
        return result

    def teacher_accuracy(self) -> float:
        return harness.evaluate(self.teacher, self.dev, self.collator)["accuracy"]


def summarize(runs: list[dict], shapes: list[str]) -> dict:
    """Per shape: mean and spread of score and accuracy over seeds; the rank correlations over the shapes."""
    rows = []
    for name in shapes:
        mine = [r for r in runs if r["shape"] == name]
        if not mine:
            continue
        acc, acc_std = harness.mean_std([r["accuracy"] for r in mine])
        score, score_std = harness.mean_std([r["score"] for r in mine])
        rows.append({"shape": name, "seeds": sorted(r["seed"] for r in mine), "parameters": mine[0]["parameters"],
                     "score_mean": score, "score_std": score_std, "accuracy_mean": acc, "accuracy_std": acc_std,
                     "keep_layers": sorted({tuple(r["keep_layers"]) for r in mine})})
    accuracy = [r["accuracy_mean"] for r in rows]
    per_seed = {}
    for seed in sorted({r["seed"] for r in runs}):
        mine = [r for r in runs if r["seed"] == seed]
        per_seed[str(seed)] = harness.spearman([-r["score"] for r in mine], [r["accuracy"] for r in mine])
    spreads = [r["accuracy_std"] for r in rows if r["accuracy_std"] is not None]
    return {"rows": rows,
            "rank_correlation_score_accuracy": harness.spearman([-r["score_mean"] for r in rows], accuracy),
            "rank_correlation_score_accuracy_per_seed": per_seed,
            "rank_correlation_parameters_accuracy": harness.spearman([float(r["parameters"]) for r in rows], accuracy),
            "shapes": len(rows), "accuracy_range_points": (100 * (max(accuracy) - min(accuracy)) if rows else None),
            "median_seed_spread_points": 100 * statistics.median(spreads) if spreads else None}


def markdown(results: dict) -> str:
    s = results["summary"]
    rho = s["rank_correlation_score_accuracy"]
    verdict = "met" if rho is not None and rho >= GOAL_CORRELATION else "not met"
    lines = [
        "# Does the quality score predict distilled accuracy? (SST-2)", "",
        f"Teacher: {results['teacher']['name']} ({results['teacher']['layers']} layers, dev accuracy "
        f"{results['teacher']['dev_accuracy']:.4f}). Data: {results['data']['labelled_rows']:,} labelled SST-2 rows "
        f"(the teacher's), {results['data']['transfer_rows']:,} further training rows as transfer text, dev "
        f"({results['data']['dev_rows']} rows) for accuracy. Each shape and seed made as `compress`'s student stage "
        f"makes it: {results['settings']['epochs']:g} epoch(s), {results['steps']} steps of batch 32, gradual pruning "
        f"every {results['settings']['prune_every_steps']} steps; float students (int8 scores the same). Loss: "
        f"T^2 KL on the teacher's logits (T {results['settings'].get('temperature', 2.0):g})"
        + (f" + {hidden:g} x hidden-state MSE, each student layer matched to the teacher layer it was copied from"
           if (hidden := results['settings'].get('hidden_weight', 0.0)) else "") + ".", "",
        f"**Spearman rank correlation, score vs mean accuracy over {s['shapes']} shapes: "
        f"{_fmt(rho, '+.3f')}** (goal >= {GOAL_CORRELATION}: {verdict}); "
        f"per seed: " + ", ".join(f"seed {k} {_fmt(v, '+.3f')}" for k, v in
                                  s["rank_correlation_score_accuracy_per_seed"].items()) + ". "
        f"Parameter count (the plan's criterion before the score) vs mean accuracy: "
        f"{_fmt(s['rank_correlation_parameters_accuracy'], '+.3f')}. The score's sign is flipped (lower KL is "
        f"better), so +1 means the better-scored shape is always the more accurate one.", "",
        f"Accuracy range over the shapes: {_fmt(s['accuracy_range_points'], '.2f')} points; median spread across "
        f"seeds (sample std): {_fmt(s['median_seed_spread_points'], '.2f')} points.", "",
        "| shape | parameters | score (KL, mean ± std) | layers kept | dev accuracy (mean ± std) | seeds |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in sorted(s["rows"], key=lambda r: r["score_mean"]):
        layers = " / ".join(",".join(map(str, k)) for k in r["keep_layers"])
        lines.append(f"| {r['shape']} | {r['parameters'] / 1e6:.2f}M | {r['score_mean']:.4f} ± "
                     f"{_fmt(r['score_std'], '.4f')} | {layers} | {100 * r['accuracy_mean']:.2f} ± "
                     f"{_fmt(r['accuracy_std'] and 100 * r['accuracy_std'], '.2f')} | {len(r['seeds'])} |")
    lines += ["", f"Command: `{results['command']}`", "",
              f"Machine: {results['machine']['cpu_model']}, {results['machine']['cpu_count']} cores, torch "
              f"{results['machine']['torch']}; {results['total_train_minutes']:.0f} minutes of distillation in all.",
              ""]
    return "\n".join(lines)


def _fmt(value, spec: str) -> str:
    return "–" if value is None else format(value, spec)


def main(argv=None) -> None:
    import sys

    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    bench = Bench(args)
    shapes = {name: harness.parse_shape(name, bench.teacher.config) for name in args.shapes}
    runs = [bench.run(name, shape, seed) for seed in args.seeds for name, shape in shapes.items()]
    results = {
        "teacher": {"name": args.teacher_name, "folder": harness.portable_path(args.teacher),
                    "layers": bench.teacher.config.num_hidden_layers, "dev_accuracy": bench.teacher_accuracy()},
        "data": bench.data_facts,
        "settings": {k: v for k, v in vars(args).items() if k not in ("work_dir", "results_dir")},
        "steps": runs[0]["steps"], "runs": runs, "summary": summarize(runs, list(shapes)),
        "total_train_minutes": sum(r["train_seconds"] for r in runs) / 60,
        "command": harness.portable_command("quality_score.py", sys.argv[1:] if argv is None else argv),
        "machine": harness.machine_info(),
    }
    results["settings"]["teacher"] = harness.portable_path(args.teacher)
    if args.order_cache:
        results["settings"]["order_cache"] = harness.portable_path(args.order_cache)
    out = Path(args.results_dir)
    harness.write_results(out, {f"{RESULTS_NAME}.json": json.dumps(results, indent=1, default=str) + "\n",
                                f"{RESULTS_NAME}.md": markdown(results)})
    print(markdown(results))


if __name__ == "__main__":
    main()
