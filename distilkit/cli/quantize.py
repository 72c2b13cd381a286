"""Convert model.student's Linear layers to int8 (dynamic quantization; the task head stays in float).

The int8 model is saved to <output_dir>/int8 (reload it with distilkit.from_pretrained). With data in the
recipe, the float and int8 models are compared in <output_dir>/results.md; without, only size and latency.

Example:
    distilkit quantize --student runs/sst2/pruned --output_dir runs/sst2 --quantize_embeddings true
"""

from __future__ import annotations

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["quantize"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import quantize_model

    quantize_model(recipe)
