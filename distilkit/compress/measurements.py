"""Latency measurements of candidate shapes on random-weight twins, and their cache.

  * `measure_shapes`: the latency of each shape's twin (`twin.random_twin`, with the attention implementation a
    deployed model gets by default), in the settings' engine (`distilkit.engines`), measured interleaved
    (`distilkit.measure.interleaved_timing`), each group with a reference twin (the teacher's) when asked, measured
    again after a pause while the machine is busy, and cached; `busy_note` says whether any of them was still taken
    on a busy machine (for the plan);
  * `MeasurementCache`: a json file of measurements, keyed by everything a latency depends on (the machine and
    its software, `distilkit.measure.machine_fingerprint`; the model config; the settings), so that a measurement
    from another machine, another torch/transformers, another config or other settings is never reused.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from transformers import PretrainedConfig

from .. import measure
from ..architectures import get_architecture
from ..engines import on_engine
from ..pruning.structural import head_group_size
from ..serialization.atomic import publishing_file
from .shape import ModelShape
from .target import MachineSettings
from .twin import random_twin, twin_attention

logger = logging.getLogger("distilkit.compress")

# 2: each measurement stores its estimate (p20), spread and whether the machine was busy, and reference_ms is the
# reference's estimate (format 1 stored medians alone: its measurements are dropped when read, and measured again).
CACHE_FORMAT = 2
BUSY_TRIES = 3  # measurements of a group (or, while planning, of a doubtful twin) while the machine stays busy
BUSY_WAIT_S = 5.0  # the pause before measuring again


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True)
class Measurement:
    """The latency of one shape's twin over the rounds of its group's interleaved measurement
    (`distilkit.measure.interleaved_timing`): median and minimum milliseconds of one forward pass; `estimate_ms`,
    the 20th percentile (`measure.LatencyStats.estimate`: what load cannot fake; None in a measurement made by hand,
    which then counts its median); `spread` (p25..p75 over the median); `reference_ms`, the estimate of the
    reference twin (the teacher's) measured in the same group, when one was asked for; `busy`: why the machine was
    too busy to trust the group's measurement (None: quiet), after the retries asked of `measure_shapes`."""

    shape: ModelShape
    median_ms: float
    min_ms: float
    reference_ms: float | None = None
    estimate_ms: float | None = None
    spread: float | None = None
    busy: str | None = None

    @property
    def latency_ms(self) -> float:
        """The latency a plan counts: the estimate (the median of a measurement made by hand)."""
        return self.median_ms if self.estimate_ms is None else self.estimate_ms

    def to_dict(self) -> dict:
        return {"shape": self.shape.to_dict(), "median_ms": self.median_ms, "min_ms": self.min_ms,
                "estimate_ms": self.estimate_ms, "spread": self.spread, "reference_ms": self.reference_ms,
                "busy": self.busy}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        return cls(ModelShape.from_dict(data["shape"]), float(data["median_ms"]), float(data["min_ms"]),
                   _optional_float(data.get("reference_ms")), _optional_float(data.get("estimate_ms")),
                   _optional_float(data.get("spread")), data.get("busy"))


def cost_config(config: PretrainedConfig) -> dict:
    """The config fields that set a twin's cost besides its shape (which fixes layers, heads and FFN widths)."""
    spec = get_architecture(config)
    fields = {
        "model_type": config.model_type,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "num_heads": getattr(config, spec.heads_attr),
        "head_group_size": head_group_size(config),
        "head_dim": getattr(config, "head_dim", None),
        "activation": getattr(config, "hidden_act", None) or getattr(config, "activation", None),
        "num_labels": config.num_labels,
    }
    return {name: value for name, value in fields.items() if value is not None}


def measurement_context(config: PretrainedConfig, settings: MachineSettings) -> dict:
    """Everything a latency depends on besides the shape; part of every cache key."""
    return {"machine": measure.machine_fingerprint(), "software": measure.software_versions(settings.engine),
            "model": {**cost_config(config), **twin_attention(config)},
            "settings": settings.to_dict()}


def measurement_key(context: dict, shape: ModelShape, reference: ModelShape | None = None) -> str:
    extra = {} if reference is None else {"reference": reference.key()}
    return json.dumps({**context, "shape": shape.key(), **extra}, sort_keys=True)


class MeasurementCache:
    """Measurements in one json file, `{"format": 2, "measurements": {key: measurement}}`, where a key
    (`measurement_key`) spells out the machine, software, model config, settings and shape. A format-1 file (an
    older distilkit's medians) reads as empty, with a warning; the next write replaces it.

    Every write re-reads the file and replaces it atomically (`publishing_file`): a reader never sees half a
    file, and a killed run keeps what was written before. Two processes writing at the same moment may lose one
    of their updates (measured again next time), never corrupt the file.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def get(self, key: str) -> Measurement | None:
        entry = self._read().get(key)
        return None if entry is None else Measurement.from_dict(entry)

    def put(self, entries: dict[str, Measurement]) -> None:
        stored = self._read()
        measured_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
        stored.update({key: {**m.to_dict(), "measured_at": measured_at} for key, m in entries.items()})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with publishing_file(self.path) as staging:
            staging.write_text(json.dumps({"format": CACHE_FORMAT, "measurements": stored}, indent=1) + "\n")

    def _read(self) -> dict:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"Latency cache {self.path} is not readable json ({err}); delete it to measure "
                             "again.") from err
        if isinstance(data, dict) and data.get("format") == 1 and isinstance(data.get("measurements"), dict):
            logger.warning("Latency cache %s holds medians of an older distilkit (format 1); they are measured "
                           "again (the estimate is now a low quantile) and the file rewritten in format %d.",
                           self.path, CACHE_FORMAT)
            return {}
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(
                data.get("measurements"), dict):
            raise ValueError(f"Latency cache {self.path} is not a distilkit measurement cache (format "
                             f"{CACHE_FORMAT}); delete it or choose another path.")
        return data["measurements"]


def measure_shapes(config: PretrainedConfig, shapes: Sequence[ModelShape], settings: MachineSettings,
                   cache: MeasurementCache, rounds: int = 10, twins_at_once: int = 4,
                   reference: ModelShape | None = None, *, busy_tries: int = BUSY_TRIES,
                   busy_wait_s: float = BUSY_WAIT_S, reuse_busy: bool = False) -> list[Measurement]:
    """The latency of each shape's random twin at `settings`, in the order of `shapes`.

    Shapes found in `cache` for this machine, software, config and settings are not measured again (unless they
    were measured on a busy machine and not `reuse_busy`: a caller that judges busy figures itself, as a plan does,
    reuses them). The others are measured `twins_at_once` at a time (the twins of one group are
    held in memory together), interleaved over `rounds` rounds so that a change in machine load hits all of a group
    alike; each group is cached as soon as it is done. Every input is checked before anything is built or measured.

    A group measured while the machine is busy (`measure.Timing.busy`: other processes on this process's cores, or
    the reference's rounds spread too much) is measured again after `busy_wait_s` seconds, up to `busy_tries`
    measurements in all; if it stays busy the last measurement is kept with its `busy` reason (`busy_note`).

    `reference`: a shape (the teacher's) measured in every group too, so each measurement's `reference_ms` comes
    from the same group (ratios to it are free of load changes between groups); a group then holds one more twin.
    """
    get_architecture(config)
    settings.check_fits(config)
    for name, value in (("rounds", rounds), ("twins_at_once", twins_at_once), ("busy_tries", busy_tries)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not busy_wait_s >= 0:
        raise ValueError(f"busy_wait_s must be >= 0 seconds; got {busy_wait_s!r}.")
    if not shapes:
        raise ValueError("No shapes to measure: pass at least one ModelShape (see candidate_shapes).")
    for shape in shapes if reference is None else [*shapes, reference]:
        shape.check_fits(config)

    context = measurement_context(config, settings)
    keys = [measurement_key(context, shape, reference) for shape in shapes]
    shape_of = dict(zip(keys, shapes))
    found = {key: cache.get(key) for key in shape_of}
    missing = [key for key, measurement in found.items()
               if measurement is None or (measurement.busy and not reuse_busy)]
    for start in range(0, len(missing), twins_at_once):
        group = missing[start:start + twins_at_once]
        twins = {shape_of[key].key(): random_twin(config, shape_of[key]) for key in group}
        if reference is not None and reference.key() not in twins:
            twins[reference.key()] = random_twin(config, reference)
        with on_engine(twins, settings.engine, settings.threads) as running:  # ONNX Runtime: exported first
            timing = timed_until_quiet(running, settings, rounds, None if reference is None else reference.key(),
                                       busy_tries, busy_wait_s)
        del twins  # free this group's weights before the next group is built
        busy = "; ".join(timing.reasons) or None
        reference_ms = None if reference is None else timing[reference.key()].estimate
        measured = {}
        for key in group:
            stats = timing[shape_of[key].key()]
            measured[key] = Measurement(shape_of[key], stats.median, stats.min, reference_ms, stats.estimate,
                                        stats.spread, busy)
        cache.put(measured)
        found.update(measured)
    return [found[key] for key in keys]


def wait(seconds: float) -> None:
    """The pause before a busy group is measured again (a function of its own, so that tests need not wait)."""
    time.sleep(seconds)


def timed_until_quiet(twins: dict, settings: MachineSettings, rounds: int, reference: str | None, tries: int,
                      wait_s: float) -> measure.Timing:
    """`measure.interleaved_timing` of `twins`, repeated after `wait_s` seconds while the machine is busy, up to
    `tries` measurements; the last one is returned, busy or not."""
    def timed():
        return measure.interleaved_timing(twins, settings.batch_size, settings.seq_len, settings.threads,
                                          rounds=rounds, reference=reference)

    timing = timed()
    for attempt in range(2, tries + 1):
        if not timing.busy:
            break
        logger.warning("The machine was busy while %d twins were timed (%s); timing them again in %g s (%d of %d).",
                       len(twins), "; ".join(timing.reasons), wait_s, attempt, tries)
        wait(wait_s)
        timing = timed()
    return timing


def busy_note(measured: Sequence[Measurement]) -> str | None:
    """For a plan made of `measured`: None when every measurement was taken on a quiet machine, otherwise a
    sentence saying how many were not and why (the first busy group's reasons), for plan.json and plan.md."""
    busy = [m for m in measured if m.busy]
    if not busy:
        return None
    return (f"{len(busy)} of {len(measured)} twins were timed on a busy machine ({busy[0].busy}; those whose figure "
            f"could change the plan were timed again, up to {BUSY_TRIES} times); load slows large models more than "
            "small ones, so their latencies, and the choice, may be off. Plan again on quiet cores with a new latency "
            "cache (latency_cache).")
