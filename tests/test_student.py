import pytest
import torch
import transformers as tf
from helpers.tiny_models import pad_collator, tiny_dataset, tiny_model

from distilkit import student_from_teacher
from distilkit.architectures import get_layers
from distilkit.student import every_kth_layer

FAMILIES = [("seq", "bert"), ("seq", "roberta"), ("seq", "distilbert"), ("seq", "mpnet"), ("causal", "llama"),
            ("causal", "qwen2"), ("token", "bert")]


@pytest.mark.parametrize("task, family", FAMILIES)
def test_keeping_every_layer_reproduces_the_teacher(task, family):
    teacher = tiny_model(task, family=family, layers=3).eval()
    student = student_from_teacher(teacher, [0, 1, 2]).eval()
    batch = pad_collator([tiny_dataset(task, 3)[i] for i in range(3)])
    batch.pop("labels")
    with torch.no_grad():
        assert torch.allclose(teacher(**batch).logits, student(**batch).logits, atol=1e-6)


@pytest.mark.parametrize("task, family", FAMILIES)
def test_kept_layers_carry_the_teachers_weights(task, family):
    teacher = tiny_model(task, family=family, layers=4)
    student = student_from_teacher(teacher, [1, 3])
    assert type(student) is type(teacher)
    assert student.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    teacher_layers, student_layers = get_layers(teacher), get_layers(student)
    assert len(student_layers) == 2
    for new, old in enumerate([1, 3]):
        for (name, p), q in zip(student_layers[new].named_parameters(), teacher_layers[old].parameters()):
            assert torch.equal(p, q), name
    # Everything outside the layer stack (embeddings, task head) is copied too.
    t_state, s_state = teacher.state_dict(), student.state_dict()
    outside = [k for k in s_state if ".layer.0." not in k and ".layers.0." not in k and ".layer.1." not in k
               and ".layers.1." not in k]
    assert outside and all(torch.equal(s_state[k], t_state[k]) for k in outside)


def test_qwen2_layer_types_follow_the_kept_layers():
    teacher = tiny_model("causal", family="qwen2", layers=4)
    teacher.config.layer_types = ["full_attention", "sliding_attention", "full_attention", "sliding_attention"]
    student = student_from_teacher(teacher, [0, 1])
    assert student.config.layer_types == ["full_attention", "sliding_attention"]


def test_integer_keeps_evenly_spaced_layers():
    assert every_kth_layer(12, 6) == [0, 2, 4, 6, 8, 10]
    assert every_kth_layer(6, 3) == [0, 2, 4]
    teacher = tiny_model("seq", layers=4)
    student = student_from_teacher(teacher, 2)
    assert torch.equal(get_layers(student)[1].attention.self.query.weight, get_layers(teacher)[2].attention.self.query.weight)


def test_bad_keep_layers_are_clear_errors():
    teacher = tiny_model("seq", layers=4)
    with pytest.raises(ValueError, match=r"\[4\] out of range: the teacher has layers 0..3"):
        student_from_teacher(teacher, [0, 4])
    with pytest.raises(ValueError, match="strictly increasing"):
        student_from_teacher(teacher, [2, 1])
    with pytest.raises(ValueError, match="empty"):
        student_from_teacher(teacher, [])
    with pytest.raises(ValueError, match="Cannot keep 5 layers out of 4"):
        student_from_teacher(teacher, 5)


def test_unsupported_family_names_the_supported_ones():
    gpt2 = tf.GPT2LMHeadModel(tf.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4))
    with pytest.raises(ValueError, match="'gpt2' is not supported.*bert, roberta.*distilbert.*mpnet.*llama"):
        student_from_teacher(gpt2, [0])
