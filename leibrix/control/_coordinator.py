"""The epoch coordinator: drives every epoch from PENDING to READY and back out, on the leader.

It is the ``EpochCoordinator`` half of the seam with the worker hub
(``leibrix.workers._protocols``): the hub tells it what workers report
(status, registration inventories, capacity, deaths) and it answers with
commands on their streams (``data_assignment`` with a LoadPlan,
``common_ack`` ``evict_epoch``).

:class:`Coordinator` is the :class:`~leibrix.control._ledger.Ledger` of the
term (indices, heat and benefit, fenced writes, commands) with its parts
composed over it, each in its own module:

* ``_scheduling``: scheduling passes (repair, then residency by benefit);
* ``_worker_events``: status reports, registration reconcile, dead workers,
  replica moves;
* ``_retirement``: routes withdrawn first, then evictions;
* ``_loadplan``: the LoadPlan of an assignment.

Its own job is the term's loop: a scheduling pass on every kick and whenever
a retry backoff expires, and the group commit of staged status reports.

Only a failed fencing compare (``Fenced``) ends the term. A write that etcd
does not answer (``EtcdUnavailable``) or refuses (``EtcdRefused``) is that
write's error: the loop logs it and tries again after ``_RETRY_S`` (a pass
decides again on the stored state; staged reports stay staged), and a worker
event whose write failed is logged and dropped (a worker's re-registration
reconciles what it holds).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from leibrix.control._ledger import Ledger
from leibrix.control._settings import ControlHooks, CoordinatorConfig
from leibrix.control._retirement import Retirement
from leibrix.control._scheduling import Scheduler
from leibrix.control._worker_events import WorkerEvents
from leibrix.domain._errors import Unavailable
from leibrix.state._model import ClusterState, EpochKey
from leibrix.store._etcd import EtcdRefused, EtcdUnavailable
from leibrix.store._store import Keys
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.workers._protocols import WorkerDirectory

__all__ = ["Coordinator", "CoordinatorConfig"]

log = logging.getLogger(__name__)

#: Seconds before a scheduling pass or a group commit that failed on an etcd error is tried again.
_RETRY_S = 0.5
#: etcd errors that are one write's error, never the end of the term.
_WRITE_ERRORS = (EtcdUnavailable, EtcdRefused)


class Coordinator(Ledger):
    """The leader's epoch coordinator for one term (see the module docstring)."""

    def __init__(self, *, state: ClusterState, commit: Callable[..., Awaitable[int]], keys: Keys,
                 hub: WorkerDirectory | None, config: CoordinatorConfig = CoordinatorConfig(),
                 clock: Callable[[], float] = time.monotonic, hooks: ControlHooks | None = None) -> None:
        super().__init__(state=state, commit=commit, keys=keys, hub=hub, config=config, clock=clock, hooks=hooks)
        self._scheduler = Scheduler(self)
        self._retirement = Retirement(self)
        self._events = WorkerEvents(self, self._scheduler, self._retirement)
        self._nursery: trio.Nursery | None = None
        #: The term's worker drains by worker id (``leibrix.control._drain.Drain``), running or finished.
        self.drains: dict[str, Any] = {}

    # ------------------------------------------------------------ the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Schedule on every kick and whenever a retry backoff expires; flush staged reports (until cancelled)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher)
            self._nursery = nursery
            task_status.started()
            while True:
                await self.kicked(self._next_retry_in())
                try:
                    await self.schedule()
                except _WRITE_ERRORS as exc:
                    log.warning("scheduling pass failed, retrying in %gs: %s", _RETRY_S, exc)
                    await trio.sleep(_RETRY_S)
                    self.kick()
                await trio.sleep(self.config.min_pass_interval_s)

    def spawn(self, fn: Callable[..., Awaitable[object]], *args: object) -> None:
        """Run ``fn(*args)`` in the term (it ends with it); UNAVAILABLE if the coordinator is not running."""
        if self._nursery is None:
            raise Unavailable("the leader is starting its term; retry shortly")
        self._nursery.start_soon(fn, *args)

    async def _flusher(self) -> None:
        while True:
            await self.staged()
            try:
                async with self.lock:
                    await self.flush_locked()
            except _WRITE_ERRORS as exc:
                log.warning("group commit of status reports failed, retrying in %gs: %s", _RETRY_S, exc)
                await trio.sleep(_RETRY_S)
            await trio.sleep(self.config.min_flush_interval_s)

    def _next_retry_in(self) -> float:
        now = self.clock()
        epochs = self.state.epochs
        waits = [epochs[k].retry_at - now for k in (*self.pending, *self.repair)
                 if k in epochs and epochs[k].retry_at > now]
        return max(0.01, min(waits)) if waits else math.inf

    async def schedule(self) -> None:
        """One scheduling pass (``leibrix.control._scheduling``); its duration goes to ``hooks.pass_seconds``
        (a pass that fails on an etcd error counts too)."""
        async with self.lock:
            started = time.perf_counter()
            try:
                await self._scheduler.schedule_locked()
            finally:
                self.hooks.pass_seconds(time.perf_counter() - started)

    # ------------------------------------------------------------ retirement

    async def retire(self, keys: Iterable[EpochKey], reason: str, *, delete: bool = False) -> int:
        """Withdraw routes, then evict, then RETIRED (or delete); see ``leibrix.control._retirement``."""
        return await self._retirement.retire(keys, reason, delete=delete)

    async def finish_retirements(self, keys: Iterable[EpochKey], reason: str) -> None:
        """Evict and record RETIRED the RETIRING epochs among ``keys`` (a retirement an earlier term began)."""
        try:
            async with self.lock:
                await self.flush_locked()
                for key in keys:
                    await self._retirement.finish(key, reason)
        except _WRITE_ERRORS as exc:
            log.warning("finishing retirements failed (the next term finishes them): %s", exc)

    # ------------------------------------------------------------ the seam: worker events (EpochCoordinator)

    async def on_status(self, worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None:
        """A worker reported load progress; raises ``FailedPrecondition`` if the epoch was never assigned there.

        Returns once the report's effect is *staged*, not written: the flusher
        commits it with every other staged report in the next group commit.
        The hub reads a worker's stream in order and calls this for each
        status, so waiting for the commit here would let one stream carry only
        one status per etcd round trip; with thousands of loads finishing at
        once, the worker's heartbeats would queue behind them and a healthy
        worker be declared DEAD. Nothing is lost by not waiting: a leader that
        dies before the commit is replaced by one that reconciles the worker's
        inventory when it re-registers.
        """
        async with self.lock:
            await self._events.status(worker_id, update)

    async def on_registered(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None:
        """Reconcile a (re)registered worker: keep valid holdings, evict the rest, (re)send missing plans."""
        try:
            await self._events.registered(worker_id, inventory)
        except _WRITE_ERRORS as exc:
            log.warning("reconciling worker %s failed (its next registration reconciles again): %s", worker_id, exc)

    async def on_capacity(self) -> None:
        """A worker became ACTIVE or freed capacity: try to place PENDING epochs now."""
        self.kick()

    async def on_worker_dead(self, worker_id: str) -> None:
        """Drop a dead worker's replicas and re-place them at once (``existing=`` the survivors)."""
        try:
            await self._events.dead(worker_id)
        except _WRITE_ERRORS as exc:
            log.warning("re-placing the replicas of dead worker %s failed: %s", worker_id, exc)
            self.kick()

    async def move_replica(self, tenant: str, dataset: str, epoch: str, from_worker: str, *,
                           make_before_break: bool, to_worker: str | None = None) -> bool:
        """Move one replica off ``from_worker`` (drain / rebalance), onto ``to_worker`` only when given; True
        once the new replica is LOADED."""
        try:
            return await self._events.move_replica((tenant, dataset, epoch), from_worker,
                                                   make_before_break=make_before_break, to_worker=to_worker)
        except _WRITE_ERRORS as exc:
            log.warning("moving %s/%s/%s off %s failed: %s", tenant, dataset, epoch, from_worker, exc)
            return False
