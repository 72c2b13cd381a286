"""Build a smaller student from a teacher by keeping some of its layers (DistilBERT-style initialisation)."""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel

from .architectures import get_layers, layers_prefix


def every_kth_layer(num_layers: int, num_keep: int) -> list[int]:
    """`num_keep` evenly spaced layer indices out of `num_layers`, starting at 0 (e.g. 12 -> 6: 0, 2, ..., 10)."""
    if not 0 < num_keep <= num_layers:
        raise ValueError(f"Cannot keep {num_keep} layers out of {num_layers}; choose 1..{num_layers}.")
    return [round(i * num_layers / num_keep) for i in range(num_keep)]


def student_from_teacher(teacher: PreTrainedModel, keep_layers: Sequence[int] | int) -> PreTrainedModel:
    """A copy of `teacher` that keeps only the layers in `keep_layers`, with their trained weights.

    Embeddings, the task head and every other non-layer weight are copied too. `keep_layers` is a list of layer
    indices (in increasing order) or an int, meaning that many evenly spaced layers (`every_kth_layer`).
    Supported families: see `distilkit.architectures.SUPPORTED_MODEL_TYPES`.
    """
    num_layers = len(get_layers(teacher))
    if isinstance(keep_layers, int):
        keep_layers = every_kth_layer(num_layers, keep_layers)
    keep_layers = [int(i) for i in keep_layers]
    if not keep_layers:
        raise ValueError("keep_layers is empty; keep at least one layer.")
    bad = [i for i in keep_layers if not 0 <= i < num_layers]
    if bad:
        raise ValueError(f"keep_layers {bad} out of range: the teacher has layers 0..{num_layers - 1}.")
    if sorted(set(keep_layers)) != keep_layers:
        raise ValueError(f"keep_layers must be strictly increasing without repeats, got {keep_layers}.")

    config = copy.deepcopy(teacher.config)
    config.num_hidden_layers = len(keep_layers)
    # Per-layer config lists (e.g. Qwen2's layer_types for sliding-window attention) follow the kept layers.
    layer_types = getattr(config, "layer_types", None)
    if isinstance(layer_types, list) and len(layer_types) == num_layers:
        config.layer_types = [layer_types[i] for i in keep_layers]

    student = type(teacher)(config)
    prefix = re.escape(layers_prefix(teacher))
    layer_key = re.compile(rf"^({prefix})\.(\d+)\.(.*)$")
    new_index = {old: new for new, old in enumerate(keep_layers)}
    state = {}
    for key, value in teacher.state_dict().items():
        match = layer_key.match(key)
        if match is None:
            state[key] = value
        elif int(match.group(2)) in new_index:
            state[f"{match.group(1)}.{new_index[int(match.group(2))]}.{match.group(3)}"] = value
    with torch.no_grad():
        student.load_state_dict(state, strict=True)
    student.to(device=teacher.device, dtype=teacher.dtype)
    return student
