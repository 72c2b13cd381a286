"""Compression to a budget (`distilkit compress`, issue 15): the shapes a compressed model can take, random-weight
twins of those shapes, and a latency/size model of the user's machine built from measured twins.

    config = AutoConfig.from_pretrained(folder)
    settings = MachineSettings(batch_size=8, seq_len=128, threads=2)
    shapes = candidate_shapes(config)
    measured = measure_shapes(config, shapes, settings, MeasurementCache("latency.json"))
    fit_part, held_out = split_held_out(measured)
    model = LatencyModel.fit(fit_part)
    model.evaluate(held_out)                  # {"mean_abs_rel_error": ..., "max_abs_rel_error": ...}
    model.predict(ModelShape((6,) * 4, (768,) * 4, int8=True)), size_bytes(config, shape)
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .cost_model import (
        LatencyModel,
        MachineSettings,
        Measurement,
        MeasurementCache,
        candidate_shapes,
        measure_shapes,
        split_held_out,
    )
    from .shape import ModelShape
    from .twin import random_twin, size_bytes

_EXPORTS = {
    "LatencyModel": "cost_model",
    "MachineSettings": "cost_model",
    "Measurement": "cost_model",
    "MeasurementCache": "cost_model",
    "candidate_shapes": "cost_model",
    "measure_shapes": "cost_model",
    "split_held_out": "cost_model",
    "ModelShape": "shape",
    "random_twin": "twin",
    "size_bytes": "twin",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "LatencyModel",
    "MachineSettings",
    "Measurement",
    "MeasurementCache",
    "ModelShape",
    "candidate_shapes",
    "measure_shapes",
    "random_twin",
    "size_bytes",
    "split_held_out",
]
