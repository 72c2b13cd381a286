"""Generic measurements of a model: parameters, size on disk, CPU latency, and the machine they were taken on.

Used by the comparison tables (distilkit.cli.report), the model cards (distilkit.hub) and the benchmark scripts.

Every figure distilkit reports is written next to the machine it was measured on, because int8 and latency
results depend on the CPU's instruction set (AVX2 vs AVX-512 VNNI).
"""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import time
from pathlib import Path

import torch


def machine_info() -> dict:
    """CPU model, instruction-set extensions that matter for int8, core count and library versions."""
    import transformers

    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        lscpu = ""
    for line in lscpu.splitlines():
        if line.startswith("Model name:"):
            info["cpu_model"] = line.split(":", 1)[1].strip()
    flags = lscpu.split()
    info["avx512_vnni"] = "avx512_vnni" in flags
    info["avx_vnni"] = "avx_vnni" in flags
    info["avx2"] = "avx2" in flags
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def machine_fingerprint() -> dict:
    """What identifies the machine for latency: CPU model (the architecture and processor name where lscpu gives
    none), the instruction sets int8 kernels use, and the cores this process may run on."""
    info = machine_info()
    fingerprint = {name: info.get(name) for name in ("cpu_model", "avx512_vnni", "avx_vnni", "avx2")}
    if not fingerprint["cpu_model"]:
        fingerprint["cpu_model"] = f"{platform.machine()} {platform.processor()}".strip() or None
    fingerprint["cpu_count"] = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return fingerprint


def software_versions() -> dict:
    """torch (kernels, threading), transformers (the modelling code), distilkit (twins, int8 layers) and the int8
    kernel selected for the CPU (`quantization.kernels.select_kernel`; DISTILKIT_INT8_KERNEL can change it)."""
    import transformers

    from . import __version__
    from .quantization.kernels import select_kernel

    return {"torch": torch.__version__, "transformers": transformers.__version__, "distilkit": __version__,
            "int8_kernel": select_kernel("cpu").name}


def latency_setup(batch_size: int, seq_len: int, threads: int, machine: dict) -> str:
    """How latency was measured, for tables and cards: batch, tokens, threads, CPU (int8 instruction set), torch."""
    cpu = machine.get("cpu_model", "unknown CPU")
    isa = "AVX-512 VNNI" if machine.get("avx512_vnni") else ("AVX-VNNI" if machine.get("avx_vnni") else
                                                            ("AVX2" if machine.get("avx2") else "no AVX2"))
    return (f"batch {batch_size} × {seq_len} tokens, {threads} thread{'s' if threads != 1 else ''}, {cpu} ({isa}), "
            f"torch {machine.get('torch')}")


# Files a Trainer's save leaves beside the weights: not part of the model's size.
NOT_WEIGHTS = ("training_args.bin",)


def folder_size_mb(folder: str | os.PathLike) -> float:
    """Size of the weight files of a saved model, in MB (10^6 bytes); the tokenizer and a Trainer's
    training_args.bin are not counted."""
    total = sum(p.stat().st_size for p in Path(folder).rglob("*")
                if p.suffix in (".safetensors", ".bin") and p.name not in NOT_WEIGHTS)
    return total / 1e6


def count_parameters(model: torch.nn.Module) -> int:
    """Parameters, counting an int8 layer like its float original: its int8 weight and float bias (kept as
    buffers) count, its quantization scales do not. An int8 model has as many parameters as its float twin."""
    seen = {id(p): p.numel() for p in model.parameters()}
    for name, buffer in model.named_buffers():
        leaf = name.rsplit(".", 1)[-1]
        if buffer.dtype == torch.int8 or (leaf == "bias" and buffer is not None):
            seen[id(buffer)] = buffer.numel()
    return sum(seen.values())


@torch.inference_mode()
def cpu_latency_ms(model: torch.nn.Module, batch_size: int, seq_len: int, threads: int = 2, repeats: int = 10,
                   warmup: int = 3, vocab_size: int | None = None) -> float:
    """Median wall-clock milliseconds of one forward pass on random tokens, with `threads` intra-op threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        vocab = vocab_size or model.config.vocab_size
        generator = torch.Generator().manual_seed(0)
        inputs = {
            "input_ids": torch.randint(5, vocab, (batch_size, seq_len), generator=generator),
            "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long),
        }
        model.eval()
        for _ in range(warmup):
            model(**inputs)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(**inputs)
            times.append((time.perf_counter() - start) * 1000)
        return statistics.median(times)
    finally:
        torch.set_num_threads(previous)


def interleaved_latency_ms(models: dict[str, torch.nn.Module], batch_size: int, seq_len: int, threads: int = 2,
                           rounds: int = 10, warmup: int = 2, progress: bool = False) -> dict[str, dict[str, float]]:
    """CPU latency of several models, measured in rounds over all of them rather than one model after the other,
    so a change in machine load (another process starting) affects every model alike: their ratios stay fair.
    Returns {name: {"median": ms, "min": ms}} over the rounds. `progress`: a bar over the rounds."""
    from tqdm.auto import tqdm

    for model in models.values():
        cpu_latency_ms(model, batch_size, seq_len, threads=threads, repeats=1, warmup=warmup)
    samples: dict[str, list[float]] = {name: [] for name in models}
    for _ in tqdm(range(rounds), desc=f"timing {len(models)} models", unit="round", disable=not progress):
        for name, model in models.items():
            samples[name].append(cpu_latency_ms(model, batch_size, seq_len, threads=threads, repeats=1, warmup=0))
    return {name: {"median": statistics.median(times), "min": min(times)} for name, times in samples.items()}
