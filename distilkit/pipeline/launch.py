"""Checks of how a run was launched: the processes the launcher started must form the world the Trainer trains
in, and a sharded student cannot be pruned or quantized in place. Only the main process writes."""

from __future__ import annotations

import os

import torch

from ..config import DistillationConfig
from .recipe import Recipe, RecipeError

CPU_CONFIGS = "recipes/accelerate"  # in the distilkit repository


def check_launch(training: DistillationConfig) -> None:
    """Stop when the processes the launcher started do not form the world the Trainer will train in.

    Two traps, both silent otherwise: `accelerate launch --multi_gpu` (or torchrun) on a machine without GPUs
    starts N processes that each train alone on all the data unless `use_cpu` is set; and accelerate's CPU
    launcher (`--cpu`, or distributed_type MULTI_CPU without mpirun) starts one process whatever num_processes
    says.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training.world_size != launched:
        fix = (
            "On a machine without GPUs the processes join one (gloo) process group only with use_cpu: add "
            "`use_cpu: true` under `training:` in the recipe, or pass --use_cpu true."
            if not torch.cuda.is_available() else
            f"Check that the launcher's num_processes ({launched}) matches the GPUs the Trainer can use and that "
            "use_cpu is not set."
        )
        raise RecipeError(
            f"The launcher started {launched} processes (WORLD_SIZE={launched}), but the Trainer sees a world size "
            f"of {training.world_size}: each process would train on its own, on all the data, and write the same "
            f"output_dir. {fix}"
        )
    mpi = any(k in os.environ for k in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK"))
    if ("WORLD_SIZE" not in os.environ and "ACCELERATE_MIXED_PRECISION" in os.environ
            and "MASTER_PORT" in os.environ and not mpi):
        # accelerate's simple launcher exports MASTER_PORT only when it was asked for more than one process.
        raise RecipeError(
            "accelerate launch was asked for several processes but started only this one: its CPU launcher "
            "(`--cpu`, or distributed_type: MULTI_CPU without mpirun) runs a single process. For N processes on "
            f"CPU launch with `--config_file {CPU_CONFIGS}/cpu_2proc_gloo.yaml` (distributed_type: MULTI_GPU, "
            "num_processes: N) and set `use_cpu: true` in the recipe; for one process use num_processes: 1 "
            f"({CPU_CONFIGS}/cpu_1proc.yaml)."
        )


def is_main_process(training: DistillationConfig) -> bool:
    return training.process_index == 0


def check_sharding(recipe: Recipe) -> None:
    """Pruning and int8 rewrite the whole model in place, which a sharded (FSDP/DeepSpeed) student cannot do."""
    training = recipe.training
    sharded = bool(training.fsdp) or bool(training.deepspeed) or any(
        os.environ.get(name, "").lower() == "true" for name in ("ACCELERATE_USE_FSDP", "ACCELERATE_USE_DEEPSPEED"))
    if sharded and (recipe.prune.prune_fraction > 0 or recipe.quantize.quantize):
        raise RecipeError(
            "With FSDP or DeepSpeed the student is sharded, so distill cannot prune or quantize it afterwards. Run "
            "distill with prune_fraction 0 and quantize false, then `distilkit prune` / `distilkit quantize` on "
            f"{training.output_dir}/student in a single process."
        )
