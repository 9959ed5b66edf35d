"""The worker liveness state machine: who is ACTIVE, SUSPECT, DEAD, DRAINING or DRAINED.

A worker is *placeable* only while it is ACTIVE. Each worker is judged by its
own heartbeat cadence, because workers do not all beat at the interval the
master asks for: the Rust leibrix-worker beats every 10 s (its first beat 10 s
after registering) whatever the registration ack says.

**The rule.** For each worker the machine keeps ``acked``, the interval the
master sent it, and the last :data:`CADENCE_WINDOW` gaps between its
heartbeats (the registration counts as the start of the first gap). Its
*interval* is

* ``max(acked, largest recent gap)`` once it has heartbeated;
* before its first heartbeat, while its stream is open, ``max(acked,
  dead_timeout)``: its cadence is unknown, so it is presumed to be as slow as
  the longest silence the master tolerates from any worker (the Rust worker's
  10 s at the defaults), which keeps a slow worker's first beat from racing
  its deadlines;
* ``acked`` before its first heartbeat once its stream has closed (there is
  no beat to wait for, only a reconnect).

Then, measured from the last contact (a heartbeat or any other message):

* **SUSPECT** after ``missed × interval`` without contact, or at once when its
  stream closes. A SUSPECT worker keeps its replicas (a network blip must not
  move data) but gets no new placements.
* **DEAD** after ``max(dead_timeout, (missed + 1) × interval)`` without
  contact. Its replicas are re-placed elsewhere.

Using the *largest* recent gap means one late beat widens the deadlines for
the next few beats rather than one early beat narrowing them; only heartbeats
are sampled (a burst of status reports says nothing about the cadence).

Contact on the stream or a reconnect while SUSPECT returns a worker to ACTIVE
with nothing moved. A DEAD worker that comes back is a new member: its
inventory is reconciled by the coordinator, its cadence learnt again.

Drain is an administrative overlay on top of connectivity: DRAINING/DRAINED
workers get no new placements whatever their connectivity, and DEAD wins over
both (a dead worker's replicas must be re-placed even mid-drain).

Why a heap and not a scan: with 5,000 workers at 5 s heartbeats the master sees
1,000 heartbeats a second. A heartbeat here is a dict lookup and a short
deque append (O(1)); deadlines live in a min-heap holding exactly one live
entry per worker, re-checked lazily when it comes due. A worker that keeps
heartbeating costs one heap pop/push per suspect interval, not per heartbeat,
and :meth:`Liveness.advance` touches only entries that are due. An entry may
come due early (it is then pushed back), never late: when a worker's interval
shrinks its entry is replaced.

The clock is injected (any monotonic ``() -> float``) so the machine is pure and
unit-testable without sleeping; the hub passes :func:`trio.current_time`.
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

__all__ = ["CADENCE_WINDOW", "Liveness", "Transition", "WorkerLiveness", "WState"]

#: Heartbeat gaps remembered per worker; its cadence is the largest of them.
CADENCE_WINDOW = 4


class WState(enum.IntEnum):
    """Worker states; values equal the wire enum ``leibrix_cp.WorkerState``."""

    ACTIVE = 1
    SUSPECT = 2
    DEAD = 3
    DRAINING = 4
    DRAINED = 5


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change reported by :meth:`Liveness.advance` (and the mutators)."""

    worker_id: str
    old: WState | None
    new: WState
    at: float


@dataclass(slots=True)
class WorkerLiveness:
    """Liveness facts of one worker. Read-only for callers: mutate through :class:`Liveness`."""

    worker_id: str
    #: the heartbeat interval the master asked of this worker
    acked: float
    last_seen: float
    #: time of its last heartbeat (or of its registration, before the first one)
    last_beat: float = 0.0
    #: its last CADENCE_WINDOW gaps between heartbeats, in seconds
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=CADENCE_WINDOW))
    connected: bool = True
    dead: bool = False
    suspect: bool = False
    drain: WState | None = None  # None, DRAINING or DRAINED
    token: int = 0  # generation of this worker's one live heap entry

    @property
    def cadence(self) -> float | None:
        """The largest recent gap between its heartbeats, or None before its first heartbeat."""
        return max(self.gaps) if self.gaps else None

    @property
    def state(self) -> WState:
        """The externally visible state: DEAD > DRAINED/DRAINING > SUSPECT > ACTIVE."""
        if self.dead:
            return WState.DEAD
        if self.drain is not None:
            return self.drain
        return WState.SUSPECT if self.suspect else WState.ACTIVE

    @property
    def placeable(self) -> bool:
        """True only for ACTIVE workers: the one state that accepts new placements."""
        return not (self.dead or self.suspect or self.drain is not None)


class Liveness:
    """Heartbeat deadlines of every worker, driven by an injectable monotonic clock.

    Parameters
    ----------
    clock:
        Monotonic time source in seconds.
    interval:
        Heartbeat interval (seconds) the master asks of workers that are not
        registered with another one.
    missed:
        Heartbeat intervals without contact before a connected worker is SUSPECT.
    dead_timeout:
        Least silence (seconds) before a worker is DEAD; a slower worker gets
        ``(missed + 1)`` of its intervals. Must be at least ``missed * interval``
        so SUSPECT always precedes DEAD.
    """

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        interval: float = 3.0,
        missed: int = 2,
        dead_timeout: float = 10.0,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0, got {interval!r}")
        if missed < 1:
            raise ValueError(f"missed must be >= 1, got {missed!r}")
        if not dead_timeout >= missed * interval:
            raise ValueError(
                f"dead_timeout ({dead_timeout}) must be >= missed*interval ({missed * interval})"
            )
        self._clock = clock
        self.interval = interval
        self.missed = missed
        self.dead_timeout = dead_timeout
        self._workers: dict[str, WorkerLiveness] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        # Globally unique entry generations: an entry is live only while its
        # token equals its worker's, so re-arming or forgetting needs no heap delete.
        self._tokens = itertools.count(1)

    # ---- queries -------------------------------------------------------

    def __len__(self) -> int:
        return len(self._workers)

    def __iter__(self) -> Iterator[WorkerLiveness]:
        return iter(self._workers.values())

    def get(self, worker_id: str) -> WorkerLiveness | None:
        """The worker's liveness record, or None if unknown (never registered or forgotten)."""
        return self._workers.get(worker_id)

    def state(self, worker_id: str) -> WState | None:
        """The worker's current state, or None if unknown."""
        w = self._workers.get(worker_id)
        return None if w is None else w.state

    def interval_of(self, w: WorkerLiveness) -> float:
        """The heartbeat interval ``w`` is judged by (see the module doc for the rule)."""
        if w.gaps:
            return max(w.acked, max(w.gaps))
        return max(w.acked, self.dead_timeout) if w.connected else w.acked

    def suspect_at(self, w: WorkerLiveness) -> float:
        """When a connected ``w`` becomes SUSPECT unless it is heard from."""
        return w.last_seen + self.missed * self.interval_of(w)

    def dead_at(self, w: WorkerLiveness) -> float:
        """When ``w`` becomes DEAD unless it is heard from."""
        return w.last_seen + max(self.dead_timeout, (self.missed + 1) * self.interval_of(w))

    def next_deadline(self) -> float | None:
        """The earliest time :meth:`advance` may have work to do (None: nothing pending).

        It can be earlier than the real next transition (entries are re-checked
        lazily), never later, so a sweeper that sleeps until it misses nothing.
        """
        return self._heap[0][0] if self._heap else None

    # ---- mutators ------------------------------------------------------

    def register(self, worker_id: str, *, interval: float | None = None) -> Transition:
        """A worker (re)registered on a new stream, asked to beat every ``interval``: ACTIVE now.

        A SUSPECT worker returns to ACTIVE with its replicas untouched and its
        learnt cadence kept; a DEAD or unknown one becomes a fresh ACTIVE member
        whose cadence is learnt from its heartbeats. A drain in progress
        survives a reconnect (the operator asked for it, not the network).
        """
        now = self._clock()
        w = self._workers.get(worker_id)
        old = None if w is None else w.state
        if w is None or w.dead:
            drain = None
            w = WorkerLiveness(worker_id, interval or self.interval, now)
            self._workers[worker_id] = w
        else:
            drain = w.drain
            w.acked = interval or w.acked
            w.last_seen = now
            w.connected = True
            w.suspect = False
        w.last_beat = now
        w.drain = drain
        self._arm(w)
        return self._changed(w, old, now)

    def seen(self, worker_id: str, *, beat: bool = False) -> Transition | None:
        """Contact from a connected worker (``beat``: a heartbeat): O(1) on the hot path.

        A heartbeat also adds the gap since the previous one to the worker's
        cadence. Returns the SUSPECT → ACTIVE transition when contact revives a
        worker whose stream stayed open, else None.
        """
        w = self._workers.get(worker_id)
        if w is None or w.dead or not w.connected:
            return None
        now = w.last_seen = self._clock()
        if beat:
            before = self.interval_of(w)
            w.gaps.append(now - w.last_beat)
            w.last_beat = now
            if not w.suspect and self.interval_of(w) < before:
                self._arm(w)  # its entry would come due too late
        if w.suspect:
            old = w.state
            w.suspect = False
            self._arm(w)
            return self._changed(w, old, now)
        return None

    def disconnect(self, worker_id: str) -> Transition | None:
        """The worker's stream closed: SUSPECT at once, DEAD by :meth:`dead_at` from last contact."""
        w = self._workers.get(worker_id)
        if w is None or w.dead or not w.connected:
            return None
        now = self._clock()
        old = w.state
        w.connected = False
        w.suspect = True
        self._arm(w)
        return self._changed(w, old, now) if w.state != old else None

    def set_drain(self, worker_id: str, drain: WState | None) -> Transition | None:
        """Set the administrative overlay: DRAINING, DRAINED, or None to cancel a drain."""
        if drain not in (None, WState.DRAINING, WState.DRAINED):
            raise ValueError(f"drain must be None, DRAINING or DRAINED, got {drain!r}")
        w = self._workers.get(worker_id)
        if w is None:
            raise KeyError(worker_id)
        old = w.state
        w.drain = drain
        return self._changed(w, old, self._clock()) if w.state != old else None

    def mark_dead(self, worker_id: str) -> Transition | None:
        """Declare a worker DEAD now (for example a new leader's unknown survivors after a grace)."""
        w = self._workers.get(worker_id)
        if w is None or w.dead:
            return None
        old = w.state
        w.dead, w.connected = True, False
        w.token = next(self._tokens)  # its heap entry is now stale
        return self._changed(w, old, self._clock())

    def forget(self, worker_id: str) -> None:
        """Drop a worker entirely (its stale heap entry is skipped when it comes due)."""
        self._workers.pop(worker_id, None)

    def advance(self) -> list[Transition]:
        """Apply every deadline due by now; returns the transitions in time order.

        Cost: O(k log n) for the k entries due, independent of how many
        heartbeats arrived since the last call.
        """
        now = self._clock()
        out: list[Transition] = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, wid, token = heapq.heappop(heap)
            w = self._workers.get(wid)
            if w is None or w.token != token or w.dead:
                continue  # stale entry
            if not w.suspect:
                due = self.suspect_at(w)
                if due > now:
                    self._push(w, due)
                    continue
                old = w.state
                w.suspect = True
                if w.state != old:  # a drained worker going quiet is not news
                    out.append(self._changed(w, old, due))
            due = self.dead_at(w)
            if due > now:
                self._push(w, due)
                continue
            old = w.state
            w.dead, w.connected = True, False
            out.append(self._changed(w, old, due))
        return out

    # ---- internals -----------------------------------------------------

    def _arm(self, w: WorkerLiveness) -> None:
        """Give ``w`` one fresh heap entry at its next possible deadline."""
        w.token = next(self._tokens)
        self._push(w, self.dead_at(w) if w.suspect else self.suspect_at(w))

    def _push(self, w: WorkerLiveness, due: float) -> None:
        heapq.heappush(self._heap, (due, next(self._seq), w.worker_id, w.token))

    @staticmethod
    def _changed(w: WorkerLiveness, old: WState | None, at: float) -> Transition:
        return Transition(w.worker_id, old, w.state, at)
