"""Choosing by predicted accuracy: the quality probe (drop-one-layer ranking, per-layer importance, KL score), the
plan's choice among the shapes within the budget, the latency screening of a fine grid, and pruning while
distilling to exactly the planned per-layer counts."""

from __future__ import annotations

import json

import pytest
import torch
from helpers.fake_timing import timing_by
from helpers.tiny_models import pad_collator, tiny_config, tiny_dataset, tiny_model

import distilkit
import distilkit.measure
from distilkit import DistillationConfig, DistillationTrainer
from distilkit.architectures import get_architecture
from distilkit.compress import CompressArguments, MachineSettings, ModelShape, Plan, make_plan
from distilkit.compress.plan import cost_of, fits
from distilkit.compress.quality import QualityProbe, only_layers
from distilkit.pruning import PruningCallback, kept_heads, kept_neurons

MACHINE = MachineSettings(batch_size=2, seq_len=12, threads=1)
NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def fake_ms(shape: ModelShape) -> float:
    layers = sum(h + f / 8 for h, f in zip(shape.heads, shape.ffn))
    return 1 + layers * (0.5 if shape.int8 else 1)


@pytest.fixture(autouse=True)
def fake_latency(monkeypatch):
    """Latency read from the shapes on a fake, quiet clock (helpers.fake_timing); the list of {name: model} dicts
    each measuring call timed."""
    calls = []
    monkeypatch.setattr(distilkit.measure, "interleaved_timing",
                        timing_by(lambda m: fake_ms(ModelShape.of(m)), calls=calls))
    return calls


def teacher(layers: int = 3, seed: int = 0):
    # Larger initial weights than the default 0.02: outputs that depend on every unit (not near-uniform logits).
    return tiny_model("seq", "bert", seed=seed, layers=layers, num_labels=3, initializer_range=0.3,
                      **NO_DROPOUT).eval()


def probe_of(model, rows: int = 16) -> QualityProbe:
    return QualityProbe.build(model, tiny_dataset("seq", rows), pad_collator, score_rows=8, importance_rows=8,
                              batch_size=4)


# ---- the probe ----


def test_a_layer_that_changes_nothing_is_removed_first_and_the_kept_layers_are_nested():
    model = teacher(layers=3)
    layer = model.bert.encoder.layer[1]
    with torch.no_grad():  # layer 1 adds nothing to the residual stream: removing it changes no output
        layer.attention.output.dense.weight.zero_()
        layer.attention.output.dense.bias.zero_()
        layer.output.dense.weight.zero_()
        layer.output.dense.bias.zero_()
    probe = probe_of(model)
    assert probe.removal_order[0] == 1 and sorted(probe.removal_order) == [0, 1, 2]
    assert probe.keep_layers(2) == [0, 2] and set(probe.keep_layers(1)) <= set(probe.keep_layers(2))
    assert len(model.bert.encoder.layer) == 3 and model.config.num_hidden_layers == 3  # put back


def reference_removal_order(probe: QualityProbe) -> list[int]:
    """The greedy ranking computed the plain way: every trial runs the whole model with one layer fewer."""
    kept, order = list(range(probe.num_layers)), []
    while len(kept) > 1:
        costs = {}
        for layer in kept:
            with only_layers(probe.teacher, [i for i in kept if i != layer]):
                costs[layer] = probe.divergence(probe.teacher)
        order.append(min(kept, key=lambda i: (costs[i], i)))
        kept.remove(order[-1])
    return order + kept


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "llama", "qwen2"])
def test_the_ranking_from_kept_layer_inputs_equals_running_every_trial_in_full(family):
    model = tiny_model("seq", family, seed=3, layers=5, num_labels=3, initializer_range=0.3).eval()
    probe = QualityProbe.build(model, tiny_dataset("seq", 24), pad_collator, score_rows=12, importance_rows=8,
                               batch_size=4)
    assert probe.removal_order == reference_removal_order(probe)
    assert probe.score(ModelShape((2, 2), (32, 32))) > 0  # a layer subset runs (decoders: without a key/value cache)
    assert model.config.num_hidden_layers == 5 and not any(  # put back, no hook left behind
        layer._forward_pre_hooks for layer in model.base_model.get_submodule(get_architecture(model).layers))


def test_the_probes_rows_split_into_importance_score_and_the_rest():
    from distilkit.compress.quality import split_rows

    importance, score, rest = split_rows(20, 8, 8, seed=0)
    assert (len(importance), len(score), len(rest)) == (8, 8, 4)
    assert sorted(importance + score + rest) == list(range(20))
    assert split_rows(20, 8, 8, seed=0) == (importance, score, rest) != split_rows(20, 8, 8, seed=1)
    importance, score, rest = split_rows(8, 8, 4, seed=0)  # too few rows: the score rows overlap, nothing is left
    assert len(importance) == 8 and set(score) <= set(importance) and len(score) == 4 and rest == []


def test_a_known_layer_ranking_is_used_as_given_and_a_wrong_one_refused():
    model = teacher(layers=3)
    probe = QualityProbe.build(model, tiny_dataset("seq", 16), pad_collator, score_rows=8, importance_rows=8,
                               batch_size=4, removal_order=[2, 0, 1])
    assert probe.removal_order == [2, 0, 1] and probe.keep_layers(2) == [0, 1]
    with pytest.raises(ValueError, match=r"each of the teacher's 3 layers once; got \[0, 0, 1\]"):
        QualityProbe.build(model, tiny_dataset("seq", 16), pad_collator, score_rows=8, importance_rows=8,
                           batch_size=4, removal_order=[0, 0, 1])


def test_only_layers_runs_the_subset_and_puts_the_model_back():
    model = teacher(layers=3)
    ids = torch.tensor([[5, 6, 7, 8]])
    full = model(input_ids=ids).logits
    with only_layers(model, [0, 2]):
        assert len(model.bert.encoder.layer) == 2
        subset = model(input_ids=ids).logits
    assert not torch.allclose(subset, full) and torch.equal(model(input_ids=ids).logits, full)


def test_the_teacher_scores_zero_and_keeping_fewer_units_scores_worse():
    model = teacher(layers=2)
    probe = probe_of(model)
    assert probe.score(ModelShape((4, 4), (64, 64))) == pytest.approx(0.0, abs=1e-6)
    nested = [ModelShape((4, 4), (64, 64)), ModelShape((4, 4), (32, 32)), ModelShape((2, 2), (32, 32)),
              ModelShape((1, 1), (8, 8))]
    scores = [probe.score(shape) for shape in nested]
    assert scores[1:] == sorted(scores[1:]) and scores[1] > scores[0] + 1e-4 and scores[-1] > 10 * scores[1]


def test_kept_units_are_each_layers_most_important():
    probe = probe_of(teacher(layers=2))
    heads, neurons = probe.kept_units(ModelShape((2, 2), (16, 16)), [0, 1])
    for layer in (0, 1):
        top = set(torch.argsort(probe.head_importance[layer], descending=True)[:2].tolist())
        assert set(heads[layer]) == top
        assert set(neurons[layer]) == set(torch.argsort(probe.ffn_importance[layer], descending=True)[:16].tolist())


# ---- the plan ----


class FakeProbe:
    """Scores read from a table (the rest worst); layers kept in reverse order."""

    def __init__(self, best: ModelShape):
        self.best = best
        self.scored: list[ModelShape] = []

    def score(self, shape: ModelShape) -> float:
        self.scored.append(shape)
        return 0.0 if (shape.heads, shape.ffn) == (self.best.heads, self.best.ffn) else 1.0 + shape.num_layers

    def keep_layers(self, count: int) -> list[int]:
        return list(range(4 - count, 4))


def arguments(tmp_path, **target) -> CompressArguments:
    return CompressArguments(**target, candidate_layer_fractions=[1.0, 0.75, 0.5, 0.25],
                             candidate_head_fractions=[1.0, 0.5], candidate_ffn_fractions=[1.0, 0.5, 0.25],
                             latency_cache=str(tmp_path / "latency.json"))


def test_the_plan_keeps_the_best_score_within_the_budget_not_the_most_parameters(tmp_path):
    config = tiny_config("bert", layers=4, num_labels=2)
    by_parameters = make_plan(config, arguments(tmp_path, target_speedup=2.0), MACHINE, False)
    best = ModelShape((4,) * 2, (32,) * 2)  # 2 layers: fewer parameters than the parameter rule's choice
    probe = FakeProbe(best)
    plan = make_plan(config, arguments(tmp_path, target_speedup=2.0), MACHINE, False, probe=probe)
    assert (plan.shape.heads, plan.shape.ffn) == (best.heads, best.ffn) and plan.chooser == "quality"
    assert plan.chosen_candidate.parameters < by_parameters.chosen_candidate.parameters
    assert plan.keep_layers == (2, 3) and plan.chosen_candidate.latency_ms is not None
    assert fits(cost_of(plan.target, plan.chosen_candidate), plan.target.budget(plan.teacher_candidate.latency_ms))
    # Only the largest shape of each depth and precision is scored, and no shape twice.
    assert len(probe.scored) == len({(s.heads, s.ffn) for s in probe.scored}) < len(plan.candidates)
    scored = {c.shape.key() for c in plan.candidates if c.score is not None}
    assert plan.chosen in scored and f"| {plan.chosen} |" in plan.to_markdown()
    assert "Score: KL(teacher" in plan.to_markdown()


def test_a_best_scored_shape_predicted_just_inside_the_budget_is_measured_and_chosen(tmp_path, monkeypatch):
    """No edge candidates measured while screening: the best-scored shape is one the plan has only predicted, within
    the budget but above 85% of it (where plans used to stop trusting a prediction). It is measured, then chosen."""
    from distilkit.compress import plan as plan_module

    monkeypatch.setattr(plan_module, "MAX_EDGE_MEASURED", 0)
    config = tiny_config("bert", layers=4, num_labels=2)
    with monkeypatch.context() as patch:
        patch.setattr(plan_module, "MAX_CHOICE_MEASURED", 0)
        screened = make_plan(config, arguments(tmp_path / "screened", target_speedup=2.5), MACHINE, False)
    budget = screened.target.budget(screened.teacher_candidate.latency_ms)
    within = [c for c in screened.candidates if c.predicted_ms is not None and c.predicted_ms <= budget]
    best = next(c.shape for c in plan_module._largest_within(within)
                if c.latency_ms is None and c.predicted_ms > 0.85 * budget and c.shape.int8)
    probe = FakeProbe(best)
    plan = make_plan(config, arguments(tmp_path / "probe", target_speedup=2.5), MACHINE, False, probe=probe)
    assert plan.shape == best and plan.chosen_candidate.latency_ms is not None
    assert fits(cost_of(plan.target, plan.chosen_candidate), budget)


@pytest.mark.parametrize("speedup", [1.5, 2.0, 3.0, 5.0])
def test_screening_the_grid_chooses_as_measuring_every_candidate_would(tmp_path, speedup, fake_latency):
    config = tiny_config("bert", layers=4, num_labels=2)
    args = arguments(tmp_path, target_speedup=speedup)
    plan = make_plan(config, args, MACHINE, False)
    measured = [c for c in plan.candidates if c.latency_ms is not None]
    assert len(measured) < len(plan.candidates)  # the rest were predicted
    teacher_ms = fake_ms(plan.teacher_candidate.shape)
    budget = teacher_ms / speedup * (1 - args.target_margin)
    every = [c for c in plan.candidates if fake_ms(c.shape) <= budget]
    brute_force = max(every, key=lambda c: (c.parameters, c.shape.num_layers, not c.shape.int8,
                                             not c.shape.int8_embeddings))
    assert plan.chosen == brute_force.shape.key()


def test_the_teachers_twin_is_timed_once_and_every_group_against_the_small_anchor(tmp_path, fake_latency):
    from distilkit.compress.plan import anchor_shape

    config = tiny_config("bert", layers=4, num_labels=2)
    plan = make_plan(config, arguments(tmp_path, target_speedup=2.0), MACHINE, False)
    shapes = [c.shape for c in plan.candidates]
    anchor = anchor_shape(shapes)
    assert anchor == ModelShape((2,) * 4, (16,) * 4)  # the most layers, the fewest heads and neurons, float
    timed = [[ModelShape.of(m) for m in call.values()] for call in fake_latency]
    assert timed[0] == [anchor, plan.teacher_candidate.shape]  # the calibration: the anchor with the teacher
    assert all(anchor in group and plan.teacher_candidate.shape not in group for group in timed[1:])
    # Latencies are ratios to the anchor scaled by the anchor's calibration: on a quiet fake clock, exact.
    for c in plan.candidates:
        if c.latency_ms is not None:
            assert c.latency_ms == pytest.approx(fake_ms(c.shape), rel=1e-9)
    assert plan.reference == anchor.key() and "reference twin (L4-h2.2.2.2-f16.16.16.16-float)" in plan.to_markdown()
    assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))).reference == anchor.key()
    # A plan saved before the reference was recorded was timed against the teacher's twin, and says so.
    old = plan.to_dict()
    del old["reference"]
    assert "relative to the teacher's twin measured in the same group" in Plan.from_dict(old).to_markdown()
    assert anchor_shape([plan.teacher_candidate.shape]) == plan.teacher_candidate.shape


def test_a_six_layer_teacher_gets_every_depth_and_twelve_layers_the_fine_grid():
    from distilkit.compress.plan import plan_shapes

    default = CompressArguments(target_speedup=2.0)
    six = {s.num_layers for s in plan_shapes(tiny_config("bert", layers=6, num_labels=2), default)}
    twelve = plan_shapes(tiny_config("bert", layers=12, heads=12, hidden=48, num_labels=2), default)
    assert six == {1, 2, 3, 4, 5, 6}
    assert {s.num_layers for s in twelve} == {12, 10, 8, 6, 4, 3, 2}
    assert {s.heads[0] for s in twelve} == {12, 9, 6, 4, 3}
    assert {s.ffn[0] for s in twelve} == {96, 72, 48, 32, 24, 12}  # FFN 2 x hidden = 96


def test_sizes_and_parameters_solved_from_a_few_twins_are_exact(tmp_path):
    from distilkit.compress.plan import _sized, plan_shapes
    from distilkit.compress.twin import header_bytes, random_twin, size_bytes
    from distilkit.measure import count_parameters

    config = tiny_config("bert", layers=4, num_labels=2)
    candidates = _sized(config, plan_shapes(config, CompressArguments(target_speedup=2.0)))
    for c in candidates[::7]:
        weights, header = size_bytes(config, c.shape), header_bytes(config, c.shape)
        assert abs(round(c.size_mb * 1e6) - (weights + header)) <= 256  # weights exact, the header's JSON estimated
        assert c.parameters == count_parameters(random_twin(config, ModelShape(c.shape.heads, c.shape.ffn), "meta"))
    # What a saved file weighs, header included.
    shape = candidates[5].shape
    distilkit.save_pretrained(random_twin(config, shape), tmp_path / "saved")
    assert abs(candidates[5].size_mb - distilkit.measure.folder_size_mb(tmp_path / "saved")) * 1e6 <= 256


# ---- pruning to the planned per-layer counts ----


def test_the_callback_prunes_to_exact_per_layer_counts_gradually(tmp_path):
    student = tiny_model("seq", "bert", seed=2, layers=2, num_labels=3)
    callback = PruningCallback(target_fraction=0.0, prune_every_steps=1, num_prunes=2, method="magnitude",
                               head_counts=[1, 3], ffn_counts=[16, 48])
    args = DistillationConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4,
                              learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True)
    trainer = DistillationTrainer(student, args, teacher_model=tiny_model("seq", "bert", seed=1, num_labels=3),
                                  train_dataset=tiny_dataset("seq", 16), data_collator=pad_collator)
    trainer.add_callback(callback)
    trainer.train()
    assert [len(k) for k in kept_heads(student)] == [1, 3]
    assert [len(k) for k in kept_neurons(student)] == [16, 48]
    # Step 1 went halfway in every layer: 4 -> 3 (of 1) and 4 (of 3) heads; 64 -> 40 and 56 neurons.
    assert [entry["pruning/heads_kept"] for entry in callback.history] == [6, 4]
    assert [entry["pruning/neurons_kept"] for entry in callback.history] == [96, 64]


def test_counts_and_fractions_for_the_same_units_are_refused():
    with pytest.raises(ValueError, match="not both"):
        PruningCallback(target_fraction=0.5, prune_every_steps=1, head_counts=[1, 1])


def test_compress_makes_exactly_the_planned_shape_with_the_probes_layers(tmp_path):
    from distilkit.compress import compress

    model = tiny_model("seq", "bert", layers=4, num_labels=3)
    args = CompressArguments(target_speedup=2.5, candidate_layer_fractions=[1.0, 0.5],
                             candidate_head_fractions=[1.0, 0.5], candidate_ffn_fractions=[1.0, 0.5],
                             candidate_int8=False, latency_cache=str(tmp_path / "latency.json"), plan_score_rows=8)
    training = DistillationConfig(output_dir=str(tmp_path / "unused"), max_steps=2, per_device_train_batch_size=4,
                                  prune_every_steps=1, prune_heads_method="magnitude", learning_rate=1e-3,
                                  report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
    result = compress(model, None, tiny_dataset(n=16), None, args, training, tmp_path / "out", machine=MACHINE,
                      data_collator=pad_collator, progress=False)
    plan = result.plan
    assert plan.chooser == "quality" and plan.chosen_candidate.score is not None
    final = distilkit.from_pretrained(tmp_path / "out" / "student")
    assert ModelShape.of(final).heads == plan.shape.heads and ModelShape.of(final).ffn == plan.shape.ffn
    assert len(plan.keep_layers) == plan.shape.num_layers



def test_plan_by_parameters_builds_no_probe_and_a_saved_plan_of_the_other_rule_is_not_reused(tmp_path, monkeypatch):
    """plan_by='parameters': no quality probe is built (no layer ranking, no scores); the plan keeps the most
    parameters within the budget and evenly spaced layers. A plan.json saved by the other rule is not reused."""
    from distilkit.compress import compress, plan_compression
    from distilkit.compress import quality
    from distilkit.compress.plan import saved_plan_matches

    monkeypatch.setattr(quality.QualityProbe, "build", classmethod(lambda cls, *a, **k: pytest.fail("probe built")))
    model = tiny_model("seq", "bert", layers=4, num_labels=3)

    def arguments(plan_by: str) -> CompressArguments:
        return CompressArguments(target_speedup=2.5, candidate_layer_fractions=[1.0, 0.5],
                                 candidate_head_fractions=[1.0, 0.5], candidate_ffn_fractions=[1.0, 0.5],
                                 candidate_int8=False, latency_cache=str(tmp_path / "latency.json"),
                                 plan_score_rows=8, plan_by=plan_by)

    training = DistillationConfig(output_dir=str(tmp_path / "unused"), max_steps=2, per_device_train_batch_size=4,
                                  prune_every_steps=1, prune_heads_method="magnitude", learning_rate=1e-3,
                                  report_to="none", use_cpu=True, save_strategy="no", disable_tqdm=True)
    result = compress(model, None, tiny_dataset(n=16), None, arguments("parameters"), training, tmp_path / "out",
                      machine=MACHINE, data_collator=pad_collator, progress=False)
    plan = result.plan
    budget = plan.target.budget(plan.teacher_candidate.latency_ms)
    within = [c for c in plan.candidates if plan.cost(c) is not None and plan.cost(c) <= budget]
    assert plan.chooser == "parameters" and all(c.score is None for c in plan.candidates)
    assert plan.chosen_candidate.parameters == max(c.parameters for c in within)
    assert plan.shape.num_layers == 2 and plan.keep_layers == (0, 2)  # evenly spaced, not ranked by a probe
    assert not saved_plan_matches(plan, model.config, arguments("quality"), MACHINE)
    assert saved_plan_matches(plan, model.config, arguments("parameters"), MACHINE)
    monkeypatch.undo()
    # Planned again by the score, the folder's student (made for the other plan) is refused, not mixed in.
    with pytest.raises(ValueError, match="student was made by a run of other settings or inputs"):
        plan_compression(model, tiny_dataset(n=16), arguments("quality"), training, tmp_path / "out",
                         machine=MACHINE, data_collator=pad_collator, progress=False)


def test_a_teacher_in_training_mode_is_scored_without_dropout():
    model = tiny_model("seq", "bert", seed=0, layers=2, num_labels=3, initializer_range=0.3).train()
    probe = probe_of(model)
    assert model.training  # left as it came
    assert probe.score(ModelShape((4, 4), (64, 64))) == pytest.approx(0.0, abs=1e-6)


def test_planning_another_target_for_the_same_teacher_and_data_ranks_the_layers_once(tmp_path, monkeypatch):
    from distilkit.compress import plan_compression
    from distilkit.compress import quality

    built = []
    real_build = quality.QualityProbe.build.__func__

    def counting_build(cls, *args, **kwargs):
        built.append(args[0])
        return real_build(cls, *args, **kwargs)

    monkeypatch.setattr(quality.QualityProbe, "build", classmethod(counting_build))
    model, data = teacher(layers=3), tiny_dataset("seq", 16)
    training = DistillationConfig(output_dir=str(tmp_path / "unused"), max_steps=2, per_device_train_batch_size=4,
                                  prune_every_steps=1, report_to="none", use_cpu=True, save_strategy="no")

    def plan(target, dataset=data, collator=pad_collator, seed=0):
        args = CompressArguments(target_speedup=target, candidate_layer_fractions=[1.0, 2 / 3, 1 / 3],
                                 candidate_head_fractions=[1.0, 0.5], candidate_ffn_fractions=[1.0, 0.5],
                                 candidate_int8=False, latency_cache=str(tmp_path / "latency.json"), plan_score_rows=8)
        training.seed = seed
        return plan_compression(model, dataset, args, training, tmp_path / f"out{target}", machine=MACHINE,
                                data_collator=collator, progress=False)

    first, second = plan(1.5), plan(2.5)
    assert len(built) == 1 and first.keep_layers != () and second.chooser == "quality"
    plan(2.5, seed=1)  # another seed draws other rows: built again
    assert len(built) == 2
    with torch.no_grad():  # other weights: built again, even for the same object
        model.classifier.bias.add_(1.0)
    plan(2.5, seed=1)
    assert len(built) == 3
    plan(2.5, dataset=tiny_dataset("seq", 16, seed=5), seed=1)  # other data
    assert len(built) == 4
    plan(2.5, dataset=tiny_dataset("seq", 16, seed=5), seed=1, collator=lambda rows: pad_collator(rows))
    assert len(built) == 5  # another collate function (functions are told apart by identity, not attributes)
