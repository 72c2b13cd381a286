"""Saving and loading models, one home: the on-disk format of compressed models, atomic publishing, the
compressions each method registers, save, load, and the Trainer's checkpoint format.

    format.py        config.distilkit and model_type "distilkit" <-> the real type (the one place that rewrites it)
    compressions.py  the registry: each compression's restore function and optional loading code
    atomic.py        write into a staging path, then move in (saves, the teacher cache, benchmark results)
    save.py          save_pretrained, staged saves, loading code for compressed folders
    load.py          from_pretrained, load_config, resolve_model_dir, reading weights
    checkpoints.py   DistillationTrainer checkpoints: projections, completeness marker, resume
"""

from typing import TYPE_CHECKING

from .._lazy import lazy_exports

if TYPE_CHECKING:
    from .format import compression_record
    from .load import from_pretrained, load_config
    from .save import save_pretrained

_EXPORTS = {"compression_record": "format", "from_pretrained": "load", "load_config": "load",
            "save_pretrained": "save"}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__all__ = ["compression_record", "from_pretrained", "load_config", "save_pretrained"]
