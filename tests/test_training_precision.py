"""benchmarks/training_precision.py: both precisions train their own copy on the same batches, bfloat16 under
autocast, and the report holds what was measured (a tiny model and a made-up SST-2 file; timings meaningless)."""

import json

import pytest
import torch
from helpers.benchmarks import import_benchmark, table_with
from helpers.tiny_models import save_tiny_tokenizer, tiny_model
from transformers import BertTokenizerFast

tp = import_benchmark("training_precision")


def save_model_and_data(tmp_path):
    model_dir, data_dir = tmp_path / "model", tmp_path / "data"
    model_dir.mkdir()
    save_tiny_tokenizer(model_dir)
    tiny_model("seq", num_labels=2).save_pretrained(model_dir)
    (data_dir / "sst2").mkdir(parents=True)
    rows = [f"{' '.join(f'w{(i * 7 + j) % 90}' for j in range(2 + i % 9))}\t{i % 2}" for i in range(40)]
    (data_dir / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    return model_dir, data_dir


def test_a_step_trains_the_model_and_bfloat16_runs_under_autocast(tmp_path):
    model_dir, data_dir = save_model_and_data(tmp_path)
    tokenizer = BertTokenizerFast.from_pretrained(model_dir)
    batches = tp.sst2_batches(str(data_dir), tokenizer, count=2, batch_size=4, max_length=6)
    assert len(batches) == 2 and all(b["input_ids"].shape[0] == 4 and b["input_ids"].shape[1] <= 6 for b in batches)
    for precision, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
        model = tiny_model("seq", num_labels=2).train()
        before = model.classifier.weight.detach().clone()
        seen = []
        model.classifier.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        tp.training_step(model, optimizer, batches, precision)()
        assert seen == [dtype, dtype]  # one forward per batch, in the precision asked for
        assert model.classifier.weight.dtype == torch.float32  # autocast: the weights stay float32
        assert not torch.equal(model.classifier.weight, before)


def test_the_benchmark_writes_both_precisions_and_their_ratio(tmp_path):
    model_dir, data_dir = save_model_and_data(tmp_path)
    out = tmp_path / "results"
    tp.main(["--model", str(model_dir), "--data-dir", str(data_dir), "--rounds", "2", "--steps", "2",
             "--batch-size", "4", "--max-length", "8", "--threads", "1", "--results-dir", str(out)])
    result = json.loads((out / "training_precision.json").read_text())
    per_step = result["seconds_per_step"]
    assert set(per_step) == {"float32", "bfloat16"}
    ratio = per_step["float32"]["median"] / per_step["bfloat16"]["median"]
    assert result["speedup_bf16"] == pytest.approx(ratio, rel=0.01)
    assert result["settings"]["rounds"] == 2 and result["parameters"] > 0
    assert "amx_bf16" in result["machine"]["flags"]
    rows = table_with((out / "training_precision.md").read_text(), "seconds per step (median)")
    assert [r["precision"] for r in rows] == ["float32", "bfloat16"]
