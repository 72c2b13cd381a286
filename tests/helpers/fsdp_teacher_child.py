"""Run under torchrun (2 CPU processes, gloo): shard a teacher with FSDP2 and compare with the full model."""

import json
import os
import sys

import torch
import torch.distributed as dist

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # tests/
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model  # noqa: E402

from distilkit.distributed import shard_teacher_fsdp  # noqa: E402


def main():
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    family, task = sys.argv[2], sys.argv[3]
    full = tiny_model(task, family=family, seed=1).eval()
    teacher = shard_teacher_fsdp(tiny_model(task, family=family, seed=1), device_type="cpu")
    # Each rank runs its own batch, as in data-parallel distillation.
    batch = pad_collator([tiny_dataset(task, 6, seed=rank)[i] for i in range(3)])
    batch.pop("labels")
    with torch.inference_mode():
        sharded_logits = teacher(**batch).logits
        full_logits = full(**batch).logits
    # What a process keeps between forwards: the local shard of every parameter.
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in teacher.parameters())
    result = {"rank": rank, "max_diff": (sharded_logits - full_logits).abs().max().item(), "local": local,
              "full": sum(p.numel() for p in full.parameters()), "training": teacher.training,
              "requires_grad": any(p.requires_grad for p in teacher.parameters())}
    with open(os.path.join(sys.argv[1], f"rank{rank}.json"), "w") as handle:
        json.dump(result, handle)
    # Both ranks finish before either tears gloo down: a rank whose peer has already closed its connections can
    # abort at exit ("terminate called without an active exception"), seen once in CI.
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
