"""Latency measurements of candidate shapes on random-weight twins, and their cache.

  * `measure_shapes`: the latency of each shape's twin (`twin.random_twin`, with the attention implementation a
    deployed model gets by default), measured interleaved (`distilkit.measure.interleaved_latency_ms`), each
    group with a reference twin (the teacher's) when asked, cached;
  * `MeasurementCache`: a json file of measurements, keyed by everything a latency depends on (the machine and
    its software, `distilkit.measure.machine_fingerprint`; the model config; the settings), so that a measurement
    from another machine, another torch/transformers, another config or other settings is never reused.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from transformers import PretrainedConfig

from .. import measure
from ..architectures import get_architecture
from ..pruning.structural import head_group_size
from ..serialization.atomic import publishing_file
from .shape import ModelShape
from .target import MachineSettings
from .twin import random_twin, twin_attention

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Measurement:
    """The latency of one shape's twin: median and minimum milliseconds of one forward pass over the rounds, and
    (`reference_ms`) the median of the reference twin measured in the same group, when one was asked for."""

    shape: ModelShape
    median_ms: float
    min_ms: float
    reference_ms: float | None = None

    def to_dict(self) -> dict:
        return {"shape": self.shape.to_dict(), "median_ms": self.median_ms, "min_ms": self.min_ms,
                "reference_ms": self.reference_ms}

    @classmethod
    def from_dict(cls, data: dict) -> Measurement:
        reference = data.get("reference_ms")
        return cls(ModelShape.from_dict(data["shape"]), float(data["median_ms"]), float(data["min_ms"]),
                   None if reference is None else float(reference))


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
    return {"machine": measure.machine_fingerprint(), "software": measure.software_versions(),
            "model": {**cost_config(config), "attn_implementation": twin_attention(config)},
            "settings": settings.to_dict()}


def measurement_key(context: dict, shape: ModelShape, reference: ModelShape | None = None) -> str:
    extra = {} if reference is None else {"reference": reference.key()}
    return json.dumps({**context, "shape": shape.key(), **extra}, sort_keys=True)


class MeasurementCache:
    """Measurements in one json file, `{"format": 1, "measurements": {key: measurement}}`, where a key
    (`measurement_key`) spells out the machine, software, model config, settings and shape.

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
        if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT or not isinstance(
                data.get("measurements"), dict):
            raise ValueError(f"Latency cache {self.path} is not a distilkit measurement cache (format "
                             f"{CACHE_FORMAT}); delete it or choose another path.")
        return data["measurements"]


def measure_shapes(config: PretrainedConfig, shapes: Sequence[ModelShape], settings: MachineSettings,
                   cache: MeasurementCache, rounds: int = 10, twins_at_once: int = 4,
                   reference: ModelShape | None = None) -> list[Measurement]:
    """The latency of each shape's random twin at `settings`, in the order of `shapes`.

    Shapes found in `cache` for this machine, software, config and settings are not measured again. The others
    are measured `twins_at_once` at a time (the twins of one group are held in memory together), interleaved
    over `rounds` rounds so that a change in machine load hits all of a group alike; each group is cached as soon
    as it is done. Every input is checked before anything is built or measured.

    `reference`: a shape (the teacher's) measured in every group too, so each measurement's `reference_ms` comes
    from the same group (ratios to it are free of load changes between groups); a group then holds one more twin.
    """
    get_architecture(config)
    settings.check_fits(config)
    for name, value in (("rounds", rounds), ("twins_at_once", twins_at_once)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value!r}.")
    if not shapes:
        raise ValueError("No shapes to measure: pass at least one ModelShape (see candidate_shapes).")
    for shape in shapes if reference is None else [*shapes, reference]:
        shape.check_fits(config)

    context = measurement_context(config, settings)
    keys = [measurement_key(context, shape, reference) for shape in shapes]
    shape_of = dict(zip(keys, shapes))
    found = {key: cache.get(key) for key in shape_of}
    missing = [key for key, measurement in found.items() if measurement is None]
    for start in range(0, len(missing), twins_at_once):
        group = missing[start:start + twins_at_once]
        twins = {key: random_twin(config, shape_of[key]) for key in group}
        reference_key = next((key for key in group if shape_of[key] == reference), "reference")
        if reference is not None and reference_key not in twins:
            twins[reference_key] = random_twin(config, reference)
        latency = measure.interleaved_latency_ms(twins, settings.batch_size, settings.seq_len, settings.threads,
                                                 rounds=rounds)
        del twins  # free this group's weights before the next group is built
        reference_ms = None if reference is None else latency[reference_key]["median"]
        measured = {key: Measurement(shape_of[key], latency[key]["median"], latency[key]["min"], reference_ms)
                    for key in group}
        cache.put(measured)
        found.update(measured)
    return [found[key] for key in keys]
