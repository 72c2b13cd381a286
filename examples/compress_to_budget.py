"""Compress a fine-tuned classifier to a budget: distilkit chooses the layers, heads, FFN width and int8 that meet
a speedup, latency or size target on this machine, then distils, prunes and quantizes the teacher to that shape.

    python examples/compress_to_budget.py --teacher path/to/fine-tuned-classifier \
        --train_file train.csv --validation_file dev.csv --transfer_file unlabelled.csv \
        --target_speedup 4 --output_dir compressed

A latency or speedup target holds at the batch size, sequence length and threads it is measured at
(--latency_batch_size, --latency_seq_len, --latency_threads): measure what you will deploy. A size target needs
no timing. The run is resumable: run the same command again after an interruption.
"""

import argparse

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from distilkit import DistillationConfig
from distilkit.compress import CompressArguments, MachineSettings, compress
from distilkit.data import prepare_classification, read_table, tokenize_texts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="folder or Hub id of the fine-tuned classifier to compress")
    p.add_argument("--train_file", required=True, help="labelled examples to distil on")
    p.add_argument("--validation_file", help="labelled examples every stage is scored on")
    p.add_argument("--transfer_file", help="unlabelled text the teacher labels (more data for the distillation)")
    p.add_argument("--text_column", default="sentence")
    p.add_argument("--label_column", default="label")
    p.add_argument("--max_length", type=int, default=128)
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--target_speedup", type=float, help="times faster than the teacher")
    target.add_argument("--target_latency_ms", type=float, help="milliseconds per forward pass")
    target.add_argument("--target_size_mb", type=float, help="MB of weight files")
    p.add_argument("--latency_batch_size", type=int, default=8)
    p.add_argument("--latency_seq_len", type=int, default=128)
    p.add_argument("--latency_threads", type=int, default=2)
    p.add_argument("--latency_cache", help="json file of latency measurements, reused across runs on this machine "
                   "(default ~/.cache/distilkit/latency.json)")
    p.add_argument("--output_dir", required=True)
    p.add_argument("--learning_rate", type=float, default=1e-4)
    p.add_argument("--num_train_epochs", type=float, default=3.0)
    p.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (overrides the epochs)")
    p.add_argument("--prune_every_steps", type=int, default=50,
                   help="steps between the gradual pruning steps; all of them must fit in the training")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def accuracy(prediction):
    logits, labels = prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main(argv=None):
    args = parse_args(argv)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher)
    tokenizer = AutoTokenizer.from_pretrained(args.teacher)  # the student is cut from the teacher: same tokenizer

    def labelled(path):
        return prepare_classification(read_table(path), tokenizer, args.text_column, args.label_column,
                                      max_length=args.max_length, num_labels=teacher.config.num_labels)

    train = labelled(args.train_file)
    validation = labelled(args.validation_file) if args.validation_file else None
    transfer = (tokenize_texts(read_table(args.transfer_file), tokenizer, args.text_column, max_length=args.max_length)
                if args.transfer_file else None)

    # The target, and the candidate shapes' latency cache (candidates are timed once per machine, then reused).
    budget = CompressArguments(target_speedup=args.target_speedup, target_latency_ms=args.target_latency_ms,
                               target_size_mb=args.target_size_mb, latency_cache=args.latency_cache)
    # Latency depends on how the model runs; the plan and the final comparison are timed at these settings.
    machine = MachineSettings(args.latency_batch_size, args.latency_seq_len, args.latency_threads)
    # The distillation that makes the planned student. How much is pruned comes from the plan, when is set here.
    training = DistillationConfig(
        output_dir=args.output_dir, learning_rate=args.learning_rate, num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps, per_device_train_batch_size=args.batch_size, warmup_steps=0.06,
        weight_decay=0.01, alpha=1.0, temperature=2.0, prune_every_steps=args.prune_every_steps, seed=args.seed,
        logging_steps=50, report_to="none", save_strategy="no")

    # Plan (the shape that meets the target), then its stages: student/ (distilled while pruning to the planned
    # shape) and int8/ (when the plan is int8), model folders under output_dir; then every stage measured against
    # the teacher. Running it again resumes a killed run.
    result = compress(teacher, tokenizer, train, validation, budget, training, args.output_dir, machine=machine,
                      transfer_dataset=transfer, compute_metrics=accuracy if validation is not None else None,
                      data_collator=DataCollatorWithPadding(tokenizer))
    print(result.summary())
    print(f"final model: {result.final.source} (load it with distilkit.from_pretrained); results.md and "
          f"tradeoff.png in {args.output_dir}")
    return result


if __name__ == "__main__":
    main()
