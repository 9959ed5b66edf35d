"""The epoch lifecycle: the ONE transition table, retry backoff, and transition records.

Every state change of an epoch goes through ``transition``, so
an illegal move (say ``PENDING → READY``, which would route a partial load) is
rejected in exactly one place, and every accepted move leaves a timestamped,
reasoned ``Transition`` in the epoch's history::

    PENDING ──► LOADING ──► VALIDATING ──► READY ──► RETIRING ──► RETIRED
       ▲           │            │            │          ▲
       └───────────┴────────────┴────────────┘          │ (drop/retire from any live state)
     (retry after backoff, lost replicas, evicted by benefit)
    LOADING / VALIDATING ──► FAILED  (bounded retries exhausted; partial loads are evicted at once)

Why each back-edge exists:

* ``LOADING/VALIDATING → PENDING``: a load failed or did not validate and the
  epoch still has retries, or its workers died, or it was evicted by a
  higher-benefit epoch; it waits (with backoff) for capacity again.
* ``READY → PENDING``: every replica was lost or evicted by benefit; it is no
  longer routable (routes are derived from READY only) and queues again.
* ``READY → LOADING``: not allowed. A READY epoch that lost *some* replicas
  stays READY (the survivors serve) while replacements load; the replica set,
  not the state, records that.
* ``FAILED → PENDING``: an operator re-admission retries from scratch.
* any live state ``→ RETIRING``: retire/drop/retention/refresh-swap. Routes are
  withdrawn first because only READY is routed; evictions follow.
* ``PENDING/FAILED → RETIRED``: nothing is loaded anywhere, nothing to evict.
"""

from __future__ import annotations

from dataclasses import dataclass

from leibrix.domain._errors import FailedPrecondition
from leibrix.wire._proto import leibrix_cp as cp


#: Epoch states: the wire enum itself (``UNKNOWN`` never appears in stored state).
State = cp.EpochState


P, L, V, R, RG, RD, F = (State.PENDING, State.LOADING, State.VALIDATING, State.READY,
                         State.RETIRING, State.RETIRED, State.FAILED)

#: from-state -> the states it may move to. The only transition table in the code base.
TRANSITIONS: dict[State, frozenset[State]] = {
    P: frozenset({L, RG, RD}),
    L: frozenset({V, P, F, RG}),
    V: frozenset({R, P, F, RG}),
    R: frozenset({P, RG}),
    RG: frozenset({RD}),
    RD: frozenset(),
    F: frozenset({P, RD}),
}

#: States whose replicas count against the tenant's hard budgets (resident + loading).
CHARGED = frozenset({L, V, R, RG})


class IllegalTransition(FailedPrecondition):
    """A move that the transition table forbids (a bug, or a request racing a state change)."""


@dataclass(frozen=True, slots=True)
class Transition:
    """One history entry: ``from → to`` at ``at_ms`` (UTC ms) because of ``reason``."""

    from_state: State
    to_state: State
    at_ms: int
    reason: str


#: Transitions kept per epoch: the newest ones; older ones are dropped to bound memory.
HISTORY_LIMIT = 16


def check(from_state: State, to_state: State, what: str = "epoch") -> None:
    """Raise ``IllegalTransition`` unless ``from_state → to_state`` is in ``TRANSITIONS``."""
    if to_state not in TRANSITIONS.get(from_state, ()):
        raise IllegalTransition(f"{what}: illegal transition {from_state.name} -> {to_state.name}")


def transition(
    from_state: State, to_state: State, history: tuple[Transition, ...], at_ms: int, reason: str, what: str = "epoch"
) -> tuple[Transition, ...]:
    """Check the move and return the new history (bounded to ``HISTORY_LIMIT`` entries)."""
    check(from_state, to_state, what)
    entry = Transition(from_state, to_state, at_ms, reason)
    return (*history[-(HISTORY_LIMIT - 1):], entry)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with exponential backoff: attempt ``n`` waits ``base × 2^(n-1)``, capped.

    After ``max_attempts`` failed loads the epoch is FAILED instead of PENDING:
    a source that cannot be read must not keep a worker busy forever.
    """

    max_attempts: int = 3
    base_s: float = 1.0
    cap_s: float = 30.0

    def backoff_s(self, attempts: int) -> float:
        """Seconds to wait before the next attempt after ``attempts`` failures (0 before the first)."""
        if attempts <= 0:
            return 0.0
        return min(self.cap_s, self.base_s * 2 ** (attempts - 1))

    def after_failure(self, attempts: int) -> State:
        """Where an epoch goes after its ``attempts``-th failed load: PENDING (retry) or FAILED."""
        return F if attempts >= self.max_attempts else P
