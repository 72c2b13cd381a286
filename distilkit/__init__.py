"""distilkit: distillation, attention-head pruning and int8 quantization for transformers models."""

from typing import TYPE_CHECKING

from ._lazy import lazy_exports

if TYPE_CHECKING:
    from .config import DistillationConfig
    from .serialization import from_pretrained, save_pretrained
    from .student import student_from_teacher
    from .trainer import DistillationTrainer

_EXPORTS = {
    "DistillationConfig": "config",
    "from_pretrained": "serialization",
    "save_pretrained": "serialization",
    "student_from_teacher": "student",
    "DistillationTrainer": "trainer",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)

__version__ = "0.1.0"

__all__ = ["DistillationConfig", "DistillationTrainer", "from_pretrained", "save_pretrained", "student_from_teacher",
           "__version__"]
