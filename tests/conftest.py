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

from tiny_models import *  # noqa: E402,F401,F403  (helpers importable by tests as `from tiny_models import ...`)


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA
