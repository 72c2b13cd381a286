"""Does skipping transformers' weight init change a random twin's latency? (distilkit.compress.twin)

`random_twin` fills a twin's weights from one pool of N(0, 0.02²) values instead of running transformers' init
(0.2 s instead of ~2 s per MPNet-base twin). Latency should depend on the shape alone; this times, for a few
shapes of the teacher's config, a twin built the old way (transformers' init) and one built the new way,
interleaved in the same rounds, and reports new/old (1.0: no change).

    python benchmarks/twin_init_check.py --teacher <folder of a fine-tuned model> [--rounds 31]

Writes <results-dir>/twin_init_check.json and .md with the machine, the load before and after, and the command.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

import harness
import torch

SHAPES = ["L8-h4-f1536-int8", "L12-h3-f384", "L4-h12-f768-int8+emb"]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python benchmarks/twin_init_check.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", required=True, help="A model folder whose config the twins take.")
    p.add_argument("--shapes", nargs="+", default=SHAPES, help="e.g. L8-h4-f1536-int8 (default: %(default)s).")
    p.add_argument("--rounds", type=int, default=31)
    p.add_argument("--results-dir", default=str(harness.RESULTS_DIR))
    a = p.parse_args(argv)
    from transformers import AutoConfig

    import distilkit.compress.twin as twin
    from distilkit.measure import interleaved_timing

    config = AutoConfig.from_pretrained(a.teacher)
    load_before = Path("/proc/loadavg").read_text().strip()
    rows = []
    for text in a.shapes:
        shape = harness.parse_shape(text, config, precision=True)
        new = twin.random_twin(config, shape)
        with _transformers_init(twin):
            old = twin.random_twin(config, shape)
        timing = interleaved_timing({"old": old, "new": new}, 8, 128, 2, rounds=a.rounds)
        o, n = timing.latency["old"].estimate, timing.latency["new"].estimate
        rows.append({"shape": text, "old_ms": round(o, 2), "new_ms": round(n, 2), "new_over_old": round(n / o, 4),
                     "busy": timing.busy})
        print(rows[-1], flush=True)
        del new, old
    results = {"rows": rows, "rounds": a.rounds, "batch_size": 8, "seq_len": 128, "threads": 2,
               "load_before": load_before, "load_after": Path("/proc/loadavg").read_text().strip(),
               "command": harness.portable_command("twin_init_check.py", argv), "machine": harness.machine_info()}
    lines = ["# Random twins: transformers' weight init vs the pool fill (latency)", "",
             f"Interleaved timing, {a.rounds} rounds, batch 8 x 128 tokens, 2 threads; estimate: 20th percentile. "
             f"/proc/loadavg before: {load_before}; after: {results['load_after']}.", "",
             "| shape | transformers init (ms) | pool fill (ms) | new/old | busy |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['shape']} | {r['old_ms']:.1f} | {r['new_ms']:.1f} | {r['new_over_old']:.3f} | {r['busy']} |"
              for r in rows]
    lines += ["", f"Command: `{results['command']}`", "", f"Machine: `{json.dumps(results['machine'])}`"]
    harness.write_results(a.results_dir, {"twin_init_check.json": json.dumps(results, indent=1) + "\n",
                                          "twin_init_check.md": "\n".join(lines) + "\n"})


@contextlib.contextmanager
def _transformers_init(twin_module):
    """Within the block, twins are built the old way: transformers' init, no pool fill."""
    saved = twin_module._fill_like_init, twin_module._no_init_weights
    twin_module._fill_like_init, twin_module._no_init_weights = (lambda model: None), contextlib.nullcontext
    try:
        yield
    finally:
        twin_module._fill_like_init, twin_module._no_init_weights = saved


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
