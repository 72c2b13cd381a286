"""The public names of every package root, listed here: a name added, removed or renamed is a decision this test
makes visible (and the CHANGELOG records). Each listed name resolves (the roots export lazily)."""

import importlib

import pytest

PUBLIC = {
    "distilkit": ["DistillationConfig", "DistillationTrainer", "__version__", "from_pretrained", "save_pretrained",
                  "student_from_teacher"],
    "distilkit.pipeline": ["Recipe", "RecipeError", "Run", "Stage", "load_recipe", "run"],
    "distilkit.compress": ["CompressArguments", "CompressResult", "MachineSettings", "ModelShape", "Plan", "Target",
                           "compress", "make_plan", "plan_compression"],
    "distilkit.pruning": ["PruningArguments", "PruningCallback", "compute_ffn_importance", "compute_head_importance",
                          "kept_heads", "kept_neurons", "least_important_heads", "least_important_neurons",
                          "prune_ffn", "prune_ffn_to_fraction", "prune_heads", "prune_heads_to_fraction",
                          "removed_heads"],
    "distilkit.quantization": ["Int8Embedding", "Int8Linear", "quantize_int8", "select_kernel", "select_modules",
                               "set_attention"],
    "distilkit.export": ["MissingExtraError", "OnnxRuntimeModel", "to_onnx"],
    "distilkit.serialization": ["compression_record", "from_pretrained", "load_config", "save_pretrained"],
    "distilkit.model_card": ["CARD_FILE", "CardFacts", "ModelRow", "TrainingRun", "card_template_path", "hub_id",
                             "measure_model", "recipe_from_config", "render_card", "render_model_card", "save_card",
                             "teacher_hub_id", "teacher_name", "trainer_model_card", "write_model_card"],
    "distilkit.augment": ["AugmentArguments", "augment_dataset"],
    "distilkit.metrics": ["SHIPPED", "load_metric", "metric_path"],
}


@pytest.mark.parametrize("root", sorted(PUBLIC))
def test_each_root_exports_exactly_its_listed_names_and_each_resolves(root):
    module = importlib.import_module(root)
    assert sorted(module.__all__) == sorted(PUBLIC[root])
    for name in PUBLIC[root]:
        assert getattr(module, name) is not None, f"{root}.{name}"


def test_distilkits_int8_is_not_named_like_torch_ao_dynamic_quantization():
    import distilkit.quantization as q

    assert not hasattr(q, "quantize_dynamic")  # torch.ao.quantization.quantize_dynamic behaves differently
