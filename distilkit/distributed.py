"""Placing a frozen teacher under FSDP or DeepSpeed ZeRO-3, so it is sharded like the student.

Under data parallelism every process needs the teacher's outputs for its own batch. Kept as a plain module, the
teacher is a full replica on every device; for a large teacher that is the memory the student's sharding
saved. These functions shard it with the same engine the Trainer uses for the student.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .architectures import SUPPORTED_MODEL_TYPES, get_layers


def _transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The units to shard one by one: the layer list of a supported family, else the model's _no_split_modules."""
    if getattr(model.config, "model_type", None) in SUPPORTED_MODEL_TYPES:
        return list(get_layers(model))
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def shard_teacher_fsdp(teacher: nn.Module, device_type: str | None = None) -> nn.Module:
    """Shard `teacher` with FSDP2 (`fully_shard`) over all processes: each transformer layer, then the rest.

    Parameters are gathered layer by layer during the forward and freed again right after
    (`reshard_after_forward=True`), so a process holds about 1/world_size of the teacher plus one layer.
    Every process must call the teacher's forward in step, which distillation does (one batch per process).
    """
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if not dist.is_initialized():
        raise RuntimeError("shard_teacher_fsdp needs an initialised process group (launch with accelerate/torchrun).")
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    teacher.requires_grad_(False)
    for block in _transformer_blocks(teacher):
        fully_shard(block, mesh=mesh, reshard_after_forward=True)
    fully_shard(teacher, mesh=mesh, reshard_after_forward=True)
    return teacher.eval()


def prepare_teacher_deepspeed(teacher: nn.Module, accelerator) -> nn.Module:
    """Wrap `teacher` in a DeepSpeed inference engine with the student's ZeRO config (sharded under ZeRO-3).

    Follows the usual recipe for frozen reference models (as TRL does): no optimizer or scheduler, and below
    stage 3 the model is only replicated (stage 0). Not run in this project's tests: DeepSpeed and a GPU
    were not available.
    """
    import deepspeed

    config = copy.deepcopy(accelerator.state.deepspeed_plugin.deepspeed_config)
    zero = config.setdefault("zero_optimization", {})
    if zero.get("stage") != 3:
        zero["stage"] = 0
    for key in ("optimizer", "scheduler"):
        config.pop(key, None)
    engine, *_ = deepspeed.initialize(model=teacher, config=config)
    engine.eval()
    return engine
