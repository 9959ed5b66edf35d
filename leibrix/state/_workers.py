"""Where clients reach each worker, known on every master from the mirrored ``workers/`` records.

Routes carry worker addresses. The leader knows its connected workers, but a
follower must answer ``ResolveRoute`` and ``WatchRoutes`` with the same
content, so addresses come from the membership records every master mirrors.
A worker's query address is its ``flight_addr`` label when it declares one,
else its registered ``addr``; an address that is one of the masters' own gRPC
addresses is never published as a worker's (the Rust leibrix-worker registers
the master's address it dialed as its ``addr``).
"""

from __future__ import annotations

from leibrix.store._store import Table
from leibrix.wire._labels import FLIGHT_ADDR
from leibrix.wire._proto.records import state_pb2

__all__ = ["WorkerAddresses"]


class WorkerAddresses:
    """Query addresses of workers, from the ``workers/`` and ``masters/`` tables of the Mirror."""

    def __init__(self, workers: Table[state_pb2.WorkerRecord], masters: Table[state_pb2.MasterRecord]) -> None:
        self._workers = workers
        self._masters = masters

    def addr(self, worker_id: str) -> str | None:
        """The worker's query address, or None when it has declared none usable."""
        record = self._workers.get(worker_id)
        if record is None:
            return None
        addr = record.worker.labels.get(FLIGHT_ADDR) or record.worker.addr
        if not addr or any(m.grpc_addr == addr for m in self._masters.values()):
            return None
        return addr
