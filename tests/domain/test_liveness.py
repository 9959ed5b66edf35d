"""The liveness state machine, driven by a hand-advanced clock (no sleeping)."""

from __future__ import annotations

import random

import pytest

from leibrix.domain._liveness import CADENCE_WINDOW, Liveness, WState


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
    clock.t += 3.0
    live.seen("w1", beat=True)  # a 3 s cadence: judged by the acked 3 s from now on
    clock.t += 5.9
    assert live.advance() == []
    clock.t += 0.2  # 6.1 s > 2 x 3 s
    [t] = live.advance()
    assert (t.old, t.new) == (WState.ACTIVE, WState.SUSPECT)
    assert t.at == pytest.approx(1009.0)
    assert not live.get("w1").placeable
    clock.t = 1012.9
    assert live.advance() == []
    clock.t = 1013.0  # max(dead_timeout, 3 x 3 s) after the last beat
    [t] = live.advance()
    assert (t.old, t.new, t.at) == (WState.SUSPECT, WState.DEAD, 1013.0)


def test_heartbeats_keep_active_and_cost_no_heap_growth(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    for _ in range(1000):
        clock.t += 3.0
        assert live.seen("w1", beat=True) is None
        live.advance()
    assert live.state("w1") is WState.ACTIVE
    # one live entry per worker: lazily re-armed, never one per heartbeat
    assert len(live._heap) == 1


def test_late_heartbeat_revives_suspect(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 3
    live.seen("w1", beat=True)
    clock.t += 7
    [t] = live.advance()
    assert t.new is WState.SUSPECT
    t = live.seen("w1", beat=True)
    assert (t.old, t.new) == (WState.SUSPECT, WState.ACTIVE)
    clock.t += 5
    assert live.advance() == []  # deadlines restarted from the heartbeat


def test_a_slow_worker_that_ignores_the_ack_stays_active_on_its_own_cadence(live: Liveness, clock: Clock) -> None:
    """Acked 3 s, but it beats every 10 s, the first 10 s after registering (the Rust worker)."""
    live.register("rust")
    for _ in range(50):
        for _ in range(40):  # the sweeper runs often; nothing is due
            clock.t += 0.25
            assert live.advance() == []
        live.seen("rust", beat=True)
    assert live.state("rust") is WState.ACTIVE
    assert live.interval_of(live.get("rust")) == 10.0
    last = clock.t
    clock.t = last + 19.75
    assert live.advance() == []
    clock.t = last + 20.0  # missed (2) of its own intervals
    assert [(t.new, t.at) for t in live.advance()] == [(WState.SUSPECT, last + 20.0)]
    clock.t = last + 29.75
    assert live.advance() == []
    clock.t = last + 30.0  # (missed + 1) of its intervals, more than dead_timeout
    assert [(t.new, t.at) for t in live.advance()] == [(WState.DEAD, last + 30.0)]


def test_before_its_first_beat_a_worker_is_presumed_as_slow_as_dead_timeout(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    assert live.next_deadline() == pytest.approx(1020.0)  # 2 x dead_timeout
    clock.t = 1019.75
    assert live.advance() == []
    clock.t = 1020.0
    assert [t.new for t in live.advance()] == [WState.SUSPECT]
    clock.t = 1030.0
    assert [t.new for t in live.advance()] == [WState.DEAD]


def test_old_gaps_leave_the_window_and_the_deadline_comes_back_in(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 8.0
    live.seen("w1", beat=True)  # one slow gap: interval 8 s, next SUSPECT 16 s later
    for _ in range(CADENCE_WINDOW):
        clock.t += 3.0
        live.seen("w1", beat=True)
    assert live.get("w1").cadence == 3.0
    last = clock.t
    clock.t = last + 6.0  # 2 x 3 s: its heap entry was moved in when the 8 s gap left the window
    assert [(t.new, t.at) for t in live.advance()] == [(WState.SUSPECT, last + 6.0)]


def test_other_messages_are_contact_but_not_cadence(live: Liveness, clock: Clock) -> None:
    live.register("w1")
    clock.t += 3.0
    live.seen("w1", beat=True)
    for _ in range(10):
        clock.t += 0.5
        live.seen("w1")  # status reports
    assert live.get("w1").cadence == 3.0 and live.get("w1").last_seen == clock.t


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
    clock.t += 30
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


def test_the_acked_interval_is_a_floor(live: Liveness, clock: Clock) -> None:
    live.register("fast", interval=1.0)
    live.register("slow", interval=4.0)
    clock.t += 0.5
    live.seen("fast", beat=True)  # beating faster than asked changes nothing
    live.seen("slow", beat=True)
    clock.t += 2.0
    assert [(t.worker_id, t.new) for t in live.advance()] == [("fast", WState.SUSPECT)]
    clock.t += 6
    assert [(t.worker_id, t.new) for t in live.advance()] == [("slow", WState.SUSPECT)]
    clock.t = 1010.5  # fast: dead_timeout after contact
    assert [(t.worker_id, t.new) for t in live.advance()] == [("fast", WState.DEAD)]
    clock.t = 1015.5  # slow: (missed + 1) x 4 s > dead_timeout
    assert [(t.worker_id, t.new) for t in live.advance()] == [("slow", WState.DEAD)]


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
    clock.t += 1.0
    live.seen("w1", beat=True)
    # a 1 s gap: judged by the acked 3 s, and the presumed 20 s entry was replaced
    assert live.next_deadline() == live.suspect_at(live.get("w1")) == pytest.approx(1007.0)


def test_random_schedule_matches_reference_model(clock: Clock) -> None:
    """Random heartbeats/messages/disconnects/reconnects over 200 workers vs. a brute-force model of the rule."""
    rng = random.Random(7)
    live = Liveness(clock, interval=1.0, missed=2, dead_timeout=5.0)
    model: dict[str, dict] = {}  # wid -> {last, beat, gaps, connected, dead}

    def interval(m: dict) -> float:
        if m["gaps"]:
            return max(1.0, max(m["gaps"][-CADENCE_WINDOW:]))
        return 5.0 if m["connected"] else 1.0

    def model_state(m: dict, now: float) -> WState:
        if m["dead"] or now - m["last"] >= max(5.0, 3 * interval(m)):
            return WState.DEAD
        if not m["connected"] or now - m["last"] >= 2 * interval(m):
            return WState.SUSPECT
        return WState.ACTIVE

    ids = [f"w{i}" for i in range(200)]
    for step in range(400):
        clock.t += rng.choice([0.25, 0.5, 0.75, 1.5, 2.5])  # exact in binary: no rounding at deadlines
        now = clock.t
        live.advance()
        for m in model.values():  # DEAD is sticky in the machine
            m["dead"] |= model_state(m, now) is WState.DEAD
        for wid in rng.sample(ids, 20):
            m = model.get(wid)
            action = rng.random()
            if m is None or m["dead"] or (not m["connected"] and action < 0.5):
                live.register(wid)
                gaps = m["gaps"] if m is not None and not m["dead"] else []
                model[wid] = {"last": now, "beat": now, "gaps": gaps, "connected": True, "dead": False}
            elif action < 0.6 and m["connected"]:
                live.seen(wid, beat=True)
                m["gaps"].append(now - m["beat"])
                m["last"] = m["beat"] = now
            elif action < 0.8 and m["connected"]:
                live.seen(wid)
                m["last"] = now
            elif m["connected"]:
                live.disconnect(wid)
                m["connected"] = False
        live.advance()  # a disconnect can bring a deadline that has passed already
        for wid, m in model.items():
            assert live.state(wid) is model_state(m, now), (step, wid)
    assert len(live._heap) <= 3 * len(model)
