"""The compression plan: which shape (layers, heads, FFN width, precision) meets the target and is likely the most
accurate.

1. Candidates: the teacher's full float shape, then a fine grid (`grid.candidate_shapes`: for a 12-layer teacher
   12/10/8/6/4/3/2 layers, 100/75/50/33/25% of the heads, 100/75/50/33/25/12.5% of the FFN, each in float, int8
   and int8 with int8 embeddings: some 600 shapes), sized exactly (`twin.size_bytes`).
2. Latency (latency and speedup targets): a designed subset of random-weight twins is measured on this machine
   (the extremes of each precision, `design_shapes`), the latency model (`latency_model.LatencyModel`) is fitted
   on it and predicts every candidate; the candidates predicted near the budget's edge are measured too and the
   model refitted. A measured candidate costs the larger of its measurement and the prediction (one lucky round
   cannot decide), an unmeasured one its prediction; the candidate the plan would choose is measured before it is
   chosen (step 3).
   Measurements are ratios to a small reference twin measured in the same group (the anchor, `anchor_shape`;
   the teacher's twin is measured once, with it), so load changes between groups cancel. A group timed on a busy
   machine is timed again (after a pause, `measurements.BUSY_TRIES` times in all) only for the twins whose
   measurement could change the plan (`_doubtful`); the others keep theirs, flagged (and cached: another plan
   reuses them, and times them again if they could change it). The chosen candidate is always one whose twin was
   measured, and a chosen twin whose figure was timed on a busy machine is timed again before it is accepted (up
   to `BUSY_TRIES` times), then the ranking made again.
3. Choice: with a `quality.QualityProbe` (the teacher and training rows: `compress` gives one), the candidates
   within the budget are scored by the teacher pruned one-shot to their shape, and the plan keeps the best score
   (ties: float over int8, then more parameters). Only each precision's and depth's largest shapes within the
   budget are scored (a shape that keeps a subset of another's heads and neurons never scores better). Layers are
   the ones the probe's drop-one-layer ranking keeps. Without a probe (`make_plan` from a config alone) the plan
   keeps the most parameters and evenly spaced layers. For a latency target, while the best-ranked candidate is
   unmeasured, the best-ranked unmeasured ones are measured (a group at a time; at most `MAX_CHOICE_MEASURED`,
   then only measured ones count) and the ranking made again: a candidate predicted just inside the budget can
   be chosen, so the plan uses its budget instead of stopping short of it.

A target that cannot be met, or that the teacher meets already, is a ValueError naming the closest candidate:
raised before any training and before anything is written. A `Plan` is plain data (`to_dict`/`from_dict`, json),
saved as plan.json and shown as plan.md. Its `inputs` (the teacher's weights, the training data and the training
settings: set by `run.plan_compression`) are part of its identity, so a resumed run never reuses stages made from
other inputs.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from transformers import PretrainedConfig

from ..architectures import get_architecture
from ..config import kept_layer_map
from ..loss_terms import LOSS_TERMS
from ..measure import count_parameters
from ..student import every_kth_layer
from . import measurements
from .grid import PRECISIONS, candidate_shapes
from .latency_model import LatencyModel
from .measurements import Measurement, MeasurementCache, busy_note, measure_shapes
from .shape import ModelShape
from .target import CompressArguments, MachineSettings, Target
from .twin import header_bytes, random_twin, size_bytes

logger = logging.getLogger("distilkit.compress")

PLAN_FORMAT = 2
PLAN_JSON = "plan.json"
PLAN_MD = "plan.md"
MEASURE_GROUP = 4  # twins measured interleaved at a time (and held in memory together), besides the teacher's
# Candidates predicted within these shares of the budget are measured when screening, to fit the latency model
# where it decides (its held-out error on MPNet-base twins: mean 4%, max 14%; benchmarks/results/latency_model.md),
# the closest to the budget first, at most MAX_EDGE_MEASURED.
EDGE_LOW_SHARE, EDGE_SHARE = 0.85, 1.15
MAX_EDGE_MEASURED = 24
# The plan measures the best-ranked unmeasured candidates within the budget (by prediction) before choosing one, a
# group at a time; after this many, only measured candidates can be chosen (a bound on planning time).
MAX_CHOICE_MEASURED = 16
# A twin timed on a busy machine whose measurement is this far from the latency model's prediction (relative) is
# timed again: an outlier bends the fit of every prediction (the model's held-out error: mean 4%, max 14%).
RETIME_RESIDUAL = 0.10


@dataclass(frozen=True)
class Candidate:
    """A shape with its measured latency (`latency_ms`, the twin's estimate relative to the reference twin in its
    group, `_Timing`; None when not measured), predicted latency, exact weight size, parameter count (int8 weights
    counted like their float originals) and quality score (`quality.QualityProbe.score`; None when not scored)."""

    shape: ModelShape
    size_mb: float
    parameters: int
    latency_ms: float | None = None
    predicted_ms: float | None = None
    score: float | None = None

    def to_dict(self) -> dict:
        return {"key": self.shape.key(), "shape": self.shape.to_dict(), "size_mb": self.size_mb,
                "parameters": self.parameters, "latency_ms": self.latency_ms, "predicted_ms": self.predicted_ms,
                "score": self.score}

    @classmethod
    def from_dict(cls, data: dict) -> Candidate:
        return cls(ModelShape.from_dict(data["shape"]), data["size_mb"], data["parameters"], data["latency_ms"],
                   data["predicted_ms"], data.get("score"))


@dataclass(frozen=True)
class Plan:
    """What `compress` will make and why. `teacher`: the teacher's layers, heads and FFN width per layer, and model
    type; `candidates`: every shape considered, the teacher's first; `chosen`: the key of the chosen one;
    `keep_layers`: the teacher's layers the student keeps; `chooser`: "quality" (by the quality score) or
    "parameters" (the most parameters, without a probe); `inputs`: what the stages are made from besides the plan
    (teacher weights, data, training settings); `busy`: why the candidates' latencies were timed on a busy machine
    (`measurements.busy_note`), None if quiet; `reference`: the key of the twin the candidates were timed against in
    their groups (the anchor), None without latency measurements (or in a plan saved before it was recorded)."""

    target: Target
    machine: MachineSettings | None
    teacher: dict
    candidates: tuple[Candidate, ...]
    chosen: str
    reason: str
    keep_layers: tuple[int, ...] = ()
    chooser: str = "parameters"
    inputs: dict = field(default_factory=dict)
    busy: str | None = None
    reference: str | None = None

    def __post_init__(self):
        if not self.keep_layers:  # evenly spaced (as `student_from_teacher` with a count)
            object.__setattr__(self, "keep_layers",
                               tuple(every_kth_layer(self.teacher["layers"], self.shape.num_layers)))
        object.__setattr__(self, "keep_layers", tuple(int(i) for i in self.keep_layers))

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
    def prune_fractions(self) -> tuple[float, float]:
        """(heads, FFN neurons) the layer-selected student loses in all, as shares of its original ones."""
        layers = self.shape.num_layers
        heads = 1 - sum(self.shape.heads) / (layers * self.teacher["heads"])
        ffn = 1 - sum(self.shape.ffn) / (layers * self.teacher["ffn"])
        return heads, ffn

    def cost(self, candidate: Candidate) -> float | None:
        """What the target budgets for `candidate`: its latency (ms) or its size (MB)."""
        return cost_of(self.target, candidate)

    def identity(self) -> dict:
        """What a run's stages depend on: a resumed run with another identity must not reuse them. The layer map
        the stages distil layer terms on when the plan sets it (`layer_map_for`) is named here, so stages
        distilled on another map are not reused."""
        identity = {"target": str(self.target), "margin": self.target.margin,
                    "machine": None if self.machine is None else self.machine.to_dict(), "teacher": self.teacher,
                    "shape": self.shape.to_dict(), "keep_layers": list(self.keep_layers), **self.inputs}
        layer_map = self.layer_map_for(self.inputs.get("training_settings") or {})
        if layer_map is not None:
            identity["layer_map"] = {str(k): v for k, v in layer_map.items()}
        return identity

    def layer_map_for(self, settings: Mapping) -> dict[int, int] | None:
        """The layer map this plan's distillations use for training `settings` (field: value, as
        `pipeline.identity.training_settings` gives them) instead of theirs: the kept layers' map
        (`config.kept_layer_map`) when a layer term (hidden states, attention maps) is weighted on the default
        'uniform' map, since the student keeps the plan's layers, not evenly spaced ones; None when the settings'
        own map applies."""
        weights = [t.weight_field for t in LOSS_TERMS if t.uses_teacher and t.student_outputs]
        if settings.get("layer_map") == "uniform" and any(float(settings.get(w) or 0) > 0 for w in weights):
            return kept_layer_map(self.keep_layers)
        return None

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.identity(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict:
        return {"format": PLAN_FORMAT, "target": {"name": self.target.name, "value": self.target.value,
                                                   "margin": self.target.margin},
                "machine": None if self.machine is None else self.machine.to_dict(), "teacher": self.teacher,
                "chosen": self.chosen, "keep_layers": list(self.keep_layers), "chooser": self.chooser,
                "prune_heads_fraction": self.prune_fractions[0], "prune_ffn_fraction": self.prune_fractions[1],
                "reason": self.reason, "busy": self.busy, "reference": self.reference,
                "fingerprint": self.fingerprint(), "inputs": self.inputs,
                "candidates": [c.to_dict() for c in self.candidates]}

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        if not isinstance(data, dict) or data.get("format") != PLAN_FORMAT:
            raise ValueError(f"Not a distilkit compression plan of this version (format {PLAN_FORMAT}).")
        target = Target(data["target"]["name"], data["target"]["value"], data["target"]["margin"])
        machine = None if data["machine"] is None else MachineSettings(**data["machine"])
        return cls(target, machine, data["teacher"], tuple(Candidate.from_dict(c) for c in data["candidates"]),
                   data["chosen"], data["reason"], tuple(data["keep_layers"]), data.get("chooser", "parameters"),
                   data.get("inputs", {}), data.get("busy"), data.get("reference"))

    def to_markdown(self) -> str:
        """plan.md: the target, the choice and its reason, and a table of the candidates that were measured or
        scored (every candidate, with its prediction, is in plan.json)."""
        teacher_ms = self.teacher_candidate.latency_ms
        budget = self.target.budget(teacher_ms)
        lines = [f"# Compression plan: {self.target}", "",
                 f"Chosen: **{self.chosen}**, keeping layers {', '.join(map(str, self.keep_layers))} of the teacher's "
                 f"{self.teacher['layers']}. {self.reason}", ""]
        if self.busy:
            lines += [f"**Measured on a busy machine:** {self.busy}", ""]
        if self.machine is not None and self.teacher_candidate.latency_ms is not None:  # twins were timed
            m = self.machine
            relative = (f"relative to a reference twin ({self.reference}) measured in the same group and scaled by "
                        "its ratio to the teacher's twin, measured together once" if self.reference else
                        "relative to the teacher's twin measured in the same group")
            lines += [f"Latency: ms of one forward pass of a random-weight twin (20th percentile of interleaved "
                      f"rounds), batch {m.batch_size} × {m.seq_len} tokens, {m.threads} thread(s), {relative}; "
                      "predicted: the latency model fitted on the measured twins. Speedup and budget use the larger "
                      "of the two for a measured candidate, the prediction for the others.", ""]
        if any(c.score is not None for c in self.candidates):
            lines += ["Score: KL(teacher ‖ the teacher pruned one-shot to the shape) on held-out training rows; lower "
                      "is better (distilkit.compress.quality).", ""]
        shown = [c for c in self.candidates
                 if c is self.teacher_candidate or c.latency_ms is not None or c.score is not None]
        header = ["candidate", "parameters", "size (MB)", "latency (ms)", "predicted (ms)", "speedup", "score",
                  "within budget"]
        lines += ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---:|---:|---:|---|"]
        for c in sorted(shown, key=lambda c: (c is not self.teacher_candidate, self.cost(c) or 0)):
            cost = self.cost(c)
            mark = "**chosen**" if c.shape.key() == self.chosen else (
                "–" if cost is None else "yes" if fits(cost, budget) else "no")
            speedup = None if cost is None or teacher_ms is None else teacher_ms / cost
            lines.append("| " + " | ".join([
                c.shape.key() + (" (teacher)" if c is self.teacher_candidate else ""), f"{c.parameters / 1e6:.3f}M",
                f"{c.size_mb:.3f}", cell(c.latency_ms, ".2f"), cell(c.predicted_ms, ".2f"),
                cell(speedup, ".2f", "x"), cell(c.score, ".4f"), mark]) + " |")
        rest = len(self.candidates) - len(shown)
        if rest:
            lines += ["", f"{rest} more candidates were predicted only (none of them chosen): see plan.json."]
        return "\n".join(lines) + "\n"


def cell(value: float | None, spec: str, suffix: str = "") -> str:
    """A table cell: `value` formatted, or a dash for None."""
    return "–" if value is None else f"{value:{spec}}{suffix}"


def fits(cost: float, budget: float) -> bool:
    """`cost` within `budget`, up to the float rounding of the latency model's least squares."""
    return cost <= budget * (1 + 1e-9)


def cost_of(target: Target, candidate: Candidate) -> float | None:
    """What `target` budgets for `candidate`: its size (MB), or its latency (ms): for a measured candidate the
    larger of its twin's measurement and the latency model's prediction, so that one measurement a load spike or a
    lucky round made fast does not decide the plan alone; for the others the prediction."""
    if not target.is_latency:
        return candidate.size_mb
    if candidate.latency_ms is None or candidate.predicted_ms is None:
        return candidate.latency_ms if candidate.latency_ms is not None else candidate.predicted_ms
    return max(candidate.latency_ms, candidate.predicted_ms)


def teacher_summary(config: PretrainedConfig) -> dict:
    """The teacher's model type, layers, heads and FFN width per layer (from the architecture table)."""
    spec = get_architecture(config)
    return {"model_type": config.model_type, "layers": int(config.num_hidden_layers),
            "heads": int(getattr(config, spec.heads_attr)), "ffn": int(getattr(config, spec.ffn_width_attr)),
            "hidden_size": int(config.hidden_size)}


def make_plan(config: PretrainedConfig, args: CompressArguments, machine: MachineSettings | None,
              progress: bool = True, probe=None) -> Plan:
    """Choose the shape to compress `config`'s model to (see the module docstring): measure and model the
    candidates' latency on this machine (latency targets), and score them with `probe` (a
    `quality.QualityProbe`; None, or `args.plan_by` 'parameters': the most parameters). Raises ValueError,
    before anything is trained or written (only the latency cache is updated), for an unsupported architecture, a
    latency target without machine settings, a target the teacher meets already or no candidate meets."""
    target = args.target
    target.check_machine(machine)
    if args.plan_by == "parameters":
        probe = None  # the rule asked for: the most parameters, whatever probe is at hand
    teacher = teacher_summary(config)  # an architecture without a heads/FFN entry fails here
    if machine is not None:
        machine.check_fits(config)
    candidates = _sized(config, plan_shapes(config, args))
    if target.is_latency:
        timing = _Timing(config, machine, args, progress)
        candidates = timing.screen(candidates, target)
    else:
        timing = None
    teacher_ms = candidates[0].latency_ms
    _refuse_met_by_teacher(target, candidates[0], teacher_ms)
    budget = target.budget(teacher_ms)
    scores: dict[tuple, float] = {}
    choice_measured = 0
    while True:
        predicted = choice_measured < MAX_CHOICE_MEASURED  # may an unmeasured candidate still be chosen?
        within = [c for c in candidates if _eligible(target, c, budget, predicted)]
        if not within:
            raise _unreachable(target, candidates, budget, teacher_ms, predicted)
        if probe is not None:
            frontier = _largest_within(within)
            todo = [c.shape for c in frontier if _structure(c.shape) not in scores]
            scores.update(_scores(probe, todo, progress))
            candidates = [replace(c, score=scores.get(_structure(c.shape))) if c in frontier else c
                          for c in candidates]
            within = [c for c in candidates if _eligible(target, c, budget, predicted)]
            ranked = sorted((c for c in within if c.score is not None), key=_by_quality)
        else:
            ranked = sorted(within, key=_by_parameters)
        chosen = ranked[0]
        if timing is not None and timing.may_retime(chosen):
            # Chosen on a figure timed on a busy machine: timed again (after a pause) before it is accepted.
            candidates = timing.retime(candidates, [chosen.shape], budget)
            continue
        if timing is None or chosen.latency_ms is not None:
            break
        # A plan is never chosen unmeasured: the best-ranked unmeasured candidates are measured, a group at a time.
        room = min(MEASURE_GROUP, MAX_CHOICE_MEASURED - choice_measured)
        unmeasured = [c.shape for c in ranked if c.latency_ms is None][:room]
        candidates = timing.measure_also(candidates, unmeasured, budget)
        choice_measured += len(unmeasured)
    keep = probe.keep_layers(chosen.shape.num_layers) if probe is not None else ()
    return Plan(target, machine, teacher, tuple(candidates), chosen.shape.key(),
                _reason(target, chosen, within, len(candidates), teacher_ms, budget, probe is not None),
                tuple(keep), "quality" if probe is not None else "parameters",
                busy=None if timing is None else timing.busy_note(),
                reference=None if timing is None else timing.anchor.key())


def plan_shapes(config: PretrainedConfig, args: CompressArguments) -> list[ModelShape]:
    """The shapes a plan considers: the teacher's full float shape first, then `args`' candidate grid."""
    teacher = teacher_summary(config)
    teacher_shape = ModelShape((teacher["heads"],) * teacher["layers"], (teacher["ffn"],) * teacher["layers"])
    precisions = PRECISIONS if args.candidate_int8 else ((False, False),)
    shapes = candidate_shapes(config, args.candidate_layer_fractions, args.candidate_head_fractions,
                              args.candidate_ffn_fractions, precisions)
    return [teacher_shape, *(s for s in shapes if s != teacher_shape)]


def design_shapes(shapes: Sequence[ModelShape]) -> list[ModelShape]:
    """The twins measured to fit the latency model: per precision, every combination of the smallest, middle and
    largest layer counts with the smallest and largest head counts and FFN widths of the grid (the corners, where
    a linear model is best determined), the teacher's shape first."""
    design = [shapes[0]]
    for precision in dict.fromkeys((s.int8, s.int8_embeddings) for s in shapes):
        same = [s for s in shapes if (s.int8, s.int8_embeddings) == precision]
        layers = sorted({s.num_layers for s in same})
        wanted_layers = {layers[0], layers[len(layers) // 2], layers[-1]}
        heads = [min(s.heads[0] for s in same), max(s.heads[0] for s in same)]
        widths = [min(s.ffn[0] for s in same), max(s.ffn[0] for s in same)]
        design += [s for s in same if s.num_layers in wanted_layers and s.heads[0] in heads and s.ffn[0] in widths]
    return list(dict.fromkeys(design))


def saved_plan_matches(saved: Plan, config: PretrainedConfig, args: CompressArguments,
                       machine: MachineSettings | None) -> bool:
    """Whether a plan saved by an earlier run was made for this target, machine settings, teacher and candidate
    grid and chooser (`plan_by`), so it can be reused instead of measured again (a new measurement's noise could
    choose another shape).
    Its inputs (teacher weights, data) are compared by the caller."""
    return (saved.target == args.target and saved.machine == machine and saved.teacher == teacher_summary(config)
            and saved.chooser == args.plan_by and [c.shape for c in saved.candidates] == plan_shapes(config, args))


# ------------------------------------------------------------------------------------------------ internals


def _sized(config, shapes: Sequence[ModelShape]) -> list[Candidate]:
    """Every shape with its exact weight size and parameter count. Both are linear in the kept layers, heads and
    neurons for each precision (every unit adds fixed rows and columns, and int8 a scale per row), so they are
    solved exactly from the meta-device twins of a few shapes (`design_shapes`), and checked on all of those; a
    family where the check fails is sized twin by twin. The size adds the safetensors header (`twin.header_bytes`,
    a few KB: solved the same way, within a few bytes), so it is what the saved file weighs."""
    design = design_shapes(shapes)
    sizes = _exact_linear(shapes, design, lambda s: size_bytes(config, s), _precision)
    headers = _exact_linear(shapes, design, lambda s: header_bytes(config, s), _precision, exact_only=False)
    sizes = {shape: sizes[shape] + headers[shape] for shape in shapes}
    parameters = _exact_linear(
        shapes, design, lambda s: count_parameters(random_twin(config, ModelShape(s.heads, s.ffn), device="meta")),
        lambda s: "any")
    return [Candidate(shape, sizes[shape] / 1e6, parameters[shape]) for shape in shapes]


def _precision(shape: ModelShape) -> tuple[bool, bool]:
    return shape.int8, shape.int8_embeddings


def _exact_linear(shapes: Sequence[ModelShape], design: Sequence[ModelShape], exact: Callable[[ModelShape], int],
                  kind: Callable[[ModelShape], object], exact_only: bool = True) -> dict[ModelShape, int]:
    """`exact(shape)` for every shape, computed exactly on the design shapes of each kind and solved from them
    (integer least squares on 1, layers, heads, neurons) for the rest; with `exact_only`, the solution must
    reproduce every design value exactly, or every shape is computed with `exact`."""
    import torch

    def features(s: ModelShape) -> list[float]:
        return [1.0, float(s.num_layers), float(sum(s.heads)), float(sum(s.ffn))]

    values: dict[ModelShape, int] = {}
    for group in dict.fromkeys(kind(s) for s in shapes):
        members = [s for s in shapes if kind(s) == group]
        known = {s: exact(s) for s in [d for d in design if kind(d) == group] or members[:6]}
        x = torch.tensor([features(s) for s in known], dtype=torch.float64)
        y = torch.tensor(list(known.values()), dtype=torch.float64)
        solution = torch.linalg.lstsq(x, y).solution
        fitted = {s: round(float(torch.tensor(features(s), dtype=torch.float64) @ solution)) for s in members}
        if len(known) > 4 and (not exact_only or all(fitted[s] == v for s, v in known.items())):
            values.update(fitted)
        else:
            values.update({s: known.get(s) or exact(s) for s in members})
    return values


def _structure(shape: ModelShape) -> tuple:
    return shape.heads, shape.ffn


class _Timing:
    """The latency side of a plan: design twins measured, the model fitted, edge candidates measured.

    Every group of twins is measured with a reference twin, and a latency is the twin's ratio to the reference in
    its group (load that changes between groups cancels). The reference is a small candidate, the anchor
    (`anchor_shape`), not the teacher: the teacher's twin costs as much as all the candidates of a group together
    (on MPNet-base half of each group's time), and a reference close in size to the candidates is slowed by load
    as they are. The teacher's twin is measured once, with the anchor (twice the rounds): its latency and the
    anchor's turn ratios into milliseconds; that calibration is timed again while the machine is busy, as it sets
    the budget. A group of candidates timed on a busy machine is not timed again as a whole: after the fit, only
    its twins whose measurement could change the plan are (`_doubtful`, `retime_doubtful`)."""

    def __init__(self, config, machine: MachineSettings, args: CompressArguments, progress: bool):
        self.config, self.machine, self.args, self.progress = config, machine, args, progress
        self.cache = MeasurementCache(args.cache_path)
        self.teacher: ModelShape | None = None
        self.anchor: ModelShape | None = None
        self.teacher_ms: float | None = None
        self.anchor_ms: float | None = None
        self.calibration: Measurement | None = None
        self.latest: dict[ModelShape, Measurement] = {}  # each candidate twin's last measurement
        self.times: dict[ModelShape, int] = {}  # each candidate twin's measurements (timed, or read from the cache)

    def screen(self, candidates: list[Candidate], target: Target) -> list[Candidate]:
        shapes = [c.shape for c in candidates]
        self.teacher, self.anchor = shapes[0], anchor_shape(shapes)
        self._calibrate()
        budget = target.budget(self.teacher_ms)
        candidates = self.measure_also(candidates, design_shapes(shapes), budget)
        edge = sorted((c for c in candidates if c.latency_ms is None
                       and EDGE_LOW_SHARE * budget <= c.predicted_ms <= EDGE_SHARE * budget),
                      key=lambda c: abs(c.predicted_ms - budget))
        return self.measure_also(candidates, [c.shape for c in edge[:MAX_EDGE_MEASURED]], budget)

    def measure_also(self, candidates: list[Candidate], shapes: Sequence[ModelShape],
                     budget: float) -> list[Candidate]:
        """`candidates` with `shapes` measured too and every prediction refitted on all measured ones; then the
        doubtful twins of busy groups timed again (`retime_doubtful`)."""
        return self.retime_doubtful(self._with_measured(candidates, shapes), budget)

    def retime_doubtful(self, candidates: list[Candidate], budget: float) -> list[Candidate]:
        """The twins timed on a busy machine whose measurement could change the plan (`_doubtful`) timed again
        after a pause, and the model refitted, until none is doubtful or each was timed `BUSY_TRIES` times."""
        while True:
            doubtful = [c.shape for c in candidates if self.may_retime(c) and _doubtful(c, budget)]
            if not doubtful:
                return candidates
            logger.warning(
                "%d twin(s) timed in a group measured on a busy machine (%s) came out far from the latency model's "
                "prediction or on the other side of the budget from it; timing them again in %g s.", len(doubtful),
                self.latest[doubtful[0]].busy, measurements.BUSY_WAIT_S)
            candidates = self.retime(candidates, doubtful, budget)

    def may_retime(self, candidate: Candidate) -> bool:
        """Whether `candidate`'s twin was last timed on a busy machine (or read so from the cache) and may be timed
        again (fewer than `BUSY_TRIES` times so far)."""
        latest = self.latest.get(candidate.shape)
        return latest is not None and bool(latest.busy) and self.times[candidate.shape] < measurements.BUSY_TRIES

    def retime(self, candidates: list[Candidate], shapes: Sequence[ModelShape], budget: float) -> list[Candidate]:
        """`shapes`' twins timed again after a pause (their busy cached figures not reused), the model refitted,
        and then the doubtful twins timed again (`retime_doubtful`)."""
        measurements.wait(measurements.BUSY_WAIT_S)
        return self.retime_doubtful(self._with_measured(candidates, shapes, again=True), budget)

    def busy_note(self) -> str | None:
        """`measurements.busy_note` of the calibration and each twin's last measurement."""
        return busy_note([m for m in (self.calibration, *self.latest.values()) if m is not None])

    def _with_measured(self, candidates: list[Candidate], shapes: Sequence[ModelShape],
                       again: bool = False) -> list[Candidate]:
        measured = dict(zip(shapes, self._measure(shapes, again))) if shapes else {}
        candidates = [replace(c, latency_ms=measured.get(c.shape, c.latency_ms)) for c in candidates]
        model = LatencyModel.fit([Measurement(c.shape, c.latency_ms, c.latency_ms) for c in candidates
                                  if c.latency_ms is not None])
        return [replace(c, predicted_ms=_predict(model, c.shape)) for c in candidates]

    def _calibrate(self) -> None:
        """The teacher's twin and the anchor measured together, with twice the rounds (again after a pause while
        the machine is busy): their latencies."""
        [self.calibration] = measure_shapes(self.config, [self.anchor], self.machine, self.cache,
                                            rounds=2 * self.args.latency_rounds, twins_at_once=MEASURE_GROUP,
                                            reference=self.teacher)
        # An anchor that is the teacher's own shape is the reference twin itself: the same estimate.
        self.teacher_ms, self.anchor_ms = self.calibration.reference_ms, self.calibration.latency_ms

    def _measure(self, shapes: Sequence[ModelShape], again: bool = False) -> list[float]:
        """Latencies (estimates: `Measurement.latency_ms`) of the shapes' twins, a group at a time (once, busy or
        not), each group with the anchor's twin: a latency is its ratio to the anchor in its group times the
        anchor's latency from the calibration (`_calibrate`); the teacher's and the anchor's are the calibration's.
        Figures in the cache are reused, busy ones too (`retime_doubtful` judges them) unless timing `again`."""
        from tqdm.auto import tqdm

        others = [s for s in shapes if s not in (self.teacher, self.anchor)]
        groups = [others[start:start + MEASURE_GROUP] for start in range(0, len(others), MEASURE_GROUP)]
        latency = {self.teacher: self.teacher_ms, self.anchor: self.anchor_ms}
        for group in tqdm(groups, desc=f"measuring {len(others)} candidate twins", unit="group",
                          disable=not self.progress):
            measured = measure_shapes(self.config, group, self.machine, self.cache, rounds=self.args.latency_rounds,
                                      twins_at_once=MEASURE_GROUP, reference=self.anchor, busy_tries=1,
                                      reuse_busy=not again)
            latency.update({m.shape: m.latency_ms / m.reference_ms * self.anchor_ms for m in measured})
            self.latest.update({m.shape: m for m in measured})
            self.times.update({m.shape: self.times.get(m.shape, 0) + 1 for m in measured})
        return [latency[s] for s in shapes]


def _doubtful(candidate: Candidate, budget: float) -> bool:
    """Whether `candidate`'s measured latency could change the plan if it is off: it and the prediction fall on
    different sides of the budget (which one counts decides whether the candidate is eligible), or it is more than
    `RETIME_RESIDUAL` from the prediction (an outlier bends the latency model's fit)."""
    measured, predicted = candidate.latency_ms, candidate.predicted_ms
    if measured is None or predicted is None:
        return False
    return fits(measured, budget) != fits(predicted, budget) or abs(measured / predicted - 1) > RETIME_RESIDUAL


def anchor_shape(shapes: Sequence[ModelShape]) -> ModelShape:
    """The reference twin a plan measures in every group (`_Timing`): the float candidate with the most layers and
    the fewest heads and FFN neurons (on MPNet-base's default grid L12-h3-f384 in float, a fifth of the teacher's
    time); the teacher's shape (`shapes[0]`) when there is no other float candidate."""
    floats = [s for s in shapes[1:] if not s.int8]
    if not floats:
        return shapes[0]
    layers = max(s.num_layers for s in floats)
    return min((s for s in floats if s.num_layers == layers), key=lambda s: (sum(s.heads), sum(s.ffn)))


def _predict(model: LatencyModel, shape: ModelShape) -> float | None:
    try:
        return model.predict(shape)
    except ValueError:  # a precision with too few measurements to fit
        return None


def _eligible(target: Target, candidate: Candidate, budget: float, predicted: bool = True) -> bool:
    """Within the budget by its cost: the larger of measurement and prediction when measured (or the size, for a
    size target), the prediction otherwise, and then only while unmeasured candidates may still be chosen
    (`predicted`: the plan measures the one it would choose before choosing it)."""
    cost = cost_of(target, candidate)
    if cost is None or (target.is_latency and candidate.latency_ms is None and not predicted):
        return False
    return fits(cost, budget)


def _largest_within(within: Sequence[Candidate]) -> list[Candidate]:
    """The candidates no other candidate of the same precision and depth contains (at least its heads and its FFN
    neurons in every layer): the only ones that can score best, since keeping more of the teacher's units never
    moves the pruned teacher further from it."""
    def contains(a: ModelShape, b: ModelShape) -> bool:
        return (a.num_layers == b.num_layers and (a.int8, a.int8_embeddings) == (b.int8, b.int8_embeddings)
                and all(x >= y for x, y in zip(a.heads, b.heads)) and all(x >= y for x, y in zip(a.ffn, b.ffn)))

    return [c for c in within if not any(o is not c and contains(o.shape, c.shape) and o.shape != c.shape
                                         for o in within)]


def _scores(probe, shapes: Sequence[ModelShape], progress: bool) -> dict[tuple, float]:
    from tqdm.auto import tqdm

    unique = list(dict.fromkeys(_structure(s) for s in shapes))
    return {structure: probe.score(ModelShape(*structure))
            for structure in tqdm(unique, desc=f"scoring {len(unique)} shapes", disable=not progress or not unique)}


def _by_quality(c: Candidate):
    # Scores within float noise of each other (1e-6) are ties; a KL below 0 is rounding.
    return round(max(c.score, 0.0), 6), c.shape.int8, c.shape.int8_embeddings, -c.parameters


def _by_parameters(c: Candidate):
    return -c.parameters, -c.shape.num_layers, c.shape.int8, c.shape.int8_embeddings


def _refuse_met_by_teacher(target: Target, teacher: Candidate, teacher_ms: float | None) -> None:
    if target.met(cost_of(target, teacher), teacher_ms):
        described = target.format(target.achieved(cost_of(target, teacher), teacher_ms))
        raise ValueError(f"{target} is met by the teacher itself ({described}); nothing to compress. Choose a "
                         f"{'smaller' if target.name != 'target_speedup' else 'larger'} target.")


def _unreachable(target: Target, candidates: Sequence[Candidate], budget: float, teacher_ms,
                 predicted: bool = True) -> ValueError:
    """The error for a target no candidate meets. Once unmeasured candidates may no longer be chosen (`predicted`
    False: the plan measured as many as it may), the closest candidate named is a measured one, and the candidates
    still predicted within the budget are counted, so the message never names one that seems to meet the target."""
    known = [c for c in candidates if cost_of(target, c) is not None
             and (predicted or not target.is_latency or c.latency_ms is not None)]
    closest = min(known, key=lambda c: cost_of(target, c))
    wanted = target.achieved(budget, teacher_ms)
    measured = "" if closest.latency_ms is not None or not target.is_latency else " (predicted)"
    unmeasured = 0 if predicted else sum(c.latency_ms is None and _eligible(target, c, budget) for c in candidates)
    also = (f" {unmeasured} unmeasured candidate(s) are predicted within it, but the plan measures at most "
            f"{MAX_CHOICE_MEASURED} for its choice and those it measured came out slower."
            if unmeasured else "")
    return ValueError(
        f"cannot meet {target}: the {'fastest' if target.is_latency else 'smallest'} "
        f"{'measured ' if not predicted and target.is_latency else ''}candidate is "
        f"{closest.shape.key()} at {target.format(target.achieved(cost_of(target, closest), teacher_ms))}{measured} "
        f"(the plan needs {target.format(wanted)} with the {target.margin:.0%} margin).{also} Relax the target, "
        "lower target_margin, or add smaller candidate_*_fractions.")


def _reason(target: Target, chosen: Candidate, within: Sequence[Candidate], total: int, teacher_ms, budget: float,
            scored: bool) -> str:
    measure_name = "latency" if target.is_latency else "size"
    at = target.format(target.achieved(cost_of(target, chosen), teacher_ms))
    rule = (f"the best quality score ({chosen.score:.4f}; ties: float before int8, then more parameters) among the "
            f"{sum(c.score is not None for c in within)} scored (the largest of each precision and depth)"
            if scored else
            f"the most parameters ({chosen.parameters / 1e6:.3f}M; ties: more layers, then float)")
    return (f"Candidates within the {measure_name} budget ({target} less a {target.margin:.0%} margin: "
            f"{target.format(target.achieved(budget, teacher_ms))}): {len(within)} of {total}; this one has {rule}, "
            f"at {at}." + (" A measured latency here is the larger of the twin's measurement and the latency "
                           "model's prediction." if target.is_latency else ""))
