"""Distil a fine-tuned teacher into a smaller student on labelled data plus unlabelled "transfer" text.

    python examples/distill_with_transfer_data.py \
        --teacher path/to/fine-tuned-teacher --student path/to/smaller-pretrained-model \
        --train_file train.csv --transfer_file unlabelled.csv --validation_file dev.csv \
        --output_dir distilled --num_train_epochs 3

Files are csv/tsv/json/parquet with a text column (--text_column); train and validation also hold an integer
label column (--label_column). The transfer file needs text only: the teacher labels it with its soft outputs,
which is why unlabelled in-domain text helps a student most.
"""

import argparse

import numpy as np
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

from distilkit import DistillationConfig, DistillationTrainer
from distilkit.data import prepare_classification, read_table, tokenize_texts


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="folder or Hub id of the fine-tuned teacher (a classifier)")
    p.add_argument("--student", required=True, help="folder or Hub id of the smaller model to train")
    p.add_argument("--train_file", required=True, help="labelled examples")
    p.add_argument("--transfer_file", required=True, help="unlabelled text (its label column, if any, is ignored)")
    p.add_argument("--validation_file", help="labelled examples to evaluate on after each epoch")
    p.add_argument("--text_column", default="sentence")
    p.add_argument("--label_column", default="label")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--output_dir", required=True)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the teacher's soft labels (1 - alpha: labels)")
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--learning_rate", type=float, default=5e-5)
    p.add_argument("--num_train_epochs", type=float, default=3.0)
    p.add_argument("--max_steps", type=int, default=-1, help="stop after this many steps (overrides the epochs)")
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--seed", type=int, default=42)
    return p.parse_args(argv)


def accuracy(prediction):
    logits, labels = prediction
    return {"accuracy": float((np.argmax(logits, axis=-1) == labels).mean())}


def main(argv=None) -> dict:
    args = parse_args(argv)
    teacher = AutoModelForSequenceClassification.from_pretrained(args.teacher)
    # The student takes the teacher's label set so their logits line up class by class. A pretrained encoder
    # without a classification head (or with another one) gets a fresh head: hence ignore_mismatched_sizes.
    student = AutoModelForSequenceClassification.from_pretrained(
        args.student, num_labels=teacher.config.num_labels, id2label=teacher.config.id2label,
        label2id=teacher.config.label2id, ignore_mismatched_sizes=True)
    # One tokenizer for both models keeps this short. Models with different tokenizers can still share logits:
    # pass teacher_tokenizer= to prepare_classification/tokenize_texts and collate with TeacherInputsCollator.
    tokenizer = AutoTokenizer.from_pretrained(args.student)

    def labelled(path):
        return prepare_classification(read_table(path), tokenizer, args.text_column, args.label_column,
                                      max_length=args.max_length, num_labels=teacher.config.num_labels)

    train = labelled(args.train_file)
    validation = labelled(args.validation_file) if args.validation_file else None
    # Transfer rows are tokenised without labels. The trainer appends them to the training set; on them the loss
    # is the soft-label (KD) term alone, on labelled rows (1 - alpha) * CE + alpha * KD.
    transfer = tokenize_texts(read_table(args.transfer_file), tokenizer, args.text_column, max_length=args.max_length)

    # DistillationConfig is a transformers.TrainingArguments with the distillation settings added.
    config = DistillationConfig(
        output_dir=args.output_dir, alpha=args.alpha, temperature=args.temperature,
        learning_rate=args.learning_rate, num_train_epochs=args.num_train_epochs, max_steps=args.max_steps,
        per_device_train_batch_size=args.batch_size, per_device_eval_batch_size=args.batch_size,
        warmup_steps=0.06, weight_decay=0.01, seed=args.seed, logging_steps=50, report_to="none",
        eval_strategy="epoch" if validation is not None else "no", save_strategy="no")
    trainer = DistillationTrainer(
        model=student, teacher_model=teacher, args=config, train_dataset=train, eval_dataset=validation,
        transfer_dataset=transfer, data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer,
        compute_metrics=accuracy if validation is not None else None)
    trainer.train()
    # Weights, config and tokenizer, loadable with AutoModelForSequenceClassification.from_pretrained; the trainer
    # also writes a model card (README.md) that names the teacher and the data.
    trainer.save_model()
    metrics = trainer.evaluate() if validation is not None else {}
    print(f"saved the student to {args.output_dir}; {trainer.state.global_step} steps over {len(train)} labelled "
          f"and {len(transfer)} transfer rows; {metrics}")
    return {"output_dir": args.output_dir, "steps": trainer.state.global_step, "labelled_rows": len(train),
            "transfer_rows": len(transfer), "training_rows": len(trainer.train_dataset), "metrics": metrics}


if __name__ == "__main__":
    main()
