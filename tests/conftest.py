"""Shared fixtures: tiny randomly initialised models (hidden 32, 2 layers) and datasets built in the tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Tests never touch the network: every model is built from a config here.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
torch.set_num_threads(min(2, torch.get_num_threads()))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"



@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def trainer_runs(monkeypatch) -> list[str]:
    """The output_dir of every `DistillationTrainer.train` call made during the test, in order."""
    from distilkit.trainer import DistillationTrainer

    runs = []
    original = DistillationTrainer.train

    def counted(self, *args, **kwargs):
        runs.append(self.args.output_dir)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "train", counted)
    return runs


@pytest.fixture
def trained_layer_maps(monkeypatch) -> list[dict]:
    """The layer map each `DistillationTrainer.train` call of the test distils with (resolved as the trainer
    resolves it: {student hidden state: teacher hidden state}), in order."""
    from distilkit.trainer import DistillationTrainer

    maps = []
    original = DistillationTrainer.train

    def recorded(self, *args, **kwargs):
        maps.append(DistillationTrainer._resolve_layer_map(self.model, self.teacher, self.args))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DistillationTrainer, "train", recorded)
    return maps


def pytest_collection_modifyitems(config, items):
    """A test on the real data (`realdata`) is a slow test too: `pytest -m "not slow"` is the two-minute run."""
    for item in items:
        if item.get_closest_marker("realdata") is not None:
            item.add_marker(pytest.mark.slow)
