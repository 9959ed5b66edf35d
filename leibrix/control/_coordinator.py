"""The epoch coordinator: drives every epoch from PENDING to READY and back out, on the leader.

It is the ``EpochCoordinator`` half of the seam with the worker hub
(``leibrix.workers._hub``): the hub tells it what workers report (status,
registration inventories, capacity, deaths) and it answers with commands on
their streams (``data_assignment`` with a LoadPlan, ``common_ack``
``evict_epoch``). Everything it changes is a fenced etcd write made *before*
the command is sent, so a new leader that reads etcd knows every command the
old one could have sent.

One scheduling pass (``schedule``), run whenever something changed and on
retry timers:

1. **Repair**: charged epochs with fewer live replicas than their replication
   factor (a worker died, a load failed) get the missing replicas, placed with
   the epoch's strategy and ``existing=`` the survivors (minimal movement).
2. **Residency by benefit**: PENDING epochs, highest benefit first (tenant
   priority breaks ties), are loaded when their tenant's hard budget has room
   and the strategy finds workers in the tenant's pool. When the cluster is
   full, a candidate may displace resident epochs (of any tenant sharing the
   pool) whose benefit is lower by at least the hysteresis factor; displaced
   epochs go back to PENDING and are evicted. Budgets are never loosened for
   this: benefit decides *among* tenants, quotas bound *each* tenant.

Loads: PENDING → LOADING (replicas ASSIGNED) → VALIDATING (first replica
reports COMPLETED) → READY once ``replication_factor`` replicas are LOADED and
each matched its plan (rows exactly when the plan knows them and the worker
reports them, bytes at most ``bytes_tolerance`` × the estimate, and the
schema fingerprint equal to the dataset's when the worker reports one; see
``_validate``). A reconnecting worker's inventory goes through the same
check. A failed or
invalid load evicts that replica and counts an attempt; after
``RetryPolicy.max_attempts`` the epoch is FAILED and every replica evicted. A
refresh epoch that becomes READY retires the epoch it replaces in the same
write (make-before-break: routes switch, never vanish).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import trio

from leibrix.domain import _epochs
from leibrix.domain import _schema
from leibrix import placement as pl
from leibrix.domain._errors import FailedPrecondition
from leibrix.store._etcd import Compare, Delete, Put
from leibrix.domain._heat import Heat, HeatModel
from leibrix.domain._lifecycle import CHARGED, RetryPolicy, State, transition
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.state._model import (
    ASSIGNED,
    EVICTING,
    LOADED,
    ClusterState,
    Dataset,
    Epoch,
    EpochKey,
    Replica,
    encode_epoch,
    now_ms,
)
from leibrix.store._store import Keys
from leibrix.workers._protocols import WorkerDirectory
from leibrix.domain._tenants import Amount, budget_shortfall

log = logging.getLogger(__name__)

_STRATEGY_NAMES = {1: "round_robin", 2: "hash", 3: "capacity"}

#: Withdrawn assignments remembered per term (see ``Coordinator.withdrawn``); the oldest are forgotten first.
_WITHDRAWN_MAX = 65_536


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Tunables of placement and residency (defaults suit a small cluster)."""

    default_strategy: int = 3  # CAPACITY
    default_replication: int = 1
    hysteresis: float = 1.5
    bytes_tolerance: float = 2.0
    retry: RetryPolicy = RetryPolicy()
    heat: HeatModel = HeatModel()
    #: Ops per fenced transaction (etcd's --max-txn-ops must be at least this).
    max_txn_ops: int = 1000
    #: Most PENDING epochs placed per scheduling pass (the rest wait for the next).
    max_candidates: int = 5000
    #: Candidates per pass that may try to displace residents when their pool is full.
    max_displacements: int = 16
    move_timeout_s: float = 60.0
    #: Shortest time between two scheduling passes (s): kicks arriving meanwhile are served by one pass, so a
    #: stream of admissions is placed in a few larger fenced writes instead of one write (and pass) each.
    min_pass_interval_s: float = 0.02
    #: Shortest time between two group commits of staged status reports (s), for the same reason.
    min_flush_interval_s: float = 0.01
    #: Seconds between heat checkpoints to etcd (``leibrix.control._heat_checkpoint``).
    heat_checkpoint_interval_s: float = 10.0
    #: Seconds a RETIRED epoch's record is kept before the janitor deletes it (``leibrix.control._janitor``).
    retired_ttl_s: float = 3600.0
    #: Seconds between the janitor's pruning passes.
    prune_interval_s: float = 60.0


class Coordinator:
    """The leader's epoch coordinator for one term (see the module docstring).

    ``commit(ops, *, compares=())`` is the term's ``FencedWriter.commit``.
    """

    def __init__(self, *, state: ClusterState, commit: Callable[..., Awaitable[int]], keys: Keys, hub: WorkerDirectory | None,
                 config: CoordinatorConfig = CoordinatorConfig(),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.state = state
        self._commit = commit
        self.keys = keys
        self.hub = hub
        self.config = config
        self.clock = clock
        self._kick = trio.Event()
        self._strategies: dict[str, pl.Strategy] = {}
        self.pending: set[EpochKey] = set()
        #: RETIRED epochs (the janitor's index: it never walks every epoch to find them).
        self.retired: set[EpochKey] = set()
        #: Epochs fed by ``report_access`` since the last heat checkpoint took them (``leibrix.control._heat_checkpoint``).
        self.heat_dirty: set[EpochKey] = set()
        self.repair: set[EpochKey] = set()
        #: ``(worker, dataset, epoch) → tenant`` of replicas this term took away from a worker (a move,
        #: an eviction, a retirement, a failed load). A status the worker sent before its evict arrived
        #: is late, not bogus: it is answered with an evict instead of closing the stream.
        self.withdrawn: dict[tuple[str, str, str], str] = {}
        self._waiters: dict[EpochKey, list[trio.Event]] = {}
        #: Serialises every read-modify-write of epoch records (scheduling, worker events, admissions):
        #: without it two writers could each commit a copy of the same epoch and lose the other's change.
        self.lock = trio.Lock()
        # Worker status reports are group-committed: each report's change is staged here (under the
        # lock), a flusher writes every staged epoch in one fenced transaction, then runs the follow-up
        # commands (the reporter does not wait: see ``on_status``). Lock holders flush first, so they never read
        # a stale copy of a staged epoch.
        self._staged: dict[EpochKey, Epoch] = {}
        self._after: list[Callable[[], Awaitable[None]]] = []
        self._dirty = trio.Event()
        for e in state.epochs.values():
            e.heat = None  # a new term resumes from the stored checkpoints, not from an older term's memory
            self._track(None, e)
        state.listeners.append(self._track)

    def close(self) -> None:
        """Stop following state changes (end of term)."""
        if self._track in self.state.listeners:
            self.state.listeners.remove(self._track)

    # ------------------------------------------------------------ bookkeeping

    def _track(self, old: Epoch | None, new: Epoch | None) -> None:
        e = new or old
        assert e is not None
        key = e.key
        if new is not None and new.state is State.PENDING:
            self.pending.add(key)
        else:
            self.pending.discard(key)
        if new is not None and new.state is State.RETIRED:
            self.retired.add(key)
        else:
            self.retired.discard(key)
        if new is None:
            self.heat_dirty.discard(key)
        if old is not None and old.replicas and (new is None or new.replicas != old.replicas):
            kept = new.worker_ids() if new is not None else ()
            for w in old.worker_ids():
                if w not in kept:
                    self.withdrawn[(w, e.dataset_id, e.epoch_id)] = e.tenant_id
            while len(self.withdrawn) > _WITHDRAWN_MAX:
                del self.withdrawn[next(iter(self.withdrawn))]
        if new is None or new.state not in CHARGED or new.state is State.RETIRING:
            self.repair.discard(key)
        elif len(self._live(new)) < self.state.replication(new):
            self.repair.add(key)
        else:
            self.repair.discard(key)
        for ev in self._waiters.pop(key, ()):
            ev.set()

    @staticmethod
    def _live(e: Epoch) -> list[Replica]:
        return [r for r in e.replicas if r.state != EVICTING]

    def kick(self) -> None:
        """Ask for a scheduling pass soon (cheap; passes coalesce)."""
        self._kick.set()

    def heat(self, e: Epoch, now: float | None = None) -> Heat:
        """The epoch's heat, leader-local; on first use in a term it is seeded from the epoch's stored
        checkpoint (decayed by the wall-clock time since it was written), else from the prior.

        Seeding lazily, one epoch at a time, keeps a takeover free of any walk
        over the checkpoints: the Mirror already holds them, undecoded.
        """
        if e.heat is None:
            now = self.clock() if now is None else now
            records = self.state.heat_records
            raw = records.get("/".join(e.key)) if records else None
            model = self.config.heat
            e.heat = Heat.new(model, now) if raw is None else Heat.restore(raw, model, now, time.time())
        return e.heat

    def benefits(self, epochs: Sequence[Epoch], now: float) -> list[float]:
        """``scan_cost × heat ÷ memory`` of many epochs in one ``leibrix.placement.benefit`` call."""
        if not epochs:
            return []
        model = self.config.heat
        heats = [self.heat(e, now) for e in epochs]
        scan = np.fromiter((h.scan_cost(e.scan_cost) for h, e in zip(heats, epochs)), float, len(epochs))
        heat = np.fromiter((h.get(model, now) for h in heats), float, len(epochs))
        mem = np.fromiter((max(1, e.memory_bytes) for e in epochs), float, len(epochs))
        return pl.benefit(scan, heat, mem).tolist()

    def benefit(self, e: Epoch, now: float) -> float:
        """One epoch's benefit (see ``benefits``)."""
        return self.benefits([e], now)[0]

    def report_access(self, e: Epoch, count: int, scanned_bytes: int) -> None:
        """Feed an access report into the epoch's heat; a hotter PENDING epoch may now be loaded.

        The epoch is only marked dirty here: the heat checkpointer writes it
        at its next interval, so etcd sees at most one write per accessed
        epoch per interval however many reports arrive.
        """
        now = self.clock()
        e.heat = self.heat(e, now).fed(self.config.heat, now, count, scanned_bytes)
        self.heat_dirty.add(e.key)
        if e.state is State.PENDING:
            self.kick()

    def reserved(self, worker_id: str) -> tuple[int, float]:
        """(memory bytes, CPU cores) reserved on a worker by replicas of charged epochs (the hub's ``reserved_fn``)."""
        mem, cpu = self.state.reserved.get(worker_id, (0, 0.0))
        return int(mem), max(0.0, cpu)

    def replicas_on(self, worker_id: str) -> list[tuple[str, str, str]]:
        """``(tenant, dataset, epoch)`` of every replica held or assigned on ``worker_id``."""
        return sorted(self.state.by_worker.get(worker_id, ()))

    def replica_count(self, worker_id: str) -> int:
        """How many replicas ``worker_id`` holds or is assigned (constant time)."""
        return len(self.state.by_worker.get(worker_id, ()))

    def movable_replicas(self, worker_id: str, limit: int) -> list[tuple[str, str, str]]:
        """Up to ``limit`` replicas on ``worker_id`` worth moving (join rebalancing): loaded ones of READY
        epochs. A replica still loading is never moved (it would load twice). Stops at ``limit`` instead of
        walking (and sorting) everything the worker holds."""
        out: list[tuple[str, str, str]] = []
        for key in self.state.by_worker.get(worker_id, ()):
            e = self.state.epochs.get(key)
            if e is not None and e.state is State.READY and worker_id in e.worker_ids(LOADED):
                out.append(key)
                if len(out) >= limit:
                    break
        return out

    def dataset_of(self, e: Epoch) -> Dataset | None:
        """The epoch's dataset record."""
        return self.state.datasets.get((e.tenant_id, e.dataset_id))

    def strategy_name(self, e: Epoch) -> str:
        """The placement strategy of the epoch's dataset, else its tenant's default, else the cluster's."""
        ds = self.dataset_of(e)
        tenant = self.state.tenants.get(e.tenant_id)
        code = (ds.strategy if ds else 0) or (tenant.quota.default_strategy if tenant else 0) or \
            self.config.default_strategy
        return _STRATEGY_NAMES.get(code, "capacity")

    def strategy(self, name: str) -> pl.Strategy:
        """One strategy instance per name for the term (round-robin keeps its cursor across passes)."""
        s = self._strategies.get(name)
        if s is None:
            s = self._strategies[name] = pl.make_strategy(name)
        return s

    def pool_of(self, tenant_id: str) -> str | None:
        """The tenant's worker pool (None = the shared pool)."""
        t = self.state.tenants.get(tenant_id)
        return (t.quota.pool or None) if t else None

    # ------------------------------------------------------------ writes and commands

    async def write(self, epochs: Sequence[Epoch], extra: Sequence[Put | Delete] = ()) -> None:
        """Commit epoch records (plus ``extra`` ops) in fenced transactions of bounded size."""
        ops: list[Put | Delete] = list(extra)
        ops.extend(Put(self.keys.epoch(*e.key), encode_epoch(e)) for e in epochs)
        step = self.config.max_txn_ops
        for i in range(0, len(ops), step):
            await self._commit(ops[i:i + step])

    @property
    def epochs_per_txn(self) -> int:
        """Epochs ``delete_epochs`` removes per transaction: two ops and one compare each, plus the fence."""
        return max(1, self.config.max_txn_ops // 2 - 1)

    async def delete_epochs(self, keys: Sequence[EpochKey], revisions: Sequence[int] | None = None) -> None:
        """Delete epoch records together with their heat checkpoints, in fenced transactions of bounded size.

        An epoch's record and its ``heat/`` record always go in the same
        transaction, so no checkpoint outlives its epoch. With ``revisions``
        (one per key: the ``mod_revision`` the caller decided on), each delete
        is guarded by ``mod_revision ==`` that value: a record rewritten
        meanwhile (say, re-admitted) is never lost, the transaction fails with
        ``Conflict`` instead (earlier transactions of the call stay applied).
        """
        step = self.epochs_per_txn
        for i in range(0, len(keys), step):
            chunk = keys[i:i + step]
            ops = [op for k in chunk for op in (Delete(self.keys.epoch(*k)), Delete(self.keys.heat(*k)))]
            if revisions is None:
                await self._commit(ops)
            else:
                await self._commit(ops, compares=[Compare(self.keys.epoch(*k), "mod", "==", rev)
                                                  for k, rev in zip(chunk, revisions[i:i + step])])

    def _move(self, e: Epoch, to: State, reason: str, **changes: object) -> Epoch:
        history = transition(e.state, to, e.history, now_ms(), reason, what="/".join(e.key))
        return e.evolve(state=to, history=history, **changes)

    def assignment(self, e: Epoch, worker_id: str) -> pb.EventStreamMessage:
        """The ``data_assignment`` that makes ``worker_id`` load ``e``: a LoadPlan for table
        ``{dataset}__{epoch}`` of the epoch's window and dimension values, at the epoch's source version,
        with the dataset's table schema as Arrow IPC bytes (``arrow_schema``; empty for a dataset
        admitted before schemas were recorded).

        Built with the upb ``_pb2`` classes (the hub sends either kind): about
        ten times cheaper than betterproto, and assignments are the master's
        most frequent outbound message.
        """
        msg = pb.EventStreamMessage(event_id=uuid.uuid4().hex, tenant_id=e.tenant_id, worker_id=worker_id)
        a = msg.data_assignment
        a.dataset_id, a.epoch_id = e.dataset_id, e.epoch_id
        plan = a.load_plan
        plan.plan_id = e.plan_id
        plan.destination_table_name = f"{e.dataset_id}__{e.epoch_id}"
        plan.expected_rows, plan.expected_bytes, plan.tenant_id = e.rows, e.memory_bytes, e.tenant_id
        rp = plan.resolved_partition
        rp.time_range.start_inclusive.FromMilliseconds(e.start_ms)
        rp.time_range.end_exclusive.FromMilliseconds(e.end_ms)
        rp.dimension_values.update(e.dims)
        ds = self.dataset_of(e)
        if ds is not None:
            plan.source.CopyFrom(ds.request.source)
            plan.arrow_schema = ds.arrow_schema
            rp.time_column_name = ds.time_column
            rp.time_partition_value = _epochs.partition_value(e.start_ms, ds.granularity)
        if e.version:
            plan.source.version = e.version  # a replaced epoch keeps loading its own version
        else:
            plan.source.ClearField("version")
        return msg

    async def send_assignment(self, e: Epoch, worker_id: str) -> bool:
        """Push ``data_assignment`` for ``e`` to one worker."""
        if self.hub is None:
            return False
        return await self.hub.send(worker_id, self.assignment(e, worker_id))

    async def send_evict(self, tenant_id: str, dataset_id: str, epoch_id: str, worker_id: str, reason: str) -> bool:
        """Push ``common_ack`` ``evict_epoch`` (payload dataset_id, epoch_id, reason) to one worker."""
        if self.hub is None:
            return False
        return await self.hub.evict(worker_id, tenant_id, dataset_id, epoch_id, reason)

    # ------------------------------------------------------------ the loop

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Schedule on every kick and whenever a retry backoff expires; flush staged reports (until cancelled)."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._flusher)
            task_status.started()
            while True:
                timeout = self._next_retry_in()
                with trio.move_on_after(timeout):
                    await self._kick.wait()
                self._kick = trio.Event()
                await self.schedule()
                await trio.sleep(self.config.min_pass_interval_s)

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty = trio.Event()
            async with self.lock:
                await self.flush_locked()
            await trio.sleep(self.config.min_flush_interval_s)

    def _stage(self, epochs: Iterable[Epoch], after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stage epoch records (and a follow-up to run after them) for the flusher's next group commit."""
        for e in epochs:
            self._staged[e.key] = e
        if after is not None:
            self._after.append(after)
        self._dirty.set()

    def current(self, key: EpochKey) -> Epoch | None:
        """The newest copy of an epoch: staged for the next commit, else the stored one."""
        return self._staged.get(key) or self.state.epochs.get(key)

    async def flush_locked(self) -> None:
        """Write every staged epoch (one batch) and run the follow-ups; call with ``lock`` held."""
        if not self._staged and not self._after:
            return
        staged, after = self._staged, self._after
        self._staged, self._after = {}, []
        await self.write(list(staged.values()))
        for fn in after:
            await fn()

    def _next_retry_in(self) -> float:
        now = self.clock()
        waits = [self.state.epochs[k].retry_at - now for k in (*self.pending, *self.repair)
                 if k in self.state.epochs and self.state.epochs[k].retry_at > now]
        return max(0.01, min(waits)) if waits else math.inf

    async def schedule(self) -> None:
        """One pass: repair under-replicated epochs, then load PENDING ones by benefit (see module doc)."""
        async with self.lock:
            await self._schedule()

    async def _schedule(self) -> None:
        await self.flush_locked()
        now = self.clock()
        rounds = _Round(self)
        changed: list[Epoch] = []
        sends: list[tuple[Epoch, str]] = []
        evicts: list[tuple[Epoch, str, str]] = []
        # 1. repair: every under-replicated epoch, in one placement call per (pool, strategy)
        repairs = [(e, [r.worker_id for r in self._live(e)]) for key in sorted(self.repair)
                   if (e := self.state.epochs.get(key)) is not None and e.retry_at <= now]
        placed = rounds.place_many(repairs)
        for i, (e, _) in enumerate(repairs):
            if i % 500 == 499:
                await trio.lowlevel.checkpoint()
            got = placed.get(e.key)
            if got:
                new = e.evolve(replicas=e.replicas + tuple(Replica(w, ASSIGNED, e.plan_id) for w in got))
                changed.append(new)
                sends.extend((new, w) for w in got)
        await trio.lowlevel.checkpoint()
        # 2. residency by benefit: budgets first (in benefit order), then one placement call per group
        candidates = [e for k in self.pending if (e := self.state.epochs.get(k)) is not None and e.retry_at <= now]
        prio = {t: ten.quota.priority for t, ten in self.state.tenants.items()}
        order = sorted(zip(candidates, self.benefits(candidates, now)),
                       key=lambda eb: (-prio.get(eb[0].tenant_id, 0), -eb[1], eb[0].key))
        charged: dict[str, list[int | float]] = {}
        fits: list[Epoch] = []
        for e, _ in order:
            if len(fits) >= self.config.max_candidates:
                break
            tenant = self.state.tenants.get(e.tenant_id)
            if tenant is None or self.dataset_of(e) is None:
                continue
            mem, cpu = self.state.charge_of(e)
            extra = charged.setdefault(e.tenant_id, [0, 0.0, 0])
            u = tenant.usage
            probe = Amount(u.epochs + extra[2], u.memory_bytes + extra[0], u.cpu_cores + extra[1])
            if budget_shortfall(tenant.quota, probe, memory_bytes=mem, cpu_cores=cpu, epochs=1):
                continue
            extra[0] += mem
            extra[1] += cpu
            extra[2] += 1
            fits.append(e)
        await trio.lowlevel.checkpoint()
        placed = rounds.place_many([(e, ()) for e in fits])
        displaced: set[EpochKey] = set()
        attempts = 0
        for i, e in enumerate(fits):
            if i % 500 == 499:
                await trio.lowlevel.checkpoint()
            got = placed.get(e.key)
            if not got and attempts < self.config.max_displacements:
                attempts += 1
                got = self._displace_for(e, now, rounds, displaced, changed, evicts)
            if not got:
                continue
            plan_id = f"{e.epoch_id}.{e.attempts}"
            new = self._move(e, State.LOADING, f"placed on {', '.join(got)}", plan_id=plan_id,
                             replicas=tuple(Replica(w, ASSIGNED, plan_id) for w in got))
            changed.append(new)
            sends.extend((new, w) for w in got)
        if not changed:
            return
        await self.write(changed)
        if self.pending:
            # This pass placed something and more is queued (it may have stopped at max_candidates):
            # go again. A pass that places nothing does not re-kick, so a full cluster does not spin.
            self.kick()
        for e, w, reason in evicts:
            await self.send_evict(e.tenant_id, e.dataset_id, e.epoch_id, w, reason)
        for i, (e, w) in enumerate(sends):
            await self.send_assignment(e, w)
            if i % 256 == 255:
                await trio.lowlevel.checkpoint()  # let the hub's senders drain their queues

    def _displace_for(self, cand: Epoch, now: float, rounds: _Round, displaced: set[EpochKey],
                      changed: list[Epoch], evicts: list[tuple[Epoch, str, str]]) -> tuple[str, ...]:
        """Make room for ``cand`` by evicting READY residents of its pool that it beats by the hysteresis.

        ``leibrix.placement.eviction_candidates`` picks the cheapest residents
        to evict (each must be worse than the candidate by ≥ the hysteresis
        factor); the eviction happens only if the candidate can then really be
        placed, so no resident is evicted for nothing.
        """
        ready = {k: e for k, e in rounds.residents(self.pool_of(cand.tenant_id)).items() if k not in displaced}
        if not ready:
            return ()
        residents = list(ready.values())
        n = self.state.replication(cand)
        choice = pl.eviction_candidates(
            [pl.Candidate("/".join(e.key), b, e.memory_bytes * len(e.replicas), e.cpu_cores * len(e.replicas))
             for e, b in zip(residents, self.benefits(residents, now))],
            [pl.Candidate("/".join(cand.key), self.benefit(cand, now), cand.memory_bytes * n, cand.cpu_cores * n)],
            self.config.hysteresis,
        )
        if not choice.admit:
            return ()
        victims = [ready[tuple(k.split("/", 2))] for k in choice.evict]
        for v in victims:
            rounds.release(v, v.worker_ids())
        placed = rounds.place(cand, existing=[])
        if not placed:
            for v in victims:
                rounds.release(v, v.worker_ids(), sign=-1)
            return ()
        reason = f"displaced by higher-benefit {'/'.join(cand.key)}"
        for v in victims:
            displaced.add(v.key)
            changed.append(self._move(v, State.PENDING, reason, replicas=()))
            evicts.extend((v, w, reason) for w in v.worker_ids())
        return placed

    # ------------------------------------------------------------ seam: worker events

    def _find(self, worker_id: str, dataset_id: str, epoch_id: str) -> tuple[Epoch, Replica] | None:
        for tenant_id in self.state.tenant_ids():
            e = self.current((tenant_id, dataset_id, epoch_id))
            if e is not None:
                for r in e.replicas:
                    if r.worker_id == worker_id:
                        return e, r
        return None

    def _withdrawn_from(self, worker_id: str, dataset_id: str, epoch_id: str) -> str | None:
        """The tenant of an epoch whose replica on ``worker_id`` this term withdrew (committed, or staged
        and not yet committed), else None."""
        tenant = self.withdrawn.get((worker_id, dataset_id, epoch_id))
        if tenant is not None:
            return tenant
        for tenant_id in self.state.tenant_ids():
            stored = self.state.epochs.get((tenant_id, dataset_id, epoch_id))
            if stored is not None and worker_id in stored.worker_ids():
                return tenant_id
        return None

    async def on_status(self, worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None:
        """A worker reported load progress; raises ``FailedPrecondition`` if the epoch was never assigned there.

        A report for a replica this term has since withdrawn (moved, evicted,
        retired; the worker sent it before the evict reached it) is *late*,
        not bad input: it changes nothing and, unless it reports a failure,
        is answered with ``evict_epoch``, so the worker drops the table.

        Returns once the report's effect is *staged*, not written: the flusher
        commits it with every other staged report in the next group commit.
        The hub reads a worker's stream in order and calls this for each
        status, so waiting for the commit here would let one stream carry only
        one status per etcd round trip — with thousands of loads finishing at
        once, the worker's heartbeats would queue behind them for minutes and a
        healthy worker be declared DEAD. Nothing is lost by not waiting: a
        leader that dies before the commit is replaced by one that reconciles
        the worker's inventory when it re-registers.
        """
        async with self.lock:
            await self._status(worker_id, update)

    async def _status(self, worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None:
        """Stage the effect of one status report (the flusher writes it with the next group commit)."""
        found = self._find(worker_id, update.dataset_id, update.epoch_id)
        status = cp.DataPullStatusUpdateEventStatus
        if found is None:
            tenant = self._withdrawn_from(worker_id, update.dataset_id, update.epoch_id)
            if tenant is None:
                raise FailedPrecondition(
                    f"epoch {update.dataset_id}/{update.epoch_id} was never assigned to worker {worker_id!r}")
            log.info("late status %s for %s/%s from %s: its assignment was withdrawn", update.status,
                     update.dataset_id, update.epoch_id, worker_id)
            if update.status != status.FAILED:  # it holds (or is loading) a table nobody wants there
                await self.send_evict(tenant, update.dataset_id, update.epoch_id, worker_id, "assignment withdrawn")
            return
        e, replica = found
        if update.status == status.IN_PROGRESS or replica.state != ASSIGNED:
            return
        if update.plan_id and update.plan_id != replica.plan_id:
            log.info("stale status for %s on %s (plan %s, current %s)", e.key, worker_id, update.plan_id,
                     replica.plan_id)
            return
        if update.status == status.COMPLETED:
            problem = self._validate(e, update)
            if problem is None:
                self._loaded(e, worker_id)
                return
        else:
            problem = f"load failed on {worker_id}: {update.error_message or 'no reason given'}"
        self._failed(e, worker_id, problem)

    def _validate(self, e: Epoch, u: cp.DataPullStatusUpdateEvent) -> str | None:
        """The problem with a COMPLETED report, or None if the load matches its plan.

        * rows: exactly the plan's, when both the plan knows them and the
          report names its plan (a Leibrix worker);
        * bytes: at most ``bytes_tolerance`` × the estimate;
        * schema: the reported ``schema_fingerprint`` must equal the dataset's
          (``leibrix.domain._schema.fingerprint`` of the table the worker built). An
          **empty** fingerprint means "not reported" — the upstream Rust worker
          sends none — and is accepted on the checks above alone; so is any
          report for a dataset admitted before schemas were recorded.
        """
        if u.plan_id and e.rows and u.rows != e.rows:
            return f"validation failed: loaded {u.rows} rows, the plan expects {e.rows}"
        limit = e.memory_bytes * self.config.bytes_tolerance
        if u.bytes > limit:
            return f"validation failed: loaded {u.bytes} bytes, the plan allows at most {int(limit)}"
        ds = self.dataset_of(e)
        planned = ds.schema_fingerprint if ds is not None else ""
        if planned and u.schema_fingerprint and u.schema_fingerprint != planned:
            loaded = _schema.known(u.schema_fingerprint)
            return (f"validation failed: loaded schema {u.schema_fingerprint}{f' ({loaded})' if loaded else ''} "
                    f"differs from the plan's {planned} ({_schema.canonical(_schema.from_ipc(ds.arrow_schema))})")
        return None

    def _loaded(self, e: Epoch, worker_id: str) -> None:
        reps = tuple(Replica(r.worker_id, LOADED, r.plan_id) if r.worker_id == worker_id else r for r in e.replicas)
        new = e.evolve(replicas=reps)
        if new.state is State.LOADING:
            new = self._move(new, State.VALIDATING, f"replica on {worker_id} loaded; validating")
        out = [new]
        loaded = sum(1 for r in reps if r.state == LOADED)
        old = None
        if new.state is State.VALIDATING and loaded >= self.state.replication(new):
            new = self._move(new, State.READY, f"{loaded} replica(s) loaded and validated")
            out = [new]
            if new.replaces:
                old = self.current((e.tenant_id, e.dataset_id, new.replaces))
                if old is not None and old.state is State.READY:
                    out.append(self._move(old, State.RETIRING, f"replaced by refresh {new.epoch_id}"))
                else:
                    old = None
        if old is None:
            self._stage(out)
            return
        key, reason = old.key, f"replaced by {new.epoch_id}"
        self._stage(out, lambda: self._finish_retire(key, reason))

    def _failed(self, e: Epoch, worker_id: str, problem: str) -> None:
        attempts = e.attempts + 1
        keep = tuple(r for r in e.replicas if r.worker_id != worker_id)
        if self.config.retry.after_failure(attempts) is State.FAILED and e.state is not State.READY:
            new = self._move(e, State.FAILED, f"{problem}; gave up after {attempts} attempts", replicas=(),
                             attempts=attempts)
            victims = e.worker_ids()
        elif e.state is not State.READY and not keep:
            # Nothing else is loading or loaded: back to the queue, retried after the backoff.
            new = self._move(e, State.PENDING, f"{problem}; attempt {attempts}, retrying", replicas=(),
                             attempts=attempts)
            victims = [worker_id]
        else:
            # Other replicas carry on; the failed one is re-placed by repair after the backoff.
            new = e.evolve(replicas=keep, attempts=attempts)
            victims = [worker_id]

        async def after() -> None:
            stored = self.state.epochs.get(e.key)
            if stored is not None:
                stored.retry_at = self.clock() + self.config.retry.backoff_s(attempts)
            for w in victims:
                await self.send_evict(e.tenant_id, e.dataset_id, e.epoch_id, w, problem)
            self.kick()

        self._stage([new], after)

    async def on_registered(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None:
        """Reconcile a (re)registered worker: keep valid holdings, evict the rest, (re)send missing plans."""
        async with self.lock:
            await self.flush_locked()
            held = {(i.dataset_id, i.epoch_id): i for i in inventory}
            changed: list[Epoch] = []
            resend: list[Epoch] = []
            completed: list[pb.InventoryEntry] = []
            evicts: list[tuple[Epoch, str]] = []
            for i, key in enumerate(sorted(self.state.by_worker.get(worker_id, ()))):
                if i % 500 == 499:
                    await trio.lowlevel.checkpoint()
                e = self.state.epochs[key]
                replica = next(r for r in e.replicas if r.worker_id == worker_id)
                entry = held.pop(key[1:], None)
                if entry is None and replica.state == LOADED:
                    # It lost the data: reload it there (other LOADED replicas keep serving meanwhile).
                    reps = tuple(Replica(worker_id, ASSIGNED, e.plan_id) if r.worker_id == worker_id else r
                                 for r in e.replicas)
                    if e.state is State.READY and not any(r.state == LOADED for r in reps):
                        changed.append(self._move(e, State.PENDING, f"worker {worker_id} lost the last replica",
                                                  replicas=()))
                        evicts.extend((e, w) for w in e.worker_ids() if w != worker_id)
                    else:
                        changed.append(e.evolve(replicas=reps))
                        resend.append(changed[-1])
                elif entry is None and replica.state == ASSIGNED:
                    resend.append(e)
                elif entry is not None and replica.state == ASSIGNED:
                    completed.append(entry)
            await self.write(changed)
            for e, w in evicts:
                await self.send_evict(e.tenant_id, e.dataset_id, e.epoch_id, w, "reloading")
            for i, e in enumerate(resend):
                if not await self.send_assignment(e, worker_id):
                    break  # the session closed: its next registration reconciles again
                if i % 256 == 255:
                    await trio.lowlevel.checkpoint()
            for (d, ep), entry in held.items():
                await self.send_evict(entry.tenant_id, d, ep, worker_id, "not assigned to this worker")
            for i, entry in enumerate(completed):
                if i % 500 == 499:
                    await trio.lowlevel.checkpoint()
                await self._status(worker_id, cp.DataPullStatusUpdateEvent(
                    dataset_id=entry.dataset_id, epoch_id=entry.epoch_id,
                    status=cp.DataPullStatusUpdateEventStatus.COMPLETED, plan_id=entry.plan_id, rows=entry.rows,
                    bytes=entry.bytes, schema_fingerprint=entry.schema_fingerprint))
            await self.flush_locked()
        self.kick()

    async def on_capacity(self) -> None:
        """A worker became ACTIVE or freed capacity: try to place PENDING epochs now."""
        self.kick()

    async def on_worker_dead(self, worker_id: str) -> None:
        """Drop a dead worker's replicas and re-place them at once (``existing=`` the survivors)."""
        async with self.lock:
            await self.flush_locked()
            changed: list[Epoch] = []
            evicts: list[tuple[Epoch, str]] = []
            for i, key in enumerate(sorted(self.state.by_worker.get(worker_id, ()))):
                if i % 500 == 499:
                    await trio.lowlevel.checkpoint()
                e = self.state.epochs[key]
                reps = tuple(r for r in e.replicas if r.worker_id != worker_id)
                if e.state is State.READY and not any(r.state == LOADED for r in reps):
                    changed.append(self._move(e, State.PENDING, f"worker {worker_id} died with the last replica",
                                              replicas=()))
                    evicts.extend((e, r.worker_id) for r in reps)
                else:
                    changed.append(e.evolve(replicas=reps))
            await self.write(changed)
            for e, w in evicts:
                await self.send_evict(e.tenant_id, e.dataset_id, e.epoch_id, w, "reloading")
            await self._schedule()

    async def move_replica(self, tenant: str, dataset: str, epoch: str, from_worker: str, *,
                           make_before_break: bool) -> bool:
        """Move one replica off ``from_worker`` (drain / rebalance); True once the new replica is LOADED.

        Make-before-break places and loads the new replica first, then evicts
        the old one; break-before-make evicts first (the epoch may serve from
        fewer replicas meanwhile, or none for a single replica).
        """
        key = (tenant, dataset, epoch)
        async with self.lock:
            await self.flush_locked()
            e = self.state.epochs.get(key)
            if e is None or from_worker not in e.worker_ids():
                return False
            before = set(e.worker_ids())
            if make_before_break:
                live = [r.worker_id for r in self._live(e)]
                placed = _Round(self).place(e, existing=live, extra=1, exclude={from_worker})
                if not placed:
                    return False
                new = e.evolve(replicas=e.replicas + tuple(Replica(w, ASSIGNED, e.plan_id) for w in placed))
                await self.write([new])
                for w in placed:
                    await self.send_assignment(new, w)
            else:
                await self._drop_replica(e, from_worker, "moved off (break-before-make)")
                await self._schedule()
            cur = self.state.epochs.get(key)
            target = [w for w in (cur.worker_ids() if cur else ()) if w not in before]
            if not target:
                return False
        with trio.move_on_after(self.config.move_timeout_s):
            while True:
                cur = self.state.epochs.get(key)
                states = {r.worker_id: r.state for r in cur.replicas} if cur else {}
                if any(w not in states for w in target):
                    return False
                if all(states[w] == LOADED for w in target):
                    break
                ev = trio.Event()
                self._waiters.setdefault(key, []).append(ev)
                await ev.wait()
            if make_before_break:
                async with self.lock:
                    await self.flush_locked()
                    cur = self.state.epochs.get(key)
                    if cur is not None and from_worker in cur.worker_ids():
                        await self._drop_replica(cur, from_worker, "moved off (make-before-break)")
            return True
        return False

    async def _drop_replica(self, e: Epoch, worker_id: str, reason: str) -> None:
        await self.write([e.evolve(replicas=tuple(r for r in e.replicas if r.worker_id != worker_id))])
        await self.send_evict(e.tenant_id, e.dataset_id, e.epoch_id, worker_id, reason)

    # ------------------------------------------------------------ retirement

    async def retire(self, keys: Iterable[EpochKey], reason: str, *, delete: bool = False) -> int:
        """Withdraw routes first (→ RETIRING in one fenced write), then evict, then RETIRED (or delete).

        Returns how many epochs were retired. PENDING/FAILED epochs hold
        nothing and go straight to RETIRED. ``delete`` removes the records
        afterwards (``DropDataset``).
        """
        keys = list(keys)
        async with self.lock:
            await self.flush_locked()
            first: list[Epoch] = []
            for key in keys:
                e = self.state.epochs.get(key)
                if e is None or e.state is State.RETIRED or (e.state is State.RETIRING and not delete):
                    continue
                if e.state is State.RETIRING:
                    first.append(e)
                    continue
                to = State.RETIRING if e.replicas else State.RETIRED
                first.append(self._move(e, to, reason))
            await self.write(first)
            for e in first:
                await self._finish_retire(e.key, reason, delete=delete)
            if delete:
                await self.delete_epochs([key for key in keys if key in self.state.epochs])
            return len(first)

    async def _finish_retire(self, key: EpochKey, reason: str, *, delete: bool = False) -> None:
        """Send evictions for a RETIRING epoch, then record it RETIRED (its routes are already gone)."""
        e = self.state.epochs.get(key)
        if e is None or e.state is not State.RETIRING:
            return
        for w in e.worker_ids():
            await self.send_evict(e.tenant_id, e.dataset_id, e.epoch_id, w, reason)
        if not delete:
            await self.write([self._move(e, State.RETIRED, "evictions sent", replicas=())])
        self.kick()


class _Round:
    """Worker capacity as seen during one scheduling pass: the hub's view plus this pass's placements."""

    def __init__(self, coord: Coordinator) -> None:
        self.c = coord
        self._pools: dict[str | None, list[pl.WorkerSpec]] = {}
        self._extra: dict[str, list[float]] = {}
        self._residents: dict[str | None, dict[EpochKey, Epoch]] = {}

    def workers(self, pool: str | None) -> list[pl.WorkerSpec]:
        """The pool's eligible workers with this pass's placements (and releases) in their usage."""
        ws = self._pools.get(pool)
        if ws is None:
            hub = self.c.hub
            ws = self._pools[pool] = hub.eligible(pool) if hub else []
        out = []
        for w in ws:
            x = self._extra.get(w.id)
            if x is not None:
                w = dataclasses.replace(w, used_memory_bytes=max(0, w.used_memory_bytes + int(x[0])),
                                        used_cpu_cores=max(0.0, w.used_cpu_cores + x[1]))
            out.append(w)
        return out

    def _add(self, worker_id: str, mem: float, cpu: float) -> None:
        x = self._extra.setdefault(worker_id, [0, 0.0])
        x[0] += mem
        x[1] += cpu

    def release(self, e: Epoch, workers: Iterable[str], sign: int = 1) -> None:
        """Credit back an evicted epoch's replicas within this pass (``sign=-1`` undoes it)."""
        for w in workers:
            self._add(w, -sign * e.memory_bytes, -sign * e.cpu_cores)

    def residents(self, pool: str | None) -> dict[EpochKey, Epoch]:
        """READY epochs with a replica on the pool's eligible workers (computed once per pass)."""
        found = self._residents.get(pool)
        if found is None:
            state = self.c.state
            found = self._residents[pool] = {
                key: e for w in self.workers(pool) for key in state.by_worker.get(w.id, ())
                if (e := state.epochs.get(key)) is not None and e.state is State.READY}
        return found

    def place_many(self, requests: Sequence[tuple[Epoch, Sequence[str]]], *, extra: int = 0,
                   exclude: frozenset[str] = frozenset()) -> dict[EpochKey, tuple[str, ...]]:
        """New workers for each epoch's missing replicas (or ``extra`` more), one strategy call per
        (pool, strategy) group; epochs that cannot get all of them are left out."""
        groups: dict[tuple[str | None, str], list[tuple[Epoch, Sequence[str]]]] = {}
        for e, existing in requests:
            groups.setdefault((self.c.pool_of(e.tenant_id), self.c.strategy_name(e)), []).append((e, existing))
        out: dict[EpochKey, tuple[str, ...]] = {}
        for (pool, name), reqs in groups.items():
            ws = [w for w in self.workers(pool) if w.id not in exclude]
            ids = {w.id for w in ws}
            items: list[pl.ItemSpec] = []
            held: dict[str, tuple[str, ...]] = {}
            for e, existing in reqs:
                want = self.c.state.replication(e) + extra
                if len(existing) >= want or len(ids | set(existing)) < want:
                    continue
                key = "/".join(e.key)
                items.append(pl.ItemSpec(key=key, memory_bytes=e.memory_bytes, cpu_cores=e.cpu_cores, replicas=want))
                if existing:
                    held[key] = tuple(existing)
            if not items:
                continue
            result = self.c.strategy(name).place(items, ws, existing=held)
            for e, existing in reqs:
                got = result.assignments.get("/".join(e.key))
                if got:
                    new = tuple(w for w in got if w not in existing)
                    for w in new:
                        self._add(w, e.memory_bytes, e.cpu_cores)
                    out[e.key] = new
        return out

    def place(self, e: Epoch, *, existing: Sequence[str], extra: int = 0,
              exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """New workers for one epoch (see ``place_many``), () if they cannot all be placed."""
        return self.place_many([(e, existing)], extra=extra, exclude=exclude).get(e.key, ())
