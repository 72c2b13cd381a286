"""Structural head pruning, head importance and saving/reloading pruned models, on tiny random models."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
import transformers as tf
from helpers.tiny_models import VOCAB, tiny_model

import distilkit
from distilkit.pruning import (
    compute_head_importance,
    kept_heads,
    prune_heads,
    prune_heads_to_fraction,
    removed_heads,
)
from distilkit.pruning.remote_code import add_remote_code

HEADS = 4  # tiny_config default: hidden 32, 2 layers, 4 heads (head_dim 8); GQA families have 2 KV heads
HEAD_DIM = 8

# family -> (task, layer list under base_model, q/k/v/o paths inside a layer). Written out here rather than
# read from distilkit.architectures so the zeroed reference does not depend on the code under test.
FAMILIES = {
    "bert": ("seq", "encoder.layer", "attention.self.query", "attention.self.key", "attention.self.value",
             "attention.output.dense"),
    "roberta": ("seq", "encoder.layer", "attention.self.query", "attention.self.key", "attention.self.value",
                "attention.output.dense"),
    "distilbert": ("seq", "transformer.layer", "attention.q_lin", "attention.k_lin", "attention.v_lin",
                   "attention.out_lin"),
    "mpnet": ("seq", "encoder.layer", "attention.attn.q", "attention.attn.k", "attention.attn.v", "attention.attn.o"),
    "llama": ("causal", "layers", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
    "qwen2": ("causal", "layers", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"),
}
GQA = {"llama", "qwen2"}
# MPNet computes attention by hand (no sdpa implementation in transformers), so it runs eager only.
FAMILY_ATTN = [(f, a) for f in FAMILIES for a in ("eager", "sdpa") if not (f == "mpnet" and a == "sdpa")]


def make(family: str, attn: str = "eager", seed: int = 0):
    # Weights 10x the default scale, so that heads change the outputs clearly (not by 1e-4) and an absolute
    # tolerance of 1e-5 is a real test.
    return tiny_model(FAMILIES[family][0], family, seed=seed, attn=attn, initializer_range=0.2).eval()


def layer(model, index: int):
    return model.base_model.get_submodule(FAMILIES[model.config.model_type][1])[index]


def proj(model, index: int, which: str) -> torch.nn.Linear:
    paths = dict(zip("qkvo", FAMILIES[model.config.model_type][2:]))
    return layer(model, index).get_submodule(paths[which])


def zeroed_reference(model, heads: dict[int, list[int]]):
    """A copy of the unpruned model in which the listed heads contribute nothing: their slice of the output
    projection's input columns is zero. This is what structural pruning must reproduce."""
    reference = copy.deepcopy(model)
    with torch.no_grad():
        for index, hs in heads.items():
            for h in hs:
                proj(reference, index, "o").weight[:, h * HEAD_DIM : (h + 1) * HEAD_DIM] = 0
    return reference


def padded_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (3, 10), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 6:] = 0  # right padding
    attention_mask[2, :4] = 0  # left padding
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def outputs(model, batch) -> list[torch.Tensor]:
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return [out.logits, *out.hidden_states]


def assert_same_outputs(model, reference, batch, atol=1e-5):
    for got, want in zip(outputs(model, batch), outputs(reference, batch), strict=True):
        torch.testing.assert_close(got, want, atol=atol, rtol=0)


def labelled_batch(family: str, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = padded_batch(seed)
    if FAMILIES[family][0] == "causal":
        batch["labels"] = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    else:
        batch["labels"] = torch.tensor([0, 1, 2])
    return batch


@pytest.mark.parametrize("family,attn", FAMILY_ATTN)
def test_pruned_model_matches_zeroed_reference(family, attn):
    model = make(family, attn)
    # Layer 0 loses one head (a whole key/value group under GQA); layer 1 loses all its heads.
    heads = {0: [2, 3] if family in GQA else [1], 1: [0, 1, 2, 3]}
    reference = zeroed_reference(model, heads)
    unpruned = copy.deepcopy(model)
    batch = padded_batch()

    prune_heads(model, heads)

    assert model.config._attn_implementation == attn
    assert kept_heads(model) == [[0, 1] if family in GQA else [0, 2, 3], []]
    kept = len(kept_heads(model)[0])
    assert proj(model, 0, "q").out_features == kept * HEAD_DIM
    assert proj(model, 0, "o").in_features == kept * HEAD_DIM
    assert proj(model, 0, "k").out_features == (1 if family in GQA else kept) * HEAD_DIM
    assert proj(model, 1, "q").out_features == proj(model, 1, "o").in_features == 0
    assert_same_outputs(model, reference, batch)
    # The comparison is sensitive: the pruned heads did matter.
    for got, before in zip(outputs(model, batch)[2:], outputs(unpruned, batch)[2:]):  # outputs of layers 0, 1
        assert (got - before).abs().max() > 1e-2


@pytest.mark.parametrize("family", ["bert", "mpnet", "llama"])
def test_repeated_pruning_uses_original_numbering(family):
    model = make(family)
    if family in GQA:
        steps = [{0: [0, 1]}, {1: [2, 3]}, {0: [0, 1]}]
        expected_removed, expected_kept = {0: [0, 1], 1: [2, 3]}, [[2, 3], [0, 1]]
    else:
        steps = [{0: [1]}, {0: [2], 1: [3]}, {0: [1, 2]}]  # the last asks again for heads already gone: no-op
        expected_removed, expected_kept = {0: [1, 2], 1: [3]}, [[0, 3], [0, 1, 2]]
    reference = zeroed_reference(model, expected_removed)
    for step in steps:
        prune_heads(model, step)

    assert kept_heads(model) == expected_kept
    assert removed_heads(model) == expected_removed
    assert_same_outputs(model, reference, padded_batch())
    assert_same_outputs(copy.deepcopy(model), reference, padded_batch())  # pruning state survives a copy


def test_grouped_query_attention_prunes_key_value_groups():
    model = make("llama")
    assert model.config.num_key_value_heads == 2  # 2 query heads per KV head
    prune_heads(model, {0: [2, 3]})
    assert proj(model, 0, "k").out_features == proj(model, 0, "v").out_features == HEAD_DIM
    assert proj(model, 0, "q").out_features == 2 * HEAD_DIM
    assert proj(model, 1, "k").out_features == 2 * HEAD_DIM


def test_partial_key_value_group_is_an_error_and_changes_nothing():
    model = make("llama")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=r"whole groups.*group 0 \(heads \[0, 1\]\).*add heads \[1\]"):
        prune_heads(model, {1: [2, 3], 0: [0]})
    assert kept_heads(model) == [[0, 1, 2, 3], [0, 1, 2, 3]]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # Once half of a group is requested and the other half was pruned earlier, nothing is left over: fine.
    prune_heads(model, {0: [0, 1]})
    prune_heads(model, {0: [0]})
    assert kept_heads(model)[0] == [2, 3]


def test_invalid_requests_name_the_bad_value():
    model = make("bert")
    with pytest.raises(ValueError, match=r"Layer 2 does not exist: the model has layers 0\.\.1"):
        prune_heads(model, {2: [0]})
    with pytest.raises(ValueError, match=r"Heads \[4\] of layer 0 do not exist: .*heads 0\.\.3"):
        prune_heads(model, {0: [1, 4]})
    with pytest.raises(TypeError, match="must map layer index"):
        prune_heads(model, [[0, 1]])
    assert kept_heads(model) == [[0, 1, 2, 3]] * 2


def test_unsupported_architecture_names_the_supported_ones():
    config = tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=32)
    model = tf.GPT2LMHeadModel(config)
    with pytest.raises(ValueError, match=r"'gpt2' is not supported.*bert.*roberta.*distilbert.*mpnet.*llama"):
        prune_heads(model, {0: [0]})
    with pytest.raises(ValueError, match="'gpt2' is not supported"):
        compute_head_importance(model, None, "magnitude")


@pytest.mark.parametrize("family", list(FAMILIES))
def test_save_and_reload_with_distilkit_from_pretrained(family, tmp_path):
    model = make(family)
    prune_heads(model, {0: [0, 1], 1: [0, 1, 2, 3]} if family in GQA else {0: [0, 3], 1: [0, 1, 2, 3]})
    model.save_pretrained(tmp_path)

    record = json.loads((tmp_path / "config.json").read_text())["distilkit"]["pruning"]
    assert record == {"kept_heads": kept_heads(model)}
    reloaded = distilkit.from_pretrained(tmp_path)
    assert type(reloaded) is type(model)
    assert kept_heads(reloaded) == kept_heads(model)
    assert {k: v.shape for k, v in reloaded.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    if family != "mpnet":  # MPNet has one (eager) implementation; the others load with the default, sdpa
        reloaded.set_attn_implementation(model.config._attn_implementation)
    batch = padded_batch()
    for got, want in zip(outputs(reloaded, batch), outputs(model, batch), strict=True):
        assert torch.equal(got, want)


def test_from_pretrained_loads_uncompressed_models_and_reloaded_models_prune_further(tmp_path):
    model = make("mpnet")
    model.save_pretrained(tmp_path / "plain")
    plain = distilkit.from_pretrained(tmp_path / "plain")
    assert kept_heads(plain) == [[0, 1, 2, 3]] * 2
    assert torch.equal(outputs(plain, padded_batch())[0], outputs(model, padded_batch())[0])

    reference = zeroed_reference(model, {0: [1, 2], 1: [0]})
    prune_heads(model, {0: [1]})
    model.save_pretrained(tmp_path / "pruned")
    reloaded = distilkit.from_pretrained(tmp_path / "pruned")
    prune_heads(reloaded, {0: [1, 2], 1: [0]})  # original numbering, across save and load
    assert kept_heads(reloaded) == [[0, 3], [1, 2, 3]]
    assert_same_outputs(reloaded, reference, padded_batch())


def zero_head(model, index: int, head: int) -> None:
    """Zero every weight that belongs to one head only (its q rows and o columns; k/v rows unless shared)."""
    rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    with torch.no_grad():
        for which in "qkv":
            if which != "q" and model.config.model_type in GQA:
                continue  # key/value heads are shared by a group of query heads
            linear = proj(model, index, which)
            linear.weight[rows] = 0
            if linear.bias is not None:
                linear.bias[rows] = 0
        proj(model, index, "o").weight[:, rows] = 0


@pytest.mark.parametrize("method", ["taylor", "magnitude"])
@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "llama"])
def test_a_zeroed_head_gets_the_lowest_importance(family, method):
    model = make(family)
    zero_head(model, 0, 2)
    importance = compute_head_importance(model, [labelled_batch(family, s) for s in range(2)], method)

    assert importance.shape == (2, HEADS) and importance.dtype == torch.float32
    assert importance[0].argmin() == 2
    if method == "taylor" or family not in GQA:
        assert importance[0, 2] == 0
    assert (importance[0, [0, 1, 3]] > 0).all() and (importance[1] > 0).all()
    # Normalised per layer (L2), so layers can be ranked together.
    torch.testing.assert_close(importance.norm(dim=1), torch.ones(2))


def test_importance_of_pruned_heads_is_nan_and_the_model_is_left_as_it_was():
    model = make("bert")
    model.train()
    prune_heads(model, {0: [1], 1: [0, 1, 2, 3]})
    importance = compute_head_importance(model, [labelled_batch("bert")], "taylor")
    assert importance[0, 1].isnan() and importance[1].isnan().all()
    assert not importance[0, [0, 2, 3]].isnan().any()
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # gate gradients only
    raw = compute_head_importance(model, [labelled_batch("bert")], "magnitude", normalize=False)
    q, o = proj(model, 0, "q").weight, proj(model, 0, "o").weight
    k, v = proj(model, 0, "k").weight, proj(model, 0, "v").weight
    # Head 3 is now at position 2 of the pruned layer.
    expected = torch.cat([w[16:24].flatten() for w in (q, k, v)] + [o[:, 16:24].flatten()]).norm()
    torch.testing.assert_close(raw[0, 3], expected)


def test_taylor_importance_uses_the_given_loss():
    model = make("bert")
    teacher = copy.deepcopy(model)
    batch = labelled_batch("bert")

    def distillation_loss(student, batch):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            target = teacher(**inputs).logits.softmax(-1)
        return torch.nn.functional.cross_entropy(student(**inputs).logits, target)

    # Against an identical teacher the soft cross-entropy is at its minimum: its gradient, hence every score, is 0.
    assert (compute_head_importance(model, [batch], loss_fn=distillation_loss, normalize=False) < 1e-6).all()
    assert (compute_head_importance(model, [batch], normalize=False) > 0).all()

    with pytest.raises(ValueError, match="computed no loss.*Include labels"):
        compute_head_importance(model, [{"input_ids": batch["input_ids"]}])
    with pytest.raises(ValueError, match='method="taylor" needs a dataloader'):
        compute_head_importance(model, None)
    with pytest.raises(ValueError, match=r"Unknown head importance method 'fisher'.*taylor.*magnitude"):
        compute_head_importance(model, [batch], "fisher")


def test_prune_to_fraction_ranks_heads_globally():
    model = make("bert")
    zero_head(model, 1, 0)
    batches = [labelled_batch("bert", s) for s in range(2)]
    model, removed = prune_heads_to_fraction(model, batches, 0.5)
    assert sum(map(len, removed.values())) == 4
    assert 0 in removed[1]  # the zeroed head is among the least important
    assert removed_heads(model) == removed

    # Earlier pruning counts towards the fraction; the call returns only what it removed.
    model, more = prune_heads_to_fraction(model, batches, 0.75, method="magnitude")
    assert sum(map(len, more.values())) == 2
    assert sum(map(len, kept_heads(model))) == 2
    assert prune_heads_to_fraction(model, batches, 0.5)[1] == {}

    balanced = make("bert")
    _, removed = prune_heads_to_fraction(balanced, None, 0.75, "magnitude", min_heads_per_layer=1)
    assert [len(k) for k in kept_heads(balanced)] == [1, 1]
    with pytest.raises(ValueError, match="fraction must be between 0 and 1"):
        prune_heads_to_fraction(balanced, None, 1.5, "magnitude")


def test_prune_to_fraction_removes_whole_groups_under_gqa():
    model = make("llama")
    zero_head(model, 0, 2)
    zero_head(model, 0, 3)
    model, removed = prune_heads_to_fraction(model, [labelled_batch("llama")], 0.25)
    assert removed == {0: [2, 3]}  # 1 of 4 KV groups; the zeroed group goes
    model, removed = prune_heads_to_fraction(model, [labelled_batch("llama")], 0.6)  # 2.4 groups -> 2
    assert sum(map(len, removed.values())) == 2
    assert all(len(kept) % 2 == 0 for kept in kept_heads(model))


def test_prune_heads_carries_the_optimizer_state_over():
    model = make("bert")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(**labelled_batch("bert")).loss.backward()
    optimizer.step()
    model.zero_grad()
    old_q = proj(model, 0, "q").weight
    old_moment = optimizer.state[old_q]["exp_avg"].clone()

    prune_heads(model, {0: [1]}, optimizer=optimizer)

    new_q = proj(model, 0, "q").weight
    assert {id(p) for g in optimizer.param_groups for p in g["params"]} == {id(p) for p in model.parameters()}
    assert old_q not in optimizer.state
    keep_rows = [r for r in range(4 * HEAD_DIM) if not HEAD_DIM <= r < 2 * HEAD_DIM]
    assert torch.equal(optimizer.state[new_q]["exp_avg"], old_moment[keep_rows])
    assert torch.equal(optimizer.state[new_q]["step"], torch.tensor(1.0))
    # Training goes on and updates the new, smaller parameter.
    before = new_q.detach().clone()
    model(**labelled_batch("bert")).loss.backward()
    optimizer.step()
    assert not torch.equal(before, new_q.detach())


def test_a_layer_without_heads_still_generates_with_a_kv_cache():
    model = make("llama")
    prune_heads(model, {0: [0, 1, 2, 3], 1: [0, 1]})
    prompt = torch.randint(3, VOCAB, (2, 5), generator=torch.Generator().manual_seed(0))
    cached = model.generate(prompt, max_new_tokens=4, do_sample=False)
    uncached = model.generate(prompt, max_new_tokens=4, do_sample=False, use_cache=False)
    assert cached.shape == (2, 9)
    assert torch.equal(cached, uncached)


@pytest.mark.slow
def test_saved_folder_loads_with_plain_transformers_and_trust_remote_code(tmp_path):
    expected = {}
    for family in ("bert", "mpnet", "llama"):
        model = make(family)
        prune_heads(model, {0: [0, 1], 1: [0, 1, 2, 3]})
        model.save_pretrained(tmp_path / family)
        add_remote_code(tmp_path / family)
        batch = padded_batch()
        expected[family] = outputs(model, batch)[0]
    torch.save({"batch": padded_batch(), "logits": expected}, tmp_path / "expected.pt")
    with pytest.raises(ValueError, match="re-applies head and FFN pruning only.*none"):
        make("bert").save_pretrained(tmp_path / "plain")
        add_remote_code(tmp_path / "plain")

    # A fresh interpreter that cannot import distilkit loads the folders with transformers alone.
    script = textwrap.dedent(f"""
        import sys, torch, transformers
        sys.modules["distilkit"] = None  # any import of distilkit would now fail
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        for family, auto in [("bert", transformers.AutoModelForSequenceClassification),
                             ("mpnet", transformers.AutoModelForSequenceClassification),
                             ("llama", transformers.AutoModelForCausalLM)]:
            folder = {str(tmp_path)!r} + "/" + family
            model = auto.from_pretrained(folder, trust_remote_code=True, attn_implementation="eager").eval()
            with torch.no_grad():
                assert torch.equal(model(**expected["batch"]).logits, expected["logits"][family]), family
            base = transformers.AutoModel.from_pretrained(folder, trust_remote_code=True)
            assert base.config.distilkit["pruning"]["kept_heads"][1] == [], family
        print("loaded", sorted(m for m, module in sys.modules.items() if m.startswith("distilkit") and module))
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "loaded []" in result.stdout
