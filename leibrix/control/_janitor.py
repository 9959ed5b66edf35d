"""The janitor: a per-term leader service that prunes records etcd (and every master's Mirror) no longer needs.

Without it two kinds of records grow forever:

* ``requests/<id>`` idempotency records, one per admission that carried a
  request id. They are deleted ``request_ttl_s`` after they were written
  (default 24 h, the usual idempotency-key window). A retry with the same id
  after that is a *new* request, which is still safe: re-admitting a dataset
  with an identical request is a no-op (it is answered "already admitted: no
  change" and creates nothing).
* RETIRED epoch records (kept so ``GetDataset``/``ListEpochs`` show what
  happened). They are deleted, with their heat checkpoint, once their RETIRED
  transition is older than ``retired_ttl_s`` (default 1 h). FAILED epochs are
  never pruned: an operator looks at them and retires them (``RetireEpoch``
  moves FAILED to RETIRED, and the TTL starts then).

A pass runs every ``prune_interval_s``. It never walks all epochs: RETIRED
ones are indexed by the coordinator (``Ledger.retired``, maintained from
state changes), and the requests walk yields to the loop every few thousand
records. Epoch deletions happen under ``Ledger.lock`` (which serialises
every read-modify-write of epoch records), one bounded chunk per lock hold so
scheduling is never held up for long, and every delete compares the record's
``mod_revision`` with the one the decision was made on: admissions write
epochs without the lock, and re-admitting a RETIRED epoch rewrites its record
as PENDING; such a rewrite makes the transaction fail (``Conflict``) instead of
being deleted, and the next pass decides again on the new state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

import trio
from prometheus_client import CollectorRegistry, Counter

from leibrix.control._ledger import Ledger
from leibrix.store._etcd import Compare, Delete, EtcdUnavailable
from leibrix.domain._lifecycle import State
from leibrix.wire._proto.records import state_pb2
from leibrix.state._model import Epoch, EpochKey
from leibrix.store._store import Conflict, Keys, Table

__all__ = ["Janitor", "JanitorCounters"]

log = logging.getLogger(__name__)

#: Records examined between yields to the Trio loop.
_CHUNK = 2000


class JanitorCounters:
    """``leibrix_pruned_requests_total`` and ``leibrix_pruned_epochs_total`` in a master's registry."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.requests = Counter("leibrix_pruned_requests", "expired idempotency records deleted", registry=registry)
        self.epochs = Counter("leibrix_pruned_epochs", "RETIRED epoch records deleted after their TTL",
                              registry=registry)


def retired_at_ms(e: Epoch) -> int | None:
    """Wall-clock ms of the epoch's RETIRED transition (None if it is not RETIRED or has no history)."""
    if e.state is not State.RETIRED:
        return None
    history = e.history
    return history[-1].at_ms if history and history[-1].to_state is State.RETIRED else None


class Janitor:
    """Prunes expired ``requests/`` and RETIRED epochs for one term (see the module docstring)."""

    def __init__(self, coord: Ledger, requests: Table[state_pb2.RequestRecord] | None, *,
                 commit: Callable[..., Awaitable[int]], request_ttl_s: float, retired_ttl_s: float,
                 interval_s: float, counters: JanitorCounters | None = None) -> None:
        self.coord = coord
        self.requests = requests
        self._commit = commit
        self.request_ttl_s = request_ttl_s
        self.retired_ttl_s = retired_ttl_s
        self.interval_s = interval_s
        self.counters = counters

    @property
    def keys(self) -> Keys:
        """The cluster's key layout (the coordinator's)."""
        return self.coord.keys

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """A pruning pass every ``interval_s`` until cancelled (etcd trouble postpones it to the next)."""
        task_status.started()
        while True:
            await trio.sleep(self.interval_s)
            try:
                await self.prune()
            except EtcdUnavailable as exc:
                log.info("pruning postponed: etcd did not answer (%s)", exc)

    async def prune(self) -> tuple[int, int]:
        """One pass; returns ``(requests, epochs)`` deleted."""
        return await self.prune_requests(), await self.prune_epochs()

    async def prune_requests(self) -> int:
        """Delete ``requests/<id>`` records written more than ``request_ttl_s`` ago."""
        table = self.requests
        if table is None:
            return 0
        cutoff = time.time() - self.request_ttl_s
        expired: list[tuple[str, int]] = []
        for i, rid in enumerate(list(table)):
            if i % _CHUNK == _CHUNK - 1:
                await trio.sleep(0)  # the mirror may change the table meanwhile: hence the lookups below
            rec = table.get(rid)
            rev = table.mod_revision(rid)
            if rec is not None and rev is not None and rec.at.seconds + rec.at.nanos / 1e9 <= cutoff:
                expired.append((rid, rev))
        step, done = max(1, self.coord.config.max_txn_ops - 1), 0
        for i in range(0, len(expired), step):
            chunk = expired[i:i + step]
            try:
                await self._commit([Delete(self.keys.request(rid)) for rid, _ in chunk],
                                   compares=[Compare(self.keys.request(rid), "mod", "==", rev) for rid, rev in chunk])
            except Conflict:
                log.info("pruning requests: a record changed meanwhile; the next pass decides again")
                break
            done += len(chunk)
            if self.counters is not None:
                self.counters.requests.inc(len(chunk))
        return done

    async def prune_epochs(self) -> int:
        """Delete RETIRED epochs (and their heat) whose RETIRED transition is older than ``retired_ttl_s``.

        Candidates are picked from the RETIRED index without the lock (a pass
        that finds nothing never contends with scheduling), then re-checked
        under it, one transaction's worth at a time.
        """
        coord = self.coord
        state = coord.state
        cutoff = int((time.time() - self.retired_ttl_s) * 1000)
        candidates = []
        for i, key in enumerate(list(coord.retired)):
            if i % _CHUNK == _CHUNK - 1:
                await trio.sleep(0)  # the first look at an epoch decodes its history
            if self._expired(key, cutoff):
                candidates.append(key)
        step, done = coord.epochs_per_txn, 0
        for i in range(0, len(candidates), step):
            async with coord.lock:
                await coord.flush_locked()
                doomed = [key for key in candidates[i:i + step] if self._expired(key, cutoff)]
                revisions = [state.epoch_revision(key) for key in doomed]
                try:
                    await coord.delete_epochs(doomed, revisions)
                except Conflict:
                    log.info("pruning epochs: a record was rewritten meanwhile; the next pass decides again")
                    break
            done += len(doomed)
            if self.counters is not None:
                self.counters.epochs.inc(len(doomed))
        return done

    def _expired(self, key: EpochKey, cutoff_ms: int) -> bool:
        """Whether the epoch is RETIRED since ``cutoff_ms`` or earlier, with a known record revision."""
        e = self.coord.state.epochs.get(key)
        at = retired_at_ms(e) if e is not None else None
        return at is not None and at <= cutoff_ms and self.coord.state.epoch_revision(key) is not None
