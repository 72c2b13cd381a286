"""The closed loop: a result that misses its latency target on a quiet measurement is pruned further, recovered
with a short distillation, and measured again, up to `CompressArguments.max_refine_rounds` rounds.

A miss is confirmed before any round: the models are measured again for `run.CONFIRM_ROUNDS` times the
latency rounds and the verdict is taken over both measurements' rounds pooled (`measure.Timing.pooled`); only a
miss that holds is pruned by (on this project's noisy 2-core VM one measurement pruned an 8x model twice for a
miss that other measurements did not see, costing 1.5 points).

Why a made model can miss: its twin was measured when the plan was made, and the made model differs (trained
weights, layers kept by the drop-one-layer ranking, a measurement of another moment). Each round:

1. `next_shape`: scale the plan's latencies by what this result measured over what its shape was planned at, and
   take the largest shape of the same depth and precision that then fits the budget: FFN neurons first (the same
   heads per layer, fewer neurons), heads too only when no FFN width alone fits. None when even the smallest shape
   of that depth and precision does not fit (the loop stops and says so).
2. `refine<k>/`: the previous float model (student/ or refine<k-1>/) pruned at once to that shape by importance
   (`PruningCallback` with per-layer counts, at the first step), then distilled from the teacher for
   `refine_steps` steps (checkpoints in refine<k>-training/); `refine<k>-int8/` when the plan is int8.
3. Everything is measured again beside the teacher (`results.write_outcome`).

The rounds decided are kept in refine.json (`RefineRound`), with the plan's fingerprint: a rerun replays them
(their stages complete, skipped) instead of deciding again on a new measurement, then goes on if still missed.
An unreliable verdict (busy machine) starts no round: it proves nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..pipeline.stages import write_text
from .plan import Plan
from .shape import ModelShape

REFINE_JSON = "refine.json"


@dataclass(frozen=True)
class RefineRound:
    """One round: the `shape` it pruned to, the latency (ms) of the result that missed (`missed_ms`, beside the
    teacher's `teacher_ms` in the same measurement), the latency the round's shape was expected at, and the
    `steps` of its recovery distillation."""

    number: int
    shape: ModelShape
    missed_ms: float
    teacher_ms: float
    expected_ms: float
    steps: int  # of its recovery distillation

    @property
    def float_stage(self) -> str:
        return f"refine{self.number}"

    def stages(self) -> list[str]:
        return [self.float_stage] + [f"{self.float_stage}-int8"] * self.shape.int8

    def to_dict(self) -> dict:
        return {"number": self.number, "shape": self.shape.to_dict(), "missed_ms": self.missed_ms,
                "teacher_ms": self.teacher_ms, "expected_ms": self.expected_ms, "steps": self.steps,
                "stages": self.stages()}

    @classmethod
    def from_dict(cls, data: dict) -> RefineRound:
        return cls(int(data["number"]), ModelShape.from_dict(data["shape"]), float(data["missed_ms"]),
                   float(data["teacher_ms"]), float(data["expected_ms"]), int(data["steps"]))

    def describe(self, plan: Plan) -> str:
        target = plan.target
        return (f"round {self.number}: measured {target.format(target.achieved(self.missed_ms, self.teacher_ms))}, "
                f"pruned to heads {_counts(self.shape.heads)} and FFN {_counts(self.shape.ffn)} per layer "
                f"(expected {target.format(target.achieved(self.expected_ms, self.teacher_ms))})")


def _counts(values) -> str:
    return str(values[0]) if len(set(values)) == 1 else "/".join(map(str, values))


def next_shape(plan: Plan, current: ModelShape, missed_ms: float, teacher_ms: float
               ) -> tuple[ModelShape, float] | None:
    """The shape the next round prunes `current` to, and its expected latency (ms); None when no smaller shape of
    the same depth and precision is expected to fit the budget. Expected latencies are what the plan budgeted for
    each candidate (`Plan.cost`), scaled by `missed_ms` over what it budgeted for `current`."""
    same = [c for c in plan.candidates
            if (c.shape.num_layers, c.shape.int8, c.shape.int8_embeddings)
            == (current.num_layers, current.int8, current.int8_embeddings) and plan.cost(c) is not None]
    # `current` is the plan's shape or an earlier round's, both chosen among these candidates
    reference = next((c for c in same if (c.shape.heads, c.shape.ffn) == (current.heads, current.ffn)), None)
    if reference is None:
        return None
    scale = missed_ms / plan.cost(reference)
    budget = plan.target.budget(teacher_ms)
    smaller = [c for c in same if _within(c.shape, current) and (c.shape.heads, c.shape.ffn)
               != (current.heads, current.ffn)]
    ffn_only = [c for c in smaller if c.shape.heads == current.heads]
    for pool in (ffn_only, smaller):
        fits = [c for c in pool if plan.cost(c) * scale <= budget]
        if fits:
            best = max(fits, key=lambda c: (c.parameters, sum(c.shape.heads)))
            return best.shape, plan.cost(best) * scale
    return None


def _within(shape: ModelShape, bound: ModelShape) -> bool:
    """Every layer of `shape` keeps at most `bound`'s heads and FFN neurons."""
    return all(h <= b for h, b in zip(shape.heads, bound.heads)) and all(f <= b for f, b in zip(shape.ffn, bound.ffn))


def read_rounds(output_dir: Path, plan: Plan) -> list[RefineRound]:
    """The rounds refine.json records for this plan ([] without the file, or for another plan's)."""
    path = Path(output_dir) / REFINE_JSON
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    if data.get("plan") != plan.fingerprint():
        return []
    return [RefineRound.from_dict(r) for r in data["rounds"]]


def write_rounds(output_dir: Path, plan: Plan, rounds: list[RefineRound]) -> None:
    write_text(Path(output_dir) / REFINE_JSON, json.dumps(
        {"plan": plan.fingerprint(), "rounds": [r.to_dict() for r in rounds]}, indent=1) + "\n")
