"""What int8 models' attention products run in (`quantize_int8(attention=...)`): the bfloat16 kernel against a
float32 reference on bfloat16-rounded inputs, padding masked, "auto" decided per machine and model, an explicit
choice saved and applied on load, refused where it cannot run, and exported to ONNX as float attention."""

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from helpers.tiny_models import VOCAB, tiny_model

import distilkit
from distilkit.quantization import quantize_int8, set_attention
from distilkit.quantization import attention as attention_module
from distilkit.quantization.attention import BF16_SDPA, bf16_sdpa_attention


def inputs(seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (3, 12), generator=g)
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, -4:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def test_the_products_run_on_bfloat16_inputs_and_return_float32():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 10, 8) for _ in range(3))
    mask = torch.zeros(2, 1, 10, 10)
    mask[1, ..., -3:] = torch.finfo(torch.float32).min  # padding, as transformers writes it
    module = torch.nn.Module()
    module.is_causal = False
    out, _ = bf16_sdpa_attention(module, q, k, v, mask, scaling=8 ** -0.5, dropout=0.0)
    assert out.dtype == torch.float32 and out.shape == (2, 10, 4, 8)  # transformers' layout: heads after tokens
    rounded = [t.bfloat16().float() for t in (q, k, v)]
    reference = F.scaled_dot_product_attention(*rounded, attn_mask=mask, scale=8 ** -0.5).transpose(1, 2)
    exact = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=8 ** -0.5).transpose(1, 2)
    assert (out - reference).abs().max() <= 2e-2 * reference.abs().max()
    assert (out - exact).abs().max() > 0  # it did run in bfloat16
    assert torch.isfinite(out).all()

    mask[0, 0, 2] = torch.finfo(torch.float32).min  # a query that may attend to nothing: finite, as in float32
    out, _ = bf16_sdpa_attention(module, q, k, v, mask, scaling=8 ** -0.5, dropout=0.0)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "family,task", [("bert", "seq"), ("roberta", "seq"), ("distilbert", "seq"), ("llama", "causal")]
)
def test_an_int8_model_with_bfloat16_attention_stays_close_to_float32_attention(family, task):
    model = tiny_model(task, family, attn="sdpa").eval()
    int8 = quantize_int8(copy.deepcopy(model), attention="float32")
    fast = quantize_int8(copy.deepcopy(model), attention="bfloat16")
    assert fast.config._attn_implementation == BF16_SDPA and int8.config._attn_implementation == "sdpa"
    feeds = inputs()
    with torch.no_grad():
        expected, got = (m(**feeds, output_hidden_states=True).hidden_states[-1] for m in (int8, fast))
    tokens = feeds["attention_mask"].bool()  # what padding positions hold is not used
    error = float((got - expected)[tokens].norm() / expected[tokens].norm())
    assert 0 < error <= 1e-2  # bfloat16 keeps 8 significant bits: a few parts in a thousand


@pytest.mark.parametrize("fast_cpu", [True, False])
def test_auto_takes_bfloat16_only_where_the_cpu_and_the_model_can(monkeypatch, fast_cpu):
    monkeypatch.setattr(attention_module, "cpu_has_fast_bf16", lambda: fast_cpu)
    expected = BF16_SDPA if fast_cpu else "sdpa"
    wide = {"hidden": 64, "heads": 1, "kv_heads": 1}  # heads of 64 values: where bfloat16 was measured faster
    assert quantize_int8(tiny_model("seq", "bert", attn="sdpa", **wide).eval()).config._attn_implementation == expected
    llama = tiny_model("causal", "llama", attn="sdpa", **wide).eval()
    assert quantize_int8(llama).config._attn_implementation == expected
    # narrow heads (32 values here; MiniLM-L6's too), and models whose attention cannot take it, keep float32
    narrow = tiny_model("seq", "bert", attn="sdpa", hidden=64, heads=2).eval()
    assert quantize_int8(narrow).config._attn_implementation == "sdpa"
    assert quantize_int8(tiny_model("seq", "bert", attn="eager", **wide).eval()).config._attn_implementation == "eager"
    mpnet = quantize_int8(tiny_model("seq", "mpnet", hidden=64, heads=1).eval())
    assert mpnet.config.distilkit["quantization"]["attention"] == "float32"


def test_the_choice_is_kept_with_the_model_so_a_saved_model_reloads_exactly(tmp_path, monkeypatch, caplog):
    for choice in ("bfloat16", "float32"):
        model = quantize_int8(tiny_model("seq", "bert", attn="sdpa").eval(), attention=choice)
        distilkit.save_pretrained(model, tmp_path / choice)
        config = json.loads((tmp_path / choice / "config.json").read_text())
        assert config["distilkit"]["quantization"]["attention"] == choice
        loaded = distilkit.from_pretrained(tmp_path / choice)
        assert loaded.config._attn_implementation == (BF16_SDPA if choice == "bfloat16" else "sdpa")
        with torch.no_grad():
            assert torch.equal(loaded(**inputs()).logits, model(**inputs()).logits)

    # "auto" is kept as what it came to: loaded on a machine without AMX, the model still computes what it did
    monkeypatch.setattr(attention_module, "cpu_has_fast_bf16", lambda: True)
    auto = quantize_int8(tiny_model("seq", "bert", attn="sdpa", hidden=64, heads=1).eval())
    distilkit.save_pretrained(auto, tmp_path / "auto")
    assert json.loads((tmp_path / "auto" / "config.json").read_text())["distilkit"]["quantization"]["attention"] == \
        "bfloat16"
    monkeypatch.setattr(attention_module, "cpu_has_fast_bf16", lambda: False)
    loaded = distilkit.from_pretrained(tmp_path / "auto")
    assert loaded.config._attn_implementation == BF16_SDPA
    assert set_attention(loaded, "auto") == "float32" and loaded.config._attn_implementation == "sdpa"

    # a folder saved before the choice existed runs float32, as it did; bfloat16 asked of eager attention: float32
    config = json.loads((tmp_path / "bfloat16" / "config.json").read_text())
    del config["distilkit"]["quantization"]["attention"]
    (tmp_path / "bfloat16" / "config.json").write_text(json.dumps(config))
    assert distilkit.from_pretrained(tmp_path / "bfloat16").config._attn_implementation == "sdpa"
    eager = distilkit.from_pretrained(tmp_path / "auto", attn_implementation="eager")
    assert eager.config._attn_implementation == "eager" and "cannot run" in caplog.text


def test_bad_values_and_models_that_cannot_take_it_are_refused_before_anything_changes():
    model = tiny_model("seq", "bert", attn="sdpa").eval()
    with pytest.raises(ValueError, match=r"attention='bf16': choose one of \['auto', 'float32', 'bfloat16'\]"):
        quantize_int8(model, attention="bf16")
    eager = tiny_model("seq", "bert", attn="eager")
    with pytest.raises(ValueError, match="attention 'eager'.*Use attention='float32'"):
        quantize_int8(eager, attention="bfloat16")
    mpnet = tiny_model("seq", "mpnet")
    with pytest.raises(ValueError, match="model_type 'mpnet'"):
        quantize_int8(mpnet, attention="bfloat16")
    for untouched in (model, eager, mpnet):
        assert not any(type(m).__name__ == "Int8Linear" for m in untouched.modules())


def test_export_traces_float_attention_and_puts_bfloat16_back(tmp_path):
    pytest.importorskip("onnxruntime")
    from distilkit.export import OnnxRuntimeModel, to_onnx

    model = quantize_int8(tiny_model("seq", "bert", attn="sdpa", initializer_range=0.02).eval(), attention="bfloat16")
    out = to_onnx(model, tmp_path / "onnx")
    assert model.config._attn_implementation == BF16_SDPA
    float_attention = copy.deepcopy(model)
    float_attention.set_attn_implementation("sdpa")
    feeds = {**inputs(), "token_type_ids": torch.zeros(3, 12, dtype=torch.long)}
    with torch.no_grad():
        expected = float_attention(**feeds).logits
    got = OnnxRuntimeModel(out)(**feeds).logits
    assert (torch.as_tensor(got) - expected).abs().max() <= 2e-2 * expected.abs().max()


@pytest.mark.parametrize("family,task,side", [("bert", "seq", "right"), ("llama", "causal", "left")])
def test_padding_is_masked_with_bfloat16_attention(family, task, side):
    # transformers builds the padding mask by the attention implementation's name (and none for a name it does not
    # know): a padded sequence must give what it gives alone. Larger weights than usual, so that attending to the
    # padding would show (measured: 2-5% apart with the mask, 39-117% without).
    model = quantize_int8(tiny_model(task, family, attn="sdpa", initializer_range=0.3).eval(), attention="bfloat16")
    g = torch.Generator().manual_seed(0)
    ids, mask = torch.randint(3, VOCAB, (2, 12), generator=g), torch.ones(2, 12, dtype=torch.long)
    tokens = slice(0, 8) if side == "right" else slice(4, 12)  # left padding for the causal model, as in generation
    mask[1] = 0
    mask[1, tokens] = 1
    with torch.no_grad():
        padded = model(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states[-1][1, tokens]
        alone = model(input_ids=ids[1:, tokens], attention_mask=mask[1:, tokens],
                      output_hidden_states=True).hidden_states[-1][0]
    assert float((padded - alone).norm() / alone.norm()) <= 0.15


def test_what_is_recorded_is_what_runs_when_transformers_declines_the_switch(monkeypatch):
    model = tiny_model("seq", "bert", attn="sdpa", hidden=64, heads=1).eval()
    monkeypatch.setattr(type(model), "set_attn_implementation", lambda self, name: None)  # declines, as it may
    int8 = quantize_int8(model, attention="bfloat16")
    assert int8.config._attn_implementation == "sdpa"
    assert int8.config.distilkit["quantization"]["attention"] == "float32"


def test_compress_keys_its_latency_cache_on_the_int8_attention_products(monkeypatch):
    from distilkit.compress import MachineSettings, measurements
    from distilkit.quantization.attention import float_attention

    config = tiny_model("seq", "bert", attn="sdpa", hidden=64, heads=1).config
    keys, qkv = {}, {}
    for fast in (True, False):
        monkeypatch.setattr(attention_module, "cpu_has_fast_bf16", lambda fast=fast: fast)
        model_key = measurements.measurement_context(config, MachineSettings(2, 8, 1))["model"]
        keys[fast], qkv[fast] = model_key["int8_attention"], model_key.get("int8_qkv")
    assert keys == {True: "bfloat16", False: "float32"}
    # With bfloat16 attention a BERT's int8 twins have their q/k/v product write bfloat16 (faster than the twins
    # cached before it did); float32 attention keeps the key it had.
    assert qkv == {True: "bfloat16", False: None}
    assert float_attention(BF16_SDPA) == "sdpa" and float_attention("eager") == "eager"


def qkv_dtypes(model, feeds) -> set:
    """The dtypes the query/key/value projections wrote in one forward."""
    seen, hooks = set(), []
    for name, module in model.named_modules():
        if name.endswith(("self.query", "self.key", "self.value", "q_lin", "k_lin", "v_lin", "q_proj", "k_proj", "v_proj")):
            hooks.append(module.register_forward_hook(lambda m, i, o: seen.add(o.dtype)))
    with torch.no_grad():
        out = model(**feeds).logits
    for hook in hooks:
        hook.remove()
    assert torch.isfinite(out).all()
    return seen


@pytest.mark.parametrize("family", ["bert", "distilbert"])
def test_bfloat16_attention_has_query_key_and_value_written_in_bfloat16_by_the_int8_product(family):
    """They are rounded to bfloat16 for the products anyway: the int8 product writes them so, and the logits are
    those of rounding its float32 output (within float rounding of the two paths)."""
    model = quantize_int8(tiny_model("seq", family, attn="sdpa").eval(), attention="bfloat16")
    feeds = inputs()
    assert qkv_dtypes(model, feeds) == {torch.bfloat16}
    with torch.no_grad():
        written = model(**feeds).logits
    converted = copy.deepcopy(model)
    for module in converted.modules():
        group = getattr(module, "_shared_input_group", None)
        if group is not None:
            group.write_as(None)
    assert qkv_dtypes(converted, feeds) == {torch.float32}
    with torch.no_grad():
        expected = converted(**feeds).logits
    assert (written - expected).abs().max() <= 1e-3 * expected.abs().max()


def test_query_key_and_value_are_float32_again_when_the_attention_changes(tmp_path):
    model = quantize_int8(tiny_model("seq", "bert", attn="sdpa").eval(), attention="bfloat16")
    feeds = inputs()
    model.save_pretrained(tmp_path / "int8")
    loaded = distilkit.from_pretrained(tmp_path / "int8").eval()
    assert qkv_dtypes(loaded, feeds) == {torch.bfloat16}  # applied on load
    # transformers' own switch (as a user or an exporter would call it): float32 again, and it runs
    loaded.set_attn_implementation("sdpa")
    assert qkv_dtypes(loaded, feeds) == {torch.float32}
    loaded.set_attn_implementation("eager")
    assert qkv_dtypes(loaded, feeds) == {torch.float32}
    set_attention(model, "float32")
    assert qkv_dtypes(model, feeds) == {torch.float32}
    set_attention(model, "bfloat16")
    assert qkv_dtypes(model, feeds) == {torch.bfloat16}


def test_an_int8_model_cast_to_bfloat16_keeps_bfloat16_outputs(tmp_path):
    """The attention gives float32 back only where the int8 product wrote bfloat16 for float32 inputs: a model cast
    to bfloat16 after quantization stays bfloat16 throughout."""
    model = quantize_int8(tiny_model("seq", "bert", attn="sdpa").eval(), attention="bfloat16")
    model.save_pretrained(tmp_path / "int8")
    for cast in (copy.deepcopy(model).to(torch.bfloat16),
                 distilkit.from_pretrained(tmp_path / "int8", torch_dtype=torch.bfloat16).eval()):
        with torch.no_grad():
            out = cast(**inputs(), output_hidden_states=True)
        assert out.hidden_states[-1].dtype == torch.bfloat16 and torch.isfinite(out.logits.float()).all()


def test_the_q_k_v_product_keeps_writing_bfloat16_after_an_export(tmp_path):
    pytest.importorskip("onnxruntime")
    from distilkit.export import to_onnx

    model = quantize_int8(tiny_model("seq", "bert", attn="sdpa").eval(), attention="bfloat16")
    to_onnx(model, tmp_path / "onnx")  # traces eager float attention, then puts everything back
    assert model.config._attn_implementation == BF16_SDPA
    assert qkv_dtypes(model, inputs()) == {torch.bfloat16}


def test_a_llama_keeps_float32_queries_for_its_rotary_embedding():
    model = quantize_int8(tiny_model("causal", "llama", attn="sdpa").eval(), attention="bfloat16")
    assert model.config._attn_implementation == BF16_SDPA
    assert qkv_dtypes(model, inputs()) == {torch.float32}
