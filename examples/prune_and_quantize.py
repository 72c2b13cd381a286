"""Prune a share of a fine-tuned classifier's attention heads, optionally recover, quantize to int8, save, reload.

    python examples/prune_and_quantize.py --model path/to/fine-tuned-classifier --data_file dev.csv \
        --prune_fraction 0.4 --recovery_steps 200 --output_dir pruned-int8

Heads are scored by Taylor importance (|activation x gradient| of the loss) on a few batches of --data_file, so
that file needs labels; the same rows measure accuracy before and after. Use held-out rows for an honest number.
"""

import argparse
import copy
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

import distilkit
from distilkit import DistillationConfig, DistillationTrainer
from distilkit.data import prepare_classification, read_table
from distilkit.pruning import kept_heads, prune_heads_to_fraction
from distilkit.quantization import quantize_int8


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="folder or Hub id of a fine-tuned sequence classifier")
    p.add_argument("--data_file", required=True, help="labelled rows: head scores, recovery and accuracy")
    p.add_argument("--text_column", default="sentence")
    p.add_argument("--label_column", default="label")
    p.add_argument("--max_length", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--prune_fraction", type=float, default=0.4, help="share of all attention heads to remove")
    p.add_argument("--scoring_batches", type=int, default=8, help="batches the head importance is averaged over")
    p.add_argument("--recovery_steps", type=int, default=0,
                   help="distillation steps from the unpruned model after pruning (0: none)")
    p.add_argument("--quantize_embeddings", action="store_true", help="int8 embeddings too (smaller, not faster)")
    p.add_argument("--output_dir", required=True)
    return p.parse_args(argv)


@torch.inference_mode()
def logits_of(model, loader) -> torch.Tensor:
    model.eval()
    return torch.cat([model(**{k: v for k, v in batch.items() if k != "labels"}).logits for batch in loader])


def main(argv=None) -> dict:
    args = parse_args(argv)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForSequenceClassification.from_pretrained(args.model)
    data = prepare_classification(read_table(args.data_file), tokenizer, args.text_column, args.label_column,
                                  max_length=args.max_length, num_labels=model.config.num_labels)
    collator = DataCollatorWithPadding(tokenizer)
    loader = DataLoader(data, batch_size=args.batch_size, collate_fn=collator)  # fixed order: logits compare
    labels = torch.tensor(data["labels"])

    def accuracy(logits):
        return round(float((logits.argmax(-1) == labels).float().mean()), 4)

    # The unpruned model: the reference, and the teacher of the recovery.
    original = copy.deepcopy(model).eval()
    heads_before = sum(len(layer) for layer in kept_heads(model))

    # Taylor scores need gradients of the loss, hence labelled batches; the heads are removed structurally (the
    # q/k/v and output matrices shrink), so the model really gets smaller and faster.
    scoring = DataLoader(data.shuffle(seed=0), batch_size=args.batch_size, collate_fn=collator)
    _, removed = prune_heads_to_fraction(model, scoring, args.prune_fraction, method="taylor",
                                   num_batches=args.scoring_batches)
    pruned_logits = logits_of(model, loader)

    if args.recovery_steps:
        # A short distillation from the unpruned model wins back most of what pruning lost. Nothing of it is kept
        # but the weights, so the trainer writes into a scratch folder.
        with tempfile.TemporaryDirectory() as scratch:
            config = DistillationConfig(output_dir=scratch, alpha=1.0, temperature=2.0, max_steps=args.recovery_steps,
                                        per_device_train_batch_size=args.batch_size, learning_rate=2e-5,
                                        save_strategy="no", report_to="none", logging_steps=50)
            DistillationTrainer(model=model, teacher_model=original, args=config, train_dataset=data,
                                data_collator=collator, processing_class=tokenizer).train()
    recovered_logits = logits_of(model, loader)

    # int8 weights with run-time int8 activations for every Linear layer (the task head stays in float).
    model = quantize_int8(model.eval(), quantize_embeddings=args.quantize_embeddings)
    int8_logits = logits_of(model, loader)
    # distilkit.save_pretrained records the pruning and int8 structure in the config, so the folder reloads with
    # distilkit.from_pretrained (a plain from_pretrained would find the shapes wrong).
    distilkit.save_pretrained(model, args.output_dir, tokenizer)
    reloaded = distilkit.from_pretrained(args.output_dir)
    reloaded_logits = logits_of(reloaded, loader)

    summary = {
        "output_dir": args.output_dir,
        "heads": {"before": heads_before, "after": sum(len(layer) for layer in kept_heads(reloaded)),
                  "removed": {str(layer): heads for layer, heads in removed.items()}},
        "accuracy": {"fine-tuned": accuracy(logits_of(original, loader)), "pruned": accuracy(pruned_logits),
                     "recovered": accuracy(recovered_logits), "pruned + int8": accuracy(int8_logits),
                     "reloaded": accuracy(reloaded_logits)},
        "max_logit_difference_reloaded": float((reloaded_logits - int8_logits).abs().max()),
        "weights_mb": {"fine-tuned": sum(p.numel() * p.element_size() for p in original.parameters()) / 1e6,
                       "saved": sum(f.stat().st_size for f in Path(args.output_dir).glob("*.safetensors")) / 1e6},
    }
    print(f"heads {summary['heads']['before']} -> {summary['heads']['after']}; accuracy {summary['accuracy']}; "
          f"weights {summary['weights_mb']['fine-tuned']:.1f} MB -> {summary['weights_mb']['saved']:.1f} MB; "
          f"reloaded vs in memory: max |logit difference| {summary['max_logit_difference_reloaded']:.2e}")
    return summary


if __name__ == "__main__":
    main()
