"""The one staged, resumable engine every command runs on, and the commands as library functions.

    from distilkit.pipeline import load_recipe, run
    results = run(load_recipe("distill", "recipes/sst2.yaml", output_dir="runs/sst2", learning_rate=1e-4))

A run is a list of stages (teacher/, student/, pruned/, int8/), each a model folder under output_dir written
atomically and marked complete for the run's fingerprint (`stages.Run`); running the same recipe again resumes a
killed run, and an output_dir holding another run is refused. The command line (`distilkit <command>`) parses a
recipe file and flags into the same `Recipe` and calls the same functions.

    recipe.py    the recipe schema (one dataclass per section), reading recipe files, `load_recipe`
    stages.py    `Run` and `Stage`: the engine
    identity.py  what a run is made of (shaping settings, weights, data fingerprints)
    commands.py  train, distill, prune, quantize, quickstart, evaluate, compress, augment
    task_data.py / models.py / steps.py / launch.py   data, models, the steps of a stage, launch checks
    report.py    measuring the stages, results.md/json, the stages' model cards
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .commands import run
    from .recipe import Recipe, RecipeError, load_recipe
    from .stages import Run, Stage

_EXPORTS = {"run": "commands", "Recipe": "recipe", "RecipeError": "recipe", "load_recipe": "recipe", "Run": "stages",
            "Stage": "stages"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["Recipe", "RecipeError", "Run", "Stage", "load_recipe", "run"]
