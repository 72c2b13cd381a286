"""Upload a model folder to the Hugging Face Hub (checked first: config, weights, tokenizer, model card).

The folder is push_folder (default: output_dir); the repo is the training field hub_model_id, created private
with hub_private_repo. `--dry_run true` shows what would be uploaded and sends nothing. The token comes from
HF_TOKEN or `hf auth login`.

Examples:
    distilkit push runs/sst2/int8 --repo-id you/bert-sst2-6l-int8 [--private] [--dry-run]
    distilkit push --push_folder runs/sst2/int8 --hub_model_id you/bert-sst2-6l-int8     (recipe flags)
"""

from __future__ import annotations

from pathlib import Path

from ..hub import IncompleteFolderError, push_folder
from ..pipeline.recipe import COMMAND_SECTIONS, Recipe, RecipeError

SECTIONS = COMMAND_SECTIONS["push"]

# The short syntax `push FOLDER --repo-id ID [--private] [--dry-run]`, as recipe flags.
_SHORT_FLAGS = {"--repo-id": ["--hub_model_id"], "--private": ["--hub_private_repo", "true"],
                "--dry-run": ["--dry_run", "true"]}


def normalize_argv(argv: list[str]) -> list[str]:
    """Rewrite a leading FOLDER and the short flags into recipe flags; recipe flags pass through unchanged."""
    out: list[str] = []
    if argv and not argv[0].startswith("-"):
        out += ["--push_folder", argv[0]]
        argv = argv[1:]
    for arg in argv:
        out += _SHORT_FLAGS.get(arg, [arg])
    return out


def run(recipe: Recipe) -> None:
    training, p = recipe.training, recipe.push
    folder = Path(p.push_folder or training.output_dir)
    if not training.hub_model_id:
        raise RecipeError("Set the repo to push to: --hub_model_id user/name (training.hub_model_id).")
    if folder.is_dir() and not (folder / "config.json").is_file():
        stages = sorted(d.name for d in folder.iterdir() if (d / "config.json").is_file())
        if stages:
            raise RecipeError(
                f"{folder} holds no model itself but the stages {', '.join(stages)}; push one of them, e.g. "
                f"--push_folder {folder / stages[-1]}."
            )
    try:
        result = push_folder(folder, training.hub_model_id, private=bool(training.hub_private_repo),
                             dry_run=p.dry_run)
    except (IncompleteFolderError, ValueError, PermissionError) as err:
        raise RecipeError(str(err)) from err
    except OSError as err:
        raise RecipeError(f"Upload to {training.hub_model_id} failed ({type(err).__name__}: {err}). Without Hub "
                          "access, use --dry_run true to check the folder.") from err
    verb = "Would upload" if result.dry_run else "Uploaded"
    print(f"{verb} {len(result.files)} files from {folder} to {result.url}:")
    for name in result.files:
        print(f"  {name}")
