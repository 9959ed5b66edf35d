"""The Trio side of the worker hub: members, liveness, membership records, dead workers, rebalancing.

:class:`Membership` is built once per master and *works* only during a
leadership term (:meth:`Membership.run_term`, a leader service). It is the
:class:`~leibrix.workers._protocols.WorkerDirectory` the control loop places
with and the :class:`~leibrix.workers._protocols.Registry` the worker streams
report to.

**Registration** (:meth:`Membership.admit`): the worker becomes ACTIVE in the
liveness machine, its ``workers/<w>`` record is written when that is a state
transition, ``registration_ack`` carries the heartbeat interval, the master id
and the term, then the coordinator reconciles the worker's inventory.
Heartbeats only touch the in-memory liveness machine (no ack, no etcd write);
``on_heartbeat``, when set (the metrics), gets each one's lag behind the
worker's previous heartbeat.

**Liveness** (:mod:`leibrix.domain._liveness`) runs as the sweeper task of the
term: SUSPECT workers get no placements; DEAD ones are persisted DEAD and their
replicas re-placed through ``coordinator.on_worker_dead``; the time from DEAD
to all assignments sent is kept in :attr:`Membership.last_replace_s`. A new
leader gives every worker the previous leader recorded as live until its DEAD
deadline (``dead_timeout`` at the defaults) to re-register.

**Rebalancing** (:mod:`leibrix.workers._rebalance`): every
``rebalance_interval`` of a term, a pass compares the loads of every pool's
ACTIVE workers as the coordinator holds them and moves at most
``rebalance_max_moves`` replicas, make-before-break, from the most to the
least loaded, until every worker is within ``rebalance_tolerance`` of its
pool's mean. Nothing about joins is remembered: a new leader's first pass
sees the same skew its predecessor did.

Everything here runs on the one event-loop thread (Trio, with the asyncio
streams under trio-asyncio), so shared state needs no locks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio
from grpclib.const import Status

from leibrix.domain._errors import AlreadyExists, FailedPrecondition, Unavailable
from leibrix.domain._liveness import Liveness, Transition, WState
from leibrix.placement import WorkerSpec
from leibrix.store._etcd import EtcdError
from leibrix.state._workers import WorkerAddresses
from leibrix.store._store import Fenced, Keys, Table
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._proto.records import state_pb2
from leibrix.workers._config import HubConfig
from leibrix.workers._member import Member, member_from_record, record_of
from leibrix.workers._messages import clip, common_ack
from leibrix.workers._protocols import EpochCoordinator
from leibrix.workers._rebalance import PoolWorker, Rebalancer
from leibrix.workers._records import RecordWriter
from leibrix.workers._session import Session

__all__ = ["Membership"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Term:
    ctx: Any
    nursery: trio.Nursery
    token: int
    records: RecordWriter


class Membership:
    """Members and liveness of one master's workers, working during its leadership terms.

    Parameters
    ----------
    config:
        Worker-facing knobs.
    master_id:
        This master's id, sent as ``server_id`` and in ``registration_ack``.
    keys:
        The cluster's :class:`leibrix.store._store.Keys` (worker record keys).
    leader_hint:
        Returns the current leader's gRPC address ('' if unknown), for redirects.
    clock:
        Monotonic clock of the liveness machine (default :func:`trio.current_time`).
    """

    def __init__(
        self,
        config: HubConfig,
        *,
        master_id: str,
        keys: Keys,
        leader_hint: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.config = config
        self.master_id = master_id
        self.keys = keys
        self.leader_hint = leader_hint
        self._clock = clock
        self.liveness = self._new_liveness()
        self.members: dict[str, Member] = {}
        self._term: _Term | None = None
        #: the EpochCoordinator of the current term (see :meth:`attach`)
        self.coordinator: EpochCoordinator | None = None
        self._wake = trio.Event()
        self._capacity = trio.Event()
        self.rebalancer = Rebalancer(tolerance=config.rebalance_tolerance)
        self._records: Any = None  # Table[WorkerRecord] when a mirror was attached
        self._addresses: WorkerAddresses | None = None
        #: whether a pool label names a tenant (set by :meth:`attach`); None accepts any pool
        self._pool_known: Callable[[str], bool] | None = None
        # observability (also read by bench.workers)
        self.last_replace_s: float | None = None
        #: replicas moved by each rebalancing pass that had a pool out of its band
        self.rebalance_moves: list[int] = []
        #: rebalancing passes run (every interval of a term with a coordinator)
        self.rebalance_passes = 0
        #: called with each heartbeat's lag: the seconds since the worker's previous heartbeat (or registration)
        self.on_heartbeat: Callable[[float], None] | None = None

    def _new_liveness(self) -> Liveness:
        c = self.config
        return Liveness(self._clock, interval=c.heartbeat_interval, missed=c.missed_heartbeats,
                        dead_timeout=c.dead_timeout)

    # ---- wiring ----------------------------------------------------------

    def register_tables(self, mirror: Any, masters: Table[state_pb2.MasterRecord]) -> None:
        """Register the ``workers/`` table on the master's Mirror (call before the mirror runs).

        A new leader reads it to know which workers its predecessor had, so
        the ones that never come back are declared DEAD and re-placed; every
        master answers worker addresses from it (:meth:`addr`), with
        ``masters`` telling a master's own address apart from a worker's.
        """
        self._records = mirror.table(self.keys.WORKERS, state_pb2.WorkerRecord.FromString)
        self._addresses = WorkerAddresses(self._records, masters)

    def attach(self, coordinator: EpochCoordinator, *, pool_known: Callable[[str], bool] | None = None) -> None:
        """Serve the term's epoch ``coordinator`` (worker events go to it); ``pool_known`` checks pool labels."""
        self.coordinator = coordinator
        self._pool_known = pool_known

    def detach(self, coordinator: EpochCoordinator) -> None:
        """The term of ``coordinator`` is over: stop sending it worker events."""
        if self.coordinator is coordinator:
            self.coordinator = None

    # ---- the leader service ----------------------------------------------

    async def run_term(self, ctx: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve workers for one leadership term: record writer, sweeper, rebalancer; sessions end with the term.

        ``ctx`` must carry ``writer`` (FencedWriter) and ``term`` (its
        ``token``). The term's epoch coordinator arrives through :meth:`attach`.
        """
        try:
            async with trio.open_nursery() as nursery:
                self.liveness = self._new_liveness()
                self.members.clear()
                self.rebalancer.reset()
                records = RecordWriter(ctx.writer, self.keys, self.leader_hint)
                self._term = _Term(ctx, nursery, int(getattr(ctx.term, "token", 0)), records)
                self._adopt_previous_members()
                nursery.start_soon(records.run)
                nursery.start_soon(self._capacity_notifier)
                nursery.start_soon(self._sweeper)
                nursery.start_soon(self._rebalancer)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._term = None
            self.coordinator = None
            self.close_all(Status.UNAVAILABLE, "leadership moved: reconnect to the leader")

    async def before_resign(self, ctx: Any) -> None:
        """Nothing to save: worker membership transitions are written as they happen."""

    def close_all(self, status: Status, message: str) -> None:
        """Close every stream (master shutdown or term end): workers reconnect and find the leader."""
        for m in list(self.members.values()):
            if m.session is not None:
                m.session.close(status, message, leader=self.leader_hint())

    def _adopt_previous_members(self) -> None:
        """Workers the previous leader recorded as live get until their DEAD deadline to re-register."""
        if self._records is None:
            return
        for wid, rec in list(self._records.items()):
            state = WState(rec.state) if rec.state else None
            if state in (None, WState.DEAD):
                continue
            m = member_from_record(rec)
            m.persisted = state
            self.members[wid] = m
            self.liveness.register(wid)
            self.liveness.disconnect(wid)
            if state in (WState.DRAINING, WState.DRAINED):
                self.liveness.set_drain(wid, state)

    # ---- WorkerDirectory ---------------------------------------------------

    def eligible(self, pool: str | None) -> list[WorkerSpec]:
        """ACTIVE workers of ``pool`` (None/'' = the shared workers) as placement WorkerSpecs with reservations."""
        want = pool or ""
        out = []
        for m in self.members.values():
            w = self.liveness.get(m.worker_id)
            if w is None or not w.placeable or m.pool != want:
                continue
            used_mem, used_cpu = self.reserved(m.worker_id)
            out.append(WorkerSpec(
                id=m.worker_id, memory_bytes=m.memory_bytes, cpu_cores=m.cpu_cores,
                zone=m.zone or None, used_memory_bytes=used_mem, used_cpu_cores=used_cpu,
            ))
        return out

    def reserved(self, worker_id: str) -> tuple[int, float]:
        """(memory bytes, CPU cores) reserved on a worker by the replicas placed there (the coordinator's sums)."""
        return self.coordinator.reserved(worker_id) if self.coordinator is not None else (0, 0.0)

    def state(self, worker_id: str) -> cp.WorkerState | None:
        """The worker's state as the wire enum, or None if unknown."""
        s = self.liveness.state(worker_id)
        return None if s is None else cp.WorkerState(int(s))

    def addr(self, worker_id: str) -> str | None:
        """Where the worker answers queries (for routes), or None if unknown.

        From the mirrored ``workers/`` records when the hub has them (the same
        answer on every master: see :class:`~leibrix.state.WorkerAddresses`),
        else the address a connected worker registered with.
        """
        if self._addresses is not None:
            return self._addresses.addr(worker_id)
        m = self.members.get(worker_id)
        return None if m is None else m.addr

    async def send(self, worker_id: str, msg: Any) -> bool:
        """Queue ``msg`` (betterproto or upb EventStreamMessage) to the worker; False if no live stream.

        Never blocks: a full queue closes that worker's session (it cannot keep
        up; it re-registers and reconciles), which beats stalling the
        coordinator behind one slow worker.
        """
        m = self.members.get(worker_id)
        if m is None or m.session is None:
            return False
        return m.session.offer(msg.SerializeToString())

    async def evict(self, worker_id: str, tenant: str, dataset: str, epoch: str, reason: str) -> bool:
        """Send ``evict_epoch`` (the Rust worker's command) for one epoch."""
        return await self.send(worker_id, common_ack(self.master_id, worker_id, "evict_epoch", {
            "tenant_id": tenant, "dataset_id": dataset, "epoch_id": epoch, "reason": reason}, tenant=tenant))

    async def command(self, worker_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """Send a ``common_ack`` command (``drain_command``, ``reconnect``...)."""
        return await self.send(worker_id, common_ack(self.master_id, worker_id, event_type, payload))

    async def set_drain(self, worker_id: str, state: WState | None) -> None:
        """Mark a worker DRAINING/DRAINED (no new placements), persisted; None cancels a drain."""
        self.liveness.set_drain(worker_id, state)
        await self.persist(worker_id, state or WState.ACTIVE)

    async def persist(self, worker_id: str, state: WState) -> None:
        """Write ``workers/<w>`` with ``state`` through the term's record writer (a transition, never a tick)."""
        term = self._term
        m = self.members.get(worker_id)
        if term is None or m is None:
            raise Unavailable("not the leader", leader=self.leader_hint())
        if m.persisted is state:
            return
        await term.records.write(worker_id, record_of(m, state).SerializeToString())
        m.persisted = state

    # ---- Registry: what the streams report -----------------------------------

    def serving(self) -> bool:
        """True during a leadership term."""
        return self._term is not None

    def pool_known(self, pool: str) -> bool:
        """Whether ``pool`` names a known tenant (any pool while no check is attached)."""
        return self._pool_known is None or self._pool_known(pool)

    def open_session(self, member: Member, session: Session) -> None:
        """Make ``session`` the live stream of ``member``, keeping what outlives a session; AlreadyExists if live."""
        old = self.members.get(member.worker_id)
        if old is not None and old.session is not None:
            raise AlreadyExists(f"worker {clip(member.worker_id)!r} already has a live stream from {old.session.peer}")
        if old is not None:
            member.persisted, member.registered_wall = old.persisted, old.registered_wall
        member.session = session
        member.registered_wall = member.registered_wall or time.time()
        member.last_seen_wall = time.time()
        self.members[member.worker_id] = member

    async def admit(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None:
        """Trio side of a registration: liveness, record, ack, then reconcile."""
        term = self._term
        if term is None:
            raise Unavailable("not the leader", leader=self.leader_hint())
        t = self.liveness.register(worker_id, interval=self.config.heartbeat_interval)
        self._wake.set()
        drain = self.liveness.get(worker_id).drain
        try:
            await self.persist(worker_id, drain or WState.ACTIVE)
        except (Fenced, EtcdError) as e:  # not the worker's fault: retry (elsewhere)
            raise Unavailable(f"cannot record the worker now, retry: {e}", leader=self.leader_hint()) from e
        await self.send(worker_id, common_ack(self.master_id, worker_id, "registration_ack", {
            "heartbeat_interval_s": self.config.heartbeat_interval,
            "master_id": self.master_id,
            "term": str(term.token),
            "state": t.new.name,
        }))
        log.info("worker %s registered (%s -> %s) with %d inventory entries",
                 worker_id, t.old.name if t.old else "-", t.new.name, len(inventory))
        if self.coordinator is not None:
            await self.coordinator.on_registered(worker_id, inventory)
        self._capacity.set()

    def seen(self, worker_id: str, heartbeat: pb.HeartbeatEvent | None) -> None:
        """A message from the worker: contact for liveness (and cadence, for a heartbeat); O(1)."""
        m = self.members.get(worker_id)
        if m is None:  # a new term started: this stream is being closed
            return
        live = self.liveness
        if heartbeat is not None and self.on_heartbeat is not None:
            w = live.get(worker_id)
            if w is not None and w.connected and not w.dead:
                self.on_heartbeat(max(0.0, self._clock() - w.last_beat))
        first = live.next_deadline()
        if live.seen(worker_id, beat=heartbeat is not None) is not None:
            self._capacity.set()  # SUSPECT -> ACTIVE: placeable again
        nxt = live.next_deadline()
        if nxt is not None and (first is None or nxt < first):
            self._wake.set()  # a deadline moved in: the sweeper sleeps until the old one
        m.last_seen_wall = time.time()
        if heartbeat is not None:
            if heartbeat.HasField("memory_used_bytes"):
                m.memory_used_bytes = heartbeat.memory_used_bytes
            if heartbeat.HasField("loads_in_flight"):
                m.loads_in_flight = heartbeat.loads_in_flight

    async def on_statuses(self, worker_id: str, updates: list[cp.DataPullStatusUpdateEvent]) -> None:
        """Hand a worker's status reports to the coordinator, in order."""
        if self._term is None:
            raise Unavailable("not the leader", leader=self.leader_hint())
        for update in updates:
            if self.coordinator is None:
                raise FailedPrecondition(f"data_pull_status_update: epoch {update.dataset_id}/{update.epoch_id} "
                                         f"was never assigned to {worker_id}")
            await self.coordinator.on_status(worker_id, update)

    def closed(self, worker_id: str, session: Session) -> None:
        """``session`` ended: SUSPECT at once, unless a newer session already replaced it."""
        m = self.members.get(worker_id)
        if m is None or m.session is not session:
            return
        m.session = None
        t = self.liveness.disconnect(worker_id)
        if t is not None:
            self._log_transition(t)
        if self._term is not None:
            self._wake.set()

    # ---- term tasks -------------------------------------------------------------

    async def _capacity_notifier(self) -> None:
        """Tell the coordinator workers became placeable, coalesced (one call per burst, not per worker)."""
        while True:
            await self._capacity.wait()
            self._capacity = trio.Event()
            if self.coordinator is not None:
                await self.coordinator.on_capacity()

    async def _sweeper(self) -> None:
        """Apply liveness deadlines as they come due; handle DEAD workers."""
        term = self._term
        assert term is not None
        while True:
            for t in self.liveness.advance():
                self._log_transition(t)
                if t.new is WState.DEAD:
                    term.nursery.start_soon(self._on_dead, t.worker_id)
            self._wake = trio.Event()
            nxt = self.liveness.next_deadline()
            with trio.move_on_at(nxt if nxt is not None else math.inf):
                await self._wake.wait()

    @staticmethod
    def _log_transition(t: Transition) -> None:
        log.info("worker %s: %s -> %s", t.worker_id, t.old.name if t.old else "-", t.new.name)

    async def _on_dead(self, worker_id: str) -> None:
        """Record a DEAD worker and have its replicas re-placed; times DEAD → all assignments sent."""
        m = self.members.get(worker_id)
        if m is not None and m.session is not None:
            m.session.close(Status.UNAVAILABLE, "declared DEAD")
        try:
            await self.persist(worker_id, WState.DEAD)
        except (Unavailable, EtcdError) as e:
            # etcd unreachable (or the term ending): the next leader re-detects it from the record
            log.warning("could not record worker %s DEAD: %s", worker_id, e)
            return
        if self._term is not None and self.coordinator is not None:
            started = self._clock()
            await self.coordinator.on_worker_dead(worker_id)
            self.last_replace_s = self._clock() - started
            log.info("worker %s DEAD: replicas re-placed in %.3fs", worker_id, self.last_replace_s)

    async def _rebalancer(self) -> None:
        """A rebalancing pass every ``rebalance_interval`` (see the module docstring); moves kept per pass."""
        while True:
            await trio.sleep(self.config.rebalance_interval)
            coordinator = self.coordinator
            if coordinator is None:
                continue
            pools: dict[str, list[PoolWorker]] = {}
            for m in self.members.values():
                w = self.liveness.get(m.worker_id)
                if w is not None and w.placeable:
                    pools.setdefault(m.pool, []).append(PoolWorker(m.worker_id, m.memory_bytes, m.cpu_cores))
            moved = await self.rebalancer.run_pass(pools, coordinator, self.config.rebalance_max_moves)
            self.rebalance_passes += 1
            if moved or self.rebalancer.active:
                self.rebalance_moves.append(moved)
