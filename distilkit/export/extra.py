"""The optional dependencies of the ONNX export (`pip install "distilkit[onnx]"`), checked before any work."""

from __future__ import annotations

import importlib

EXTRA = "distilkit[onnx]"
# Module -> its package on PyPI. (torch.onnx's TorchScript exporter, the one used here, needs onnx but not
# onnxscript; onnxruntime checks the exported file and quantizes with int8=True.)
REQUIRED: dict[str, str] = {"onnx": "onnx", "onnxruntime": "onnxruntime"}


class MissingExtraError(ImportError):
    """The ONNX export's packages are not installed."""


def require_onnx() -> None:
    """Import the export's dependencies, or raise one error naming every missing package and the extra."""
    missing = []
    for module, package in REQUIRED.items():
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if missing:
        raise MissingExtraError(
            f"Exporting to ONNX needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed. Install the extra: pip install \"{EXTRA}\" (or pip install {' '.join(missing)})."
        )
