"""distilkit.compress: model shapes, random-weight twins and their exact sizes, the measurement cache, and the
latency model (fit, predict, held-out error), on tiny configs. No latency is really timed: the measuring function
is replaced by a deterministic fake wherever measurements are taken."""

from __future__ import annotations

import json
import random
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers as tf
from helpers.fake_timing import timing_by
from helpers.tiny_models import tiny_config

from distilkit import measure
from distilkit.architectures import get_architecture
from distilkit.compress import MachineSettings, ModelShape
from distilkit.compress import measurements
from distilkit.compress.grid import candidate_shapes
from distilkit.compress.latency_model import LatencyModel, split_held_out
from distilkit.compress.measurements import Measurement, MeasurementCache, measure_shapes
from distilkit.compress.twin import random_twin, size_bytes
from distilkit.measure import folder_size_mb
from distilkit.pruning import kept_heads, kept_neurons
from distilkit.quantization import Int8Embedding, Int8Linear

SETTINGS = MachineSettings(batch_size=2, seq_len=8, threads=1)


def config(family: str = "bert", layers: int = 4):
    """hidden 32, 4 heads (Llama: 2 key/value heads), FFN width 64."""
    return tiny_config(family, layers=layers)


def fake_latency(shape: ModelShape) -> float:
    return 1.0 + shape.num_layers + 0.5 * sum(shape.heads) + 0.01 * sum(shape.ffn) + 3.0 * shape.int8


@pytest.fixture
def measured(monkeypatch):
    """Times each twin as `fake_latency` of its shape on a fake clock (helpers.fake_timing); records every call."""
    calls = []

    def fake(models, *args, **kwargs):
        calls.append([ModelShape.of(model) for model in models.values()])
        return timing(models, *args, **kwargs)

    timing = timing_by(lambda model: fake_latency(ModelShape.of(model)))
    monkeypatch.setattr(measure, "interleaved_timing", fake)
    return calls


# ------------------------------------------------------------------------------------------ shapes and twins

@pytest.mark.parametrize("family", ["bert", "mpnet", "llama", "qwen2"])
@pytest.mark.parametrize("int8,int8_embeddings", [(False, False), (True, False), (True, True)])
def test_twin_has_exactly_the_requested_shape(family, int8, int8_embeddings):
    shape = ModelShape(heads=(4, 2, 0), ffn=(64, 10, 0), int8=int8, int8_embeddings=int8_embeddings)
    twin = random_twin(config(family), shape)

    assert [len(heads) for heads in kept_heads(twin)] == [4, 2, 0]
    assert [len(neurons) for neurons in kept_neurons(twin)] == [64, 10, 0]
    assert any(isinstance(m, Int8Linear) for m in twin.modules()) == int8
    assert any(isinstance(m, Int8Embedding) for m in twin.modules()) == int8_embeddings
    assert ModelShape.of(twin) == shape
    assert not twin.training
    logits = twin(input_ids=torch.randint(5, 100, (2, 8))).logits
    assert logits.shape == (2, 2)


@pytest.mark.parametrize("family", ["bert", "distilbert", "mpnet", "llama", "qwen2"])
def test_twin_weights_are_filled_like_transformers_init_not_left_uninitialised(family, monkeypatch):
    import torch.nn.init

    drawn = []  # transformers' init is skipped: drawing the weights cost most of building a twin
    monkeypatch.setattr(torch.Tensor, "normal_", lambda t, *a, **k: drawn.append(t.shape) or t)
    twin = random_twin(config(family), ModelShape(heads=(4, 2), ffn=(64, 10)))
    assert drawn == []
    for name, parameter in twin.named_parameters():
        values = parameter.detach()
        if name.endswith("bias"):
            assert torch.equal(values, torch.zeros_like(values)), name
        elif values.dim() < 2:
            assert torch.equal(values, torch.ones_like(values)), name  # norm weights
        else:
            assert torch.isfinite(values).all() and values.std() == pytest.approx(0.02, rel=0.25), name
    layer = twin.base_model.get_submodule(get_architecture(twin).layers)[0]
    matrices = [p.detach() for p in layer.parameters() if p.dim() == 2 and p.shape == (32, 32)]
    assert len(matrices) >= 2 and not torch.equal(matrices[0], matrices[1])  # not one block of values repeated
    logits = twin(input_ids=torch.randint(5, 100, (2, 8))).logits
    assert torch.isfinite(logits).all() and logits.std() > 0


@pytest.mark.parametrize("family", ["bert", "llama"])
@pytest.mark.parametrize("int8,int8_embeddings", [(False, False), (True, False), (True, True)])
def test_size_bytes_is_the_size_of_the_saved_weights(tmp_path, family, int8, int8_embeddings):
    shape = ModelShape(heads=(2, 4), ffn=(7, 64), int8=int8, int8_embeddings=int8_embeddings)
    random_twin(config(family), shape).save_pretrained(tmp_path)
    (weights,) = tmp_path.glob("*.safetensors")
    header_length = struct.unpack("<Q", weights.read_bytes()[:8])[0]

    expected = size_bytes(config(family), shape)
    assert weights.stat().st_size - 8 - header_length == expected  # safetensors: 8-byte length, header, tensors
    assert 0 < folder_size_mb(tmp_path) * 1e6 - expected < 10_000  # the header is all the rest


def test_size_bytes_shrinks_with_int8_and_pruning():
    full = ModelShape((4,) * 4, (64,) * 4)
    sizes = [size_bytes(config(), s) for s in (full, ModelShape((2,) * 4, (64,) * 4), ModelShape((4,) * 2, (64,) * 2),
                                               ModelShape((4,) * 4, (64,) * 4, int8=True),
                                               ModelShape((4,) * 4, (64,) * 4, int8=True, int8_embeddings=True))]
    assert sizes[0] > max(sizes[1:3]) and sizes[0] > sizes[3] > sizes[4]


def test_shape_of_a_model_reads_its_structure_and_precision():
    twin = random_twin(config(), ModelShape((3, 4, 4, 1), (64, 5, 64, 64)))
    assert ModelShape.of(twin) == ModelShape((3, 4, 4, 1), (64, 5, 64, 64))
    assert ModelShape.of(twin, int8=True).int8 and not ModelShape.of(twin, int8=True).int8_embeddings
    quantized = random_twin(config(), ModelShape((4,), (64,), int8=True, int8_embeddings=True))
    assert ModelShape.of(quantized) == ModelShape((4,), (64,), True, True)
    with pytest.raises(ValueError, match="already int8"):
        ModelShape.of(quantized, int8=False)


def test_twin_of_a_compressed_config_starts_from_the_plain_architecture():
    pruned = random_twin(config(), ModelShape((2, 2), (64, 64), int8=True))
    twin = random_twin(pruned.config, ModelShape((4,), (32,)))
    assert ModelShape.of(twin) == ModelShape((4,), (32,))


def test_twin_of_a_config_without_padding_token_runs_batches():
    llama = config("llama")
    llama.pad_token_id = None  # as in most Llama-family configs
    twin = random_twin(llama, ModelShape((2, 4), (64, 8)))
    assert twin(input_ids=torch.randint(5, 100, (3, 8))).logits.shape == (3, 2)
    assert llama.pad_token_id is None  # the caller's config is left alone


def test_shape_key_and_dict_round_trip():
    shape = ModelShape((4, 2), (64, 32), int8=True, int8_embeddings=True)
    assert shape.key() == "L2-h4.2-f64.32-int8+emb"
    assert ModelShape((4,), (64,)).key() == "L1-h4-f64-float"
    assert ModelShape.from_dict(json.loads(json.dumps(shape.to_dict()))) == shape
    assert ModelShape([4, 2], [64, 32]) == ModelShape((4, 2), (64, 32))  # lists become tuples: hashable, equal


# ------------------------------------------------------------------------------------------ measurement cache

def test_measurements_are_cached_and_not_measured_again(tmp_path, measured):
    cache = MeasurementCache(tmp_path / "latency.json")
    shapes = candidate_shapes(config(), layer_fractions=(1, 0.5), head_fractions=(1,), ffn_fractions=(1,))
    first = measure_shapes(config(), shapes, SETTINGS, cache, rounds=1, twins_at_once=4)

    assert [m.median_ms for m in first] == [fake_latency(s) for s in shapes]
    assert [m.shape for m in first] == shapes
    assert sorted(len(group) for group in measured) == [2, 4]  # 6 shapes, at most 4 twins at once
    measured.clear()
    again = measure_shapes(config(), shapes, SETTINGS, cache, rounds=1)
    assert again == first and measured == []

    stored = json.loads((tmp_path / "latency.json").read_text())
    assert stored["format"] == 2 and len(stored["measurements"]) == len(shapes)


def test_a_new_shape_alone_is_measured(tmp_path, measured):
    cache = MeasurementCache(tmp_path / "latency.json")
    old, new = ModelShape((4,), (64,)), ModelShape((2,), (64,))
    measure_shapes(config(), [old], SETTINGS, cache, rounds=1)
    measured.clear()
    measure_shapes(config(), [old, new], SETTINGS, cache, rounds=1)
    assert measured == [[new]]


@pytest.mark.parametrize("change", ["machine", "torch", "settings", "config"])
def test_a_measurement_from_another_context_is_never_returned(tmp_path, measured, monkeypatch, change):
    cache = MeasurementCache(tmp_path / "latency.json")
    shape = ModelShape((4,), (64,))
    settings, model_config = SETTINGS, config()
    measure_shapes(model_config, [shape], settings, cache, rounds=1)
    measured.clear()
    if change == "machine":
        other = {**measure.machine_fingerprint(), "cpu_model": "Another CPU", "avx512_vnni": True}
        monkeypatch.setattr(measure, "machine_fingerprint", lambda: other)
    elif change == "torch":
        monkeypatch.setattr(measure.torch, "__version__", "9.9.9")
    elif change == "settings":
        settings = MachineSettings(batch_size=2, seq_len=8, threads=2)
    else:
        model_config = tiny_config("bert", layers=4, hidden=64)
    measure_shapes(model_config, [shape], settings, cache, rounds=1)
    assert measured == [[shape]]
    assert len(json.loads(cache.path.read_text())["measurements"]) == 2


def test_cache_write_is_atomic(tmp_path, monkeypatch):
    cache = MeasurementCache(tmp_path / "latency.json")
    cache.put({"a": Measurement(ModelShape((4,), (64,)), 2.0, 1.5)})
    before = cache.path.read_text()

    def write_half_then_die(self, text, *args, **kwargs):
        with open(self, "w") as handle:
            handle.write(text[: len(text) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(Path, "write_text", write_half_then_die)
    with pytest.raises(KeyboardInterrupt):
        cache.put({"b": Measurement(ModelShape((2,), (64,)), 1.0, 0.5)})
    monkeypatch.undo()
    assert cache.path.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["latency.json"]  # no staging file left behind
    assert cache.get("a") == Measurement(ModelShape((4,), (64,)), 2.0, 1.5) and cache.get("b") is None


@pytest.mark.parametrize("content", ["{not json", json.dumps({"something": "else"})])
def test_an_unreadable_cache_is_a_clear_error(tmp_path, content):
    path = tmp_path / "latency.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=f"Latency cache {path}"):
        MeasurementCache(path).get("any")



# ------------------------------------------------------------------------------------------ a busy machine

@pytest.fixture
def waits(monkeypatch):
    """The pauses before a busy group is measured again, recorded instead of slept."""
    paused = []
    monkeypatch.setattr(measurements, "wait", paused.append)
    return paused


def timing_with_load(monkeypatch, busy_calls: set[int]):
    """Twins timed as `fake_latency` on a fake clock; the measurements numbered in `busy_calls` (from 0) see other
    processes holding 1.5 cores. Returns the list of measuring calls."""
    calls = []
    quiet, busy = (timing_by(lambda model: fake_latency(ModelShape.of(model)), other_cores=cores) for cores in (0, 1.5))

    def timing(models, *args, **kwargs):
        calls.append(list(models))
        return (busy if len(calls) - 1 in busy_calls else quiet)(models, *args, **kwargs)

    monkeypatch.setattr(measure, "interleaved_timing", timing)
    return calls


def test_a_busy_group_is_measured_again_after_a_pause(tmp_path, monkeypatch, waits):
    calls = timing_with_load(monkeypatch, busy_calls={0})
    shapes = [ModelShape((4,), (64,)), ModelShape((2,), (64,))]
    measured = measure_shapes(config(), shapes, SETTINGS, MeasurementCache(tmp_path / "latency.json"), rounds=3,
                              reference=shapes[0])
    assert len(calls) == 2 and waits == [measurements.BUSY_WAIT_S]
    assert all(m.busy is None for m in measured) and measurements.busy_note(measured) is None
    assert [m.latency_ms for m in measured] == [fake_latency(s) for s in shapes]
    assert measured[1].reference_ms == fake_latency(shapes[0]) and measured[1].spread == 0


def test_a_group_that_stays_busy_is_kept_flagged_and_measured_again_next_time(tmp_path, monkeypatch, waits):
    calls = timing_with_load(monkeypatch, busy_calls={0, 1, 2})
    cache = MeasurementCache(tmp_path / "latency.json")
    shapes = [ModelShape((4,), (64,)), ModelShape((2,), (64,))]
    measured = measure_shapes(config(), shapes, SETTINGS, cache, rounds=3, busy_tries=3, busy_wait_s=2.0)
    assert len(calls) == 3 and waits == [2.0, 2.0]
    assert all("other processes used 1.50 of the" in m.busy for m in measured)
    note = measurements.busy_note(measured)
    assert note.startswith("2 of 2 twins were timed on a busy machine") and "Plan again on quiet cores" in note
    stored = json.loads(cache.path.read_text())["measurements"]
    assert all(entry["busy"] for entry in stored.values())  # kept, with the reason

    again = measure_shapes(config(), shapes, SETTINGS, cache, rounds=3)  # the machine is quiet now
    assert len(calls) == 4 and all(m.busy is None for m in again)
    assert measure_shapes(config(), shapes, SETTINGS, cache, rounds=3) == again and len(calls) == 4


def test_an_older_cache_of_medians_is_measured_again_and_rewritten(tmp_path, measured, caplog):
    path = tmp_path / "latency.json"
    shape = ModelShape((4,), (64,))
    key = measurements.measurement_key(measurements.measurement_context(config(), SETTINGS), shape)
    path.write_text(json.dumps({"format": 1, "measurements": {key: {"shape": shape.to_dict(), "median_ms": 99.0,
                                                                     "min_ms": 98.0, "reference_ms": None}}}))
    with caplog.at_level("WARNING", logger="distilkit.compress"):
        (again,) = measure_shapes(config(), [shape], SETTINGS, MeasurementCache(path), rounds=1)
    assert measured == [[shape]] and again.latency_ms == fake_latency(shape)
    assert "older distilkit (format 1)" in caplog.text
    stored = json.loads(path.read_text())
    assert stored["format"] == 2 and stored["measurements"][key]["estimate_ms"] == fake_latency(shape)


def test_a_measurement_made_by_hand_counts_its_median():
    assert Measurement(ModelShape((4,), (64,)), 2.0, 1.5).latency_ms == 2.0
    measured = Measurement(ModelShape((4,), (64,)), 2.0, 1.5, reference_ms=4.0, estimate_ms=1.7, spread=0.05)
    assert measured.latency_ms == 1.7
    assert Measurement.from_dict(json.loads(json.dumps(measured.to_dict()))) == measured


# ------------------------------------------------------------------------------------------------ the model

COEFFICIENTS = {
    "float": {"constant": 2.0, "layers": 1.5, "heads": 0.25, "neurons": 0.004},
    "int8": {"constant": 1.0, "layers": 0.8, "heads": 0.2, "neurons": 0.001, "int8_embeddings": 0.3},
}


def reference_latency(shape: ModelShape) -> float:
    """The latency the known coefficients give, written out by hand."""
    c = COEFFICIENTS["int8" if shape.int8 else "float"]
    value = (c["constant"] + c["layers"] * shape.num_layers + c["heads"] * sum(shape.heads)
             + c["neurons"] * sum(shape.ffn))
    return value + (c["int8_embeddings"] if shape.int8_embeddings else 0.0)


def synthetic(shapes, scale=lambda shape: 1.0):
    return [Measurement(s, reference_latency(s) * scale(s), reference_latency(s) * scale(s)) for s in shapes]


def grid(family="bert", layers=6):
    return candidate_shapes(config(family, layers))


def test_fit_recovers_known_coefficients():
    model = LatencyModel.fit(synthetic(grid()))
    for precision, expected in COEFFICIENTS.items():
        assert model.coefficients[precision] == pytest.approx(expected, rel=1e-6, abs=1e-9)
    uneven = ModelShape((4, 1, 3), (64, 0, 17), int8=True, int8_embeddings=True)
    assert model.predict(uneven) == pytest.approx(reference_latency(uneven))


def test_evaluate_reports_the_held_out_error():
    fit_part, held_out = split_held_out(synthetic(grid()), held_out=0.25, seed=0)
    model = LatencyModel.fit(fit_part)
    exact = model.evaluate(held_out)
    assert exact["count"] == len(held_out) and exact["max_abs_rel_error"] == pytest.approx(0, abs=1e-9)

    # Held-out measurements 10% slower than the coefficients say, and one 25% faster.
    off = {m.shape: (0.75 if i == 0 else 1.1) for i, m in enumerate(held_out)}
    report = model.evaluate(synthetic(off, scale=off.get))
    errors = [abs(1 / scale - 1) for scale in off.values()]  # |predicted - measured| / measured
    assert report["mean_abs_rel_error"] == pytest.approx(sum(errors) / len(errors))
    assert report["max_abs_rel_error"] == pytest.approx(1 / 0.75 - 1)
    assert report["worst_shape"] == held_out[0].shape.key()


def test_fit_minimises_relative_error():
    # Measurements off by up to +-20%: the fit is the least-squares solution of the relative errors,
    # min_c sum(((X c - y) / y)^2), computed here from its normal equations.
    shapes = [s for s in grid() if not s.int8]
    noise = random.Random(0)
    noisy = synthetic(shapes, scale={s: noise.uniform(0.8, 1.2) for s in shapes}.get)
    features = torch.tensor([[1, s.num_layers, sum(s.heads), sum(s.ffn)] for s in shapes], dtype=torch.float64)
    measured = torch.tensor([m.median_ms for m in noisy], dtype=torch.float64)
    weights = torch.diag(1 / measured**2)
    reference = torch.linalg.solve(features.T @ weights @ features, features.T @ weights @ measured)

    model = LatencyModel.fit(noisy)
    assert list(model.coefficients["float"].values()) == pytest.approx(reference.tolist(), rel=1e-6)
    assert "int8" not in model.coefficients


def test_latency_model_dict_round_trip():
    model = LatencyModel.fit(synthetic(grid("llama")))
    again = LatencyModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again == model
    assert again.predict(grid("llama")[5]) == model.predict(grid("llama")[5])


def test_candidate_shapes_are_a_uniform_grid_the_config_can_have():
    shapes = candidate_shapes(config("bert", layers=6))
    assert len(shapes) == 3 * 3 * 3 * 3 == len(set(shapes))
    assert {s.num_layers for s in shapes} == {6, 4, 2}
    assert {s.heads[0] for s in shapes} == {4, 2, 1} and {s.ffn[0] for s in shapes} == {64, 32, 16}
    assert all(len(set(s.heads)) == 1 and len(set(s.ffn)) == 1 for s in shapes)
    assert {(s.int8, s.int8_embeddings) for s in shapes} == {(False, False), (True, False), (True, True)}
    # Llama shares a key/value head between 2 query heads: head counts stay whole groups (a quarter rounds up).
    assert {s.heads[0] for s in candidate_shapes(config("llama"))} == {4, 2}
    for shape in candidate_shapes(config("llama")):
        shape.check_fits(config("llama"))


def test_split_held_out_is_seeded_and_disjoint():
    items = list(range(20))
    fit_part, held_out = split_held_out(items, held_out=0.25, seed=3)
    assert (fit_part, held_out) == split_held_out(items, held_out=0.25, seed=3)
    assert split_held_out(items, held_out=0.25, seed=4) != (fit_part, held_out)
    assert len(held_out) == 5 and sorted(fit_part + held_out) == items


# ------------------------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("make,error", [
    (lambda: MachineSettings(0, 128, 2), "MachineSettings.batch_size must be a positive integer; got 0"),
    (lambda: MachineSettings(8, "128", 2), "MachineSettings.seq_len must be a positive integer; got '128'"),
    (lambda: MachineSettings(8, 128, 1.5), "MachineSettings.threads must be a positive integer; got 1.5"),
    (lambda: ModelShape((4, 4), (64,)), "one count per kept layer each; got 2 head counts"),
    (lambda: ModelShape((), ()), "at least one layer"),
    (lambda: ModelShape((4, -1), (64, 64)), r"heads counts must be >= 0; got \[-1\]"),
    (lambda: ModelShape((4,), (64,), int8_embeddings=True), "int8_embeddings=True needs int8=True"),
    (lambda: ModelShape.from_dict({"heads": [4], "layers": 2}), "A ModelShape dict has keys"),
    (lambda: ModelShape((5,), (64,)).check_fits(config()), r"Head counts \[5\] exceed the 4 heads"),
    (lambda: ModelShape((4,), (65,)).check_fits(config()), r"FFN widths \[65\] exceed the 64 neurons"),
    (lambda: ModelShape((4,) * 5, (64,) * 5).check_fits(config()), "keeps 5 layers; the bert config has 4"),
    (lambda: ModelShape((3,), (64,)).check_fits(config("llama")), r"Head counts \[3\] are not multiples of 2"),
    (lambda: random_twin(tf.GPT2Config(), ModelShape((4,), (64,))), "Model type 'gpt2' is not supported.*bert"),
    (lambda: size_bytes(tf.GPT2Config(), ModelShape((4,), (64,))), "Model type 'gpt2' is not supported.*mpnet"),
    (lambda: candidate_shapes(config(), head_fractions=(0,)), r"head_fractions must be fractions in \(0, 1\]"),
    (lambda: candidate_shapes(config(), precisions=((False, True),)), "precisions holds"),
    (lambda: split_held_out(range(10), held_out=1), r"held_out must be a fraction in \(0, 1\); got 1"),
    (lambda: split_held_out([1]), "need at least 2"),
    (lambda: LatencyModel.fit([]), "needs measurements"),
    (lambda: LatencyModel.fit(synthetic(grid()[:3])), "Too few float measurements.*need at least 4"),
    (lambda: LatencyModel.fit(synthetic([ModelShape((4,) * n, (64,) * n) for n in (1, 2, 3, 4)])),
     "do not vary enough"),
    (lambda: LatencyModel.fit([Measurement(ModelShape((4,), (64,)), 0.0, 0.0)]), "must be positive; got 0.0"),
    (lambda: LatencyModel.fit(synthetic([s for s in grid() if not s.int8])).predict(grid()[1]),
     "fitted without int8 measurements"),
    (lambda: LatencyModel.evaluate(LatencyModel.fit(synthetic(grid())), []), "needs measurements"),
    (lambda: LatencyModel.from_dict({"coefficients": {"fp16": {}}}), "A LatencyModel dict is"),
])
def test_bad_input_is_a_clear_error(make, error):
    with pytest.raises((ValueError, TypeError), match=error):
        make()


@pytest.mark.parametrize("call,error", [
    (lambda cache: measure_shapes(config(), [ModelShape((4,), (64,))], MachineSettings(2, 65, 1), cache),
     "seq_len 65 exceeds the bert config's max_position_embeddings"),
    (lambda cache: measure_shapes(config(), [], SETTINGS, cache), "No shapes to measure"),
    (lambda cache: measure_shapes(config(), [ModelShape((4,), (64,))], SETTINGS, cache, rounds=0),
     "rounds must be a positive integer; got 0"),
    (lambda cache: measure_shapes(config(), [ModelShape((4,), (64,)), ModelShape((4,), (99,))], SETTINGS, cache),
     r"FFN widths \[99\] exceed"),
    (lambda cache: measure_shapes(tf.GPT2Config(), [ModelShape((4,), (64,))], SETTINGS, cache),
     "Model type 'gpt2' is not supported"),
])
def test_bad_measurement_request_fails_before_any_work(tmp_path, measured, call, error):
    cache = MeasurementCache(tmp_path / "latency.json")
    with pytest.raises(ValueError, match=error):
        call(cache)
    assert measured == [] and not cache.path.exists()


@pytest.mark.slow
def test_importing_compress_stays_light():
    heavy = ("transformers.trainer", "datasets", "distilkit.trainer", "distilkit.cli")
    script = ("import sys\nimport distilkit.compress as c\nc.make_plan, c.MachineSettings, c.ModelShape, c.CompressArguments\n"
              f"print(sorted(m for m in {heavy!r} if m in sys.modules))\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_the_cache_key_holds_attention_kernel_version_and_a_machine_fallback(monkeypatch):
    import os
    import platform

    import distilkit
    from distilkit.compress import MachineSettings

    config = tiny_config("bert", layers=2, num_labels=2)
    config._attn_implementation = "eager"  # as a teacher loaded for attention distillation
    context = measurements.measurement_context(config, MachineSettings(2, 8, 1))
    # Twins run (and are keyed) with the attention a deployed model gets, not the teacher's eager one.
    assert context["model"]["attn_implementation"] == "sdpa"
    assert context["software"]["distilkit"] == distilkit.__version__
    assert context["software"]["int8_kernel"] in ("onednn", "fbgemm", "reference")
    monkeypatch.setenv("DISTILKIT_INT8_KERNEL", "reference")
    assert measure.software_versions()["int8_kernel"] == "reference"

    monkeypatch.setattr(measure, "machine_info", lambda: {"cpu_count": 999, "avx2": True})  # lscpu gave no model
    fingerprint = measure.machine_fingerprint()
    assert fingerprint["cpu_model"] == f"{platform.machine()} {platform.processor()}".strip()
    assert fingerprint["cpu_count"] == len(os.sched_getaffinity(0))
