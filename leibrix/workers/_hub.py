"""The leader's end of ``CoordinateWorker``: one session per worker stream, liveness, re-placement.

The hub is built once per master and served by the gRPC server for the
master's whole life; it *works* only during a leadership term
(:meth:`WorkerHub.run_term`, a leader service). Outside a term every new
stream is answered ``common_ack`` ``registration_reject`` ("not the leader")
and closed UNAVAILABLE with the leader's address in ``leibrix-leader``.

**Sessions.** A stream must open with ``register_event``. The registration is
validated (id, capacity — absent capacity, as the Rust worker sends, gets the
configured default — and the ``pool``/``tenant_id`` label naming a known
tenant), a duplicate live id is refused, the membership record
``workers/<w>`` is written through the term's :class:`~leibrix.store._store.FencedWriter`
when it is a state transition, and ``registration_ack`` carries the heartbeat
interval, the master id and the term. Then the coordinator reconciles the
worker's inventory. Heartbeats only touch the in-memory liveness machine (no
ack, no etcd write: the hot path is one upb parse and one dict update); status
updates go to the term's :class:`~leibrix.workers._protocols.EpochCoordinator`.

**Bad input** closes only the offending stream with a precise status:
garbage bytes → INVALID_ARGUMENT, a frame over ``max_message_bytes`` →
RESOURCE_EXHAUSTED (checked from the 5-byte gRPC prefix, before buffering the
body), compressed frames, unknown or master-to-worker payloads →
INVALID_ARGUMENT, a status for an epoch never assigned → FAILED_PRECONDITION,
a second ``register_event`` → FAILED_PRECONDITION. Other streams and the stored
state are untouched.

**Outbound** messages go through a bounded per-session queue drained by one
sender (concurrent ``send_message`` calls could interleave HTTP/2 frames).
:meth:`WorkerHub.send` never blocks: a full queue means the worker cannot keep
up, so its session is closed RESOURCE_EXHAUSTED and it re-registers (every
command is idempotent and reconnects reconcile), which beats stalling the
coordinator behind one slow worker.

**Liveness** (:mod:`leibrix.domain._liveness`) runs as the sweeper task of the term:
SUSPECT workers get no placements; DEAD ones are persisted DEAD and their
replicas re-placed through ``coordinator.on_worker_dead``; the time from DEAD
to all assignments sent is kept in :attr:`WorkerHub.last_replace_s`. A new
leader gives every worker the previous leader recorded as live
``dead_timeout`` to re-register before it is declared DEAD.

**Join rebalancing**: when workers join, every ``rebalance_interval`` at most
``rebalance_max_moves`` replicas move make-before-break from the fullest
workers, so a growing cluster gets used without a thundering herd.

Threading model: grpclib is asyncio-only (trio-asyncio, DESIGN.md §4). Each
stream's I/O is one asyncio coroutine; it calls Trio code (coordinator,
fenced writes) through :func:`leibrix.api._server.call_trio`. Shared state is only
touched from the single event-loop thread, so no locks are needed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpclib.const
import grpclib.exceptions
import grpclib.server
import h2.exceptions
import trio
from google.protobuf.message import DecodeError
from grpclib.const import Status

from leibrix.domain._errors import ApiError, FailedPrecondition, InvalidArgument, NotFound, Unavailable
from leibrix.store._etcd import EtcdError, Put
from leibrix.workers._protocols import EpochCoordinator
from leibrix.wire._grpc import COORDINATE_WORKER, LEADER_METADATA, call_trio
from leibrix.domain._liveness import Liveness, Transition, WState
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Fenced

__all__ = [
    "HubConfig",
    "Member",
    "WorkerHub",
]

log = logging.getLogger(__name__)

#: Our (= the Go master's) path; the gRPC server adds the Rust worker's alias.
_WORKER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_PAYLOAD_FROM_MASTER = {"data_assignment", "common_ack"}
#: Worker records per fenced transaction (etcd's --max-txn-ops is larger).
_MAX_BATCH = 500
#: Status reports a session may have read ahead of the coordinator before its reader waits.
_STATUS_BACKLOG = 10_000


# ---------------------------------------------------------------- config and members


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Worker-facing knobs of the master; each field ``f`` is the master option ``worker_<f>``."""

    heartbeat_interval: float = 3.0
    missed_heartbeats: int = 2
    dead_timeout: float = 10.0
    #: Capacity given to a registration without one (the Rust worker's).
    default_memory_bytes: int = 8 << 30
    default_cpu_cores: float = 4.0
    max_message_bytes: int = 4 << 20
    outbound_queue: int = 4096
    register_timeout: float = 10.0
    #: Registrations processed at once; the rest of a reconnect storm waits its turn.
    max_registering: int = 32
    rebalance_interval: float = 10.0
    rebalance_max_moves: int = 4


class _Frame(bytes):
    """An already-serialized message: grpclib's codec passes it through untouched."""

    def SerializeToString(self) -> bytes:  # noqa: N802 - grpclib's codec protocol
        return bytes(self)

    @classmethod
    def FromString(cls, data: bytes) -> _Frame:  # noqa: N802
        return cls(data)


class _Close(Exception):
    """End this stream with ``status`` (after an optional reject ack)."""

    def __init__(self, status: Status, message: str, *, reject: bool = False, leader: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.reject, self.leader = status, message, reject, leader


@dataclass(eq=False)
class Member:
    """What the leader knows about one worker beyond liveness (readable by the API)."""

    worker_id: str
    addr: str
    labels: dict[str, str]
    memory_bytes: int
    cpu_cores: float
    software_version: str = ""
    memory_used_bytes: int = 0
    loads_in_flight: int = 0
    last_seen_wall: float = 0.0
    registered_wall: float = 0.0
    persisted: WState | None = None
    session: _Session | None = None
    drain: Any = None  # the running leibrix.control._drain.Drain, if any

    @property
    def pool(self) -> str:
        """The tenant pool this worker serves ('' = shared): label ``pool``, else the Rust worker's ``tenant_id``."""
        return self.labels.get("pool") or self.labels.get("tenant_id", "")

    @property
    def zone(self) -> str:
        """Failure zone label ('' if none)."""
        return self.labels.get("zone", "")


@dataclass(eq=False)
class _Session:
    worker_id: str
    peer: str
    queue: asyncio.Queue
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    #: Status reports read but not yet handed to the coordinator (see ``WorkerHub._status_loop``).
    statuses: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(_STATUS_BACKLOG))
    reason: _Close | None = None

    def close(self, status: Status, message: str, *, leader: str = "") -> None:
        if self.reason is None:
            self.reason = _Close(status, message, leader=leader)
        self.closing.set()


@dataclass(eq=False)
class _Batch:
    """Worker records waiting for one group commit."""

    ops: dict[str, bytes] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


@dataclass(eq=False)
class _Term:
    ctx: Any
    nursery: trio.Nursery
    token: int
    batch: _Batch = field(default_factory=_Batch)
    batch_ready: trio.Event = field(default_factory=trio.Event)


# ---------------------------------------------------------------- the hub


class WorkerHub(cp.ControlPlaneServiceBase):
    """ControlPlaneService for the master + the WorkerDirectory half of the seam + a leader service.

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
        keys: Any,
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
        self._registering: asyncio.Semaphore | None = None
        self._joined: set[str] = set()
        self._records: Any = None  # Table[WorkerRecord] when a mirror was attached
        #: whether a pool label names a tenant (set by :meth:`attach`); None accepts any pool
        self._pool_known: Callable[[str], bool] | None = None
        # observability (also read by bench.workers)
        self.last_replace_s: float | None = None
        self.rebalance_moves: list[int] = []

    def _new_liveness(self) -> Liveness:
        c = self.config
        return Liveness(self._clock, interval=c.heartbeat_interval, missed=c.missed_heartbeats,
                        dead_timeout=c.dead_timeout)

    # ---- wiring ----------------------------------------------------------

    def register_tables(self, mirror: Any) -> None:
        """Register the ``workers/`` table on the master's Mirror (call before the mirror runs).

        A new leader reads it to know which workers its predecessor had, so
        the ones that never come back are declared DEAD and re-placed.
        """
        self._records = mirror.table(self.keys.WORKERS, state_pb2.WorkerRecord.FromString)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return {
            COORDINATE_WORKER: grpclib.const.Handler(
                self._handle, grpclib.const.Cardinality.STREAM_STREAM, _Frame, _Frame
            )
        }

    # ---- the leader service ----------------------------------------------

    async def run_term(self, ctx: Any, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Serve workers for one leadership term: sweeper and rebalancer; sessions end with the term.

        ``ctx`` must carry ``writer`` (FencedWriter) and ``term`` (its
        ``token``). The term's epoch coordinator arrives through :meth:`attach`.
        """
        try:
            async with trio.open_nursery() as nursery:
                self.liveness = self._new_liveness()
                self.members.clear()
                self._term = _Term(ctx, nursery, int(getattr(ctx.term, "token", 0)))
                self._adopt_previous_members()
                nursery.start_soon(self._record_writer)
                nursery.start_soon(self._capacity_notifier)
                nursery.start_soon(self._sweeper)
                nursery.start_soon(self._rebalancer)
                task_status.started()
                await trio.sleep_forever()
        finally:
            self._term = None
            self.coordinator = None
            self.close_all(Status.UNAVAILABLE, "leadership moved: reconnect to the leader")

    def close_all(self, status: Status, message: str) -> None:
        """Close every stream (master shutdown or term end): workers reconnect and find the leader."""
        for m in list(self.members.values()):
            if m.session is not None:
                m.session.close(status, message, leader=self.leader_hint())

    def _adopt_previous_members(self) -> None:
        """Workers the previous leader recorded as live get ``dead_timeout`` to re-register."""
        if self._records is None:
            return
        for wid, rec in list(self._records.items()):
            state = WState(rec.state) if rec.state else None
            if state in (None, WState.DEAD):
                continue
            m = self._member_from_record(rec)
            m.persisted = state
            self.members[wid] = m
            self.liveness.register(wid)
            self.liveness.disconnect(wid)
            if state in (WState.DRAINING, WState.DRAINED):
                self.liveness.set_drain(wid, state)

    @staticmethod
    def _member_from_record(rec: state_pb2.WorkerRecord) -> Member:
        return Member(
            worker_id=rec.worker.node_id, addr=rec.worker.addr, labels=dict(rec.worker.labels),
            memory_bytes=rec.capacity.memory_bytes, cpu_cores=rec.capacity.cpu_cores,
            software_version=rec.software_version,
        )

    # ---- WorkerDirectory ---------------------------------------------------

    def eligible(self, pool: str | None) -> list[Any]:
        """ACTIVE workers of ``pool`` (None/'' = the shared workers) as placement WorkerSpecs with reservations."""
        from leibrix.placement import WorkerSpec

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

    def attach(self, coordinator: EpochCoordinator, *, pool_known: Callable[[str], bool] | None = None) -> None:
        """Serve the term's epoch ``coordinator`` (worker events go to it); ``pool_known`` checks pool labels."""
        self.coordinator = coordinator
        self._pool_known = pool_known

    def detach(self, coordinator: EpochCoordinator) -> None:
        """The term of ``coordinator`` is over: stop sending it worker events."""
        if self.coordinator is coordinator:
            self.coordinator = None

    async def before_resign(self, ctx: Any) -> None:
        """Nothing to save: worker membership transitions are written as they happen."""

    def reserved(self, worker_id: str) -> tuple[int, float]:
        """(memory bytes, CPU cores) reserved on a worker by the replicas placed there (the coordinator's sums)."""
        return self.coordinator.reserved(worker_id) if self.coordinator is not None else (0, 0.0)

    def state(self, worker_id: str) -> cp.WorkerState | None:
        """The worker's state as the wire enum, or None if unknown."""
        s = self.liveness.state(worker_id)
        return None if s is None else cp.WorkerState(int(s))

    def addr(self, worker_id: str) -> str | None:
        """The address the worker registered with (for routes), or None if unknown."""
        m = self.members.get(worker_id)
        return None if m is None else m.addr

    async def send(self, worker_id: str, msg: Any) -> bool:
        """Queue ``msg`` (betterproto or upb EventStreamMessage) to the worker; False if no live stream.

        Never blocks: a full queue closes that worker's session (see module doc).
        """
        m = self.members.get(worker_id)
        s = None if m is None else m.session
        if s is None or s.closing.is_set():
            return False
        data = msg.SerializeToString() if hasattr(msg, "SerializeToString") else bytes(msg)
        try:
            s.queue.put_nowait(_Frame(data))
        except asyncio.QueueFull:
            s.close(Status.RESOURCE_EXHAUSTED,
                    f"outbound queue full ({self.config.outbound_queue} messages): worker too slow, reconnect")
            return False
        return True

    async def evict(self, worker_id: str, tenant: str, dataset: str, epoch: str, reason: str) -> bool:
        """Send ``evict_epoch`` (the Rust worker's command) for one epoch."""
        return await self.send(worker_id, self._command(worker_id, "evict_epoch", {
            "tenant_id": tenant, "dataset_id": dataset, "epoch_id": epoch, "reason": reason}, tenant=tenant))

    # ---- state changes (Trio side) ------------------------------------------

    async def persist(self, worker_id: str, state: WState) -> None:
        """Write ``workers/<w>`` with ``state`` through the fenced writer (a transition, never a tick).

        Writes are group-committed by the term's record writer: thousands of
        workers re-registering with a new leader become a few transactions,
        not thousands, so the storm cannot starve the lease keepalive.
        """
        term = self._term
        m = self.members.get(worker_id)
        if term is None or m is None:
            raise Unavailable("not the leader", leader=self.leader_hint())
        if m.persisted is state:
            return
        rec = state_pb2.WorkerRecord(software_version=m.software_version, state=int(state))
        rec.worker.node_id, rec.worker.addr = m.worker_id, m.addr
        rec.worker.labels.update(m.labels)
        rec.capacity.memory_bytes, rec.capacity.cpu_cores = m.memory_bytes, m.cpu_cores
        rec.registered_at.FromSeconds(int(m.registered_wall or time.time()))
        batch = term.batch
        batch.ops[self.keys.worker(worker_id)] = rec.SerializeToString()
        term.batch_ready.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error
        m.persisted = state

    async def _record_writer(self) -> None:
        """Commit pending worker records, one fenced transaction per batch (group commit)."""
        term = self._term
        assert term is not None
        while True:
            await term.batch_ready.wait()
            term.batch_ready = trio.Event()
            batch, term.batch = term.batch, _Batch()
            items = list(batch.ops.items())
            try:
                for i in range(0, len(items), _MAX_BATCH):
                    await term.ctx.writer.commit([Put(k, v) for k, v in items[i:i + _MAX_BATCH]])
            except Fenced as e:
                batch.error = e
                raise  # the term is over: the master ends it
            except EtcdError as e:
                batch.error = e  # these registrations fail (UNAVAILABLE); workers retry
            except BaseException:
                batch.error = Unavailable("leadership ended", leader=self.leader_hint())
                raise
            finally:
                batch.done.set()

    async def set_drain(self, worker_id: str, state: WState | None) -> None:
        """Mark a worker DRAINING/DRAINED (no new placements), persisted; None cancels a drain."""
        self.liveness.set_drain(worker_id, state)
        await self.persist(worker_id, state or WState.ACTIVE)

    async def command(self, worker_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """Send a ``common_ack`` command (``drain_command``, ``reconnect``...)."""
        return await self.send(worker_id, self._command(worker_id, event_type, payload))

    def _command(self, worker_id: str, event_type: str, payload: dict[str, Any], *, tenant: str = "") -> pb.EventStreamMessage:
        msg = pb.EventStreamMessage(event_id=uuid.uuid4().hex, worker_id=worker_id, tenant_id=tenant)
        msg.common_ack.server_id = self.master_id
        msg.common_ack.event_type = event_type
        msg.common_ack.payload.update(payload)
        return msg

    def _wake_sweeper(self) -> None:
        self._wake.set()

    def _capacity_changed(self) -> None:
        """A worker became placeable: tell the coordinator, coalesced (one call per burst, not per worker)."""
        self._capacity.set()

    async def _capacity_notifier(self) -> None:
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
                self._on_transition(t)
                if t.new is WState.DEAD:
                    term.nursery.start_soon(self._on_dead, t.worker_id)
            self._wake = trio.Event()
            nxt = self.liveness.next_deadline()
            with trio.move_on_at(nxt if nxt is not None else math.inf):
                await self._wake.wait()

    def _on_transition(self, t: Transition) -> None:
        log.info("worker %s: %s -> %s", t.worker_id, t.old.name if t.old else "-", t.new.name)

    async def _on_dead(self, worker_id: str) -> None:
        """Record a DEAD worker and have its replicas re-placed; times DEAD → all assignments sent."""
        term = self._term
        m = self.members.get(worker_id)
        if m is not None and m.session is not None:
            m.session.close(Status.UNAVAILABLE, "declared DEAD")
        try:
            await self.persist(worker_id, WState.DEAD)
        except (Unavailable, EtcdError) as e:
            # etcd unreachable (or the term ending): the next leader re-detects it from the record
            log.warning("could not record worker %s DEAD: %s", worker_id, e)
            return
        if term is not None and self.coordinator is not None:
            started = self._clock()
            await self.coordinator.on_worker_dead(worker_id)
            self.last_replace_s = self._clock() - started
            log.info("worker %s DEAD: replicas re-placed in %.3fs", worker_id, self.last_replace_s)

    async def _rebalancer(self) -> None:
        """Throttled join rebalancing: ≤ ``rebalance_max_moves`` make-before-break moves per interval."""
        cfg = self.config
        while True:
            await trio.sleep(cfg.rebalance_interval)
            term = self._term
            if term is None or self.coordinator is None or not self._joined:
                continue
            moved = await self._rebalance_once(self.coordinator)
            self.rebalance_moves.append(moved)
            if moved == 0:
                self._joined.clear()  # balanced: wait for the next join

    async def _rebalance_once(self, coordinator: EpochCoordinator) -> int:
        """Plan ≤ the throttle moves from the fullest to the emptiest ACTIVE workers of each pool; run them.

        The plan assumes each moved replica lands on the emptiest worker (the
        coordinator picks the destination with the epoch's strategy); it stops
        when the replica counts of a pool differ by at most one.
        """
        budget = self.config.rebalance_max_moves
        pools: dict[str, list[str]] = {}
        for m in self.members.values():
            w = self.liveness.get(m.worker_id)
            if w is not None and w.placeable:
                pools.setdefault(m.pool, []).append(m.worker_id)
        plan: list[tuple[str, str, str, str]] = []
        for wids in pools.values():
            # counts in constant time, and only the donors' first few movable replicas: a pass costs the
            # same at 100,000 replicas as at 10 (listing and sorting them all stalled the loop ~130 ms)
            counts = {wid: coordinator.replica_count(wid) for wid in wids}
            movable: dict[str, list[tuple[str, str, str]]] = {}
            while len(plan) < budget and len(counts) > 1:
                donor = max(counts, key=counts.__getitem__)
                receiver = min(counts, key=counts.__getitem__)
                if donor not in movable:
                    movable[donor] = coordinator.movable_replicas(donor, budget)
                if counts[donor] - counts[receiver] <= 1 or not movable[donor]:
                    break
                t, d, e = movable[donor].pop()
                plan.append((t, d, e, donor))
                counts[donor] -= 1
                counts[receiver] += 1
        moved = 0

        async def move(t: str, d: str, e: str, wid: str) -> None:
            nonlocal moved
            if await coordinator.move_replica(t, d, e, wid, make_before_break=True):
                moved += 1

        async with trio.open_nursery() as n:
            for p in plan:
                n.start_soon(move, *p)
        return moved

    # ---- the stream (asyncio side) ------------------------------------------

    async def _handle(self, stream: grpclib.server.Stream) -> None:
        """One worker stream, start to end: register, serve, and close with a precise status."""
        session: _Session | None = None
        close = _Close(Status.OK, "")
        try:
            try:
                first = await asyncio.wait_for(self._recv(stream), self.config.register_timeout)
            except asyncio.TimeoutError:
                raise _Close(Status.DEADLINE_EXCEEDED,
                             f"no register_event within {self.config.register_timeout:g}s") from None
            if first is None:
                return
            if self._registering is None:
                self._registering = asyncio.Semaphore(self.config.max_registering)
            async with self._registering:  # a reconnect storm queues here, not in the event loop
                session = await self._register(stream, first)
            close = await self._serve(stream, session)
        except _Close as c:
            close = c
        except ApiError as e:
            close = _Close(e.status, e.message, reject=session is None,
                           leader=getattr(e, "leader", ""))
        except (Fenced, EtcdError) as e:  # not the worker's fault: retry (elsewhere)
            close = _Close(Status.UNAVAILABLE, f"cannot record the worker now, retry: {e}",
                           reject=session is None, leader=self.leader_hint())
        finally:
            if session is not None:
                self._detach(session)
        try:
            if close.reject:
                msg = self._command("", "registration_reject", {"reason": close.message, "leader": close.leader})
                await stream.send_message(_Frame(msg.SerializeToString()))
                await self._await_half_close(stream)
            metadata = {LEADER_METADATA: close.leader} if close.leader else None
            await stream.send_trailing_metadata(status=close.status, status_message=close.message or None,
                                                metadata=metadata)
        except (h2.exceptions.StreamClosedError, ConnectionError, grpclib.exceptions.ProtocolError):
            pass  # the worker has gone; nothing to tell it

    async def _await_half_close(self, stream: grpclib.server.Stream, timeout: float = 1.0) -> None:
        """Give the worker a moment to read the reject ack and half-close.

        grpclib resets a stream that ends non-OK while the client is still
        sending, and a reset discards the ack the client has not read yet; a
        worker that half-closes after the reject (ours and the Rust worker do)
        gets both the ack and the status.
        """
        try:
            async with asyncio.timeout(timeout):
                while await stream._stream.recv_data(1 << 16):
                    pass
        except (TimeoutError, h2.exceptions.StreamClosedError, ConnectionError,
                grpclib.exceptions.StreamTerminatedError):
            pass

    async def _recv(self, stream: grpclib.server.Stream) -> pb.EventStreamMessage | None:
        """Read one frame ourselves: the size limit applies before the body is buffered."""
        raw = stream._stream  # grpclib 0.4.9's protocol stream (pinned); see module doc
        meta = await raw.recv_data(5)
        if not meta:
            return None
        if len(meta) != 5:
            raise _Close(Status.INVALID_ARGUMENT, "truncated gRPC frame prefix")
        compressed, length = struct.unpack(">?I", meta)
        if compressed:
            raise _Close(Status.INVALID_ARGUMENT, "compressed frames are not supported (grpc-encoding identity)")
        if length > self.config.max_message_bytes:
            raise _Close(Status.RESOURCE_EXHAUSTED,
                         f"message of {length} bytes exceeds max_message_bytes={self.config.max_message_bytes}")
        body = await raw.recv_data(length)
        if len(body) != length:
            raise _Close(Status.INVALID_ARGUMENT, f"truncated message: {len(body)} of {length} bytes")
        try:
            return pb.EventStreamMessage.FromString(body)
        except DecodeError:
            raise _Close(Status.INVALID_ARGUMENT,
                         f"message of {length} bytes is not a leibrix_cp.EventStreamMessage") from None

    async def _register(self, stream: grpclib.server.Stream, msg: pb.EventStreamMessage) -> _Session:
        kind = msg.WhichOneof("payload")
        if self._term is None:
            leader = self.leader_hint()
            raise _Close(Status.UNAVAILABLE, f"not the leader; leader is {leader or 'unknown'}",
                         reject=True, leader=leader)
        if kind != "register_event":
            raise _Close(Status.FAILED_PRECONDITION,
                         f"first message must be register_event, got {kind or 'no payload'}", reject=True)
        reg = msg.register_event
        m = self._validate(msg)
        old = self.members.get(m.worker_id)
        if old is not None and old.session is not None:
            raise _Close(Status.ALREADY_EXISTS,
                         f"worker {m.worker_id!r} already has a live stream from {old.session.peer}", reject=True)
        peer = stream.peer.addr() if stream.peer else None
        session = _Session(m.worker_id, f"{peer[0]}:{peer[1]}" if peer else "?",
                           asyncio.Queue(maxsize=self.config.outbound_queue))
        if old is not None:  # keep what outlives a session
            m.persisted, m.drain, m.registered_wall = old.persisted, old.drain, old.registered_wall
        m.session = session
        m.registered_wall = m.registered_wall or time.time()
        m.last_seen_wall = time.time()
        self.members[m.worker_id] = m
        # upb entries as they are: converting 10,000 of them to betterproto took seconds of the loop
        inventory = list(reg.inventory)
        try:
            await call_trio(self._admit, m, inventory)
        except BaseException:
            m.session = None
            raise
        return session

    def _validate(self, msg: pb.EventStreamMessage) -> Member:
        reg = msg.register_event
        wid = reg.worker.node_id or msg.worker_id
        field_name = "register_event.worker.node_id"
        if not wid:
            raise InvalidArgument(field_name, "worker id is required")
        if not _WORKER_ID.fullmatch(wid):
            raise InvalidArgument(field_name, f"{wid[:64]!r} must match {_WORKER_ID.pattern}")
        if reg.HasField("capacity"):
            mem, cpu = reg.capacity.memory_bytes, reg.capacity.cpu_cores
            if mem <= 0:
                raise InvalidArgument("register_event.capacity.memory_bytes", f"must be > 0, got {mem}")
            if not (cpu > 0 and math.isfinite(cpu)):
                raise InvalidArgument("register_event.capacity.cpu_cores", f"must be a finite number > 0, got {cpu}")
        else:
            mem, cpu = self.config.default_memory_bytes, self.config.default_cpu_cores
        m = Member(worker_id=wid, addr=reg.worker.addr, labels=dict(reg.worker.labels), memory_bytes=mem,
                   cpu_cores=cpu, software_version=reg.software_version)
        if m.pool and self._pool_known is not None and not self._pool_known(m.pool):
            raise NotFound(f"register_event.worker.labels: pool {m.pool!r} names no known tenant")
        return m

    async def _admit(self, m: Member, inventory: list[pb.InventoryEntry]) -> None:
        """Trio side of a registration: liveness, record, ack, then reconcile."""
        term = self._term
        if term is None:
            raise Unavailable("not the leader", leader=self.leader_hint())
        t = self.liveness.register(m.worker_id)
        joined = t.old in (None, WState.DEAD)
        self._wake_sweeper()
        drain = self.liveness.get(m.worker_id).drain
        await self.persist(m.worker_id, drain or WState.ACTIVE)
        await self.send(m.worker_id, self._command(m.worker_id, "registration_ack", {
            "heartbeat_interval_s": self.config.heartbeat_interval,
            "master_id": self.master_id,
            "term": str(term.token),
            "state": t.new.name,
        }))
        log.info("worker %s registered (%s -> %s) with %d inventory entries",
                 m.worker_id, t.old.name if t.old else "-", t.new.name, len(inventory))
        if joined:
            self._joined.add(m.worker_id)
        if self.coordinator is not None:
            await self.coordinator.on_registered(m.worker_id, inventory)
        self._capacity_changed()

    async def _serve(self, stream: grpclib.server.Stream, session: _Session) -> _Close:
        """Run reader and sender until either ends or the hub closes the session."""
        reader = asyncio.ensure_future(self._read_loop(stream, session))
        sender = asyncio.ensure_future(self._send_loop(stream, session))
        statuses = asyncio.ensure_future(self._status_loop(session))
        closing = asyncio.ensure_future(session.closing.wait())
        tasks = (reader, sender, statuses, closing)
        try:
            done, _ = await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if session.reason is not None:
            return session.reason
        for t in (reader, sender, statuses):
            if t in done and t.exception() is not None:
                raise t.exception()
        return _Close(Status.OK, "")

    async def _send_loop(self, stream: grpclib.server.Stream, session: _Session) -> None:
        while True:
            await stream.send_message(await session.queue.get())

    async def _read_loop(self, stream: grpclib.server.Stream, session: _Session) -> None:
        wid = session.worker_id
        m = self.members[wid]
        live = self.liveness
        while True:
            msg = await self._recv(stream)
            if msg is None:
                return
            if live.seen(wid) is not None:
                self._capacity_changed()  # SUSPECT -> ACTIVE: placeable again
            m.last_seen_wall = time.time()
            kind = msg.WhichOneof("payload")
            if kind == "heartbeat_event":
                hb = msg.heartbeat_event
                if hb.HasField("memory_used_bytes"):
                    m.memory_used_bytes = hb.memory_used_bytes
                if hb.HasField("loads_in_flight"):
                    m.loads_in_flight = hb.loads_in_flight
            elif kind == "data_pull_status_update":
                await session.statuses.put(msg.data_pull_status_update)
            elif kind == "register_event":
                session.close(Status.FAILED_PRECONDITION, f"worker {wid!r} is already registered on this stream")
                return
            elif kind in _PAYLOAD_FROM_MASTER:
                session.close(Status.INVALID_ARGUMENT, f"payload: {kind} is master-to-worker only")
                return
            else:
                session.close(Status.INVALID_ARGUMENT,
                              "payload: none of register_event, heartbeat_event, data_pull_status_update is set")
                return

    async def _status_loop(self, session: _Session) -> None:
        """Hand a session's status reports to the coordinator, in order, apart from its reader.

        The reader only queues them: a coordinator that is busy (a long
        scheduling pass, thousands of loads finishing at once) must never stop
        the stream from being read, or the worker's heartbeats would wait behind
        its statuses and a healthy worker be declared DEAD. Whatever has queued
        up crosses into Trio in one call (each crossing costs a handful of
        reference cycles for the garbage collector).
        """
        queue = session.statuses
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < _MAX_BATCH:
                batch.append(queue.get_nowait())
            updates = [cp.DataPullStatusUpdateEvent().parse(u.SerializeToString()) for u in batch]
            try:
                await call_trio(self._on_statuses, session.worker_id, updates)
            except FailedPrecondition as e:
                session.close(Status.FAILED_PRECONDITION, e.message)
                return

    async def _on_statuses(self, worker_id: str, updates: list[cp.DataPullStatusUpdateEvent]) -> None:
        term = self._term
        if term is None:
            raise Unavailable("not the leader", leader=self.leader_hint())
        for update in updates:
            if self.coordinator is None:
                raise FailedPrecondition(f"data_pull_status_update: epoch {update.dataset_id}/{update.epoch_id} "
                                         f"was never assigned to {worker_id}")
            await self.coordinator.on_status(worker_id, update)

    def _detach(self, session: _Session) -> None:
        m = self.members.get(session.worker_id)
        if m is None or m.session is not session:
            return
        m.session = None
        t = self.liveness.disconnect(session.worker_id)
        if t is not None:
            self._on_transition(t)
        if self._term is not None:
            self._wake_sweeper()

    # ---- views for the API ---------------------------------------------------

    def info(self, worker_id: str) -> cp.WorkerInfo:
        """One worker as the Management API shows it (NotFound if unknown)."""
        m = self.members.get(worker_id)
        w = self.liveness.get(worker_id)
        if m is None or w is None:
            raise NotFound(f"worker {worker_id!r} is not known to the leader")
        from datetime import datetime, timezone

        term = self._term
        used_mem, used_cpu = self.reserved(worker_id)
        replicas = self.coordinator.replica_count(worker_id) if term and self.coordinator else 0
        return cp.WorkerInfo(
            worker_id=worker_id, addr=m.addr, labels=dict(m.labels), state=cp.WorkerState(int(w.state)),
            capacity=cp.Resources(memory_bytes=m.memory_bytes, cpu_cores=m.cpu_cores),
            reserved=cp.Resources(memory_bytes=used_mem, cpu_cores=used_cpu),
            memory_used_bytes=m.memory_used_bytes, loads_in_flight=m.loads_in_flight, replicas=replicas,
            last_seen=datetime.fromtimestamp(m.last_seen_wall or m.registered_wall or time.time(), tz=timezone.utc),
            software_version=m.software_version,
        )

    async def infos(self) -> list[cp.WorkerInfo]:
        """Every known worker, sorted by id; yields to the loop every 100 so 5,000 never stall the lease."""
        out = []
        for i, wid in enumerate(sorted(self.members)):
            if i % 100 == 99:
                await trio.sleep(0)
            if wid in self.members:
                out.append(self.info(wid))
        return out
