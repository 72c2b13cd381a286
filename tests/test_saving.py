"""Saving: atomic saves, and compressed folders that plain transformers refuses instead of misreading."""

import copy
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import transformers
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

import distilkit
from distilkit import DistillationConfig, DistillationTrainer
from distilkit.pruning import kept_heads, prune_heads
from distilkit.quantization import quantize_int8
from distilkit.serialization.atomic import SAVING_MARKER, STAGING_PREFIX
from distilkit.serialization.format import BASE_MODEL_TYPE_KEY, compression_record

ROOT = Path(__file__).resolve().parents[1]
BATCH = {"input_ids": torch.tensor([[5, 6, 7, 8, 9, 10], [11, 12, 13, 0, 0, 0]]),
         "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])}


def compressed(kind: str, seed: int = 0):
    model = tiny_model("seq", "bert", seed=seed).eval()
    if kind in ("pruned", "pruned+int8"):
        prune_heads(model, {0: [0, 1], 1: [3]})
    if kind in ("int8", "pruned+int8"):
        quantize_int8(model)
    return model


def logits(model):
    with torch.no_grad():
        return model(**BATCH).logits


def run_plain_transformers(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """Run `script` in a fresh interpreter where importing distilkit fails: transformers alone."""
    header = "import sys, torch, transformers\nsys.modules['distilkit'] = None\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "modules")
    return subprocess.run([sys.executable, "-c", header + textwrap.dedent(script)], capture_output=True, text=True,
                          env=env, timeout=300, stdin=subprocess.DEVNULL, cwd=tmp_path)


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_a_compressed_decoder_family_classifier_loads_again_and_saves_as_compressed(tmp_path, family):
    # transformers' generic classification heads build their base model through AutoModel, which knows only the
    # plain config class: loading must not hand it the compressed one.
    model = tiny_model("seq", family).eval()
    prune_heads(model, {0: [0, 1]})  # one whole key/value group
    quantize_int8(model)
    distilkit.save_pretrained(model, tmp_path / "first")
    reloaded = distilkit.from_pretrained(tmp_path / "first", attn_implementation="eager")
    assert torch.equal(logits(reloaded), logits(model))
    reloaded.save_pretrained(tmp_path / "again")
    assert json.loads((tmp_path / "again" / "config.json").read_text())["model_type"] == "distilkit"
    assert torch.equal(logits(distilkit.from_pretrained(tmp_path / "again", attn_implementation="eager")),
                       logits(model))


@pytest.mark.parametrize("kind", ["pruned", "int8", "pruned+int8"])
@pytest.mark.parametrize("saver", ["model.save_pretrained", "distilkit.save_pretrained"])
def test_compressed_folder_is_refused_by_the_auto_classes_and_loads_with_distilkit(tmp_path, kind, saver):
    model = compressed(kind)
    folder = tmp_path / "model"
    if saver == "model.save_pretrained":
        model.save_pretrained(folder)
    else:
        distilkit.save_pretrained(model, folder)
    raw = json.loads((folder / "config.json").read_text())
    assert raw["model_type"] == "distilkit" and raw[BASE_MODEL_TYPE_KEY] == "bert"
    assert model.config.model_type == "bert"  # only the file says "distilkit"

    with pytest.raises(ValueError, match="Distilkit|distilkit|custom code"):  # an error, never a silent misread
        transformers.AutoModelForSequenceClassification.from_pretrained(folder)
    # AutoConfig (what AutoTokenizer and pipelines read to pick a tokenizer) reads the real config in a process that
    # uses distilkit, with its compression record: read right, not misread. (Plain transformers: test below.)
    config = transformers.AutoConfig.from_pretrained(folder)
    assert config.model_type == "bert" and compression_record(config) == compression_record(model.config)
    reloaded = distilkit.from_pretrained(folder, attn_implementation="eager")
    assert torch.equal(logits(reloaded), logits(model))


@pytest.mark.slow
def test_int8_folder_with_trust_remote_code_names_distilkit_from_pretrained(tmp_path):
    distilkit.save_pretrained(compressed("pruned+int8"), tmp_path / "int8")
    result = run_plain_transformers(f"""
        for trust in (None, True):
            try:
                transformers.AutoModelForSequenceClassification.from_pretrained({str(tmp_path / "int8")!r},
                                                                                trust_remote_code=trust)
            except Exception as err:
                print(trust, type(err).__name__, str(err).replace(chr(10), " "))
            else:
                print(trust, "LOADED")
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    untrusted, trusted = result.stdout.strip().splitlines()[-2:]
    assert "None ValueError" in untrusted and "trust_remote_code=True" in untrusted  # after its [y/N] prompt
    assert trusted.startswith("True ImportError") and "distilkit.from_pretrained(" in trusted
    assert "int8" in trusted


@pytest.mark.slow
def test_pruned_folder_saved_by_distilkit_loads_with_transformers_alone(tmp_path):
    model = compressed("pruned")
    distilkit.save_pretrained(model, tmp_path / "pruned")
    torch.save({"batch": BATCH, "logits": logits(model)}, tmp_path / "expected.pt")
    result = run_plain_transformers(f"""
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            {str(tmp_path / "pruned")!r}, trust_remote_code=True, attn_implementation="eager").eval()
        with torch.no_grad():
            print("equal", torch.equal(model(**expected["batch"]).logits, expected["logits"]))
    """, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "equal True" in result.stdout


def test_compressed_config_survives_pickle_and_deepcopy():
    model = compressed("pruned")
    for config in (pickle.loads(pickle.dumps(model.config)), copy.deepcopy(model.config)):
        assert type(config) is type(model.config)
        assert config.to_dict()["model_type"] == "distilkit" and config.model_type == "bert"
        assert config.distilkit == model.config.distilkit


_KILLED_SAVE = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
from helpers.tiny_models import tiny_model
import distilkit

class DyingTokenizer:  # the weights are written; the process dies before the save finishes
    def save_pretrained(self, folder):
        os.kill(os.getpid(), signal.SIGKILL)

distilkit.save_pretrained(tiny_model("seq", "bert", seed=7), {folder!r}, tokenizer=DyingTokenizer())
"""


@pytest.mark.slow
def test_a_save_killed_midway_leaves_the_previous_save_loadable(tmp_path):
    folder = tmp_path / "model"
    first = compressed("pruned", seed=0)
    distilkit.save_pretrained(first, folder)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    killed = subprocess.run([sys.executable, "-c", _KILLED_SAVE.format(tests=str(ROOT / "tests"), folder=str(folder))],
                            env=env, capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert list(folder.glob(STAGING_PREFIX + "*"))  # the interrupted save stayed aside
    assert torch.equal(logits(distilkit.from_pretrained(folder, attn_implementation="eager")), logits(first))

    second = compressed("int8", seed=3)
    distilkit.save_pretrained(second, folder)  # the next save cleans up and replaces the model
    assert not list(folder.glob(STAGING_PREFIX + "*"))
    assert torch.equal(logits(distilkit.from_pretrained(folder)), logits(second))
    assert not (folder / "modeling_distilkit_pruned.py").exists()  # loading code of the old save is gone


def test_a_folder_interrupted_while_files_were_moved_in_is_refused(tmp_path):
    distilkit.save_pretrained(compressed("int8"), tmp_path / "model")
    (tmp_path / "model" / SAVING_MARKER).write_text("moving\n")
    with pytest.raises(OSError, match="interrupted save"):
        distilkit.from_pretrained(tmp_path / "model")


def test_weight_shards_of_an_older_save_are_removed(tmp_path):
    model = compressed("pruned")
    model.save_pretrained(tmp_path / "model", max_shard_size="20KB")
    assert (tmp_path / "model" / "model.safetensors.index.json").exists()
    distilkit.save_pretrained(model, tmp_path / "model")
    weights = sorted(p.name for p in (tmp_path / "model").iterdir() if "safetensors" in p.name)
    assert weights == ["model.safetensors"]
    assert torch.equal(logits(distilkit.from_pretrained(tmp_path / "model", attn_implementation="eager")),
                       logits(model))


def test_trainer_saves_a_student_pruned_while_distilling_atomically_with_its_loading_code(tmp_path):
    student, teacher = tiny_model("seq", seed=2), tiny_model("seq", seed=1)
    args = DistillationConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=4,
                              prune_heads_fraction=0.25, prune_every_steps=2, prune_num_prunes=1,
                              save_strategy="steps", save_steps=2, report_to="none", use_cpu=True,
                              disable_tqdm=True)
    trainer = DistillationTrainer(model=student, teacher_model=teacher, args=args,
                                  train_dataset=tiny_dataset("seq", 16), data_collator=pad_collator)
    trainer.train()
    trainer.save_model()
    assert sum(map(len, kept_heads(student))) == 6
    assert (tmp_path / "checkpoint-4").is_dir() and (tmp_path / "checkpoint-2").is_dir()  # kept beside it
    assert not list(tmp_path.glob(STAGING_PREFIX + "*")) and not (tmp_path / SAVING_MARKER).exists()
    raw = json.loads((tmp_path / "config.json").read_text())
    assert raw["model_type"] == "distilkit" and "AutoConfig" in raw["auto_map"]
    reloaded = distilkit.from_pretrained(tmp_path, attn_implementation="eager")
    assert torch.equal(logits(reloaded), logits(student.eval()))


def test_push_from_a_checkpoint_carries_the_loading_code(tmp_path, monkeypatch):
    pushed = []
    monkeypatch.setattr(transformers.Trainer, "_push_from_checkpoint", lambda self, folder: pushed.append(folder))
    args = DistillationConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, alpha=0.0)
    trainer = DistillationTrainer(model=compressed("pruned"), args=args, train_dataset=tiny_dataset("seq", 4),
                                  data_collator=pad_collator)
    distilkit.save_pretrained(compressed("pruned"), tmp_path / "checkpoint")
    (tmp_path / "out").mkdir(exist_ok=True)
    trainer._push_from_checkpoint(str(tmp_path / "checkpoint"))
    assert pushed == [str(tmp_path / "checkpoint")]
    assert (tmp_path / "out" / "modeling_distilkit_pruned.py").is_file()
    assert (tmp_path / "out" / "configuration_distilkit.py").is_file()


@pytest.mark.slow
def test_a_pruned_model_loaded_through_its_remote_code_can_be_compressed_further(tmp_path):
    distilkit.save_pretrained(compressed("pruned"), tmp_path / "pruned")
    env = dict(os.environ, HF_MODULES_CACHE=str(tmp_path / "modules"), PYTHONPATH=str(ROOT))
    script = textwrap.dedent(f"""
        import torch, transformers, distilkit
        from distilkit.quantization import quantize_int8
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            {str(tmp_path / "pruned")!r}, trust_remote_code=True).eval()
        assert model.config.model_type == "bert", model.config.model_type  # the base type in memory
        quantize_int8(model)
        distilkit.save_pretrained(model, {str(tmp_path / "int8")!r})
        batch = {{"input_ids": torch.tensor([[5, 6, 7, 8]])}}
        with torch.no_grad():
            same = torch.equal(distilkit.from_pretrained({str(tmp_path / "int8")!r})(**batch).logits,
                               model(**batch).logits)
        print("equal", same)
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "equal True" in result.stdout


_PIPELINE = """
import sys
sys.path.insert(0, {tests!r})
import transformers
from helpers.tiny_models import tiny_model
import distilkit
from distilkit.pruning import prune_heads
from distilkit.quantization import quantize_int8

labels = {{0: "negative", 1: "neutral", 2: "positive"}}
model = tiny_model("seq", "bert", seed=4, hidden=32, layers=2, id2label=labels,
                   label2id={{name: i for i, name in labels.items()}}).eval()
if "pruned" in {kind!r}:
    prune_heads(model, {{0: [0, 1], 1: [3]}})
if "int8" in {kind!r}:
    quantize_int8(model)
vocab = {vocab!r}
with open(vocab, "w") as handle:
    handle.write("\\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{{i}}" for i in range(95)]))
distilkit.save_pretrained(model, {folder!r}, tokenizer=transformers.BertTokenizerFast(vocab_file=vocab))
tokenizer = {tokenizer}
classify = transformers.pipeline("text-classification", model=distilkit.from_pretrained({folder!r}),
                                 tokenizer=tokenizer)
expected = labels[int(model(**classify.tokenizer("w1 w2 w3", return_tensors="pt")).logits.argmax())]
print("labels", classify("w1 w2 w3")[0]["label"], expected)
"""


# "folder": the pipeline loads the tokenizer from the model's folder with AutoTokenizer, which reads config.json with
# AutoConfig first; "object": a tokenizer object is passed.
@pytest.mark.slow
@pytest.mark.parametrize("tokenizer", ["object", "folder"])
@pytest.mark.parametrize("kind", ["pruned", "int8", "pruned+int8"])
def test_a_compressed_model_loaded_by_distilkit_runs_in_a_pipeline_without_a_prompt(tmp_path, kind, tokenizer):
    folder = tmp_path / "model"
    source = {"object": "transformers.BertTokenizerFast(vocab_file=vocab)", "folder": repr(str(folder))}[tokenizer]
    script = _PIPELINE.format(tests=str(ROOT / "tests"), kind=kind, folder=str(folder),
                              vocab=str(tmp_path / "vocab.txt"), tokenizer=source)
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_MODULES_CACHE=str(tmp_path / "modules"))
    # stdin stays open and silent: a [y/N] prompt would wait for its answer instead of failing at once
    process = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"the pipeline waited for input:\n{output[-3000:]}")
    assert process.returncode == 0, output[-3000:]
    assert "custom code" not in output and "[y/N]" not in output, output[-3000:]
    assert "model of type" not in output, output[-3000:]
    predicted, expected = output.strip().splitlines()[-1].split()[1:]
    assert predicted == expected and expected in ("negative", "neutral", "positive")
