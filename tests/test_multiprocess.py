"""A real two-process CPU run (gloo) of `accelerate launch -m distilkit distill`, compared with one process.

The launched command is exactly the documented one. A `sitecustomize` module on the children's PYTHONPATH
records, per rank, the examples each training step sees and every file-writing call, without changing them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest
from safetensors.torch import load_file
from helpers.cli_fixtures import tiny_recipe
from helpers.multiprocess_recorder import install_recorder

from distilkit.cli import main
from distilkit.serialization.atomic import STAGING_PREFIX

pytestmark = pytest.mark.slow  # several processes: pytest -m "not slow" skips them

REPO = Path(__file__).resolve().parents[1]
GLOO_CONFIG = REPO / "recipes" / "accelerate" / "cpu_2proc_gloo.yaml"
# Same data, same global batch (2 x 4 vs 1 x 8), no dropout: the runs differ only in the order of float sums.
# Measured here: losses within 3e-8, weights within 1e-8.
LOSS_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-6

SITECUSTOMIZE = textwrap.dedent('''
    import os, sys
    if os.environ.get("DISTILKIT_TEST_RECORD") and "RANK" in os.environ:
        from pathlib import Path
        sys.path.insert(0, os.environ["DISTILKIT_TEST_DIR"])
        from helpers.multiprocess_recorder import install_recorder
        install_recorder(Path(os.environ["DISTILKIT_TEST_RECORD"]), os.environ["RANK"])
''')


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def losses(run: Path) -> list[float]:
    state = json.loads((run / "student-training" / "trainer_state.json").read_text())
    return [entry["loss"] for entry in state["log_history"] if "loss" in entry]


def launch(tmp_path: Path, args: list[str], record: Path | None = None, timeout: int = 240):
    """`accelerate launch --config_file cpu_2proc_gloo.yaml -m distilkit ...`, distilkit importable from the repo."""
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    if accelerate is None:
        pytest.skip("the accelerate command is not installed")
    hooks = tmp_path / "hooks"
    hooks.mkdir(exist_ok=True)
    (hooks / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = dict(os.environ)
    env.update(PYTHONPATH=os.pathsep.join([str(hooks), str(REPO), env.get("PYTHONPATH", "")]),
               HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", DISTILKIT_TEST_DIR=str(Path(__file__).parent),
               TOKENIZERS_PARALLELISM="false")
    env.pop("DISTILKIT_TEST_RECORD", None)
    if record is not None:
        env["DISTILKIT_TEST_RECORD"] = str(record)
    command = [accelerate, "launch", "--config_file", str(GLOO_CONFIG), "-m", "distilkit", *args]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=timeout)


def assert_same_training(two: Path, one: Path, steps: int) -> None:
    """The two-process run's loss curve and trained student match the one-process run's."""
    two_losses, one_losses = losses(two), losses(one)
    assert len(two_losses) == len(one_losses) == steps
    assert max(abs(x - y) for x, y in zip(two_losses, one_losses)) < LOSS_TOLERANCE, (two_losses, one_losses)
    w2 = load_file(two / "student" / "model.safetensors")
    w1 = load_file(one / "student" / "model.safetensors")
    assert max((w2[k] - w1[k]).abs().max().item() for k in w1) < WEIGHT_TOLERANCE


def test_two_gloo_processes_train_on_different_shards_like_one_process(tmp_path, monkeypatch):
    record = tmp_path / "record"
    record.mkdir()
    recipe = tiny_recipe(tmp_path, training={"max_steps": 4, "per_device_train_batch_size": 4,
                                             "ddp_find_unused_parameters": False, "dataloader_pin_memory": False},
                         evaluation={"latency": False})

    done = launch(tmp_path, ["distill", "--config", str(recipe), "--output_dir", str(tmp_path / "two")], record)
    assert done.returncode == 0, done.stderr[-4000:]

    # The reference: one process, the same global batch of 8, in this process.
    install_recorder(record, "single", patch=monkeypatch.setattr)
    assert main(["distill", "--config", str(recipe), "--output_dir", str(tmp_path / "one"),
                 "--per_device_train_batch_size", "8"]) == 0

    # Both ranks trained, on different examples; together they saw exactly the one-process batches.
    rank0, rank1 = read_jsonl(record / "batches-0.jsonl"), read_jsonl(record / "batches-1.jsonl")
    single = read_jsonl(record / "batches-single.jsonl")
    assert len(rank0) == len(rank1) == len(single) == 4
    for a, b, whole in zip(rank0, rank1, single):
        assert a["step"] == b["step"] == whole["step"]
        assert len(a["rows"]) == len(b["rows"]) == 4 and a["rows"] != b["rows"]
        # Each example of the global batch went to exactly one rank.
        assert Counter(map(tuple, a["rows"] + b["rows"])) == Counter(map(tuple, whole["rows"]))

    # The loss curve and the trained weights match the one-process run.
    assert_same_training(tmp_path / "two", tmp_path / "one", steps=4)

    # Only rank 0 wrote anything, only inside output_dir; it wrote the model, the table and the recipe once.
    assert read_jsonl(record / "writes-1.jsonl") == []
    writes = read_jsonl(record / "writes-0.jsonl")
    assert all(Path(w["where"]).is_relative_to(tmp_path / "two") for w in writes), writes
    # distilkit.save_pretrained writes into a staging folder inside the target, then moves the files in.
    wheres = Counter(str(Path(w["where"]).parent) if Path(w["where"]).name.startswith(STAGING_PREFIX) else w["where"]
                     for w in writes if w["what"] == "PreTrainedModel.save_pretrained")
    assert wheres == {str(tmp_path / "two" / "student"): 1}
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == [
        "distilkit_recipe.yaml", "results.json", "results.md", "student", "student-training"]


def test_two_processes_without_use_cpu_stop_with_the_fix(tmp_path):
    recipe = tiny_recipe(tmp_path, evaluation={"latency": False})
    done = launch(tmp_path, ["distill", "--config", str(recipe), "--use_cpu", "false"])
    assert done.returncode != 0
    assert "WORLD_SIZE=2" in done.stderr and "use_cpu: true" in done.stderr, done.stderr[-3000:]
    assert not (tmp_path / "run").exists()  # stopped before training or writing anything


def test_two_process_runs_with_the_same_seed_are_identical(tmp_path):
    """Reproducibility across repeated two-process runs: same seed -> same losses and bit-identical weights."""
    recipe = tiny_recipe(tmp_path, training={"max_steps": 3, "per_device_train_batch_size": 4, "seed": 11,
                                             "ddp_find_unused_parameters": False, "dataloader_pin_memory": False},
                         evaluation={"latency": False})
    for name in ("a", "b"):
        done = launch(tmp_path, ["distill", "--config", str(recipe), "--output_dir", str(tmp_path / name)])
        assert done.returncode == 0, done.stderr[-4000:]
    assert losses(tmp_path / "a") == losses(tmp_path / "b") and len(losses(tmp_path / "a")) == 3
    wa = load_file(tmp_path / "a" / "student" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "student" / "model.safetensors")
    assert set(wa) == set(wb) and all(wa[k].equal(wb[k]) for k in wa)


def test_two_processes_with_transfer_data_match_one_process(tmp_path):
    """Labelled and transfer examples shard across two gloo processes like any training data."""
    from helpers.cli_fixtures import sentences, write_csv

    transfer = write_csv(tmp_path / "transfer.csv", [{"sentence": r["sentence"]} for r in sentences(16, 9)])
    recipe = tiny_recipe(tmp_path, data={"transfer_file": str(transfer)},
                         training={"max_steps": 4, "per_device_train_batch_size": 4,
                                   "ddp_find_unused_parameters": False, "dataloader_pin_memory": False},
                         evaluation={"latency": False})
    done = launch(tmp_path, ["distill", "--config", str(recipe), "--output_dir", str(tmp_path / "two")])
    assert done.returncode == 0, done.stderr[-4000:]
    assert main(["distill", "--config", str(recipe), "--output_dir", str(tmp_path / "one"),
                 "--per_device_train_batch_size", "8"]) == 0
    assert_same_training(tmp_path / "two", tmp_path / "one", steps=4)
