"""The benchmark's Markdown table, goal check and plot, written from its results dict (see scripts/benchmark.py)."""

from __future__ import annotations

import os
from pathlib import Path

# The goals the benchmark reports against (issue 8), with the rows they compare.
GOAL_KEEP = 0.99           # distilled 6-layer student keeps >= 99% of the teacher's accuracy
GOAL_GAIN_POINTS = 1.0     # ... and beats the same student trained without a teacher by >= 1 point
GOAL_SMALLER = 4.0         # stacked: >= 4x smaller on disk than the teacher
GOAL_FASTER_B8 = 3.0       # stacked: >= 3x faster at batch 8
GOAL_MAX_DROP_POINTS = 1.5  # stacked: at most 1.5 points below the teacher
GOAL_CACHED_STEP = 1.1     # cached distillation step <= 1.1x a plain step


def _fmt(value, pattern: str) -> str:
    return "n/a" if value is None else format(value, pattern)


def table(results: dict, rows) -> str:
    measured = results.get("rows", {})
    latency = results.get("latency", {})
    teacher = measured.get("teacher", {})
    teacher_latency = latency.get("teacher", {})
    with_f1 = results.get("task") == "mrpc"
    head = ["model", "accuracy"] + (["F1"] if with_f1 else []) + [
        "parameters", "size (MB)", "smaller", "latency b1 (ms)", "latency b8 (ms)", "faster b8"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        r = measured.get(row.name)
        if r is None:
            continue
        lat = latency.get(row.name, {})
        smaller = teacher.get("size_mb") / r["size_mb"] if teacher.get("size_mb") else None
        faster = (teacher_latency["batch8_ms"] / lat["batch8_ms"]
                  if lat.get("batch8_ms") and teacher_latency.get("batch8_ms") else None)
        cells = [row.label, _fmt(r.get("accuracy"), ".4f")] + ([_fmt(r.get("f1"), ".4f")] if with_f1 else []) + [
            f"{r['parameters'] / 1e6:.1f}M", f"{r['size_mb']:.1f}", _fmt(smaller, ".2f") + "x",
            _fmt(lat.get("batch1_ms"), ".1f"), _fmt(lat.get("batch8_ms"), ".1f"), _fmt(faster, ".2f") + "x"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def step_table(results: dict) -> str:
    """Seconds per training step of the 6-layer student, plain and distilled, from the timing pass."""
    timing = results.get("step_timing")
    if not timing:
        return "(step timing not measured yet)"
    lines = ["| 6-layer MPNet student, training step | seconds / step | ratio to plain |", "|---|---|---|"]
    for label, name in (("plain fine-tuning (no teacher)", "plain"),
                        ("distilled on logits, cached teacher outputs", "distilled_cached"),
                        ("distilled on logits, live teacher forward", "distilled_uncached")):
        entry = timing.get(name, {})
        ratio = entry.get("ratio_to_plain", 1.0 if name == "plain" else None)
        lines.append(f"| {label} | {_fmt(entry.get('seconds_per_step'), '.3f')} | {_fmt(ratio, '.2f')}x |")
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "missed"


def goals(results: dict) -> list[str]:
    """One line per goal: the measured figure, the target, met or missed (or not measured yet)."""
    rows, latency = results.get("rows", {}), results.get("latency", {})
    out = []
    teacher, plain = rows.get("teacher"), rows.get("mpnet6_plain")
    for name in ("mpnet6_logits", "mpnet6_hidden_attn"):
        student = rows.get(name)
        if teacher and plain and student:
            keep = student["accuracy"] / teacher["accuracy"]
            gain = 100 * (student["accuracy"] - plain["accuracy"])
            out.append(f"- {name}: keeps {100 * keep:.1f}% of the teacher's accuracy (goal >= {100 * GOAL_KEEP:.0f}%: "
                       f"{_verdict(keep >= GOAL_KEEP)}); {gain:+.2f} points over the same student without a teacher "
                       f"(goal >= +{GOAL_GAIN_POINTS:g}: {_verdict(gain >= GOAL_GAIN_POINTS)}).")
    stacked = rows.get("mpnet6_stacked")
    if teacher and stacked:
        smaller = teacher["size_mb"] / stacked["size_mb"]
        drop = 100 * (teacher["accuracy"] - stacked["accuracy"])
        lat_t, lat_s = latency.get("teacher", {}).get("batch8_ms"), latency.get("mpnet6_stacked", {}).get("batch8_ms")
        faster = lat_t / lat_s if lat_t and lat_s else None
        out.append(f"- stacked: {smaller:.2f}x smaller (goal >= {GOAL_SMALLER:g}x: "
                   f"{_verdict(smaller >= GOAL_SMALLER)}); "
                   f"{_fmt(faster, '.2f')}x faster at batch 8 (goal >= {GOAL_FASTER_B8:g}x: "
                   f"{_verdict(faster is not None and faster >= GOAL_FASTER_B8)}); {drop:.2f} points below the teacher "
                   f"(goal <= {GOAL_MAX_DROP_POINTS:g}: {_verdict(drop <= GOAL_MAX_DROP_POINTS)}).")
    timing = results.get("step_timing")
    if timing:
        cached, live = timing["distilled_cached"]["ratio_to_plain"], timing["distilled_uncached"]["ratio_to_plain"]
        out.append(f"- step time: distilled with the cache {cached:.3f}x a plain step (goal <= {GOAL_CACHED_STEP:g}x: "
                   f"{_verdict(cached <= GOAL_CACHED_STEP)}); with a live teacher {live:.2f}x "
                   f"(plain {timing['plain']['seconds_per_step']:.2f} s/step).")
    return out


def markdown(results: dict, rows, command: str) -> str:
    machine = results.get("machine", {})
    settings = results.get("settings", {})
    lat = results.get("latency_setup", {})
    lines = [
        f"# distilkit benchmark: {results.get('task', '?').upper()}",
        "",
        f"Data: {results.get('data', '?')}; {results.get('train_rows', '?')} training rows, "
        f"{results.get('eval_rows', '?')} evaluation rows.",
        f"Machine: {machine.get('cpu_model', '?')}, {machine.get('cpu_count', '?')} cores, "
        f"torch {machine.get('torch', '?')}, transformers {machine.get('transformers', '?')}"
        + (f", GPU {machine['gpu']}" if machine.get("gpu") else "") + ".",
        f"Latency: median of {lat.get('rounds', '?')} forward passes on random tokens, sequence length "
        f"{lat.get('seq_len', '?')}, {lat.get('threads', '?')} threads; the rows are timed in turn, round after "
        "round, so load changes hit all alike. 'smaller' and 'faster' are ratios to the teacher in this run.",
        "Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".",
        f"Command: `{command}`",
        "",
        table(results, rows),
        "",
        "Training step (same batches, first 2 steps not counted):",
        "",
        step_table(results),
        "",
        "Goals:",
        *(goals(results) or ["- (not measured yet)"]),
        "",
    ]
    return "\n".join(lines)


def plot(results: dict, rows, path: Path) -> bool:
    """Accuracy against batch-8 latency and against size; returns False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    measured, latency = results.get("rows", {}), results.get("latency", {})
    points = [(row, measured[row.name], latency.get(row.name, {})) for row in rows if row.name in measured]
    if not points:
        return False
    figure, axes = plt.subplots(1, 2, figsize=(12, 5))
    for axis, xlabel, getter in (
        (axes[0], "CPU latency, batch 8 (ms)", lambda r, lat: lat.get("batch8_ms")),
        (axes[1], "size on disk (MB)", lambda r, lat: r["size_mb"]),
    ):
        for row, r, lat in points:
            x = getter(r, lat)
            if x is None:
                continue
            marker = "*" if row.name == "teacher" else ("s" if row.family == "minilm" else "o")
            axis.scatter(x, 100 * r["accuracy"], marker=marker, s=90 if marker == "*" else 45)
            axis.annotate(row.name, (x, 100 * r["accuracy"]), textcoords="offset points", xytext=(5, 4), fontsize=8)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
    figure.suptitle(f"distilkit benchmark, {results.get('task', '').upper()}: accuracy vs latency and size")
    figure.tight_layout()
    tmp = path.with_name(path.stem + ".tmp.png")
    figure.savefig(tmp, dpi=110)
    plt.close(figure)
    os.replace(tmp, path)
    return True


def write_reports(results: dict, md_path: Path, png_path: Path, rows, command: str) -> None:
    md_path.write_text(markdown(results, rows, command))
    plot(results, rows, png_path)
