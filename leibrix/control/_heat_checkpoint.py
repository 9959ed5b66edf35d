"""Heat checkpoints: the leader's access heat, written to etcd every few seconds so it survives a failover.

Heat (``leibrix.domain._heat``) is fed per access report, which can arrive thousands
of times a second; etcd holds state transitions, never per-heartbeat data, and
per-access data is the same kind. Heat is still worth keeping across a
failover: without it a new leader ranks every epoch by the prior and may load
cold epochs before the ones the gateway is hammering. The compromise chosen
here:

* ``Ledger.report_access`` only marks the epoch *dirty* (in memory);
* every ``heat_checkpoint_interval_s`` this per-term leader service writes
  ``heat/<t>/<d>/<e>`` (a ``HeatRecord``: the heat decayed to that moment,
  stamped with the wall clock) for the epochs fed since the last checkpoint,
  in one fenced commit (the writer cuts it into transactions etcd accepts).

So the write rate is bounded by *accessed epochs ÷ interval*, never by the
access rate, and never-accessed epochs have no record (their heat is the
prior, which needs no storing). A failover loses at most one interval of
access reports; a clean end of term (the leader service is cancelled while
the term is still valid) flushes once more, best effort. Every master's
Mirror keeps the records (``ClusterState.heat_records``), so a new leader
reads nothing from etcd at takeover: it seeds each epoch's heat from its
checkpoint, in chunks right after the term starts (:meth:`HeatCheckpointer.warm`)
or on first use (``Ledger.heat``), whichever comes first.

Records go with their epoch: ``Ledger.delete_epochs`` deletes both in one
transaction (``DropDataset``, ``DeleteTenant``, the janitor). Checkpoints are
written under ``Ledger.lock`` after checking the epoch still exists, so a
checkpoint can never recreate the record of an epoch deleted meanwhile.
"""

from __future__ import annotations

import logging
import time

import trio
from prometheus_client import CollectorRegistry, Counter

from leibrix.control._ledger import Ledger
from leibrix.state._model import parse_epoch_name
from leibrix.store._etcd import EtcdRefused, EtcdUnavailable, Put
from leibrix.store._store import Fenced

__all__ = ["HeatCheckpointer", "checkpoint_counter"]

log = logging.getLogger(__name__)

#: How long the final flush at the end of a term may take before it is abandoned.
_FINAL_FLUSH_S = 1.0
#: Checkpoints decoded between yields to the Trio loop when a term starts.
_WARM_CHUNK = 1000


def checkpoint_counter(registry: CollectorRegistry | None) -> Counter:
    """``leibrix_heat_checkpoints_total``: heat records written (one per accessed epoch per interval)."""
    return Counter("leibrix_heat_checkpoints", "heat checkpoint records written to etcd", registry=registry)


class HeatCheckpointer:
    """The per-term leader service that writes dirty epochs' heat every ``interval_s`` (see module doc)."""

    def __init__(self, coord: Ledger, *, interval_s: float, counter: Counter | None = None) -> None:
        self.coord = coord
        self.interval_s = interval_s
        self._counter = counter

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Warm the term's heat from the checkpoints, then checkpoint every interval until cancelled, then
        flush once more if the term still allows it."""
        task_status.started()
        try:
            await self.warm()
            while True:
                await trio.sleep(self.interval_s)
                try:
                    await self.flush()
                except (EtcdUnavailable, EtcdRefused) as exc:
                    log.warning("heat checkpoint postponed to the next interval: %s", exc)
        finally:
            with trio.move_on_after(_FINAL_FLUSH_S) as scope:
                scope.shield = True
                try:
                    await self.flush()
                except (Fenced, EtcdUnavailable, EtcdRefused):
                    pass  # the term is over (or etcd is gone): at most one interval of heat is lost

    async def warm(self) -> int:
        """Seed the heat of every epoch that has a checkpoint, a chunk at a time; returns how many were seeded.

        ``Ledger.heat`` would seed each epoch on first use anyway, but the
        first scheduling pass of a term asks for the benefit of every PENDING
        epoch in one synchronous call: with 100,000 checkpoints that is about
        0.2 s of decoding without a checkpoint of the Trio loop. Done here under
        ``Ledger.lock`` (so that pass waits for it) with a checkpoint every
        ``_WARM_CHUNK`` records, the lease keepalive and the RPCs keep running.
        """
        coord = self.coord
        state, seeded = coord.state, 0
        names = list(state.heat_records)
        async with coord.lock:
            for i in range(0, len(names), _WARM_CHUNK):
                now = coord.clock()
                for name in names[i:i + _WARM_CHUNK]:
                    e = state.epochs.get(parse_epoch_name(name))
                    if e is not None and e.heat is None:
                        coord.heat(e, now)
                        seeded += 1
                await trio.lowlevel.checkpoint()
        return seeded

    async def flush(self) -> int:
        """Write the heat of every epoch fed since the last flush; returns how many records were written.

        One commit under ``Ledger.lock`` (the writer sizes its transactions).
        If it fails (``EtcdUnavailable``, ``EtcdRefused`` propagate) every
        epoch stays dirty for the next flush (rewriting a checkpoint that did
        land is harmless); ``Fenced`` ends the term as for any other leader
        write.
        """
        coord = self.coord
        dirty, coord.heat_dirty = coord.heat_dirty, set()
        model, written = coord.config.heat, False
        try:
            async with coord.lock:
                now, wall = coord.clock(), time.time()
                ops: list[Put] = []
                for i, k in enumerate(dirty):
                    if i % _WARM_CHUNK == _WARM_CHUNK - 1:
                        await trio.lowlevel.checkpoint()
                    if (e := coord.state.epochs.get(k)) is not None:
                        ops.append(Put(coord.keys.heat(*k), coord.heat(e, now).checkpoint(model, now, wall)))
                if ops:
                    await coord.write([], ops)
                written = True
        finally:
            if not written:
                coord.heat_dirty.update(dirty)  # not known to be written: try again at the next flush
        if self._counter is not None:
            self._counter.inc(len(ops))
        return len(ops)
