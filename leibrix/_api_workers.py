"""ManagementService RPCs about workers: ListWorkers, GetWorker, DrainWorker.

Liveness lives only in the leader's memory (heartbeats are never written to
etcd), so these are answered by the leader; a follower answers UNAVAILABLE
with ``leibrix-leader`` and the client retries there.
"""

from __future__ import annotations

from leibrix._api import ApiMixin
from leibrix._drain import Drain, start_drain
from leibrix._grpc import trio_rpc
from leibrix._proto import leibrix_cp as cp
from leibrix._worker_hub import WorkerHub

__all__ = ["WorkerApi", "drain_response"]


def drain_response(hub: WorkerHub, drain: Drain) -> cp.DrainWorkerResponse:
    """The DrainWorker answer for a drain, finished or (with ``no_wait``) still running."""
    state = hub.state(drain.worker_id) or cp.WorkerState.UNKNOWN
    if drain.done.is_set():
        remaining = drain.remaining
    else:  # still running: what the worker holds right now
        remaining = hub.coordinator.replica_count(drain.worker_id) if hub.coordinator else 0
    return cp.DrainWorkerResponse(
        worker_id=drain.worker_id, state=state,
        moved_make_before_break=drain.moved_make_before_break,
        moved_break_before_make=drain.moved_break_before_make,
        remaining=remaining, deadline_exceeded=drain.deadline_exceeded,
        message=drain.message or "draining",
    )


class WorkerApi(ApiMixin):
    """Worker RPCs of the ManagementService (see :mod:`leibrix._api` for how mixins compose)."""

    @property
    def _hub(self) -> WorkerHub:
        self.master.leader_context()  # followers: UNAVAILABLE + leibrix-leader
        return self.master.worker_hub

    @trio_rpc
    async def list_workers(self, request: cp.ListWorkersRequest) -> cp.ListWorkersResponse:
        """Every worker the leader knows (live, suspect, draining and dead), sorted by id."""
        return cp.ListWorkersResponse(workers=await self._hub.infos())

    @trio_rpc
    async def get_worker(self, request: cp.GetWorkerRequest) -> cp.WorkerInfo:
        """One worker: state, capacity, reservations, reported usage, replica count, last contact."""
        return self._hub.info(request.worker_id)

    @trio_rpc
    async def drain_worker(self, request: cp.DrainWorkerRequest) -> cp.DrainWorkerResponse:
        """Drain a worker (see :mod:`leibrix._drain`); waits for the end unless ``no_wait``."""
        hub = self._hub
        drain = await start_drain(hub, request.worker_id, deadline_s=request.deadline_s,
                                  max_parallel=request.max_parallel)
        if not request.no_wait:
            await drain.done.wait()
        return drain_response(hub, drain)
