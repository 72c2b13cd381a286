"""Export to ONNX Runtime (distilkit.export.to_onnx, `distilkit export`): the graph's logits against the PyTorch
model's, for every family of distilkit/architectures.py, plain, pruned and int8.

Tolerances (measured values on these tiny models, on an Intel Xeon with AVX-512 VNNI, in brackets):
* float export vs the PyTorch model: max absolute logit difference <= 1e-4 [<= 3e-6, logits up to ~5];
* a distilkit int8 folder vs its PyTorch int8 model: max difference <= 1e-3 of the largest logit [<= 5e-7 of it]:
  both run the same integer products. Where distilkit quantizes activations to 7 bits (CPUs without VNNI) the
  reference is distilkit's reference kernel with ONNX's 8-bit activations, the scheme the graph runs;
* `int8=True` (ONNX Runtime's quantize_dynamic) vs the float model: relative L2 error <= 10% [3-5%].

The graphs run the attention products in float32, so int8 models are made here with float32 attention products
(`quantize_int8`'s "auto" would pick bfloat16 on CPUs with AMX); test_int8_attention.py exports one with bfloat16.

Models are built with initializer_range 0.2, so that logits are of order 1 and the relative bounds mean something.
Every comparison runs at a batch and sequence length other than those the graph was traced with, with padding.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch
from helpers.cli_fixtures import tiny_tokenizer
from transformers import AutoConfig, BertConfig, BertTokenizer
from helpers.tiny_models import tiny_model

import distilkit
from distilkit.cli import main
from distilkit.export import MissingExtraError, to_onnx
from distilkit.export.graph import CHECK_SHAPE, TRACE_SHAPE
from distilkit.pruning import prune_ffn, prune_heads
from distilkit.quantization import Int8Linear, kernels, quantize_int8
from distilkit.quantization.kernels import activation_reduce_range

needs_onnx = pytest.mark.skipif(
    not all(importlib.util.find_spec(name) for name in ("onnx", "onnxruntime")),
    reason='needs the onnx extra: pip install ".[onnx]"',
)

# family -> (task, ONNX inputs). The tokenizer's names; token_type_ids only where the model has several types.
FAMILIES = {
    "bert": ("seq", ("input_ids", "attention_mask", "token_type_ids")),
    "roberta": ("seq", ("input_ids", "attention_mask", "token_type_ids")),
    "distilbert": ("seq", ("input_ids", "attention_mask")),
    "mpnet": ("seq", ("input_ids", "attention_mask")),
    "llama": ("causal", ("input_ids", "attention_mask")),
    "qwen2": ("causal", ("input_ids", "attention_mask")),
}
DECODERS = ("llama", "qwen2")
# Non-uniform pruning: per layer a different number of heads (whole key/value groups for the decoders) and of
# FFN neurons (intermediate size 64).
HEADS = {"encoder": {0: [1], 1: [0, 2, 3]}, "decoder": {0: [0, 1]}}
NEURONS = {0: [1, 2, 3, 40, 41], 1: list(range(20))}
SHAPE = (4, 10)  # neither the traced shape nor the shape of the export's own check
assert SHAPE not in (TRACE_SHAPE, CHECK_SHAPE)

FLOAT_TOLERANCE = 1e-4
INT8_TOLERANCE = 1e-3  # of the largest logit
ORT_INT8_RELATIVE_L2 = 0.1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run ~10x faster on one thread than on two when other work shares the two cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def float32_attention(monkeypatch):
    from distilkit.quantization import attention

    monkeypatch.setattr(attention, "cpu_has_fast_bf16", lambda: False)


def build(family: str, prune: bool = False, int8: bool = False, seed: int = 0):
    task, _ = FAMILIES[family]
    model = tiny_model(task, family, seed=seed, attn="eager" if family == "mpnet" else "sdpa",
                       initializer_range=0.2).eval()
    if prune:
        prune_heads(model, HEADS["decoder" if family in DECODERS else "encoder"])
        prune_ffn(model, NEURONS)
    if int8:
        quantize_int8(model, quantize_embeddings=True)
    return model


def tokenizer_for(family: str) -> BertTokenizer:
    """A word-level tokenizer; for models without token types it returns none (as their own tokenizers do)."""
    names = FAMILIES[family][1]
    return BertTokenizer(vocab=tiny_tokenizer().vocab, model_input_names=[n for n in BertTokenizer.model_input_names
                                                                           if n in names])


def save(folder: Path, family: str, **kw) -> Path:
    distilkit.save_pretrained(build(family, **kw), folder, tokenizer=tokenizer_for(family))
    return folder


def batch(names, vocab: int = 100, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, vocab, SHAPE, generator=g)
    mask = torch.ones(SHAPE, dtype=torch.long)
    mask[0, -3:] = 0
    mask[2, -6:] = 0
    ids[mask == 0] = 0
    values = {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.randint(0, 2, SHAPE, generator=g)}
    return {name: values[name] for name in names}


def onnx_logits(folder: Path, inputs: dict) -> torch.Tensor:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(inputs)
    assert all(i.shape == ["batch", "sequence"] for i in session.get_inputs())  # dynamic axes
    return torch.from_numpy(session.run(["logits"], {k: v.numpy() for k, v in inputs.items()})[0])


@torch.no_grad()
def torch_logits(model, inputs: dict) -> torch.Tensor:
    return model(**inputs).logits


def initializers(folder: Path) -> list:
    """Every constant tensor of the graph (initializers and Constant nodes), as numpy arrays."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(folder / "model.onnx")).graph
    tensors = [numpy_helper.to_array(t) for t in graph.initializer]
    tensors += [numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant" for a in n.attribute
                if a.name == "value"]
    return tensors


def op_types(folder: Path) -> list[str]:
    import onnx

    return [node.op_type for node in onnx.load(str(folder / "model.onnx")).graph.node]


@pytest.fixture
def onnx_scheme_reference(monkeypatch):
    """Where distilkit's activations are 7-bit (no VNNI), make PyTorch compute ONNX's 8-bit scheme instead."""
    if activation_reduce_range():
        monkeypatch.setenv(kernels.KERNEL_ENV, "reference")
        monkeypatch.setattr(kernels, "activation_reduce_range", lambda device="cpu": False)


def elements(tensors, dtype_kind: str) -> int:
    """How many values the arrays of a numpy dtype kind ("f" float, "i" signed integer) hold."""
    return sum(t.size for t in tensors if t.dtype.kind == dtype_kind)


# ---- float: plain and pruned models of every family ----


@needs_onnx
@pytest.mark.parametrize("family", FAMILIES)
def test_float_export_matches_pytorch(tmp_path, family):
    source = save(tmp_path / "model", family)
    out = to_onnx(source, tmp_path / "onnx")
    names = FAMILIES[family][1]
    inputs = batch(names)
    expected = torch_logits(distilkit.from_pretrained(source), inputs)
    assert (onnx_logits(out, inputs) - expected).abs().max() <= FLOAT_TOLERANCE
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "config.json", "tokenizer_config.json"} <= names
    assert not [name for name in names if name.endswith((".safetensors", ".py"))]  # no weights, no loading code


@needs_onnx
@pytest.mark.parametrize("family", FAMILIES)
def test_pruned_model_with_different_head_counts_per_layer_exports(tmp_path, family):
    source = save(tmp_path / "model", family, prune=True)
    model = distilkit.from_pretrained(source)
    heads = distilkit.pruning.kept_heads(model)
    assert len({len(layer) for layer in heads}) == 2, heads  # the layers really differ
    out = to_onnx(source, tmp_path / "onnx")
    inputs = batch(FAMILIES[family][1])
    assert (onnx_logits(out, inputs) - torch_logits(model, inputs)).abs().max() <= FLOAT_TOLERANCE
    record = json.loads((out / "config.json").read_text())["distilkit_export"]
    assert record["compressions"] == ["ffn_pruning", "pruning"] and record["int8"] is None


@needs_onnx
def test_layers_without_heads_or_neurons_export(tmp_path, onnx_scheme_reference):
    """A layer may lose every head, another every FFN neuron (their blocks add only a bias), in float and int8."""
    model = build("bert")
    prune_heads(model, {1: [0, 1, 2, 3]})
    prune_ffn(model, {0: list(range(64))})
    inputs = batch(FAMILIES["bert"][1])
    out = to_onnx(model, tmp_path / "float")
    assert (onnx_logits(out, inputs) - torch_logits(model, inputs)).abs().max() <= FLOAT_TOLERANCE
    quantize_int8(model)
    out = to_onnx(model, tmp_path / "int8")
    expected = torch_logits(model, inputs)
    assert (onnx_logits(out, inputs) - expected).abs().max() <= INT8_TOLERANCE * expected.abs().max()


@needs_onnx
def test_config_is_plain_transformers(tmp_path):
    """config.json is the base family's: transformers reads it without remote code (what optimum does)."""
    source = save(tmp_path / "model", "bert", prune=True, int8=True)
    out = to_onnx(source, tmp_path / "onnx")
    raw = json.loads((out / "config.json").read_text())
    assert raw["model_type"] == "bert" and "auto_map" not in raw and "distilkit" not in raw
    assert raw["distilkit_export"]["int8"] == "distilkit"
    config = AutoConfig.from_pretrained(out)  # no remote code: model_type "bert", no auto_map
    assert type(config) is BertConfig and config.use_cache is False and config.num_labels == 3


@needs_onnx
@pytest.mark.parametrize("family", ["bert", "llama"])
def test_the_tokenizers_output_feeds_the_session(tmp_path, family):
    import onnxruntime
    from transformers import AutoTokenizer

    out = to_onnx(save(tmp_path / "model", family), tmp_path / "onnx")
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = dict(tokenizer(["good film", "a very dull and boring day"], padding=True, return_tensors="np"))
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    (logits,) = session.run(["logits"], encoded)
    assert logits.shape[0] == 2


# ---- int8 ----


@needs_onnx
@pytest.mark.parametrize("family", FAMILIES)
def test_int8_folder_exports_its_int8_weights_as_they_are(tmp_path, family, onnx_scheme_reference):
    source = save(tmp_path / "model", family, int8=True)
    model = distilkit.from_pretrained(source)
    out = to_onnx(source, tmp_path / "onnx")

    ops = op_types(out)
    linears = [m for m in model.modules() if isinstance(m, Int8Linear)]
    assert ops.count("MatMulInteger") == ops.count("DynamicQuantizeLinear") == len(linears) > 0
    # Every int8 value of the model is in the file as int8, and no float copy of them: the float values in the
    # file are the model's float tensors (norms, biases, scales, the head) plus small constants.
    state = model.state_dict()
    tensors = [t for t in initializers(out) if t.ndim > 0]  # not the scalar zero points of the weights
    int8_in_model = sum(t.numel() for t in state.values() if t.dtype == torch.int8)
    float_in_model = sum(t.numel() for t in state.values() if t.is_floating_point())
    assert elements([t for t in tensors if t.dtype.itemsize == 1], "i") == int8_in_model
    assert elements(tensors, "f") <= float_in_model + 1000 < float_in_model + int8_in_model

    inputs = batch(FAMILIES[family][1])
    expected = torch_logits(model, inputs)
    assert (onnx_logits(out, inputs) - expected).abs().max() <= INT8_TOLERANCE * expected.abs().max()
    assert json.loads((out / "config.json").read_text())["distilkit_export"]["int8"] == "distilkit"


@needs_onnx
def test_exporting_an_int8_model_in_memory_leaves_its_run_time_fusions_in_place(tmp_path):
    """The trace undoes the PyTorch path's run-time fusions (q/k/v as one product, GELU inside the FFN's product)
    and puts them back: the model runs as before, and the graph matches it."""
    from distilkit.quantization.layer import FusedActivation

    model = distilkit.from_pretrained(save(tmp_path / "model", "bert", int8=True))
    fusions = (sum(isinstance(m, FusedActivation) for m in model.modules()),
               sum(getattr(m, "_shared_input_group", None) is not None for m in model.modules()))
    assert fusions[0] > 0 and fusions[1] > 0
    inputs = batch(FAMILIES["bert"][1])
    before = torch_logits(model, inputs)
    out = to_onnx(model, tmp_path / "onnx", tokenizer=tokenizer_for("bert"))
    assert (sum(isinstance(m, FusedActivation) for m in model.modules()),
            sum(getattr(m, "_shared_input_group", None) is not None for m in model.modules())) == fusions
    assert torch.equal(torch_logits(model, inputs), before)
    assert (onnx_logits(out, inputs) - before).abs().max() <= INT8_TOLERANCE * before.abs().max()


@needs_onnx
@pytest.mark.parametrize("family", ["bert", "qwen2"])
def test_int8_true_is_onnxruntimes_dynamic_quantization(tmp_path, family):
    source = save(tmp_path / "model", family)
    out = to_onnx(source, tmp_path / "onnx", int8=True)
    assert "MatMulInteger" in op_types(out)
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.onnx"]  # the float graph is not left behind
    inputs = batch(FAMILIES[family][1])
    expected = torch_logits(distilkit.from_pretrained(source), inputs)
    got = onnx_logits(out, inputs)
    assert (got - expected).norm() / expected.norm() <= ORT_INT8_RELATIVE_L2
    assert json.loads((out / "config.json").read_text())["distilkit_export"]["int8"] == "onnxruntime"


# ---- the command ----


@needs_onnx
def test_cli_exports_and_replaces_an_earlier_export(tmp_path, capsys):
    source = save(tmp_path / "model", "distilbert", prune=True, int8=True)
    out = tmp_path / "onnx"
    assert main(["export", str(source), "--output_dir", str(out)]) == 0
    assert "model.onnx" in capsys.readouterr().out
    (out / "stale.txt").write_text("from before")
    assert main(["export", str(source), "--output_dir", str(out), "--int8", "--opset", "18"]) == 0
    assert not (out / "stale.txt").exists()  # replaced whole
    record = json.loads((out / "config.json").read_text())["distilkit_export"]
    assert record["int8"] == "distilkit+onnxruntime" and record["opset"] == 18
    inputs = batch(FAMILIES["distilbert"][1])
    expected = torch_logits(distilkit.from_pretrained(source), inputs)
    assert (onnx_logits(out, inputs) - expected).norm() / expected.norm() <= ORT_INT8_RELATIVE_L2


def test_cli_needs_a_folder_and_an_output_dir(tmp_path, capsys):
    assert main(["export", "--output_dir", str(tmp_path / "onnx")]) == 2
    assert "distilkit export FOLDER --output_dir OUT" in capsys.readouterr().err
    assert main(["export", str(tmp_path)]) == 2
    assert "--output_dir" in capsys.readouterr().err
    assert main(["export", str(tmp_path), "--output_dir", str(tmp_path / "x"), "--opset", "9"]) == 2
    assert "14..20" in capsys.readouterr().err


# ---- errors before any work ----


def test_missing_extra_is_named_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now raises ImportError
    monkeypatch.setattr("distilkit.export.folder._load_model", lambda folder: pytest.fail("loaded a model"))
    out = tmp_path / "onnx"
    with pytest.raises(MissingExtraError, match=r'pip install "distilkit\[onnx\]"') as caught:
        to_onnx(tmp_path / "anything", out)
    assert isinstance(caught.value, ImportError) and "onnxruntime" in str(caught.value)
    assert main(["export", str(tmp_path / "anything"), "--output_dir", str(out)]) == 2
    assert "distilkit[onnx]" in capsys.readouterr().err
    assert not out.exists()


@needs_onnx
def test_bad_sources_and_outputs_fail_clearly_before_writing(tmp_path):
    source = save(tmp_path / "model", "bert")
    not_a_model = tmp_path / "notes"
    not_a_model.mkdir()
    (not_a_model / "readme.txt").write_text("hello")
    a_file = tmp_path / "file.onnx"
    a_file.write_text("keep me")
    cases = [
        ((not_a_model, tmp_path / "o1"), "is not a model folder: it has no config.json"),
        ((tmp_path / "missing", tmp_path / "o2"), "does not exist"),
        ((source, a_file), "is a file"),
        ((source, not_a_model), r"holds other files \(readme.txt\) and no model.onnx"),
        ((source, source), "is the model folder itself"),
        ((source, a_file / "sub"), "is a file"),
    ]
    for (src, out), message in cases:
        with pytest.raises(ValueError, match=message):
            to_onnx(src, out)
    with pytest.raises(ValueError, match=r"opset=9 is not supported; choose one of 14\.\.20"):
        to_onnx(source, tmp_path / "o3", opset=9)
    assert a_file.read_text() == "keep me" and sorted(p.name for p in not_a_model.iterdir()) == ["readme.txt"]
    assert not any((tmp_path / name).exists() for name in ("o1", "o2", "o3"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".distilkit-staging")]


@needs_onnx
def test_unsupported_family_is_named_with_the_supported_ones(tmp_path):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(ValueError, match=r"'gpt2' cannot be exported: distilkit exports .*bert, roberta.*qwen2"):
        to_onnx(tmp_path / "gpt2", tmp_path / "onnx")
    assert not (tmp_path / "onnx").exists()


@needs_onnx
def test_a_failed_export_leaves_the_earlier_one_whole(tmp_path, monkeypatch):
    source = save(tmp_path / "model", "bert")
    out = to_onnx(source, tmp_path / "onnx")
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    def broken_config(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("distilkit.export.folder._write_config", broken_config)
    with pytest.raises(RuntimeError, match="disk full"):
        to_onnx(source, out, int8=True)  # fails after model.onnx was written (into the staging folder)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".distilkit-staging")]
