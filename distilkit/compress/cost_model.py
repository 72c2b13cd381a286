"""A latency model of the user's machine: measure candidate shapes on random-weight twins, cache the
measurements, fit a model that predicts the latency of shapes not measured, and say how well it predicts.

  * `MachineSettings`: the batch size, sequence length and thread count latency is measured (and wanted) at;
  * `MeasurementCache`: a json file of measurements, keyed by everything a latency depends on, so that a
    measurement from another machine, another torch/transformers, another model config or other settings is
    never reused;
  * `measure_shapes`: the latency of each shape's twin (`twin.random_twin`, with the attention implementation a
    deployed model gets by default), measured interleaved (`distilkit.measure.interleaved_latency_ms`), each
    group with a reference twin (the teacher's) when asked, cached;
  * `LatencyModel`: per precision, latency = c0 + c_layer * layers + c_head * heads + c_ffn * neurons
    (+ c_emb for int8 embeddings), fitted by least squares on relative error; `evaluate` on held-out shapes;
  * `candidate_shapes` / `split_held_out`: the grid of uniform shapes to measure, and a seeded held-out part.

Sizes need no model of their own: `twin.size_bytes` is exact.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from transformers import PretrainedConfig

from .. import measure
from ..architectures import get_architecture
from ..pruning.structural import head_group_size
from ..serialization.atomic import publishing_file
from .shape import ModelShape
from .twin import random_twin, twin_attention

CACHE_FORMAT = 1
# (int8, int8 embeddings) options measured by `candidate_shapes`: float, int8, int8 with int8 embeddings.
PRECISIONS = ((False, False), (True, False), (True, True))


@dataclass(frozen=True)
class MachineSettings:
    """How the model will run: `batch_size` sequences of `seq_len` tokens, on `threads` CPU threads."""

    batch_size: int
    seq_len: int
    threads: int

    def __post_init__(self):
        for name in ("batch_size", "seq_len", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MachineSettings.{name} must be a positive integer; got {value!r}.")

    def check_fits(self, config: PretrainedConfig) -> None:
        """Raise ValueError if sequences of `seq_len` tokens are longer than the model's position embeddings."""
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and self.seq_len > int(limit):
            raise ValueError(f"MachineSettings.seq_len {self.seq_len} exceeds the {config.model_type} config's "
                             f"max_position_embeddings ({limit}); choose a shorter sequence length.")

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "seq_len": self.seq_len, "threads": self.threads}


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


# ------------------------------------------------------------------------------------------------ cache keys

def machine_fingerprint() -> dict:
    """What identifies the machine for latency: CPU model (the architecture and processor name where lscpu gives
    none), the instruction sets int8 kernels use, and the cores this process may run on."""
    info = measure.machine_info()
    fingerprint = {name: info.get(name) for name in ("cpu_model", "avx512_vnni", "avx_vnni", "avx2")}
    if not fingerprint["cpu_model"]:
        fingerprint["cpu_model"] = f"{platform.machine()} {platform.processor()}".strip() or None
    fingerprint["cpu_count"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return fingerprint


def software_versions() -> dict:
    """torch (kernels, threading), transformers (the modelling code), distilkit (twins, int8 layers) and the int8
    kernel selected for the CPU (`quantization.kernels.select_kernel`; DISTILKIT_INT8_KERNEL can change it)."""
    import transformers

    from .. import __version__
    from ..quantization.kernels import select_kernel

    return {"torch": torch.__version__, "transformers": transformers.__version__, "distilkit": __version__,
            "int8_kernel": select_kernel("cpu").name}


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
    return {"machine": machine_fingerprint(), "software": software_versions(),
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


# ---------------------------------------------------------------------------------------------- measurement

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


# --------------------------------------------------------------------------------------------------- model

def shape_features(shape: ModelShape) -> dict[str, float]:
    """The regressors of the latency model for `shape`: what each kept layer, head and FFN neuron costs."""
    features = {"constant": 1.0, "layers": float(shape.num_layers), "heads": float(sum(shape.heads)),
                "neurons": float(sum(shape.ffn))}
    if shape.int8:
        features["int8_embeddings"] = float(shape.int8_embeddings)
    return features


def precision_of(shape: ModelShape) -> str:
    return "int8" if shape.int8 else "float"


@dataclass(frozen=True)
class LatencyModel:
    """Predicted latency (ms) = Σ coefficient × feature (`shape_features`), with one set of coefficients per
    precision ("float", "int8"): int8 kernels cost per weight differently from float ones.

    Judgement call: the coefficients minimise the squared RELATIVE error of the measurements rather than the
    absolute one. A plan is judged against a latency target by relative error, and plain least squares would fit
    the largest (slowest) shapes closely at the expense of the small ones, where a few ms are a large fraction.
    The cost of a forward pass at fixed batch and sequence length is linear in the kept layers, heads and neurons
    (each is a fixed set of matrix products), so no other terms are needed.
    """

    coefficients: dict[str, dict[str, float]]

    @classmethod
    def fit(cls, measurements: Sequence[Measurement]) -> LatencyModel:
        """Fit on `measurements`; each precision measured needs at least as many measurements as it has
        coefficients, varied enough in layers, heads, neurons (and int8 embeddings) to determine them all."""
        if not measurements:
            raise ValueError("LatencyModel.fit needs measurements; got none.")
        by_precision: dict[str, list[Measurement]] = {}
        for item in measurements:
            if not item.median_ms > 0:
                raise ValueError(f"Measured latency must be positive; got {item.median_ms} ms for {item.shape.key()}.")
            by_precision.setdefault(precision_of(item.shape), []).append(item)
        return cls({precision: _fit_precision(precision, items) for precision, items in by_precision.items()})

    def predict(self, shape: ModelShape) -> float:
        """Predicted milliseconds of one forward pass of a model of `shape`."""
        precision = precision_of(shape)
        if precision not in self.coefficients:
            raise ValueError(f"This latency model was fitted without {precision} measurements, so it cannot predict "
                             f"{shape.key()}; it knows {sorted(self.coefficients)}.")
        coefficients = self.coefficients[precision]
        return sum(coefficients[name] * value for name, value in shape_features(shape).items())

    def evaluate(self, measurements: Sequence[Measurement]) -> dict:
        """How well the model predicts `measurements` (held out from the fit): mean and max of
        |predicted - measured| / measured, and the shape predicted worst."""
        if not measurements:
            raise ValueError("LatencyModel.evaluate needs measurements (the held-out ones); got none.")
        errors = {item.shape.key(): abs(self.predict(item.shape) - item.median_ms) / item.median_ms
                  for item in measurements}
        worst = max(errors, key=errors.get)
        return {"count": len(errors), "mean_abs_rel_error": statistics.fmean(errors.values()),
                "max_abs_rel_error": errors[worst], "worst_shape": worst}

    def to_dict(self) -> dict:
        return {"coefficients": {p: dict(c) for p, c in self.coefficients.items()}}

    @classmethod
    def from_dict(cls, data: dict) -> LatencyModel:
        coefficients = data.get("coefficients") if isinstance(data, dict) else None
        if not isinstance(coefficients, dict) or not coefficients or set(coefficients) - {"float", "int8"}:
            raise ValueError("A LatencyModel dict is {'coefficients': {'float' and/or 'int8': {feature: ms}}}; "
                             f"got {data!r}.")
        return cls({precision: {name: float(v) for name, v in c.items()} for precision, c in coefficients.items()})


def _fit_precision(precision: str, items: list[Measurement]) -> dict[str, float]:
    names = list(shape_features(items[0].shape))
    if len(items) < len(names):
        raise ValueError(
            f"Too few {precision} measurements to fit the latency model: {len(items)}, and its {len(names)} "
            f"coefficients ({', '.join(names)}) need at least {len(names)}. Measure more shapes."
        )
    features = torch.tensor([list(shape_features(item.shape).values()) for item in items], dtype=torch.float64)
    latency = torch.tensor([item.median_ms for item in items], dtype=torch.float64)
    if torch.linalg.matrix_rank(features) < len(names):
        raise ValueError(
            f"The {len(items)} {precision} measurements do not vary enough to fit {', '.join(names)}: measure "
            "shapes that differ in layers, heads per layer and FFN width (and, for int8, with and without int8 "
            "embeddings)."
        )
    weights = 1 / latency  # relative error: each row divided by its measured latency
    solution = torch.linalg.lstsq(features * weights[:, None], latency * weights).solution
    return dict(zip(names, solution.tolist()))


# ------------------------------------------------------------------------------------------------ candidates

def candidate_shapes(config: PretrainedConfig, layer_fractions: Sequence[float] = (1, 2 / 3, 1 / 3),
                     head_fractions: Sequence[float] = (1, 0.5, 0.25),
                     ffn_fractions: Sequence[float] = (1, 0.5, 0.25),
                     precisions: Sequence[tuple[bool, bool]] = PRECISIONS) -> list[ModelShape]:
    """A grid of uniform shapes to measure: every combination of the fractions of the config's layers, heads per
    layer and FFN width kept, and the (int8, int8 embeddings) precisions. Counts are rounded, at least one (heads:
    one key/value group), and repeats are dropped."""
    spec = get_architecture(config)
    group = head_group_size(config)
    layers = _kept_counts(layer_fractions, int(config.num_hidden_layers), 1, "layer_fractions")
    heads = _kept_counts(head_fractions, int(getattr(config, spec.heads_attr)), group, "head_fractions")
    widths = _kept_counts(ffn_fractions, int(getattr(config, spec.ffn_width_attr)), 1, "ffn_fractions")
    for option in precisions:
        if option not in PRECISIONS:
            raise ValueError(f"precisions holds (int8, int8_embeddings) pairs from {list(PRECISIONS)}; got {option!r}.")
    shapes = [ModelShape((h,) * num_layers, (w,) * num_layers, int8, int8_embeddings)
              for num_layers, h, w, (int8, int8_embeddings) in itertools.product(layers, heads, widths, precisions)]
    return list(dict.fromkeys(shapes))


def _kept_counts(fractions: Sequence[float], total: int, step: int, name: str) -> list[int]:
    """Each fraction of `total` as a count, rounded to a multiple of `step` and at least `step`."""
    bad = [f for f in fractions if not 0 < f <= 1]
    if not fractions or bad:
        raise ValueError(f"{name} must be fractions in (0, 1]; got {list(fractions)}.")
    return list(dict.fromkeys(max(step, round(f * total / step) * step) for f in fractions))


def split_held_out(measurements: Sequence, held_out: float = 0.25, seed: int = 0) -> tuple[list, list]:
    """(fit part, held-out part): a seeded random `held_out` fraction (rounded, at least one) is held out."""
    if not 0 < held_out < 1:
        raise ValueError(f"held_out must be a fraction in (0, 1); got {held_out!r}.")
    if len(measurements) < 2:
        raise ValueError(f"Cannot hold out part of {len(measurements)} measurement(s); need at least 2.")
    order = list(measurements)
    random.Random(seed).shuffle(order)
    count = min(len(order) - 1, max(1, round(held_out * len(order))))
    return order[count:], order[:count]
