"""The settings of data augmentation, `AugmentArguments`: also the `augment:` section of a recipe.

Field names are unique across all recipe sections (every field is a command-line flag), so the two that would
clash or read ambiguously on a command line carry the `augment_` prefix: `augment_seed` and `augment_mlm`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

METHODS = ("replace", "mask", "ngram")


@dataclass
class AugmentArguments:
    """Data augmentation: N altered copies of each example (TinyBERT word replacement, Tang et al. masking, n-grams)."""

    methods: list[str] = field(
        default_factory=lambda: ["replace"],
        metadata={
            "help": "How copies are altered, combinable: 'replace' (TinyBERT: each word, with replace_prob, becomes "
            "one of its num_candidates nearest words), 'mask' (Tang et al.: each word, with mask_prob, becomes the "
            "mask token), 'ngram' (Tang et al.: with ngram_prob, the copy is cut to a random n-gram, n in 1..5)."
        },
    )
    num_copies: int = field(default=20, metadata={"help": "Augmented copies per example (TinyBERT: N=20)."})
    replace_prob: float = field(
        default=0.4, metadata={"help": "Probability that 'replace' replaces a word (TinyBERT: p_t=0.4)."}
    )
    num_candidates: int = field(
        default=15, metadata={"help": "A replacement is drawn from a word's top-M candidates (TinyBERT: M=15)."}
    )
    mask_prob: float = field(
        default=0.1, metadata={"help": "Probability that 'mask' masks a word (Tang et al.: p_mask=0.1)."}
    )
    ngram_prob: float = field(
        default=0.25,
        metadata={"help": "Probability that 'ngram' cuts a copy to an n-gram of it (Tang et al.: p_ng=0.25)."},
    )
    augment_mlm: str | None = field(
        default=None,
        metadata={
            "help": "Masked LM proposing replacements of single-piece words: 'teacher' (the teacher is a "
            "...ForMaskedLM) or a fill-mask model folder or Hub id. Default: none; every word then gets the "
            "nearest neighbours of its embedding in the teacher's input-embedding matrix (cosine)."
        },
    )
    augment_seed: int = field(default=42, metadata={"help": "Random seed: the same seed gives the same copies."})
    keep_labels: bool = field(
        default=False,
        metadata={
            "help": "Copy each example's label to its augmented copies. Default: the copies carry no label (the "
            "teacher labels them), since an altered text may no longer have the original's label."
        },
    )

    def __post_init__(self):
        if isinstance(self.methods, str):  # "mask,ngram" from a recipe or a caller
            self.methods = [part for part in self.methods.replace(" ", ",").split(",") if part]
        self.methods = list(self.methods)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be one or more of {METHODS}, got {self.methods!r}.")
        if self.num_copies < 1:
            raise ValueError(f"num_copies must be at least 1, got {self.num_copies}.")
        if self.num_candidates < 1:
            raise ValueError(f"num_candidates must be at least 1, got {self.num_candidates}.")
        for name in ("replace_prob", "mask_prob", "ngram_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.augment_mlm == "":
            self.augment_mlm = None
