"""Data augmentation for distillation: more (unlabelled) examples for the teacher to label.

TinyBERT's word replacement (Jiao et al. 2020) and Tang et al.'s masking and n-gram sampling (2019), N copies per
example, seeded. Replacement words come from a masked LM (the teacher's own head, or a named fill-mask model) or,
without one, from nearest neighbours in the teacher's input embeddings, so it works offline with any teacher.

    from distilkit.augment import AugmentArguments, augment_dataset
    extra = augment_dataset(train, tokenizer, "sentence", teacher=teacher, args=AugmentArguments(num_copies=20))

Modules: arguments (the settings), words (splitting text into words), candidates (replacement words), ops (one
augmented copy of one text), dataset (`augment_dataset`).
"""

from .arguments import AugmentArguments
from .dataset import augment_dataset

__all__ = ["AugmentArguments", "augment_dataset"]
