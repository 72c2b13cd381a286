"""The `distilkit` command line: one subcommand per step, each a small module of this package.

    distilkit train     --config recipe.yaml     fine-tune a teacher on the task
    distilkit distill   --config recipe.yaml     distil it into a smaller student (then the recipe's prune/int8)
    distilkit prune     --config recipe.yaml     remove attention heads and/or FFN neurons from a model
    distilkit quantize  --config recipe.yaml     convert a model's Linear layers to int8
    distilkit evaluate  --config recipe.yaml     metrics, size and CPU latency of models, as a table
    distilkit push FOLDER --repo-id user/name    upload a finished folder to the Hugging Face Hub
    distilkit export FOLDER --output_dir OUT     a model folder to ONNX Runtime (model.onnx, config, tokenizer)
    distilkit quickstart                         the whole pipeline on a built-in data set, offline, in minutes
    distilkit augment   --config recipe.yaml     write N augmented copies of each example of a data file
    distilkit compress  --config recipe.yaml     compress a teacher to a latency, speedup or size target

Each command module has SECTIONS (the recipe sections it reads), run(recipe), and optionally base_recipe() (a
packaged recipe under the user's; only quickstart has one) and normalize_argv(argv) (a command's own short
syntax rewritten into recipe flags; push and export have one). A command's module is imported only when it runs.
"""

from __future__ import annotations

import difflib
import importlib
import sys

# name -> (module, one-line help). An explicit table: adding a command is one line here plus its module.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("distilkit.cli.train", "Fine-tune a teacher (a pretrained model) on the task."),
    "distill": ("distilkit.cli.distill", "Distil the teacher into a smaller student, then prune/int8 per the recipe."),
    "prune": ("distilkit.cli.prune", "Remove the least important attention heads and/or FFN neurons from a model."),
    "quantize": ("distilkit.cli.quantize", "Convert a model's Linear layers to int8."),
    "evaluate": ("distilkit.cli.evaluate", "Measure models: task metrics, parameters, size on disk, CPU latency."),
    "push": ("distilkit.cli.push", "Upload a model folder (with its model card) to the Hugging Face Hub."),
    "export": ("distilkit.cli.export", "Export a model folder to ONNX Runtime (optionally its dynamic int8)."),
    "quickstart": ("distilkit.cli.quickstart", "Run the whole pipeline offline on a built-in sentiment set."),
    "augment": ("distilkit.cli.augment", "Write augmented copies of a data file (word replacement, masking, n-grams)."),
    "compress": ("distilkit.cli.compress", "Compress the teacher to a latency, speedup or size target on this machine."),
}


def _overview() -> str:
    from .. import __version__

    width = max(map(len, COMMANDS))
    lines = [f"distilkit {__version__}: distillation, head pruning and int8 quantization for transformers models.",
             "", "usage: distilkit <command> [--config RECIPE.yaml] [--FIELD VALUE ...]", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    lines += ["", "`distilkit <command> --help` lists every field of the command, with its help and default.",
              "Several processes: accelerate launch --config_file recipes/accelerate/<x>.yaml -m distilkit distill ..."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `distilkit` console script and of `python -m distilkit`; returns the exit status."""
    from .parser import RecipeError, print_error

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_overview())
        return 0 if argv else 2
    if argv[0] == "--version":
        from .. import __version__

        print(f"distilkit {__version__}")
        return 0
    name = argv[0]
    if name not in COMMANDS:
        close = difflib.get_close_matches(name, COMMANDS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        if name == "bench":  # a command of distilkit 0.1
            hint = " The benchmark is a script of the distilkit repository now: python benchmarks/benchmark.py."
        print(f"distilkit: error: unknown command {name!r}.{hint} Commands: {', '.join(COMMANDS)}.", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    from .parser import RecipeParser

    try:
        base = module.base_recipe() if hasattr(module, "base_recipe") else None
        parser = RecipeParser(name, module.SECTIONS, description=module.__doc__ or "", base=base)
        args = module.normalize_argv(argv[1:]) if hasattr(module, "normalize_argv") else argv[1:]
        recipe = parser.parse(args)
        training = getattr(recipe, "training", None)
        if training is not None:
            # Seed before any model is built: a freshly initialised head (a teacher's classifier, a new
            # student) is drawn before the Trainer seeds, and would differ from run to run otherwise.
            from transformers import set_seed

            set_seed(training.seed)
        module.run(recipe)
    except RecipeError as err:
        print_error(name, err)
        return 2
    except KeyboardInterrupt:
        print(f"distilkit {name}: interrupted.", file=sys.stderr)
        return 130
    finally:
        end_process_group()
    return 0


def end_process_group() -> None:
    """Destroy the default process group of a distributed run (`accelerate launch -m distilkit ...`), if any.

    Left to the interpreter's exit, a gloo group's threads can be torn down still running, and the process
    aborts ("terminate called without an active exception") after its work is done, which the launcher reports
    as a failed run. Destroying is local to this process, and no command runs a collective after it returns, so
    there is no barrier: the other processes would wait (up to ddp_timeout) for the main one's evaluation and
    writing, and be stuck there if it failed.
    """
    dist = sys.modules.get("torch.distributed")  # not imported: no process group (and `--help` stays fast)
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
