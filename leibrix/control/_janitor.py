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
* uncommitted epochs (``ClusterState.uncommitted``): written by an admission
  whose dataset record never followed (its leader died, or etcd failed,
  between the transactions; see ``leibrix.control._admission``). They are
  invisible, and deleted with their heat once nothing has rewritten them for
  ``orphan_ttl_s`` (as this master saw it) and no admission of their dataset
  is being written.

A pass runs every ``prune_interval_s``. It never walks all epochs: RETIRED
ones are indexed by the coordinator (``Ledger.retired``, maintained from
state changes), and the requests walk yields to the loop every few thousand
records. Epoch deletions happen under ``Ledger.lock`` (which serialises
every read-modify-write of epoch records), candidates re-checked there, and every delete compares the record's ``mod_revision``
with the one the decision was made on: admissions write
epochs without the lock, and re-admitting a RETIRED epoch rewrites its record
as PENDING; such a rewrite makes the transaction fail (``Conflict``) instead of
being deleted, and the next pass decides again on the new state.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import trio
from prometheus_client import CollectorRegistry, Counter

from leibrix.control._ledger import Ledger
from leibrix.store._etcd import Compare, Delete, EtcdRefused, EtcdUnavailable
from leibrix.domain._lifecycle import State
from leibrix.wire._proto.records import state_pb2
from leibrix.state._model import Epoch, EpochKey
from leibrix.store._store import Atomic, Conflict, Keys, Table

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
        self.uncommitted = Counter("leibrix_pruned_uncommitted_epochs",
                                   "epoch records of admissions that never committed, deleted", registry=registry)


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
                 interval_s: float, counters: JanitorCounters | None = None, orphan_ttl_s: float = 600.0,
                 writing: Callable[[str, str], bool] = lambda tenant_id, dataset_id: False) -> None:
        self.coord = coord
        self.requests = requests
        self._commit = commit
        self.request_ttl_s = request_ttl_s
        self.retired_ttl_s = retired_ttl_s
        self.interval_s = interval_s
        self.counters = counters
        self.orphan_ttl_s = orphan_ttl_s
        self._writing = writing

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
            except (EtcdUnavailable, EtcdRefused) as exc:
                log.warning("pruning postponed to the next pass: %s", exc)

    async def prune(self) -> tuple[int, int, int]:
        """One pass; returns ``(requests, epochs, uncommitted epochs)`` deleted."""
        return await self.prune_requests(), await self.prune_epochs(), await self.prune_uncommitted()

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
        if not expired:
            return 0
        try:
            await self._commit([Atomic([Delete(self.keys.request(rid))], [Compare(self.keys.request(rid), "mod", "==", rev)])
                                for rid, rev in expired])
        except Conflict:
            log.info("pruning requests: a record changed meanwhile; the next pass decides again")
        finally:
            done = sum(1 for rid, _ in expired if table.get(rid) is None)
            if self.counters is not None:
                self.counters.requests.inc(done)
        return done

    async def prune_epochs(self) -> int:
        """Delete RETIRED epochs (and their heat) whose RETIRED transition is older than ``retired_ttl_s``.

        Candidates are picked from the RETIRED index without the lock (a pass
        that finds nothing never contends with scheduling), then re-checked
        and deleted under it in one commit.
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
        if not candidates:
            return 0
        async with coord.lock:
            await coord.flush_locked()
            doomed = [key for key in candidates if self._expired(key, cutoff)]
            done = await self._delete(doomed, [state.epoch_revision(key) for key in doomed], "epochs")
        if self.counters is not None:
            self.counters.epochs.inc(done)
        return done

    async def prune_uncommitted(self) -> int:
        """Delete uncommitted epochs (and their heat) left alone for ``orphan_ttl_s``, unless an admission of
        their dataset is being written."""
        coord = self.coord
        state = coord.state

        def doomed() -> list[EpochKey]:
            return [key for key in state.uncommitted_since(time.monotonic() - self.orphan_ttl_s)
                    if not self._writing(*key[:2]) and state.epoch_revision(key) is not None]

        if not doomed():
            return 0
        async with coord.lock:
            keys = doomed()
            done = await self._delete(keys, [state.epoch_revision(key) for key in keys], "uncommitted epochs")
        if self.counters is not None:
            self.counters.uncommitted.inc(done)
        return done

    async def _delete(self, keys: Sequence[EpochKey], revisions: Sequence[int | None], what: str) -> int:
        """``Ledger.delete_epochs`` guarded by ``revisions``; returns how many records are gone after it."""
        try:
            await self.coord.delete_epochs(keys, revisions)  # type: ignore[arg-type]
        except Conflict:
            log.info("pruning %s: a record was rewritten meanwhile; the next pass decides again", what)
        return sum(1 for key in keys if self.coord.state.epoch_revision(key) is None)

    def _expired(self, key: EpochKey, cutoff_ms: int) -> bool:
        """Whether the epoch is RETIRED since ``cutoff_ms`` or earlier, with a known record revision."""
        e = self.coord.state.epochs.get(key)
        at = retired_at_ms(e) if e is not None else None
        return at is not None and at <= cutoff_ms and self.coord.state.epoch_revision(key) is not None
