"""The liveness state machine, driven by a hand-advanced clock (no sleeping)."""

from __future__ import annotations

import random

import pytest

from leibrix.domain._liveness import Liveness, WState


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def live(clock: Clock) -> Liveness:
    return Liveness(clock, interval=3.0, missed=2, dead_timeout=10.0)


def test_register_is_active_and_placeable(live: Liveness) -> None:
    t = live.register("w1")
    assert (t.old, t.new) == (None, WState.ACTIVE)
    assert live.state("w1") is WState.ACTIVE
    assert live.get("w1").placeable


def test_missed_heartbeats_then_dead(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 5.9
    assert live.advance() == []
    clock.t += 0.2  # 6.1 s > 2 x 3 s
    [t] = live.advance()
    assert (t.old, t.new) == (WState.ACTIVE, WState.SUSPECT)
    assert t.at == pytest.approx(1006.0)
    assert not live.get("w1").placeable
    clock.t = 1009.9
    assert live.advance() == []
    clock.t = 1010.0
    [t] = live.advance()
    assert (t.old, t.new, t.at) == (WState.SUSPECT, WState.DEAD, 1010.0)


def test_heartbeats_keep_active_and_cost_no_heap_growth(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    for _ in range(1000):
        clock.t += 3.0
        assert live.seen("w1") is None
        live.advance()
    assert live.state("w1") is WState.ACTIVE
    # one live entry per worker: lazily re-armed, never one per heartbeat
    assert len(live._heap) == 1


def test_late_heartbeat_revives_suspect(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 7
    [t] = live.advance()
    assert t.new is WState.SUSPECT
    t = live.seen("w1")
    assert (t.old, t.new) == (WState.SUSPECT, WState.ACTIVE)
    clock.t += 5
    assert live.advance() == []  # deadlines restarted from the heartbeat


def test_closed_stream_is_suspect_at_once_and_reconnect_restores(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 1
    t = live.disconnect("w1")
    assert (t.old, t.new) == (WState.ACTIVE, WState.SUSPECT)
    assert live.seen("w1") is None  # no contact possible without a stream
    clock.t += 8  # within the 10 s since last contact
    assert live.advance() == []
    t = live.register("w1")
    assert (t.old, t.new) == (WState.SUSPECT, WState.ACTIVE)
    clock.t += 5
    assert live.advance() == []


def test_closed_stream_dead_after_timeout_from_last_contact(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 2
    live.seen("w1")
    live.disconnect("w1")
    clock.t = 1011.9
    assert live.advance() == []
    clock.t = 1012.0
    [t] = live.advance()
    assert t.new is WState.DEAD and t.at == 1012.0


def test_dead_then_reregister_is_fresh(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 20
    assert [t.new for t in live.advance()] == [WState.SUSPECT, WState.DEAD]
    t = live.register("w1")
    assert (t.old, t.new) == (WState.DEAD, WState.ACTIVE)
    clock.t += 5
    assert live.advance() == []


def test_drain_overlay(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    t = live.set_drain("w1", WState.DRAINING)
    assert (t.old, t.new) == (WState.ACTIVE, WState.DRAINING)
    assert not live.get("w1").placeable
    live.disconnect("w1")
    live.register("w1")  # a reconnect does not cancel the drain
    assert live.state("w1") is WState.DRAINING
    live.set_drain("w1", WState.DRAINED)
    assert live.state("w1") is WState.DRAINED
    clock.t += 30
    assert [t.new for t in live.advance()] == [WState.DEAD]  # DEAD wins over drain
    with pytest.raises(ValueError, match="drain"):
        live.set_drain("w1", WState.ACTIVE)
    with pytest.raises(KeyError):
        live.set_drain("nope", WState.DRAINING)


def test_mark_dead_and_forget(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    t = live.mark_dead("w1")
    assert t.new is WState.DEAD
    assert live.mark_dead("w1") is None
    clock.t += 100
    assert live.advance() == []  # its heap entry went stale
    live.register("w2")
    live.forget("w2")
    assert live.state("w2") is None
    assert live.advance() == []


def test_per_worker_interval(live: Liveness, clock: Clock) -> None:
    live.register("fast", interval=1.0)
    live.register("slow", interval=4.0)
    clock.t += 2.5
    assert [(t.worker_id, t.new) for t in live.advance()] == [("fast", WState.SUSPECT)]
    clock.t += 6
    assert [(t.worker_id, t.new) for t in live.advance()] == [("slow", WState.SUSPECT)]
    # slow's dead deadline is 10 s from contact, but never before its suspect deadline
    clock.t = 1010.0
    assert {(t.worker_id, t.new) for t in live.advance()} == {
        ("fast", WState.DEAD),
        ("slow", WState.DEAD),
    }


def test_bad_parameters(clock: Clock) -> None:
    with pytest.raises(ValueError, match="interval"):
        Liveness(clock, interval=0)
    with pytest.raises(ValueError, match="missed"):
        Liveness(clock, missed=0)
    with pytest.raises(ValueError, match="dead_timeout"):
        Liveness(clock, interval=3, missed=2, dead_timeout=5)


def test_next_deadline_never_late(live: Liveness, clock: Clock) -> None:
    assert live.next_deadline() is None
    live.register("w1")
    assert live.next_deadline() == pytest.approx(1006.0)


def test_random_schedule_matches_reference_model(clock: Clock) -> None:
    """Random heartbeats/disconnects/reconnects over 200 workers vs. a brute-force model."""
    rng = random.Random(7)
    live = Liveness(clock, interval=1.0, missed=2, dead_timeout=5.0)
    model: dict[str, dict] = {}  # wid -> {last, connected, dead, suspect}

    def model_state(m: dict, now: float) -> WState:
        if m["dead"] or now - m["last"] >= 5.0:
            return WState.DEAD
        if not m["connected"] or now - m["last"] >= 2.0:
            return WState.SUSPECT
        return WState.ACTIVE

    ids = [f"w{i}" for i in range(200)]
    for step in range(400):
        clock.t += rng.choice([0.25, 0.5, 0.75, 1.5])  # exact in binary: no rounding at deadlines
        now = clock.t
        live.advance()
        for wid, m in model.items():  # the model's transitions are sticky like the machine's
            s = model_state(m, now)
            m["dead"] |= s is WState.DEAD
            m["suspect"] = s is WState.SUSPECT
        for wid in rng.sample(ids, 20):
            m = model.get(wid)
            action = rng.random()
            if m is None or m["dead"] or (not m["connected"] and action < 0.5):
                live.register(wid)
                model[wid] = {"last": now, "connected": True, "dead": False, "suspect": False}
            elif action < 0.8 and m["connected"]:
                live.seen(wid)
                m["last"] = now
            elif m["connected"]:
                live.disconnect(wid)
                m["connected"] = False
        for wid, m in model.items():
            expect = WState.DEAD if m["dead"] else model_state(m, now)
            assert live.state(wid) is expect, (step, wid)
    assert len(live._heap) <= 3 * len(model)
