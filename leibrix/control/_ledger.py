"""The coordinator's ledger: what the leader knows and does about epochs in one term, shared by every part.

The parts of the coordinator (scheduling, worker events, retirement; see
``leibrix.control._coordinator``) each take the :class:`Ledger` and nothing
else of each other's state. It holds:

* **Indices** kept from every state change (``ClusterState.listeners``):
  PENDING epochs (the scheduling queue), under-replicated charged epochs
  (repair), RETIRED epochs (the janitor's work list), epochs whose heat was
  fed since the last checkpoint, and replicas this term withdrew from a
  worker (so a status the worker sent before its evict arrived is known to
  be late, not bogus).
* **Expected bytes** (:meth:`Ledger.expected_bytes`): what one replica of
  an epoch will occupy. A loaded epoch is charged the bytes its worker
  measured; an epoch not loaded yet is charged its estimate scaled by the
  ratio of measured to planned bytes seen on its dataset's loaded epochs
  (else its tenant's), never below the estimate; a size the admission
  hinted (``bytes_per_epoch``) is the operator's figure and is not scaled. Placement, the workers'
  reservations (:meth:`Ledger.reserved`) and budgets all count in these
  units, so a candidate is never placed on room that only an estimate
  leaves next to measured residents.
* **Heat and benefit**: ``benefit = scan_cost × heat ÷ memory``, with heat
  leader-local and seeded lazily from the stored checkpoints, each tenant's
  heat scaled by its fair share (``leibrix.domain._heat.fair_share``: a
  tenant's total heat weight is bounded, however much it reports).
* **Writes**: every change is a fenced etcd write made *before* the command
  that follows from it is sent, so a new leader that reads etcd knows every
  command the old one could have sent. Worker status reports are
  group-committed: their changes are *staged* and the next flush writes them
  in one transaction. ``lock`` serialises every read-modify-write of epoch
  records; a lock holder flushes first, so it never reads a stale copy of a
  staged epoch.
* **Commands** to workers through the hub (``WorkerDirectory``).
* **Hooks** (:class:`ControlHooks`): the metrics observe each scheduling
  pass's duration and each ``evict_epoch`` sent, by kind (:func:`~leibrix.control._settings.evict_kind`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable, Sequence

import numpy as np
import trio

from leibrix import placement as pl
from leibrix.domain._heat import Heat, fair_share
from leibrix.domain._lifecycle import CHARGED, State, transition
from leibrix.state._model import (
    EVICTING,
    LOADED,
    ClusterState,
    Dataset,
    Epoch,
    EpochKey,
    Replica,
    encode_epoch,
    epoch_name,
    now_ms,
)
from leibrix.store._etcd import Compare, Delete, EtcdRefused, EtcdUnavailable, Put
from leibrix.store._store import Atomic, Keys
from leibrix.workers._protocols import WorkerDirectory
from leibrix.control._loadplan import assignment
from leibrix.control._settings import ControlHooks, CoordinatorConfig, evict_kind, strategy_name

__all__ = ["Ledger", "live_replicas"]

#: Withdrawn assignments remembered per term (see ``Ledger.withdrawn``); the oldest are forgotten first.
_WITHDRAWN_MAX = 65_536
def live_replicas(e: Epoch) -> list[Replica]:
    """The epoch's replicas that are not being evicted."""
    return [r for r in e.replicas if r.state != EVICTING]


def _measured(e: Epoch) -> bool:
    """Whether ``e``'s bytes were measured by a load (they replace the estimate once one is accepted)."""
    return e.planned_bytes > 0 and e.memory_bytes != e.planned_bytes


class Ledger:
    """The term's epoch indices, heat, writes and commands (see the module docstring).

    ``commit(ops, *, compares=())`` is the term's ``FencedWriter.commit``;
    ``hub`` is None where no worker can be reached (benchmarks of the
    housekeeping services).
    """

    def __init__(self, *, state: ClusterState, commit: Callable[..., Awaitable[int]], keys: Keys,
                 hub: WorkerDirectory | None, config: CoordinatorConfig = CoordinatorConfig(),
                 clock: Callable[[], float] = time.monotonic, hooks: ControlHooks | None = None) -> None:
        self.state = state
        self.hooks = hooks if hooks is not None else ControlHooks()
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
        #: Epochs fed by ``report_access`` since the last heat checkpoint took them.
        self.heat_dirty: set[EpochKey] = set()
        self.repair: set[EpochKey] = set()
        #: Per tenant: the decayed total of the heat reported for it this term (and of the checkpoints restored).
        self.tenant_heat: dict[str, Heat] = {}
        #: ``(worker, dataset, epoch) → tenant`` of replicas this term took away from a worker (a move,
        #: an eviction, a retirement, a failed load).
        self.withdrawn: dict[tuple[str, str, str], str] = {}
        self._waiters: dict[EpochKey, list[trio.Event]] = {}
        #: (tenant, dataset) and (tenant, "") → [measured bytes, planned bytes] summed over measured epochs.
        self._ratios: dict[tuple[str, str], list[int]] = {}
        #: worker → charged epochs with a replica there whose bytes are still an estimate (loads in flight).
        self._estimated_on: dict[str, set[EpochKey]] = {}
        #: Serialises every read-modify-write of epoch records (scheduling, worker events, admissions'
        #: evictions): without it two writers could each commit a copy of the same epoch and lose the other's.
        self.lock = trio.Lock()
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

    # ------------------------------------------------------------ indices

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
        elif len(live_replicas(new)) < self.state.replication(new):
            self.repair.add(key)
        else:
            self.repair.discard(key)
        self._track_bytes(old, -1)
        self._track_bytes(new, 1)
        for ev in self._waiters.pop(key, ()):
            ev.set()

    def _track_bytes(self, e: Epoch | None, sign: int) -> None:
        if e is None:
            return
        if _measured(e):
            for k in ((e.tenant_id, e.dataset_id), (e.tenant_id, "")):
                sums = self._ratios.setdefault(k, [0, 0])
                sums[0] += sign * e.memory_bytes
                sums[1] += sign * e.planned_bytes
                if sums[1] <= 0:
                    del self._ratios[k]
        elif e.state in CHARGED and e.replicas:
            for w in e.worker_ids():
                keys = self._estimated_on.setdefault(w, set())
                if sign > 0:
                    keys.add(e.key)
                else:
                    keys.discard(e.key)
                    if not keys:
                        del self._estimated_on[w]

    async def changed(self, key: EpochKey) -> None:
        """Return at the next stored change of the epoch ``key``."""
        ev = trio.Event()
        self._waiters.setdefault(key, []).append(ev)
        await ev.wait()

    def kick(self) -> None:
        """Ask for a scheduling pass soon (cheap; passes coalesce)."""
        self._kick.set()

    async def kicked(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for a kick, and take it."""
        with trio.move_on_after(timeout):
            await self._kick.wait()
        self._kick = trio.Event()

    # ------------------------------------------------------------ heat and benefit

    def heat(self, e: Epoch, now: float | None = None) -> Heat:
        """The epoch's heat, leader-local; on first use in a term it is seeded from the epoch's stored
        checkpoint (decayed by the wall-clock time since it was written), else from the prior.

        Seeding lazily, one epoch at a time, keeps a takeover free of any walk
        over the checkpoints: the Mirror already holds them, undecoded.
        """
        if e.heat is None:
            now = self.clock() if now is None else now
            records = self.state.heat_records
            raw = records.get(epoch_name(e.key)) if records else None
            model = self.config.heat
            if raw is None:
                e.heat = Heat.new(model, now)
            else:
                e.heat = Heat.restore(raw, model, now, time.time())
                self._tenant_fed(e.tenant_id, now, e.heat.value)
        return e.heat

    def _tenant_fed(self, tenant_id: str, now: float, count: float) -> None:
        model = self.config.heat
        total = self.tenant_heat.get(tenant_id) or Heat(0.0, 0.0, now)
        self.tenant_heat[tenant_id] = total.fed(model, now, count)

    def fair_share(self, tenant_id: str, now: float) -> float:
        """The factor on the tenant's epochs' heat (``leibrix.domain._heat.fair_share``)."""
        total = self.tenant_heat.get(tenant_id)
        return 1.0 if total is None else fair_share(self.config.heat, total.get(self.config.heat, now))

    def benefits(self, epochs: Sequence[Epoch], now: float) -> list[float]:
        """``scan_cost × heat ÷ memory`` of many epochs in one ``leibrix.placement.benefit`` call, each
        epoch's heat scaled by its tenant's fair share."""
        if not epochs:
            return []
        model = self.config.heat
        heats = [self.heat(e, now) for e in epochs]  # seeds first: a restored checkpoint counts in its tenant's total
        shares: dict[str, float] = {}
        for e in epochs:
            if e.tenant_id not in shares:
                shares[e.tenant_id] = self.fair_share(e.tenant_id, now)
        scan = np.fromiter((h.scan_cost(e.scan_cost) for h, e in zip(heats, epochs)), float, len(epochs))
        heat = np.fromiter((h.get(model, now) * shares[e.tenant_id] for h, e in zip(heats, epochs)), float,
                           len(epochs))
        mem = np.fromiter((max(1, e.memory_bytes) for e in epochs), float, len(epochs))
        return pl.benefit(scan, heat, mem).tolist()

    def expected_bytes(self, e: Epoch) -> int:
        """Bytes one replica of ``e`` is expected to occupy (see the module docstring)."""
        if _measured(e):
            return e.memory_bytes
        ds = self.dataset_of(e)
        if ds is not None and ds.request.hints.bytes_per_epoch == e.planned_bytes:
            return e.memory_bytes  # the operator's own figure, held to exactly (as validation does)
        sums = self._ratios.get((e.tenant_id, e.dataset_id)) or self._ratios.get((e.tenant_id, ""))
        if not sums or sums[1] <= 0:
            return e.memory_bytes
        ratio = min(max(1.0, sums[0] / sums[1]), self.config.bytes_tolerance)
        return int(e.memory_bytes * ratio)

    def charge_of(self, e: Epoch) -> tuple[int, float]:
        """(memory bytes, CPU cores) ``e`` will charge its tenant, in expected bytes (all target replicas)."""
        n = self.state.replication(e)
        return self.expected_bytes(e) * n, e.cpu_cores * n

    def benefit(self, e: Epoch, now: float) -> float:
        """One epoch's benefit (see ``benefits``)."""
        return self.benefits([e], now)[0]

    def report_access(self, e: Epoch, count: int, scanned_bytes: int) -> None:
        """Feed an access report into the epoch's heat; a hotter PENDING epoch may now be loaded.

        The count also feeds the tenant's total, which bounds the weight of
        all its epochs' heat against other tenants' (``fair_share``). The
        epoch is only marked dirty here: the heat checkpointer writes it
        at its next interval, so etcd sees at most one write per accessed
        epoch per interval however many reports arrive.
        """
        now = self.clock()
        e.heat = self.heat(e, now).fed(self.config.heat, now, count, scanned_bytes)
        self._tenant_fed(e.tenant_id, now, count)
        self.heat_dirty.add(e.key)
        if e.state is State.PENDING:
            self.kick()

    # ------------------------------------------------------------ what workers hold

    def reserved(self, worker_id: str) -> tuple[int, float]:
        """(memory bytes, CPU cores) reserved on a worker by replicas of charged epochs (the hub's ``reserved_fn``),
        the replicas still loading counted in expected bytes."""
        mem, cpu = self.state.reserved.get(worker_id, (0, 0.0))
        for key in self._estimated_on.get(worker_id, ()):
            e = self.state.epochs.get(key)
            if e is not None:
                mem += self.expected_bytes(e) - e.memory_bytes
        return int(mem), max(0.0, cpu)

    def replicas_on(self, worker_id: str) -> list[EpochKey]:
        """Every epoch with a replica held or assigned on ``worker_id``."""
        return sorted(self.state.by_worker.get(worker_id, ()))

    def replica_count(self, worker_id: str) -> int:
        """How many replicas ``worker_id`` holds or is assigned (constant time)."""
        return len(self.state.by_worker.get(worker_id, ()))

    def movable_replicas(self, worker_id: str, limit: int) -> list[EpochKey]:
        """Up to ``limit`` replicas on ``worker_id`` worth moving (join rebalancing): loaded ones of READY
        epochs. A replica still loading is never moved (it would load twice). Stops at ``limit`` instead of
        walking (and sorting) everything the worker holds."""
        out: list[EpochKey] = []
        for key in self.state.by_worker.get(worker_id, ()):
            e = self.state.epochs.get(key)
            if e is not None and e.state is State.READY and worker_id in e.worker_ids(LOADED):
                out.append(key)
                if len(out) >= limit:
                    break
        return out

    # ------------------------------------------------------------ placement options

    def dataset_of(self, e: Epoch) -> Dataset | None:
        """The epoch's dataset record."""
        return self.state.datasets.get((e.tenant_id, e.dataset_id))

    def strategy_name(self, e: Epoch) -> str:
        """The placement strategy of the epoch's dataset, else its tenant's default, else the cluster's."""
        ds = self.dataset_of(e)
        tenant = self.state.tenants.get(e.tenant_id)
        code = (ds.strategy if ds else 0) or (tenant.quota.default_strategy if tenant else 0) or \
            self.config.default_strategy
        return strategy_name(code)

    def strategy(self, name: str) -> pl.Strategy:
        """One strategy instance per name for the term (round-robin keeps its cursor across passes)."""
        s = self._strategies.get(name)
        if s is None:
            s = self._strategies[name] = pl.make_strategy(name)
        return s

    def pools_of(self, tenant_id: str) -> tuple[str, ...]:
        """The worker pools whose workers may hold the tenant's epochs (``""``: the shared workers).

        A tenant with a ``worker_pool`` P uses pool P only. A tenant without
        one uses the shared workers (no pool label) and the workers dedicated
        to it: those whose ``pool`` or ``tenant_id`` label names the tenant
        (``leibrix.wire._labels``; the Rust worker registers this way).
        """
        t = self.state.tenants.get(tenant_id)
        pool = t.quota.pool if t is not None else ""
        return (pool,) if pool else ("", tenant_id)

    # ------------------------------------------------------------ writes

    def move(self, e: Epoch, to: State, reason: str, **changes: object) -> Epoch:
        """A copy of ``e`` in state ``to`` (the transition checked and recorded in its history)."""
        history = transition(e.state, to, e.history, now_ms(), reason, what=epoch_name(e.key))
        return e.evolve(state=to, history=history, **changes)

    async def write(self, epochs: Sequence[Epoch], extra: Sequence[Put | Delete | Atomic] = ()) -> None:
        """Commit ``extra`` then the epoch records, in one fenced commit (the writer sizes its transactions)."""
        items: list[Put | Delete | Atomic] = list(extra)
        items.extend(Put(self.keys.epoch(*e.key), encode_epoch(e)) for e in epochs)
        if items:
            await self._commit(items)

    async def delete_epochs(self, keys: Sequence[EpochKey], revisions: Sequence[int] | None = None) -> None:
        """Delete epoch records together with their heat checkpoints, in one fenced commit.

        An epoch's record and its ``heat/`` record are one ``Atomic``, so they
        always go in the same transaction and no checkpoint outlives its
        epoch. With ``revisions`` (one per key: the ``mod_revision`` the
        caller decided on), each pair is guarded by ``mod_revision ==`` that
        value: a record rewritten meanwhile (say, re-admitted) is never lost,
        the commit stops with ``Conflict`` instead (the transactions before
        the failed one stay applied).
        """
        if not keys:
            return
        pairs = [[Delete(self.keys.epoch(*k)), Delete(self.keys.heat(*k))] for k in keys]
        if revisions is None:
            await self._commit([Atomic(ops) for ops in pairs])
        else:
            await self._commit([Atomic(ops, [Compare(self.keys.epoch(*k), "mod", "==", rev)])
                                for ops, k, rev in zip(pairs, keys, revisions)])

    def stage(self, epochs: Iterable[Epoch], after: Callable[[], Awaitable[None]] | None = None) -> None:
        """Stage epoch records (and a follow-up to run after them) for the next group commit."""
        for e in epochs:
            self._staged[e.key] = e
        if after is not None:
            self._after.append(after)
        self._dirty.set()

    async def staged(self) -> None:
        """Return once something is staged (and take the signal)."""
        await self._dirty.wait()
        self._dirty = trio.Event()

    def current(self, key: EpochKey) -> Epoch | None:
        """The newest copy of an epoch: staged for the next commit, else the stored one."""
        return self._staged.get(key) or self.state.epochs.get(key)

    async def flush_locked(self) -> None:
        """Write every staged epoch (one commit) and run the follow-ups; call with ``lock`` held.

        If etcd does not answer or refuses the commit, everything stays staged
        (and the error propagates): the next flush tries again.
        """
        if not self._staged and not self._after:
            return
        staged, after = self._staged, self._after
        self._staged, self._after = {}, []
        try:
            await self.write(list(staged.values()))
        except (EtcdUnavailable, EtcdRefused):
            # Not known to be stored: staged again for the next commit (rewriting what was stored is harmless).
            self._staged = {**staged, **self._staged}
            self._after[:0] = after
            self._dirty.set()
            raise
        for fn in after:
            await fn()

    # ------------------------------------------------------------ commands

    async def send_assignment(self, e: Epoch, worker_id: str) -> bool:
        """Push ``data_assignment`` for ``e`` to one worker."""
        if self.hub is None:
            return False
        return await self.hub.send(worker_id, assignment(e, self.dataset_of(e), worker_id))

    async def send_evict(self, key: EpochKey, worker_id: str, reason: str) -> bool:
        """Push ``common_ack`` ``evict_epoch`` (payload dataset_id, epoch_id, reason) to one worker; counted
        by kind (``hooks.evict``)."""
        if self.hub is None:
            return False
        self.hooks.evict(evict_kind(reason))
        return await self.hub.evict(worker_id, *key, reason)
