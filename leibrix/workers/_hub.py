"""The leader's end of ``CoordinateWorker``: :class:`WorkerHub`, the parts of this package put together.

The hub is built once per master and served by the gRPC server for the
master's whole life; it works only during a leadership term. It is

* the :class:`~leibrix.workers._membership.Membership` (the Trio side:
  members, liveness, records, dead workers, join rebalancing; the
  ``WorkerDirectory`` the control loop places with and a leader service);
* a gRPC servable whose ``CoordinateWorker`` streams are served by
  :class:`~leibrix.workers._stream.WorkerStreams` (the asyncio side), which
  reports to the membership through the ``Registry`` protocol;
* the Management API's view of the workers (:meth:`WorkerHub.info`, :meth:`WorkerHub.infos`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timezone

import grpclib.const
import trio

from leibrix.domain._errors import NotFound
from leibrix.store._store import Keys
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.workers._config import HubConfig
from leibrix.workers._member import Member
from leibrix.workers._membership import Membership
from leibrix.workers._messages import clip
from leibrix.workers._stream import WorkerStreams

__all__ = ["HubConfig", "Member", "WorkerHub"]


class WorkerHub(Membership):
    """ControlPlaneService for the master + the WorkerDirectory half of the seam + a leader service.

    Parameters are those of :class:`~leibrix.workers._membership.Membership`.
    """

    def __init__(
        self,
        config: HubConfig,
        *,
        master_id: str,
        keys: Keys,
        leader_hint: Callable[[], str] = lambda: "",
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        super().__init__(config, master_id=master_id, keys=keys, leader_hint=leader_hint, clock=clock)
        self._streams = WorkerStreams(config, self, master_id=master_id)

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return self._streams.mapping()

    # ---- views for the API ---------------------------------------------------

    def info(self, worker_id: str) -> cp.WorkerInfo:
        """One worker as the Management API shows it (NotFound if unknown).

        ``capacity`` is what the worker registered with, or the configured
        default it was given when it registered without one.
        """
        m = self.members.get(worker_id)
        w = self.liveness.get(worker_id)
        if m is None or w is None:
            raise NotFound(f"worker {clip(worker_id)!r} is not known to the leader")
        used_mem, used_cpu = self.reserved(worker_id)
        coordinator = self.coordinator if self._term is not None else None
        return cp.WorkerInfo(
            worker_id=worker_id, addr=m.addr, labels=dict(m.labels), state=cp.WorkerState(int(w.state)),
            capacity=cp.Resources(memory_bytes=m.memory_bytes, cpu_cores=m.cpu_cores),
            reserved=cp.Resources(memory_bytes=used_mem, cpu_cores=used_cpu),
            memory_used_bytes=m.memory_used_bytes, loads_in_flight=m.loads_in_flight,
            replicas=coordinator.replica_count(worker_id) if coordinator is not None else 0,
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
