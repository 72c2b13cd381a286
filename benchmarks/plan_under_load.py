"""Does `distilkit compress` choose the same plan on a busy machine? A plan made on quiet cores, then the same plan
made again while busy-loop processes share the cores, each with a fresh latency cache.

    python benchmarks/plan_under_load.py                                   # MiniLM-L6 twins, batch 8 x 128, 2 threads
    python benchmarks/plan_under_load.py --busy-loops 2 --target-speedup 4 --batch-size 4 --seq-len 64
    python benchmarks/plan_under_load.py --batch-size 1 --seq-len 8 --rounds 3 --layer-fractions 1 0.5 \
        --head-fractions 1 --ffn-fractions 1 --results-dir /tmp/pul       # smoke run (timings meaningless)

The candidates are random-weight twins of a MiniLM-L6-sized BERT (6 layers x 12 heads, hidden 384, FFN 1536; the
config alone, no weights to download), on the `--layer-fractions` x `--head-fractions` x `--ffn-fractions` grid, float
and int8. The plan is `distilkit.compress.make_plan`, as `compress` makes it: twins timed interleaved with a small
reference twin (the anchor; the teacher's twin once, beside it), latencies the 20th percentile of the rounds, twins of
busy groups whose figure could change the plan timed again after a pause. The busy loops
(`python -c "while True: pass"`) inherit this process's CPU affinity, so they compete for the cores the twins run on
(pin both with `taskset -c 0,1 python benchmarks/plan_under_load.py` on a larger machine).

Writes <results-dir>/plan_under_load.json and .md: both plans' choice, whether each says it was made on a busy
machine, every candidate's planned speedup in both, and the machine with the load it saw. The first plan is only as
quiet as the machine: the report says what it saw.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

BUSY_LOOP = "while True: pass"


def minilm_config():
    """The shape of all-MiniLM-L6-v2 with a 2-label head (the twins have random weights: no download)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512, num_labels=2)


def make_plan_in(folder: Path, args):
    from distilkit.compress import CompressArguments, MachineSettings, make_plan

    compress_args = CompressArguments(
        target_speedup=args.target_speedup, candidate_layer_fractions=args.layer_fractions,
        candidate_head_fractions=args.head_fractions, candidate_ffn_fractions=args.ffn_fractions,
        latency_cache=str(folder / "latency.json"), latency_rounds=args.rounds)
    machine = MachineSettings(args.batch_size, args.seq_len, args.threads)
    start = time.perf_counter()
    try:
        plan = make_plan(minilm_config(), compress_args, machine, progress=True)
    except ValueError as err:  # no candidate meets the target, as measured: a result too
        plan = str(err)
    return plan, round(time.perf_counter() - start, 1)


def busy_loops(count: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(count)]


def stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        process.terminate()
    for process in processes:
        process.wait(timeout=30)


def summary(plan, seconds: float, loadavg: tuple[float, float]) -> dict:
    if isinstance(plan, str):
        return {"chosen": None, "error": plan, "busy": None, "seconds": seconds,
                "loadavg_before_after": list(loadavg), "teacher_ms": None, "speedups": {}}
    teacher_ms = plan.teacher_candidate.latency_ms
    return {"chosen": plan.chosen, "busy": plan.busy, "seconds": seconds, "loadavg_before_after": list(loadavg),
            "teacher_ms": teacher_ms,
            "speedups": {c.shape.key(): round(teacher_ms / plan.cost(c), 3) for c in plan.candidates}}


def markdown(results: dict) -> str:
    quiet, loaded = results["quiet"], results["loaded"]
    m = results["machine"]
    same = quiet["chosen"] == loaded["chosen"]
    ratios = [loaded["speedups"][key] / quiet["speedups"][key] for key in quiet["speedups"]
              if key in loaded["speedups"]]
    lines = [
        f"# The same plan with and without {results['busy_loops']} busy loops: {'yes' if same else 'NO'}", "",
        f"Target speedup {results['target_speedup']}; MiniLM-L6-sized twins, batch {results['batch_size']} x "
        f"{results['seq_len']} tokens, {results['threads']} threads, {results['rounds']} rounds; "
        f"{len(quiet['speedups'])} candidates. Machine: {m.get('cpu_model')} ({m.get('cpu_count')} cores), torch "
        f"{m.get('torch')}. Command: `{results['command']}`", "",
        "| run | chosen | made on a busy machine | teacher twin (ms) | load average before, after | seconds |",
        "|---|---|---|---:|---|---:|"]
    for name, run in (("quiet cores", quiet), (f"{results['busy_loops']} busy loops", loaded)):
        teacher = "–" if run["teacher_ms"] is None else f"{run['teacher_ms']:.1f}"
        lines.append(f"| {name} | {run['chosen'] or run['error']} | {run['busy'] or 'no'} | {teacher} | "
                     f"{run['loadavg_before_after'][0]:.2f}, {run['loadavg_before_after'][1]:.2f} | "
                     f"{run['seconds']:.0f} |")
    if ratios:
        lines += ["", f"Planned speedups, loaded over quiet: min {min(ratios):.3f}, max {max(ratios):.3f} (1.0: the "
                  "same)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy-loops", type=int, default=2)
    parser.add_argument("--target-speedup", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--layer-fractions", type=float, nargs="+", default=[1.0, 2 / 3, 1 / 3])
    parser.add_argument("--head-fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--ffn-fractions", type=float, nargs="+", default=[1.0, 0.5, 0.25])
    parser.add_argument("--results-dir", type=Path, default=harness.RESULTS_DIR)
    argv = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(argv)

    # A kill (timeout, Ctrl-C) must not leave the busy loops running: SIGTERM unwinds like Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("plan_under_load: terminated"))
    with tempfile.TemporaryDirectory(prefix="plan-under-load-") as work:
        work = Path(work)
        before = harness.load_average()
        quiet, quiet_s = make_plan_in(work / "quiet", args)
        quiet_load = (before, harness.load_average())
        loops = busy_loops(args.busy_loops)
        try:
            time.sleep(2)  # let the loops take the cores
            before = harness.load_average()
            loaded, loaded_s = make_plan_in(work / "loaded", args)
            loaded_load = (before, harness.load_average())
        finally:
            stop(loops)
    results = {"command": harness.portable_command("plan_under_load.py", argv), "machine": harness.machine_info(),
               "busy_loops": args.busy_loops, "target_speedup": args.target_speedup, "batch_size": args.batch_size,
               "seq_len": args.seq_len, "threads": args.threads, "rounds": args.rounds,
               "quiet": summary(quiet, quiet_s, quiet_load), "loaded": summary(loaded, loaded_s, loaded_load)}
    results["same_plan"] = results["quiet"]["chosen"] == results["loaded"]["chosen"]
    harness.write_results(args.results_dir, {"plan_under_load.json": json.dumps(results, indent=1) + "\n",
                                             "plan_under_load.md": markdown(results)})
    print(markdown(results))


if __name__ == "__main__":
    main()
