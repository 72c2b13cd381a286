"""A latency model of the user's machine, fitted on measured twins: per precision, latency = c0 + c_layer *
layers + c_head * heads + c_ffn * neurons (+ c_emb for int8 embeddings), by least squares on relative error;
`evaluate` on held-out shapes (`split_held_out`). Sizes need no model of their own: `twin.size_bytes` is exact.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .measurements import Measurement
from .shape import ModelShape


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
