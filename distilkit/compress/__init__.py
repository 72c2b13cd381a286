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

and compression to a target on top of it: `CompressArguments` (target.py), `make_plan` (plan.py: the shape that
meets the target), `compress` (run.py: layer selection, distillation with gradual head/FFN pruning, int8, each a
resumable stage folder) and its `CompressResult` (results.py: measured against the teacher, results files, cards).

    result = compress(teacher, tokenizer, train, validation, CompressArguments(target_speedup=4),
                      DistillationConfig(output_dir="out", ...), "out", machine=settings)
    result.target_met, result.summary()
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
    from .plan import Candidate, Plan, make_plan
    from .results import CompressResult
    from .run import compress
    from .shape import ModelShape
    from .target import CompressArguments, Target
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
    "Candidate": "plan",
    "Plan": "plan",
    "make_plan": "plan",
    "CompressResult": "results",
    "compress": "run",
    "CompressArguments": "target",
    "Target": "target",
    "random_twin": "twin",
    "size_bytes": "twin",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = [
    "Candidate",
    "CompressArguments",
    "CompressResult",
    "LatencyModel",
    "MachineSettings",
    "Measurement",
    "MeasurementCache",
    "ModelShape",
    "Plan",
    "Target",
    "candidate_shapes",
    "compress",
    "make_plan",
    "measure_shapes",
    "random_twin",
    "size_bytes",
    "split_held_out",
]
