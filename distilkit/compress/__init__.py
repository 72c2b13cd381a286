"""Compression to a budget: say a latency, speedup or size target, get the model that meets it on this machine.

    result = compress(teacher, tokenizer, train, validation, CompressArguments(target_speedup=4),
                      DistillationConfig(output_dir="out", ...), "out",
                      machine=MachineSettings(batch_size=8, seq_len=128, threads=2))
    result.verdict, result.summary()  # "met", "missed" or "unreliable" (measured on a busy machine)

`plan_compression` runs every check and makes the plan without training (`compress` calls it); `make_plan` plans
from a config alone. Modules: target (what is asked: `CompressArguments`, `Target`, `MachineSettings`), shape
(`ModelShape`), twin (random-weight twins, exact sizes), grid (the candidate shapes), measurements (timing twins,
the cache), latency_model (fitted on measured twins), plan (the choice), run (the stages on distilkit's pipeline
engine), results (measured against the teacher: results files, plot, cards).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .plan import Plan, make_plan
    from .results import CompressResult
    from .run import compress, plan_compression
    from .shape import ModelShape
    from .target import CompressArguments, MachineSettings, Target

_EXPORTS = {
    "Plan": "plan",
    "make_plan": "plan",
    "CompressResult": "results",
    "compress": "run",
    "plan_compression": "run",
    "ModelShape": "shape",
    "CompressArguments": "target",
    "MachineSettings": "target",
    "Target": "target",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["CompressArguments", "CompressResult", "MachineSettings", "ModelShape", "Plan", "Target", "compress",
           "make_plan", "plan_compression"]
