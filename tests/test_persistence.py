"""distilkit.from_pretrained: plain folders, compressed folders, and the errors for damaged ones."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

import distilkit
from distilkit.pruning import prune_heads


def logits(model, n=3):
    batch = pad_collator([tiny_dataset("seq", n)[i] for i in range(n)])
    batch.pop("labels")
    with torch.no_grad():
        return model.eval()(**batch).logits


def saved_pruned(tmp_path):
    model = tiny_model("seq", seed=3)
    prune_heads(model, {0: [1, 2], 1: [0]})
    model.save_pretrained(tmp_path / "pruned")
    return model, tmp_path / "pruned"


def test_plain_folder_loads_with_the_models_own_class(tmp_path):
    model = tiny_model("seq", seed=3)
    model.save_pretrained(tmp_path / "plain")
    loaded = distilkit.from_pretrained(tmp_path / "plain", attn_implementation="eager")
    assert type(loaded) is type(model)
    assert torch.equal(logits(model), logits(loaded))


def test_pruned_folder_round_trips(tmp_path):
    model, folder = saved_pruned(tmp_path)
    loaded = distilkit.from_pretrained(folder, attn_implementation="eager")
    assert torch.equal(logits(model), logits(loaded))


def test_truncated_safetensors_is_a_clear_error(tmp_path):
    _, folder = saved_pruned(tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match="not a readable safetensors file.*truncated"):
        distilkit.from_pretrained(folder)


def test_truncated_safetensors_in_a_plain_folder_is_the_same_clear_error(tmp_path):
    folder = distilkit.save_pretrained(tiny_model("seq", seed=3), tmp_path / "plain")
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(OSError, match=r"model\.safetensors is not a readable safetensors file.*truncated.*again"):
        distilkit.from_pretrained(folder)


def test_record_that_disagrees_with_the_tensors_is_named(tmp_path):
    _, folder = saved_pruned(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["distilkit"]["pruning"]["kept_heads"][0] = [0, 1, 2, 3]  # claims layer 0 was not pruned
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"do not match the structure.*attention.self.query.weight: saved \(16, 32\)"):
        distilkit.from_pretrained(folder)


def test_unknown_compression_asks_for_an_upgrade(tmp_path):
    _, folder = saved_pruned(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    config["distilkit"]["sparsity"] = {"amount": 0.5}
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"\['sparsity'\].*Upgrade distilkit"):
        distilkit.from_pretrained(folder)


def test_unreachable_hub_id_without_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="'someone/missing-model': it is not a local folder and downloading it"):
        distilkit.from_pretrained("someone/missing-model")
    with pytest.raises(ValueError, match="is a file"):
        distilkit.from_pretrained(__file__)


@pytest.mark.slow
def test_serialization_imports_no_compression_method_and_each_registration_resolves():
    script = (
        "import sys\n"
        "from distilkit.serialization.compressions import COMPRESSIONS\n"
        "loaded = sorted(m for m in sys.modules if m.startswith(('distilkit.pruning', 'distilkit.quantization')))\n"
        "assert not loaded, loaded\n"
        "for c in COMPRESSIONS:\n"
        "    assert callable(c.restore_function()), c\n"
        "    assert c.remote_code is None or callable(c.remote_code_function()), c\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=root, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]
