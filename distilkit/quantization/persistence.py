"""Re-applying a saved quantization record, so `distilkit.from_pretrained` can load an int8 model strictly.

`quantize_dynamic` stores `{"format": 1, "linear": [module names], "embedding": [module names], "scheme": ...}`
under `config.distilkit["quantization"]`. Loading builds the float model from its config (already pruned, when
the record has a "pruning" key too), swaps the named modules for empty int8 modules of the same shapes, and lets
`load_state_dict` fill in the saved int8 weights and scales. Nothing is quantized at load time, so the reloaded
model computes exactly what the saved one did.
"""

from __future__ import annotations

from torch import nn

from .layer import Int8Embedding, Int8Linear
from .model import RECORD_FORMAT, replace_modules

_EXPECTED = {"linear": nn.Linear, "embedding": nn.Embedding}


def restore_quantization(model: nn.Module, record: dict) -> nn.Module:
    """Give `model`, freshly built from its config, the int8 modules described by `record`."""
    if not isinstance(record, dict) or not isinstance(record.get("linear"), list):
        raise ValueError(
            "config.distilkit['quantization'] must be a dict with a 'linear' list of module names (written by "
            f"distilkit.quantization.quantize_dynamic); got {record!r}."
        )
    version = record.get("format", RECORD_FORMAT)
    if version > RECORD_FORMAT:
        raise ValueError(
            f"This model was quantized with a newer distilkit (record format {version}; this version reads up to "
            f"{RECORD_FORMAT}). Upgrade distilkit."
        )
    named = dict(model.named_modules(remove_duplicate=False))
    for kind, expected in _EXPECTED.items():
        for name in record.get(kind, []):
            module = named.get(name)
            if type(module) is not expected:
                found = "no such module" if module is None else f"a {type(module).__name__}"
                raise ValueError(
                    f"The quantization record names {name!r} as a {expected.__name__} to restore in int8, but the "
                    f"model built from config.json has {found} there. The folder's config.json does not match "
                    "its weights, or the model was changed after quantization."
                )
    replace_modules(model, record["linear"], Int8Linear.like)
    replace_modules(model, record.get("embedding", []), Int8Embedding.like)
    return model
