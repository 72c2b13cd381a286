"""An exported folder (`to_onnx`) run by ONNX Runtime on CPU, called like the PyTorch model it came from.

    from distilkit.export import OnnxRuntimeModel
    model = OnnxRuntimeModel("runs/sst2/onnx", threads=2)
    logits = model(**tokenizer(["a fine film"], return_tensors="pt")).logits

Keyword tensors in (those the graph takes; a missing attention_mask counts every token, a missing token_type_ids
is zeros), a `ModelOutput` with the graph's outputs out (`logits` first) as torch tensors. It is a
`torch.nn.Module` without parameters, with the folder's `config`, so that what times or evaluates PyTorch models
(`distilkit.measure.interleaved_timing`, `distilkit.engines`) takes it unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.utils import ModelOutput

from .extra import require_onnx
from .folder import ONNX_FILE

DEFAULT_INPUTS = {"attention_mask": torch.ones_like, "token_type_ids": torch.zeros_like}


def ort_session(path: str | os.PathLike, threads: int, profile_prefix: str | None = None,
                spinning: bool = True):
    """An ONNX Runtime CPU session of the graph at `path` on `threads` intra-op threads, one inter-op thread and
    sequential execution, as PyTorch runs a forward pass; ONNX Runtime's profiler on when `profile_prefix` is
    given (its json files start with it). `spinning=False`: the intra-op threads sleep as soon as a run ends
    instead of spin-waiting for the next (ONNX Runtime's default spins): what timing several models in turn needs,
    since a spinning pool takes the cores from the next model (measured here: an int8 MiniLM-L6 export at batch 8,
    2 threads, ran 31 ms with its spread at 4% beside a non-spinning teacher session, 55 ms with 36-64% beside a
    spinning one)."""
    require_onnx()
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    if not spinning:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


@dataclass
class OnnxRuntimeOutput(ModelOutput):
    """The graph's outputs: `logits`, and any other output under its graph name in `outputs`."""

    logits: torch.Tensor | None = None
    outputs: dict[str, torch.Tensor] | None = None


class OnnxRuntimeModel(torch.nn.Module):
    """The graph of an exported folder (model.onnx beside config.json) in an ONNX Runtime session on `threads`
    CPU threads (`spinning`: see `ort_session`). Raises `MissingExtraError` without distilkit[onnx], ValueError for
    a folder without model.onnx."""

    def __init__(self, folder: str | os.PathLike, threads: int = 2, spinning: bool = True):
        super().__init__()
        require_onnx()
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
            raise ValueError(f"threads must be a positive integer; got {threads!r}.")
        self.folder = Path(folder)
        if not (self.folder / ONNX_FILE).is_file():
            raise ValueError(f"{str(self.folder)!r} holds no {ONNX_FILE}: pass a folder written by "
                             "distilkit.export.to_onnx (or `distilkit export`).")
        from transformers import AutoConfig

        self.config = AutoConfig.from_pretrained(self.folder)
        self.threads = threads
        self.session = ort_session(self.folder / ONNX_FILE, threads, spinning=spinning)
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(self, input_ids: torch.Tensor, **inputs: torch.Tensor | None) -> OnnxRuntimeOutput:
        given = {"input_ids": input_ids, **{name: value for name, value in inputs.items() if value is not None}}
        feeds = {}
        for name in self.input_names:
            if name in given:
                value = given[name]
            elif name in DEFAULT_INPUTS:
                value = DEFAULT_INPUTS[name](input_ids)
            else:
                raise ValueError(f"The graph in {self.folder} takes {name!r}, which was not given (given: "
                                 f"{', '.join(sorted(given))}).")
            feeds[name] = value.detach().cpu().to(torch.long).numpy()
        values = [torch.from_numpy(v) for v in self.session.run(self.output_names, feeds)]
        named = dict(zip(self.output_names, values))
        return OnnxRuntimeOutput(logits=named.get("logits", values[0]), outputs=named)

    def extra_repr(self) -> str:
        return f"folder={str(self.folder)!r}, threads={self.threads}, inputs={self.input_names}"
