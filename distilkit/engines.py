"""The inference engines a model is measured in: the one the user deploys on.

  * "torch": the PyTorch model as it is (distilkit's int8 layers included);
  * "onnxruntime": the model exported to ONNX (`distilkit.export.to_onnx`: int8 layers as ONNX integer ops) and
    run by ONNX Runtime on CPU (`distilkit.export.OnnxRuntimeModel`), what CPU users often deploy with.

`on_engine` turns {name: model} into models that run in the engine and are called like the PyTorch ones, so that
`distilkit.measure.interleaved_timing` times either alike: `compress` times its candidate twins and its final
comparison in the engine, `evaluate` its latencies (the `engine` field of a recipe's evaluation section).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import torch

TORCH, ONNXRUNTIME = "torch", "onnxruntime"
ENGINES = (TORCH, ONNXRUNTIME)


def check_engine(engine: str) -> str:
    """`engine` if it is one of ENGINES and can run here; ValueError naming the choices otherwise, and
    `distilkit.export.MissingExtraError` (an ImportError naming the extra) for onnxruntime without distilkit[onnx]."""
    if engine not in ENGINES:
        raise ValueError(f"engine={engine!r} is not an inference engine distilkit measures in; choose one of "
                         f"{', '.join(ENGINES)}.")
    if engine == ONNXRUNTIME:
        from .export.extra import require_onnx

        require_onnx()
    return engine


def describe(engine: str) -> str:
    """How latencies were run, for a report's latency line: nothing for PyTorch; for ONNX Runtime, that each model
    was exported, and the ONNX Runtime version."""
    if engine == TORCH:
        return ""
    from importlib.metadata import version

    return f", in {engine} (each model exported to ONNX), run by ONNX Runtime {version('onnxruntime')}"


@contextmanager
def on_engine(models: Mapping[str, torch.nn.Module], engine: str, threads: int,
              exported: Mapping[str, str | Path] | None = None) -> Iterator[dict[str, torch.nn.Module]]:
    """{name: model} running in `engine` on `threads` CPU threads, for the `with` block.

    "torch": the models themselves. "onnxruntime": each model exported to ONNX in a temporary folder (removed at
    the end; `to_onnx` checks the graph's outputs against the model's) and loaded in an ONNX Runtime session whose
    threads do not spin-wait between runs (`distilkit.export.session.ort_session`); a name in `exported` uses that
    folder (an export already written, e.g. the deployed one) instead."""
    check_engine(engine)
    if engine == TORCH:
        yield dict(models)
        return
    from .export import OnnxRuntimeModel, to_onnx

    exported = dict(exported or {})
    unknown = sorted(set(exported) - set(models))
    if unknown:
        raise ValueError(f"exported names {unknown} are not among the models ({', '.join(models)}).")
    with tempfile.TemporaryDirectory(prefix="distilkit-onnx-") as scratch:
        running = {}
        for number, (name, model) in enumerate(models.items()):
            folder = exported.get(name) or to_onnx(model, Path(scratch) / str(number))
            # Without spin-waiting: models run in turn, and a spinning pool would take the cores from the next.
            running[name] = OnnxRuntimeModel(folder, threads, spinning=False)
        try:
            yield running
        finally:
            running.clear()  # close the sessions before their files go
