"""DistillationConfig: `TrainingArguments` plus the knobs of knowledge distillation."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from transformers import TrainingArguments

from . import loss_terms
from .pruning.arguments import PruningArguments

HIDDEN_LOSSES = ("mse", "cosine")
ATTENTION_LOSSES = ("kl", "mse")
TEACHER_DTYPES = ("float32", "bfloat16", "float16")
NONFINITE_POLICIES = ("error", "skip")


def parse_layer_map(value) -> str | dict[int, int]:
    """Normalise a layer map: "uniform", a dict, a JSON object string, or "s:t,s:t" pairs -> "uniform" or dict.

    Keys are student hidden-state indices and values teacher indices; index 0 is the embedding output.
    """
    if isinstance(value, str):
        text = value.strip()
        if text == "uniform":
            return "uniform"
        try:
            if text.startswith("{"):
                value = json.loads(text)
            else:
                value = dict(pair.split(":") for pair in text.split(","))
        except ValueError as err:
            raise ValueError(
                f"layer_map={value!r} is not understood. Use 'uniform', a dict such as {{1: 2, 2: 4}}, "
                f"a JSON object '{{\"1\": 2}}' or pairs '1:2,2:4'."
            ) from err
    if not isinstance(value, dict) or not value:
        raise ValueError(f"layer_map must be 'uniform' or a non-empty {{student: teacher}} dict, got {value!r}.")
    try:
        mapping = {int(k): int(v) for k, v in value.items()}
    except (TypeError, ValueError) as err:
        raise ValueError(f"layer_map entries must be integers, got {value!r}.") from err
    negative = {k: v for k, v in mapping.items() if k < 0 or v < 0}
    if negative:
        raise ValueError(f"layer_map indices must be >= 0 (0 is the embedding output), got {negative}.")
    return dict(sorted(mapping.items()))


def uniform_layer_map(student_layers: int, teacher_layers: int) -> dict[int, int]:
    """Student hidden state i <- teacher hidden state round(i * L_t / L_s); 0 (embeddings) <- 0.

    This is the evenly spaced mapping of DistilBERT/TinyBERT: a 6-layer student of a 12-layer teacher matches
    teacher layers 2, 4, ..., 12.
    """
    return {i: round(i * teacher_layers / student_layers) for i in range(student_layers + 1)}


def kept_layer_map(keep_layers: Sequence[int]) -> dict[int, int]:
    """Student hidden state i + 1 <- teacher hidden state keep_layers[i] + 1; 0 (embeddings) <- 0.

    The map of a student made by `student_from_teacher(teacher, keep_layers)`: each student layer matches the
    teacher layer it was copied from (teacher layers 0, 7, 10, 11 kept: student hidden states 1..4 match teacher
    hidden states 1, 8, 11, 12), as CoFi's layer distillation matches a pruned model to its own teacher.
    """
    layers = [int(i) for i in keep_layers]
    if not layers or any(i < 0 for i in layers) or sorted(set(layers)) != layers:
        raise ValueError(f"keep_layers must be non-empty, >= 0 and strictly increasing, got {list(keep_layers)}.")
    return {0: 0, **{i + 1: t + 1 for i, t in enumerate(layers)}}


@dataclass
class DistillationConfig(PruningArguments, TrainingArguments):
    """Training arguments for `DistillationTrainer`.

    The total loss is
    `(1 - alpha) * hard + alpha * T^2 KL(teacher_T || student_T) + hidden_weight * sum(hidden) +
    attention_weight * sum(attention)`. With `alpha=0` and both weights 0 no teacher is needed and training is
    exactly `transformers.Trainer`.

    The pruning fields (prune_heads_fraction, prune_ffn_fraction, prune_every_steps, ...) come from
    `distilkit.pruning.PruningArguments`, which also validates them.
    """

    temperature: float = field(
        default=2.0,
        metadata={"help": "Softmax temperature T of the soft-label loss (> 0). The KL term is scaled by T^2."},
    )
    alpha: float | None = field(
        default=None,
        metadata={
            "help": "Weight of the soft-label (teacher) loss in [0, 1]; the hard-label loss gets 1 - alpha. "
            f"1.0 trains on teacher outputs alone (labels not needed). Default: {loss_terms.DEFAULT_ALPHA} when "
            "the trainer gets a teacher_model, and without one 0, which trains exactly as transformers.Trainer."
        },
    )
    hidden_weight: float = field(
        default=0.0,
        metadata={"help": "Weight (>= 0) of the hidden-state matching loss, summed over the matched layers."},
    )
    hidden_loss: str = field(
        default="mse",
        metadata={"help": "Hidden-state loss: 'mse' (TinyBERT) or 'cosine' (1 - cosine similarity, DistilBERT)."},
    )
    layer_map: dict | str = field(
        default="uniform",
        metadata={
            "help": "Which teacher hidden state each student hidden state matches: 'uniform' (evenly spaced, as "
            "DistilBERT/TinyBERT) or {student_index: teacher_index} (JSON or '1:2,2:4'); index 0 is the "
            "embedding output. Attention maps use the same map for indices >= 1."
        },
    )
    attention_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight (>= 0) of the attention-map loss summed over matched layers; needs eager attention."
        },
    )
    attention_loss: str = field(
        default="kl",
        metadata={"help": "Attention-map loss: 'kl' (MiniLM, KL of attention distributions) or 'mse' (TinyBERT)."},
    )
    teacher_dtype: str | None = field(
        default=None,
        metadata={
            "help": "Cast the teacher to this dtype for its forward: 'float32', 'bfloat16' or 'float16'. "
            "Default: keep the teacher's dtype."
        },
    )

    teacher_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Folder for a teacher-output cache: teacher logits are computed once per training example, "
            "stored keyed by the dataset fingerprint and a hash of the teacher, and reused across epochs and "
            "runs, removing the teacher forward from the training step. Logit distillation only."
        },
    )
    teacher_cache_top_k: int | None = field(
        default=None,
        metadata={
            "help": "Keep only the teacher's top-k logits per position (plus the log-normaliser) in the cache. "
            "Default: all logits for classifiers, 32 for language models."
        },
    )
    intermediate_epochs: float = field(
        default=0.0,
        metadata={
            "help": "TinyBERT's staged schedule: the first intermediate_epochs epochs (of num_train_epochs) are the "
            "intermediate-layer stage, which trains the hidden-state and attention terms alone; the rest is the "
            "prediction-layer stage, which trains the hard- and soft-label terms alone. 0: every weighted term "
            "trains together. The stage follows the optimizer step, so a resumed run continues in its stage. With "
            "teacher_cache_dir, the prediction stage reads cached teacher logits and only the intermediate stage "
            "runs the teacher."
        },
    )
    nonfinite_loss: str = field(
        default="error",
        metadata={
            "help": "What to do when a training loss is NaN or inf: 'error' stops with the step number; 'skip' "
            "drops that batch's gradients and counts it (logged as nonfinite_batches_skipped)."
        },
    )

    def __post_init__(self):
        # Validate our own fields first: a bad value should fail here, not at step 900.
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}.")
        if self.alpha is not None and not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1] (weight of the soft-label loss), got {self.alpha}.")
        for name in loss_terms.WEIGHT_FIELDS:
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}.")
        if self.hidden_loss not in HIDDEN_LOSSES:
            raise ValueError(f"hidden_loss must be one of {HIDDEN_LOSSES}, got {self.hidden_loss!r}.")
        if self.attention_loss not in ATTENTION_LOSSES:
            raise ValueError(f"attention_loss must be one of {ATTENTION_LOSSES}, got {self.attention_loss!r}.")
        if self.teacher_dtype is not None and self.teacher_dtype not in TEACHER_DTYPES:
            raise ValueError(f"teacher_dtype must be one of {TEACHER_DTYPES} or None, got {self.teacher_dtype!r}.")
        if self.nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_POLICIES}, got {self.nonfinite_loss!r}.")
        # Under a staged schedule only the prediction stage reads the cache; the intermediate stage runs the teacher.
        served_by_cache = loss_terms.PREDICTION if self.intermediate_epochs > 0 else None
        uncached = [t.weight_field for t in loss_terms.teacher_terms(self, served_by_cache) if not t.cacheable]
        if self.teacher_cache_dir and uncached:
            weights = " and ".join(f"{name}={getattr(self, name)}" for name in uncached)
            raise ValueError(
                f"teacher_cache_dir caches teacher logits only, but {weights} need the teacher's forward at every "
                f"step. Set {' and '.join(uncached)} to 0, drop teacher_cache_dir, or train them in a staged "
                "schedule (intermediate_epochs > 0), whose prediction stage reads the cache."
            )
        if self.teacher_cache_top_k is not None and self.teacher_cache_top_k < 1:
            raise ValueError(f"teacher_cache_top_k must be >= 1 or None, got {self.teacher_cache_top_k}.")
        self._check_schedule()
        self.layer_map = parse_layer_map(self.layer_map)
        if isinstance(self.layer_map, dict) and self.attention_weight > 0:
            zero = [s for s, t in self.layer_map.items() if (s == 0) != (t == 0)]
            if zero:
                raise ValueError(
                    f"layer_map pairs {[(s, self.layer_map[s]) for s in zero]} match the embedding output (index 0) "
                    "with a transformer layer; attention maps exist only for layers >= 1. Map 0 to 0."
                )
        super().__post_init__()

    def _check_schedule(self) -> None:
        if not self.intermediate_epochs >= 0:
            raise ValueError(f"intermediate_epochs must be >= 0, got {self.intermediate_epochs}.")
        if self.intermediate_epochs == 0:
            return
        if not loss_terms.teacher_terms(self, loss_terms.INTERMEDIATE):
            raise ValueError(
                f"intermediate_epochs={self.intermediate_epochs} trains the layer terms alone first, but none is "
                "weighted (hidden_weight=0 and attention_weight=0). Set hidden_weight and/or attention_weight > 0, "
                "or intermediate_epochs=0."
            )
        if (self.max_steps is None or self.max_steps <= 0) and self.intermediate_epochs >= self.num_train_epochs:
            raise ValueError(
                f"intermediate_epochs={self.intermediate_epochs} leaves no prediction-layer stage within "
                f"num_train_epochs={self.num_train_epochs}; count both stages in num_train_epochs (e.g. "
                f"{self.intermediate_epochs} + 3)."
            )

    @property
    def uses_teacher(self) -> bool:
        """Whether any loss term needs the teacher's forward pass (alpha unset counts as its default)."""
        return bool(loss_terms.teacher_terms(self))

    @property
    def distillation_settings(self) -> dict[str, float]:
        """The teacher-term weights set explicitly above 0 (alpha unset is not one of them): {field: value}."""
        fields = dict.fromkeys(t.weight_field for t in loss_terms.LOSS_TERMS if t.uses_teacher)
        return {name: getattr(self, name) for name in fields if (getattr(self, name) or 0) > 0}

