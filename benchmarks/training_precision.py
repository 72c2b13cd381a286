"""How much faster does a student train in bfloat16 autocast on this CPU? Training steps (forward, backward, fused
AdamW step: what `DistillationTrainer` runs by default) of one model in float32 and in bfloat16 autocast
(`bf16: true` in TrainingArguments), timed in alternating rounds on the same real SST-2 batches.

    python benchmarks/training_precision.py --model <a saved classification model> --data-dir ../shared/data
    python benchmarks/training_precision.py --model <model> --data-dir ../shared/data --rounds 2 --steps 1 \
        --results-dir /tmp/tp                                             # smoke run (timings meaningless)

Each round runs `--steps` steps of each precision, in an order drawn per round, on the same `--steps` batches
(`--batch-size` sentences of SST-2 train grouped by length as `group_by_length` groups them, each batch padded
to its longest, at most `--max-length` tokens: the compress benchmark's settings). Each precision trains its own
copy of the model with its own optimizer, so both run the same computation throughout. The figure is the
median over rounds of the seconds per step, and the ratio float32 / bfloat16. Speed only: what bfloat16 does to
accuracy is measured by training (the compress benchmark's `--bf16`).

Writes <results-dir>/training_precision.json and .md with the machine (its bf16 instruction sets: AMX, AVX512-BF16)
and the load other processes put on the cores while it ran.
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import sys

import harness

PRECISIONS = ("float32", "bfloat16")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="A saved sequence-classification model (distilkit or transformers).")
    p.add_argument("--data-dir", default=None, help="Holds sst2/train.tsv (default: ../shared/data).")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--steps", type=int, default=4, help="Training steps of each precision per round.")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--learning-rate", type=float, default=1e-4)
    p.add_argument("--results-dir", default=str(harness.RESULTS_DIR / "training_precision"))
    return p


def sst2_batches(data_dir: str, tokenizer, count: int, batch_size: int, max_length: int) -> list[dict]:
    """`count` batches of `batch_size` SST-2 train sentences drawn with seed 0, grouped by length as the Trainer's
    `group_by_length` groups them (the sentences sorted by length, then cut into batches), each padded to its
    longest."""
    dataset, spec = harness.load_glue_local("sst2", data_dir, "train")
    rows = random.Random(0).sample(range(len(dataset)), count * batch_size)
    texts = dataset.select(rows)[spec["text"]]
    texts = sorted(texts, key=lambda t: len(tokenizer(t, truncation=True, max_length=max_length)["input_ids"]))
    return [dict(tokenizer(texts[i:i + batch_size], truncation=True, max_length=max_length, padding=True,
                           return_tensors="pt"))
            for i in range(0, len(texts), batch_size)]


def training_step(model, optimizer, batches: list[dict], precision: str):
    """A call that runs one step per batch (forward with a cross-entropy loss on fixed labels, backward, optimizer
    step), in float32 or bfloat16 autocast."""
    import torch

    labels = [torch.arange(len(b["input_ids"])) % 2 for b in batches]

    def run():
        for batch, label in zip(batches, labels):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                loss = model(**batch, labels=label).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return run


def measure(a, argv: list[str]) -> dict:
    import torch
    from transformers import AutoTokenizer

    from distilkit.serialization import from_pretrained

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    data_dir = a.data_dir or harness.default_data_dir()
    if not data_dir:
        raise SystemExit("no SST-2 data: pass --data-dir (a folder holding sst2/train.tsv).")
    base = from_pretrained(a.model).train()
    batches = sst2_batches(data_dir, AutoTokenizer.from_pretrained(a.model), a.steps, a.batch_size, a.max_length)
    runners = {}
    for precision in PRECISIONS:
        model = copy.deepcopy(base)
        optimizer = torch.optim.AdamW(model.parameters(), lr=a.learning_rate, fused=True)
        runners[precision] = training_step(model, optimizer, batches, precision)
    load_before, others = harness.load_average(), harness.OthersCpu()
    times = harness.interleaved_times(runners, a.rounds, warmup=1)
    other_cores, load_after = others.cpus(), harness.load_average()
    per_step = {name: [ms / 1000 / a.steps for ms in t["wall_ms"]] for name, t in times.items()}
    median = {name: statistics.median(values) for name, values in per_step.items()}
    return {
        "model": harness.portable_path(a.model),
        "parameters": sum(p.numel() for p in base.parameters()),
        "settings": {"batch_size": a.batch_size, "max_length": a.max_length, "steps_per_round": a.steps,
                     "rounds": a.rounds, "threads": a.threads, "optimizer": "AdamW (fused)",
                     "mean_padded_length": round(statistics.fmean(b["input_ids"].shape[1] for b in batches), 1)},
        "seconds_per_step": {name: {"median": round(median[name], 6), "min": round(min(v), 6),
                                    "max": round(max(v), 6)} for name, v in per_step.items()},
        "speedup_bf16": round(median["float32"] / median["bfloat16"], 3),
        "load": {"loadavg_before": load_before, "loadavg_after": load_after, "other_cores": other_cores},
        "machine": harness.engines_machine_info(),
        "command": harness.portable_command("training_precision.py", argv),
    }


def markdown(r: dict) -> str:
    s, flags = r["settings"], r["machine"].get("flags", {})
    bf16_flags = ", ".join(f for f in ("amx_bf16", "avx512_bf16") if flags.get(f)) or "none"
    lines = ["# Training speed: float32 against bfloat16 autocast", "",
             f"Model `{r['model']}` ({r['parameters'] / 1e6:.1f}M parameters); batch {s['batch_size']} SST-2 "
             f"sentences (at most {s['max_length']} tokens, batches padded to {s['mean_padded_length']} on average), "
             f"{s['optimizer']}, {s['threads']} threads; {s['rounds']} alternating rounds of {s['steps_per_round']} "
             f"steps each.", "",
             f"Machine: {r['machine'].get('cpu_model', '?')}; bf16 instruction sets: {bf16_flags}. Load average "
             f"{r['load']['loadavg_before']} before, {r['load']['loadavg_after']} after; other processes "
             f"{r['load']['other_cores']} cores meanwhile.", "",
             "| precision | seconds per step (median) | min | max |", "|---|---:|---:|---:|"]
    for name, v in r["seconds_per_step"].items():
        lines.append(f"| {name} | {v['median']:.3f} | {v['min']:.3f} | {v['max']:.3f} |")
    lines += ["", f"bfloat16 autocast trains **{r['speedup_bf16']:.2f}x** as fast as float32 here.", "",
              f"Command: `{r['command']}`", ""]
    return "\n".join(lines)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    result = measure(a, argv)
    harness.write_results(a.results_dir, {"training_precision.json": json.dumps(result, indent=1) + "\n",
                                          "training_precision.md": markdown(result)})
    print(markdown(result))


if __name__ == "__main__":
    main()
