"""The epoch transition table, history records and retry policy (leibrix.domain._lifecycle)."""

from __future__ import annotations

import itertools

import pytest

from leibrix.domain import _lifecycle as lc
from leibrix.domain._lifecycle import State
from leibrix.wire._proto import leibrix_cp as cp


def test_every_stored_state_has_a_row_in_the_transition_table():
    assert set(lc.TRANSITIONS) == {s for s in cp.EpochState if s is not cp.EpochState.UNKNOWN}
    with pytest.raises(lc.IllegalTransition):
        lc.check(State.UNKNOWN, State.READY)  # no stored epoch is ever UNKNOWN


def test_the_happy_path_is_legal_and_recorded():
    path = [State.PENDING, State.LOADING, State.VALIDATING, State.READY, State.RETIRING, State.RETIRED]
    history: tuple = ()
    for i, (a, b) in enumerate(zip(path, path[1:])):
        history = lc.transition(a, b, history, at_ms=1000 + i, reason=f"step {i}")
    assert [(t.from_state, t.to_state) for t in history] == list(zip(path, path[1:]))
    assert history[-1].at_ms == 1004 and history[-1].reason == "step 4"


@pytest.mark.parametrize(
    "a,b",
    [
        (State.PENDING, State.READY),  # would route a partial load
        (State.PENDING, State.VALIDATING),
        (State.LOADING, State.READY),
        (State.READY, State.LOADING),
        (State.RETIRED, State.PENDING),
        (State.RETIRING, State.READY),
        (State.FAILED, State.READY),
    ],
)
def test_illegal_moves_are_rejected_with_failed_precondition(a, b):
    with pytest.raises(lc.IllegalTransition) as info:
        lc.transition(a, b, (), 0, "x", what="acme/orders/1_abcdef")
    assert info.value.status.name == "FAILED_PRECONDITION"
    assert f"{a.name} -> {b.name}" in info.value.message and "acme/orders/1_abcdef" in info.value.message


def test_only_ready_is_reachable_through_validating():
    # Every path into READY passes VALIDATING: partial loads never serve.
    for a, b in itertools.product(lc.TRANSITIONS, lc.TRANSITIONS):
        if b is State.READY and b in lc.TRANSITIONS[a]:
            assert a is State.VALIDATING


def test_retired_is_terminal_and_everything_can_end():
    assert lc.TRANSITIONS[State.RETIRED] == frozenset()
    reachable = {State.PENDING}
    frontier = [State.PENDING]
    while frontier:
        for nxt in lc.TRANSITIONS[frontier.pop()]:
            if nxt not in reachable:
                reachable.add(nxt)
                frontier.append(nxt)
    assert reachable == set(lc.TRANSITIONS)


def test_history_is_bounded_to_the_newest_entries():
    h: tuple = ()
    state = State.PENDING
    for i in range(50):
        nxt = State.LOADING if state is State.PENDING else State.PENDING
        h = lc.transition(state, nxt, h, i, "flap")
        state = nxt
    assert len(h) == lc.HISTORY_LIMIT and h[-1].at_ms == 49 and h[0].at_ms == 50 - lc.HISTORY_LIMIT


def test_retry_policy_backoff_and_bound():
    p = lc.RetryPolicy(max_attempts=3, base_s=0.5, cap_s=1.5)
    assert [p.backoff_s(n) for n in range(5)] == [0.0, 0.5, 1.0, 1.5, 1.5]
    assert [p.after_failure(n) for n in (1, 2, 3, 4)] == [State.PENDING, State.PENDING, State.FAILED, State.FAILED]
