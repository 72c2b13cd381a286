"""Inference engines (`distilkit.engines`): an export run by ONNX Runtime is called like the PyTorch model and
gives its logits; `on_engine` exports and cleans up; `compress --engine onnxruntime` times its twins and its
result in ONNX Runtime (on a fake clock: cost read off the graph, never wall-clock) and deploys onnx/;
`evaluate` measures in the engine; bad engines fail before any work."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import yaml
from helpers.cli_fixtures import tiny_recipe
from helpers.fake_timing import timing_by
from helpers.tiny_models import tiny_model

pytest.importorskip("onnxruntime")

import distilkit.measure  # noqa: E402
from distilkit.cli import main  # noqa: E402
from distilkit.compress import MachineSettings  # noqa: E402
from distilkit.engines import ENGINES, on_engine  # noqa: E402
from distilkit.export import OnnxRuntimeModel, to_onnx  # noqa: E402
from distilkit.pipeline.recipe import EvalArguments  # noqa: E402
from distilkit.quantization import quantize_int8  # noqa: E402


def test_an_export_runs_like_the_model_it_came_from(tmp_path):
    # Larger initial weights than the default 0.02: logits far enough from zero that the mask shows.
    model = tiny_model("seq", "bert", layers=2, num_labels=3, initializer_range=0.3).eval()
    folder = to_onnx(model, tmp_path / "onnx")
    runner = OnnxRuntimeModel(folder, threads=1)
    ids = torch.randint(5, 90, (3, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 6:] = 0
    with torch.no_grad():
        expected = model(input_ids=ids, attention_mask=mask).logits
        without_mask = model(input_ids=ids).logits
    assert runner.config.model_type == "bert" and "token_type_ids" in runner.input_names
    assert torch.allclose(runner(input_ids=ids, attention_mask=mask).logits, expected, atol=1e-4)
    # A missing attention_mask counts every token and a missing token_type_ids is zeros, as in PyTorch.
    assert torch.allclose(runner(input_ids=ids).logits, without_mask, atol=1e-4)
    assert not torch.allclose(without_mask, expected, atol=1e-3)  # the mask mattered


def test_a_folder_without_a_graph_and_bad_threads_are_refused(tmp_path):
    with pytest.raises(ValueError, match="holds no model.onnx: pass a folder written by distilkit.export.to_onnx"):
        OnnxRuntimeModel(tmp_path)
    folder = to_onnx(tiny_model("seq", "bert", layers=1), tmp_path / "onnx")
    with pytest.raises(ValueError, match="threads must be a positive integer; got 0"):
        OnnxRuntimeModel(folder, threads=0)


def test_on_engine_exports_every_model_and_removes_the_exports_afterwards(tmp_path):
    float_model = tiny_model("seq", "bert", layers=2, num_labels=3).eval()
    int8_model = quantize_int8(copy.deepcopy(float_model))
    deployed = to_onnx(int8_model, tmp_path / "deployed")
    ids = torch.randint(5, 90, (2, 7), generator=torch.Generator().manual_seed(1))
    models = {"float": float_model, "int8": int8_model}
    with on_engine(models, "torch", threads=1) as same:
        assert same == models and all(same[name] is models[name] for name in models)
    with on_engine(models, "onnxruntime", threads=1, exported={"int8": deployed}) as running:
        assert all(isinstance(m, OnnxRuntimeModel) for m in running.values())
        assert running["int8"].folder == deployed  # the given export, not a new one
        scratch = running["float"].folder
        assert scratch.is_dir() and scratch.parent != deployed.parent
        for name, model in models.items():
            with torch.no_grad():
                assert torch.allclose(running[name](input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4)
    assert not scratch.exists() and deployed.is_dir()  # the temporary export is gone, the given one kept
    with pytest.raises(ValueError, match=r"exported names \['teacher'\] are not among the models"), \
            on_engine(models, "onnxruntime", 1, exported={"teacher": deployed}):
        pass


@pytest.mark.parametrize("make", [lambda e: MachineSettings(2, 8, 1, engine=e), lambda e: EvalArguments(engine=e)])
def test_an_unknown_engine_is_refused_with_the_choices(make):
    for engine in ENGINES:
        make(engine)
    with pytest.raises(ValueError, match="engine='tensorrt' is not an inference engine distilkit measures in; "
                                         "choose one of torch, onnxruntime"):
        make("tensorrt")


def test_a_missing_onnx_extra_is_named_before_any_work(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what `import onnxruntime` finds when not installed
    with pytest.raises(ImportError, match=r"needs onnxruntime, which is not installed. Install the extra: pip "
                                          r"install \"distilkit\[onnx\]\""):
        MachineSettings(2, 8, 1, engine="onnxruntime")
    MachineSettings(2, 8, 1)  # PyTorch needs no extra


# ---- compress and evaluate in ONNX Runtime ----


def graph_cost_ms(model) -> float:
    """A fake latency for an export: 1 ms per 10 KB of its weights outside the embeddings (int8 weights count a
    byte per value), so fewer layers, heads or neurons and int8 all cost less, as they run faster."""
    import onnx
    from onnx.helper import tensor_dtype_to_np_dtype

    assert isinstance(model, OnnxRuntimeModel), f"timed in PyTorch, not ONNX Runtime: {type(model).__name__}"
    graph = onnx.load(str(model.folder / "model.onnx")).graph
    weights = sum(int(torch.tensor(t.dims).prod()) * tensor_dtype_to_np_dtype(t.data_type).itemsize
                  for t in graph.initializer if "embeddings" not in t.name)
    return 1 + weights / 10_000


def test_compress_plans_times_and_deploys_in_onnx_runtime(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(graph_cost_ms, calls=calls))
    path = tiny_recipe(tmp_path, training={"prune_every_steps": 1, "max_steps": 2, "prune_heads_method": "magnitude"})
    recipe = yaml.safe_load(path.read_text())
    del recipe["model"]["student_layers"]
    recipe["compress"] = {"target_speedup": 2.0, "latency_cache": str(tmp_path / "latency.json"),
                          "candidate_layer_fractions": [1.0, 0.5], "candidate_head_fractions": [1.0, 0.5],
                          "candidate_ffn_fractions": [1.0, 0.5]}
    path.write_text(yaml.safe_dump(recipe))
    assert main(["compress", "--config", str(path), "--engine", "onnxruntime"]) == 0
    out = tmp_path / "run"
    plan = json.loads((out / "plan.json").read_text())
    result = json.loads((out / "results.json").read_text())
    assert plan["machine"]["engine"] == "onnxruntime"
    assert (out / "onnx" / "model.onnx").is_file() and (out / "onnx" / "distilkit_stage.json").is_file()
    final = calls[-1]  # the teacher and every stage, the last one timed as the deployed export itself
    assert list(final)[0] == "teacher" and final[list(final)[-1]].folder == out / "onnx"
    assert result["verdict"] == "met" and result["stages"][-1]["speedup"] >= 2.0
    assert result["onnx"]["folder"] == "onnx" and 0 <= result["onnx"]["metrics"]["accuracy"] <= 1
    text = (out / "results.md").read_text()
    assert "run by ONNX Runtime" in text and "Deployed: onnx/ (model.onnx" in text
    # Measurements in another engine are cached apart: the same plan for PyTorch times its twins again.
    cache = json.loads((tmp_path / "latency.json").read_text())["measurements"]
    assert cache and all(json.loads(key)["settings"]["engine"] == "onnxruntime" for key in cache)


def test_evaluate_measures_latency_in_the_engine(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(graph_cost_ms, calls=calls))
    path = tiny_recipe(tmp_path, evaluation={"engine": "onnxruntime"})
    recipe = yaml.safe_load(path.read_text())
    recipe["evaluation"]["eval_models"] = [recipe["model"]["teacher"]]
    path.write_text(yaml.safe_dump(recipe))
    assert main(["evaluate", "--config", str(path)]) == 0
    assert calls and all(isinstance(m, OnnxRuntimeModel) for m in calls[-1].values())
    results = (tmp_path / "run" / "results.md").read_text()
    assert "in onnxruntime (each model exported to ONNX)" in results
