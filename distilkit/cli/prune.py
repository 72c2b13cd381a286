"""Remove the least important attention heads and/or FFN neurons from model.student (structurally: the model
gets smaller).

prune_fraction is the share of attention heads to remove, the training section's prune_ffn_fraction the share of
FFN neurons (intermediate units of the feed-forward blocks; heads go first). Both are scored as the training
section's prune_heads_method (--prune_method) says, on training batches ('taylor') or by weight norms
('magnitude'), and ranked across layers; the pruned model is saved to <output_dir>/pruned and compared with the
original in <output_dir>/results.md. With prune_recovery_epochs > 0 and a model.teacher, the pruned model is then
distilled from the teacher again.

Example:
    distilkit prune --config recipes/prune_quantize.yaml --student runs/sst2/student --prune_fraction 0.3
    distilkit prune --config recipes/prune_quantize.yaml --prune_fraction 0.4 --prune_ffn_fraction 0.5
"""

from __future__ import annotations

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["prune"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import prune

    prune(recipe)
