"""Where the time of an int8 bert-base goes: distilkit int8 beside torch fp32, torch.ao int8 and ONNX Runtime.

    python benchmarks/int8_profile.py --rounds 10 --out benchmarks/results/int8_engines.json   (+ .md beside it)

A random bert-base-sized BertForSequenceClassification (2 labels), batch 8, sequence 128, random tokens, 2 threads
(torch.set_num_threads / ORT intra_op_num_threads). End-to-end latency: every engine runs once per round, engines
alternating (harness.interleaved_times), after warm-up; the median over rounds is reported with the min, and the
process CPU time (all threads, spin-waiting included) as a second view that a busy machine inflates less than wall
time. Per-op times come from torch.profiler (torch fp32 and distilkit int8) and ONNX Runtime's own profiler (ORT
int8, per node type). ONNX Runtime runs the float graph distilkit.export.to_onnx writes, and its own quantize_dynamic
of it. Machine (CPU model, VNNI/AMX flags), versions and the load average before and after are recorded with the
figures: on a shared machine, figures taken under load are indicative only.

The grid of sizes, batches and thread counts, with ONNX Runtime's graph optimizer and distilkit's int8 export, is
benchmarks/cpu_engines.py's job; this script profiles one configuration.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import harness
import torch
import transformers

from distilkit.quantization import quantize_int8
from distilkit.quantization.model import group_shared_inputs

BATCH, SEQ = 8, 128
THREADS = 2  # --threads changes it


ENGINES = {
    "torch fp32": "the float model",
    "distilkit int8": "distilkit.quantization.quantize_int8, as it runs by default",
    "distilkit int8:fbgemm:separate": "distilkit int8 as it ran before oneDNN and fused q/k/v",
    "distilkit int8:fp32-attn": "distilkit int8 with its attention products in float32, as before bfloat16 attention",
    "distilkit int8:fp32-qkv": "distilkit int8 with bfloat16 attention products whose q/k/v product writes float32, "
                               "converted to bfloat16 after it (as before the product wrote bfloat16)",
    "torch.ao int8": "torch.ao.quantization.quantize_dynamic (fbgemm)",
    "ort fp32": "ONNX Runtime, the float model exported by distilkit.export.to_onnx",
    "ort int8": "ONNX Runtime after onnxruntime.quantization.quantize_dynamic (QInt8 weights)",
}


# ----------------------------------------------------------------------------------------------------- profiles


def torch_profile(run, steps: int, top: int) -> list[dict]:
    """Self CPU time per op per forward, largest first (ms), from torch.profiler."""
    from torch.profiler import ProfilerActivity, profile

    run()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            run()
    rows = []
    total = sum(e.self_cpu_time_total for e in prof.key_averages())
    for e in sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:top]:
        rows.append({"op": e.key, "calls": e.count // steps, "ms": e.self_cpu_time_total / 1000 / steps,
                     "share": e.self_cpu_time_total / total})
    return rows


def ort_profile(path: Path, inputs, steps: int, top: int, folder: Path) -> list[dict]:
    """Time per ONNX node type per run (ms), largest first, from ONNX Runtime's profiler."""
    session = harness.ort_session(path, THREADS, profile_prefix=str(folder / "ort_profile"))
    run = harness.ort_runner(session, inputs)
    run()
    for _ in range(steps):
        run()
    events = json.loads(Path(session.end_profiling()).read_text())
    per_type: dict[str, list[float]] = defaultdict(lambda: [0.0, 0])
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            per_type[op][0] += event["dur"] / 1000
            per_type[op][1] += 1
    runs = steps + 1
    total = sum(ms for ms, _ in per_type.values())
    rows = [{"op": op, "calls": n // runs, "ms": ms / runs, "share": ms / total} for op, (ms, n) in per_type.items()]
    return sorted(rows, key=lambda r: -r["ms"])[:top]


# ---------------------------------------------------------------------------------------------------- the run


def main() -> None:
    global THREADS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10, help="timed rounds; each runs every engine once")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument("--profile-steps", type=int, default=3, help="forwards per profile (0: no profiles)")
    parser.add_argument("--top", type=int, default=15, help="ops listed per profile")
    parser.add_argument("--engines", default=",".join(ENGINES), help="comma-separated engines: " + "; ".join(
        f"'{name}': {what}" for name, what in ENGINES.items()) + ". 'distilkit int8:<kernel>' forces an int8 kernel "
        "(onednn, fbgemm, reference); ':separate' runs q/k/v as three products; ':fp32-attn' keeps the attention "
        "products in float32; ':fp32-qkv' has the q/k/v product write float32")
    parser.add_argument("--threads", type=int, default=THREADS, help="intra-op threads (torch and ORT)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "int8_engines.json")
    args = parser.parse_args()
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    THREADS = args.threads

    torch.set_num_threads(THREADS)
    transformers.logging.set_verbosity_error()
    result = {"command": harness.portable_command("int8_profile.py", sys.argv[1:]),
              "setup": {"model": "random bert-base BertForSequenceClassification, 2 labels", "batch": BATCH,
                        "seq": SEQ, "threads": THREADS, "rounds": args.rounds, "warmup": args.warmup},
              "machine": harness.engines_machine_info(), "load_before": harness.load_average()}

    fp32 = harness.random_bert()
    inputs = harness.token_inputs(fp32.config.vocab_size, BATCH, SEQ)
    runners, build_s, paths = {}, {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in wanted:
            start = time.perf_counter()
            if name == "torch fp32":
                runners[name] = harness.torch_runner(fp32, inputs)
            elif name.startswith("distilkit int8"):  # "distilkit int8[:<kernel>][:separate][:fp32-attn][:fp32-qkv]"
                _, *options = name.split(":")
                kernel = next((o for o in options if o not in ("separate", "fp32-attn", "fp32-qkv")), "auto")
                attention = "float32" if "fp32-attn" in options else "auto"
                int8 = quantize_int8(copy.deepcopy(fp32), kernel=kernel, attention=attention)
                group_shared_inputs(int8, enabled="separate" not in options)
                if "fp32-qkv" in options:
                    for module in int8.modules():
                        if getattr(module, "_shared_input_group", None) is not None:
                            module._shared_input_group.write_as(None)
                runners[name] = harness.torch_runner(int8, inputs)
            elif name == "torch.ao int8":
                runners[name] = harness.torch_runner(harness.torch_ao_int8(fp32), inputs)
            elif name in ("ort fp32", "ort int8"):
                if not paths:
                    paths["ort fp32"] = harness.onnx_graph(fp32, tmp / "fp32")
                    paths["ort int8"] = harness.ort_int8_graph(paths["ort fp32"], tmp / "int8.onnx")
                    build_s["onnx"] = round(time.perf_counter() - start, 1)
                    start = time.perf_counter()
                runners[name] = harness.ort_runner(harness.ort_session(paths[name], THREADS), inputs)
            else:
                raise SystemExit(f"unknown engine {name!r}; known: {', '.join(ENGINES)}")
            runners[name]()  # first call: builds packed weights and the like
            build_s[name] = round(time.perf_counter() - start, 1)
        result["build_s"] = build_s

        reference = runners["torch fp32"]() if "torch fp32" in runners else None
        if reference is not None:
            result["max_logit_diff_vs_fp32"] = {n: float((r() - reference).abs().max()) for n, r in runners.items()}

        times = harness.interleaved_times(runners, args.rounds, args.warmup)
        result["load_after_latency"] = harness.load_average()
        base = statistics.median(times["torch fp32"]["wall_ms"]) if "torch fp32" in times else None
        result["latency_ms"] = {
            name: {"median": statistics.median(t["wall_ms"]), "min": min(t["wall_ms"]),
                   "all": [round(v, 1) for v in t["wall_ms"]],
                   "speedup_vs_fp32": base / statistics.median(t["wall_ms"]) if base else None,
                   "cpu_median": statistics.median(t["cpu_ms"])}
            for name, t in times.items()
        }
        if "ort int8" in times and "distilkit int8" in times:
            result["distilkit_int8_vs_ort_int8_speed"] = (
                statistics.median(times["ort int8"]["wall_ms"]) / statistics.median(times["distilkit int8"]["wall_ms"]))

        if args.profile_steps:
            result["profiles"] = {}
            for name in runners:
                if name == "torch fp32" or name.startswith("distilkit"):
                    result["profiles"][name] = torch_profile(runners[name], args.profile_steps, args.top)
            if "ort int8" in runners:
                result["profiles"]["ort int8 (by node type)"] = ort_profile(
                    paths["ort int8"], inputs, args.profile_steps, args.top, tmp)
    result["load_after"] = harness.load_average()

    harness.write_results(args.out.parent, {args.out.name: json.dumps(result, indent=1) + "\n",
                                            args.out.with_suffix(".md").name: markdown(result, args)})
    print(args.out.with_suffix(".md").read_text())


def markdown(result: dict, args) -> str:
    m = result["machine"]
    flags = ", ".join(f for f, on in m["flags"].items() if on)
    lines = [
        "# int8 engines on bert-base (random weights)", "",
        f"Command: `{result['command']}`", "",
        f"Machine: {m.get('cpu_model', '?')}, {m['cpu_count']} CPUs ({flags}); torch {m['torch']}, onnxruntime "
        f"{m['onnxruntime']}, transformers {m['transformers']}; git {m['git']}.",
        f"Setup: batch {BATCH}, sequence {SEQ}, {THREADS} threads, random tokens; {args.rounds} rounds after "
        f"{args.warmup} warm-up rounds, engines alternating within each round.",
        f"Load average (1 min): {result['load_before']} before, {result['load_after']} after "
        "(figures taken under load are indicative only).", "",
        "| engine | median ms | min ms | speed-up vs torch fp32 (median) | CPU ms (median) | max logit diff vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    diffs = result.get("max_logit_diff_vs_fp32", {})
    for name, t in result["latency_ms"].items():
        speed = f"{t['speedup_vs_fp32']:.2f}x" if t["speedup_vs_fp32"] else "-"
        diff = f"{diffs[name]:.4f}" if name in diffs else "-"
        lines.append(f"| {name} | {t['median']:.1f} | {t['min']:.1f} | {speed} | {t['cpu_median']:.0f} | {diff} |")
    lines += ["", "Engines: " + "; ".join(f"`{name}`: {ENGINES[name]}" for name in result["latency_ms"] if name in ENGINES)
              + "."]
    latency = result["latency_ms"]
    if "distilkit int8" in latency and "torch fp32" in latency:
        goals = [("distilkit int8 speed-up vs torch fp32", latency["distilkit int8"]["speedup_vs_fp32"], 3.5)]
        if "distilkit_int8_vs_ort_int8_speed" in result:
            goals.append(("distilkit int8 speed relative to ORT int8", result["distilkit_int8_vs_ort_int8_speed"], 0.9))
        lines += ["", "| goal (medians) | measured | target | met |", "|---|---|---|---|"]
        lines += [f"| {what} | {value:.2f}x | >= {target}x | {'yes' if value >= target else 'no'} |"
                  for what, value, target in goals]
    for name, rows in result.get("profiles", {}).items():
        lines += ["", f"## Profile: {name} (ms per forward)", "", "| op | calls | ms | share |", "|---|---|---|---|"]
        lines += [f"| `{r['op']}` | {r['calls']} | {r['ms']:.2f} | {r['share']:.1%} |" for r in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
