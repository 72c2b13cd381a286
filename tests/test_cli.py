"""The `distilkit` command line: recipe files merged with flags, errors for unknown names, help from the
dataclasses, data errors before training, and each command end to end on a tiny model."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml
from helpers.cli_fixtures import save_tiny_teacher, tiny_recipe, write_data

from distilkit import DistillationConfig
from distilkit.cli import main
from distilkit.cli.parser import RecipeParser
from distilkit.pipeline.recipe import RecipeError, read_recipe_file
from distilkit.pipeline.recipe import SECTIONS, ModelArguments
from distilkit.pipeline.launch import check_launch

DISTILL_SECTIONS = ("model", "data", "training", "prune", "quantize", "evaluation")


def parse(argv, command="distill", sections=DISTILL_SECTIONS):
    return RecipeParser(command, sections).parse(argv)


def squeeze(text: str) -> str:
    return " ".join(text.split())


# ---- recipes and flags ----


def test_flags_override_the_recipe_file_and_the_file_overrides_defaults(tmp_path):
    path = tiny_recipe(tmp_path, training={"temperature": 3.0, "warmup_steps": 7})
    recipe = parse(["--config", str(path), "--temperature", "4", "--learning_rate", "5e-5"])
    assert recipe.training.temperature == 4.0  # flag beats file
    assert recipe.training.learning_rate == 5e-5  # flag beats file (1e-3)
    assert recipe.training.warmup_steps == 7  # file beats default
    assert recipe.training.alpha == 0.5 and recipe.model.student_layers == "1"
    assert recipe.prune.prune_fraction == PruneDefault.prune_fraction  # untouched default
    # What was asked for is recorded: the file's values with the flags applied.
    assert recipe.values["training"]["temperature"] == 4.0
    assert recipe.values["training"]["warmup_steps"] == 7
    assert "prune" not in recipe.values


PruneDefault = SECTIONS["prune"]()


def test_yaml_values_are_converted_like_flags(tmp_path):
    # YAML 1.1 reads 5e-5 (no dot) as a string; it must still become a float.
    path = tmp_path / "r.yaml"
    path.write_text("training:\n  learning_rate: 5e-5\n  use_cpu: 'true'\nmodel:\n  student_layers: [0, 2]\n")
    recipe = parse(["--config", str(path)])
    assert recipe.training.learning_rate == 5e-5 and recipe.training.use_cpu is True
    assert recipe.model.keep_layers == [0, 2]


def test_layer_map_flag_is_parsed_by_the_config():
    recipe = parse(["--layer_map", "1:2,2:4", "--hidden_weight", "1"])
    assert recipe.training.layer_map == {1: 2, 2: 4}


def test_field_names_are_unique_across_sections():
    seen: dict[str, str] = {}
    for section, cls in SECTIONS.items():
        for f in dataclasses.fields(cls):
            assert f.name not in seen, f"{f.name} is in both {seen[f.name]} and {section}"
            seen[f.name] = section


def test_every_field_has_help():
    for section, cls in SECTIONS.items():
        if cls is DistillationConfig:
            continue
        for f in dataclasses.fields(cls):
            assert f.metadata.get("help"), f"{section}.{f.name} has no help text"


# ---- unknown names ----


def test_unknown_flag_is_an_error_with_a_suggestion_and_the_valid_fields(tmp_path, capsys):
    path = tiny_recipe(tmp_path)
    assert main(["distill", "--config", str(path), "--temprature", "4"]) == 2
    err = capsys.readouterr().err
    assert "unknown field 'temprature'" in err
    assert "Did you mean 'temperature'?" in err
    assert "student_layers" in err and "prune_fraction" in err  # the valid fields are listed, by section
    assert not (tmp_path / "run").exists()


def test_unknown_field_in_the_recipe_file_names_the_section_and_suggests(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("training:\n  learning_rat: 0.1\n")
    with pytest.raises(RecipeError) as info:
        read_recipe_file(path)
    message = str(info.value)
    assert "unknown field 'learning_rat' in section 'training'" in message
    assert "Did you mean 'learning_rate'?" in message
    assert "temperature" in message  # valid fields of the section are listed


def test_field_in_the_wrong_section_says_where_it_belongs(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  learning_rate: 0.1\n")
    with pytest.raises(RecipeError, match="belongs under training:"):
        read_recipe_file(path)
    path.write_text("learning_rate: 0.1\n")
    with pytest.raises(RecipeError, match="is a field, not a section; put it under training:"):
        read_recipe_file(path)


def test_unknown_section_suggests_the_closest(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("trainig:\n  seed: 1\n")
    with pytest.raises(RecipeError, match="Did you mean 'training'"):
        read_recipe_file(path)


def test_flag_of_a_section_the_command_does_not_read(capsys):
    assert main(["train", "--prune_fraction", "0.3"]) == 2
    assert "belongs to the 'prune' section, which this command does not use" in capsys.readouterr().err


def test_abbreviated_flags_are_not_accepted(capsys):
    # argparse would otherwise read --temp as --temperature without a word.
    assert main(["distill", "--temp", "4"]) == 2
    assert "Did you mean 'temperature'?" in capsys.readouterr().err


def test_unknown_command_suggests(capsys):
    assert main(["distil"]) == 2
    assert "Did you mean 'distill'?" in capsys.readouterr().err


def test_invalid_value_is_reported_with_the_section(capsys):
    assert main(["distill", "--alpha", "1.5"]) == 2
    err = capsys.readouterr().err
    assert "invalid training settings" in err and "alpha must be in [0, 1]" in err



def test_pruning_fields_moved_to_the_training_section_name_it_and_prune_method_is_an_alias(tmp_path):
    path = tmp_path / "r.yaml"
    for name in ("prune_method", "prune_batches", "prune_min_heads_per_layer"):
        path.write_text(f"prune:\n  {name}: 4\n")
        moved = f"'{name}' is not a field of section 'prune'; it belongs under training:"
        with pytest.raises(RecipeError, match=moved):
            read_recipe_file(path)
    path.write_text("training:\n  prune_method: magnitude\n  prune_batches: 3\nprune:\n  prune_fraction: 0.2\n")
    recipe = parse(["--config", str(path)])
    assert recipe.training.prune_heads_method == "magnitude" and recipe.training.prune_batches == 3
    assert recipe.values["training"] == {"prune_heads_method": "magnitude", "prune_batches": 3}
    assert parse(["--prune_method", "taylor", "--config", str(path)]).training.prune_heads_method == "taylor"
    path.write_text("training:\n  prune_method: magnitude\n  prune_heads_method: taylor\n")
    with pytest.raises(RecipeError, match="sets a field twice"):
        read_recipe_file(path)


@pytest.mark.parametrize(
    "flags, kwargs",
    [
        (["--prune_method", "l1"], {"prune_heads_method": "l1"}),
        (["--prune_heads_fraction", "1.0"], {"prune_heads_fraction": 1.0}),
        (["--prune_every_steps", "0", "--prune_heads_fraction", "0.5"], {"prune_every_steps": 0,
                                                                          "prune_heads_fraction": 0.5}),
        (["--prune_batches", "0"], {"prune_batches": 0}),
        (["--prune_min_heads_per_layer", "-1"], {"prune_min_heads_per_layer": -1}),
    ],
)
def test_the_config_and_the_recipe_validate_pruning_from_one_source(flags, kwargs):
    with pytest.raises(ValueError) as config_error:
        DistillationConfig(output_dir="unused", report_to="none", **kwargs)
    with pytest.raises(RecipeError) as recipe_error:
        parse(flags)
    assert str(recipe_error.value) == f"invalid training settings: {config_error.value}"


def test_one_list_of_methods_and_one_fraction_check_for_both_kinds_of_pruning():
    from distilkit.pruning import PruningArguments, arguments, importance

    assert issubclass(DistillationConfig, PruningArguments)
    assert arguments.METHODS is importance.METHODS
    with pytest.raises(ValueError) as while_training:
        DistillationConfig(output_dir="unused", report_to="none", prune_heads_fraction=1.5)
    with pytest.raises(RecipeError) as one_shot:
        parse(["--prune_fraction", "1.5"])
    assert str(one_shot.value) == "invalid prune settings: " + str(while_training.value).replace(
        "prune_heads_fraction", "prune_fraction")
    one_shot_scoring = parse([]).training.scoring(while_training=False)
    assert one_shot_scoring == {"method": "taylor", "num_batches": 8, "min_heads_per_layer": 1}


# ---- help ----


def test_help_shows_each_fields_help_from_the_dataclasses(capsys):
    with pytest.raises(SystemExit) as info:
        main(["distill", "--help"])
    assert info.value.code == 0
    out = squeeze(capsys.readouterr().out)
    for cls, name in ((DistillationConfig, "temperature"), (ModelArguments, "student_layers"),
                      (SECTIONS["prune"], "prune_fraction"), (DistillationConfig, "learning_rate")):
        field = cls.__dataclass_fields__[name]
        assert f"--{name}" in out
        assert squeeze(field.metadata["help"]) in out, name
    assert "(default: 2.0)" in out  # temperature's default, read from the dataclass
    assert "model: section of the recipe" in out and "training: section of the recipe" in out


def test_help_with_a_recipe_shows_the_recipe_values_as_defaults(tmp_path, capsys):
    path = tiny_recipe(tmp_path, training={"temperature": 3.5})
    with pytest.raises(SystemExit):
        main(["distill", "--config", str(path), "--help"])
    out = squeeze(capsys.readouterr().out)
    assert "(default: 3.5)" in out


def test_overview_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("train", "distill", "prune", "quantize", "evaluate", "push", "quickstart", "augment"):
        assert f"  {command}" in out


# ---- data errors come before any training ----


def test_missing_data_file_fails_before_any_model_is_loaded(tmp_path, capsys):
    path = tiny_recipe(tmp_path, data={"train_file": str(tmp_path / "nope.csv")})
    assert main(["distill", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train_file" in err and "nope.csv" in err and "does not exist" in err
    assert not (tmp_path / "run").exists()


def test_wrong_column_fails_before_training_and_lists_the_columns(tmp_path, capsys):
    path = tiny_recipe(tmp_path, data={"text_column": "text"})
    assert main(["distill", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Columns ['text'] not found" in err and "'sentence'" in err
    assert not (tmp_path / "run").exists()


def test_unreachable_hub_dataset_says_how_to_use_local_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setattr("datasets.config.HF_HUB_OFFLINE", True, raising=False)
    path = tiny_recipe(tmp_path)
    argv = ["distill", "--config", str(path), "--train_file", "", "--validation_file", "",
            "--dataset", "glue", "--dataset_config", "sst2"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "cannot be reached" in err
    assert "train_file: path/to/train.csv" in err and "HF_HUB_OFFLINE=1" in err
    assert not (tmp_path / "run").exists()


# ---- the launch check ----


@dataclasses.dataclass
class FakeArgs:
    world_size: int


def test_launch_check_catches_processes_that_would_train_alone(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RecipeError, match="use_cpu: true"):
        check_launch(FakeArgs(world_size=1))
    check_launch(FakeArgs(world_size=2))


def test_launch_check_catches_accelerates_single_process_cpu_launcher(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(RecipeError, match="started only this one"):
        check_launch(FakeArgs(world_size=1))
    monkeypatch.delenv("MASTER_PORT")
    check_launch(FakeArgs(world_size=1))  # accelerate launch with one process: fine



@pytest.mark.parametrize("outcome", ["done", "recipe error"])
def test_a_command_of_a_distributed_run_ends_by_destroying_the_process_group(monkeypatch, outcome):
    """Left to interpreter exit, a gloo group can abort the process after its work is done (SIGABRT)."""
    import sys
    import types

    import torch.distributed as dist

    from distilkit import cli

    calls = []

    def run(recipe):
        calls.append("run")
        if outcome == "recipe error":
            raise RecipeError("a mistake")

    monkeypatch.setitem(sys.modules, "fake_command", types.SimpleNamespace(SECTIONS=("push",), run=run))
    monkeypatch.setitem(cli.COMMANDS, "fake", ("fake_command", "a command of this test"))
    monkeypatch.setattr(dist, "is_initialized", lambda: bool(calls))  # "initialized" once the command ran
    monkeypatch.setattr(dist, "destroy_process_group", lambda group=None: calls.append("destroyed"))
    assert main(["fake"]) == (0 if outcome == "done" else 2)
    assert calls == ["run", "destroyed"]

    calls.clear()
    monkeypatch.setattr(dist, "is_initialized", lambda: False)  # a single-process run: nothing to destroy
    assert main(["fake"]) == (0 if outcome == "done" else 2)
    assert calls == ["run"]


# ---- the commands, end to end on tiny models ----


def test_distill_with_pruning_and_int8_writes_every_stage(tmp_path):
    import distilkit

    path = tiny_recipe(tmp_path, prune={"prune_fraction": 0.25}, quantize={"quantize": True})
    assert main(["distill", "--config", str(path)]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert [s["stage"] for s in results["stages"]] == ["teacher", "student", "pruned", "int8"]
    by_stage = {s["stage"]: s for s in results["stages"]}
    assert by_stage["student"]["layers"] == 1 and by_stage["teacher"]["layers"] == 2
    assert by_stage["pruned"]["heads"] == 3  # a quarter of the student's 4 heads
    assert by_stage["int8"]["size_mb"] < by_stage["pruned"]["size_mb"]
    assert all("accuracy" in s["metrics"] for s in results["stages"])
    assert "| Stage | accuracy |" in (run / "results.md").read_text()
    for stage in ("student", "pruned", "int8"):
        model = distilkit.from_pretrained(run / stage)
        assert model.config.num_hidden_layers == 1
        assert (run / stage / "README.md").is_file()  # model card
    assert not (tmp_path / "teacher" / "README.md").exists()  # the input teacher folder is left alone
    # The student's training log and checkpoints are beside its folder, which holds the model alone.
    state = json.loads((run / "student-training" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert not list((run / "student").glob("checkpoint-*")) and not (run / "student" / "trainer_state.json").exists()
    # Every stage is marked complete for this run; running it again makes nothing.
    assert all(json.loads((run / stage / "distilkit_stage.json").read_text())["stage"] == stage
               for stage in ("student", "pruned", "int8"))
    # The saved recipe repeats the run.
    again = RecipeParser("distill", DISTILL_SECTIONS).parse(["--config", str(run / "distilkit_recipe.yaml")])
    assert again.values == yaml.safe_load((run / "distilkit_recipe.yaml").read_text())


def test_train_then_evaluate_quantize_prune_and_push(tmp_path, capsys):
    base = save_tiny_teacher(tmp_path / "base", num_labels=5)  # a "pretrained" model whose head will be replaced
    train_file, validation_file = write_data(tmp_path / "data")
    common = ["--train_file", str(train_file), "--validation_file", str(validation_file), "--text_column",
              "sentence", "--max_length", "16", "--report_to", "none", "--disable_tqdm", "true",
              "--latency_seq_len", "16", "--latency_batch_size", "2", "--latency_threads", "1"]
    run = tmp_path / "run"
    assert main(["train", "--teacher", str(base), "--output_dir", str(run), "--max_steps", "3",
                 "--save_strategy", "no", *common]) == 0
    teacher = run / "teacher"
    from transformers import AutoConfig

    assert AutoConfig.from_pretrained(teacher).num_labels == 2  # from the data; the 5-label head was replaced

    assert main(["evaluate", "--eval_models", str(base.parent / "run" / "teacher"), *common]) == 0
    assert "| teacher |" in capsys.readouterr().out

    assert main(["quantize", "--student", str(teacher), "--output_dir", str(run), *common]) == 0
    assert (run / "int8" / "model.safetensors").is_file()
    assert main(["prune", "--student", str(teacher), "--output_dir", str(run), "--prune_fraction", "0.5",
                 "--prune_method", "magnitude", *common]) == 0
    results = json.loads((run / "results.json").read_text())
    assert [s["heads"] for s in results["stages"]] == [8, 4]

    capsys.readouterr()
    assert main(["push", "--push_folder", str(run / "int8"), "--hub_model_id", "someone/tiny-int8",
                 "--dry_run", "true"]) == 0
    out = capsys.readouterr().out
    assert "Would upload" in out and "model.safetensors" in out and "README.md" in out
    assert main(["push", "--output_dir", str(run), "--hub_model_id", "someone/tiny"]) == 2
    assert "push one of them" in capsys.readouterr().err


def prune_flags(tmp_path) -> list[str]:
    """A tiny BERT to prune (hidden 32, 2 layers of 4 heads and 64 FFN neurons) and data, as prune flags."""
    student = save_tiny_teacher(tmp_path / "student")
    train_file, validation_file = write_data(tmp_path / "data")
    return ["--student", str(student), "--output_dir", str(tmp_path / "run"), "--train_file", str(train_file),
            "--validation_file", str(validation_file), "--text_column", "sentence", "--max_length", "16",
            "--report_to", "none", "--disable_tqdm", "true", "--latency", "false"]


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
def test_prune_removes_heads_and_ffn_neurons_and_the_folder_reloads_with_the_same_logits(tmp_path, monkeypatch,
                                                                                        method):
    import torch
    from transformers import AutoTokenizer

    import distilkit
    from distilkit.pipeline import commands
    from distilkit.pruning import kept_heads, kept_neurons

    saved = {}
    save = commands.save

    def keep_and_save(model, tokenizer, folder):  # the in-memory pruned model, as the prune step saves it
        saved["model"] = model
        return save(model, tokenizer, folder)

    monkeypatch.setattr(commands, "save", keep_and_save)
    run = tmp_path / "run"
    assert main(["prune", *prune_flags(tmp_path), "--prune_fraction", "0.5", "--prune_ffn_fraction", "0.5",
                 "--prune_method", method]) == 0

    pruned, loaded = saved["model"].eval(), distilkit.from_pretrained(run / "pruned").eval()
    assert sum(map(len, kept_heads(pruned))) == 4  # of 8
    assert sum(map(len, kept_neurons(pruned))) == 64  # of 2 x 64
    assert kept_heads(loaded) == kept_heads(pruned) and kept_neurons(loaded) == kept_neurons(pruned)
    tokenizer = AutoTokenizer.from_pretrained(run / "pruned")
    batch = tokenizer(["good film", "the day was sad and dull"], padding=True, return_tensors="pt")
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits, pruned(**batch).logits, rtol=0, atol=1e-6)

    stages = json.loads((run / "results.json").read_text())["stages"]
    assert [s["heads"] for s in stages] == [8, 4] and stages[1]["parameters"] < stages[0]["parameters"]
    card = (run / "pruned" / "README.md").read_text()
    assert f"| head and FFN neuron importance | {method}" in card and "| FFN neurons removed | 64 |" in card


@pytest.mark.parametrize("flags, message", [
    (["--prune_ffn_fraction", "1.0"], "prune_ffn_fraction must be in [0, 1) (share of FFN neurons to remove), got 1.0"),
    (["--prune_ffn_fraction", "-0.5"], "prune_ffn_fraction must be in [0, 1) (share of FFN neurons to remove), got -0.5"),
    ([], "prune_fraction and prune_ffn_fraction are 0"),
    (["--prune_heads_fraction", "0.4"], "prune_heads_fraction (0.4) is the share of heads pruned while training"),
])
def test_prune_refuses_fractions_it_cannot_use_before_writing_anything(tmp_path, capsys, flags, message):
    assert main(["prune", *prune_flags(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_distill_a_causal_lm_on_a_text_corpus(tmp_path):
    from helpers.cli_fixtures import sentences, tiny_tokenizer
    from helpers.tiny_models import tiny_model

    teacher = tmp_path / "llama"
    tiny_model("causal", "llama", attn="sdpa").save_pretrained(teacher)
    tiny_tokenizer().save_pretrained(teacher)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(row["sentence"] for row in sentences(60, 3)) + "\n")
    argv = ["distill", "--task", "causal-lm", "--teacher", str(teacher), "--student_layers", "1",
            "--train_file", str(corpus), "--validation_file", str(corpus), "--text_column", "text",
            "--max_length", "16", "--output_dir", str(tmp_path / "run"), "--max_steps", "2", "--report_to", "none",
            "--save_strategy", "no", "--disable_tqdm", "true", "--latency", "false", "--alpha", "1.0"]
    assert main(argv) == 0
    stages = json.loads((tmp_path / "run" / "results.json").read_text())["stages"]
    assert [s["stage"] for s in stages] == ["teacher", "student"]
    assert all(s["metrics"]["perplexity"] > 1 for s in stages)
    assert stages[1]["layers"] == 1


def test_push_short_syntax_is_rewritten_into_recipe_flags():
    from distilkit.cli.push import normalize_argv

    assert normalize_argv(["runs/x/int8", "--repo-id", "me/m", "--private", "--dry-run"]) == [
        "--push_folder", "runs/x/int8", "--hub_model_id", "me/m", "--hub_private_repo", "true", "--dry_run", "true"]
    assert normalize_argv(["--push_folder", "f", "--hub_model_id", "me/m"]) == [
        "--push_folder", "f", "--hub_model_id", "me/m"]


def test_push_short_syntax_dry_run_end_to_end(tmp_path, capsys):
    from distilkit.cli import main

    folder = tmp_path / "incomplete"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert main(["push", str(folder), "--repo-id", "someone/tiny", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "safetensors" in err or "README" in err  # refused before anything is sent, naming what is missing


def test_distill_from_a_teacher_with_another_tokenizer(tmp_path):
    """A separate student whose vocabulary differs: each model reads the text with its own tokenizer."""
    from helpers.cli_fixtures import (
        NEGATIVE,
        NEUTRAL,
        POSITIVE,
        SPECIAL,
        save_tiny_teacher,
        tiny_recipe,
    )
    from transformers import BertTokenizer

    from distilkit.cli import main
    from distilkit.pipeline.recipe import ModelArguments
    from distilkit.pipeline.models import teacher_tokenizer_if_different

    student = save_tiny_teacher(tmp_path / "student", seed=3)
    words = SPECIAL + list(reversed(POSITIVE + NEGATIVE + NEUTRAL))  # same words, other ids
    BertTokenizer(vocab={w: i for i, w in enumerate(words)}).save_pretrained(student)
    path = tiny_recipe(tmp_path, model={"student": str(student)})
    teacher_tok = BertTokenizer.from_pretrained(tmp_path / "teacher")
    student_tok = BertTokenizer.from_pretrained(student)
    args = ModelArguments(teacher=str(tmp_path / "teacher"), student=str(student))
    assert teacher_tokenizer_if_different(args, student_tok, "sequence-classification") is not None
    assert teacher_tokenizer_if_different(args, teacher_tok, "sequence-classification") is None
    assert main(["distill", "--config", str(path), "--quantize", "false", "--prune_fraction", "0"]) == 0
    assert (tmp_path / "run" / "student" / "model.safetensors").is_file()


def test_train_is_reproducible_even_when_a_new_head_is_drawn(tmp_path):
    """The replaced classifier head is initialised after the command seeds: two runs give identical weights."""
    from safetensors.torch import load_file
    from helpers.cli_fixtures import save_tiny_teacher, write_data

    from distilkit.cli import main

    base = save_tiny_teacher(tmp_path / "base", num_labels=5)
    train_file, validation_file = write_data(tmp_path / "data")
    import torch

    for name in ("a", "b"):
        torch.manual_seed(hash(name) % 1000)  # different global RNG state before each run
        assert main(["train", "--teacher", str(base), "--output_dir", str(tmp_path / name), "--max_steps", "2",
                     "--save_strategy", "no", "--train_file", str(train_file), "--validation_file",
                     str(validation_file), "--text_column", "sentence", "--max_length", "16", "--report_to", "none",
                     "--disable_tqdm", "true", "--latency", "false", "--seed", "5"]) == 0
    wa = load_file(tmp_path / "a" / "teacher" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "teacher" / "model.safetensors")
    assert all(wa[k].equal(wb[k]) for k in wa)


def _named_label_model(folder):
    """A tiny classifier whose own numbering is not the sorted order of its label names."""
    from transformers import AutoConfig

    save_tiny_teacher(folder, num_labels=2)
    config = AutoConfig.from_pretrained(folder)
    config.id2label, config.label2id = {0: "positive", 1: "negative"}, {"positive": 0, "negative": 1}
    config.save_pretrained(folder)
    return folder


def test_evaluate_needs_only_a_validation_file_and_uses_the_models_label_names(tmp_path, capsys):
    import csv

    import torch
    from helpers.cli_fixtures import sentences, tiny_tokenizer, write_csv
    from transformers import AutoModelForSequenceClassification

    model_dir = _named_label_model(tmp_path / "model")
    rows = [{"sentence": r["sentence"], "label": ["negative", "positive"][r["label"]]} for r in sentences(24, 5)]
    test_file = write_csv(tmp_path / "test.csv", rows)
    out = tmp_path / "eval"
    assert main(["evaluate", "--eval_models", str(model_dir), "--validation_file", str(test_file),
                 "--text_column", "sentence", "--max_length", "16", "--output_dir", str(out), "--report_to", "none",
                 "--disable_tqdm", "true", "--latency", "false"]) == 0
    accuracy = json.loads((out / "results.json").read_text())["stages"][0]["metrics"]["accuracy"]
    # The same accuracy computed by hand, with the model's own numbering (positive = 0).
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(model_dir).eval(), tiny_tokenizer()
    with open(test_file, newline="") as handle:
        table = list(csv.DictReader(handle))
    with torch.no_grad():
        predictions = [model(**tokenizer(r["sentence"], return_tensors="pt")).logits.argmax(-1).item() for r in table]
    expected = sum(p == {"positive": 0, "negative": 1}[r["label"]] for p, r in zip(predictions, table)) / len(table)
    assert accuracy == pytest.approx(expected)


def test_evaluate_names_a_label_the_model_does_not_know(tmp_path, capsys):
    from helpers.cli_fixtures import sentences, write_csv

    model_dir = _named_label_model(tmp_path / "model")
    rows = [{"sentence": r["sentence"], "label": ["negative", "neutral"][r["label"]]} for r in sentences(6, 5)]
    test_file = write_csv(tmp_path / "test.csv", rows)
    assert main(["evaluate", "--eval_models", str(model_dir), "--validation_file", str(test_file),
                 "--text_column", "sentence", "--latency", "false", "--report_to", "none"]) == 2
    err = capsys.readouterr().err
    assert "['neutral']" in err and "['negative', 'positive']" in err


def test_training_with_a_validation_file_alone_asks_for_the_train_file(tmp_path, capsys):
    _, validation_file = write_data(tmp_path / "data")
    teacher = save_tiny_teacher(tmp_path / "teacher")
    assert main(["train", "--teacher", str(teacher), "--validation_file", str(validation_file), "--text_column",
                 "sentence", "--output_dir", str(tmp_path / "run"), "--report_to", "none"]) == 2
    assert "train_file is not" in capsys.readouterr().err


def _transfer_file(tmp_path, n=24, with_labels=False):
    from helpers.cli_fixtures import sentences, write_csv

    rows = [{"sentence": r["sentence"], **({"label": r["label"]} if with_labels else {})} for r in sentences(n, 9)]
    return write_csv(tmp_path / "transfer.csv", rows)


def test_distill_with_a_transfer_file_trains_on_labelled_and_transfer_text(tmp_path):
    transfer = _transfer_file(tmp_path)  # 24 unlabelled sentences beside 32 labelled ones
    path = tiny_recipe(tmp_path, data={"transfer_file": str(transfer)},
                       training={"max_steps": -1, "num_train_epochs": 1, "per_device_train_batch_size": 8,
                                 "teacher_cache_dir": str(tmp_path / "cache")})
    assert main(["distill", "--config", str(path)]) == 0
    state = json.loads((tmp_path / "run" / "student-training" / "trainer_state.json").read_text())
    assert state["global_step"] == (32 + 24) // 8
    logs = [e for e in state["log_history"] if "loss_kd" in e]
    assert logs and all(e["loss_kd"] == e["loss_kd"] for e in logs)


def test_transfer_file_with_labels_is_refused_unless_told_to_ignore_them(tmp_path, capsys):
    transfer = _transfer_file(tmp_path, with_labels=True)
    path = tiny_recipe(tmp_path, data={"transfer_file": str(transfer)})
    assert main(["distill", "--config", str(path)]) == 2
    assert "transfer_ignore_labels" in capsys.readouterr().err
    assert not (tmp_path / "run" / "student").exists()
    assert main(["distill", "--config", str(path), "--transfer_ignore_labels", "true"]) == 0


def test_transfer_data_errors_name_the_field(tmp_path, capsys):
    from helpers.cli_fixtures import write_csv

    empty = write_csv(tmp_path / "empty.csv", [{"sentence": "x"}])
    empty.write_text("sentence\n")
    path = tiny_recipe(tmp_path, data={"transfer_file": str(empty)})
    assert main(["distill", "--config", str(path)]) == 2
    assert "transfer data" in capsys.readouterr().err
    path = tiny_recipe(tmp_path, data={"transfer_file": str(_transfer_file(tmp_path)), "transfer_text_column": "txt"})
    assert main(["distill", "--config", str(path)]) == 2
    assert "['txt'] not found" in capsys.readouterr().err
    assert main(["distill", "--config", str(path), "--task", "causal-lm"]) == 2
    assert "sequence classification only" in capsys.readouterr().err


def test_distill_adds_augmented_copies_of_the_training_text_as_transfer_data(tmp_path):
    path = tiny_recipe(tmp_path, augment={"augment_train": True, "num_copies": 2, "num_candidates": 3},
                       training={"max_steps": -1, "num_train_epochs": 1, "per_device_train_batch_size": 16})
    assert main(["distill", "--config", str(path)]) == 0
    state = json.loads((tmp_path / "run" / "student-training" / "trainer_state.json").read_text())
    assert state["global_step"] == (32 + 2 * 32) // 16  # 32 labelled rows and 2 unlabelled copies of each


def test_distill_refuses_augment_settings_it_cannot_honour(tmp_path, capsys):
    path = tiny_recipe(tmp_path, augment={"augment_train": True, "keep_labels": True})
    assert main(["distill", "--config", str(path)]) == 2
    assert "keep_labels is for files written by `distilkit augment`" in capsys.readouterr().err
    path = tiny_recipe(tmp_path, augment={"augment_output": str(tmp_path / "x.csv")})
    assert main(["distill", "--config", str(path)]) == 2
    assert "belong to `distilkit augment`" in capsys.readouterr().err


def test_evaluate_compares_models_that_name_their_labels_differently_on_integer_labels(tmp_path, capsys):
    """Integer labels need no names: a model with LABEL_0/1 and one with named labels are scored side by side."""
    named = _named_label_model(tmp_path / "named")
    plain = save_tiny_teacher(tmp_path / "plain", num_labels=2)
    _, validation = write_data(tmp_path / "data")
    assert main(["evaluate", "--eval_models", str(named), str(plain), "--validation_file", str(validation),
                 "--text_column", "sentence", "--latency", "false", "--report_to", "none"]) == 0
    out = capsys.readouterr().out
    assert "| named |" in out and "| plain |" in out


def test_the_old_bench_command_points_to_the_script(capsys):
    assert main(["bench"]) == 2
    assert "benchmarks/benchmark.py" in capsys.readouterr().err
