"""The model card renders from an installed wheel, not only from this checkout.

Build the wheel from a copy of the sources, install it with --no-deps into a fresh `venv --system-site-packages`,
and render a card there, in a folder outside the source tree, with the checkout out of reach (`python -I`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from test_model_card import metadata, sections, table

REPO_ROOT = Path(__file__).resolve().parents[1]
# What a wheel is built from; the copy keeps build/ and *.egg-info out of the shared checkout.
SOURCES = ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in", "setup.py", "setup.cfg", "distilkit", "model_cards")

RENDER = r"""
import json, sys
from pathlib import Path
import torch
from transformers import AutoModelForSequenceClassification, BertConfig
import distilkit
from distilkit import DistillationConfig
from distilkit.model_card import ModelRow, card_template_path, recipe_from_config, write_model_card
from distilkit.pruning import prune_heads
from distilkit.quantization import quantize_int8

folder = Path(sys.argv[1])
config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                    max_position_embeddings=64, num_labels=2)
torch.manual_seed(0)
model = AutoModelForSequenceClassification.from_config(config)
prune_heads(model, {0: [3], 1: [0, 1]})
quantize_int8(model)
model.save_pretrained(folder)
args = DistillationConfig(output_dir=str(folder / "run"), temperature=2.0, alpha=0.5, attention_weight=1.0,
                          layer_map="1:2,2:4")
readme = write_model_card(
    folder, teacher_hub_id="org/bert-teacher", datasets=["nyu-mll/glue"], eval_config="sst2", eval_split="validation",
    repo_id="user/bert-tiny-int8", recipe=recipe_from_config(args),
    rows=[ModelRow("teacher", metrics={"accuracy": 0.92}, parameters=109_483_778, size_mb=438.0, latency_ms=41.0),
          ModelRow("student", metrics={"accuracy": 0.9}, parameters=66_955_010, size_mb=267.8, latency_ms=20.5),
          ModelRow("student (pruned, int8)", metrics={"accuracy": 0.89}, latency_ms=7.25, this_model=True)],
    latency_setup="batch 1 × 128 tokens, 2 threads",
)
print(json.dumps({"distilkit": distilkit.__file__, "template": str(card_template_path()), "readme": str(readme)}))
"""


def _have_wheel_backend() -> bool:
    try:
        import setuptools
    except ImportError:
        return False
    major = int(setuptools.__version__.split(".")[0])
    if major >= 71:  # bdist_wheel is part of setuptools from 70.1
        return True
    try:
        import wheel  # noqa: F401
    except ImportError:
        return False
    return major >= 68


@pytest.mark.slow
@pytest.mark.skipif(not _have_wheel_backend(), reason="building without isolation needs setuptools>=68 (+ wheel)")
def test_card_renders_from_an_installed_wheel(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in SOURCES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif path.is_file():
            shutil.copy2(path, source / name)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         "-w", str(tmp_path / "dist"), str(source)])
    (wheel,) = (tmp_path / "dist").glob("distilkit-*.whl")

    # The wheel holds the template, and every module of the package (the packages list in pyproject.toml is
    # explicit, so a subpackage someone forgets to list shows up here).
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "distilkit/model_cards/distilled_model.md" in names
    modules = {p.relative_to(REPO_ROOT).as_posix() for p in (REPO_ROOT / "distilkit").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert modules - names == set(), "add these packages to [tool.setuptools] packages in pyproject.toml"

    # A fresh venv. Its "system" site-packages are the base interpreter's, so a .pth file (read after the venv's
    # own site-packages, where the wheel goes) makes this environment's torch/transformers importable there.
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip())
    parent = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (purelib / "zz_test_parent_env.pth").write_text("\n".join(parent) + "\n")
    # --ignore-installed: the parent env may hold distilkit itself (CI installs it), which pip would call "satisfied".
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "--ignore-installed",
         "-q", str(wheel)])

    work = tmp_path / "elsewhere"  # outside the source tree; -I keeps cwd and PYTHONPATH off sys.path
    work.mkdir()
    out = run([str(python), "-I", "-c", RENDER, str(work / "model")], cwd=work)
    where = json.loads(out.strip().splitlines()[-1])
    assert Path(where["distilkit"]).resolve().is_relative_to(purelib.resolve())
    assert Path(where["template"]).resolve() == (purelib / "distilkit/model_cards/distilled_model.md").resolve()

    card = ModelCard.load(where["readme"])
    meta = metadata(card)
    assert meta["library_name"] == "distilkit" and meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == "org/bert-teacher" and meta["datasets"] == ["nyu-mll/glue"]
    assert meta["tags"] == ["distilkit", "distillation", "pruned", "int8"] and meta["metrics"] == ["accuracy"]
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "model"
    assert result["dataset"] == {"name": "nyu-mll/glue", "type": "nyu-mll/glue", "config": "sst2", "split": "validation"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.89}]

    body = sections(card)
    teacher, student, this = table(body["Results"])
    assert teacher == {"Model": "teacher", "accuracy": "0.9200", "Parameters": "109.5M", "Size on disk (MB)": "438.0",
                       "Latency (ms)": "41.0"}
    assert student == {"Model": "student", "accuracy": "0.9000", "Parameters": "67.0M", "Size on disk (MB)": "267.8",
                       "Latency (ms)": "20.5"}
    assert this["Model"] == "**student (pruned, int8)** (this model)" and this["Latency (ms)"] == "7.2"
    assert this["Parameters"].endswith("K") and this["Size on disk (MB)"] != "–"  # measured from the folder
    distillation = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Distillation")}
    assert distillation["layer map (student ← teacher hidden state)"] == "1 ← 2, 2 ← 4"
    assert distillation["loss"].endswith("1 × attention-map kl, summed over matched layers")
    pruning = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Pruning")}
    assert pruning["attention heads kept"] == "5 of 8"
    assert "### Quantization" in body["Recipe"]
    assert 'distilkit.from_pretrained("user/bert-tiny-int8")' in body["How to load"]


def run(command: list[str], cwd: Path | None = None) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{command[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    return done.stdout
