"""Draining a worker: empty it without ever dropping below the replicas an epoch has.

A drain runs in the leader's term (it dies with the term; the DRAINING state
is persisted, so the next leader keeps the worker out of placements):

1. the worker becomes DRAINING (persisted): no new placements;
2. each replica it holds is moved **make-before-break** — loaded elsewhere and
   READY before it is evicted here — at most ``max_parallel`` at a time;
3. at the deadline, replicas still here are moved **break-before-make**
   (evicted first, then re-placed): the operator chose to lose redundancy
   briefly rather than wait, and the result says so;
4. once empty the worker gets ``drain_command`` (it may exit) and becomes DRAINED.

Progress is observable while it runs (:class:`Drain` counters, and the
worker's state and replica count through ``GetWorker``).

Everything it needs of the workers goes through the ``WorkerDirectory``
protocol (``serving``, ``leader_hint``, ``state``, ``coordinator``,
``set_drain``, ``command``). The term's coordinator keeps the term's drains
and runs them in its nursery (:class:`DrainHost`, which
:class:`~leibrix.control._coordinator.Coordinator` is), so they end with the term.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import trio

from leibrix.domain._errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from leibrix.domain._liveness import WState
from leibrix.state._model import EpochKey
from leibrix.store._etcd import EtcdError
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.workers._protocols import WorkerDirectory

__all__ = ["DEFAULT_DEADLINE_S", "DEFAULT_MAX_PARALLEL", "Drain", "DrainHost", "cancel_drain", "start_drain"]

log = logging.getLogger(__name__)

DEFAULT_DEADLINE_S = 600.0
DEFAULT_MAX_PARALLEL = 2


@dataclass(eq=False)
class Drain:
    """One drain in progress (or finished): its parameters, counters and completion event."""

    worker_id: str
    deadline_s: float
    max_parallel: int
    moved_make_before_break: int = 0
    moved_break_before_make: int = 0
    failed: int = 0
    deadline_exceeded: bool = False
    remaining: int = 0
    message: str = ""
    #: Cancelled by :func:`cancel_drain`: the drain stops where it is.
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    done: trio.Event = field(default_factory=trio.Event)


@runtime_checkable
class DrainHost(Protocol):
    """What a drain needs of the term's epoch coordinator besides the ``EpochCoordinator`` seam."""

    #: the term's drains by worker id, running or finished
    drains: dict[str, Any]

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the term (it ends with it)."""
        ...

    def replicas_on(self, worker_id: str) -> list[EpochKey]: ...

    async def move_replica(self, tenant: str, dataset: str, epoch: str, from_worker: str, *,
                           make_before_break: bool) -> bool: ...


def _check(worker_id: str, deadline_s: float, max_parallel: int) -> tuple[float, int]:
    if not worker_id:
        raise InvalidArgument("worker_id", "is required")
    if deadline_s < 0 or deadline_s != deadline_s:
        raise InvalidArgument("deadline_s", f"must be >= 0 seconds (0 = default {DEFAULT_DEADLINE_S:g}), got {deadline_s}")
    if max_parallel < 0:
        raise InvalidArgument("max_parallel", f"must be >= 0 (0 = default {DEFAULT_MAX_PARALLEL}), got {max_parallel}")
    return deadline_s or DEFAULT_DEADLINE_S, max_parallel or DEFAULT_MAX_PARALLEL


async def start_drain(hub: WorkerDirectory, worker_id: str, *, deadline_s: float = 0.0,
                      max_parallel: int = 0) -> Drain:
    """Start (or join) the drain of ``worker_id`` in the leader's term; returns at once.

    Idempotent: asking again while a drain runs returns the running one.
    Raises NotFound for an unknown worker, FailedPrecondition for a DEAD one
    (its replicas are being re-placed already) and Unavailable on a follower.
    """
    deadline_s, max_parallel = _check(worker_id, deadline_s, max_parallel)
    if not hub.serving():
        raise Unavailable("not the leader", leader=hub.leader_hint())
    state = hub.state(worker_id)
    if state is None:
        raise NotFound(f"worker {worker_id!r} is not known to the leader")
    coordinator = hub.coordinator
    if not isinstance(coordinator, DrainHost):
        raise FailedPrecondition("no epoch coordinator is running in this term")
    running: Drain | None = coordinator.drains.get(worker_id)
    if running is not None and (not running.done.is_set() or state is cp.WorkerState.DRAINED):
        return running
    if state is cp.WorkerState.DEAD:
        raise FailedPrecondition(f"worker {worker_id!r} is DEAD: its replicas are re-placed, nothing to drain")
    drain = Drain(worker_id, deadline_s, max_parallel)
    coordinator.drains[worker_id] = drain
    await hub.set_drain(worker_id, WState.DRAINING)
    coordinator.spawn(_run, hub, coordinator, drain)
    return drain


async def cancel_drain(hub: WorkerDirectory, worker_id: str) -> None:
    """Stop a drain of ``worker_id`` (if one runs) and make the worker placeable again.

    Replicas already moved stay where they are. A worker that is neither
    DRAINING nor DRAINED is left as it is; a DEAD one is FAILED_PRECONDITION.
    """
    if not hub.serving():
        raise Unavailable("not the leader", leader=hub.leader_hint())
    state = hub.state(worker_id)
    if state is None:
        raise NotFound(f"worker {worker_id!r} is not known to the leader")
    if state is cp.WorkerState.DEAD:
        raise FailedPrecondition(f"worker {worker_id!r} is DEAD: it must re-register before it can take placements")
    coordinator = hub.coordinator
    running = coordinator.drains.pop(worker_id, None) if isinstance(coordinator, DrainHost) else None
    if running is not None and not running.done.is_set():
        running.message = "cancelled"
        running.scope.cancel()
        await running.done.wait()
    if state in (cp.WorkerState.DRAINING, cp.WorkerState.DRAINED):
        await hub.set_drain(worker_id, None)
        log.info("drain of %s cancelled: placeable again", worker_id, extra={"worker": worker_id})


async def _run(hub: WorkerDirectory, coordinator: DrainHost, drain: Drain) -> None:
    with drain.scope:
        await _drain(hub, coordinator, drain)


async def _drain(hub: WorkerDirectory, coordinator: DrainHost, drain: Drain) -> None:
    wid = drain.worker_id
    try:
        limiter = trio.CapacityLimiter(drain.max_parallel)
        deadline = trio.current_time() + drain.deadline_s

        async def move(key: EpochKey, make_before_break: bool) -> None:
            async with limiter:
                ok = await coordinator.move_replica(*key, wid, make_before_break=make_before_break)
            if not ok:
                drain.failed += 1
            elif make_before_break:
                drain.moved_make_before_break += 1
            else:
                drain.moved_break_before_make += 1

        with trio.move_on_at(deadline):
            async with trio.open_nursery() as n:
                for key in coordinator.replicas_on(wid):
                    n.start_soon(move, key, True)
        left = coordinator.replicas_on(wid)
        if left and trio.current_time() >= deadline:
            drain.deadline_exceeded = True
            async with trio.open_nursery() as n:
                for key in left:
                    n.start_soon(move, key, False)
        drain.remaining = len(coordinator.replicas_on(wid))
        if drain.remaining == 0:
            await hub.command(wid, "drain_command", {"reason": "drained", "worker_id": wid})
            try:
                await hub.set_drain(wid, WState.DRAINED)
            except (EtcdError, Unavailable) as exc:  # not stored: the worker stays DRAINING (no placements), drain it again
                drain.message = f"emptied, but recording it DRAINED failed: {exc}"
            else:
                drain.message = "drained" + (" (deadline exceeded: the rest moved break-before-make)"
                                             if drain.deadline_exceeded else "")
        else:
            drain.message = f"{drain.remaining} replicas could not be moved (no eligible destination)"
        log.info("drain of %s: %s", wid, drain.message)
    finally:
        drain.done.set()
