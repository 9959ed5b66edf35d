"""Decayed heat and the hint estimator (leibrix.domain._heat, leibrix.domain._estimates)."""

from __future__ import annotations

import math

import pytest

from leibrix.domain._estimates import DEFAULT_BYTES, DEFAULT_CPU_CORES, HintEstimator
from leibrix.domain._heat import Heat, HeatModel
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2


def test_heat_halves_every_half_life_and_adds_accesses():
    m = HeatModel(half_life_s=10.0, prior=0.0)
    h = Heat.new(m, now=100.0).fed(m, 100.0, 8)
    assert h.get(m, 100.0) == 8
    assert h.get(m, 110.0) == pytest.approx(4.0)
    assert h.get(m, 130.0) == pytest.approx(1.0)
    assert h.fed(m, 130.0, 3).get(m, 130.0) == pytest.approx(4.0)


def test_prior_gives_new_epochs_a_non_zero_heat():
    m = HeatModel(half_life_s=60.0, prior=1.5)
    assert Heat.new(m, 0.0).get(m, 0.0) == 1.5


def test_reading_in_the_past_never_increases_heat():
    m = HeatModel(half_life_s=10.0, prior=0.0)
    h = Heat.new(m, 50.0).fed(m, 50.0, 4)
    assert h.get(m, 40.0) == 4  # clock skew between reporters: no growth, no crash
    assert h.fed(m, 40.0, 1).get(m, 50.0) == 5


def test_observed_scan_cost_replaces_the_estimate():
    m = HeatModel(half_life_s=10.0, prior=0.0)
    h = Heat.new(m, 0.0)
    assert h.scan_cost(123.0) == 123.0
    h = h.fed(m, 0.0, 4, scanned_bytes=4000)
    assert h.scan_cost(123.0) == pytest.approx(1000.0)
    assert h.fed(m, 25.0, 0).scan_cost(123.0) == pytest.approx(1000.0)  # decay keeps the ratio


@pytest.mark.parametrize("kw", [{"half_life_s": 0}, {"half_life_s": math.inf}, {"prior": -1}])
def test_model_rejects_bad_parameters(kw):
    with pytest.raises(ValueError):
        HeatModel(**kw)


def test_estimator_uses_hints_then_defaults():
    e = HintEstimator().estimate(cp.EstimateHints())
    assert (e.memory_bytes, e.cpu_cores, e.scan_cost, e.rows) == (DEFAULT_BYTES, DEFAULT_CPU_CORES, float(DEFAULT_BYTES), 0)
    e = HintEstimator().estimate(cp.EstimateHints(bytes_per_epoch=1000, rows_per_epoch=10, cpu_cores_per_epoch=0.5, scan_cost=7.0))
    assert (e.memory_bytes, e.cpu_cores, e.scan_cost, e.rows) == (1000, 0.5, 7.0, 10)


def test_checkpoint_stores_heat_decayed_to_the_write_and_restore_decays_by_wall_time():
    m = HeatModel(half_life_s=10.0, prior=0.0)
    h = Heat.new(m, now=5.0).fed(m, 5.0, 8, scanned_bytes=800)
    raw = h.checkpoint(m, now=15.0, wall_now=1_000_000.0)  # one half-life after the feed
    rec = state_pb2.HeatRecord.FromString(raw)
    assert (rec.value, rec.scanned) == (pytest.approx(4.0), pytest.approx(400.0))
    assert rec.at.ToNanoseconds() == 1_000_000 * 10**9
    # Another process, with another monotonic clock, 20 s of wall time later: two more half-lives.
    back = Heat.restore(raw, m, now=77.0, wall_now=1_000_020.0)
    assert back.at == 77.0 and back.get(m, 77.0) == pytest.approx(1.0)
    assert back.scan_cost(1.0) == pytest.approx(100.0)  # the observed bytes per access survive too


def test_restore_never_grows_heat_when_the_readers_wall_clock_is_behind():
    m = HeatModel(half_life_s=10.0, prior=0.0)
    raw = Heat(6.0, 0.0, 0.0).checkpoint(m, now=0.0, wall_now=500.0)
    assert Heat.restore(raw, m, now=1.0, wall_now=490.0).get(m, 1.0) == 6.0
