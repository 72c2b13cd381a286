"""DistillationTrainer / DistillationConfig as drop-in names for Trainer / TrainingArguments: swapping the two names
and nothing else trains exactly as before; the defaults, columns, logging and cards a Trainer user relies on."""

import copy
import logging

import pytest
import torch
from huggingface_hub import ModelCard
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model
from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments

from distilkit import DistillationConfig, DistillationTrainer
from distilkit.loss_terms import DEFAULT_ALPHA, soft_label_weight

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
COMMON = dict(per_device_train_batch_size=4, max_steps=3, learning_rate=1e-3, logging_steps=1, report_to="none",
              save_strategy="no", use_cpu=True, seed=3)


def with_text(dataset, column="sentence"):
    """The dataset with a raw text column left in, as a tokenised dataset usually still has."""
    return dataset.add_column(column, [f"text {i}" for i in range(len(dataset))])


def losses_of(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


@pytest.mark.parametrize("args_given", [True, False])
def test_swapping_the_names_without_a_teacher_trains_exactly_as_trainer(tmp_path, caplog, args_given):
    base = tiny_model("seq", seed=2)
    runs = {}
    for name, trainer_class, args_class in (("plain", Trainer, TrainingArguments),
                                            ("swapped", DistillationTrainer, DistillationConfig)):
        model = copy.deepcopy(base)
        args = args_class(output_dir=str(tmp_path / name), **COMMON)
        with caplog.at_level(logging.INFO, logger="distilkit"):
            trainer = (trainer_class(model, args, train_dataset=tiny_dataset("seq", 16), data_collator=pad_collator)
                       if args_given else trainer_class(model=model, args=args, train_dataset=tiny_dataset("seq", 16),
                                                        data_collator=pad_collator))
        trainer.train()
        runs[name] = (trainer, model)
    plain, swapped = runs["plain"], runs["swapped"]
    assert len(losses_of(plain[0])) == 3
    assert losses_of(plain[0]) == pytest.approx(losses_of(swapped[0]), abs=1e-6)
    for (key, p), q in zip(plain[1].named_parameters(), swapped[1].parameters()):
        assert torch.equal(p, q), key
    assert swapped[0].teacher is None and swapped[0].args.alpha is None
    assert not any(k.startswith("loss_") for entry in swapped[0].state.log_history for k in entry)
    assert "trains exactly as transformers.Trainer" in caplog.text


def test_the_arguments_stay_as_given_and_a_teacher_gets_the_default_alpha(tmp_path):
    args = DistillationConfig(output_dir=str(tmp_path), **COMMON)
    fresh = DistillationConfig(output_dir=str(tmp_path), **COMMON).to_dict()
    without = DistillationTrainer(tiny_model("seq"), args, train_dataset=tiny_dataset("seq", 8),
                                  data_collator=pad_collator)
    with_teacher = DistillationTrainer(tiny_model("seq"), args, teacher_model=tiny_model("seq", seed=1),
                                       train_dataset=tiny_dataset("seq", 8), data_collator=pad_collator)
    assert without.args.to_dict() == fresh and with_teacher.args.to_dict() == fresh  # as Trainer leaves them
    assert without.teacher is None and with_teacher.teacher is not None
    assert soft_label_weight(with_teacher.args) == DEFAULT_ALPHA == 1.0


def test_the_default_alpha_logs_no_hard_label_loss_it_does_not_train_on(tmp_path):
    trainer = DistillationTrainer(tiny_model("seq", seed=2), DistillationConfig(output_dir=str(tmp_path), **COMMON),
                                  teacher_model=tiny_model("seq", seed=1), train_dataset=tiny_dataset("seq", 12),
                                  data_collator=pad_collator)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 3
    assert all("loss_kd" in entry and "loss_ce" not in entry for entry in logs)


def test_transformers_own_error_for_a_missing_metric_for_best_model(tmp_path):
    settings = dict(output_dir=str(tmp_path), save_strategy="best", eval_strategy="steps", report_to="none")
    data = tiny_dataset("seq", 4)
    for trainer_class, args in ((Trainer, TrainingArguments(**settings)),
                                (DistillationTrainer, DistillationConfig(**settings))):
        with pytest.raises(ValueError, match="metric_for_best_model` must be provided"):
            trainer_class(tiny_model("seq"), args, train_dataset=data, eval_dataset=data)


# ---- columns the model does not read ----------------------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True])
def test_raw_text_columns_are_ignored_as_trainer_ignores_them(tmp_path, cached):
    """A text column left in the labelled and the transfer data (different ones), live or cached teacher: trains,
    and the cached teacher gives the same weights as the live one on the same data without text columns."""
    teacher, base = tiny_model("seq", seed=1, **NO_DROPOUT), tiny_model("seq", seed=2, **NO_DROPOUT)
    transfer = tiny_dataset("seq", 8, seed=5).remove_columns("labels")
    weights = []
    for text in (False, True):
        student = copy.deepcopy(base)
        train_set = with_text(tiny_dataset("seq", 8)) if text else tiny_dataset("seq", 8)
        transfer_set = with_text(transfer, "text") if text else transfer
        args = DistillationConfig(output_dir=str(tmp_path / f"out{text}"), alpha=0.5, **COMMON,
                                  teacher_cache_dir=str(tmp_path / f"cache{text}") if cached else None)
        trainer = DistillationTrainer(student, args, teacher_model=teacher, train_dataset=train_set,
                                      transfer_dataset=transfer_set, data_collator=pad_collator)
        trainer.train()
        assert trainer.state.global_step == 3
        weights.append(student.state_dict())
    for key in weights[0]:
        assert torch.allclose(weights[0][key], weights[1][key], atol=1e-6), key


def test_a_transfer_set_without_a_column_the_model_reads_is_refused(tmp_path):
    transfer = tiny_dataset("seq", 4, seed=5).remove_columns(["labels", "attention_mask"])
    args = DistillationConfig(output_dir=str(tmp_path), **COMMON)
    with pytest.raises(ValueError, match=r"lacks the columns \['attention_mask'\]"):
        DistillationTrainer(tiny_model("seq"), args, teacher_model=tiny_model("seq", seed=1),
                            train_dataset=with_text(tiny_dataset("seq", 4)), transfer_dataset=transfer,
                            data_collator=pad_collator)


def test_without_remove_unused_columns_the_transfer_set_needs_every_column(tmp_path):
    """remove_unused_columns=False: the collator sees every column, so both sets must have the same ones."""
    transfer = tiny_dataset("seq", 4, seed=5).remove_columns("labels")
    args = DistillationConfig(output_dir=str(tmp_path), remove_unused_columns=False, **COMMON)
    with pytest.raises(ValueError, match=r"lacks the columns \['sentence'\]"):
        DistillationTrainer(tiny_model("seq"), args, teacher_model=tiny_model("seq", seed=1),
                            train_dataset=with_text(tiny_dataset("seq", 4)), transfer_dataset=transfer,
                            data_collator=pad_collator)


# ---- the teacher pass: after construction, announced ----------------------------------------------------------


def test_the_teacher_cache_is_built_when_training_starts_and_announced_at_warning_level(tmp_path, monkeypatch,
                                                                                        caplog):
    from distilkit import teacher_cache

    calls = []
    real = teacher_cache.compute_teacher_outputs
    monkeypatch.setattr(teacher_cache, "compute_teacher_outputs",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    args = DistillationConfig(output_dir=str(tmp_path / "out"), teacher_cache_dir=str(tmp_path / "cache"),
                              disable_tqdm=True, **COMMON)
    trainer = DistillationTrainer(tiny_model("seq", seed=2), args, teacher_model=tiny_model("seq", seed=1),
                                  train_dataset=with_text(tiny_dataset("seq", 10)), data_collator=pad_collator)
    assert calls == [] and not (tmp_path / "cache").exists()  # building the trainer ran no teacher pass
    with caplog.at_level(logging.WARNING, logger="distilkit"):
        trainer.train()
    assert calls == [10]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("teacher's outputs for 10 training examples" in m and str(tmp_path / "cache") in m for m in warnings)
    assert any("Teacher outputs for 10 examples computed in" in m for m in warnings)
    assert "teacher_logits" in trainer.train_dataset.column_names


def test_a_teacher_cache_without_a_dataset_fingerprint_is_refused_at_construction(tmp_path):
    args = DistillationConfig(output_dir=str(tmp_path), teacher_cache_dir=str(tmp_path / "cache"), **COMMON)
    with pytest.raises(ValueError, match="needs a datasets.Dataset as train_dataset"):
        DistillationTrainer(tiny_model("seq"), args, teacher_model=tiny_model("seq", seed=1),
                            train_dataset=list(tiny_dataset("seq", 4)), data_collator=pad_collator)


# ---- model cards of a student distilled from a local teacher ---------------------------------------------------


def _card_of_student(tmp_path, teacher):
    args = DistillationConfig(output_dir=str(tmp_path / "student"), **COMMON)
    trainer = DistillationTrainer(tiny_model("seq", seed=2), args, teacher_model=teacher,
                                  train_dataset=tiny_dataset("seq", 8), data_collator=pad_collator)
    trainer.save_model()
    trainer.create_model_card()
    return ModelCard.load(tmp_path / "student" / "README.md")


def test_a_local_teacher_is_named_by_its_folder_not_linked_nor_claimed_as_base_model(tmp_path, monkeypatch):
    tiny_model("seq", seed=1).save_pretrained(tmp_path / "teacher")
    monkeypatch.chdir(tmp_path)
    teacher = AutoModelForSequenceClassification.from_pretrained("teacher")  # a relative folder named "teacher"
    card = _card_of_student(tmp_path, teacher)
    assert "base_model" not in card.data.to_dict()
    assert "distilled from `teacher` with" in card.text and "huggingface.co/teacher" not in card.text


def test_a_teacher_with_a_hub_id_is_linked_and_is_the_base_model(tmp_path):
    teacher = tiny_model("seq", seed=1)
    teacher.config._name_or_path = "org/fine-tuned-teacher"  # as from_pretrained("org/fine-tuned-teacher") sets
    card = _card_of_student(tmp_path, teacher)
    assert card.data.to_dict()["base_model"] == "org/fine-tuned-teacher"
    assert "[org/fine-tuned-teacher](https://huggingface.co/org/fine-tuned-teacher)" in card.text


def test_cli_cards_name_a_local_teacher_folder_and_link_a_hub_teacher(tmp_path, monkeypatch):
    from distilkit.pipeline.recipe import load_recipe
    from distilkit.pipeline.report import StageResult, finish

    monkeypatch.chdir(tmp_path)
    tiny_model("seq", seed=1).save_pretrained(tmp_path / "runs" / "emo" / "teacher")
    tiny_model("seq", seed=2).save_pretrained(tmp_path / "out" / "student")
    results = [StageResult("student", str(tmp_path / "out" / "student"), {}, 1, 1.0, None, 2, 8)]
    recipe = load_recipe("distill", output_dir=str(tmp_path / "out"), latency=False)
    data = type("Data", (), {"description": "test.csv"})
    cards = {}
    for source in ("runs/emo/teacher", "org/emo-teacher"):
        finish(recipe, results, {}, data=data, teacher_source=source, started=0.0)
        cards[source] = ModelCard.load(tmp_path / "out" / "student" / "README.md")
    local, hub = cards["runs/emo/teacher"], cards["org/emo-teacher"]
    assert "base_model" not in local.data.to_dict() and "huggingface.co/teacher" not in local.text
    assert "distilled from `teacher` with" in local.text
    assert hub.data.to_dict()["base_model"] == "org/emo-teacher"
    assert "(https://huggingface.co/org/emo-teacher)" in hub.text


def test_the_card_of_a_run_without_a_teacher_states_no_distillation(tmp_path):
    args = DistillationConfig(output_dir=str(tmp_path / "plain"), **COMMON)
    trainer = DistillationTrainer(tiny_model("seq"), args, train_dataset=tiny_dataset("seq", 8),
                                  data_collator=pad_collator)
    trainer.save_model()
    trainer.create_model_card()
    card = ModelCard.load(tmp_path / "plain" / "README.md")
    assert "distillation" not in card.data.to_dict()["tags"] and "alpha" not in card.text
    assert "Training" in card.text
