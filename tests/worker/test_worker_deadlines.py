"""The worker's query deadlines: one thread calls each action at its time, unless disarmed first."""

from __future__ import annotations

import threading
import time

import pytest

from leibrix.worker._deadlines import Deadlines


def _threads() -> int:
    return sum(t.name == "leibrix-deadlines" for t in threading.enumerate())


def test_actions_run_at_their_deadlines_in_order_and_disarmed_ones_never() -> None:
    before = _threads()
    deadlines = Deadlines()
    fired: list[tuple[str, float]] = []
    done = threading.Event()
    began = time.monotonic()

    def action(name: str):
        def run() -> None:
            fired.append((name, time.monotonic() - began))
            if name == "last":
                done.set()
        return run

    try:
        deadlines.arm(0.4, action("last"))
        gone = deadlines.arm(0.1, action("disarmed"))
        # armed after a later one, due first: the waiting thread is woken for it
        deadlines.arm(0.2, action("second"))
        deadlines.arm(0.05, action("first"))
        deadlines.disarm(gone)
        assert deadlines.armed == 3 and _threads() == before + 1  # one thread for every deadline
        assert done.wait(5)
        assert [name for name, _ in fired] == ["first", "second", "last"]
        assert [at >= due for (_, at), due in zip(fired, (0.05, 0.2, 0.4))] == [True] * 3
        assert deadlines.armed == 0
    finally:
        deadlines.close()
    assert _threads() == before
    with pytest.raises(RuntimeError, match="closed"):
        deadlines.arm(1, action("late"))


def test_a_failing_action_does_not_stop_the_thread_and_disarmed_entries_do_not_pile_up() -> None:
    deadlines = Deadlines()
    done = threading.Event()

    def fail() -> None:
        raise ValueError("boom")

    try:
        deadlines.arm(0.01, fail)
        deadlines.arm(0.05, done.set)
        assert done.wait(5)
        for _ in range(10_000):  # queries that end long before their timeout
            deadlines.disarm(deadlines.arm(300, fail))
        assert deadlines.armed == 0 and len(deadlines._heap) <= 64
    finally:
        deadlines.close()
