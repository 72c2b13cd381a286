"""Logit distillation from a teacher that has its own tokenizer (teacher_ inputs)."""

import pytest
import torch
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

from distilkit import DistillationConfig, DistillationTrainer, losses
from distilkit.data import TeacherInputsCollator, prepare_classification

NO_DROPOUT = dict(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def with_teacher_inputs(dataset, seed=0):
    """Add teacher_input_ids/teacher_attention_mask of other lengths, ids in the teacher's larger vocabulary."""
    g = torch.Generator().manual_seed(seed)

    def add(row):
        length = len(row["input_ids"]) + 2
        return {"teacher_input_ids": torch.randint(100, 150, (length,), generator=g).tolist(),
                "teacher_attention_mask": [1] * length}

    return dataset.map(add)


def make(tmp_path, task="seq", **kw):
    teacher = tiny_model(task, seed=1, vocab_size=150, layers=3, **NO_DROPOUT)
    student = tiny_model(task, seed=2, **NO_DROPOUT)
    kw.setdefault("alpha", 0.6)
    args = DistillationConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, max_steps=2, report_to="none",
                              use_cpu=True, save_strategy="no", logging_steps=1, **kw)
    return teacher, student, DistillationTrainer(
        model=student, teacher_model=teacher, args=args,
        train_dataset=with_teacher_inputs(tiny_dataset(task, 8)), data_collator=pad_collator)


def test_teacher_reads_its_own_inputs_and_loss_matches_reference(tmp_path):
    teacher, student, trainer = make(tmp_path)
    seen = []
    teacher.bert.embeddings.word_embeddings.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    batch = pad_collator([trainer.train_dataset[i] for i in range(4)])
    student.train()
    loss = trainer.compute_loss(student, dict(batch))
    assert torch.equal(seen[0], batch["teacher_input_ids"])  # the teacher got its ids, never the student's
    with torch.no_grad():
        t_logits = teacher(input_ids=batch["teacher_input_ids"], attention_mask=batch["teacher_attention_mask"]).logits
        s_out = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], labels=batch["labels"])
    expected = 0.4 * s_out.loss + 0.6 * losses.soft_label_loss(s_out.logits, t_logits, 2.0)
    assert torch.allclose(loss, expected, atol=1e-5)
    trainer.train()  # remove_unused_columns keeps the teacher columns through the real data loader
    assert len([e for e in trainer.state.log_history if "loss_kd" in e]) == 2


def test_teacher_inputs_are_refused_for_token_level_tasks_when_the_trainer_is_built(tmp_path):
    with pytest.raises(ValueError, match="only works for sequence-level tasks"):
        make(tmp_path, task="token", alpha=1.0)


@pytest.mark.parametrize("field", ["hidden_weight", "attention_weight"])
def test_layer_terms_are_refused_with_a_teacher_of_another_tokenizer(tmp_path, field):
    """Hidden states and attention maps are compared position by position: two tokenizations do not line up."""
    teacher = tiny_model("seq", seed=1, vocab_size=150, **NO_DROPOUT)
    student = tiny_model("seq", seed=2, **NO_DROPOUT)
    args = DistillationConfig(output_dir=str(tmp_path), max_steps=2, report_to="none", use_cpu=True,
                              save_strategy="no", **{field: 1.0})
    with pytest.raises(ValueError, match=f"{field} compare hidden states or attention maps position by position"):
        DistillationTrainer(model=student, teacher_model=teacher, args=args,
                            train_dataset=with_teacher_inputs(tiny_dataset("seq", 8)), data_collator=pad_collator)


def word_tokenizer(words):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(words)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def test_prepare_and_collate_with_two_tokenizers():
    from datasets import Dataset

    student_tok = word_tokenizer(["good", "bad", "film"])
    teacher_tok = word_tokenizer(["a", "b", "good", "film", "bad", "very"])
    raw = Dataset.from_list([{"text": "good film", "label": 1}, {"text": "very bad film indeed", "label": 0}])
    data = prepare_classification(raw, student_tok, "text", "label", teacher_tokenizer=teacher_tok)
    assert data[0]["input_ids"] == [2, 4] and data[0]["teacher_input_ids"] == [4, 5]
    collate = TeacherInputsCollator(lambda f: student_tok.pad(f, return_tensors="pt"), teacher_tok)
    batch = collate([dict(data[0]), dict(data[1])])
    assert batch["input_ids"].tolist() == [[2, 4, 0, 0], [1, 3, 4, 1]]
    assert batch["teacher_input_ids"].tolist() == [[4, 5, 0, 0], [7, 6, 5, 1]]
    assert batch["teacher_attention_mask"].tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
