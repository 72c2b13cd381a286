"""Export to ONNX Runtime: any distilkit model (plain, heads or FFN pruned, int8) to a folder that ONNX Runtime
serves without transformers, laid out as optimum's ORT models are (model.onnx, config.json, tokenizer files).

    from distilkit.export import to_onnx
    to_onnx("runs/sst2/int8", "runs/sst2/onnx")                   # distilkit's int8 weights as ONNX integer ops
    to_onnx("runs/sst2/student", "runs/sst2/onnx-int8", int8=True)  # ONNX Runtime's own dynamic int8
    OnnxRuntimeModel("runs/sst2/onnx", threads=2)(**batch).logits   # run an export like the model

Needs the optional packages onnx and onnxruntime: pip install "distilkit[onnx]".

Modules: extra (the optional packages), int8_ops (Int8Linear as ONNX integer ops), graph (tracing and the check
with ONNX Runtime), folder (`to_onnx`: checks, staging, config, tokenizer, publishing), session
(`OnnxRuntimeModel`: an export called like the PyTorch model).
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .extra import MissingExtraError
    from .folder import to_onnx
    from .session import OnnxRuntimeModel

_EXPORTS = {"MissingExtraError": "extra", "OnnxRuntimeModel": "session", "to_onnx": "folder"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["MissingExtraError", "OnnxRuntimeModel", "to_onnx"]
