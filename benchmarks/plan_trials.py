"""Would a short distillation trial rank candidate shapes better than the one-shot quality score? (MPNet-base, SST-2)

`compress` scores a candidate by KL(teacher ‖ the teacher pruned one-shot to the shape). On the 12-layer MPNet-base
teacher that score preferred few wide layers, which then distilled worse than deeper shapes (known limits). Minitron
ranks candidates after a short distillation instead. This script tries that at a cost a plan could afford: each shape
pruned one-shot from the teacher (heads and FFN neurons by the probe's Taylor importance), distilled for a few
hundred steps on the teacher's soft labels (batch 16, temperature 2, AdamW at a constant learning rate), and the
KL on the probe's held-out rows printed after each checkpoint. The shapes are ones whose full distillation results
are known (benchmarks/results/compress_sst2.md and the 8x/12x runs of the quality-score plans).

Teacher and data are compress_benchmark.py's: its teacher folder (`--teacher`, from transfer_benchmark.py
--teacher-only), the 4,000 labelled rows it was trained on (SST-2 train.tsv cut by `harness.sst2_split` as that
benchmark cuts it: split seed 0, then 1,000 selection and 20,000 transfer rows), max length 64. Layers: the probe's
greedy ranking takes minutes, so the order the quality-score plans recorded (their keep_layers for 8 and 4 layers)
is given instead; "even" shapes keep evenly spaced layers as the parameter-count plans did.

    python benchmarks/plan_trials.py --teacher <transfer-bench work dir>/teachers/<teacher> \
        --steps 25 50 100 200 --learning-rate 1e-4 > benchmarks/results/plan_trials/mpnet.log
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import harness
import torch

# The greedy removal order that keeps layers 0,1,2,6,7,8,10,11 (8 layers) and 0,7,10,11 (4 layers), as the
# quality-score plans of compress_sst2 did (their plan.json keep_layers).
RECORDED_ORDER = [3, 4, 5, 9, 1, 2, 6, 8, 0, 7, 10, 11]
CASES = [  # name (with the known full-distillation result), layers, heads, FFN, layer choice
    ("L8-h4-f1536 greedy (8x quality-score plan: 86.58, teacher 91.51)", 8, 4, 1536, "greedy"),
    ("L8-h4-f1536 even", 8, 4, 1536, "even"),
    ("L4-h12-f768 greedy (12x quality-score plan: 83.94, teacher 91.51)", 4, 12, 768, "greedy"),
    ("L4-h12-f768 even", 4, 12, 768, "even"),
    ("L8-h3-f3072 even (old 8x plan: 88.46 +- 0.18, teacher 90.48)", 8, 3, 3072, "even"),
    ("L8-h3-f1536 even (old 12x plan: 87.23 +- 0.76, teacher 90.48)", 8, 3, 1536, "even"),
    ("L12-h3-f3072 (old 4x plan: 87.84, teacher 90.48)", 12, 3, 3072, "all"),
    ("L12-h6-f768 (old 60 MB plan: 87.50, teacher 90.48)", 12, 6, 768, "all"),
]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="compress_benchmark.py's teacher folder.")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--steps", type=int, nargs="+", default=[25, 50, 100, 200], help="Checkpoints (steps).")
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--score-rows", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=None, help="Also write the scores as json here.")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)

    from torch.utils.data import DataLoader
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding

    from distilkit.compress.quality import DEFAULT_IMPORTANCE_ROWS, QualityProbe, pruned_copy, split_rows
    from distilkit.compress.shape import ModelShape
    from distilkit.losses import soft_label_loss
    from distilkit.data import prepare_classification
    from distilkit.student import every_kth_layer

    teacher = AutoModelForSequenceClassification.from_pretrained(a.teacher).eval()
    tokenizer = AutoTokenizer.from_pretrained(a.teacher)
    collator = DataCollatorWithPadding(tokenizer)
    (raw, _, _, _), _ = harness.sst2_split(a.data_dir or harness.default_data_dir() or "", 4000, 1000, 20000, 0)
    labelled = prepare_classification(raw, tokenizer, "sentence", "label", max_length=64, num_labels=2)
    started = time.time()
    probe = QualityProbe.build(teacher, labelled, collator, score_rows=a.score_rows, seed=1,
                               removal_order=RECORDED_ORDER)
    # Trial rows: labelled rows the probe used for neither importance nor score.
    rows = split_rows(len(labelled), DEFAULT_IMPORTANCE_ROWS, a.score_rows, seed=1)[2][:max(a.steps) * a.batch_size]
    data = labelled.select_columns([c for c in labelled.column_names if c in ("input_ids", "attention_mask")])
    trial = []
    with torch.no_grad():  # the batches are trained on: not inference tensors
        for batch in DataLoader(data.select(rows), batch_size=a.batch_size, collate_fn=collator):
            trial.append((batch, teacher(**batch).logits.float()))
    print(f"probe and trial rows: {time.time() - started:.0f} s", flush=True)

    results = {}
    for name, layers, heads, ffn, choice in CASES:
        keep = {"greedy": probe.keep_layers(layers), "even": every_kth_layer(12, layers),
                "all": list(range(12))}[choice]
        shape = ModelShape((heads,) * layers, (ffn,) * layers)
        started = time.time()
        model = pruned_copy(teacher, keep)
        probe.prune_to(model, shape, keep)
        model.eval()
        scores = {0: probe.divergence(model)}
        torch.manual_seed(0)
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=a.learning_rate)
        for step in range(1, max(a.steps) + 1):
            batch, teacher_logits = trial[(step - 1) % len(trial)]
            soft_label_loss(model(**batch).logits, teacher_logits, 2.0).backward()
            optimizer.step()
            optimizer.zero_grad()
            if step in a.steps:
                model.eval()
                scores[step] = probe.divergence(model)
                model.train()
        results[name] = {"keep_layers": keep, "kl_after_steps": scores}
        print(name, keep, {k: round(v, 4) for k, v in scores.items()}, f"{time.time() - started:.0f}s", flush=True)
    if a.out:
        Path(a.out).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
