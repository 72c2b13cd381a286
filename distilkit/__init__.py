"""distilkit: distillation, attention-head pruning and int8 quantization for transformers models."""

from .config import DistillationConfig
from .serialization import from_pretrained, save_pretrained
from .student import student_from_teacher
from .trainer import DistillationTrainer

__version__ = "0.1.0"

__all__ = ["DistillationConfig", "DistillationTrainer", "from_pretrained", "save_pretrained", "student_from_teacher",
           "__version__"]
