"""Re-applying a saved pruning record, so `distilkit.from_pretrained` can load a pruned model strictly.

`prune_heads` stores `{"kept_heads": [[heads of layer 0], [heads of layer 1], ...]}` (original numbering) under
`config.distilkit["pruning"]`; `save_pretrained` writes it to config.json. Loading builds the plain model from
the config, removes the heads that are not in the record, then loads the saved weights into that structure.
"""

from __future__ import annotations

from transformers import PreTrainedModel

from .structural import head_layout, prune_heads


def restore_pruning(model: PreTrainedModel, record: dict) -> PreTrainedModel:
    """Give `model`, freshly built from its config, the head structure described by `record`."""
    layout = head_layout(model)
    kept = record.get("kept_heads") if isinstance(record, dict) else None
    if not isinstance(kept, list) or len(kept) != layout.num_layers:
        raise ValueError(
            f"config.distilkit['pruning'] must be {{'kept_heads': [one list of head indices per layer]}} with "
            f"{layout.num_layers} lists for this model; got {record!r}."
        )
    heads_to_prune = {}
    for layer, heads in enumerate(kept):
        missing = sorted(set(range(layout.num_heads)) - {int(h) for h in heads})
        if missing:
            heads_to_prune[layer] = missing
    return prune_heads(model, heads_to_prune)
