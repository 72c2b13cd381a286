"""Distil model.teacher into a smaller student, then run the recipe's optional pruning and int8 steps.

The student is model.student, or a copy of the teacher that keeps model.student_layers of its layers
(DistilBERT-style). Each stage is saved in its own folder under output_dir (student/, pruned/, int8/, each with
a model card) and measured against the teacher in output_dir/results.md and results.json.

Examples:
    distilkit distill --config recipes/sst2.yaml --temperature 4 --learning_rate 5e-5
    accelerate launch --config_file recipes/accelerate/cpu_2proc_gloo.yaml -m distilkit distill --config r.yaml
"""

from __future__ import annotations

from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["distill"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import distill

    distill(recipe)
