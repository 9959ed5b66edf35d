"""What workers report, turned into epoch transitions: load status, registration, death, and moves.

Loads: PENDING → LOADING (replicas ASSIGNED, by the scheduler) → VALIDATING
(first replica reports COMPLETED) → READY once ``replication_factor``
replicas are LOADED and each matched its plan (see :func:`validate`). A
reconnecting worker's inventory goes through the same check. A failed or
invalid load evicts that replica and counts an attempt; after
``RetryPolicy.max_attempts`` the epoch is FAILED and every replica evicted. A
refresh epoch that becomes READY retires the epoch it replaces in the same
write (make-before-break: routes switch, never vanish).

A status for a replica this term withdrew (moved, evicted, retired; the
worker sent it before the evict reached it) is *late*, not bad input: it
changes nothing and, unless it reports a failure, is answered with
``evict_epoch`` so the worker drops the table. A status for an epoch that was
never assigned to the worker is refused (``FailedPrecondition``).
"""

from __future__ import annotations

import logging

import trio

from leibrix.control._ledger import Ledger, live_replicas
from leibrix.control._retirement import Retirement
from leibrix.control._scheduling import Round, Scheduler
from leibrix.domain import _schema
from leibrix.domain._errors import FailedPrecondition
from leibrix.domain._lifecycle import CHARGED, State
from leibrix.state._model import ASSIGNED, LOADED, Dataset, Epoch, EpochKey, Replica
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = ["WorkerEvents", "validate"]

log = logging.getLogger(__name__)

_STATUS = cp.DataPullStatusUpdateEventStatus


#: The bytes bound of ``validate`` is never below this many times the tolerance for a size planned from the
#: source: its per-row estimate does not count the fixed cost of a table (an empty epoch still makes one).
MIN_BYTES_BOUND = 1 << 20


def validate(e: Epoch, ds: Dataset | None, u: cp.DataPullStatusUpdateEvent, bytes_tolerance: float) -> str | None:
    """The problem with a COMPLETED report of ``e``, or None if the load matches its plan.

    * rows: exactly the plan's when the source knows them exactly
      (``rows_exact``) and the report names its plan (a Leibrix worker);
    * schema: the reported ``schema_fingerprint`` must equal the one the
      epoch was planned with (``leibrix.domain._schema.fingerprint`` of the
      table the worker built). An **empty** fingerprint means "not reported"
      (the upstream Rust worker sends none) and is accepted on the other
      checks alone; so is any report for an epoch planned without a schema;
    * bytes: only a sanity bound, at most ``bytes_tolerance`` × the planned
      bytes: the measured bytes are the truth and replace the estimate once
      the load is accepted, but a load many times its plan means the plan
      read the wrong thing. A size planned from the source counts as at least
      ``MIN_BYTES_BOUND``; one the request hinted (``bytes_per_epoch``) is the
      operator's own figure and is held to exactly.
    """
    if u.plan_id and e.rows_exact and u.rows != e.rows:
        return f"validation failed: loaded {u.rows} rows, the plan expects exactly {e.rows}"
    planned = e.schema or (ds.schema_fingerprint if ds is not None else "")
    if planned and u.schema_fingerprint and u.schema_fingerprint != planned:
        loaded = _schema.known(u.schema_fingerprint)
        ipc = ds.schema_ipc(planned) if ds is not None else b""
        want = f" ({_schema.canonical(_schema.from_ipc(ipc))})" if ipc else ""
        return (f"validation failed: loaded schema {u.schema_fingerprint}{f' ({loaded})' if loaded else ''} "
                f"differs from the plan's {planned}{want}")
    hinted = ds is not None and ds.request.hints.bytes_per_epoch == e.planned_bytes
    limit = (e.planned_bytes if hinted else max(e.planned_bytes, MIN_BYTES_BOUND)) * bytes_tolerance
    if u.bytes > limit:
        return (f"validation failed: loaded {u.bytes} bytes, over {bytes_tolerance:g}x the planned "
                f"{e.planned_bytes} (at most {int(limit)})")
    return None


class WorkerEvents:
    """The coordinator's handling of worker reports and replica moves (see the module docstring)."""

    def __init__(self, ledger: Ledger, scheduler: Scheduler, retirement: Retirement) -> None:
        self.ledger = ledger
        self.scheduler = scheduler
        self.retirement = retirement

    # ------------------------------------------------------------ status reports

    def _find(self, worker_id: str, dataset_id: str, epoch_id: str) -> tuple[Epoch, Replica] | None:
        for tenant_id in self.ledger.state.tenant_ids():
            e = self.ledger.current((tenant_id, dataset_id, epoch_id))
            if e is not None:
                for r in e.replicas:
                    if r.worker_id == worker_id:
                        return e, r
        return None

    def _withdrawn_from(self, worker_id: str, dataset_id: str, epoch_id: str) -> str | None:
        """The tenant of an epoch whose replica on ``worker_id`` this term withdrew (committed, or staged
        and not yet committed), else None."""
        ledger = self.ledger
        tenant = ledger.withdrawn.get((worker_id, dataset_id, epoch_id))
        if tenant is not None:
            return tenant
        for tenant_id in ledger.state.tenant_ids():
            stored = ledger.state.epochs.get((tenant_id, dataset_id, epoch_id))
            if stored is not None and worker_id in stored.worker_ids():
                return tenant_id
        return None

    async def status(self, worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None:
        """Stage the effect of one status report (the next group commit writes it); call with the lock held."""
        ledger = self.ledger
        found = self._find(worker_id, update.dataset_id, update.epoch_id)
        if found is None:
            tenant = self._withdrawn_from(worker_id, update.dataset_id, update.epoch_id)
            if tenant is None:
                raise FailedPrecondition(
                    f"epoch {update.dataset_id}/{update.epoch_id} was never assigned to worker {worker_id!r}")
            log.info("late status %s for %s/%s from %s: its assignment was withdrawn", update.status,
                     update.dataset_id, update.epoch_id, worker_id)
            if update.status != _STATUS.FAILED:  # it holds (or is loading) a table nobody wants there
                await ledger.send_evict((tenant, update.dataset_id, update.epoch_id), worker_id,
                                        "assignment withdrawn")
            return
        e, replica = found
        if update.status == _STATUS.IN_PROGRESS or replica.state != ASSIGNED:
            return
        if update.plan_id and update.plan_id != replica.plan_id:
            log.info("stale status for %s on %s (plan %s, current %s)", e.key, worker_id, update.plan_id,
                     replica.plan_id)
            return
        if update.status == _STATUS.COMPLETED:
            problem = validate(e, ledger.dataset_of(e), update, ledger.config.bytes_tolerance)
            if problem is None:
                self._loaded(e, worker_id, update.bytes)
                return
        else:
            problem = f"load failed on {worker_id}: {update.error_message or 'no reason given'}"
        self._failed(e, worker_id, problem)

    def _loaded(self, e: Epoch, worker_id: str, measured: int) -> None:
        """Mark the replica LOADED; the bytes it measured (when reported) replace the epoch's charge, so
        reservations, the tenant's usage, placement and benefit count the truth from now on."""
        ledger = self.ledger
        reps = tuple(Replica(r.worker_id, LOADED, r.plan_id) if r.worker_id == worker_id else r for r in e.replicas)
        new = e.evolve(replicas=reps, memory_bytes=measured or e.memory_bytes)
        if new.memory_bytes < e.memory_bytes:
            ledger.kick()  # room freed on the worker and in the tenant's budget: PENDING epochs may fit now
        if new.state is State.LOADING:
            new = ledger.move(new, State.VALIDATING, f"replica on {worker_id} loaded; validating")
        out = [new]
        loaded = sum(1 for r in reps if r.state == LOADED)
        old = None
        if new.state is State.VALIDATING and loaded >= ledger.state.replication(new):
            new = ledger.move(new, State.READY, f"{loaded} replica(s) loaded and validated")
            out = [new]
            if new.replaces:
                old = ledger.current((e.tenant_id, e.dataset_id, new.replaces))
                if old is not None and old.state is State.READY:
                    out.append(ledger.move(old, State.RETIRING, f"replaced by refresh {new.epoch_id}"))
                else:
                    old = None
        if old is None:
            ledger.stage(out)
            return
        key, reason = old.key, f"replaced by {new.epoch_id}"
        ledger.stage(out, lambda: self.retirement.finish(key, reason))

    def _failed(self, e: Epoch, worker_id: str, problem: str) -> None:
        ledger = self.ledger
        retry = ledger.config.retry
        attempts = e.attempts + 1
        keep = tuple(r for r in e.replicas if r.worker_id != worker_id)
        if retry.after_failure(attempts) is State.FAILED and e.state is not State.READY:
            new = ledger.move(e, State.FAILED, f"{problem}; gave up after {attempts} attempts", replicas=(),
                              attempts=attempts)
            victims = e.worker_ids()
        elif e.state is not State.READY and not keep:
            # Nothing else is loading or loaded: back to the queue, retried after the backoff.
            new = ledger.move(e, State.PENDING, f"{problem}; attempt {attempts}, retrying", replicas=(),
                              attempts=attempts)
            victims = [worker_id]
        else:
            # Other replicas carry on; the failed one is re-placed by repair after the backoff.
            new = e.evolve(replicas=keep, attempts=attempts)
            victims = [worker_id]

        async def after() -> None:
            stored = ledger.state.epochs.get(e.key)
            if stored is not None:
                stored.retry_at = ledger.clock() + retry.backoff_s(attempts)
            for w in victims:
                await ledger.send_evict(e.key, w, problem)
            ledger.kick()

        ledger.stage([new], after)

    # ------------------------------------------------------------ membership

    async def registered(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None:
        """Reconcile a (re)registered worker: keep valid holdings, evict the rest, (re)send missing plans."""
        ledger = self.ledger
        async with ledger.lock:
            await ledger.flush_locked()
            held = {(i.dataset_id, i.epoch_id): i for i in inventory}
            changed: list[Epoch] = []
            resend: list[Epoch] = []
            completed: list[pb.InventoryEntry] = []
            evicts: list[tuple[Epoch, str]] = []
            for i, key in enumerate(ledger.replicas_on(worker_id)):
                if i % 500 == 499:
                    await trio.lowlevel.checkpoint()
                e = ledger.state.epochs[key]
                replica = next(r for r in e.replicas if r.worker_id == worker_id)
                entry = held.pop(key[1:], None)
                if entry is None and replica.state == LOADED:
                    # It lost the data: reload it there (other LOADED replicas keep serving meanwhile).
                    reps = tuple(Replica(worker_id, ASSIGNED, e.plan_id) if r.worker_id == worker_id else r
                                 for r in e.replicas)
                    if e.state is State.READY and not any(r.state == LOADED for r in reps):
                        changed.append(ledger.move(e, State.PENDING, f"worker {worker_id} lost the last replica",
                                                   replicas=()))
                        evicts.extend((e, w) for w in e.worker_ids() if w != worker_id)
                    else:
                        changed.append(e.evolve(replicas=reps))
                        resend.append(changed[-1])
                elif entry is None and replica.state == ASSIGNED:
                    resend.append(e)
                elif entry is not None and replica.state == ASSIGNED:
                    completed.append(entry)
            await ledger.write(changed)
            for e, w in evicts:
                await ledger.send_evict(e.key, w, "reloading")
            for i, e in enumerate(resend):
                if not await ledger.send_assignment(e, worker_id):
                    break  # the session closed: its next registration reconciles again
                if i % 256 == 255:
                    await trio.lowlevel.checkpoint()
            for (d, ep), entry in held.items():
                await ledger.send_evict((entry.tenant_id, d, ep), worker_id, "not assigned to this worker")
            for i, entry in enumerate(completed):
                if i % 500 == 499:
                    await trio.lowlevel.checkpoint()
                await self.status(worker_id, cp.DataPullStatusUpdateEvent(
                    dataset_id=entry.dataset_id, epoch_id=entry.epoch_id,
                    status=_STATUS.COMPLETED, plan_id=entry.plan_id, rows=entry.rows,
                    bytes=entry.bytes, schema_fingerprint=entry.schema_fingerprint))
            await ledger.flush_locked()
        ledger.kick()

    async def dead(self, worker_id: str) -> None:
        """Drop a dead worker's replicas and re-place them at once (``existing=`` the survivors)."""
        ledger = self.ledger
        async with ledger.lock:
            await ledger.flush_locked()
            changed: list[Epoch] = []
            evicts: list[tuple[Epoch, str]] = []
            for i, key in enumerate(ledger.replicas_on(worker_id)):
                if i % 500 == 499:
                    await trio.lowlevel.checkpoint()
                e = ledger.state.epochs[key]
                reps = tuple(r for r in e.replicas if r.worker_id != worker_id)
                if e.state is State.READY and not any(r.state == LOADED for r in reps):
                    changed.append(ledger.move(e, State.PENDING, f"worker {worker_id} died with the last replica",
                                               replicas=()))
                    evicts.extend((e, r.worker_id) for r in reps)
                else:
                    changed.append(e.evolve(replicas=reps))
            await ledger.write(changed)
            for e, w in evicts:
                await ledger.send_evict(e.key, w, "reloading")
            await self.scheduler.schedule_locked()

    # ------------------------------------------------------------ moves

    async def move_replica(self, key: EpochKey, from_worker: str, *, make_before_break: bool,
                           to_worker: str | None = None) -> bool:
        """Move one replica of ``key`` off ``from_worker`` (drain / rebalance); True once the new replica is
        LOADED.

        Make-before-break places and loads the new replica first, then evicts
        the old one; break-before-make evicts first (the epoch may serve from
        fewer replicas meanwhile, or none for a single replica). With
        ``to_worker`` the new replica goes there or nowhere: every other
        eligible worker is excluded from the placement (the epoch's strategy
        still checks that it fits); without it the strategy chooses.
        """
        ledger = self.ledger
        async with ledger.lock:
            await ledger.flush_locked()
            e = ledger.state.epochs.get(key)
            if e is None or from_worker not in e.worker_ids():
                return False
            before = set(e.worker_ids())
            rounds = Round(ledger)
            exclude = frozenset({from_worker})
            if to_worker is not None:
                if to_worker in before:
                    return False
                exclude |= {w.id for w in rounds.workers(ledger.pools_of(e.tenant_id)) if w.id != to_worker}
            if make_before_break:
                live = [r.worker_id for r in live_replicas(e)]
                placed = rounds.place(e, existing=live, extra=1, exclude=exclude)
                if not placed:
                    return False
                new = e.evolve(replicas=e.replicas + tuple(Replica(w, ASSIGNED, e.plan_id) for w in placed))
                await ledger.write([new])
                for w in placed:
                    await ledger.send_assignment(new, w)
            else:
                await self._drop_replica(e, from_worker, "moved off (break-before-make)")
                cur = ledger.state.epochs.get(key)
                if to_worker is not None and cur is not None and cur.state in CHARGED:
                    live = [r.worker_id for r in live_replicas(cur)]
                    placed = Round(ledger).place(cur, existing=live, exclude=exclude)
                    if placed:
                        new = cur.evolve(replicas=cur.replicas + tuple(Replica(w, ASSIGNED, cur.plan_id)
                                                                       for w in placed))
                        await ledger.write([new])
                        for w in placed:
                            await ledger.send_assignment(new, w)
                await self.scheduler.schedule_locked()
            cur = ledger.state.epochs.get(key)
            target = [w for w in (cur.worker_ids() if cur else ()) if w not in before]
            if not target:
                return False
        with trio.move_on_after(ledger.config.move_timeout_s):
            while True:
                cur = ledger.state.epochs.get(key)
                states = {r.worker_id: r.state for r in cur.replicas} if cur else {}
                if any(w not in states for w in target):
                    return False
                if all(states[w] == LOADED for w in target):
                    break
                await ledger.changed(key)
            if make_before_break:
                async with ledger.lock:
                    await ledger.flush_locked()
                    cur = ledger.state.epochs.get(key)
                    if cur is not None and from_worker in cur.worker_ids():
                        await self._drop_replica(cur, from_worker, "moved off (make-before-break)")
            return True
        return False

    async def _drop_replica(self, e: Epoch, worker_id: str, reason: str) -> None:
        ledger = self.ledger
        await ledger.write([e.evolve(replicas=tuple(r for r in e.replicas if r.worker_id != worker_id))])
        await ledger.send_evict(e.key, worker_id, reason)
