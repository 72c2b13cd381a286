"""Generic measurements of a model: parameters, size on disk, CPU latency, and the machine they were taken on.

Used by the comparison tables (distilkit.pipeline.report), the model cards (distilkit.hub), compress's plans and
verdicts, and the benchmark scripts. Latencies that are compared (a speed-up) come from `interleaved_timing`: many
short rounds with the models alternating, a low-quantile estimate that load cannot fake, and a report of the load
other processes put on the cores during the measurement, which says when it cannot be trusted (`Timing.busy`).

Every figure distilkit reports is written next to the machine it was measured on, because int8 and latency
results depend on the CPU's instruction set (AVX2 vs AVX-512 VNNI).
"""

from __future__ import annotations

import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch


def machine_info() -> dict:
    """CPU model, instruction-set extensions that matter for int8, core count and library versions."""
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
    flags = lscpu.split()
    info["avx512_vnni"] = "avx512_vnni" in flags
    info["avx_vnni"] = "avx_vnni" in flags
    info["avx2"] = "avx2" in flags
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_fingerprint() -> dict:
    """What identifies the machine for latency: CPU model (the architecture and processor name where lscpu gives
    none), the instruction sets int8 kernels use, and the cores this process may run on."""
    info = machine_info()
    fingerprint = {name: info.get(name) for name in ("cpu_model", "avx512_vnni", "avx_vnni", "avx2")}
    if not fingerprint["cpu_model"]:
        fingerprint["cpu_model"] = f"{platform.machine()} {platform.processor()}".strip() or None
    fingerprint["cpu_count"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return fingerprint


def software_versions(engine: str = "torch") -> dict:
    """torch (kernels, threading), transformers (the modelling code), distilkit (twins, int8 layers) and the int8
    kernel selected for the CPU (`quantization.kernels.select_kernel`; DISTILKIT_INT8_KERNEL can change it); with
    engine "onnxruntime" (`distilkit.engines`) also the versions of onnx (the export) and onnxruntime."""
    from importlib.metadata import version

    import transformers

    from . import __version__
    from .quantization.kernels import select_kernel

    versions = {"torch": torch.__version__, "transformers": transformers.__version__, "distilkit": __version__,
                "int8_kernel": select_kernel("cpu").name}
    if engine != "torch":
        versions.update(engine=engine, onnx=version("onnx"), onnxruntime=version("onnxruntime"))
    return versions


def latency_setup(batch_size: int, seq_len: int, threads: int, machine: dict) -> str:
    """How latency was measured, for tables and cards: batch, tokens, threads, CPU (int8 instruction set), torch."""
    cpu = machine.get("cpu_model", "unknown CPU")
    isa = "AVX-512 VNNI" if machine.get("avx512_vnni") else ("AVX-VNNI" if machine.get("avx_vnni") else
                                                            ("AVX2" if machine.get("avx2") else "no AVX2"))
    return (f"batch {batch_size} × {seq_len} tokens, {threads} thread{'s' if threads != 1 else ''}, {cpu} ({isa}), "
            f"torch {machine.get('torch')}")


# Files a Trainer's save leaves beside the weights: not part of the model's size.
NOT_WEIGHTS = ("training_args.bin",)


def folder_size_mb(folder: str | os.PathLike) -> float:
    """Size of the weight files of a saved model, in MB (10^6 bytes); the tokenizer and a Trainer's
    training_args.bin are not counted."""
    total = sum(p.stat().st_size for p in Path(folder).rglob("*")
                if p.suffix in (".safetensors", ".bin") and p.name not in NOT_WEIGHTS)
    return total / 1e6


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters, counting an int8 layer like its float original: its int8 weight and float bias (kept as
    buffers) count, its quantization scales do not. An int8 model has as many parameters as its float twin."""
    seen = {id(p): p.numel() for p in model.parameters()}
    for name, buffer in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if buffer.dtype == torch.int8 or (leaf == "bias" and buffer is not None):
            seen[id(buffer)] = buffer.numel()
    return sum(seen.values())


def random_inputs(model: torch.nn.Module, batch_size: int, seq_len: int, vocab_size: int | None = None) -> dict:
    """Random token ids (fixed seed) and a full attention mask, the inputs every latency here is measured on."""
    vocab = vocab_size or model.config.vocab_size
    generator = torch.Generator().manual_seed(0)
    return {"input_ids": torch.randint(5, vocab, (batch_size, seq_len), generator=generator),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long)}


@torch.inference_mode()
def cpu_latency_ms(model: torch.nn.Module, batch_size: int, seq_len: int, threads: int = 2, repeats: int = 10,
                   warmup: int = 3, vocab_size: int | None = None) -> float:
    """Median wall-clock milliseconds of one forward pass on random tokens, with `threads` intra-op threads.
    One model alone: to compare models, or to judge a speed-up, use `interleaved_timing`."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        inputs = random_inputs(model, batch_size, seq_len, vocab_size)
        model.eval()
        for _ in range(warmup):
            model(**inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


# ------------------------------------------------------------------------------------------- timing under load
#
# Load inflates a large model's forward pass more than a small one's (more memory traffic, more synchronisation
# points between threads, more time slices lost), so a speed-up measured while other processes run comes out too
# high: 8x results measured 10.1-10.6x beside a training process and 7.0-7.5x on quiet cores. Load only ever adds
# time to a CPU-bound pass, so the quiet cost is the low end of many rounds; and when the low end is hit too (load
# that never pauses), no estimator can recover it: the measurement then says so (`Timing.busy`).

ESTIMATOR = "p20"  # a model's latency estimate (`LatencyStats.estimate`): the 20th percentile of its rounds
MAX_OTHER_CORES = 0.25  # busy: other processes used more than this many cores on average, on our cores
MAX_REFERENCE_SPREAD = 0.10  # busy: the reference model's rounds spread more than this (p25..p75 / median)
MIN_LOAD_WINDOW_S = 0.5  # /proc/stat counts in ticks (10 ms); shorter windows are too coarse to judge load


def quantile(values: Sequence[float], q: float) -> float:
    """The `q` quantile of `values`, interpolated linearly between the sorted values (numpy's default)."""
    if not values:
        raise ValueError("quantile of no values.")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be in [0, 1]; got {q}.")
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


@dataclass(frozen=True)
class LatencyStats:
    """One model's milliseconds per forward pass over the rounds of an interleaved measurement.

    `estimate` (the 20th percentile, `p20`) is what verdicts and plans use. Load only adds time, so the quiet cost
    is the low end of the rounds; the minimum is that end's single most extreme round (a round the CPU's boost
    or caches favoured), which moves more from run to run on short runs, while the 20th percentile, interpolated
    between the two or three fastest of 10 rounds, is steadier and still ignores load that hits up to 80% of the
    rounds. The median follows the load as soon as it hits half the rounds. `spread`: p25..p75 over the median,
    how much the rounds disagree (on quiet cores a few percent)."""

    median: float
    min: float
    p20: float
    p25: float
    p75: float
    rounds: int
    times: tuple[float, ...] = field(default=(), compare=False, repr=False)  # the rounds, in order (for pooling)

    @classmethod
    def of(cls, times_ms: Sequence[float]) -> LatencyStats:
        return cls(median=statistics.median(times_ms), min=min(times_ms), p20=quantile(times_ms, 0.2),
                   p25=quantile(times_ms, 0.25), p75=quantile(times_ms, 0.75), rounds=len(times_ms),
                   times=tuple(times_ms))

    @property
    def estimate(self) -> float:
        return self.p20

    @property
    def spread(self) -> float:
        return (self.p75 - self.p25) / self.median if self.median > 0 else 0.0

    def to_dict(self) -> dict:
        return {"median": self.median, "min": self.min, "p20": self.p20, "p25": self.p25, "p75": self.p75,
                "spread": self.spread, "estimate": self.estimate, "rounds": self.rounds}


@dataclass(frozen=True)
class LoadSample:
    """One reading of the cores this process may run on: the CPU seconds every process spent on them (`busy_s`)
    and their capacity (`total_s`: busy and idle) since boot, from /proc/stat; this process's own CPU seconds
    (`own_s`, every thread); /proc/loadavg's 1, 5 and 15 minute averages. Two readings make a `LoadReport`."""

    busy_s: float
    total_s: float
    own_s: float
    loadavg: tuple[float, float, float] | None = None


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity; every CPU where the platform cannot say)."""
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def parse_proc_stat(text: str, cpus: Sequence[int], ticks_per_s: float) -> tuple[float, float]:
    """(busy, total) CPU seconds since boot of `cpus`, from /proc/stat's per-CPU lines ("cpuN user nice system idle
    iowait irq softirq steal guest guest_nice", in ticks). Busy: user, nice, system, irq, softirq and steal (time a
    hypervisor gave another machine: load too); idle and iowait are not; guest time is already in user and nice.
    Raises ValueError when a CPU has no line."""
    rows = {}
    for line in text.splitlines():
        name, *fields = line.split()
        if name.startswith("cpu") and name[3:].isdigit():
            rows[int(name[3:])] = [int(value) for value in fields]
    busy = total = 0
    for cpu in cpus:
        if cpu not in rows:
            raise ValueError(f"/proc/stat has no line for cpu{cpu}.")
        ticks = rows[cpu] + [0] * (8 - len(rows[cpu]))
        user, nice, system, idle, iowait, irq, softirq, steal = ticks[:8]
        busy += user + nice + system + irq + softirq + steal
        total += user + nice + system + idle + iowait + irq + softirq + steal
    return busy / ticks_per_s, total / ticks_per_s


def read_load(proc: str | os.PathLike = "/proc", cpus: Sequence[int] | None = None) -> LoadSample | None:
    """A `LoadSample` of the `cpus` this process may run on (default: `allowed_cpus`), or None where there is no
    readable /proc/stat (not Linux): the load is then unknown."""
    proc = Path(proc)
    try:
        stat = (proc / "stat").read_text()
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        busy, total = parse_proc_stat(stat, allowed_cpus() if cpus is None else cpus, ticks_per_s)
    except (OSError, ValueError, AttributeError):
        return None
    try:
        loadavg = tuple(float(value) for value in (proc / "loadavg").read_text().split()[:3])
    except (OSError, ValueError):
        loadavg = None
    return LoadSample(busy, total, time.process_time(), loadavg if loadavg and len(loadavg) == 3 else None)


@dataclass(frozen=True)
class LoadReport:
    """What other processes did on this process's cores while a measurement ran.

    `other_cores`: the CPU time other processes used on the `cpus` cores this process may run on, as cores busy on
    average over the `window_s` seconds of the measurement (0.0: quiet; 1.0: one core taken all along; None: unknown,
    off Linux). It is every process's busy time on those cores (/proc/stat) less this process's own CPU time.
    `loadavg_before` / `loadavg_after`: /proc/loadavg's 1/5/15-minute averages (they count this process too)."""

    cpus: int
    window_s: float | None = None
    other_cores: float | None = None
    loadavg_before: tuple[float, float, float] | None = None
    loadavg_after: tuple[float, float, float] | None = None

    @classmethod
    def between(cls, before: LoadSample | None, after: LoadSample | None, cpus: int) -> LoadReport:
        if before is None or after is None:
            return cls(cpus)
        window = (after.total_s - before.total_s) / cpus
        other = None
        if window > 0:
            other = max(0.0, (after.busy_s - before.busy_s) - (after.own_s - before.own_s)) / window
        return cls(cpus, window, other, before.loadavg, after.loadavg)

    def pooled(self, later: LoadReport) -> LoadReport:
        """This report and a `later` one over the same cores as one: other processes' cores averaged over both
        windows (unknown if either is), the load averages before this one and after the later one."""
        other = window = None
        if None not in (self.other_cores, later.other_cores, self.window_s, later.window_s):
            window = self.window_s + later.window_s
            other = ((self.other_cores * self.window_s + later.other_cores * later.window_s) / window
                     if window > 0 else max(self.other_cores, later.other_cores))
        return LoadReport(self.cpus, window, other, self.loadavg_before, later.loadavg_after)

    @property
    def known(self) -> bool:
        """Whether the other processes' share was measured over a window long enough to judge it."""
        return self.other_cores is not None and self.window_s is not None and self.window_s >= MIN_LOAD_WINDOW_S

    def describe(self) -> str:
        if self.other_cores is None:
            return "the load of other processes is unknown on this platform"
        text = (f"other processes used {self.other_cores:.2f} of the {self.cpus} core{'s' if self.cpus != 1 else ''}"
                f" this process may run on, on average over {self.window_s:.1f} s")
        if not self.known:
            text += " (too short a window to judge)"
        if self.loadavg_before and self.loadavg_after:
            text += f"; load average {self.loadavg_before[0]:.2f} before, {self.loadavg_after[0]:.2f} after"
        return text

    def to_dict(self) -> dict:
        return {"cpus": self.cpus, "window_s": self.window_s, "other_cores": self.other_cores,
                "loadavg_before": None if self.loadavg_before is None else list(self.loadavg_before),
                "loadavg_after": None if self.loadavg_after is None else list(self.loadavg_after)}


@dataclass(frozen=True)
class BusyBounds:
    """When a measurement is too disturbed to judge a target by: other processes used more than `max_other_cores`
    cores on average on this process's cores, or the reference model's rounds spread more than
    `max_reference_spread` (p25..p75 over the median). The first catches steady load, which can leave every
    round alike and only slower (a low spread); the second catches load the probe cannot see (off Linux, another
    container's cgroup) or that comes and goes. On quiet cores the spread of a model that takes tens of
    milliseconds or more is a few percent."""

    max_other_cores: float = MAX_OTHER_CORES
    max_reference_spread: float = MAX_REFERENCE_SPREAD


@dataclass(frozen=True)
class Timing:
    """An interleaved measurement (`interleaved_timing`): every model's `LatencyStats`, the machine's load while
    it ran, and whether that load makes it unreliable (`busy`, `reasons`).

    `reference`: the model whose own spread judges the machine (the teacher, where there is one; otherwise the
    slowest model, the one load hurts most). `parts`: the measurements a pooled one was made of (`pooled`), each
    judged busy or quiet on its own."""

    latency: dict[str, LatencyStats]
    load: LoadReport
    reference: str
    bounds: BusyBounds = BusyBounds()
    parts: tuple[Timing, ...] = ()

    def __getitem__(self, name: str) -> LatencyStats:
        return self.latency[name]

    @property
    def reasons(self) -> list[str]:
        """Why the machine was too busy for this measurement to judge by (empty when it was quiet). A pooled
        measurement is busy when any of its parts was, by that part's own load and spread: a busy part is not
        averaged away by a quiet one, and a quiet machine whose speed moved between the parts is not called busy."""
        if self.parts:
            return [f"measurement {number} of {len(self.parts)}: {reason}"
                    for number, part in enumerate(self.parts, 1) for reason in part.reasons]
        reasons = []
        load = self.load
        if load.known and load.other_cores > self.bounds.max_other_cores:
            reasons.append(f"other processes used {load.other_cores:.2f} of the {load.cpus} core"
                           f"{'s' if load.cpus != 1 else ''} this process may run on, on average over "
                           f"{load.window_s:.1f} s (bound {self.bounds.max_other_cores:g} core)")
        spread = self.latency[self.reference].spread
        if spread > self.bounds.max_reference_spread:
            reasons.append(f"{self.reference}: its rounds spread {spread:.0%} (p25..p75 over the median; bound "
                           f"{self.bounds.max_reference_spread:.0%})")
        return reasons

    @property
    def busy(self) -> bool:
        return bool(self.reasons)

    def pooled(self, later: Timing) -> Timing:
        """This measurement and a `later` one of the same models as one: every model's rounds of both together
        (its statistics over all of them), the load over both windows (`LoadReport.pooled`), busy when either was
        (`reasons`). A ValueError when the models differ or a measurement kept no rounds."""
        if set(self.latency) != set(later.latency):
            raise ValueError(f"Cannot pool measurements of different models: {sorted(self.latency)} and "
                             f"{sorted(later.latency)}.")
        for name in self.latency:
            for stats in (self.latency[name], later.latency[name]):
                if len(stats.times) != stats.rounds:
                    raise ValueError(f"Cannot pool {name}'s measurement: it kept {len(stats.times)} of its "
                                     f"{stats.rounds} rounds (LatencyStats.of keeps them).")
        latency = {name: LatencyStats.of(stats.times + later.latency[name].times)
                   for name, stats in self.latency.items()}
        parts = (self.parts or (self,)) + (later.parts or (later,))
        return Timing(latency, self.load.pooled(later.load), self.reference, self.bounds, parts)

    def speedup(self, name: str, over: str | None = None) -> float:
        """How many times faster `name` runs than `over` (default: the reference), by their estimates."""
        return self.latency[over or self.reference].estimate / self.latency[name].estimate

    def describe(self) -> str:
        """One sentence on the machine during the measurement: the load, the reference's spread, the verdict."""
        spread = self.latency[self.reference].spread
        pooled = f" over {len(self.parts)} measurements pooled" if self.parts else ""
        return (f"{self.load.describe()}; {self.reference}: its rounds spread {spread:.1%}{pooled}; "
                f"{'busy' if self.busy else 'quiet'}")

    def to_dict(self) -> dict:
        data = {"estimator": f"{ESTIMATOR} (20th percentile) of {self.latency[self.reference].rounds} interleaved "
                             "rounds", "reference": self.reference,
                "models": {name: stats.to_dict() for name, stats in self.latency.items()},
                "load": self.load.to_dict(), "busy": self.busy, "busy_reasons": self.reasons,
                "bounds": {"max_other_cores": self.bounds.max_other_cores,
                           "max_reference_spread": self.bounds.max_reference_spread}}
        if self.parts:
            data["parts"] = [part.to_dict() for part in self.parts]
        return data


@torch.inference_mode()
def interleaved_timing(models: dict[str, torch.nn.Module], batch_size: int, seq_len: int, threads: int = 2,
                       rounds: int = 10, warmup: int = 2, progress: bool = False, *, reference: str | None = None,
                       bounds: BusyBounds = BusyBounds(), clock: Callable[[], float] = time.perf_counter,
                       load_probe: Callable[[], LoadSample | None] = read_load) -> Timing:
    """CPU latency of several models measured in `rounds` short rounds, each running every model once in turn
    (the order rotating from round to round), so that load which comes and goes hits every model alike, with the
    machine's load read before and after. Every model is first run `warmup` times.

    Returns a `Timing`: per model its `LatencyStats` (median, min, p20, p25, p75, spread and the estimate verdicts
    and plans use: p20), the `LoadReport`, and `busy` when other processes used more than `bounds` allow of this
    process's cores or the `reference` model's (default: the slowest model's) rounds spread more than they allow.

    `clock` (seconds, default `time.perf_counter`) and `load_probe` (default `read_load`) are parameters so that
    tests can run on a fake clock and fake /proc readings. `progress`: a bar over the rounds."""
    from tqdm.auto import tqdm

    if not models:
        raise ValueError("No models to time.")
    if reference is not None and reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models timed ({', '.join(models)}).")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be a positive integer; got {rounds!r}.")
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        names = list(models)
        inputs = {name: random_inputs(model, batch_size, seq_len) for name, model in models.items()}
        for name, model in models.items():
            model.eval()
            for _ in range(warmup):
                model(**inputs[name])
        samples: dict[str, list[float]] = {name: [] for name in names}
        cpus = len(allowed_cpus())
        before = load_probe()
        for number in tqdm(range(rounds), desc=f"timing {len(models)} models", unit="round", disable=not progress):
            first = number % len(names)
            for name in names[first:] + names[:first]:
                start = clock()
                models[name](**inputs[name])
                samples[name].append(float((clock() - start) * 1000))
        after = load_probe()
    finally:
        torch.set_num_threads(previous)
    latency = {name: LatencyStats.of(times) for name, times in samples.items()}
    reference = reference or max(latency, key=lambda name: latency[name].estimate)
    return Timing(latency, LoadReport.between(before, after, cpus), reference, bounds)


def interleaved_latency_ms(models: dict[str, torch.nn.Module], batch_size: int, seq_len: int, threads: int = 2,
                           rounds: int = 10, warmup: int = 2, progress: bool = False) -> dict[str, dict[str, float]]:
    """`interleaved_timing`'s figures alone: {name: {"median", "min", "p20", "p25", "p75", "spread", "estimate",
    "rounds"}} (milliseconds; spread a share of the median). For tables that need no verdict; whatever judges a
    target (a speed-up met or not) should use `interleaved_timing`, which also says whether the machine was busy."""
    timing = interleaved_timing(models, batch_size, seq_len, threads, rounds=rounds, warmup=warmup,
                                progress=progress)
    return {name: stats.to_dict() for name, stats in timing.latency.items()}
