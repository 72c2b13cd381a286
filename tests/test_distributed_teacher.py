"""A teacher sharded with FSDP2 across two real CPU processes (gloo) gives the full model's outputs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # several processes: pytest -m "not slow" skips them

CHILD = Path(__file__).parent / "helpers" / "fsdp_teacher_child.py"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("family, task", [("bert", "seq"), ("llama", "causal")])
def test_fsdp_sharded_teacher_matches_full_teacher_and_holds_half(tmp_path, family, task):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(CHILD), str(tmp_path), family, task]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    results = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for result in results:
        assert result["max_diff"] < 1e-5
        assert not result["training"] and not result["requires_grad"]
        # Sharded two ways: each process keeps about half of the teacher (FSDP pads odd-sized shards).
        assert result["local"] <= 0.55 * result["full"], result
