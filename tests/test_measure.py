"""distilkit.measure's timing under load: the estimator and spread on made-up round times, the load probe on made-up
/proc files, and the interleaved measurement on a fake clock (helpers.fake_timing) with load spikes that slow a
large model more than a small one. No wall-clock time is asserted on."""

from __future__ import annotations

import random
import statistics

import pytest
import torch
from helpers.fake_timing import FakeClock, FakeProbe, StandIn, quiet, spiky
from helpers.tiny_models import tiny_config

from distilkit import measure
from distilkit.measure import BusyBounds, LatencyStats, LoadReport, LoadSample, interleaved_timing

# ------------------------------------------------------------------------------------------ estimator and spread


def test_quantiles_match_an_independent_reference():
    values = [random.Random(seed).uniform(1, 100) for seed in range(13)]
    # statistics.quantiles(method="inclusive") interpolates between sorted values as numpy's default does
    fifths = statistics.quantiles(values, n=5, method="inclusive")
    quarters = statistics.quantiles(values, n=4, method="inclusive")
    assert measure.quantile(values, 0.2) == pytest.approx(fifths[0])
    assert measure.quantile(values, 0.25) == pytest.approx(quarters[0])
    assert measure.quantile(values, 0.75) == pytest.approx(quarters[2])
    assert measure.quantile(values, 0.5) == pytest.approx(statistics.median(values))
    assert measure.quantile([7.0], 0.2) == 7.0
    with pytest.raises(ValueError, match="no values"):
        measure.quantile([], 0.2)


def test_the_estimate_is_the_20th_percentile_and_the_spread_the_interquartile_range_over_the_median():
    # 10 rounds: sorted 10, 10, 11, 12, 12, 13, 14, 20, 30, 40
    times = [12, 40, 10, 13, 11, 30, 10, 12, 14, 20]
    stats = LatencyStats.of([float(t) for t in times])
    assert (stats.min, stats.median, stats.rounds) == (10, 12.5, 10)
    assert stats.p20 == pytest.approx(10.8)  # position 1.8: 10 + 0.8 * (11 - 10)
    assert (stats.p25, stats.p75) == (pytest.approx(11.25), pytest.approx(18.5))  # 14 + 0.75 * (20 - 14)
    assert stats.estimate == stats.p20
    assert stats.spread == pytest.approx((18.5 - 11.25) / 12.5)
    assert stats.to_dict()["estimate"] == stats.p20 and stats.to_dict()["spread"] == stats.spread
    assert LatencyStats.of([5.0] * 4).spread == 0


def test_the_estimate_ignores_slow_rounds_up_to_80_percent_and_the_median_does_not():
    quiet_ms, slow = 10.0, [15.0] * 7  # 7 of 10 rounds slowed by load
    stats = LatencyStats.of([quiet_ms] * 3 + slow)
    assert stats.estimate == quiet_ms and stats.median == 15.0


# ------------------------------------------------------------------------------------------ the load probe

PROC_STAT = """cpu  300 0 60 900 10 0 0 0 0 0
cpu0 100 0 20 300 5 0 0 0 0 0
cpu1 150 10 30 200 5 3 2 5 40 0
cpu2 50 0 10 400 0 0 0 0 0 0
intr 1 2 3
"""


def write_proc(folder, stat: str, loadavg: str = "1.50 0.75 0.25 3/140 999\n"):
    folder.mkdir(exist_ok=True)
    (folder / "stat").write_text(stat)
    (folder / "loadavg").write_text(loadavg)
    return folder


def test_proc_stat_counts_busy_ticks_of_the_allowed_cpus_only():
    # cpu0: busy 100 + 20, total 120 + 300 + 5; cpu1: busy 150 + 10 + 30 + 3 + 2 + 5 (steal counts; guest is in
    # user already), total busy + 200 + 5
    busy, total = measure.parse_proc_stat(PROC_STAT, [0, 1], ticks_per_s=100)
    assert busy == pytest.approx((120 + 200) / 100)
    assert total == pytest.approx((425 + 405) / 100)
    assert measure.parse_proc_stat(PROC_STAT, [2], ticks_per_s=100) == pytest.approx((0.6, 4.6))
    with pytest.raises(ValueError, match="cpu7"):
        measure.parse_proc_stat(PROC_STAT, [0, 7], ticks_per_s=100)


def test_read_load_reads_stat_and_loadavg(tmp_path):
    sample = measure.read_load(write_proc(tmp_path / "proc", PROC_STAT), cpus=[0, 1])
    ticks = measure.os.sysconf("SC_CLK_TCK")
    assert sample.busy_s == pytest.approx(320 / ticks) and sample.total_s == pytest.approx(830 / ticks)
    assert sample.loadavg == (1.5, 0.75, 0.25) and sample.own_s > 0


def test_without_proc_stat_the_load_is_unknown(tmp_path):
    assert measure.read_load(tmp_path / "nothing-here") is None
    assert measure.read_load(write_proc(tmp_path / "proc", PROC_STAT), cpus=[5]) is None  # no such CPU
    report = LoadReport.between(None, None, cpus=2)
    assert report.other_cores is None and not report.known and "unknown" in report.describe()


def test_the_load_report_subtracts_this_processs_own_cpu_time():
    # 10 s on 2 cores: 20 s of capacity; 14 s busy, 3.5 of them this process's: 10.5 s others', 1.05 cores
    before = LoadSample(busy_s=100.0, total_s=1000.0, own_s=2.0, loadavg=(0.5, 0.5, 0.5))
    after = LoadSample(busy_s=114.0, total_s=1020.0, own_s=5.5, loadavg=(2.0, 1.0, 0.6))
    report = LoadReport.between(before, after, cpus=2)
    assert report.window_s == pytest.approx(10.0) and report.other_cores == pytest.approx(1.05) and report.known
    assert "1.05 of the 2 cores" in report.describe() and "load average 0.50 before, 2.00 after" in report.describe()
    assert report.to_dict()["loadavg_after"] == [2.0, 1.0, 0.6]
    # Our own time alone (more than the ticks saw, as rounding can make it): nobody else, not negative
    alone = LoadSample(busy_s=103.0, total_s=1020.0, own_s=5.5)
    assert LoadReport.between(before, alone, cpus=2).other_cores == 0.0
    # A window shorter than the ticks can resolve is reported, not judged
    short = LoadReport.between(before, LoadSample(101.0, 1000.2, 2.0), cpus=2)
    assert short.other_cores == pytest.approx(10.0) and not short.known and "too short" in short.describe()


# ------------------------------------------------------------------------------------------ on a fake clock


def stand_ins(costs: dict[str, float], load=quiet, clock=None):
    clock = clock or FakeClock()
    model = torch.nn.Module()
    model.config = tiny_config("bert", layers=1)
    return {name: StandIn(model, cost, clock, load) for name, cost in costs.items()}, clock


def timed(costs, load=quiet, probe=None, rounds=10, **kwargs):
    models, clock = stand_ins(costs, load)
    return interleaved_timing(models, batch_size=2, seq_len=8, threads=1, rounds=rounds, clock=clock,
                              load_probe=probe or FakeProbe(), **kwargs)


def jittered(load, amount: float = 0.01, seed: int = 0):
    """`load` with a deterministic +-`amount` jitter on every pass, as a quiet machine has."""
    noise = random.Random(seed)
    return lambda cost, call: load(cost, call) * (1 + noise.uniform(-amount, amount))


def test_a_quiet_measurement_times_every_model_and_is_not_busy():
    timing = timed({"teacher": 80.0, "student": 10.0}, reference="teacher")
    assert timing["teacher"].median == timing["teacher"].estimate == 80.0
    assert timing.speedup("student") == 8.0 and not timing.busy and timing.reasons == []
    assert timing.load.other_cores == 0.0 and timing.load.known
    saved = timing.to_dict()
    assert saved["busy"] is False and saved["reference"] == "teacher" and saved["models"]["student"]["rounds"] == 10
    assert saved["estimator"].startswith("p20")


def test_load_spikes_that_slow_the_large_model_more_fool_the_median_not_the_estimate():
    """Spikes in 6 of every 10 rounds, slowing the 80 ms model 1.8x and the 10 ms one about 1.3x, with 1% jitter:
    the median speedup comes out far too high, the estimate's is the quiet one, and the measurement says busy."""
    quiet_ratio = 8.0
    timing = timed({"teacher": 80.0, "student": 10.0}, load=jittered(spiky(share=0.6, large_ms=80.0)), rounds=20,
                   reference="teacher")
    median_ratio = timing["teacher"].median / timing["student"].median
    assert timing.speedup("student") == pytest.approx(quiet_ratio, rel=0.03)
    assert median_ratio > quiet_ratio * 1.2
    assert timing.busy and "teacher: its rounds spread" in timing.reasons[0]


def test_without_a_reference_the_slowest_model_judges_the_machine():
    timing = timed({"a": 5.0, "b": 50.0, "c": 20.0})
    assert timing.reference == "b"
    with pytest.raises(ValueError, match="reference 'x' is not one of the models timed"):
        timed({"a": 5.0}, reference="x")


@pytest.mark.parametrize("other_cores, load, busy, reason", [
    (0.1, quiet, False, None),
    (1.5, quiet, True, "other processes used 1.50 of the"),  # steady load: every round alike, only slower
    (0.0, spiky(), True, "teacher: its rounds spread"),  # load that comes and goes
])
def test_busy_when_other_processes_hold_the_cores_or_the_references_rounds_spread(other_cores, load, busy, reason):
    timing = timed({"teacher": 40.0, "student": 10.0}, load=load, probe=FakeProbe(other_cores), reference="teacher")
    assert timing.busy == busy
    if reason:
        assert any(reason in text for text in timing.reasons)
    assert timing.to_dict()["busy_reasons"] == timing.reasons


def test_off_linux_only_the_spread_rule_applies():
    unknown = lambda: None  # noqa: E731  (read_load where there is no /proc/stat)
    assert not timed({"teacher": 40.0}, probe=unknown).busy
    spread = timed({"teacher": 40.0}, load=spiky(), probe=unknown)
    assert spread.busy and spread.load.other_cores is None and "unknown" in spread.describe()


def test_the_bounds_are_settings():
    lenient = BusyBounds(max_other_cores=2.0, max_reference_spread=1.0)
    assert not timed({"teacher": 40.0}, load=spiky(), probe=FakeProbe(1.5), bounds=lenient).busy


def test_the_models_alternate_in_rotating_order():
    order = []
    models, clock = stand_ins({"a": 1.0, "b": 2.0, "c": 3.0})
    for name, model in models.items():
        model.register_forward_hook(lambda *_, name=name: order.append(name))
    interleaved_timing(models, 2, 8, 1, rounds=3, warmup=0, clock=clock, load_probe=FakeProbe())
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]


def test_interleaved_latency_ms_keeps_its_median_and_min_keys(monkeypatch):
    models, clock = stand_ins({"x": 3.0})
    real = measure.interleaved_timing
    monkeypatch.setattr(measure, "interleaved_timing",
                        lambda *a, **k: real(*a, **k, clock=clock, load_probe=FakeProbe()))
    figures = measure.interleaved_latency_ms(models, 2, 8, 1, rounds=4)
    assert figures["x"]["median"] == figures["x"]["min"] == figures["x"]["estimate"] == 3.0


def test_two_measurements_pool_into_one_over_all_their_rounds_and_both_windows():
    first = timed({"teacher": 80.0, "student": 12.0}, jittered(quiet, seed=1), reference="teacher", rounds=10)
    later = timed({"teacher": 80.0, "student": 9.0}, jittered(quiet, seed=2), FakeProbe(other_cores=0.2),
                  reference="teacher", rounds=20)
    pooled = first.pooled(later)
    for name in ("teacher", "student"):
        both = first[name].times + later[name].times
        assert len(both) == 30 and pooled[name] == LatencyStats.of(both)  # the statistics of all 30 rounds
    # 10 slow rounds of 30 stay above the 20th percentile: the estimate is the later, faster rounds'
    assert pooled["student"].estimate < 9.1 and first["student"].estimate > 11.8
    # The load averaged over both 10 s windows: 0.0 then 0.2 cores
    assert pooled.load.window_s == pytest.approx(20.0) and pooled.load.other_cores == pytest.approx(0.1)
    assert pooled.reference == "teacher" and not pooled.busy and len(pooled.to_dict()["parts"]) == 2
    # A busy part is not averaged away: 0.05 cores over 10 s and 0.35 over 20 s pool to 0.25 (the bound), but the
    # second measurement was busy on its own
    calm = timed({"teacher": 80.0, "student": 12.0}, probe=FakeProbe(other_cores=0.05), reference="teacher")
    loaded = timed({"teacher": 80.0, "student": 9.0}, probe=FakeProbe(other_cores=0.35, window_s=20.0),
                   reference="teacher", rounds=20)
    diluted = calm.pooled(loaded)
    assert diluted.load.other_cores == pytest.approx(0.25) and diluted.busy
    assert diluted.reasons == [f"measurement 2 of 2: {reason}" for reason in loaded.reasons]
    # Two quiet parts whose level moved (the teacher 80 then 92 ms) are not called busy by their pooled spread
    moved = timed({"teacher": 80.0, "student": 12.0}, reference="teacher").pooled(
        timed({"teacher": 92.0, "student": 12.0}, reference="teacher", rounds=20))
    assert moved["teacher"].spread > 0.1 and not moved.busy and "over 2 measurements pooled" in moved.describe()
    with pytest.raises(ValueError, match=r"different models: \['student', 'teacher'\] and \['teacher'\]"):
        first.pooled(timed({"teacher": 80.0}, reference="teacher"))
    kept_none = LatencyStats(median=1.0, min=1.0, p20=1.0, p25=1.0, p75=1.0, rounds=10)
    bare = type(first)({"teacher": kept_none, "student": kept_none}, first.load, "teacher")
    with pytest.raises(ValueError, match="kept 0 of its 10 rounds"):
        first.pooled(bare)
