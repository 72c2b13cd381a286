"""Structural FFN-neuron pruning, neuron importance, saving/reloading and pruning while training, on tiny models."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_pruning import FAMILY_ATTN, assert_same_outputs, labelled_batch, make, outputs, padded_batch
from test_saving import run_plain_transformers
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

import distilkit
from distilkit import DistillationConfig, DistillationTrainer
from distilkit.pruning import (
    PruningCallback,
    compute_ffn_importance,
    kept_heads,
    kept_neurons,
    prune_ffn,
    prune_ffn_to_fraction,
    prune_heads,
)
from distilkit.quantization import quantize_int8

WIDTH = 64  # tiny_config: intermediate size 2 * hidden

# family -> (layer list under base_model, FFN input Linear(s), FFN output Linear). Written out here rather than read
# from distilkit.architectures so the zeroed reference does not depend on the code under test.
FFN = {
    "bert": ("encoder.layer", ("intermediate.dense",), "output.dense"),
    "roberta": ("encoder.layer", ("intermediate.dense",), "output.dense"),
    "distilbert": ("transformer.layer", ("ffn.lin1",), "ffn.lin2"),
    "mpnet": ("encoder.layer", ("intermediate.dense",), "output.dense"),
    "llama": ("layers", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
    "qwen2": ("layers", ("mlp.gate_proj", "mlp.up_proj"), "mlp.down_proj"),
}


def ffn_linear(model, index: int, which: str) -> torch.nn.Linear:
    layers, inputs, output = FFN[model.config.model_type]
    layer = model.base_model.get_submodule(layers)[index]
    return layer.get_submodule(output if which == "out" else inputs[int(which)])


def zeroed_reference(model, neurons: dict[int, list[int]]):
    """A copy of the unpruned model in which the listed neurons contribute nothing: their input columns of the
    FFN's output projection are zero. This is what structural FFN pruning must reproduce."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for index, ns in neurons.items():
            ffn_linear(reference, index, "out").weight[:, ns] = 0
    return reference


@pytest.mark.parametrize("family,attn", FAMILY_ATTN)
def test_pruned_ffn_matches_zeroed_reference(family, attn):
    model = make(family, attn)
    # Layer 0 loses some neurons; layer 1 loses its whole FFN.
    neurons = {0: [0, 5, 17, 63], 1: list(range(WIDTH))}
    reference = zeroed_reference(model, neurons)
    unpruned = copy.deepcopy(model)
    batch = padded_batch()

    prune_ffn(model, neurons)

    kept = [n for n in range(WIDTH) if n not in neurons[0]]
    assert kept_neurons(model) == [kept, []]
    assert ffn_linear(model, 0, "0").out_features == ffn_linear(model, 0, "out").in_features == len(kept)
    assert ffn_linear(model, 1, "out").in_features == 0
    assert all(ffn_linear(model, 1, str(i)).out_features == 0 for i in range(len(FFN[family][1])))
    assert model.config.distilkit["ffn_pruning"] == {"kept_neurons": [kept, []]}
    assert_same_outputs(model, reference, batch)
    # The comparison is sensitive: the pruned neurons did matter.
    for got, before in zip(outputs(model, batch)[2:], outputs(unpruned, batch)[2:]):
        assert (got - before).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["bert", "distilbert", "llama"])
def test_repeated_ffn_pruning_uses_original_numbering(family):
    model = make(family)
    steps = [{0: [1, 2]}, {0: [3], 1: [10]}, {0: [1, 2, 3, 4]}]  # the last repeats neurons already gone
    expected = {0: [1, 2, 3, 4], 1: [10]}
    reference = zeroed_reference(model, expected)
    for step in steps:
        prune_ffn(model, step)
    assert kept_neurons(model) == [[n for n in range(WIDTH) if n not in expected[layer]] for layer in (0, 1)]
    assert_same_outputs(model, reference, padded_batch())


def test_invalid_neuron_requests_are_refused():
    model = make("bert")
    with pytest.raises(ValueError, match="Neurons \\[64\\] of layer 0 do not exist"):
        prune_ffn(model, {0: [64]})
    with pytest.raises(ValueError, match="Layer 2 does not exist"):
        prune_ffn(model, {2: [0]})
    with pytest.raises(TypeError, match="neurons_to_prune must map"):
        prune_ffn(model, [0, 1])
    assert kept_neurons(model) == [list(range(WIDTH))] * 2


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_a_zeroed_neuron_gets_the_lowest_importance(family, method):
    model = make(family)
    with torch.no_grad():
        ffn_linear(model, 0, "out").weight[:, 7] = 0
        if method == "magnitude":  # a neuron's magnitude counts its input rows too
            for i in range(len(FFN[family][1])):
                ffn_linear(model, 0, str(i)).weight[7] = 0
    prune_ffn(model, {1: [3]})
    importance = compute_ffn_importance(model, [labelled_batch(family)], method)
    assert importance.shape == (2, WIDTH)
    assert importance[1, 3].isnan() and importance[0].isnan().sum() == 0
    assert importance[0, 7] == importance[0].min() and importance[0, 7] < 1e-6
    assert importance[0].norm() == pytest.approx(1.0)  # normalised per layer


def test_prune_ffn_to_fraction_counts_earlier_pruning():
    model = make("bert")
    prune_ffn(model, {0: list(range(10))})
    _, removed = prune_ffn_to_fraction(model, [labelled_batch("bert")], fraction=0.25)
    assert sum(len(ns) for ns in removed.values()) == 32 - 10
    assert sum(len(ns) for ns in kept_neurons(model)) == 2 * WIDTH - 32
    assert prune_ffn_to_fraction(model, None, fraction=0.25, method="magnitude")[1] == {}


def logits(model, batch):
    with torch.no_grad():
        return model(**batch).logits


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "qwen2"])
def test_saved_ffn_pruned_model_reloads_with_distilkit(tmp_path, family):
    model = make(family)
    prune_ffn(model, {0: [1, 2, 40], 1: list(range(WIDTH))})
    distilkit.save_pretrained(model, tmp_path)
    reloaded = distilkit.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert kept_neurons(reloaded) == kept_neurons(model)
    assert torch.equal(logits(reloaded, padded_batch()), logits(model, padded_batch()))


def test_heads_ffn_and_int8_together_save_and_reload(tmp_path):
    model = make("bert")
    prune_heads(model, {0: [1], 1: [0, 1, 2, 3]})
    prune_ffn(model, {0: [1, 2, 3], 1: [5]})
    quantize_int8(model)
    distilkit.save_pretrained(model, tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())["distilkit"]
    assert set(record) == {"pruning", "ffn_pruning", "quantization"}
    reloaded = distilkit.from_pretrained(tmp_path, attn_implementation="eager").eval()
    assert kept_heads(reloaded) == kept_heads(model) and kept_neurons(reloaded) == kept_neurons(model)
    assert torch.equal(logits(reloaded, padded_batch()), logits(model, padded_batch()))


@pytest.mark.slow
@pytest.mark.parametrize("family,heads", [("bert", True), ("distilbert", True), ("llama", False)])
def test_ffn_pruned_folder_loads_with_transformers_alone(tmp_path, family, heads):
    model = make(family)
    if heads:
        prune_heads(model, {0: [1]})
    prune_ffn(model, {0: [1, 2, 3], 1: list(range(WIDTH))})
    distilkit.save_pretrained(model, tmp_path / "pruned")
    batch = padded_batch()
    torch.save({"batch": batch, "logits": logits(model, batch)}, tmp_path / "expected.pt")
    auto = "AutoModelForCausalLM" if family == "llama" else "AutoModelForSequenceClassification"
    result = run_plain_transformers(f"""
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        model = transformers.{auto}.from_pretrained(
            {str(tmp_path / "pruned")!r}, trust_remote_code=True, attn_implementation="eager").eval()
        with torch.no_grad():
            print("equal", torch.equal(model(**expected["batch"]).logits, expected["logits"]))
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "equal True" in result.stdout


@pytest.mark.parametrize("family,task", [("bert", "seq"), ("llama", "causal")])
def test_distillation_trainer_prunes_ffn_while_training_and_the_saved_model_reloads(tmp_path, family, task):
    args = DistillationConfig(output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True, alpha=0.0,
                              max_steps=6, per_device_train_batch_size=4, learning_rate=1e-3, logging_steps=1,
                              save_strategy="no", disable_tqdm=True, prune_ffn_fraction=0.5, prune_every_steps=2,
                              prune_num_prunes=2, prune_batches=1)
    trainer = DistillationTrainer(model=tiny_model(task, family), args=args, train_dataset=tiny_dataset(task, n=24),
                                  data_collator=pad_collator)
    trainer.train()

    history = [e for e in trainer.state.log_history if "pruning/removed_neurons" in e]
    assert [(e["step"], e["pruning/ffn_pruned_fraction"], e["pruning/neurons_kept"]) for e in history] == [
        (2, 0.25, 96), (4, 0.5, 64)]
    assert "pruning/removed_heads" not in history[0]  # heads untouched: prune_heads_fraction is 0
    assert sum(map(len, kept_neurons(trainer.model))) == 64
    assert sum(map(len, kept_heads(trainer.model))) == 8
    # The optimizer trains exactly the model's current parameters and kept its state across pruning.
    optimizer_params = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in trainer.model.parameters()}
    assert all(int(trainer.optimizer.state[p]["step"]) == 6 for p in trainer.model.parameters())

    trainer.save_model(str(tmp_path / "final"))
    reloaded = distilkit.from_pretrained(tmp_path / "final")
    reloaded.set_attn_implementation(trainer.model.config._attn_implementation)
    assert kept_neurons(reloaded) == kept_neurons(trainer.model)
    batch = pad_collator([tiny_dataset(task, n=3, seed=1)[i] for i in range(3)])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(reloaded(**batch).logits, trainer.model(**batch).logits)


def test_callback_prunes_heads_and_ffn_together_and_resumes_from_a_checkpoint(tmp_path):
    def run(model, output, resume=None):
        args = DistillationConfig(output_dir=str(output), report_to="none", use_cpu=True, alpha=0.0, max_steps=6,
                                  per_device_train_batch_size=4, learning_rate=1e-3, save_strategy="steps",
                                  save_steps=3, disable_tqdm=True, prune_heads_fraction=0.5,
                                  prune_ffn_fraction=0.25, prune_every_steps=2, prune_num_prunes=2, prune_batches=1)
        trainer = DistillationTrainer(model=model, args=args, train_dataset=tiny_dataset("seq", n=24),
                                      data_collator=pad_collator)
        trainer.train(resume_from_checkpoint=resume)
        return trainer

    straight = run(tiny_model("seq", "bert"), tmp_path / "run")
    assert sum(map(len, kept_heads(straight.model))) == 4 and sum(map(len, kept_neurons(straight.model))) == 96
    checkpoint = tmp_path / "run" / "checkpoint-3"
    # The model the run started with: resuming prunes it like the checkpoint's (heads and neurons) before loading.
    resumed = run(tiny_model("seq", "bert"), tmp_path / "again", resume=str(checkpoint))
    assert kept_heads(resumed.model) == kept_heads(straight.model)
    assert kept_neurons(resumed.model) == kept_neurons(straight.model)
    for a, b in zip(resumed.model.parameters(), straight.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)


def test_invalid_ffn_fractions_are_refused():
    with pytest.raises(ValueError, match=r"prune_ffn_fraction must be in \[0, 1\) \(share of FFN neurons"):
        DistillationConfig(output_dir="unused", report_to="none", prune_ffn_fraction=1.0)
    with pytest.raises(ValueError, match=r"ffn_target_fraction must be in \[0, 1\]"):
        PruningCallback(0.5, prune_every_steps=2, ffn_target_fraction=-0.1)
    with pytest.raises(ValueError, match=r"target_fraction must be in \(0, 1\]"):
        PruningCallback(0.0, prune_every_steps=2)
    assert PruningCallback(0.0, prune_every_steps=2, ffn_target_fraction=0.5).ffn_target_fraction == 0.5


def test_the_model_card_recipe_names_the_ffn_target():
    from distilkit.model_card.recipe import pruning_callback_recipe

    recipe = pruning_callback_recipe(PruningCallback(0.25, prune_every_steps=2, ffn_target_fraction=0.5))
    assert recipe["target fraction of heads pruned"] == 0.25
    assert recipe["target fraction of FFN neurons pruned"] == 0.5
    assert "target fraction of FFN neurons pruned" not in pruning_callback_recipe(PruningCallback(0.25, 2))
