"""`to_onnx`: a distilkit model (or folder) to a folder that ONNX Runtime serves without transformers.

The folder is laid out as optimum's ORT models are, so `optimum.onnxruntime.ORTModelFor...from_pretrained(folder)`
or a plain `onnxruntime.InferenceSession(folder + "/model.onnx")` loads it:

    model.onnx      the graph (`graph.py`; int8 layers as ONNX integer ops, `int8_ops.py`)
    config.json     the config of the base family (`"model_type": "bert"`, ...), readable by
                    `transformers.AutoConfig.from_pretrained` without remote code
    tokenizer files those of the source folder (or of the `tokenizer` given), when it has one

About config.json: a compressed model's own config says `"model_type": "distilkit"` with `auto_map` loading code,
which optimum and plain transformers cannot read. The export writes the plain config of the base family instead:
`distilkit` (the compression record) and `auto_map` are dropped, `use_cache` is false (the graph is one pass
without a key/value cache), and `distilkit_export` records what the file holds: the source's compressions, which
int8 the graph runs, its inputs, outputs and opset. The config's head counts and FFN widths stay those of the
unpruned architecture: a pruned model's real shapes live in the graph, and nothing that serves the encoder reads
them from config.json. (For a causal LM, optimum's cache shapes would read them; the export has no cache.)

`int8=True` runs ONNX Runtime's own dynamic quantization (`onnxruntime.quantization.quantize_dynamic`, int8
weights) on the exported graph. A folder already quantized by distilkit exports its int8 weights as they are
with `int8=False`; `int8=True` then also quantizes what distilkit left in float (the attention matmuls, the head).

Everything is checked before any work (the optional packages, the opset, the source, the output folder), and
the folder is written into a staging folder, checked with ONNX Runtime, then published in one rename: an
existing export is replaced whole or left as it was.

Limits: a causal LM's graph takes input_ids and attention_mask only (positions count from 0, as the PyTorch model's
without position_ids), so optimum's ORTModelForCausalLM loads it as a "legacy" model without a cache (it warns);
graphs over 2 GB (protobuf's limit for one file) are not handled.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .extra import require_onnx

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
DEFAULT_OPSET = 17
# 14: the oldest opset whose ops cover these models and the integer ops; 20: the newest torch's TorchScript
# exporter writes.
OPSETS = range(14, 21)
# A float export must reproduce the model to this share of its largest output (or this much, for outputs below 1)
# in the check before publishing; the tests hold tiny models to 1e-4.
FLOAT_CHECK_TOLERANCE = 1e-3
# Files that make a folder a tokenizer's (tokenizer_config.json is what AutoTokenizer reads first).
TOKENIZER_CONFIG = "tokenizer_config.json"
EXPORT_RECORD_KEY = "distilkit_export"


@dataclass(frozen=True)
class _Source:
    """What is exported: the model (loaded on demand for a folder), its tokenizer, and a name for messages."""

    folder: Path | None
    model: object | None
    tokenizer: object | None

    @property
    def name(self) -> str:
        return str(self.folder) if self.folder is not None else type(self.model).__name__


def to_onnx(model_or_folder: str | os.PathLike | torch.nn.Module, output_dir: str | os.PathLike, int8: bool = False,
            *, tokenizer: object | str | os.PathLike | None = None, opset: int = DEFAULT_OPSET) -> Path:
    """Export a distilkit model (plain, pruned, int8) to `output_dir/model.onnx` with its config and tokenizer.

    Args:
        model_or_folder: a folder saved by distilkit or transformers (`distilkit.from_pretrained` loads it), or a
            model in memory.
        output_dir: the folder to write; it must not exist, be empty, or hold an earlier export (replaced whole).
        int8: also quantize the graph with ONNX Runtime's dynamic int8 (`quantize_dynamic`, int8 weights).
        tokenizer: the tokenizer to write beside the graph (an object or a folder). Default: the source
            folder's, if it has one (a model in memory gets none unless given).
        opset: the ONNX opset, 14 to 20.

    Returns the folder. Raises `MissingExtraError` (an ImportError) without `distilkit[onnx]`, `ValueError` for
    a source or output folder that cannot be used (before anything is loaded or written), and `RuntimeError`
    when ONNX Runtime's outputs do not match the model (nothing is published then).
    """
    require_onnx()
    if opset not in OPSETS:
        raise ValueError(f"opset={opset!r} is not supported; choose one of {OPSETS.start}..{OPSETS.stop - 1} "
                         f"(default {DEFAULT_OPSET}).")
    output_dir = Path(output_dir)
    is_folder = isinstance(model_or_folder, (str, os.PathLike))
    _check_output_dir(output_dir, Path(model_or_folder) if is_folder else None)
    source = _resolve_source(model_or_folder, tokenizer)
    model = source.model if source.model is not None else _load_model(source.folder)

    from ..serialization.atomic import publishing_folder

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    with publishing_folder(output_dir) as staging:
        staging.mkdir()
        _write_folder(model, source, staging, int8, opset)
    logger.info("Exported %s to %s.", source.name, output_dir / ONNX_FILE)
    return output_dir


def _resolve_source(model_or_folder, tokenizer) -> _Source:
    """The source, checked: a folder must hold a model of a supported family (read from its config only)."""
    if isinstance(model_or_folder, (str, os.PathLike)):
        folder = Path(model_or_folder)
        if not folder.is_dir():
            what = "is a file" if folder.exists() else "does not exist"
            raise ValueError(f"{str(folder)!r} {what}: pass a model folder (config.json and the weights, as "
                             "distilkit.save_pretrained writes it) or a model.")
        if not (folder / "config.json").is_file():
            raise ValueError(f"{folder} is not a model folder: it has no config.json (a folder saved with "
                             "distilkit.save_pretrained or model.save_pretrained holds config.json and the weights).")
        from ..serialization import load_config

        config = load_config(folder)
        model = None
    elif hasattr(model_or_folder, "config") and callable(getattr(model_or_folder, "forward", None)):
        folder, model, config = None, model_or_folder, model_or_folder.config
    else:
        raise ValueError(f"to_onnx takes a model folder or a transformers model, not {type(model_or_folder).__name__}.")
    _check_family(config)
    return _Source(folder, model, _resolve_tokenizer(tokenizer if tokenizer is not None else folder,
                                                     explicit=tokenizer is not None))


def _check_family(config) -> None:
    """Only the families of distilkit.architectures export (each is tested, pruned and int8 included)."""
    from ..architectures import SUPPORTED_MODEL_TYPES

    model_type = getattr(config, "model_type", None)
    if model_type not in SUPPORTED_MODEL_TYPES:
        close = difflib.get_close_matches(str(model_type), SUPPORTED_MODEL_TYPES, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"Model type {model_type!r} cannot be exported: distilkit exports the model types it "
                         f"prunes and quantizes, {', '.join(SUPPORTED_MODEL_TYPES)}.{hint}")


def _resolve_tokenizer(tokenizer, explicit: bool):
    if tokenizer is None or not isinstance(tokenizer, (str, os.PathLike)):
        return tokenizer
    folder = Path(tokenizer)
    if not (folder / TOKENIZER_CONFIG).is_file():
        if explicit:
            raise ValueError(f"tokenizer={str(folder)!r} holds no {TOKENIZER_CONFIG}; pass a tokenizer folder.")
        logger.warning("%s has no tokenizer (%s): the export will hold none.", folder, TOKENIZER_CONFIG)
        return None
    from transformers import AutoTokenizer

    from ..serialization.format import register_with_auto_config

    register_with_auto_config()  # AutoTokenizer reads config.json, which says "distilkit" in a compressed folder
    try:
        return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError) as err:
        raise ValueError(f"Could not load the tokenizer in {folder}: {err}") from err


def _check_output_dir(output_dir: Path, source_folder: Path | None) -> None:
    """Refuse an output folder whose contents the export would destroy, or that cannot be a folder."""
    if output_dir.exists() and not output_dir.is_dir():
        raise ValueError(f"output_dir {str(output_dir)!r} is a file; pass a folder (new, empty, or an earlier export).")
    if source_folder is not None and output_dir.resolve() == source_folder.resolve():
        raise ValueError(f"output_dir {str(output_dir)!r} is the model folder itself; export into another folder.")
    if output_dir.is_dir() and not (output_dir / ONNX_FILE).is_file():
        entries = sorted(p.name for p in output_dir.iterdir())
        if entries:
            raise ValueError(f"output_dir {str(output_dir)!r} holds other files ({', '.join(entries[:5])}) and no "
                             f"{ONNX_FILE}: the export replaces its folder whole. Pass a new or empty folder, or an "
                             "earlier export.")
    for parent in output_dir.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ValueError(f"output_dir {str(output_dir)!r} cannot be created: {parent} is a file.")
            break


def _load_model(folder: Path):
    from ..serialization import from_pretrained

    return from_pretrained(folder)


def _write_folder(model, source: _Source, staging: Path, int8: bool, opset: int) -> None:
    from .graph import check_graph, export_graph

    graph_path = staging / (f"float-{ONNX_FILE}" if int8 else ONNX_FILE)
    signature = export_graph(model, graph_path, opset, source.tokenizer)
    check = check_graph(graph_path, model, signature)
    from ..quantization.model import quantized_module_names

    distilkit_int8 = bool(quantized_module_names(model))
    if not distilkit_int8 and check.max_difference > FLOAT_CHECK_TOLERANCE * max(1.0, check.max_reference):
        raise RuntimeError(f"ONNX Runtime's outputs differ from {source.name}'s by {check.max_difference:.3g} "
                           f"(largest output {check.max_reference:.3g}); the export of {type(model).__name__} is "
                           "broken. Nothing was written.")
    logger.info("ONNX Runtime vs PyTorch on a check batch: max difference %.3g (largest output %.3g).",
                check.max_difference, check.max_reference)
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _without_preprocessing_hint():
            quantize_dynamic(graph_path, staging / ONNX_FILE, weight_type=QuantType.QInt8)
        graph_path.unlink()
        check_graph(staging / ONNX_FILE, model, signature)  # loads, runs, right shapes, finite
    int8_kind = "+".join(kind for kind, used in (("distilkit", distilkit_int8), ("onnxruntime", int8)) if used)
    _write_config(model.config, staging, {
        "compressions": sorted(_compression_record(model.config)),
        "int8": int8_kind or None,
        "inputs": list(signature.inputs),
        "outputs": list(signature.outputs),
        "opset": opset,
    })
    if source.tokenizer is not None:
        source.tokenizer.save_pretrained(staging)


class _PreprocessingHint(logging.Filter):
    # quantize_dynamic logs "Please consider to run pre-processing before quantization" on the root logger for
    # every model: the hint is about static quantization of vision models, and the graph here is already
    # constant-folded and shape-annotated by the exporter.
    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def _without_preprocessing_hint() -> Iterator[None]:
    hint = _PreprocessingHint()
    logging.getLogger().addFilter(hint)
    try:
        yield
    finally:
        logging.getLogger().removeFilter(hint)


def _compression_record(config) -> dict:
    from ..serialization.format import compression_record

    return compression_record(config)


def _write_config(config, folder: Path, export_record: dict) -> None:
    """config.json of the base family, without distilkit's record and loading code (see the module docstring)."""
    from ..serialization.format import CONFIG_KEY, base_config_class, unmark_compressed

    raw = config.to_dict()
    base_type = unmark_compressed(raw)  # a compressed config: drops model_type "distilkit" and auto_map
    if base_type is not None:
        raw["model_type"] = base_type
    for key in (CONFIG_KEY, "auto_map"):
        raw.pop(key, None)
    plain = base_config_class(type(config)).from_dict(raw)
    if hasattr(plain, "use_cache"):
        plain.use_cache = False
    setattr(plain, EXPORT_RECORD_KEY, export_record)
    plain.save_pretrained(folder)
