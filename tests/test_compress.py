"""`distilkit compress` / `distilkit.compress.compress`: the plan meets its target under a fake, deterministic
latency (never wall-clock), bad targets fail before anything is trained or written, a full tiny run writes every
stage with the planned shape and resumes after a kill, and the CLI runs end to end on a tiny teacher and csv."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
import transformers as tf
import yaml
from helpers.cli_fixtures import tiny_recipe
from helpers.fake_timing import REAL_INTERLEAVED_TIMING, timing_by
from helpers.tiny_models import pad_collator, tiny_config, tiny_dataset, tiny_model

import distilkit
import distilkit.measure
import distilkit.quantization
from distilkit import DistillationConfig
from distilkit.cli import main
from distilkit.compress import (
    CompressArguments,
    MachineSettings,
    ModelShape,
    Plan,
    compress,
    make_plan,
)
from distilkit.compress import measurements
from distilkit.compress.plan import MAX_CHOICE_MEASURED, MEASURE_GROUP
from distilkit.trainer import DistillationTrainer

MACHINE = MachineSettings(batch_size=2, seq_len=12, threads=1)
GRID = {"candidate_layer_fractions": [1.0, 0.5], "candidate_head_fractions": [1.0, 0.5],
        "candidate_ffn_fractions": [1.0, 0.5]}


def fake_ms(shape: ModelShape) -> float:
    """Latency of a shape in 'units': a constant, one per head, one per 8 FFN neurons; int8 halves the layers."""
    layers = sum(h + f / 8 for h, f in zip(shape.heads, shape.ffn))
    return 1 + layers * (0.5 if shape.int8 else 1)


def shape_ms(model) -> float:
    return fake_ms(ModelShape.of(model))


@pytest.fixture(autouse=True)
def fake_latency(monkeypatch):
    """Every latency measurement (candidate twins and the final comparison) runs on a fake clock (helpers.
    fake_timing) where a model costs `fake_ms` of its shape, on a quiet machine; returns the list of measuring calls
    (each a {name: model} dict)."""
    calls = []
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(shape_ms, calls=calls))
    return calls


def arguments(tmp_path, **target) -> CompressArguments:
    return CompressArguments(**target, **GRID, latency_cache=str(tmp_path / "latency.json"))


def training(tmp_path, **changes) -> DistillationConfig:
    values = {"output_dir": str(tmp_path / "unused"), "max_steps": 2, "per_device_train_batch_size": 4,
              "prune_every_steps": 1, "prune_heads_method": "magnitude", "learning_rate": 1e-3, "report_to": "none",
              "use_cpu": True, "save_strategy": "no", "disable_tqdm": True, "seed": 0}
    return DistillationConfig(**{**values, **changes})


def run_compress(tmp_path, args, out, **kwargs):
    teacher = kwargs.pop("teacher", None) or tiny_model("seq", "bert", layers=2, num_labels=3)
    kwargs.setdefault("machine", MACHINE)
    kwargs.setdefault("progress", False)
    return compress(teacher, None, tiny_dataset(n=8), tiny_dataset(n=4, seed=1), args,
                    kwargs.pop("training_args", None) or training(tmp_path), out, data_collator=pad_collator,
                    compute_metrics=lambda p: {"accuracy": float((p.predictions.argmax(-1) == p.label_ids).mean())},
                    **kwargs)


# ---- the plan ----


@pytest.mark.parametrize("target", [{"target_speedup": 3.0}, {"target_latency_ms": 20.0},
                                    {"target_size_mb": 0.05}])
def test_plan_meets_the_target_with_the_most_parameters(tmp_path, target):
    config = tiny_config("bert", layers=4, num_labels=2)
    plan = make_plan(config, arguments(tmp_path, **target), MACHINE, progress=False)
    name, value = next(iter(target.items()))
    teacher_ms = None if name == "target_size_mb" else fake_ms(ModelShape((4,) * 4, (64,) * 4))
    assert plan.teacher_candidate.latency_ms == teacher_ms
    budget = plan.target.budget(teacher_ms)
    within = [c for c in plan.candidates if plan.cost(c) <= budget]
    chosen = plan.chosen_candidate
    assert chosen in within and chosen.parameters == max(c.parameters for c in within)
    if name == "target_speedup":
        assert teacher_ms / chosen.latency_ms >= value * 1.05 - 1e-9  # the 5% margin, in speedup terms
    elif name == "target_latency_ms":
        assert chosen.latency_ms <= value * 0.95
    else:
        assert chosen.size_mb <= value * 0.95 and chosen.latency_ms is None  # a size target measures nothing
    # The pruning shares take the layer-selected student to the planned totals.
    heads, ffn = plan.prune_fractions
    layers = chosen.shape.num_layers
    assert round((1 - heads) * layers * 4) == sum(chosen.shape.heads)
    assert round((1 - ffn) * layers * 64) == sum(chosen.shape.ffn)
    again = Plan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again.fingerprint() == plan.fingerprint() and again.chosen == plan.chosen
    assert plan.chosen in plan.to_markdown()


def test_the_margin_excludes_a_candidate_just_at_the_target(tmp_path):
    config = tiny_config("bert", layers=4, num_labels=2)
    exact = make_plan(config, arguments(tmp_path, target_latency_ms=17.0, target_margin=0.0), MACHINE, False)
    assert exact.chosen_candidate.latency_ms == 17.0
    safe = make_plan(config, arguments(tmp_path, target_latency_ms=17.0), MACHINE, False)
    assert safe.chosen_candidate.latency_ms <= 17.0 * 0.95 and safe.chosen != exact.chosen


# ---- bad input: errors before training, nothing written ----


@pytest.mark.parametrize("target, message", [
    ({"target_speedup": 1000.0}, "cannot meet target_speedup=1000: the fastest candidate is L1-h2-f32-int8"),
    ({"target_size_mb": 0.001}, "cannot meet target_size_mb=0.001: the smallest candidate is"),
    ({"target_size_mb": 500.0}, "target_size_mb=500 is met by the teacher itself"),
    ({"target_latency_ms": 1e4}, "target_latency_ms=10000 is met by the teacher itself"),
])
def test_impossible_targets_fail_before_anything_is_written(tmp_path, trainer_runs, target, message):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=message):
        run_compress(tmp_path, arguments(tmp_path, **target), out)
    assert not out.exists() and trainer_runs == []


def test_a_latency_target_without_machine_settings_is_refused(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match="latency_batch_size, latency_seq_len, latency_threads"):
        run_compress(tmp_path, arguments(tmp_path, target_speedup=2.0), out, machine=None)
    assert not out.exists() and not (tmp_path / "latency.json").exists()


def test_an_architecture_without_heads_and_ffn_entries_is_refused(tmp_path):
    config = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=100, num_labels=2, pad_token_id=0)
    with pytest.raises(ValueError, match="Supported model types: .*bert"):
        make_plan(config, arguments(tmp_path, target_speedup=2.0), MACHINE, False)


@pytest.mark.parametrize("target, message", [
    ({"target_speedup": 4.0, "target_size_mb": 10.0}, "exactly one target.*target_speedup=4.0, target_size_mb=10.0"),
    ({}, "exactly one target.*got none"),
    ({"target_speedup": 1.0}, "target_speedup must be > 1"),
    ({"target_latency_ms": -3.0}, "target_latency_ms must be > 0"),
    ({"target_size_mb": 5.0, "target_margin": 1.0}, r"target_margin must be in \[0, 1\)"),
    ({"target_size_mb": 5.0, "candidate_head_fractions": [0.0]}, r"candidate_head_fractions must be shares"),
    ({"target_size_mb": 5.0, "plan_by": "accuracy"}, "plan_by must be one of quality, parameters; got 'accuracy'"),
])
def test_conflicting_or_invalid_targets_are_refused(target, message):
    with pytest.raises(ValueError, match=message):
        CompressArguments(**target)


def test_a_pruning_schedule_longer_than_the_training_is_refused(tmp_path, trainer_runs):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"at steps \[50\].*only 2 steps"):
        run_compress(tmp_path, arguments(tmp_path, target_speedup=3.0), out,
                     training_args=training(tmp_path, prune_every_steps=50))
    assert not out.exists() and trainer_runs == []


# ---- a full run, resumed ----


def test_compress_writes_every_stage_with_the_planned_shape_and_resumes(tmp_path, monkeypatch, trainer_runs):
    out = tmp_path / "out"
    args = arguments(tmp_path, target_speedup=5.0)

    def killed(*_, **__):
        raise KeyboardInterrupt  # the run is killed while quantizing

    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(distilkit.quantization, "quantize_int8", killed)
        run_compress(tmp_path, args, out)
    assert (out / "student" / "distilkit_stage.json").is_file() and not (out / "int8").exists()
    runs_before = len(trainer_runs)

    result = run_compress(tmp_path, args, out)
    assert len(trainer_runs) == runs_before == 1  # the distillation was not repeated
    plan = result.plan
    assert [s.stage for s in result.stages] == ["teacher", "student", "int8"]
    for name in ("plan.json", "plan.md", "results.json", "results.md", "student-training/trainer_state.json"):
        assert (out / name).is_file()
    try:
        import matplotlib  # noqa: F401  (optional: the plot is drawn only with it)
        drawn = True
    except ImportError:
        drawn = False
    assert (out / "tradeoff.png").is_file() == drawn and (result.plot == "tradeoff.png") == drawn
    final = distilkit.from_pretrained(out / "int8")
    shape = ModelShape.of(final)
    assert shape.num_layers == plan.shape.num_layers and shape.int8
    assert shape.heads == plan.shape.heads and shape.ffn == plan.shape.ffn  # exactly the planned per-layer counts
    assert result.target_met and result.achieved == pytest.approx(fake_ms(ModelShape((4, 4), (64, 64)))
                                                                  / fake_ms(shape))
    saved = json.loads((out / "results.json").read_text())
    assert saved["target_met"] is True and saved["plan"] == plan.chosen
    assert "| int8 |" in (out / "results.md").read_text() and "yes |" in (out / "results.md").read_text()
    card = (out / "int8" / "README.md").read_text()
    assert "target_speedup=5" in card and result.summary() in card

    with pytest.raises(ValueError, match="made by a run of other settings.*target_speedup=5 -> target_speedup=2.5"):
        run_compress(tmp_path, arguments(tmp_path, target_speedup=2.5), out)



@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_decoder_family_teacher_is_scored_and_compressed_to_the_planned_shape(tmp_path, family):
    teacher = tiny_model("seq", family, layers=2, num_labels=3)
    result = run_compress(tmp_path, arguments(tmp_path, target_speedup=3.0), tmp_path / "out", teacher=teacher)
    plan = result.plan
    assert plan.chooser == "quality" and plan.chosen_candidate.score is not None  # the probe ran on the teacher
    final = distilkit.from_pretrained(tmp_path / "out" / result.stages[-1].stage)
    assert final.config.model_type == family and ModelShape.of(final) == plan.shape


@pytest.mark.parametrize("progress", [False, True])
def test_progress_false_shows_no_bar_and_true_times_the_stages_with_one(tmp_path, monkeypatch, capsys, progress):
    """The long steps outside the Trainer (its bars follow disable_tqdm): the teacher-output cache pass (which
    follows disable_tqdm too) and the final latency measurement over the teacher and every stage."""
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", REAL_INTERLEAVED_TIMING)  # tiny models: fast
    result = run_compress(tmp_path, arguments(tmp_path, target_size_mb=0.03), tmp_path / "out", progress=progress,
                          training_args=training(tmp_path, teacher_cache_dir=str(tmp_path / "cache"),
                                                 disable_tqdm=not progress))
    assert all(stage.latency_ms for stage in result.stages)
    err = capsys.readouterr().err
    assert (f"timing {len(result.stages)} models" in err) is progress
    assert ("Caching teacher outputs" in err) is progress


def test_a_plan_that_keeps_the_teacher_shape_quantizes_the_teacher_without_distilling(tmp_path, trainer_runs):
    out = tmp_path / "out"
    # Weights large enough that pruning moves the outputs (scores differ): the teacher's own shape scores 0, and
    # in int8 it fits the size budget.
    teacher = tiny_model("seq", "bert", layers=2, num_labels=3, initializer_range=0.3)
    result = run_compress(tmp_path, arguments(tmp_path, target_size_mb=0.05), out, teacher=teacher)
    assert result.plan.shape.heads == (4, 4) and result.plan.shape.int8  # the teacher's whole shape, in int8
    assert trainer_runs == [] and not (out / "student").exists() and not (out / "student-training").exists()
    assert [s.stage for s in result.stages] == ["teacher", "int8"] and result.target_met


# ---- the command line ----


def test_the_shipped_recipe_parses_with_its_machine_settings():
    from pathlib import Path

    from distilkit.cli import compress as command
    from distilkit.cli.parser import RecipeParser
    from distilkit.pipeline.commands import compress_machine_settings

    path = Path(__file__).resolve().parents[1] / "recipes" / "compress_sst2.yaml"
    recipe = RecipeParser("compress", command.SECTIONS).parse(["--config", str(path)])
    assert str(recipe.compress.target) == "target_speedup=8" and recipe.data.dataset == "glue"
    assert compress_machine_settings(recipe) == MachineSettings(batch_size=8, seq_len=128, threads=2)


def compress_recipe(tmp_path, **compress_values):
    path = tiny_recipe(tmp_path, compress=compress_values, training={"prune_every_steps": 1, "max_steps": 2,
                                                                       "prune_heads_method": "magnitude"})
    recipe = yaml.safe_load(path.read_text())
    del recipe["model"]["student_layers"]  # compress chooses the layers
    recipe["compress"].update(GRID, latency_cache=str(tmp_path / "latency.json"))
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_cli_compresses_a_tiny_teacher_end_to_end(tmp_path, capsys):
    path = compress_recipe(tmp_path, target_speedup=2.0)
    assert main(["compress", "--config", str(path)]) == 0
    out = tmp_path / "run"
    result = json.loads((out / "results.json").read_text())
    assert result["target_met"] is True and result["stages"][-1]["stage"] in ("student", "int8")
    assert (out / "distilkit_recipe.yaml").is_file() and (out / "student" / "README.md").is_file()
    assert "target_speedup=2: met" in capsys.readouterr().out


def test_cli_refuses_a_latency_target_without_machine_settings(tmp_path, capsys):
    path = compress_recipe(tmp_path, target_latency_ms=5.0)
    recipe = yaml.safe_load(path.read_text())
    del recipe["evaluation"]
    path.write_text(yaml.safe_dump(recipe))
    assert main(["compress", "--config", str(path)]) == 2
    assert "set latency_batch_size, latency_seq_len, latency_threads" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


# ---- review fixes: resume, up-front checks, what is measured ----


def test_resume_reuses_the_plan_and_is_refused_for_other_teacher_weights_data_or_training_settings(
        tmp_path, fake_latency, trainer_runs, monkeypatch):
    out = tmp_path / "out"
    args = arguments(tmp_path, target_speedup=5.0)
    run_compress(tmp_path, args, out)

    def again(teacher_seed=0, data_seed=0, **training_changes):
        teacher = tiny_model("seq", "bert", seed=teacher_seed, layers=2, num_labels=3)
        return compress(teacher, None, tiny_dataset(n=8, seed=data_seed), None, args,
                        training(tmp_path, **training_changes), out, machine=MACHINE, data_collator=pad_collator,
                        progress=False)

    # The saved plan is reused: no twin is measured again (only the final comparison, which holds the teacher),
    # and output/logging settings are not part of what is resumed.
    (tmp_path / "latency.json").unlink()
    calls = len(fake_latency)
    again(logging_steps=7, output_dir=str(tmp_path / "elsewhere"))
    assert all("teacher" in names for names in fake_latency[calls:]) and len(trainer_runs) == 1
    with pytest.raises(ValueError, match="teacher_weights: "):
        again(teacher_seed=1)
    with pytest.raises(ValueError, match="train_data: "):
        again(data_seed=5)
    with pytest.raises(ValueError, match=r"training_settings.learning_rate: 0.001 -> 0.002"):
        again(learning_rate=2e-3)
    assert len(trainer_runs) == 1

    # A remade distillation remakes the int8 stage made from it.
    quantized = []
    original = distilkit.quantization.quantize_int8
    monkeypatch.setattr(distilkit.quantization, "quantize_int8",
                        lambda *a, **k: quantized.append(1) or original(*a, **k))
    (out / "student" / "distilkit_stage.json").unlink()
    run_compress(tmp_path, args, out)
    assert len(trainer_runs) == 2 and quantized == [1]


def test_attention_distillation_runs_and_the_teacher_is_timed_as_it_came(tmp_path, fake_latency, monkeypatch):
    timed = {}
    measuring = distilkit.measure.interleaved_timing

    def recorded(models, *args, **kwargs):
        teacher = models.get("teacher")
        if teacher is not None:
            parameter = next(teacher.parameters())
            timed.update(dtype=parameter.dtype, device=parameter.device.type,
                         attention=teacher.config._attn_implementation)
        return measuring(models, *args, **kwargs)

    monkeypatch.setattr(distilkit.measure, "interleaved_timing", recorded)
    out = tmp_path / "out"
    result = run_compress(tmp_path, arguments(tmp_path, target_speedup=3.0), out,
                          training_args=training(tmp_path, attention_weight=1.0, teacher_dtype="bfloat16"))
    assert (out / "student" / "distilkit_stage.json").is_file() and result.stages[0].latency_ms
    assert timed == {"dtype": torch.float32, "device": "cpu", "attention": "sdpa"}


def test_layer_terms_match_each_student_layer_to_the_teacher_layer_it_was_copied_from(tmp_path, trained_layer_maps):
    from distilkit.compress.run import stage_arguments
    from distilkit.config import kept_layer_map, uniform_layer_map

    maps = trained_layer_maps
    teacher = tiny_model("seq", "bert", layers=4, num_labels=3)
    result = run_compress(tmp_path, arguments(tmp_path, target_speedup=3.0), tmp_path / "out", teacher=teacher,
                          training_args=training(tmp_path, hidden_weight=1.0))
    keep = result.plan.keep_layers
    assert maps == [{0: 0, **{i + 1: t + 1 for i, t in enumerate(keep)}}] != [uniform_layer_map(len(keep), 4)]
    # The derived map is part of the run's identity: stages distilled on another map are not reused.
    assert result.plan.identity()["layer_map"] == {str(k): v for k, v in kept_layer_map(keep).items()}
    no_layer_terms = dataclasses.replace(result.plan, inputs={"training_settings": {"layer_map": "uniform",
                                                                                    "hidden_weight": 0.0}})
    assert "layer_map" not in no_layer_terms.identity()

    # A plan keeping layers 0 and 3 of 4 matches teacher hidden states 1 and 4, not the evenly spaced 2 and 4.
    plan = dataclasses.replace(result.plan, keep_layers=(0, 3))
    args = stage_arguments(plan, training(tmp_path, hidden_weight=1.0, attention_weight=1.0), tmp_path / "t")
    assert args.layer_map == kept_layer_map((0, 3)) == {0: 0, 1: 1, 2: 4} != uniform_layer_map(2, 4)
    assert args.output_dir == str(tmp_path / "t")
    mine = stage_arguments(plan, training(tmp_path, hidden_weight=1.0, layer_map={2: 4}), tmp_path / "t")
    assert mine.layer_map == {2: 4}  # a map the user gave is kept
    assert stage_arguments(plan, training(tmp_path), tmp_path / "t").layer_map == "uniform"  # no layer terms
    with pytest.raises(ValueError, match=r"strictly increasing, got \[3, 0\]"):
        kept_layer_map([3, 0])


def test_attention_distillation_with_an_sdpa_teacher_is_refused_up_front(tmp_path, trainer_runs):
    out = tmp_path / "out"
    teacher = tiny_model("seq", "bert", layers=2, num_labels=3, attn="sdpa")
    with pytest.raises(ValueError, match="attention_weight=1.0 needs attention probabilities"):
        compress(teacher, None, tiny_dataset(n=8), None, arguments(tmp_path, target_speedup=3.0),
                 training(tmp_path, attention_weight=1.0), out, machine=MACHINE, data_collator=pad_collator,
                 progress=False)
    assert not out.exists() and trainer_runs == []


def test_a_min_heads_per_layer_setting_is_refused_up_front(tmp_path, trainer_runs):
    out = tmp_path / "out"
    with pytest.raises(ValueError, match=r"compress sets prune_min_heads_per_layer from its plan"):
        run_compress(tmp_path, arguments(tmp_path, target_speedup=5.0), out,
                     training_args=training(tmp_path, prune_min_heads_per_layer=3))
    assert not out.exists() and trainer_runs == []


def test_an_already_compressed_teacher_is_refused(tmp_path, trainer_runs):
    out = tmp_path / "out"
    teacher = distilkit.quantization.quantize_int8(tiny_model("seq", "bert", layers=2, num_labels=3))
    with pytest.raises(ValueError, match="teacher is already compressed"):
        compress(teacher, None, tiny_dataset(n=8), None, arguments(tmp_path, target_size_mb=0.05),
                 training(tmp_path), out, machine=MACHINE, data_collator=pad_collator, progress=False)
    assert not out.exists() and trainer_runs == []


def test_speedups_are_ratios_to_the_teacher_measured_in_the_same_group(tmp_path, monkeypatch):
    calls = []

    def drifting(model) -> float:
        return len(calls) * fake_ms(ModelShape.of(model))  # the machine gets slower with every group

    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(drifting, calls=calls))
    plan = make_plan(tiny_config("bert", layers=4, num_labels=2), arguments(tmp_path, target_speedup=3.0), MACHINE,
                     False)
    assert len(calls) > 1
    measured = [c for c in plan.candidates if c.latency_ms is not None]
    assert len(measured) > MEASURE_GROUP  # several groups
    for candidate in measured:
        assert candidate.latency_ms == pytest.approx(fake_ms(candidate.shape))
    assert "predicted (ms)" in plan.to_markdown()


@pytest.mark.slow
def test_one_lucky_fast_measurement_does_not_decide_the_plan(tmp_path, monkeypatch):
    """A candidate whose twin happened to run fast (a quiet moment, a load spike on the teacher's rounds) is
    budgeted at the latency model's prediction, fitted on every candidate: the plan does not choose it."""
    config = tiny_config("bert", layers=4, num_labels=2)
    grid = {"candidate_layer_fractions": [1.0, 0.75, 0.5, 0.25], "candidate_head_fractions": [1.0, 0.5, 0.25],
            "candidate_ffn_fractions": [1.0, 0.5, 0.25]}  # 108 candidates: enough for the model to fit

    def plan_with(cache: str) -> Plan:
        return make_plan(config, CompressArguments(target_speedup=3.0, **grid, latency_cache=str(tmp_path / cache)),
                         MACHINE, False)

    honest = plan_with("honest.json")
    budget = honest.target.budget(honest.teacher_candidate.latency_ms)
    # The biggest candidate over budget, measured twice as fast as it is.
    lucky = max((c for c in honest.candidates[1:] if honest.cost(c) > budget), key=lambda c: c.parameters).shape

    def noisy(model) -> float:
        return fake_ms(ModelShape.of(model)) / (2 if ModelShape.of(model) == lucky else 1)

    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(noisy))
    plan = plan_with("noisy.json")
    candidate = next(c for c in plan.candidates if c.shape == lucky)
    assert candidate.latency_ms <= budget < candidate.predicted_ms  # fast on the clock, slow in the model
    assert plan.cost(candidate) == candidate.predicted_ms and plan.chosen == honest.chosen != lucky.key()
    assert "larger of the twin's measurement and the latency model's prediction" in plan.reason


def test_the_plan_measures_what_it_would_choose_and_so_uses_its_budget(tmp_path, monkeypatch):
    """No edge candidates measured while screening: the candidates predicted just inside the budget are unmeasured
    when the plan ranks them. The plan measures the best-ranked ones until the one it chooses is measured, so it
    keeps the most parameters within the budget, measured or predicted; allowed no such measurement, it can only
    choose among the twins measured while screening, and keeps fewer."""
    from distilkit.compress import plan as plan_module

    monkeypatch.setattr(plan_module, "MAX_EDGE_MEASURED", 0)
    config = tiny_config("bert", layers=4, num_labels=2)
    grid = {"candidate_layer_fractions": [1.0, 0.75, 0.5, 0.25], "candidate_head_fractions": [1.0, 0.5, 0.25],
            "candidate_ffn_fractions": [1.0, 0.5, 0.25]}  # 108 candidates: enough for the model to fit

    def plan_allowing(choice_measured: int) -> Plan:
        monkeypatch.setattr(plan_module, "MAX_CHOICE_MEASURED", choice_measured)
        cache = tmp_path / f"{choice_measured}.json"
        return make_plan(config, CompressArguments(target_speedup=2.5, **grid, latency_cache=str(cache)), MACHINE,
                         False)

    def measured(plan: Plan) -> list:
        return [c for c in plan.candidates if c.latency_ms is not None]

    plan, screened_only = plan_allowing(MAX_CHOICE_MEASURED), plan_allowing(0)
    budget = plan.target.budget(plan.teacher_candidate.latency_ms)
    within = [c for c in plan.candidates if plan.cost(c) is not None and plan.cost(c) <= budget]
    chosen = plan.chosen_candidate
    assert chosen in measured(plan) and chosen.parameters == max(c.parameters for c in within)
    assert plan.cost(chosen) > plan_module.EDGE_LOW_SHARE * budget  # where plans used to stop
    assert len(measured(screened_only)) < len(measured(plan)) <= len(measured(screened_only)) + MAX_CHOICE_MEASURED
    assert screened_only.chosen_candidate in measured(screened_only)
    assert screened_only.chosen_candidate.parameters < chosen.parameters

    # The bound holds exactly, even inside a group: allowed 2, the plan measures 2 and then chooses among the
    # measured candidates.
    capped = plan_allowing(2)
    assert len(measured(capped)) == len(measured(screened_only)) + 2
    assert capped.chosen_candidate in measured(capped) and plan.cost(capped.chosen_candidate) <= budget


def test_once_the_plan_may_not_measure_more_its_refusal_names_a_measured_candidate(tmp_path):
    """After the plan has measured as many candidates as it may for its choice, only measured ones can be chosen; a
    target none of them meets is refused naming the fastest measured candidate (not a predicted one that seems to
    meet it) and counting those still predicted within the budget."""
    from distilkit.compress.plan import Candidate, _unreachable

    target = arguments(tmp_path, target_speedup=4.0).target
    teacher_ms = 100.0
    budget = target.budget(teacher_ms)  # 23.75 ms with the 5% margin
    slow = Candidate(ModelShape((2, 2), (32, 32)), 1.0, 100, latency_ms=30.0, predicted_ms=22.0)
    unmeasured = Candidate(ModelShape((2,), (32,)), 0.5, 50, predicted_ms=20.0)
    limited = str(_unreachable(target, [slow, unmeasured], budget, teacher_ms, predicted=False))
    assert "the fastest measured candidate is L2-h2.2-f32.32-float at 3.333x (the plan needs 4.211x" in limited
    assert "1 unmeasured candidate(s) are predicted within it" in limited
    # While unmeasured candidates may still be chosen, the closest by any estimate is named, marked as predicted.
    assert "the fastest candidate is L1-h2-f32-float at 5x (predicted)" in str(
        _unreachable(target, [slow, unmeasured], budget, teacher_ms))


def test_the_plot_puts_candidates_at_their_planned_speedup_on_this_runs_axis(tmp_path):
    from distilkit.compress.results import StageOutcome, candidate_positions

    plan = make_plan(tiny_config("bert", layers=2, num_labels=3), arguments(tmp_path, target_speedup=2.0), MACHINE,
                     False)
    teacher_then = plan.teacher_candidate.latency_ms
    slower_now = StageOutcome("teacher", "teacher", {}, 1, 1.0, latency_ms=3 * teacher_then, layers=2, heads=8, speedup=1.0)
    positions = candidate_positions(plan, slower_now)
    assert positions == pytest.approx([3 * plan.cost(c) for c in plan.candidates])
    assert positions[0] == pytest.approx(slower_now.latency_ms)  # the teacher's twin lands on the teacher
    sized = make_plan(tiny_config("bert", layers=2, num_labels=3), arguments(tmp_path, target_size_mb=0.05),
                      MACHINE, False)
    assert candidate_positions(sized, slower_now) == [c.size_mb for c in sized.candidates]


def test_an_unfinished_pruning_names_the_training_folder_to_delete(tmp_path):
    from distilkit.compress.run import check_shape

    plan = make_plan(tiny_config("bert", layers=2, num_labels=3), arguments(tmp_path, target_speedup=5.0), MACHINE,
                     False)
    unpruned = tiny_model("seq", "bert", layers=1, num_labels=3)
    with pytest.raises(RuntimeError, match=r"delete .*student-training/ to distil again"):
        check_shape(unpruned, plan.shape, tmp_path / "out" / "student-training")


def test_cli_later_errors_are_not_recipe_errors(tmp_path, monkeypatch):
    def broken(self, *args, **kwargs):
        raise ValueError("broken while training")

    monkeypatch.setattr(DistillationTrainer, "train", broken)
    path = compress_recipe(tmp_path, target_speedup=2.0)
    with pytest.raises(ValueError, match="broken while training"):
        main(["compress", "--config", str(path)])


def test_cli_machine_settings_given_as_flags_with_default_values_count(tmp_path):
    from distilkit.cli import compress as command
    from distilkit.cli.parser import RecipeParser
    from distilkit.pipeline.commands import compress_machine_settings

    path = compress_recipe(tmp_path, target_latency_ms=5.0)
    recipe = yaml.safe_load(path.read_text())
    del recipe["evaluation"]
    path.write_text(yaml.safe_dump(recipe))
    flags = ["--latency_batch_size", "8", "--latency_seq_len=128", "--latency_threads", "2"]
    parsed = RecipeParser("compress", command.SECTIONS).parse(["--config", str(path), *flags])
    assert compress_machine_settings(parsed) == MachineSettings(batch_size=8, seq_len=128, threads=2)
    assert parsed.values["evaluation"] == {"latency_batch_size": 8, "latency_seq_len": 128, "latency_threads": 2}


# ---- a busy machine: plans that hold, verdicts that say when they cannot be trusted, measure_only ----


@pytest.fixture
def waits(monkeypatch):
    """The pauses before a busy group of twins is timed again, recorded instead of slept."""
    from distilkit.compress import measurements

    paused = []
    monkeypatch.setattr(measurements, "wait", paused.append)
    return paused


def busy_when(monkeypatch, final: bool, twins: bool = False, other_cores: float = 1.5):
    """Time on the fake clock, with other processes holding `other_cores` cores during the final measurement (the
    one with the teacher) when `final`, and while twins are timed when `twins`."""
    quiet, busy = timing_by(shape_ms), timing_by(shape_ms, other_cores=other_cores)

    def timing(models, *args, **kwargs):
        loaded = final if "teacher" in models else twins
        return (busy if loaded else quiet)(models, *args, **kwargs)

    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing)


def plan_at_3x(folder: Path) -> Plan:
    """A target_speedup=3 plan of a 4-layer tiny BERT, with its latency cache in `folder`."""
    return make_plan(tiny_config("bert", layers=4, num_labels=2), arguments(folder, target_speedup=3.0), MACHINE,
                     False)


def test_the_same_plan_is_chosen_with_and_without_load_spikes(tmp_path, monkeypatch, waits):
    """Load spikes in 6 of every 10 rounds, slowing a twin more the larger it is (1.3x to 1.8x): the plan, made on
    the rounds' 20th percentile, is the quiet one, and says it was made on a busy machine; made on medians it would
    have chosen a bigger shape than the target allows."""
    from helpers.fake_timing import spiky

    from distilkit.measure import LatencyStats

    teacher_ms = fake_ms(ModelShape((4,) * 4, (64,) * 4))
    quiet = plan_at_3x(tmp_path / "quiet")
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(shape_ms, load=spiky(large_ms=teacher_ms)))
    loaded = plan_at_3x(tmp_path / "spikes")
    assert loaded.chosen == quiet.chosen
    assert quiet.busy is None and waits and quiet.busy != loaded.busy
    measured = len(loaded.candidates) - 1  # the teacher's twin and the anchor: one measurement, the calibration
    assert loaded.busy.startswith(f"{measured} of {measured} twins were timed on a busy machine")
    # Two pauses (3 tries) for the teacher's twin with the anchor, which sets the budget, and two for the chosen
    # twin, timed again before it is accepted (busy every time); no other candidate is timed again: on the rounds'
    # 20th percentile every measurement agrees with the latency model, so none could change the plan.
    assert waits == [measurements.BUSY_WAIT_S] * 4
    assert json.loads(json.dumps(loaded.to_dict()))["busy"] == loaded.busy
    assert Plan.from_dict(loaded.to_dict()).busy == loaded.busy and "Measured on a busy machine" in loaded.to_markdown()

    with monkeypatch.context() as patch:
        patch.setattr(LatencyStats, "estimate", property(lambda stats: stats.median))
        on_medians = plan_at_3x(tmp_path / "medians")
    assert on_medians.chosen != quiet.chosen


def busy_for_one_twin(shape: ModelShape, factor: float, busy_measurements: int, timed: list):
    """A fake clock on which `shape`'s twin costs `factor` times its `fake_ms`, and other processes hold 1.5 cores,
    in its first `busy_measurements` measurements (every other measurement quiet); each of its measurements is
    appended to `timed` (the sorted names of the twins timed with it)."""
    def timing(models, *args, **kwargs):
        if shape.key() not in models:
            return timing_by(shape_ms)(models, *args, **kwargs)
        timed.append(sorted(models))
        busy = len(timed) <= busy_measurements

        def cost(model) -> float:
            return shape_ms(model) * (factor if busy and ModelShape.of(model) == shape else 1.0)

        return timing_by(cost, other_cores=1.5 if busy else 0.0)(models, *args, **kwargs)

    return timing


@pytest.mark.parametrize("busy_measurements", [1, 99])
def test_only_twins_whose_busy_measurement_could_change_the_plan_are_timed_again(tmp_path, monkeypatch, waits,
                                                                                 busy_measurements):
    """The quiet plan's choice measured 40% slow while other processes hold the cores, in its first measurement
    (1) or every one (99): that twin alone is timed again, after a pause, up to BUSY_TRIES times; the twins timed
    beside it on the busy machine agree with the latency model and keep their measurement. Once its load is gone
    the plan is the quiet one."""
    quiet = plan_at_3x(tmp_path / "quiet")
    slowed = quiet.shape
    timed = []  # the measurements of the slowed twin, each a list of the shapes timed with it
    timing = busy_for_one_twin(slowed, 1.4, busy_measurements, timed)
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing)
    loaded = plan_at_3x(tmp_path / "busy")
    tries = min(busy_measurements + 1, measurements.BUSY_TRIES)
    assert len(timed) == tries and waits == [measurements.BUSY_WAIT_S] * (tries - 1)
    assert all(len(again) == 2 for again in timed[1:])  # timed again alone with the anchor
    beside = len(timed[0]) - 2  # the other twins of its first group (besides the anchor): flagged, not timed again
    still_busy = beside + (busy_measurements >= tries)
    measured = len(loaded.candidates) - 1  # the teacher's twin and the anchor: one measurement, the calibration
    assert loaded.busy.startswith(f"{still_busy} of {measured} twins were timed on a busy machine")
    if busy_measurements == 1:
        assert loaded.chosen == quiet.chosen
        assert loaded.chosen_candidate.latency_ms == pytest.approx(quiet.chosen_candidate.latency_ms)
        # Another target planned from the same cache reuses the busy figures it does not doubt: no twin measured
        # before is timed again.
        again = []
        monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(shape_ms, calls=again))
        measured_before = {c.shape.key() for c in loaded.candidates if c.latency_ms is not None}
        make_plan(tiny_config("bert", layers=4, num_labels=2), arguments(tmp_path / "busy", target_speedup=2.5),
                  MACHINE, False)
        timed_again = {name for call in again for name in call} - {loaded.reference}
        assert not timed_again & measured_before
    else:
        assert loaded.chosen_candidate.latency_ms == pytest.approx(1.4 * fake_ms(slowed), rel=0.3)


def test_a_chosen_twin_timed_on_a_busy_machine_is_timed_again_before_it_is_accepted(tmp_path, monkeypatch, waits):
    """The quiet plan's choice timed while other processes hold the cores, 3% fast: a figure the latency model
    agrees with, on the same side of the budget, so nothing else would time it again. The plan does not accept a
    choice on a busy figure while it may time it again: that twin alone is timed again, after one pause, and
    the plan keeps its quiet figure."""
    quiet = plan_at_3x(tmp_path / "quiet")
    chosen = quiet.shape
    timed = []
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", busy_for_one_twin(chosen, 0.97, 1, timed))
    loaded = plan_at_3x(tmp_path / "busy")
    assert len(timed) == 2 and len(timed[1]) == 2 and waits == [measurements.BUSY_WAIT_S]
    assert loaded.chosen == quiet.chosen
    assert loaded.chosen_candidate.latency_ms == pytest.approx(quiet.chosen_candidate.latency_ms)
    beside = len(timed[0]) - 2  # its first group's other twins (besides the anchor): flagged, not timed again
    assert loaded.busy.startswith(f"{beside} of {len(loaded.candidates) - 1} twins were timed on a busy machine")


def test_a_busy_twin_is_doubtful_when_its_figure_is_far_from_the_prediction_or_across_the_budget():
    from distilkit.compress.plan import RETIME_RESIDUAL, Candidate, _doubtful

    def candidate(measured, predicted):
        return Candidate(ModelShape((2,), (8,)), 1.0, 10, latency_ms=measured, predicted_ms=predicted)

    budget = 100.0
    assert not _doubtful(candidate(80.0, 84.0), budget)  # 5% apart, both within
    assert not _doubtful(candidate(120.0, 126.0), budget)  # 5% apart, both over
    assert _doubtful(candidate(80.0, 80.0 * (1 + RETIME_RESIDUAL) * 1.02), budget)  # far apart, both within
    assert _doubtful(candidate(98.0, 102.0), budget) and _doubtful(candidate(102.0, 98.0), budget)  # across it
    assert not _doubtful(candidate(None, 98.0), budget) and not _doubtful(candidate(98.0, None), budget)


def test_verdicts():
    from distilkit.compress import Target

    speedup, size = Target("target_speedup", 3.0), Target("target_size_mb", 5.0)
    assert speedup.verdict(10.0, 40.0, busy=False) == "met" and speedup.verdict(20.0, 40.0, busy=False) == "missed"
    assert speedup.verdict(10.0, 40.0, busy=True) == speedup.verdict(20.0, 40.0, busy=True) == "unreliable"
    assert size.verdict(4.0, None, busy=True) == "met"  # a size does not depend on load


def test_a_final_measurement_on_a_busy_machine_is_unreliable_never_met(tmp_path, monkeypatch, trainer_runs):
    from distilkit.compress.results import PYTHON_REMEASURE

    busy_when(monkeypatch, final=True)
    out = tmp_path / "out"
    result = run_compress(tmp_path, arguments(tmp_path, target_speedup=3.0), out)
    assert result.achieved >= 3.0  # the figures alone would say met
    assert result.verdict == "unreliable" and result.target_met is False
    assert "unreliable, measured on a busy machine" in result.summary() and "--measure_only true" in result.summary()
    saved = json.loads((out / "results.json").read_text())
    assert (saved["verdict"], saved["target_met"], saved["remeasure"]) == ("unreliable", False, PYTHON_REMEASURE)
    assert saved["measurement"]["busy"] and saved["measurement"]["load"]["other_cores"] == pytest.approx(1.5)
    assert saved["measurement"]["models"]["teacher"]["estimate"] == result.stages[0].latency_ms
    final = saved["stages"][-1]
    assert final["latency_ms"] == final["median_ms"] and final["spread"] == 0  # the fake clock does not jitter
    md = (out / "results.md").read_text()
    assert "## The machine was busy: this measurement is unreliable" in md
    assert "other processes used 1.50 of the" in md and "measure_only=True" in md
    assert "| unreliable |" in md and "yes |" not in md
    assert "unreliable" in (out / result.final.stage / "README.md").read_text()

    # On quiet cores, measure_only measures the same folder again: met, and nothing trained again.
    busy_when(monkeypatch, final=False)
    again = run_compress(tmp_path, dataclasses.replace(arguments(tmp_path, target_speedup=3.0), measure_only=True),
                         out)
    assert again.verdict == "met" and again.target_met and len(trainer_runs) == 1
    saved = json.loads((out / "results.json").read_text())
    assert (saved["verdict"], saved["target_met"], saved["remeasure"]) == ("met", True, None)
    assert "The machine was busy" not in (out / "results.md").read_text()


def test_a_size_target_keeps_its_verdict_on_a_busy_machine(tmp_path, monkeypatch):
    busy_when(monkeypatch, final=True)
    out = tmp_path / "out"
    result = run_compress(tmp_path, arguments(tmp_path, target_size_mb=0.05), out)
    assert result.verdict == "met" and result.target_met
    assert "The verdict stands (a size does not depend on load)" in (out / "results.md").read_text()


def folder_state(folder) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def test_measure_only_refuses_a_folder_with_unfinished_stages_before_writing(tmp_path, monkeypatch, trainer_runs):
    args = arguments(tmp_path, target_speedup=4.0)  # beyond float shapes of this grid: student/ then int8/
    measure_only = dataclasses.replace(args, measure_only=True)
    empty = tmp_path / "empty"
    with pytest.raises(ValueError, match="has no plan.json: run the same command without measure_only first"):
        run_compress(tmp_path, measure_only, empty)
    assert not empty.exists()

    def killed(*_, **__):
        raise KeyboardInterrupt  # the run is killed while quantizing: student/ is complete, int8/ is not

    out = tmp_path / "out"
    with monkeypatch.context() as patch, pytest.raises(KeyboardInterrupt):
        patch.setattr(distilkit.quantization, "quantize_int8", killed)
        run_compress(tmp_path, args, out)
    before, runs = folder_state(out), len(trainer_runs)
    with pytest.raises(ValueError, match=r"has 1 of its 2 stages unfinished: int8/\. Run the same command without"):
        run_compress(tmp_path, measure_only, out)
    assert folder_state(out) == before and len(trainer_runs) == runs == 1
    with pytest.raises(ValueError, match="plan.json in .* was made for another target"):
        run_compress(tmp_path, dataclasses.replace(measure_only, target_speedup=2.5), out)
    assert folder_state(out) == before


def test_cli_says_how_to_measure_again_and_measure_only_does_it(tmp_path, monkeypatch, capsys, trainer_runs):
    import shlex

    busy_when(monkeypatch, final=True)
    path = compress_recipe(tmp_path, target_speedup=2.0)
    assert main(["compress", "--config", str(path)]) == 0
    out = tmp_path / "run"
    command = f"distilkit compress --config {out / 'distilkit_recipe.yaml'} --measure_only true"
    assert f"    {command}" in (out / "results.md").read_text()
    assert "target_speedup=2: unreliable" in capsys.readouterr().out
    recipe = (out / "distilkit_recipe.yaml").read_text()
    runs = len(trainer_runs)

    busy_when(monkeypatch, final=False)
    assert main(shlex.split(command)[1:]) == 0
    assert "target_speedup=2: met" in capsys.readouterr().out and len(trainer_runs) == runs
    assert json.loads((out / "results.json").read_text())["verdict"] == "met"
    assert (out / "distilkit_recipe.yaml").read_text() == recipe  # still the recipe that made the run
