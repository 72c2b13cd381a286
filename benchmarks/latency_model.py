"""How well does distilkit's latency model predict this machine? MiniLM-L6 and MPNet-base, measured shapes vs
predicted, on shapes held out of the fit.

    pip install ".[bench]"
    python benchmarks/latency_model.py                    # both models, batch 8, sequence length 128, 2 threads
    python benchmarks/latency_model.py --models minilm --max-shapes 4 --rounds 1 --seq-len 16 --threads 1 \\
        --results-dir /tmp/lm --cache /tmp/lm/cache.json                   # smoke run (timings meaningless)

For each model (configs of all-MiniLM-L6-v2, 6 layers x 12 heads, FFN 1536, and all-mpnet-base-v2, 12 layers x
12 heads, FFN 3072, with a 2-label head): the candidate grid of `distilkit.compress.grid.candidate_shapes` (3 depths x 3
head fractions x 3 FFN fractions x float / int8 / int8 with int8 embeddings, uniform over layers) is measured on
random-weight twins, `--rounds` interleaved rounds per group of 4 twins (measurements cached in `--cache`, keyed
by machine, torch, transformers, config, settings and shape: a rerun measures only what is missing). The latency
model (`distilkit.compress.latency_model.LatencyModel`) is fitted on a seeded 75% and its error reported on the other 25%.

Writes <results-dir>/latency_model.json and latency_model.md with the machine description and the command.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

import harness
from transformers import AutoConfig

from distilkit.compress import MachineSettings
from distilkit.compress.grid import candidate_shapes
from distilkit.compress.latency_model import LatencyModel, split_held_out
from distilkit.compress.measurements import MeasurementCache, measure_shapes
from distilkit.compress.twin import size_bytes


def model_folder(name: str) -> Path:
    return harness.minilm_dir() if name == "minilm" else harness.mpnet_dir()


def measure_model(name: str, args, settings: MachineSettings, cache: MeasurementCache) -> dict:
    config = AutoConfig.from_pretrained(model_folder(name), num_labels=2)
    shapes = candidate_shapes(config)
    if args.max_shapes is not None and args.max_shapes < len(shapes):
        shapes = random.Random(args.seed).sample(shapes, args.max_shapes)
    measured = measure_shapes(config, shapes, settings, cache, rounds=args.rounds)
    fit_part, held_out = split_held_out(measured, held_out=args.held_out, seed=args.seed)
    result = {"model": name, "model_type": config.model_type, "layers": config.num_hidden_layers,
              "heads": config.num_attention_heads, "ffn_width": config.intermediate_size,
              "shapes_measured": len(measured), "fit_shapes": len(fit_part), "held_out_shapes": len(held_out)}
    try:
        latency_model = LatencyModel.fit(fit_part)
    except ValueError as err:  # too few shapes (a --max-shapes smoke run): report the measurements alone
        result["fit_error"] = str(err)
        latency_model = None
    if latency_model is not None:
        result["latency_model"] = latency_model.to_dict()
        result["held_out_error"] = latency_model.evaluate(held_out)
    held_out_keys = {m.shape.key() for m in held_out}
    result["shapes"] = [
        {"shape": m.shape.key(), "part": "held-out" if m.shape.key() in held_out_keys else "fit",
         "size_mb": round(size_bytes(config, m.shape) / 1e6, 2), "measured_ms": round(m.median_ms, 2),
         "predicted_ms": None if latency_model is None else round(latency_model.predict(m.shape), 2)}
        for m in measured
    ]
    return result


def markdown(results: dict) -> str:
    settings = results["settings"]
    machine = results["machine"]
    lines = [
        "# Latency model: predicted vs measured latency of held-out shapes",
        "",
        f"Batch {settings['batch_size']}, sequence length {settings['seq_len']}, {settings['threads']} threads; "
        f"{results['rounds']} interleaved rounds per shape. Machine: {machine.get('cpu_model', '?')} "
        f"({machine['cpu_count']} cores, AVX-512 VNNI: {machine['avx512_vnni']}, AVX-VNNI: {machine['avx_vnni']}), "
        f"torch {machine['torch']}, transformers {machine['transformers']}.",
        "",
        f"Command: `{results['command']}`",
    ]
    for model in results["models"]:
        lines += ["", f"## {model['model']} ({model['model_type']}, {model['layers']} layers x {model['heads']} heads, "
                      f"FFN {model['ffn_width']})", "",
                  f"{model['shapes_measured']} shapes measured; fitted on {model['fit_shapes']}, "
                  f"{model['held_out_shapes']} held out."]
        if "fit_error" in model:
            lines += ["", f"No fit: {model['fit_error']}"]
        else:
            error = model["held_out_error"]
            lines += ["", f"Held-out error |predicted - measured| / measured: mean {error['mean_abs_rel_error']:.1%}, "
                          f"max {error['max_abs_rel_error']:.1%} ({error['worst_shape']}).", "",
                      "| precision | constant | per layer | per head | per FFN neuron | int8 embeddings |",
                      "|---|---|---|---|---|---|"]
            for precision, c in model["latency_model"]["coefficients"].items():
                emb = f"{c['int8_embeddings']:.3f}" if "int8_embeddings" in c else ""
                lines.append(f"| {precision} | {c['constant']:.3f} | {c['layers']:.3f} | {c['heads']:.4f} | "
                             f"{c['neurons']:.6f} | {emb} |")
        lines += ["", "| shape | part | size MB | measured ms | predicted ms |", "|---|---|---|---|---|"]
        for row in sorted(model["shapes"], key=lambda r: (r["part"], r["shape"])):
            predicted = "" if row["predicted_ms"] is None else f"{row['predicted_ms']:.1f}"
            lines.append(f"| {row['shape']} | {row['part']} | {row['size_mb']:.1f} | {row['measured_ms']:.1f} | "
                         f"{predicted} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=("minilm", "mpnet"), default=["minilm", "mpnet"])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--max-shapes", type=int, default=None,
                        help="measure only this many shapes of the grid (a seeded sample), for a smoke run")
    parser.add_argument("--held-out", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "distilkit" / "latency.json")
    parser.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)
    settings = MachineSettings(args.batch_size, args.seq_len, args.threads)
    cache = MeasurementCache(args.cache)

    results = {
        "command": harness.portable_command("latency_model.py", argv),
        "machine": harness.machine_info(),
        "settings": settings.to_dict(),
        "rounds": args.rounds,
        "models": [measure_model(name, args, settings, cache) for name in args.models],
    }
    harness.write_results(args.results_dir, {"latency_model.json": json.dumps(results, indent=2) + "\n",
                                             "latency_model.md": markdown(results)})
    print(markdown(results))


if __name__ == "__main__":
    main()
