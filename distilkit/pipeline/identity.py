"""What a run is made of, for the engine's resume check (`stages.Run`): the settings that shape its models, the
weights of the models it starts from, and its data. Two runs with the same identity make the same stages, so a
rerun resumes; another identity in the same output_dir is refused."""

from __future__ import annotations

import dataclasses

# Training settings that do not change the trained model: where it is written, logged, reported and cached.
NOT_SHAPING = ("output_dir", "logging_", "log_", "report_to", "run_name", "disable_tqdm", "push_to_hub", "hub_",
               "save_", "overwrite_output_dir", "teacher_cache_dir", "resume_from_checkpoint")
# Recipe sections that shape no model: how stages are measured, what is pushed or exported.
NOT_SHAPING_SECTIONS = ("evaluation", "push", "export")


def training_settings(training_args) -> dict:
    """The training settings that shape the result: every field but the output, logging and reporting ones."""
    return {name: value for name, value in training_args.to_dict().items() if not name.startswith(NOT_SHAPING)}


def recipe_settings(recipe, sections) -> dict:
    """The shaping settings of the recipe's `sections`, field by field (defaults included)."""
    settings = {}
    for section in sections:
        if section in NOT_SHAPING_SECTIONS or getattr(recipe, section, None) is None:
            continue
        values = getattr(recipe, section)
        settings[section] = (training_settings(values) if section == "training"
                             else {f.name: getattr(values, f.name) for f in dataclasses.fields(values) if f.init})
    return settings


def weights(model) -> str:
    """The fingerprint of a model's config and weights (`teacher_cache.teacher_fingerprint`)."""
    from ..teacher_cache import teacher_fingerprint

    return teacher_fingerprint(model)


def data_fingerprints(data) -> dict:
    """The fingerprints of the data a run trains on (`TaskData`): the training and transfer splits."""
    return {name: getattr(getattr(data, name, None), "_fingerprint", None) for name in ("train", "transfer")}
