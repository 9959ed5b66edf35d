"""Harness for unit tests of the control loop: the real coordinator and admission queue, no etcd, no processes.

* :class:`MemoryStore` is a fenced writer over a dict: ``commit`` cuts the
  commit into transactions exactly as the real ``FencedWriter`` does (its
  ``plan``, within ``TxnLimits``), checks each one's compares against its own
  revisions, applies its Put/Delete, and feeds the changes to a real
  :class:`~leibrix.store._store.Mirror` (``apply_local``), which feeds the
  real :class:`~leibrix.state._model.ClusterState`, exactly as a leader's own
  writes do. :meth:`MemoryStore.fail_after` makes a later transaction fail
  (etcd gone, a refusal, the term lost) after a given number went through.
* :class:`RecordingWorkers` is a ``WorkerDirectory`` of workers that exist
  only as records: it answers ``eligible`` from their capacity and the
  state's reservations, and records every command sent.
* :class:`ControlLoop` wires both to a :class:`Coordinator` and an
  :class:`Admissions` queue; every write and command lands in one
  ``journal``, so a test can assert their order.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import math

import trio

from leibrix.control._admission import AdmissionConfig, Admissions
from leibrix.control._coordinator import Coordinator
from leibrix.control._settings import CoordinatorConfig
from leibrix.domain._validation import AdmissionLimits, validate_admission
from leibrix.placement import WorkerSpec
from leibrix.state._model import ClusterState, Epoch, EpochKey, decode_epoch, encode_tenant, now_ms
from leibrix.store._election import Term
from leibrix.store._etcd import Compare, Delete, Put
from leibrix.store._store import Atomic, Conflict, FencedWriter, Keys, Mirror, TxnLimits
from leibrix.wire._proto import leibrix_cp as cp

KEYS = Keys("unit")
STATUS = cp.DataPullStatusUpdateEventStatus


class MemoryStore:
    """An in-memory key space with etcd's revision rules for ``commit(ops, *, compares=())``."""

    def __init__(self, mirror: Mirror, journal: list[tuple[Any, ...]], limits: TxnLimits = TxnLimits()) -> None:
        self.mirror = mirror
        self.journal = journal
        self.revision = 0
        #: key -> (value, create revision, mod revision)
        self.kv: dict[str, tuple[bytes, int, int]] = {}
        #: Only its ``plan`` is used: the real writer's cut of a commit into transactions.
        self.planner = FencedWriter(None, Term(1, 0, KEYS.root + "leader", 1.0, math.inf),  # type: ignore[arg-type]
                                    limits=limits)
        #: Transactions applied so far.
        self.txns = 0
        self._fail: tuple[int, BaseException] | None = None

    def fail_after(self, txns: int, error: BaseException | None) -> None:
        """Let ``txns`` more transactions through, then fail every later one with ``error`` (None: stop failing)."""
        self._fail = None if error is None else (self.txns + txns, error)

    def _target(self, c: Compare) -> object:
        value, create, mod = self.kv.get(c.key, (b"", 0, 0))
        return {"create": create, "mod": mod, "value": value}[c.target]

    async def commit(self, items: list[Put | Delete | Atomic], *,
                     compares: tuple[Compare, ...] | list[Compare] = ()) -> int:
        revision = self.revision
        for guards, ops in self.planner.plan(items, compares):
            revision = await self._txn(guards, ops)
        return revision

    async def _txn(self, compares: list[Compare], ops: list[Put | Delete]) -> int:
        await trio.lowlevel.checkpoint()
        if self._fail is not None and self.txns >= self._fail[0]:
            raise self._fail[1]
        for c in compares:
            have, want = self._target(c), c.value
            if not {"==": have == want, "!=": have != want, "<": have < want, ">": have > want}[c.op]:
                raise Conflict(f"compare failed: {c}")
        self.revision += 1
        epochs: list[tuple[str, str]] = []
        for op in ops:
            if isinstance(op, Put):
                old = self.kv.get(op.key)
                self.kv[op.key] = (op.value, old[1] if old else self.revision, self.revision)
                if op.key.startswith(KEYS.root + Keys.EPOCHS):
                    e = decode_epoch(op.value)
                    epochs.append((e.epoch_id, e.state.name))
            else:
                for k in [k for k in self.kv if k == op.key or (op.prefix and k.startswith(op.key))]:
                    del self.kv[k]
        self.mirror.apply_local(ops, self.revision)
        self.txns += 1
        self.journal.append(("commit", tuple(epochs)))
        return self.revision


@dataclass
class _Worker:
    memory_bytes: int
    cpu_cores: float
    zone: str | None
    pool: str


@dataclass
class RecordingWorkers:
    """A ``WorkerDirectory`` whose workers are records; commands are recorded, never sent anywhere."""

    journal: list[tuple[Any, ...]]
    reserved: Callable[[str], tuple[int, float]] = lambda w: (0, 0.0)
    members: dict[str, _Worker] = field(default_factory=dict)
    #: (worker, epoch id, plan id) of every ``data_assignment`` sent
    assigned: list[tuple[str, str, str]] = field(default_factory=list)
    #: (worker, epoch id, reason) of every ``evict_epoch`` sent
    evicted: list[tuple[str, str, str]] = field(default_factory=list)
    #: epoch id -> the last ``LoadPlan`` sent for it
    plans: dict[str, Any] = field(default_factory=dict)

    def join(self, worker_id: str, memory_bytes: int = 1 << 30, cpu_cores: float = 8.0, *,
             zone: str | None = None, pool: str = "") -> None:
        self.members[worker_id] = _Worker(memory_bytes, cpu_cores, zone, pool)

    def leave(self, worker_id: str) -> None:
        del self.members[worker_id]

    def eligible(self, pool: str | None) -> list[WorkerSpec]:
        """Workers whose pool label is ``pool`` (None or "": workers without one), like the hub's."""
        out = []
        for wid, w in self.members.items():
            if w.pool == (pool or ""):
                used_mem, used_cpu = self.reserved(wid)
                out.append(WorkerSpec(wid, w.memory_bytes, w.cpu_cores, zone=w.zone, used_memory_bytes=used_mem,
                                      used_cpu_cores=used_cpu))
        return out

    def state(self, worker_id: str) -> cp.WorkerState | None:
        return cp.WorkerState.ACTIVE if worker_id in self.members else None

    def addr(self, worker_id: str) -> str | None:
        return f"{worker_id}.test:9000" if worker_id in self.members else None

    async def send(self, worker_id: str, msg: Any) -> bool:
        await trio.lowlevel.checkpoint()
        if worker_id not in self.members:
            return False
        a = msg.data_assignment
        self.assigned.append((worker_id, a.epoch_id, a.load_plan.plan_id))
        self.plans[a.epoch_id] = a.load_plan
        self.journal.append(("assign", worker_id, a.epoch_id))
        return True

    async def evict(self, worker_id: str, tenant: str, dataset: str, epoch: str, reason: str) -> bool:
        await trio.lowlevel.checkpoint()
        self.evicted.append((worker_id, epoch, reason))
        self.journal.append(("evict", worker_id, epoch))
        return worker_id in self.members

    def assignments_to(self, worker_id: str) -> list[str]:
        """Epoch ids assigned to ``worker_id``, in order."""
        return [e for w, e, _ in self.assigned if w == worker_id]


class ControlLoop:
    """A term's coordinator and admission queue over :class:`MemoryStore` and :class:`RecordingWorkers`."""

    def __init__(self, config: CoordinatorConfig = CoordinatorConfig(), limits: TxnLimits = TxnLimits(),
                 admission: AdmissionConfig = AdmissionConfig(limits=AdmissionLimits())) -> None:
        self.journal: list[tuple[Any, ...]] = []
        self.mirror = Mirror(None, KEYS)  # type: ignore[arg-type]  # fed only by apply_local
        self.state = ClusterState()
        requests = self.state.attach(self.mirror)
        self.store = MemoryStore(self.mirror, self.journal, limits)
        self.workers = RecordingWorkers(self.journal)
        self.coord = Coordinator(state=self.state, commit=self.store.commit, keys=KEYS, hub=self.workers,
                                 config=config, clock=trio.current_time)
        self.workers.reserved = self.coord.reserved
        self.admissions = Admissions(state=self.state, coordinator=self.coord, keys=KEYS, requests=requests,
                                     config=admission)

    async def start(self, nursery: trio.Nursery) -> ControlLoop:
        """Run the admission batcher (scheduling passes are driven by the test with :meth:`schedule`)."""
        await nursery.start(self.admissions.run)
        return self

    async def tenant(self, tenant_id: str = "acme", **quota: Any) -> None:
        """Upsert a tenant's quota record (``quota``: ``TenantQuota`` fields)."""
        q = cp.TenantQuota(tenant_id=tenant_id, **quota)
        await self.store.commit([Put(KEYS.tenant(tenant_id), encode_tenant(q, now_ms()))])

    async def admit(self, request: cp.AdmitDatasetRequest) -> cp.AdmitDatasetResponse:
        """Validate and admit one request through the admission queue."""
        return await self.admissions.admit(validate_admission(request, AdmissionLimits()))

    async def schedule(self) -> None:
        """One scheduling pass."""
        await self.coord.schedule()

    async def report(self, worker_id: str, key: EpochKey, status: cp.DataPullStatusUpdateEventStatus, *,
                     rows: int | None = None, error: str = "", size: int | None = None,
                     schema_fingerprint: str = "") -> None:
        """A worker's status report for its current plan of ``key`` (its rows and bytes those expected unless
        given), committed before this returns."""
        e = self.epoch(key)
        plan = next((r.plan_id for r in e.replicas if r.worker_id == worker_id), e.plan_id)
        await self.coord.on_status(worker_id, cp.DataPullStatusUpdateEvent(
            dataset_id=key[1], epoch_id=key[2], status=status, plan_id=plan,
            rows=e.rows if rows is None else rows, bytes=e.memory_bytes if size is None else size,
            error_message=error, schema_fingerprint=schema_fingerprint))
        await self.flush()

    async def flush(self) -> None:
        """Commit staged status reports now and run their follow-ups."""
        async with self.coord.lock:
            await self.coord.flush_locked()

    def epoch(self, key: EpochKey) -> Epoch:
        return self.state.epochs[key]

    def keys(self, tenant_id: str = "acme", dataset_id: str = "orders") -> list[EpochKey]:
        """The dataset's epoch keys, oldest window first."""
        return [e.key for e in sorted(self.state.dataset_epochs(tenant_id, dataset_id), key=lambda e: e.start_ms)]

    def states(self, tenant_id: str = "acme", dataset_id: str = "orders") -> list[str]:
        """The dataset's epoch states, oldest window first."""
        return [self.state.epochs[k].state.name for k in self.keys(tenant_id, dataset_id)]
