"""The shipped recipes and accelerate launch configs: every field exists, every recipe parses into the
dataclasses, every launch config is valid for `accelerate launch` and commented line by line."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from distilkit.cli.parser import RecipeParser
from distilkit.pipeline.recipe import read_recipe_file
from distilkit.pipeline.quickstart import base_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "recipes").glob("*.yaml"))
LAUNCH_CONFIGS = sorted((REPO / "recipes" / "accelerate").glob("*.yaml"))
ALL_SECTIONS = ("model", "data", "training", "prune", "quantize", "evaluation", "push", "quickstart")


def test_the_expected_recipes_are_shipped():
    assert {p.name for p in RECIPES} >= {"sst2.yaml", "mrpc.yaml", "causal_lm.yaml", "prune_quantize.yaml",
                                         "quickstart.yaml"}
    assert {p.name for p in LAUNCH_CONFIGS} == {"cpu_1proc.yaml", "cpu_2proc_gloo.yaml", "multi_gpu_ddp.yaml",
                                                "fsdp.yaml", "deepspeed_zero2.yaml", "deepspeed_zero3.yaml"}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.name)
def test_recipe_parses_into_the_dataclasses(path):
    read_recipe_file(path)  # every section and field exists
    # bf16 is for GPUs (causal_lm.yaml); on this CPU-only test machine it is switched off to build the config.
    recipe = RecipeParser("check", ALL_SECTIONS).parse(["--config", str(path), "--bf16", "false"])
    assert recipe.training.output_dir
    assert recipe.model.teacher or path.name == "quickstart.yaml"
    assert recipe.data.dataset or path.name == "quickstart.yaml"  # Hub names; local files in the comments


def test_pair_and_causal_recipes():
    mrpc = RecipeParser("check", ALL_SECTIONS).parse(["--config", str(REPO / "recipes" / "mrpc.yaml")])
    assert mrpc.data.text_pair_column == "sentence2" and mrpc.evaluation.metrics == ["accuracy", "f1"]
    causal = RecipeParser("check", ALL_SECTIONS).parse(["--config", str(REPO / "recipes" / "causal_lm.yaml"),
                                                        "--bf16", "false"])
    assert causal.model.task == "causal-lm" and causal.model.keep_layers == 12


def test_quickstart_recipe_is_the_packaged_one():
    assert (REPO / "recipes" / "quickstart.yaml").read_text() == (
        REPO / "distilkit" / "quickstart_data" / "quickstart.yaml").read_text()
    assert base_recipe()["model"]["student_layers"] == 3


@pytest.mark.parametrize("path", LAUNCH_CONFIGS, ids=lambda p: p.name)
def test_launch_config_is_valid_for_accelerate_and_commented(path):
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))
    options = {action.dest for action in launch_command_parser()._actions}
    for nested in ("fsdp_config", "deepspeed_config"):
        for key in (getattr(config, nested) or {}):
            assert key in options, f"{path.name}: {nested}.{key} is not an accelerate launch option"
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            assert "#" in line, f"{path.name}:{number} has no comment"
    raw = yaml.safe_load(path.read_text())
    assert raw["num_machines"] == 1 and raw["mixed_precision"] == "no"


def test_cpu_multiprocess_config_uses_the_launcher_that_starts_several_processes():
    raw = yaml.safe_load((REPO / "recipes" / "accelerate" / "cpu_2proc_gloo.yaml").read_text())
    assert raw["distributed_type"] == "MULTI_GPU" and raw["num_processes"] == 2
