"""LoopWatch: a blocking step shows as lateness in the metrics and is logged with the task that ran it."""

from __future__ import annotations

import logging
import time

import pytest
import trio

from leibrix.api._http import Metrics
from leibrix.master._loop import LoopWatch


async def test_a_blocking_step_is_measured_and_named(nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    metrics = Metrics()
    watch = LoopWatch(metrics, threshold=0.1)
    await nursery.start(watch.run)
    await trio.sleep(0.05)
    assert watch.max_stall < 0.1  # an idle loop is on time

    async def hog() -> None:
        time.sleep(0.25)  # a synchronous step: nothing else runs meanwhile

    with caplog.at_level(logging.WARNING, logger="leibrix.master._loop"):
        nursery.start_soon(hog, name="hog")
        await trio.sleep(0.1)  # ends in the same batch as the watch's late wake-up: let the watch record it
        await trio.sleep(0.05)
    assert 0.2 <= watch.max_stall < 1.0
    assert metrics.registry.get_sample_value("leibrix_loop_stall_max_seconds") == watch.max_stall
    on_time = metrics.registry.get_sample_value("leibrix_loop_lag_seconds_bucket", {"le": "0.1"})
    assert 1 <= on_time == metrics.registry.get_sample_value("leibrix_loop_lag_seconds_count") - 1
    stalls = [r.getMessage() for r in caplog.records if "stalled" in r.getMessage()]
    assert len(stalls) == 1 and "longest task step meanwhile: hog (0.2" in stalls[0]


async def test_the_maximum_covers_only_the_window(nursery: trio.Nursery) -> None:
    watch = LoopWatch(Metrics(), window=0.3)
    await nursery.start(watch.run)
    time.sleep(0.15)
    await trio.sleep(0.05)
    assert watch.max_stall >= 0.1
    await trio.sleep(0.5)
    assert watch.max_stall < 0.1
