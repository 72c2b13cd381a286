"""Int8 quantization: error bounds, kernels against the pure-PyTorch reference, module selection, save and reload.

Error bounds used below (measured values on tiny random models in brackets):
* one Int8Linear against its float Linear on Gaussian inputs: SNR >= 30 dB, i.e. relative L2 error <= 3.2%
  [40-42.5 dB with 8-bit activations; 35-37 dB with the 7-bit activations of CPUs without VNNI];
* end-to-end logits of a quantized tiny model: relative L2 error <= 5% [0.02-0.9%];
* a fast kernel against the reference kernel: max difference <= 1e-4 of the largest output [~1e-6: both compute
  the same integers, only float rounding differs];
* save and reload: bit-identical outputs.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import re
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors import safe_open
from helpers.tiny_models import VOCAB, tiny_model
from torch import nn

import distilkit
from distilkit.pruning import prune_heads
from distilkit.quantization import Int8Embedding, Int8Linear, kernels, quantize_int8, select_kernel
from distilkit.quantization.kernels import (
    KERNEL_ENV,
    KERNELS,
    activation_qparams,
    activation_reduce_range,
    int_mm_linear,
    reference_linear,
)
from distilkit.quantization.layer import FusedActivation, SharedInputGroup, activation_name, quantize_rows
from distilkit.quantization.model import fuse_activations, group_shared_inputs, shared_input_names, task_head_names
from distilkit.student import student_from_teacher

FAST_CPU_KERNELS = [name for name in ("onednn", "fbgemm") if KERNELS[name].available(torch.device("cpu"))]


def snr_db(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return 10 * torch.log10(exact.pow(2).sum() / (approx - exact).pow(2).sum()).item()


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return ((approx - exact).norm() / exact.norm()).item()


def batch(seed: int = 0, size: int = 3, length: int = 12) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, VOCAB, (size, length), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, length // 2 :] = 0  # one padded row
    return {"input_ids": input_ids, "attention_mask": attention_mask}


@torch.no_grad()
def logits(model, inputs) -> torch.Tensor:
    return model.eval()(**inputs).logits


def with_kernel(model: nn.Module, name: str) -> nn.Module:
    for module in model.modules():
        if isinstance(module, Int8Linear):
            module.kernel = name
    return model


# ---------------------------------------------------------------------------------------------- the scheme itself


def test_quantize_rows_error_is_at_most_half_a_step():
    weight = torch.randn(16, 40) * torch.logspace(-3, 1, 16).unsqueeze(1)
    weight[3] = 0.0
    values, scale = quantize_rows(weight)
    assert values.dtype == torch.int8 and scale.dtype == torch.float32
    assert values.abs().max() <= 127
    assert scale[3] == 1.0 and (values[3] == 0).all()
    error = (values.float() * scale.unsqueeze(1) - weight).abs()
    assert (error <= scale.unsqueeze(1) / 2 + 1e-7).all()


@pytest.mark.skipif(not hasattr(torch, "_choose_qparams_per_tensor"), reason="PyTorch without the quantized ops")
@pytest.mark.parametrize("reduce_range", [False, True])
def test_activation_qparams_match_pytorch(reduce_range):
    cases = [
        torch.randn(500),
        torch.rand(500),
        -torch.rand(500),
        torch.zeros(8),
        torch.randn(50) * 1e-4,
        torch.randn(1000) * 30 + 5,
    ]
    for x in cases:
        scale, zero_point, _ = activation_qparams(x, reduce_range)
        expected_scale, expected_zero_point = torch._choose_qparams_per_tensor(x, reduce_range)
        assert scale.item() == pytest.approx(expected_scale, rel=1e-6)
        assert int(zero_point) == expected_zero_point


def test_reduce_range_follows_the_cpu(monkeypatch):
    monkeypatch.setenv("FBGEMM_ENABLE_INSTRUCTIONS", "AVX2")
    assert activation_reduce_range("cpu") is (platform.machine().lower() in {"x86_64", "amd64"})
    assert activation_reduce_range("meta") is False  # accelerators: full 8-bit range


@pytest.mark.parametrize("shape", [(32, 32), (64, 128), (300, 48)])
def test_int8_linear_error_bound(shape):
    in_features, out_features = shape
    torch.manual_seed(0)
    linear = nn.Linear(in_features, out_features)
    quantized = Int8Linear.from_linear(linear)
    x = torch.randn(4, 7, in_features)
    with torch.no_grad():
        assert snr_db(quantized(x), linear(x)) >= 30.0


def test_int8_embedding_error_bound_and_dtype():
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 16, padding_idx=0)
    quantized = Int8Embedding.from_embedding(embedding)
    ids = torch.randint(0, 50, (3, 9))
    out, ref = quantized(ids), embedding(ids).detach()
    assert out.dtype == ref.dtype and out.shape == ref.shape
    step = quantized.weight_scale[ids].unsqueeze(-1)
    assert ((out - ref).abs() <= step / 2 + 1e-7).all()
    assert quantized.padding_idx == 0


# ------------------------------------------------------------------------------------------------------- kernels


@pytest.mark.skipif(not FAST_CPU_KERNELS, reason="no fast int8 kernel in this PyTorch build")
@pytest.mark.parametrize("kernel", FAST_CPU_KERNELS)
@pytest.mark.parametrize("bias", [True, False])
def test_fast_kernel_matches_reference(kernel, bias):
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(96, 40, bias=bias))
    for x in (torch.randn(5, 96), torch.randn(2, 11, 96) * 3 + 1, torch.rand(1, 96), torch.randn(4, 40, 96) - 2):
        with torch.no_grad():
            fast = with_kernel(module, kernel)(x)
            ref = with_kernel(module, "reference")(x)
        torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4 * ref.abs().max().item())


@pytest.mark.skipif("onednn" not in FAST_CPU_KERNELS, reason="no oneDNN engine in this PyTorch build")
def test_onednn_kernel_sends_small_inputs_to_fbgemm():
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 48), kernel="onednn")
    large = torch.randn(kernels.ONEDNN_MIN_ROWS, 64)
    with torch.no_grad():
        module(large)
        state = module._cache[1]
        assert state._small is None  # fbgemm's copy of the weights is packed only when a small input comes
        small = module(large[:3])
        assert state._small is not None and state._small is not state._large
        ref = with_kernel(module, "reference")(large[:3])
    torch.testing.assert_close(small, ref, rtol=0, atol=1e-4 * ref.abs().max().item())


@pytest.mark.skipif(not FAST_CPU_KERNELS, reason="no fast int8 kernel in this PyTorch build")
@pytest.mark.parametrize("kernel", FAST_CPU_KERNELS)
@pytest.mark.parametrize("family,task", [("bert", "seq"), ("llama", "causal")])
def test_fast_kernel_matches_reference_end_to_end(family, task, kernel):
    model = quantize_int8(tiny_model(task, family))
    inputs = batch()
    fast = logits(with_kernel(model, kernel), inputs)
    ref = logits(with_kernel(model, "reference"), inputs)
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4 * ref.abs().max().item())
    if task == "causal":  # decoding with a KV cache: one-token activations, each quantized on its own
        prompt = inputs["input_ids"][:1, :5]
        generated = {
            kernel: with_kernel(model, kernel).generate(prompt, max_new_tokens=4, do_sample=False)
            for kernel in (kernel, "reference")
        }
        assert generated["reference"].shape == (1, 9)
        assert torch.equal(*generated.values())


def test_int_mm_kernel_arithmetic_on_cpu():
    """The CUDA `_int_mm` kernel's zero-point correction, checked with an exact integer matmul in its place."""

    def exact_int_mm(a, b):
        assert a.dtype == b.dtype == torch.int8
        return (a.long() @ b.long()).int()

    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 24))
    state = KERNELS["cuda_int_mm"].prepare(module.weight, module.weight_scale, module.bias, torch.device("cuda"))
    x = torch.randn(3, 10, 64) + 0.5  # 30 rows: large enough for the _int_mm path
    out = int_mm_linear(x, state, int_mm=exact_int_mm)
    ref = reference_linear(x, KERNELS["reference"].prepare(module.weight, module.weight_scale, module.bias, "cuda"))
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-4 * ref.abs().max().item())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_cuda_kernel_matches_reference(dtype):
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(64, 32)).cuda()
    x = torch.randn(4, 16, 64, device="cuda", dtype=dtype)
    with torch.no_grad():
        fast = module(x)
        ref = with_kernel(module, "reference")(x)
    assert fast.dtype == dtype
    torch.testing.assert_close(fast.float(), ref.float(), rtol=0, atol=2e-2 * ref.abs().max().item())


@pytest.mark.skipif(platform.machine().lower() not in {"x86_64", "amd64"}, reason="x86 kernels only")
@pytest.mark.parametrize(
    "kernel,forced_isa",
    [("fbgemm", {"FBGEMM_ENABLE_INSTRUCTIONS": "AVX2"}), ("onednn", {"ONEDNN_MAX_CPU_ISA": "AVX2"})],
)
def test_kernels_without_vnni_do_not_saturate(kernel, forced_isa):
    """Forced onto AVX2 (vpmaddubsw), a kernel must still agree with the reference: activations use 0..127 there.

    With 0..255 both fbgemm and oneDNN return saturated sums on AVX2 (oneDNN gave 16.19 for an exact 32.0).
    """
    if kernel not in FAST_CPU_KERNELS:
        pytest.skip(f"no {kernel} kernel in this PyTorch build")
    script = textwrap.dedent(
        f"""
        import torch
        from torch import nn
        from distilkit.quantization import Int8Linear
        from distilkit.quantization.kernels import activation_reduce_range
        assert activation_reduce_range("cpu")
        linear = nn.Linear(64, 8, bias=False)
        nn.init.constant_(linear.weight, 0.5)  # every int8 weight at +127
        module = Int8Linear.from_linear(linear, kernel={kernel!r})
        x = torch.ones(4, 64)
        x[0, 0] = 0.0  # zero point 0, every other activation at the top level
        with torch.no_grad():
            fast = module(x)
            module.kernel = "reference"
            ref = module(x)
        torch.testing.assert_close(fast, ref)
        torch.testing.assert_close(fast, linear(x).detach(), rtol=1e-2, atol=0)
        """
    )
    env = {**os.environ, **forced_isa, "OMP_NUM_THREADS": "1"}
    env.pop(KERNEL_ENV, None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_select_kernel_env_and_errors(monkeypatch):
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    if "onednn" in FAST_CPU_KERNELS and kernels._cpu_has_amx_int8():
        expected = "onednn"
    else:
        expected = "fbgemm" if "fbgemm" in FAST_CPU_KERNELS else "reference"
    assert select_kernel("cpu").name == expected
    monkeypatch.setenv(KERNEL_ENV, "reference")
    assert select_kernel("cpu").name == "reference"
    assert select_kernel("cpu", "reference").name == "reference"
    with pytest.raises(ValueError, match="Unknown int8 kernel 'nope'"):
        select_kernel("cpu", "nope")
    with pytest.raises(ValueError, match="cannot run on cpu"):
        select_kernel("cpu", "cuda_int_mm")


@pytest.mark.parametrize(
    "flags,max_isa,expected",
    [
        ({"avx512_vnni", "amx_int8"}, "", "onednn"),
        ({"avx512_vnni", "amx_int8"}, "AVX512_CORE_VNNI", "fbgemm"),  # oneDNN told to stay below AMX
        ({"avx512_vnni"}, "", "fbgemm"),
        ({"avx2"}, "", "fbgemm"),
    ],
)
def test_select_kernel_prefers_onednn_only_with_amx(monkeypatch, flags, max_isa, expected):
    if not {"onednn", "fbgemm"} <= set(FAST_CPU_KERNELS):
        pytest.skip("needs both x86 engines")
    monkeypatch.delenv(KERNEL_ENV, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", max_isa)
    monkeypatch.setattr(kernels, "_cpu_flags", lambda: frozenset(flags))
    kernels._select_kernel.cache_clear()
    try:
        assert select_kernel("cpu").name == expected
    finally:
        kernels._select_kernel.cache_clear()


def test_env_var_forces_the_reference_kernel(monkeypatch):
    model = quantize_int8(tiny_model("seq"))
    inputs = batch()
    fast = logits(model, inputs)
    monkeypatch.setenv(KERNEL_ENV, "reference")
    layer = model.bert.encoder.layer[0].attention.output.dense
    qkv = model.bert.encoder.layer[0].attention.self.query._shared_input_group
    ref = logits(model, inputs)
    assert layer._cache[0][0] == "reference" and qkv._cache[0][0] == "reference"
    torch.testing.assert_close(fast, ref, rtol=0, atol=1e-4 * ref.abs().max().item())


# ------------------------------------------------------------------------------------------- models end to end


@pytest.mark.parametrize(
    "task,family", [("seq", "bert"), ("token", "bert"), ("causal", "llama"), ("seq", "distilbert"), ("seq", "mpnet")]
)
def test_logits_error_bound_and_head_stays_float(task, family):
    model = tiny_model(task, family)
    inputs = batch()
    ref = logits(model, inputs)
    head = task_head_names(model)
    quantize_int8(model)
    assert relative_error(logits(model, inputs), ref) <= 0.05
    modules = dict(model.named_modules())
    assert head and all(not isinstance(modules[name], Int8Linear) for name in head)
    linear_left = [name for name, m in modules.items() if type(m) is nn.Linear]
    assert sorted(linear_left) == sorted(name for name in head if type(modules[name]) is nn.Linear)


def test_head_names():
    assert task_head_names(tiny_model("seq")) == {"dropout", "classifier"}
    assert task_head_names(tiny_model("seq", "distilbert")) == {"pre_classifier", "classifier", "dropout"}
    assert task_head_names(tiny_model("causal", "llama")) == {"lm_head"}
    assert task_head_names(tiny_model("seq").base_model) == set()


def test_distilled_student():
    teacher = tiny_model("seq", layers=4)
    student = student_from_teacher(teacher, 2)
    inputs = batch()
    ref = logits(student, inputs)
    quantize_int8(student)
    assert relative_error(logits(student, inputs), ref) <= 0.05


# --------------------------------------------------------------------------------------------- choosing modules


def int8_names(model) -> set[str]:
    return {name for name, m in model.named_modules() if isinstance(m, (Int8Linear, Int8Embedding))}


def test_skip_patterns_fnmatch_regex_and_blocks():
    model = quantize_int8(tiny_model("seq"), skip=["*.attention.self.query", "bert.encoder.layer.1"])
    names = int8_names(model)
    assert names == {
        "bert.encoder.layer.0.attention.self.key",
        "bert.encoder.layer.0.attention.self.value",
        "bert.encoder.layer.0.attention.output.dense",
        "bert.encoder.layer.0.intermediate.dense",
        "bert.encoder.layer.0.output.dense",
        "bert.pooler.dense",
    }
    model = quantize_int8(tiny_model("seq"), skip=re.compile(r".*\.(key|value)"))
    assert not any(name.endswith((".key", ".value")) for name in int8_names(model))
    assert "bert.encoder.layer.1.attention.self.query" in int8_names(model)
    record = model.config.distilkit["quantization"]
    assert sorted(record["linear"]) == sorted(int8_names(model)) and record["embedding"] == []


def test_explicit_modules_can_include_the_head():
    model = quantize_int8(tiny_model("seq"), modules=["classifier", "*.intermediate.dense"])
    assert int8_names(model) == {
        "classifier",
        "bert.encoder.layer.0.intermediate.dense",
        "bert.encoder.layer.1.intermediate.dense",
    }


def test_quantizing_twice_is_an_error():
    model = quantize_int8(tiny_model("seq"))
    with pytest.raises(ValueError, match="already quantized"):
        quantize_int8(model)
    recorded = tiny_model("seq")  # e.g. a float model built from a quantized model's config.json
    recorded.config.distilkit = {"quantization": {"linear": []}}
    with pytest.raises(ValueError, match="already quantized"):
        quantize_int8(recorded)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"skip": ["*.attention.self.qurey"]}, r"matches no module .* fnmatch"),
        ({"skip": ["*.LayerNorm"]}, r"matches only modules of type LayerNorm"),
        ({"modules": ["bert.embeddings.word_embeddings"]}, r"type Embedding.*quantize_embeddings=True"),
        ({"modules": ["*.dropout"]}, r"matches only modules of type Dropout"),
        ({"skip": ["bert.encoder", "bert.pooler"]}, r"Nothing to quantize"),
        ({"kernel": "fast"}, r"Unknown int8 kernel"),
    ],
)
def test_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        quantize_int8(tiny_model("seq"), **kwargs)


def test_unsupported_module_type_in_explicit_list():
    """GPT-2 projections are transformers' Conv1D, not nn.Linear: naming one is an error, not a silent no-op."""
    import transformers as tf

    config = tf.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=64)
    model = tf.GPT2LMHeadModel(config)
    with pytest.raises(ValueError, match=r"type Conv1D"):
        quantize_int8(model, modules=["transformer.h.0.attn.c_attn"])
    with pytest.raises(ValueError, match=r"Nothing to quantize.*Conv1D"):
        quantize_int8(model)


# -------------------------------------------------------------------------------------------- int8 embeddings


def state_bytes(model) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def test_int8_embeddings_shrink_the_state_dict():
    model = tiny_model("seq", hidden=64)
    inputs = batch()
    ref = logits(model, inputs)
    linear_only = quantize_int8(copy.deepcopy(model))
    with_embeddings = quantize_int8(model, quantize_embeddings=True)
    assert int8_names(with_embeddings) - int8_names(linear_only) == {
        "bert.embeddings.word_embeddings",
        "bert.embeddings.position_embeddings",
        "bert.embeddings.token_type_embeddings",
    }
    assert with_embeddings.bert.embeddings.word_embeddings.weight.dtype == torch.int8
    # word + position + token-type embeddings: (100 + 64 + 2) rows of 64 float32 -> int8 + one scale per row
    saved = (100 + 64 + 2) * (64 * 4 - (64 + 4))
    assert state_bytes(linear_only) - state_bytes(with_embeddings) == saved
    assert relative_error(logits(with_embeddings, inputs), ref) <= 0.05


def test_tied_embedding_stays_float(caplog):
    model = tiny_model("masked")  # BERT ties the MLM decoder to the word embeddings
    with caplog.at_level("WARNING"):
        quantize_int8(model, quantize_embeddings=True)
    assert type(model.bert.embeddings.word_embeddings) is nn.Embedding
    assert model.cls.predictions.decoder.weight is model.bert.embeddings.word_embeddings.weight
    assert isinstance(model.bert.embeddings.position_embeddings, Int8Embedding)
    assert "shared with" in caplog.text


# ------------------------------------------------------------------------------ shared inputs: fused q/k/v


def unlinked(model: nn.Module) -> nn.Module:
    """A copy of `model` whose projections run one by one (no SharedInputGroup)."""
    clone = copy.deepcopy(model)
    assert group_shared_inputs(clone, enabled=False) == 0 and groups(clone) == []
    return clone


def groups(model: nn.Module) -> list[SharedInputGroup]:
    found = {id(m._shared_input_group): m._shared_input_group for m in model.modules() if isinstance(m, Int8Linear)}
    return [group for group in found.values() if group is not None]


@pytest.mark.parametrize("kernel", ["reference", *FAST_CPU_KERNELS])
@pytest.mark.parametrize(
    "task,family,expected_groups",
    [("seq", "bert", 2), ("seq", "distilbert", 2), ("seq", "mpnet", 2), ("causal", "llama", 4)],
)
def test_fused_projections_match_separate_ones(task, family, expected_groups, kernel):
    """q/k/v (and Llama's gate/up) run as one product: same activation qparams, same integers, same outputs."""
    model = quantize_int8(tiny_model(task, family), kernel=kernel)
    assert len(groups(model)) == expected_groups
    assert {len(group.members) for group in groups(model)} == ({3, 2} if family == "llama" else {3})
    inputs = batch()
    fused, separate = logits(model, inputs), logits(unlinked(model), inputs)
    torch.testing.assert_close(fused, separate, rtol=0, atol=1e-5 * separate.abs().max().item())
    query = model.get_submodule(shared_input_names(model)[0][0])
    assert query._shared_input_group._cache is not None and query._cache is None  # the joint product ran
    assert all(group.enabled for group in groups(model))


@pytest.mark.parametrize("kernel", ["reference", *FAST_CPU_KERNELS])
def test_shared_input_group_single_layer(kernel):
    torch.manual_seed(0)
    members = [Int8Linear.from_linear(nn.Linear(32, n), kernel=kernel) for n in (32, 16, 16)]
    x = torch.randn(2, 5, 32) * 2 + 0.5
    with torch.no_grad():
        expected = [m(x) for m in members]
        group = SharedInputGroup(members)
        for m in members:
            m._shared_input_group = group
        # any call order; the first call computes all three, the others collect their slice
        got = {i: members[i](x) for i in (1, 0, 2)}
    for i, m in enumerate(members):
        assert got[i].shape == expected[i].shape
        torch.testing.assert_close(got[i], expected[i], rtol=0, atol=1e-5 * expected[i].abs().max().item())
    assert getattr(group._local, "pending", None) is None  # nothing left waiting


def test_shared_input_group_falls_back_when_inputs_differ():
    torch.manual_seed(0)
    members = [Int8Linear.from_linear(nn.Linear(16, 8)) for _ in range(3)]
    x, y = torch.randn(3, 16), torch.randn(3, 16) * 5
    expected = [m(x).detach() for m in members], [m(y).detach() for m in members]
    group = SharedInputGroup(members)
    for m in members:
        m._shared_input_group = group
    with torch.no_grad():
        assert torch.equal(members[0](x), expected[0][0])
        out = members[1](y)  # not the input the waiting results are for: they are dropped, the group disabled
        assert not group.enabled
        torch.testing.assert_close(out, expected[1][1])
        torch.testing.assert_close(members[2](x), expected[0][2])


def test_shared_input_group_notices_an_input_changed_in_place():
    torch.manual_seed(0)
    members = [Int8Linear.from_linear(nn.Linear(16, 8)) for _ in range(2)]
    group = SharedInputGroup(members)
    x = torch.randn(3, 16)
    with torch.no_grad():
        members[0]._shared_input_group = members[1]._shared_input_group = group
        members[0](x)
        x.mul_(3)  # bumps x's version: the waiting result for members[1] is stale
        out = members[1](x)
        members[1]._shared_input_group = None
        torch.testing.assert_close(out, members[1](x))


def test_shared_input_groups_are_not_formed_across_shapes_or_types():
    assert not SharedInputGroup.can_group([Int8Linear(8, 4), Int8Linear(16, 4)])
    assert not SharedInputGroup.can_group([Int8Linear(8, 4), Int8Linear(8, 4, bias=False)])
    assert not SharedInputGroup.can_group([Int8Linear(8, 4), nn.Linear(8, 4)])
    assert not SharedInputGroup.can_group([Int8Linear(8, 0), Int8Linear(8, 4)])  # a layer pruned to no heads
    linear = Int8Linear(8, 4)
    assert not SharedInputGroup.can_group([linear, linear])
    assert SharedInputGroup.can_group([Int8Linear(8, 4), Int8Linear(8, 2)])
    # a projection left in float stays out; its int8 siblings still run together
    model = quantize_int8(tiny_model("seq"), skip="*.attention.self.value")
    assert [len(g.members) for g in groups(model)] == [2, 2]
    model = quantize_int8(tiny_model("seq", "distilbert"), modules=["*.q_lin"])
    assert groups(model) == []


def test_deepcopy_and_pickle_keep_groups_on_the_copies():
    import pickle

    model = quantize_int8(tiny_model("seq"))
    inputs = batch()
    out = logits(model, inputs)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        query = clone.bert.encoder.layer[0].attention.self.query
        group = query._shared_input_group
        assert group is not model.bert.encoder.layer[0].attention.self.query._shared_input_group
        assert group.members[0] is query and group._cache is None
        assert torch.equal(logits(clone, inputs), out)


# ------------------------------------------------------------------------------- activations fused into Int8Linear


def unfused(model: nn.Module) -> nn.Module:
    """A copy of `model` whose feed-forward activations run as separate modules again."""
    clone = copy.deepcopy(model)
    assert fuse_activations(clone, enabled=False) == 0
    assert not any(isinstance(m, FusedActivation) for m in clone.modules())
    assert all(m.activation is None for m in clone.modules() if isinstance(m, Int8Linear))
    return clone


def test_quantize_to_uint8_matches_the_scheme():
    torch.manual_seed(0)
    mismatched = total = 0
    for i in range(20):
        x = torch.randn(64, 96) * (i + 1) * 0.1 + (i % 5) - 2
        levels, scale, zero_point = kernels.quantize_to_uint8(x, reduce_range=False)
        expected, expected_scale, expected_zero_point = kernels.quantize_activation(x, reduce_range=False)
        assert levels.dtype == torch.uint8 and levels.shape == x.shape
        assert scale == pytest.approx(expected_scale.item(), rel=1e-7) and zero_point == int(expected_zero_point)
        difference = (levels.float() - expected).abs()
        assert difference.max() <= 1  # x * (1/scale) vs x / scale: a tie may round the other way
        mismatched += int((difference > 0).sum())
        total += x.numel()
    assert mismatched <= total * 1e-4


@pytest.mark.parametrize("kernel", ["reference", *FAST_CPU_KERNELS])
@pytest.mark.parametrize("rows", [3, 64])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_with_activation_matches_linear_then_gelu(kernel, rows, bias):
    torch.manual_seed(0)
    module = Int8Linear.from_linear(nn.Linear(48, 80, bias=bias), kernel=kernel)
    x = torch.randn(rows, 48) * 2 + 0.3
    with torch.no_grad():
        expected = torch.nn.functional.gelu(with_kernel(module, "reference")(x))
        module.kernel, module.activation = kernel, "gelu"
        out = module(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-4 * expected.abs().max().item())
    assert "activation=gelu" in repr(module)
    if kernel == "onednn":  # the fused oneDNN path ran for the large input, fbgemm then GELU for the small one
        state = module._cache[1]
        assert (state._static is not None) == (rows >= kernels.ONEDNN_MIN_ROWS)


@pytest.mark.parametrize("kernel", ["reference", *FAST_CPU_KERNELS])
@pytest.mark.parametrize(
    "task,family,expected",
    [("seq", "bert", 2), ("token", "roberta", 2), ("seq", "distilbert", 2), ("seq", "mpnet", 2), ("causal", "llama", 0)],
)
def test_fused_activations_match_separate_ones(task, family, expected, kernel):
    model = quantize_int8(tiny_model(task, family), kernel=kernel)
    fused = [m for m in model.modules() if isinstance(m, FusedActivation)]
    assert len(fused) == expected and all(f.activation == "gelu" for f in fused)
    assert sum(m.activation == "gelu" for m in model.modules() if isinstance(m, Int8Linear)) == expected
    inputs = batch(size=6)  # 72 rows: enough for the oneDNN kernel's fused path
    with_fusion, without = logits(model, inputs), logits(unfused(model), inputs)
    torch.testing.assert_close(with_fusion, without, rtol=0, atol=1e-4 * without.abs().max().item())


def test_only_exact_gelu_after_an_int8_linear_is_fused():
    model = quantize_int8(tiny_model("seq", hidden_act="gelu_new"))  # tanh approximation
    assert fuse_activations(model) == 0
    model = quantize_int8(tiny_model("seq"), skip="*.intermediate.dense")  # the Linear stays float
    assert not any(isinstance(m, FusedActivation) for m in model.modules())
    assert activation_name(nn.GELU()) == "gelu" and activation_name(nn.GELU(approximate="tanh")) is None
    assert activation_name(nn.ReLU()) is None


def test_unfusing_restores_the_original_modules():
    model = quantize_int8(tiny_model("seq"))
    placeholder = model.bert.encoder.layer[0].intermediate.intermediate_act_fn
    assert isinstance(placeholder, FusedActivation)
    keys = set(model.state_dict())
    fuse_activations(model, enabled=False)
    assert model.bert.encoder.layer[0].intermediate.intermediate_act_fn is placeholder.original
    assert model.bert.encoder.layer[0].intermediate.dense.activation is None
    assert fuse_activations(model) == 2 and set(model.state_dict()) == keys  # nothing saved changes


# ----------------------------------------------------------------------------------------------- save and load


def assert_saved_as_plain_int8(folder, model):
    with safe_open(os.path.join(folder, "model.safetensors"), "pt") as f:
        saved = {key: f.get_slice(key).get_dtype() for key in f.keys()}
    assert set(saved) == set(model.state_dict())  # nothing packed, nothing pickled, nothing missing
    for name in int8_names(model):
        assert saved[f"{name}.weight"] == "I8"
        assert saved[f"{name}.weight_scale"] == "F32"
    config = json.loads((folder / "config.json").read_text())
    assert sorted(config["distilkit"]["quantization"]["linear"]) == sorted(
        n for n in int8_names(model) if isinstance(model.get_submodule(n), Int8Linear)
    )


@pytest.mark.parametrize(
    "task,family,embeddings", [("seq", "bert", True), ("token", "roberta", False), ("causal", "llama", True)]
)
def test_save_and_reload_is_exact(tmp_path, task, family, embeddings):
    # sdpa: what distilkit.from_pretrained builds; eager and sdpa differ in the last float bits.
    model = quantize_int8(tiny_model(task, family, attn="sdpa"), quantize_embeddings=embeddings)
    inputs = batch()
    before = logits(model, inputs)  # runs the kernels, so packed state exists when saving
    model.save_pretrained(tmp_path)
    assert_saved_as_plain_int8(tmp_path, model)
    reloaded = distilkit.from_pretrained(tmp_path)
    assert int8_names(reloaded) == int8_names(model)
    assert len(groups(reloaded)) == len(groups(model)) > 0  # the run-time links come back with the modules
    fused = sum(isinstance(m, FusedActivation) for m in reloaded.modules())
    assert fused == sum(isinstance(m, FusedActivation) for m in model.modules())
    assert torch.equal(logits(reloaded, inputs), before)


def test_pruned_then_quantized_round_trip(tmp_path):
    """A layer without heads has q/k/v projections with 0 outputs and an output projection with 0 inputs."""
    model = tiny_model("seq", attn="sdpa")
    prune_heads(model, {0: [0, 1, 2, 3], 1: [2]})
    assert model.bert.encoder.layer[0].attention.self.query.out_features == 0
    inputs = batch()
    ref = logits(model, inputs)
    quantize_int8(model, quantize_embeddings=True)
    assert isinstance(model.bert.encoder.layer[0].attention.self.query, Int8Linear)
    out = logits(model, inputs)
    assert relative_error(out, ref) <= 0.05
    model.save_pretrained(tmp_path)
    record = json.loads((tmp_path / "config.json").read_text())["distilkit"]
    assert set(record) == {"pruning", "quantization"}
    reloaded = distilkit.from_pretrained(tmp_path)
    assert reloaded.bert.encoder.layer[1].attention.self.query.weight.shape == (24, 32)
    assert torch.equal(logits(reloaded, inputs), out)


def test_pruned_llama_with_a_headless_layer(tmp_path):
    model = tiny_model("causal", "llama", attn="sdpa")
    prune_heads(model, {1: [0, 1, 2, 3]})
    inputs = batch()
    ref = logits(model, inputs)
    quantize_int8(model)
    out = logits(model, inputs)
    assert relative_error(out, ref) <= 0.05
    model.save_pretrained(tmp_path)
    assert torch.equal(logits(distilkit.from_pretrained(tmp_path), inputs), out)


def test_packed_state_is_rebuilt_after_load_state_dict():
    source = quantize_int8(tiny_model("seq", seed=1))
    target = quantize_int8(tiny_model("seq", seed=2))
    inputs = batch()
    logits(target, inputs)  # pack seed-2 weights
    target.load_state_dict(source.state_dict())
    assert torch.equal(logits(target, inputs), logits(source, inputs))


def test_quantize_under_inference_mode():
    model = tiny_model("seq")
    inputs = batch()
    ref = logits(model, inputs)
    with torch.inference_mode():  # buffers become inference tensors, which have no version counter
        quantize_int8(model)
        out = model(**inputs).logits
    assert relative_error(out, ref) <= 0.05


def test_deepcopy_and_state_dict_hold_no_kernel_state():
    model = quantize_int8(tiny_model("seq"))
    inputs = batch()
    out = logits(model, inputs)
    assert all(torch.is_tensor(value) for value in model.state_dict().values())
    clone = copy.deepcopy(model)
    assert clone.bert.encoder.layer[0].attention.self.query._cache is None
    assert torch.equal(logits(clone, inputs), out)


def test_restore_rejects_a_record_that_does_not_match(tmp_path):
    model = quantize_int8(tiny_model("seq"))
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["distilkit"]["quantization"]["linear"].append("bert.encoder.layer.0.attention.output.LayerNorm")
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="has a LayerNorm there"):
        distilkit.from_pretrained(tmp_path)


def test_restore_rejects_a_newer_record_format():
    from distilkit.quantization.model import restore_quantization

    with pytest.raises(ValueError, match="newer distilkit"):
        restore_quantization(tiny_model("seq"), {"format": 99, "linear": []})


def test_plain_torch_module():
    """Not a transformers model: no head to keep, no config to record in; the layers are still quantized."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    x = torch.randn(5, 8)
    ref = model(x).detach()
    quantize_int8(model)
    assert int8_names(model) == {"0", "2"}
    assert relative_error(model(x), ref) <= 0.05


def test_empty_batch_and_dtype():
    module = Int8Linear.from_linear(nn.Linear(16, 8))
    assert module(torch.randn(0, 16)).shape == (0, 8)
    out = module(torch.randn(2, 16, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and out.shape == (2, 8)
