"""Test instrumentation for test_multiprocess.py (this module holds no tests): record which examples each rank
trains on and which files it writes, by wrapping DistillationTrainer.compute_loss and the writers. Imported by
a `sitecustomize` module in the launched processes, and by the test itself for the one-process reference."""

from __future__ import annotations

import json
from pathlib import Path


def install_recorder(record_dir: Path, tag: str, patch=setattr) -> None:
    """Log to record_dir/batches-<tag>.jsonl and writes-<tag>.jsonl; `patch` is setattr or monkeypatch.setattr."""
    import huggingface_hub
    import transformers

    from distilkit.trainer import DistillationTrainer

    def log(kind, payload):
        with open(record_dir / f"{kind}-{tag}.jsonl", "a", encoding="utf-8") as handle:
            handle.write(json.dumps(payload) + "\n")

    compute_loss = DistillationTrainer.compute_loss

    def recording_compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            rows = [ids[mask.bool()].tolist() for ids, mask in zip(inputs["input_ids"], inputs["attention_mask"])]
            log("batches", {"step": self.state.global_step, "rows": rows})
        return compute_loss(self, model, inputs, *args, **kwargs)

    def wrap_writer(owner, name):
        original = getattr(owner, name)

        def writer(self, *args, **kwargs):
            target = self if owner is Path else (args[0] if args else kwargs.get("save_directory", ""))
            log("writes", {"what": f"{owner.__name__}.{name}", "where": str(target)})
            return original(self, *args, **kwargs)

        patch(owner, name, writer)

    patch(DistillationTrainer, "compute_loss", recording_compute_loss)
    wrap_writer(transformers.PreTrainedModel, "save_pretrained")
    wrap_writer(transformers.PreTrainedTokenizerBase, "save_pretrained")
    wrap_writer(huggingface_hub.ModelCard, "save")
    wrap_writer(Path, "write_text")
