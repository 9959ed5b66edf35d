"""Membership transitions in etcd: ``workers/<w>`` records, group-committed through the term's fenced writer.

A record is written when a worker's state changes (registered ACTIVE,
DRAINING, DRAINED, DEAD), never per heartbeat. Writers wait for the next
group commit instead of sending a transaction each: thousands of workers
re-registering with a new leader become a few transactions, not thousands,
so the storm cannot starve the lease keepalive. The fenced writer cuts a
large group into transactions within etcd's limits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import trio

from leibrix.domain._errors import Unavailable
from leibrix.store._etcd import EtcdError, Put
from leibrix.store._store import Fenced, FencedWriter, Keys

__all__ = ["RecordWriter"]


@dataclass(eq=False)
class _Batch:
    """Worker records waiting for one group commit."""

    ops: dict[str, bytes] = field(default_factory=dict)
    done: trio.Event = field(default_factory=trio.Event)
    error: BaseException | None = None


class RecordWriter:
    """Group commit of one term's worker records; :meth:`run` is a task of the term's nursery.

    Parameters
    ----------
    writer:
        The term's fenced writer.
    keys:
        The cluster's key layout.
    leader_hint:
        Returns the leader's address for the ``Unavailable`` of a write cut short by the term's end.
    """

    def __init__(self, writer: FencedWriter, keys: Keys, leader_hint: Callable[[], str]) -> None:
        self._writer = writer
        self._keys = keys
        self._leader_hint = leader_hint
        self._batch = _Batch()
        self._ready = trio.Event()

    async def write(self, worker_id: str, record: bytes) -> None:
        """Write ``record`` as ``workers/<worker_id>`` in the next group commit; returns once committed.

        Raises the commit's error: :class:`~leibrix.store._store.Fenced` (the
        term is over), an ``EtcdError`` (etcd refused or did not answer: the
        caller may retry), or ``Unavailable`` if the term ended first.
        """
        batch = self._batch
        batch.ops[self._keys.worker(worker_id)] = record
        self._ready.set()
        await batch.done.wait()
        if batch.error is not None:
            raise batch.error

    async def run(self) -> None:
        """Commit pending records, one fenced commit per batch, until cancelled or fenced.

        When it ends, the records still waiting fail with ``Unavailable``, and so does any later write.
        """
        try:
            while True:
                await self._ready.wait()
                self._ready = trio.Event()
                batch, self._batch = self._batch, _Batch()
                try:
                    await self._writer.commit([Put(k, v) for k, v in batch.ops.items()])
                except Fenced as e:
                    batch.error = e
                    raise  # the term is over: the master ends it
                except EtcdError as e:
                    batch.error = e  # these writes fail; registrations answer UNAVAILABLE and workers retry
                except BaseException:
                    batch.error = Unavailable("leadership ended", leader=self._leader_hint())
                    raise
                finally:
                    batch.done.set()
        finally:
            self._batch.error = Unavailable("leadership ended", leader=self._leader_hint())
            self._batch.done.set()
