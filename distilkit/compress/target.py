"""What `distilkit compress` is asked for: `CompressArguments` (the recipe's `compress:` section), and `Target`, the
one target it holds, as a budget on latency or size.

A latency target (`target_latency_ms`, or `target_speedup` over the teacher) only means something at given machine
settings (`MachineSettings`: batch size, sequence length, threads); `Target.check_machine` refuses one without them.
In a recipe the settings are the `evaluation:` section's latency_batch_size, latency_seq_len and latency_threads
(recipe field names are unique across sections), which the results table is measured at too.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

from transformers import PretrainedConfig


@dataclass(frozen=True)
class MachineSettings:
    """How the model will run: `batch_size` sequences of `seq_len` tokens, on `threads` CPU threads, in `engine`
    ("torch", or "onnxruntime": exported to ONNX and run by ONNX Runtime; `distilkit.engines`)."""

    batch_size: int
    seq_len: int
    threads: int
    engine: str = "torch"

    def __post_init__(self):
        for name in ("batch_size", "seq_len", "threads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MachineSettings.{name} must be a positive integer; got {value!r}.")
        from ..engines import check_engine

        check_engine(self.engine)

    def check_fits(self, config: PretrainedConfig) -> None:
        """Raise ValueError if sequences of `seq_len` tokens are longer than the model's position embeddings."""
        limit = getattr(config, "max_position_embeddings", None)
        if limit is not None and self.seq_len > int(limit):
            raise ValueError(f"MachineSettings.seq_len {self.seq_len} exceeds the {config.model_type} config's "
                             f"max_position_embeddings ({limit}); choose a shorter sequence length.")

    def to_dict(self) -> dict:
        return {"batch_size": self.batch_size, "seq_len": self.seq_len, "threads": self.threads, "engine": self.engine}


TARGET_FIELDS = ("target_latency_ms", "target_speedup", "target_size_mb")
PLAN_BY = ("quality", "parameters")  # CompressArguments.plan_by: how a plan chooses within the budget
MET, MISSED, UNRELIABLE = "met", "missed", "unreliable"  # the verdicts of a measured result (`Target.verdict`)
MACHINE_FIELDS = ("latency_batch_size", "latency_seq_len", "latency_threads")


def default_latency_cache() -> Path:
    """~/.cache/distilkit/latency.json (or under $XDG_CACHE_HOME): shared by runs, keyed by machine and config,
    and outside output_dir, so a plan refused before training leaves output_dir untouched."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "distilkit" / "latency.json"


@dataclass
class CompressArguments:
    """Compression to a target: exactly one of target_latency_ms, target_speedup, target_size_mb; distilkit chooses
    the layers, heads, FFN width and precision that meet it, then distils, prunes and quantizes to that shape."""

    target_latency_ms: float | None = field(
        default=None,
        metadata={"help": "Target: milliseconds of one forward pass at the evaluation section's latency_batch_size, "
                  "latency_seq_len and latency_threads (all three must be given), on this machine."},
    )
    target_speedup: float | None = field(
        default=None,
        metadata={"help": "Target: times faster than the teacher (> 1), at the evaluation section's latency "
                  "settings (all three must be given), on this machine."},
    )
    target_size_mb: float | None = field(
        default=None,
        metadata={"help": "Target: size of the weight files in MB (10^6 bytes), smaller than the teacher's."},
    )
    target_margin: float = field(
        default=0.05,
        metadata={"help": "Safety margin: the plan's candidate must beat the target by this share (0.05: a "
                  "latency or size 5% under budget), since a later measurement varies."},
    )
    candidate_layer_fractions: list[float] = field(
        default_factory=lambda: [1.0, 5 / 6, 2 / 3, 1 / 2, 1 / 3, 1 / 4, 1 / 6],
        metadata={"help": "Shares of the teacher's layers the candidates keep (12 layers: 12, 10, 8, 6, 4, 3, 2; "
                  "6 layers: every count). Which layers: the drop-one-layer ranking of the quality score."},
    )
    candidate_head_fractions: list[float] = field(
        default_factory=lambda: [1.0, 3 / 4, 1 / 2, 1 / 3, 1 / 4],
        metadata={"help": "Shares of the attention heads per layer the candidates keep."},
    )
    candidate_ffn_fractions: list[float] = field(
        default_factory=lambda: [1.0, 3 / 4, 1 / 2, 1 / 3, 1 / 4, 1 / 8],
        metadata={"help": "Shares of the FFN neurons per layer the candidates keep."},
    )
    candidate_int8: bool = field(
        default=True,
        metadata={"help": "Also consider int8 candidates (with and without int8 embeddings)."},
    )
    latency_cache: str | None = field(
        default=None,
        metadata={"help": "The json file of latency measurements (reused across runs on this machine). Default: "
                  "~/.cache/distilkit/latency.json."},
    )
    latency_rounds: int = field(
        default=10, metadata={"help": "Interleaved rounds each candidate and the final model are measured over "
                              "(latencies are the 20th percentile of the rounds)."}
    )
    measure_only: bool = field(
        default=False,
        metadata={"help": "Measure a finished run in output_dir again, making and training nothing: every stage must "
                  "be complete (run the same command without it first). Only results.md, results.json, "
                  "tradeoff.png and the stages' model cards are written again. For a verdict that was unreliable "
                  "because the machine was busy: rerun with --measure_only true on quiet cores."},
    )
    max_refine_rounds: int = field(
        default=2,
        metadata={"help": "Closed loop: when the made model misses a latency target on a quiet measurement, and "
                  "still misses over that measurement and a second one of twice the rounds pooled, prune it further "
                  "(FFN neurons first), recover with a short distillation and measure again, up to this many rounds "
                  "(0: never)."},
    )
    refine_steps: int | None = field(
        default=None,
        metadata={"help": "Distillation steps of each refine round (default: a fifth of the distillation's steps, "
                  "at least 1)."},
    )
    plan_score_rows: int = field(
        default=128,
        metadata={"help": "Held-out training rows the quality score compares the teacher and each candidate on "
                  "(forward passes only; the importance of heads and neurons uses 128 other rows)."},
    )

    plan_by: str = field(
        default="quality",
        metadata={"help": "How the plan chooses among the candidates within the budget: 'quality' (the best "
                  "quality score: the teacher pruned one-shot to the shape, KL on plan_score_rows) or "
                  "'parameters' (the most parameters, evenly spaced layers, no probe: the rule plans used before "
                  "the score; compared in docs/results/compress.md).",
                  "choices": PLAN_BY},
    )

    def __post_init__(self):
        if self.plan_by not in PLAN_BY:
            raise ValueError(f"plan_by must be one of {', '.join(PLAN_BY)}; got {self.plan_by!r}.")
        given = [name for name in TARGET_FIELDS if getattr(self, name) is not None]
        if len(given) != 1:
            detail = f"got {', '.join(f'{n}={getattr(self, n)}' for n in given)}" if given else "got none"
            raise ValueError(f"Give exactly one target: target_latency_ms, target_speedup or target_size_mb; {detail}.")
        name = given[0]
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name} must be a number; got {value!r}.")
        if name == "target_speedup" and not value > 1:
            raise ValueError(f"target_speedup must be > 1 (times faster than the teacher); got {value}.")
        if not value > 0:
            raise ValueError(f"{name} must be > 0; got {value}.")
        if not 0 <= self.target_margin < 1:
            raise ValueError(f"target_margin must be in [0, 1) (a share of the budget); got {self.target_margin}.")
        for fractions in ("candidate_layer_fractions", "candidate_head_fractions", "candidate_ffn_fractions"):
            values = getattr(self, fractions)
            if not values or any(not 0 < f <= 1 for f in values):
                raise ValueError(f"{fractions} must be shares in (0, 1]; got {values}.")
        for name in ("latency_rounds", "plan_score_rows"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer; got {value!r}.")
        rounds = self.max_refine_rounds
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
            raise ValueError(f"max_refine_rounds must be 0 (no closed loop) or a positive integer; got {rounds!r}.")
        steps = self.refine_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
            raise ValueError(f"refine_steps must be a positive integer (or unset: a fifth of the distillation's "
                             f"steps); got {steps!r}.")

    @property
    def target(self) -> Target:
        name = next(name for name in TARGET_FIELDS if getattr(self, name) is not None)
        return Target(name, float(getattr(self, name)), self.target_margin)

    @property
    def cache_path(self) -> Path:
        return Path(self.latency_cache) if self.latency_cache else default_latency_cache()


@dataclass(frozen=True)
class Target:
    """One target (`name` is a field of TARGET_FIELDS) with its safety margin."""

    name: str
    value: float
    margin: float = 0.0

    @property
    def is_latency(self) -> bool:
        return self.name != "target_size_mb"

    @property
    def unit(self) -> str:
        return {"target_latency_ms": "ms", "target_speedup": "x", "target_size_mb": "MB"}[self.name]

    def format(self, value: float) -> str:
        """`value` in the target's unit: '3.7x', '12.5 ms', '48.2 MB'."""
        return f"{value:.4g}x" if self.name == "target_speedup" else f"{value:.4g} {self.unit}"

    def __str__(self) -> str:
        return f"{self.name}={self.value:g}"

    def check_machine(self, machine: MachineSettings | None) -> None:
        """A latency or speedup target needs the settings it is measured at."""
        if self.is_latency and machine is None:
            raise ValueError(f"{self} needs the machine settings it is measured at: {', '.join(MACHINE_FIELDS)} "
                             "(the evaluation section of a recipe; MachineSettings(batch_size, seq_len, threads) "
                             "in Python).")

    def budget(self, teacher_ms: float | None) -> float:
        """The most a candidate may cost in the target's own measure (ms for latency and speedup, MB for size),
        margin included."""
        limit = teacher_ms / self.value if self.name == "target_speedup" else self.value
        return limit * (1 - self.margin)

    def achieved(self, cost: float, teacher_ms: float | None) -> float:
        """A cost (ms or MB) in the target's terms: a speedup for target_speedup, the cost itself otherwise."""
        return teacher_ms / cost if self.name == "target_speedup" else cost

    def met(self, cost: float, teacher_ms: float | None) -> bool:
        """Whether a measured cost meets the target itself (without the margin, which is for planning)."""
        if self.name == "target_speedup":
            return teacher_ms / cost >= self.value
        return cost <= self.value

    def verdict(self, cost: float, teacher_ms: float | None, busy: bool) -> str:
        """"met", "missed", or "unreliable": a latency or speedup measured while the machine was busy (`busy`:
        `distilkit.measure.Timing.busy`) says neither, since load slows a large teacher more than a small
        student and can make a target look met or missed. A size does not depend on load."""
        if self.is_latency and busy:
            return UNRELIABLE
        return MET if self.met(cost, teacher_ms) else MISSED
