import pytest

from distilkit import DistillationConfig
from distilkit.config import parse_layer_map, uniform_layer_map


def make(**kw):
    return DistillationConfig(output_dir="unused", report_to="none", **kw)


def test_defaults_and_trainingarguments_fields():
    config = make(learning_rate=1e-4)
    assert config.temperature == 2.0 and config.alpha is None and config.hidden_weight == 0
    assert config.layer_map == "uniform" and config.learning_rate == 1e-4
    assert config.uses_teacher and not make(alpha=0.0).uses_teacher


def test_unset_alpha_weighs_the_soft_labels_by_the_default_and_is_no_explicit_setting():
    from distilkit.loss_terms import DEFAULT_ALPHA, soft_label_weight

    config = make()
    assert DEFAULT_ALPHA == 1.0 and soft_label_weight(config) == DEFAULT_ALPHA and config.uses_teacher
    assert soft_label_weight(make(alpha=0.3)) == 0.3
    assert config.distillation_settings == {} and make(alpha=0.0).distillation_settings == {}
    assert make(alpha=0.5, hidden_weight=1.0).distillation_settings == {"alpha": 0.5, "hidden_weight": 1.0}


def test_every_field_has_help():
    from dataclasses import fields

    from transformers import TrainingArguments

    own = {f.name for f in fields(DistillationConfig)} - {f.name for f in fields(TrainingArguments)}
    assert {"temperature", "alpha", "hidden_weight", "hidden_loss", "layer_map", "attention_weight"} <= own
    for f in fields(DistillationConfig):
        if f.name in own:
            assert f.metadata.get("help"), f.name


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"temperature": 0}, "temperature must be > 0, got 0"),
        ({"temperature": -1.5}, "temperature must be > 0, got -1.5"),
        ({"alpha": 1.2}, r"alpha must be in \[0, 1\].*1.2"),
        ({"alpha": -0.1}, r"alpha must be in \[0, 1\]"),
        ({"hidden_weight": -1}, "hidden_weight must be >= 0, got -1"),
        ({"attention_weight": -2}, "attention_weight must be >= 0"),
        ({"hidden_loss": "l1"}, "hidden_loss must be one of"),
        ({"attention_loss": "js"}, "attention_loss must be one of"),
        ({"teacher_dtype": "int8"}, "teacher_dtype must be one of"),
        ({"layer_map": "everything"}, "layer_map='everything' is not understood"),
        ({"layer_map": {1: -2}}, "must be >= 0"),
        ({"layer_map": {0: 2}, "attention_weight": 1.0}, "embedding output"),
    ],
)
def test_invalid_values_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make(**kwargs)


def test_layer_map_forms():
    assert parse_layer_map("uniform") == "uniform"
    assert parse_layer_map({"2": "4", 1: 2}) == {1: 2, 2: 4}
    assert parse_layer_map('{"1": 3}') == {1: 3}
    assert parse_layer_map("0:0, 1:6") == {0: 0, 1: 6}
    assert make(layer_map="1:2,2:4").layer_map == {1: 2, 2: 4}


def test_uniform_layer_map_is_distilbert_spacing():
    assert uniform_layer_map(6, 12) == {0: 0, 1: 2, 2: 4, 3: 6, 4: 8, 5: 10, 6: 12}
    assert uniform_layer_map(3, 6) == {0: 0, 1: 2, 2: 4, 3: 6}
    assert uniform_layer_map(2, 2) == {0: 0, 1: 1, 2: 2}
