"""distilkit's model card: YAML metadata, the comparison table, the recipe and the loading snippet, from a saved
folder and from a DistillationTrainer. Cards are parsed back with huggingface_hub and yaml, not string-matched."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from huggingface_hub import ModelCard
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model
from transformers import Trainer

from distilkit import DistillationConfig, DistillationTrainer
from distilkit.measure import count_parameters, folder_size_mb
from distilkit.model_card import (
    CardFacts,
    ModelRow,
    card_template_path,
    recipe_from_config,
    render_model_card,
    write_model_card,
)
from distilkit.pruning import PruningCallback, prune_heads
from distilkit.quantization import quantize_int8
from distilkit.serialization import compression_record


def sections(card: ModelCard) -> dict[str, str]:
    """Markdown body split at "## " headings."""
    out, title = {}, None
    for line in card.text.splitlines():
        if line.startswith("## "):
            title = line[3:].strip()
            out[title] = ""
        elif title:
            out[title] += line + "\n"
    return out


def table(text: str, after: str | None = None) -> list[dict[str, str]]:
    """The first markdown table in `text` (after the line `after`, when given) as one dict per row."""
    lines = text.splitlines()
    if after is not None:
        lines = lines[lines.index(after) + 1:]
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip()[1:-1])])
    header, body = rows[0], rows[2:]
    assert all(set(cell) <= set("-:") for cell in rows[1]) and all(len(r) == len(header) for r in body)
    return [dict(zip(header, r)) for r in body]


def metadata(card: ModelCard) -> dict:
    """The YAML block as the Hub reads it: the raw text, parsed independently of huggingface_hub's CardData."""
    return yaml.safe_load(str(card).split("---")[1])


def test_template_is_found(tmp_path):
    assert card_template_path().read_text().startswith("---\n{{ card_data }}\n---")


def test_card_of_a_plain_student(tmp_path):
    tiny_model("seq").save_pretrained(tmp_path)
    recipe = recipe_from_config(DistillationConfig(output_dir=str(tmp_path / "x"), temperature=3.0, alpha=0.7,
                                                   hidden_weight=1.0, hidden_loss="cosine"), {0: 0, 1: 2, 2: 4})
    path = write_model_card(
        tmp_path, teacher_hub_id="org/teacher", datasets=["nyu-mll/glue"], eval_dataset_name="GLUE SST-2",
        eval_config="sst2", eval_split="validation", repo_id="user/tiny", license="apache-2.0", language="en",
        rows=[ModelRow("teacher", metrics={"accuracy": 0.91}, parameters=22_713_216, size_mb=90.9, latency_ms=12.34),
              ModelRow("student", metrics={"accuracy": 0.875}, latency_ms=3.21, this_model=True)],
        recipe=recipe, latency_setup="batch 1 × 128 tokens, 2 threads", limitations=["Not for medical use."],
    )
    card = ModelCard.load(path)
    meta = metadata(card)
    assert meta["library_name"] == "transformers" and meta["pipeline_tag"] == "text-classification"
    assert meta["base_model"] == "org/teacher" and meta["datasets"] == ["nyu-mll/glue"]
    assert meta["tags"] == ["distilkit", "distillation"] and meta["metrics"] == ["accuracy"]
    assert meta["license"] == "apache-2.0" and meta["language"] == ["en"]
    (result,) = meta["model-index"][0]["results"]
    assert result["task"] == {"type": "text-classification"}
    assert result["dataset"] == {"name": "GLUE SST-2", "type": "nyu-mll/glue", "config": "sst2", "split": "validation"}
    assert result["metrics"] == [{"type": "accuracy", "value": 0.875}]
    assert card.data.eval_results[0].metric_value == 0.875  # huggingface_hub reads the same model-index

    body = sections(card)
    assert table(body["Results"]) == [
        {"Model": "teacher", "accuracy": "0.9100", "Parameters": "22.7M", "Size on disk (MB)": "90.9",
         "Latency (ms)": "12.3"},
        {"Model": "**student** (this model)", "accuracy": "0.8750",
         "Parameters": f"{count_parameters(tiny_model('seq')) / 1e3:.1f}K",
         "Size on disk (MB)": f"{folder_size_mb(tmp_path):.2f}", "Latency (ms)": "3.2"},
    ]
    assert "batch 1 × 128 tokens, 2 threads" in body["Results"]
    distillation = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Distillation")}
    assert distillation == {
        "teacher": "org/teacher", "temperature (T)": "3", "alpha (soft-label weight)": "0.7",
        "loss": "0.3 × cross-entropy on the labels + 0.7 × T²·KL(teacher ‖ student) on temperature-T soft labels "
                "+ 1 × hidden-state cosine, summed over matched layers",
        "layer map (student ← teacher hidden state)": "0 ← 0, 1 ← 2, 2 ← 4",
    }
    assert "### Pruning" not in body["Recipe"] and "### Quantization" not in body["Recipe"]
    assert 'AutoModelForSequenceClassification.from_pretrained("user/tiny")' in body["How to load"]
    assert "distilkit" not in body["How to load"].split("```python")[1]
    assert "- Not for medical use." in body["Limitations"]


def test_card_of_a_pruned_int8_student_says_to_load_it_with_distilkit(tmp_path):
    model = tiny_model("seq")
    prune_heads(model, {0: [1], 1: [0, 2]})
    quantize_int8(model, quantize_embeddings=True)
    model.save_pretrained(tmp_path)
    card = render_model_card(tmp_path, teacher_hub_id="org/teacher", repo_id="user/tiny-int8")
    meta = metadata(card)
    assert meta["library_name"] == "distilkit"
    assert meta["tags"] == ["distilkit", "distillation", "pruned", "int8"]
    assert "model-index" not in meta and "model_name" not in meta  # no metrics given: no results claimed

    body = sections(card)
    (row,) = table(body["Results"])
    assert row["Model"] == "**student (pruned, int8)** (this model)"
    # Parameters are read from the safetensors headers and agree with measure.count_parameters.
    assert row["Parameters"] == f"{count_parameters(model) / 1e3:.1f}K"
    pruning = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Pruning")}
    assert pruning["attention heads kept"] == "5 of 8" and pruning["heads kept per layer"] == "3, 2"
    quantization = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Quantization")}
    record = compression_record(model.config)["quantization"]
    assert quantization["int8 Linear layers"] == str(len(record["linear"]))
    assert quantization["int8 embeddings"] == str(len(record["embedding"]))
    assert 'distilkit.from_pretrained("user/tiny-int8")' in body["How to load"]
    assert "AutoModelFor" not in body["How to load"]
    assert any("instruction set" in line for line in body["Limitations"].splitlines())


@pytest.mark.parametrize("heads_too", [True, False], ids=["heads-and-ffn", "ffn-only"])
def test_card_of_an_ffn_pruned_student_states_the_neurons_kept_per_layer(tmp_path, heads_too):
    import distilkit
    from distilkit.pruning import prune_ffn

    model = tiny_model("seq")  # hidden 32, 2 layers of 4 heads and 64 FFN neurons
    if heads_too:
        prune_heads(model, {0: [1]})
    prune_ffn(model, {0: list(range(10)), 1: list(range(24, 64))})
    distilkit.save_pretrained(model, tmp_path)
    card = render_model_card(tmp_path, teacher_hub_id="org/teacher", repo_id="user/tiny-ffn")
    assert metadata(card)["tags"] == ["distilkit", "distillation", "pruned"]

    body = sections(card)
    first = card.text.split("\n\n")[1]
    pruned = "7 of 8 attention heads and 78 of 128 FFN neurons" if heads_too else "78 of 128 FFN neurons"
    assert f", then pruned to {pruned}." in first
    (row,) = table(body["Results"])
    assert row["Model"] == "**student (pruned)** (this model)"
    pruning = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Pruning")}
    assert pruning["FFN neurons kept"] == "78 of 128" and pruning["FFN neurons kept per layer"] == "54, 24"
    if heads_too:
        assert pruning["attention heads kept"] == "7 of 8" and pruning["heads kept per layer"] == "3, 4"
        assert pruning["method"] == "structural: pruned heads and FFN neurons are removed from the weights, not masked"
    else:
        assert "attention heads kept" not in pruning
        assert pruning["method"] == "structural: pruned FFN neurons are removed from the weights, not masked"
    # distilkit.save_pretrained wrote loading code for transformers alone, and the card says so.
    assert 'distilkit.from_pretrained("user/tiny-ffn")' in body["How to load"]
    assert 'from_pretrained("user/tiny-ffn", trust_remote_code=True)' in body["How to load"]
    assert "- Needs distilkit to load (see above)." in body["Limitations"]


def test_card_facts_render_the_same_card_as_keywords_and_keywords_override_them(tmp_path):
    tiny_model("seq").save_pretrained(tmp_path)
    fields = {"teacher": "org/teacher", "datasets": "nyu-mll/glue", "tags": ["sst2"],
              "limitations": ["Not for medical use."],
              "rows": [ModelRow("teacher", metrics={"accuracy": 0.9}), ModelRow("student", this_model=True)]}
    facts = CardFacts(**fields)
    assert render_model_card(tmp_path, facts).content == render_model_card(tmp_path, **fields).content
    card = render_model_card(tmp_path, facts, license="mit", model_name="renamed")
    assert metadata(card)["license"] == "mit" and "# renamed" in card.text.splitlines()
    assert facts.license is None and facts.datasets == ["nyu-mll/glue"]


def test_a_local_teacher_folder_is_named_but_not_claimed_as_base_model(tmp_path):
    teacher = tmp_path / "teacher"
    tiny_model("seq", layers=4).save_pretrained(teacher)
    tiny_model("seq").save_pretrained(tmp_path / "student")
    card = render_model_card(tmp_path / "student", teacher=str(teacher))
    assert "base_model" not in metadata(card) and "distillation" in metadata(card)["tags"]
    assert f"distilled from `{teacher}` with" in card.text and "huggingface.co/" not in card.text


@pytest.mark.parametrize("variant", ["plain", "pruned", "int8"])
def test_parameter_count_from_the_folder_equals_count_parameters(tmp_path, variant):
    from distilkit.model_card.table import stored_parameter_count

    model = tiny_model("seq")
    if variant == "pruned":
        prune_heads(model, {1: [0, 3]})
    if variant == "int8":
        quantize_int8(model, quantize_embeddings=True)
    model.save_pretrained(tmp_path)
    assert stored_parameter_count(tmp_path, compression_record(model.config)) == count_parameters(model)


def accuracy(prediction):
    return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}


def distillation_trainer(tmp_path, callbacks=(), **config):
    args = DistillationConfig(output_dir=str(tmp_path / "out"), max_steps=4, per_device_train_batch_size=4,
                              learning_rate=1e-3, report_to="none", save_strategy="no", use_cpu=True, seed=3,
                              temperature=4.0, alpha=0.9, **config)
    teacher = tiny_model("seq", seed=2, layers=4)
    return DistillationTrainer(model=tiny_model("seq", seed=1), teacher_model=teacher, args=args,
                               train_dataset=tiny_dataset("seq"), eval_dataset=tiny_dataset("seq", 8, seed=1),
                               data_collator=pad_collator, compute_metrics=accuracy, callbacks=list(callbacks))


def distil(tmp_path, callbacks=()):
    trainer = distillation_trainer(tmp_path, callbacks)
    trainer.train()
    return trainer, trainer.evaluate()


def written_trainer_card(trainer, **card_kwargs) -> ModelCard:
    """The card `trainer.create_model_card(**card_kwargs)` writes to output_dir/README.md."""
    trainer.create_model_card(**card_kwargs)
    return ModelCard.load(Path(trainer.args.output_dir) / "README.md")


def test_trainer_card_reports_teacher_student_and_recipe(tmp_path):
    callback = PruningCallback(target_fraction=0.25, prune_every_steps=2, num_prunes=1, num_batches=1)
    trainer, metrics = distil(tmp_path, [callback])
    card = written_trainer_card(
        trainer, finetuned_from="org/teacher", dataset_tags="nyu-mll/glue", dataset="GLUE SST-2",
        dataset_args="sst2", license="mit", tags=["sst2"],
        rows=[ModelRow("teacher", metrics={"accuracy": 0.9}), ModelRow("student (int8)", latency_ms=1.5)],
    )
    meta = metadata(card)
    assert meta["library_name"] == "distilkit"  # pruned while training: it needs distilkit to load
    assert meta["base_model"] == "org/teacher" and meta["datasets"] == ["nyu-mll/glue"]
    assert meta["tags"] == ["distilkit", "distillation", "pruned", "sst2"] and meta["license"] == "mit"
    (result,) = meta["model-index"][0]["results"]
    assert meta["model-index"][0]["name"] == "out"
    assert result["dataset"] == {"name": "GLUE SST-2", "type": "nyu-mll/glue", "config": "sst2"}
    assert {m["type"]: m["value"] for m in result["metrics"]} == {
        "loss": metrics["eval_loss"], "accuracy": metrics["eval_accuracy"]}

    body = sections(card)
    teacher, student, extra = table(body["Results"])
    assert teacher["Model"] == "teacher" and teacher["accuracy"] == "0.9000"
    assert teacher["Parameters"] == f"{count_parameters(trainer.teacher) / 1e3:.1f}K"
    assert student["Model"] == "**student (pruned)** (this model)"
    assert student["accuracy"] == f"{metrics['eval_accuracy']:.4f}"
    assert student["Parameters"] == f"{count_parameters(trainer.model) / 1e3:.1f}K"
    assert extra == {"Model": "student (int8)", "loss": "–", "accuracy": "–", "Parameters": "–",
                     "Size on disk (MB)": "–", "Latency (ms)": "1.5"}
    distillation = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Distillation")}
    assert distillation["temperature (T)"] == "4" and distillation["alpha (soft-label weight)"] == "0.9"
    assert "layer map (student ← teacher hidden state)" not in distillation  # no hidden or attention loss
    training = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Training")}
    assert training["optimizer steps"] == "4" and training["max steps"] == "4" and training["learning rate"] == "0.001"
    pruning = {r["Setting"]: r["Value"] for r in table(body["Recipe"], "### Pruning")}
    assert pruning["attention heads kept"] == "6 of 8"
    assert pruning["target fraction of heads pruned"] == "0.25"
    assert pruning["schedule"] == "every 2 steps from step 2, 1 times"
    assert 'distilkit.from_pretrained("out")' in body["How to load"]


def test_trainer_card_shows_the_resolved_layer_map_and_no_results_before_evaluation(tmp_path):
    trainer = distillation_trainer(tmp_path, hidden_weight=0.5, hidden_loss="cosine")
    card = written_trainer_card(trainer)
    assert "model-index" not in metadata(card) and "base_model" not in metadata(card)  # teacher built from a config
    distillation = {r["Setting"]: r["Value"] for r in table(sections(card)["Recipe"], "### Distillation")}
    assert distillation["layer map (student ← teacher hidden state)"] == "0 ← 0, 1 ← 2, 2 ← 4"  # "uniform", resolved
    assert distillation["loss"].endswith("0.5 × hidden-state cosine, summed over matched layers")


def test_trainer_card_is_written_on_the_main_process_only(tmp_path, monkeypatch):
    trainer, _ = distil(tmp_path)
    readme = tmp_path / "out" / "README.md"
    monkeypatch.setattr(trainer, "is_world_process_zero", lambda: False)
    trainer.create_model_card()
    assert not readme.exists()
    monkeypatch.setattr(trainer, "is_world_process_zero", lambda: True)
    trainer.create_model_card(finetuned_from="org/teacher")
    assert metadata(ModelCard.load(readme))["library_name"] == "transformers"


@pytest.mark.skipif(DistillationTrainer.create_model_card is Trainer.create_model_card,
                    reason="DistillationTrainer.create_model_card does not call distilkit.model_card yet")
def test_trainer_create_model_card_writes_distilkit_card(tmp_path):
    trainer, _ = distil(tmp_path)
    trainer.create_model_card(finetuned_from="org/teacher", dataset_tags="nyu-mll/glue")
    card = ModelCard.load(tmp_path / "out" / "README.md")
    assert metadata(card)["tags"][:2] == ["distilkit", "distillation"]
    assert "## Recipe" in card.text
