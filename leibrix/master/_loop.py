"""Loop stalls: how long the master's Trio loop went without running anything else, and what ran.

Everything a master does (lease keep-alive, worker heartbeats, RPCs) shares one
Trio loop, so one slow synchronous step delays all of them; a stall longer
than the lease TTL costs the leader its term. :class:`LoopWatch` measures it
from the inside: a task sleeps :data:`INTERVAL` again and again and records how
late each wake-up is (``leibrix_loop_lag_seconds``; the longest lateness of
the last :data:`WINDOW` seconds is ``leibrix_loop_stall_max_seconds``). As a
Trio instrument it also times every task step, so a wake-up later than
:data:`THRESHOLD` is logged (WARNING) with the name of the longest task step
since the previous wake-up — usually the culprit.
"""

from __future__ import annotations

import collections
import logging
import time

import trio

from leibrix.api._http import Metrics

__all__ = ["INTERVAL", "LoopWatch", "THRESHOLD", "WINDOW"]

log = logging.getLogger(__name__)

#: Seconds between wake-ups of the measuring task.
INTERVAL = 0.01
#: A wake-up this late (seconds) is logged.
THRESHOLD = 0.1
#: Seconds over which ``leibrix_loop_stall_max_seconds`` is the maximum.
WINDOW = 60.0


class LoopWatch(trio.abc.Instrument):
    """Measures loop lateness into ``metrics``; run :meth:`run` as a task of the master."""

    def __init__(self, metrics: Metrics, *, interval: float = INTERVAL, threshold: float = THRESHOLD,
                 window: float = WINDOW) -> None:
        self.metrics = metrics
        self.interval = interval
        self.threshold = threshold
        self.window = window
        self._step_start = 0.0
        self._longest = (0.0, "")
        # (time, lateness) with lateness decreasing from the left: the window's maximum is the first.
        self._recent: collections.deque[tuple[float, float]] = collections.deque()

    # -- trio.abc.Instrument
    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._step_start = time.perf_counter()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        took = time.perf_counter() - self._step_start
        if took > self._longest[0]:
            self._longest = (took, task.name)

    # -- the measuring task
    @property
    def max_stall(self) -> float:
        """The longest lateness (seconds) in the current window."""
        return self._recent[0][1] if self._recent else 0.0

    def _record(self, now: float, late: float) -> None:
        self.metrics.loop_lag.observe(late)
        recent = self._recent
        while recent and recent[-1][1] <= late:
            recent.pop()
        recent.append((now, late))
        while recent[0][0] < now - self.window:
            recent.popleft()
        self.metrics.loop_stall_max.set(self.max_stall)
        if late > self.threshold:
            took, name = self._longest
            log.warning("event loop stalled %.3f s; longest task step meanwhile: %s (%.3f s)", late, name, took)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Measure until cancelled (the instrument is installed only meanwhile)."""
        trio.lowlevel.add_instrument(self)
        try:
            task_status.started()
            while True:
                due = time.perf_counter() + self.interval
                self._longest = (0.0, "")
                await trio.sleep(self.interval)
                now = time.perf_counter()
                self._record(now, max(0.0, now - due))
        finally:
            trio.lowlevel.remove_instrument(self)
