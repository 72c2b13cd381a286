"""The real `distilkit.measure.interleaved_timing` on a fake clock: every model is replaced by a stand-in whose
forward pass advances the clock by a cost (read off the model's shape, say) times the load of that moment, and the
load probe reads made-up /proc figures. The statistics, the rounds and the busy rules are the real ones; no
wall-clock time is measured.

    monkeypatch.setattr(distilkit.measure, "interleaved_timing", timing_by(lambda m: fake_ms(ModelShape.of(m))))
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction

import torch

from distilkit import measure

REAL_INTERLEAVED_TIMING = measure.interleaved_timing  # before any test replaces it


class FakeClock:
    """Seconds that pass only when a stand-in runs; exact fractions, so that a model costing 15.56 ms measures
    15.56 ms to the last bit."""

    def __init__(self):
        self.now = Fraction(0)

    def __call__(self) -> Fraction:
        return self.now


class StandIn(torch.nn.Module):
    """Runs like `model` costs: each call advances `clock` by `load(cost_ms, call)` milliseconds, `call` counting
    from 0 (warm-up calls included)."""

    def __init__(self, model, cost_ms: float, clock: FakeClock, load: Callable[[float, int], float]):
        super().__init__()
        self.config = model.config
        self.cost_ms, self.clock, self.load, self.calls = cost_ms, clock, load, 0

    def forward(self, **inputs):
        self.clock.now += Fraction(self.load(self.cost_ms, self.calls)) / 1000
        self.calls += 1


def quiet(cost_ms: float, call: int) -> float:
    return cost_ms


def spiky(share: float = 0.6, warmup: int = 2, small: float = 1.3, large: float = 1.8,
          large_ms: float = 20.0) -> Callable[[float, int], float]:
    """Load spikes in `share` of the rounds (the same rounds for every model, spread over the run): a spiked round
    takes `small` times longer for a cheap model, up to `large` times for a model of `large_ms` or more, as real
    load slows a large model more than a small one."""
    def load(cost_ms: float, call: int) -> float:
        round_number = call - warmup
        spiked = round_number >= 0 and (round_number % 5) < round(5 * share)
        if not spiked:
            return cost_ms
        weight = min(cost_ms / large_ms, 1.0)
        return cost_ms * (small + (large - small) * weight)
    return load


class FakeProbe:
    """A load probe on made-up /proc figures: each reading is `window_s` seconds after the previous one, during
    which other processes kept `other_cores` cores of this process's cores busy."""

    def __init__(self, other_cores: float = 0.0, window_s: float = 10.0):
        self.other_cores, self.window_s, self.readings = other_cores, window_s, 0

    def __call__(self) -> measure.LoadSample:
        cpus = len(measure.allowed_cpus())
        elapsed = self.readings * self.window_s
        self.readings += 1
        return measure.LoadSample(busy_s=self.other_cores * elapsed, total_s=cpus * elapsed, own_s=0.0,
                                  loadavg=(self.other_cores, 0.0, 0.0))


def timing_by(cost_ms: Callable[[torch.nn.Module], float], load: Callable[[float, int], float] = quiet,
              other_cores: float = 0.0, calls: list | None = None):
    """A replacement for `measure.interleaved_timing` that times stand-ins of the models, each costing
    `cost_ms(model)` under `load`, on a fake clock, with other processes using `other_cores` cores. `calls`: a list
    that gets the {name: model} dict of every measurement."""
    def timing(models, batch_size, seq_len, threads=2, rounds=10, warmup=2, progress=False, **kwargs):
        if calls is not None:
            calls.append(dict(models))
        clock = FakeClock()
        stand_ins = {name: StandIn(model, cost_ms(model), clock, load) for name, model in models.items()}
        return REAL_INTERLEAVED_TIMING(stand_ins, batch_size, seq_len, threads, rounds, warmup, progress,
                                       clock=clock, load_probe=FakeProbe(other_cores), **kwargs)
    return timing
