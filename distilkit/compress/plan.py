"""The compression plan: which shape (layers, heads, FFN width, precision) meets the target with the most capacity.

`make_plan` measures the candidate shapes' random twins on this machine (`measurements.measure_shapes`, cached), the
teacher's full float shape among them, and sizes them exactly (`twin.size_bytes`). Every candidate is measured, so
the choice rests on measured latencies; the fitted `LatencyModel`'s predictions are recorded beside them, to show how
well the machine's latency is understood. The chosen candidate is the one with the most parameters among those
within the budget (target minus the safety margin); ties go to more layers, then float over int8. A target that
cannot be met, or that the teacher meets already, is a ValueError naming the closest candidate: raised before any
training and before anything is written.

A `Plan` is plain data (`to_dict`/`from_dict`, json), saved as plan.json and shown as plan.md. Its `inputs` (the
teacher's weights, the training data and the training settings: set by `run.compress`) are part of its identity,
so a resumed run never reuses stages made from other inputs.

Speedups are ratios within one measuring group: every group of twins is measured together with the teacher's twin,
and a candidate's latency is recorded relative to it (`Measurement.reference_ms`), scaled by the teacher's own
measurement, so a change in machine load between groups does not move the candidates' speedups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from transformers import PretrainedConfig

from ..architectures import get_architecture
from ..measure import count_parameters
from ..student import every_kth_layer
from .grid import PRECISIONS, candidate_shapes
from .latency_model import LatencyModel
from .measurements import Measurement, MeasurementCache, busy_note, measure_shapes
from .target import MachineSettings
from .shape import ModelShape
from .target import CompressArguments, Target
from .twin import random_twin, size_bytes

PLAN_FORMAT = 1
PLAN_JSON = "plan.json"
PLAN_MD = "plan.md"
MEASURE_GROUP = 4  # twins measured interleaved at a time (and held in memory together)


@dataclass(frozen=True)
class Candidate:
    """A shape with its measured (`latency_ms`, median; None when only size matters), predicted latency, exact
    weight size and parameter count (int8 weights counted like their float originals)."""

    shape: ModelShape
    size_mb: float
    parameters: int
    latency_ms: float | None = None
    predicted_ms: float | None = None

    def to_dict(self) -> dict:
        return {"key": self.shape.key(), "shape": self.shape.to_dict(), "size_mb": self.size_mb,
                "parameters": self.parameters, "latency_ms": self.latency_ms, "predicted_ms": self.predicted_ms}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(ModelShape.from_dict(data["shape"]), data["size_mb"], data["parameters"], data["latency_ms"],
                   data["predicted_ms"])


@dataclass(frozen=True)
class Plan:
    """What `compress` will make and why. `teacher`: the teacher's layers, heads and FFN width per layer, and model
    type; `candidates`: every shape considered, the teacher's first; `chosen`: the key of the chosen one;
    `inputs`: what the stages are made from besides the plan (teacher weights, data, training settings);
    `busy`: why the candidates' latencies were timed on a busy machine (`measurements.busy_note`), None if quiet."""

    target: Target
    machine: MachineSettings | None
    teacher: dict
    candidates: tuple[Candidate, ...]
    chosen: str
    reason: str
    inputs: dict = field(default_factory=dict)
    busy: str | None = None

    @property
    def teacher_candidate(self) -> Candidate:
        return self.candidates[0]

    @property
    def chosen_candidate(self) -> Candidate:
        return next(c for c in self.candidates if c.shape.key() == self.chosen)

    @property
    def shape(self) -> ModelShape:
        return self.chosen_candidate.shape

    @property
    def keep_layers(self) -> list[int]:
        """The teacher's layers the student keeps (evenly spaced, as `student_from_teacher` with a count)."""
        return every_kth_layer(self.teacher["layers"], self.shape.num_layers)

    @property
    def prune_fractions(self) -> tuple[float, float]:
        """(prune_heads_fraction, prune_ffn_fraction) that take the layer-selected student to the planned head and
        neuron totals: the pruning callback removes that share of the student's original heads (neurons)."""
        layers = self.shape.num_layers
        heads = 1 - sum(self.shape.heads) / (layers * self.teacher["heads"])
        ffn = 1 - sum(self.shape.ffn) / (layers * self.teacher["ffn"])
        return heads, ffn

    def cost(self, candidate: Candidate) -> float | None:
        """What the target budgets for `candidate`: its latency (ms) or its size (MB)."""
        return cost_of(self.target, candidate)

    def identity(self) -> dict:
        """What a run's stages depend on: a resumed run with another identity must not reuse them."""
        return {"target": str(self.target), "margin": self.target.margin,
                "machine": None if self.machine is None else self.machine.to_dict(), "teacher": self.teacher,
                "shape": self.shape.to_dict(), "keep_layers": self.keep_layers, **self.inputs}

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "target": {"name": self.target.name, "value": self.target.value,
                                                   "margin": self.target.margin},
                "machine": None if self.machine is None else self.machine.to_dict(), "teacher": self.teacher,
                "chosen": self.chosen, "keep_layers": self.keep_layers,
                "prune_heads_fraction": self.prune_fractions[0], "prune_ffn_fraction": self.prune_fractions[1],
                "reason": self.reason, "busy": self.busy, "fingerprint": self.fingerprint(), "inputs": self.inputs,
                "candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ValueError(f"Not a distilkit compression plan (format {PLAN_FORMAT}).")
        target = Target(data["target"]["name"], data["target"]["value"], data["target"]["margin"])
        machine = None if data["machine"] is None else MachineSettings(**data["machine"])
        return cls(target, machine, data["teacher"], tuple(Candidate.from_dict(c) for c in data["candidates"]),
                   data["chosen"], data["reason"], data.get("inputs", {}), data.get("busy"))

    def to_markdown(self) -> str:
        """plan.md: the target, the choice and its reason, and a table of every candidate."""
        teacher_ms = self.teacher_candidate.latency_ms
        budget = self.target.budget(teacher_ms)
        lines = [f"# Compression plan: {self.target}", "",
                 f"Chosen: **{self.chosen}**, keeping layers {', '.join(map(str, self.keep_layers))} of the teacher's "
                 f"{self.teacher['layers']}. {self.reason}", ""]
        if self.busy:
            lines += [f"**Measured on a busy machine:** {self.busy}", ""]
        if self.machine is not None:
            m = self.machine
            lines += [f"Latency: ms of one forward pass of a random-weight twin (20th percentile of interleaved "
                      f"rounds), batch {m.batch_size} × "
                      f"{m.seq_len} tokens, {m.threads} thread(s), relative to the teacher's twin measured in the "
                      "same group. Predicted (in-sample): the latency model fitted on these same measurements. "
                      "Speedup and budget use the larger of the two (the teacher's latency is its measurement).", ""]
        header = ["candidate", "parameters", "size (MB)", "latency (ms)", "predicted, in-sample (ms)", "speedup",
                  "within budget"]  # speedup and budget: from the planning latency (`cost_of`)
        lines += ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---:|---:|---|"]
        for c in self.candidates:
            cost = self.cost(c)
            mark = "**chosen**" if c.shape.key() == self.chosen else ("yes" if fits(cost, budget) else "no")
            lines.append("| " + " | ".join([
                c.shape.key() + (" (teacher)" if c is self.teacher_candidate else ""), f"{c.parameters / 1e6:.3f}M",
                f"{c.size_mb:.3f}", cell(c.latency_ms, ".2f"), cell(c.predicted_ms, ".2f"),
                cell(None if c.latency_ms is None else teacher_ms / cost, ".2f", "x"), mark]) + " |")
        return "\n".join(lines) + "\n"


def cell(value: float | None, spec: str, suffix: str = "") -> str:
    """A table cell: `value` formatted, or a dash for None."""
    return "–" if value is None else f"{value:{spec}}{suffix}"


def fits(cost: float, budget: float) -> bool:
    """`cost` within `budget`, up to the float rounding of the latency model's least squares."""
    return cost <= budget * (1 + 1e-9)


def cost_of(target: Target, candidate: Candidate) -> float | None:
    """What `target` budgets for `candidate`: its size (MB), or its latency (ms): the larger of its twin's
    measurement and the latency model's prediction, so that one measurement a load spike or a lucky round made
    fast does not decide the plan alone (the model is fitted on every candidate and smooths such noise)."""
    if not target.is_latency:
        return candidate.size_mb
    if candidate.latency_ms is None or candidate.predicted_ms is None:
        return candidate.latency_ms
    return max(candidate.latency_ms, candidate.predicted_ms)


def teacher_summary(config: PretrainedConfig) -> dict:
    """The teacher's model type, layers, heads and FFN width per layer (from the architecture table)."""
    spec = get_architecture(config)
    return {"model_type": config.model_type, "layers": int(config.num_hidden_layers),
            "heads": int(getattr(config, spec.heads_attr)), "ffn": int(getattr(config, spec.ffn_width_attr)),
            "hidden_size": int(config.hidden_size)}


def make_plan(config: PretrainedConfig, args: CompressArguments, machine: MachineSettings | None,
              progress: bool = True) -> Plan:
    """Measure the candidates on this machine (latency targets) and choose the shape to compress `config`'s model
    to. Raises ValueError, before anything is trained or written (only the latency cache is updated), for an
    unsupported architecture, a latency target without machine settings, a target the teacher meets already or no
    candidate meets."""
    target = args.target
    target.check_machine(machine)
    teacher = teacher_summary(config)  # an architecture without a heads/FFN entry fails here
    if machine is not None:
        machine.check_fits(config)
    shapes = plan_shapes(config, args)
    latencies, busy = _measure(config, shapes, machine, args, progress) if target.is_latency else (
        [None] * len(shapes), None)
    predictions = _predictions(shapes, latencies)
    capacity: dict[ModelShape, int] = {}
    candidates = []
    for shape, latency, predicted in zip(shapes, latencies, predictions):
        as_float = ModelShape(shape.heads, shape.ffn)
        if as_float not in capacity:
            capacity[as_float] = count_parameters(random_twin(config, as_float, device="meta"))
        candidates.append(Candidate(shape, size_bytes(config, shape) / 1e6, capacity[as_float], latency, predicted))
    return replace(_choose(target, machine, teacher, candidates), busy=busy)


def plan_shapes(config: PretrainedConfig, args: CompressArguments) -> list[ModelShape]:
    """The shapes a plan considers: the teacher's full float shape first, then `args`' candidate grid."""
    teacher = teacher_summary(config)
    teacher_shape = ModelShape((teacher["heads"],) * teacher["layers"], (teacher["ffn"],) * teacher["layers"])
    precisions = PRECISIONS if args.candidate_int8 else ((False, False),)
    shapes = candidate_shapes(config, args.candidate_layer_fractions, args.candidate_head_fractions,
                              args.candidate_ffn_fractions, precisions)
    return [teacher_shape, *(s for s in shapes if s != teacher_shape)]


def saved_plan_matches(saved: Plan, config: PretrainedConfig, args: CompressArguments,
                       machine: MachineSettings | None) -> bool:
    """Whether a plan saved by an earlier run was made for this target, machine settings, teacher and candidate
    grid, so it can be reused instead of measured again (a new measurement's noise could choose another shape)."""
    return (saved.target == args.target and saved.machine == machine and saved.teacher == teacher_summary(config)
            and [c.shape for c in saved.candidates] == plan_shapes(config, args))


def _measure(config, shapes: Sequence[ModelShape], machine: MachineSettings, args: CompressArguments,
             progress: bool) -> tuple[list[float], str | None]:
    """Latencies (estimates: `Measurement.latency_ms`) of the shapes' twins, measured a group at a time with a
    progress bar (cached ones are read from the cache), and `busy_note` of them. Each group is measured with the
    teacher's twin (`shapes[0]`); a latency is the ratio to the teacher measured in its group times the teacher's
    own latency."""
    from tqdm.auto import tqdm

    cache = MeasurementCache(args.cache_path)
    groups = [shapes[start:start + MEASURE_GROUP] for start in range(0, len(shapes), MEASURE_GROUP)]
    ratios, measurements = [], []
    for group in tqdm(groups, desc=f"measuring {len(shapes)} candidate twins", unit="group", disable=not progress):
        measured = measure_shapes(config, group, machine, cache, rounds=args.latency_rounds,
                                  twins_at_once=MEASURE_GROUP, reference=shapes[0])
        ratios += [(m.latency_ms / m.reference_ms, m.latency_ms) for m in measured]
        measurements += measured
    teacher_ms = ratios[0][1]  # the teacher is shapes[0]: its own latency, measured in the first group
    return [ratio * teacher_ms for ratio, _ in ratios], busy_note(measurements)


def _predictions(shapes: Sequence[ModelShape], latencies: Sequence[float | None]) -> list[float | None]:
    """The latency model's prediction of every shape, fitted on all of them; None when there is nothing to fit
    or too few shapes of a precision to fit its coefficients."""
    if latencies[0] is None:
        return [None] * len(shapes)
    try:
        model = LatencyModel.fit([Measurement(s, ms, ms) for s, ms in zip(shapes, latencies)])
        return [model.predict(shape) for shape in shapes]
    except ValueError:
        return [None] * len(shapes)


def _choose(target: Target, machine, teacher: dict, candidates: list[Candidate]) -> Plan:
    teacher_candidate = candidates[0]
    teacher_ms = teacher_candidate.latency_ms
    measure_name = "latency" if target.is_latency else "size"

    def cost(c: Candidate) -> float:
        return cost_of(target, c)

    def described(c: Candidate) -> str:
        return target.format(target.achieved(cost(c), teacher_ms))

    if target.met(cost(teacher_candidate), teacher_ms):
        raise ValueError(f"{target} is met by the teacher itself ({described(teacher_candidate)}); nothing to "
                         f"compress. Choose a {'smaller' if target.name != 'target_speedup' else 'larger'} target.")
    budget = target.budget(teacher_ms)
    within = [c for c in candidates if fits(cost(c), budget)]
    if not within:
        closest = min(candidates, key=cost)
        wanted = target.achieved(budget, teacher_ms)
        raise ValueError(
            f"cannot meet {target}: the {'fastest' if target.is_latency else 'smallest'} candidate is "
            f"{closest.shape.key()} at {described(closest)} (the plan needs {target.format(wanted)} with the "
            f"{target.margin:.0%} margin). Relax the target, lower target_margin, or add smaller "
            "candidate_*_fractions.")
    chosen = max(within, key=lambda c: (c.parameters, c.shape.num_layers, not c.shape.int8,
                                        not c.shape.int8_embeddings))
    reason = (f"Candidates within the {measure_name} budget ({target} less a {target.margin:.0%} margin: "
              f"{target.format(target.achieved(budget, teacher_ms))}): {len(within)} of {len(candidates)}; "
              f"this one has the most parameters ({chosen.parameters / 1e6:.3f}M; ties: more layers, then float) "
              f"at {described(chosen)}."
              + (" A latency here is the larger of the twin's measurement and the latency model's prediction."
                 if target.is_latency else ""))
    return Plan(target, machine, teacher, tuple(candidates), chosen.shape.key(), reason)
