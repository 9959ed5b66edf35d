"""Harness for the worker-hub tests: a real leader term, a real gRPC server, real worker processes.

* :func:`start_leader` campaigns on the real etcd fixture and returns a term
  context with a real :class:`~leibrix.store._store.FencedWriter`.
* :func:`serve` hosts the hub in the master's real :class:`~leibrix.api._server.GrpcServer`
  (both worker paths, the guard) on a free loopback port.
* :class:`TableCoordinator` is a small, complete implementation of the
  ``EpochCoordinator`` side of the seam: a fixed set of epochs with a
  replica count, placed on the least-loaded ACTIVE workers, validated on
  COMPLETED, re-placed on DEAD, moved make-before-break. It exercises the hub
  over the real protocol without the production coordinator's admission,
  scheduling and etcd state.
* :func:`spawn_worker` runs ``python -m leibrix worker`` as a real process.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from typing import Any

import trio

from leibrix.store._election import Election, Term
from leibrix.domain._errors import FailedPrecondition
from leibrix.api._server import GrpcServer, HealthFlag
from leibrix.domain._liveness import WState
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.store._store import FencedWriter, Keys
from leibrix.store._ports import free_port
from leibrix.worker._cmd import worker_command
from leibrix.workers._hub import HubConfig, WorkerHub

Key = tuple[str, str, str]


@dataclass
class Ctx:
    """The parts of the master's TermContext the hub uses."""

    term: Term
    writer: FencedWriter


async def start_leader(etcd: Any, nursery: trio.Nursery, keys: Keys, name: str = "m1") -> Ctx:
    election = Election(etcd, key=keys.leader, record=name.encode(), ttl=5)
    term = await election.campaign()
    await nursery.start(election.keep_alive, term)
    return Ctx(term, FencedWriter(etcd, term))


async def serve(nursery: trio.Nursery, hub: WorkerHub) -> str:
    port = free_port()
    health = HealthFlag()
    health.set(True)
    await nursery.start(GrpcServer([hub], health).serve, "127.0.0.1", port)
    return f"127.0.0.1:{port}"


@dataclass
class TableCoordinator:
    """A complete, small EpochCoordinator over a fixed table of epochs (see module doc)."""

    hub: WorkerHub
    epochs: list[Key]
    replicas: int = 1
    rows: int = 1000
    assigned: dict[Key, set[str]] = field(default_factory=dict)
    ready: dict[Key, set[str]] = field(default_factory=dict)
    sent: list[tuple[str, Key]] = field(default_factory=list)
    evicted: list[tuple[str, Key]] = field(default_factory=list)
    statuses: list[tuple[str, Key, int]] = field(default_factory=list)
    changed: trio.Event = field(default_factory=trio.Event)
    #: (memory bytes, CPU cores) reserved per worker, as a capacity-aware coordinator would report
    reservations: dict[str, tuple[int, float]] = field(default_factory=dict)

    def _poke(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def _load(self, wid: str) -> int:
        return sum(wid in ws for ws in self.assigned.values())

    def _candidates(self, exclude: set[str]) -> list[str]:
        ids = [m.worker_id for m in self.hub.members.values()
               if self.hub.liveness.get(m.worker_id) and self.hub.liveness.get(m.worker_id).placeable
               and m.worker_id not in exclude]
        return sorted(ids, key=lambda w: (self._load(w), w))

    async def _assign(self, wid: str, key: Key) -> None:
        t, d, e = key
        msg = cp.EventStreamMessage(tenant_id=t, worker_id=wid, data_assignment=cp.DataAssignmentEvent(
            dataset_id=d, epoch_id=e, load_plan=cp.LoadPlan(
                plan_id=f"{d}/{e}/v1", destination_table_name=f"{d}__{e}", expected_rows=self.rows, tenant_id=t)))
        self.assigned.setdefault(key, set()).add(wid)
        if await self.hub.send(wid, msg):
            self.sent.append((wid, key))

    async def _evict(self, wid: str, key: Key, reason: str) -> None:
        self.assigned.get(key, set()).discard(wid)
        self.ready.get(key, set()).discard(wid)
        await self.hub.evict(wid, *key, reason)
        self.evicted.append((wid, key))

    async def on_status(self, worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None:
        key = next((k for k in self.epochs if k[1:] == (update.dataset_id, update.epoch_id)), None)
        if key is None or worker_id not in self.assigned.get(key, set()):
            raise FailedPrecondition(
                f"epoch {update.dataset_id}/{update.epoch_id} was never assigned to worker {worker_id}")
        self.statuses.append((worker_id, key, int(update.status)))
        if update.status == cp.DataPullStatusUpdateEventStatus.COMPLETED and update.rows == self.rows:
            self.ready.setdefault(key, set()).add(worker_id)
        self._poke()

    async def on_registered(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None:
        held = {(e.tenant_id, e.dataset_id, e.epoch_id) for e in inventory}
        for key in held:
            if worker_id in self.assigned.get(key, set()):
                self.ready.setdefault(key, set()).add(worker_id)  # reconciled, not reloaded
            else:
                await self.hub.evict(worker_id, *key, "not assigned here")
                self.evicted.append((worker_id, key))
        for key, ws in self.assigned.items():
            if worker_id in ws and key not in held:
                await self._assign(worker_id, key)  # lost it: load again
        self._poke()

    async def on_capacity(self) -> None:
        for key in self.epochs:
            have = self.assigned.setdefault(key, set())
            for wid in self._candidates(have)[: max(0, self.replicas - len(have))]:
                await self._assign(wid, key)
        self._poke()

    async def on_worker_dead(self, worker_id: str) -> None:
        for key, ws in self.assigned.items():
            if worker_id in ws:
                ws.discard(worker_id)
                self.ready.get(key, set()).discard(worker_id)
                for wid in self._candidates(ws)[:1]:
                    await self._assign(wid, key)
        self._poke()

    def reserved(self, worker_id: str) -> tuple[int, float]:
        return self.reservations.get(worker_id, (0, 0.0))

    def replicas_on(self, worker_id: str) -> list[Key]:
        return sorted(k for k, ws in self.assigned.items() if worker_id in ws)

    def replica_count(self, worker_id: str) -> int:
        return self._load(worker_id)

    def movable_replicas(self, worker_id: str, limit: int) -> list[Key]:
        return [k for k, ws in sorted(self.ready.items()) if worker_id in ws][:limit]

    async def move_replica(self, tenant: str, dataset: str, epoch: str, from_worker: str, *,
                           make_before_break: bool, to_worker: str | None = None) -> bool:
        key = (tenant, dataset, epoch)
        if len(self.ready.get(key, set()) - {from_worker}) >= self.replicas:
            await self._evict(from_worker, key, "moved (already loaded elsewhere)")
            return True  # an interrupted earlier move already completed: enough READY copies elsewhere
        # a destination already loading it (an interrupted earlier move) is reused
        loading = sorted(self.assigned.get(key, set()) - self.ready.get(key, set()) - {from_worker})
        fresh = [w for w in self._candidates(self.assigned.get(key, set()) | {from_worker})
                 if to_worker is None or w == to_worker]
        [dest, *_] = loading or fresh or [None]
        if dest is None:
            return False
        if not make_before_break:
            await self._evict(from_worker, key, "moved (break-before-make)")
        if dest not in self.assigned.get(key, set()):
            await self._assign(dest, key)
        while dest not in self.ready.get(key, set()):
            if dest not in self.assigned.get(key, set()):
                return False
            await self.changed.wait()
        if make_before_break:
            await self._evict(from_worker, key, "moved (make-before-break)")
        return True

    async def wait(self, predicate, timeout: float = 60.0) -> None:
        """Until ``predicate()`` holds (a bound for a hung test, not a speed check: worker processes start
        and load slowly on a loaded machine)."""
        with trio.fail_after(timeout):
            while not predicate():
                with trio.move_on_after(0.05):
                    await self.changed.wait()


def worker_cmd(master: str, wid: str, *extra: str, memory: str = "256MiB") -> list[str]:
    return worker_command([master], wid, memory=memory, extra=("--log-level", "WARNING", *extra))


async def spawn_worker(nursery: trio.Nursery, master: str, wid: str, *extra: str) -> trio.Process:
    """Start a real worker process; the caller's nursery reaps it (SIGKILL on exit)."""
    return await nursery.start(run_process, worker_cmd(master, wid, *extra))


async def run_process(cmd: list[str], *, task_status) -> None:
    """Run ``cmd`` (a worker or master process) for as long as the calling nursery lives; SIGKILL and reap it at the end."""
    proc = await trio.lowlevel.open_process(cmd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        task_status.started(proc)
        await proc.wait()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
        with trio.CancelScope(shield=True):
            await proc.wait()


async def wait_state(hub: WorkerHub, wid: str, state: WState, timeout: float = 15.0) -> None:
    with trio.move_on_after(timeout):
        while hub.liveness.state(wid) is not state:
            await trio.sleep(0.02)
        return
    w = hub.liveness.get(wid)
    raise AssertionError(f"{wid} not {state.name} within {timeout}s: {w}, now={hub._clock()}, "
                         f"next deadline={hub.liveness.next_deadline()}")


async def wait_beating(hub: WorkerHub, wid: str, timeout: float = 5.0) -> None:
    """Wait for ``wid``'s first heartbeat: from then on it is judged by its cadence, not the first-beat grace."""
    with trio.fail_after(timeout):
        while (w := hub.liveness.get(wid)) is None or w.cadence is None:
            await trio.sleep(0.02)


def fast_config(**overrides: Any) -> HubConfig:
    base = dict(heartbeat_interval=0.2, missed_heartbeats=2, dead_timeout=1.5, rebalance_interval=0.3)
    base.update(overrides)
    return HubConfig(**base)
