"""Compress model.teacher to a target on this machine: target_latency_ms, target_speedup or target_size_mb.

distilkit measures candidate shapes (layers, heads, FFN width, int8) on random-weight twins, chooses among those that
meet the target the one the teacher pruned to it predicts most accurate, then makes it: a student of the teacher's
layers, distilled (with the transfer data, if any) while heads and FFN neurons are pruned gradually to exactly the
planned shape, then int8 when planned. It measures the result against the teacher and says whether the target was
met; a latency target missed on a quiet machine, and still missed over that measurement and a second one pooled,
is pruned further and measured again (max_refine_rounds). A target it cannot meet is an error naming the closest
candidate, before any training.

Latency targets are measured at the evaluation section's latency_batch_size, latency_seq_len and latency_threads,
which must be given, in its engine (--engine onnxruntime: exported to ONNX and run by ONNX Runtime; adds onnx/).
Writes under output_dir: plan.json, plan.md, student/, int8/ (each with a model card), refine1/... when the loop
ran, results.md, results.json, tradeoff.png (with matplotlib). Run it again to resume after a kill.

A latency or speedup measured while the machine was busy (other processes on its cores, or the teacher's timings
spreading) gives the verdict "unreliable" rather than met or missed; results.md then gives the command that
measures the finished run again on quiet cores without making anything: the run's saved recipe with
--measure_only true.

Examples:
    distilkit compress --config recipes/compress_sst2.yaml --target_speedup 8
    distilkit compress --config recipes/compress_sst2.yaml --target_size_mb 30 --output_dir runs/small
    distilkit compress --config runs/sst2-8x/distilkit_recipe.yaml --measure_only true
"""

from __future__ import annotations

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["compress"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import compress

    compress(recipe)
