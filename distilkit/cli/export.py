"""Export a model folder to ONNX Runtime: output_dir gets model.onnx, config.json and the tokenizer, laid out as
optimum's ORT models are (distilkit.export.to_onnx). Needs the extra: pip install "distilkit[onnx]".

A folder quantized by distilkit exports its int8 weights as ONNX integer ops; --int8 quantizes the graph with
ONNX Runtime's own dynamic int8 instead (of a float folder) or in addition (of an int8 one).

Examples:
    distilkit export runs/sst2/int8 --output_dir runs/sst2/onnx
    distilkit export runs/sst2/student --output_dir runs/sst2/onnx-int8 --int8
"""

from __future__ import annotations

from ..export.extra import MissingExtraError, require_onnx
from ..pipeline.recipe import COMMAND_SECTIONS, Recipe, RecipeError

SECTIONS = COMMAND_SECTIONS["export"]


def normalize_argv(argv: list[str]) -> list[str]:
    """A leading FOLDER becomes --export_folder FOLDER; flags pass through unchanged."""
    if argv and not argv[0].startswith("-"):
        return ["--export_folder", argv[0], *argv[1:]]
    return list(argv)


def run(recipe: Recipe) -> None:
    try:
        require_onnx()  # before anything is loaded
    except MissingExtraError as err:
        raise RecipeError(str(err)) from err
    e = recipe.export
    if not e.export_folder:
        raise RecipeError("Name the model folder to export: distilkit export FOLDER --output_dir OUT.")
    if "output_dir" not in recipe.values.get("training", {}):
        raise RecipeError("Name the folder to write: distilkit export FOLDER --output_dir OUT.")
    from ..export.folder import ONNX_FILE, to_onnx

    try:
        folder = to_onnx(e.export_folder, recipe.training.output_dir, int8=e.export_int8, opset=e.export_opset)
    except (ValueError, OSError) as err:  # a folder that is not a model, an unreadable one, a bad output folder
        raise RecipeError(str(err)) from err
    beside = sorted(p.name for p in folder.iterdir() if p.name != ONNX_FILE)
    print(f"Exported {e.export_folder} to {folder / ONNX_FILE}; beside it: {', '.join(beside)}.")
