"""Pushing a folder to a Hub and loading it back, against the stand-in Hub of tests/helpers/hub_stub.py on 127.0.0.1.

Everything that talks to the "Hub" runs in a child process whose environment points HF_ENDPOINT at the stub, as a
user's shell would: huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE once, at import. The child also blocks
name lookups and connections to anything but 127.0.0.1 and logs any attempt, so a test fails if something tried to
leave the machine.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import Trainer

import distilkit
from distilkit import DistillationTrainer
from distilkit.hub import check_folder, push_folder
from distilkit.model_card import write_model_card
from distilkit.pruning import prune_heads
from distilkit.quantization import quantize_int8
from helpers.hub_stub import HubStub, blob_oid
from helpers.tiny_models import save_tiny_tokenizer, tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
INPUT_IDS = [[2, 10, 11, 12, 13, 3], [2, 50, 60, 70, 80, 3]]

# Prepended to every child: no name lookup or connection leaves 127.0.0.1, and each attempt is logged.
GUARD = r"""
import os, socket
_LOG = os.environ["HUB_TEST_GUARD_LOG"]
_LOCAL = {"127.0.0.1", "localhost", "::1"}
def _refuse(host):
    with open(_LOG, "a") as f:
        f.write(f"{host}\n")
    raise OSError(f"test guard: {host} is not 127.0.0.1; tests never leave the machine")
_getaddrinfo, _connect = socket.getaddrinfo, socket.socket.connect
def getaddrinfo(host, *args, **kwargs):
    if host not in _LOCAL:
        _refuse(host)
    return _getaddrinfo(host, *args, **kwargs)
def connect(self, address):
    if self.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in _LOCAL:
        _refuse(address[0])
    return _connect(self, address)
socket.getaddrinfo, socket.socket.connect = getaddrinfo, connect
"""


def save_variant(folder: Path, variant: str):
    """A complete folder (weights, config, tokenizer, card) for `variant` in {plain, pruned, pruned_int8}."""
    model = tiny_model("seq", seed=1).eval()
    if variant in ("pruned", "pruned_int8"):
        prune_heads(model, {0: [1], 1: [0, 2]})
    if variant == "pruned_int8":
        quantize_int8(model, quantize_embeddings=True)
    model.save_pretrained(folder)
    save_tiny_tokenizer(folder)
    write_model_card(folder, teacher_hub_id="org/teacher", datasets=["nyu-mll/glue"], repo_id=f"stub-user/{variant}")
    return model


def logits_of(model) -> torch.Tensor:
    inputs = torch.tensor(INPUT_IDS)
    with torch.inference_mode():
        return model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits


def run_child(code: str, hub: HubStub, tmp_path: Path, *args: str, token: bool = True, env: dict | None = None):
    """Run `code` in a fresh Python whose HF_ENDPOINT is the stub; return (stdout, hosts the guard refused)."""
    guard_log = tmp_path / "guard.log"
    child_env = {k: v for k, v in os.environ.items()
                 if not k.upper().endswith("_PROXY") and k not in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN",
                                                                   "TRANSFORMERS_OFFLINE", "PYTHONPATH")}
    child_env.update({
        "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "NO_PROXY": "127.0.0.1,localhost",
        "HUB_TEST_GUARD_LOG": str(guard_log), "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(TESTS)]),
        "OMP_NUM_THREADS": str(torch.get_num_threads()),
    })
    if token:
        child_env["HF_TOKEN"] = hub.token
    child_env.update(env or {})
    done = subprocess.run([sys.executable, "-c", GUARD + code, *args], cwd=tmp_path, env=child_env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"child failed:\n{done.stdout}\n{done.stderr[-6000:]}"
    refused = guard_log.read_text().split() if guard_log.exists() else []
    return done.stdout, refused


# ---- checking a folder (no network) ----


def test_check_folder_names_each_missing_part(tmp_path):
    problems = check_folder(tmp_path)
    assert len(problems) == 4
    for expected in ("config.json", "safetensors", "tokenizer", "README.md"):
        assert any(expected in p for p in problems), (expected, problems)

    tiny_model("seq").save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").rename(tmp_path / "pytorch_model.bin")
    assert any("only pickle weights ['pytorch_model.bin']" in p for p in check_folder(tmp_path))


def test_check_folder_refuses_a_card_that_would_load_an_int8_model_with_plain_transformers(tmp_path):
    save_variant(tmp_path, "pruned_int8")
    assert check_folder(tmp_path) == []
    readme = tmp_path / "README.md"
    readme.write_text(readme.read_text().replace("library_name: distilkit", "library_name: transformers"))
    (problem,) = check_folder(tmp_path)
    assert "library_name: 'transformers'" in problem and "pruning, quantization" in problem

    readme.write_text("# no metadata\n")
    (problem,) = check_folder(tmp_path)
    assert "no valid YAML metadata" in problem


def test_dry_run_lists_the_upload_and_sends_nothing(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    save_variant(folder, "plain")
    (folder / "checkpoint-2").mkdir()
    (folder / "checkpoint-2" / "optimizer.pt").write_bytes(b"x")
    (folder / "_scratch.txt").write_text("x")
    (folder / ".hidden").write_text("x")
    monkeypatch.delenv("HF_TOKEN", raising=False)  # a dry run needs no token
    with HubStub() as hub:
        result = push_folder(folder, "stub-user/tiny", dry_run=True, endpoint=hub.url)
        assert hub.requests == []
    assert result.dry_run and result.commit_url is None
    assert result.url == f"{hub.url}/stub-user/tiny"
    assert result.files == ("README.md", "config.json", "model.safetensors", "tokenizer.json",
                            "tokenizer_config.json")


# ---- against the stub Hub ----

PUSH_INCOMPLETE = r"""
import json, sys
from distilkit.hub import IncompleteFolderError, push_folder
outcome = {}
try:
    push_folder(sys.argv[1], "stub-user/incomplete")
except IncompleteFolderError as err:
    outcome["incomplete"] = err.problems
try:
    push_folder(sys.argv[2], "stub-user/no-token")
except PermissionError as err:
    outcome["no_token"] = str(err)
try:  # nothing listens there
    push_folder(sys.argv[2], "stub-user/unreachable", token="hf_x", endpoint=sys.argv[3])
except ConnectionError as err:
    outcome["unreachable"] = str(err)
print(json.dumps(outcome))
"""


@pytest.mark.slow
def test_incomplete_folder_missing_token_or_no_hub_fail_before_anything_is_sent(tmp_path):
    incomplete = tmp_path / "incomplete"
    tiny_model("seq").save_pretrained(incomplete)  # weights and config, no tokenizer, no card
    complete = tmp_path / "complete"
    save_variant(complete, "plain")
    with socket.socket() as closed:  # a port nothing listens on once this block ends
        closed.bind(("127.0.0.1", 0))
        nowhere = f"http://127.0.0.1:{closed.getsockname()[1]}"
    with HubStub() as hub:
        out, refused = run_child(PUSH_INCOMPLETE, hub, tmp_path, str(incomplete), str(complete), nowhere, token=False)
        assert hub.requests == []  # nothing reached the Hub
    outcome = json.loads(out.splitlines()[-1])
    assert len(outcome["incomplete"]) == 2
    assert "tokenizer" in outcome["incomplete"][0] and "README.md" in outcome["incomplete"][1]
    assert "HF_TOKEN" in outcome["no_token"]
    assert outcome["unreachable"].startswith(f"Could not reach the Hub at {nowhere} (ConnectError")
    assert refused == []


PUSH_AND_LOAD = r"""
import json, sys, torch
from safetensors.torch import save_file
import distilkit
from distilkit.hub import push_folder
jobs, inputs, out = json.loads(sys.argv[1]), torch.tensor(json.loads(sys.argv[2])), sys.argv[3]
results = []
for job in jobs:
    result = push_folder(job["folder"], job["repo_id"], private=job["private"])
    results.append({"url": result.url, "files": list(result.files), "commit_url": result.commit_url})
logits = {}
for i, job in enumerate(jobs):
    model = distilkit.from_pretrained(job["repo_id"])  # a Hub id: snapshot_download from HF_ENDPOINT
    with torch.inference_mode():
        logits[str(i)] = model(input_ids=inputs, attention_mask=torch.ones_like(inputs)).logits.contiguous()
save_file(logits, out)
print(json.dumps(results))
"""


@pytest.mark.slow
def test_push_then_from_pretrained_gives_identical_logits(tmp_path):
    jobs, expected = [], []
    for variant in ("plain", "pruned", "pruned_int8"):
        folder = tmp_path / variant
        original = logits_of(save_variant(folder, variant))
        # The reference is the same folder loaded locally, so both sides pick the same attention implementation
        # (the in-memory model uses eager attention, a loaded one sdpa: equal up to rounding, not bit for bit).
        expected.append(logits_of(distilkit.from_pretrained(folder)))
        assert torch.allclose(expected[-1], original, atol=1e-5)
        jobs.append({"folder": str(folder), "repo_id": f"stub-user/{variant}", "private": variant == "pruned"})
    out = tmp_path / "logits.safetensors"
    with HubStub() as hub:
        stdout, refused = run_child(PUSH_AND_LOAD, hub, tmp_path, json.dumps(jobs), json.dumps(INPUT_IDS), str(out))
    results = json.loads(stdout.splitlines()[-1])
    assert refused == []

    loaded = load_file(out)
    for i, job in enumerate(jobs):
        assert torch.equal(loaded[str(i)], expected[i]), job["repo_id"]
        folder, repo = Path(job["folder"]), hub.repos[job["repo_id"]]
        assert results[i]["url"] == f"{hub.url}/{job['repo_id']}"
        assert results[i]["commit_url"] == f"{hub.url}/{job['repo_id']}/commit/{repo.sha}"
        # What the Hub holds is byte for byte the folder (plus the .gitattributes the Hub creates).
        assert sorted(repo.files) == sorted([".gitattributes", *results[i]["files"]])
        for name in results[i]["files"]:
            assert repo.files[name] == (folder / name).read_bytes(), name
        assert repo.private == job["private"]
        assert [c["message"] for c in repo.commits] == ["initial commit", "Upload model with distilkit"]

    # Only the requests a push and a download need, every one authorised with the token.
    calls = {(r.method, _shape(r.path)) for r in hub.requests}
    assert calls == {
        ("POST", "/api/repos/create"), ("POST", "/api/validate-yaml"),
        ("POST", "/api/models/{repo}/preupload/main"), ("POST", "/api/models/{repo}/commit/main"),
        ("GET", "/api/models/{repo}/revision/main"), ("GET", "/api/models/{repo}/tree/{sha}"),
        ("HEAD", "/{repo}/resolve/{sha}/{file}"), ("GET", "/{repo}/resolve/{sha}/{file}"),
    }, calls
    assert hub.requests and all(r.authorized for r in hub.requests)
    downloads = [r.path for r in hub.requests if r.method == "GET" and "/resolve/" in r.path]
    assert len(downloads) == sum(len(r["files"]) + 1 for r in results)  # every file, .gitattributes included


def _shape(path: str) -> str:
    """A request path with the repo id, commit and file name replaced by placeholders."""
    parts = path.split("/")
    if path.startswith("/api/models/"):
        parts[3:5] = ["{repo}"]
        if parts[-2] == "tree":
            parts[-1] = "{sha}"
    elif "/resolve/" in path:
        parts = ["", "{repo}", "resolve", "{sha}", "{file}"]
    return "/".join(parts)


PUSH_FROM_TRAINER = r"""
import json, sys
from transformers import BertTokenizerFast
from distilkit import DistillationConfig, DistillationTrainer
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model
out, tokenizer_dir = sys.argv[1], sys.argv[2]
args = DistillationConfig(output_dir=out, max_steps=2, per_device_train_batch_size=4, report_to="none",
                          save_strategy="no", use_cpu=True, hub_model_id="stub-user/trained", alpha=0.5)
trainer = DistillationTrainer(model=tiny_model("seq", seed=1), teacher_model=tiny_model("seq", seed=2, layers=4),
                              args=args, train_dataset=tiny_dataset("seq"), data_collator=pad_collator,
                              processing_class=BertTokenizerFast.from_pretrained(tokenizer_dir))
trainer.train()
commit = trainer.push_to_hub(finetuned_from="org/teacher", dataset_tags="nyu-mll/glue")
print(json.dumps({"commit_url": commit.commit_url}))
"""


@pytest.mark.slow
@pytest.mark.skipif(DistillationTrainer.create_model_card is Trainer.create_model_card,
                    reason="DistillationTrainer.create_model_card does not call distilkit.model_card yet")
def test_trainer_push_to_hub_uploads_distilkit_card(tmp_path):
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    save_tiny_tokenizer(tokenizer_dir)
    # Without hf_xet's pipeline: transformers' push goes through HfApi.create_commit, the other upload path.
    with HubStub() as hub:
        _, refused = run_child(PUSH_FROM_TRAINER, hub, tmp_path, str(tmp_path / "out"), str(tokenizer_dir),
                               env={"HF_HUB_DISABLE_XET": "1"})
    assert refused == []
    repo = hub.repos["stub-user/trained"]
    assert {"README.md", "config.json", "model.safetensors", "tokenizer.json"} <= set(repo.files)
    metadata = yaml.safe_load(repo.files["README.md"].decode().split("---")[1])
    assert metadata["library_name"] == "transformers" and metadata["base_model"] == "org/teacher"
    assert {"distilkit", "distillation"} <= set(metadata["tags"])
    assert metadata["datasets"] == ["nyu-mll/glue"]
    assert blob_oid(repo.files["model.safetensors"]) == blob_oid((tmp_path / "out" / "model.safetensors").read_bytes())
