"""ManagementService RPCs about workers: ListWorkers (paged), GetWorker, DrainWorker, UndrainWorker.

Liveness lives only in the leader's memory (heartbeats are never written to
etcd), so these are answered by the leader; a follower answers UNAVAILABLE
with ``leibrix-leader`` and the client retries there.
"""

from __future__ import annotations

from leibrix.control._drain import Drain, cancel_drain, start_drain
from leibrix.api._pages import page
from leibrix.api._server import trio_rpc
from leibrix.domain._errors import NotFound
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.store._term import Leadership
from leibrix.workers._hub import WorkerHub

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


def _info(hub: WorkerHub, worker_id: str) -> cp.WorkerInfo | None:
    """The worker's info, or None when it left while a page was being built."""
    try:
        return hub.info(worker_id)
    except NotFound:
        return None


class WorkerApi(cp.ManagementServiceBase):
    """ManagementService area: the workers the leader knows, and draining them."""

    def __init__(self, leadership: Leadership, hub: WorkerHub) -> None:
        self.leadership = leadership
        self.hub = hub

    @property
    def _hub(self) -> WorkerHub:
        self.leadership.leader_context()  # followers: UNAVAILABLE + leibrix-leader
        return self.hub

    @trio_rpc
    async def list_workers(self, request: cp.ListWorkersRequest) -> cp.ListWorkersResponse:
        """One page of the workers the leader knows (live, suspect, draining and dead), ordered by id."""
        hub = self._hub
        workers, token = await page(request, (((wid,), wid) for wid in hub.members), lambda wid: _info(hub, wid))
        return cp.ListWorkersResponse(workers=workers, next_page_token=token)

    @trio_rpc
    async def get_worker(self, request: cp.GetWorkerRequest) -> cp.WorkerInfo:
        """One worker: state, capacity, reservations, reported usage, replica count, last contact."""
        return self._hub.info(request.worker_id)

    @trio_rpc
    async def drain_worker(self, request: cp.DrainWorkerRequest) -> cp.DrainWorkerResponse:
        """Drain a worker (see :mod:`leibrix.control._drain`); waits for the end unless ``no_wait``."""
        hub = self._hub
        drain = await start_drain(hub, request.worker_id, deadline_s=request.deadline_s,
                                  max_parallel=request.max_parallel)
        if not request.no_wait:
            await drain.done.wait()
        return drain_response(hub, drain)

    @trio_rpc
    async def undrain_worker(self, request: cp.UndrainWorkerRequest) -> cp.WorkerInfo:
        """Cancel a drain (see :func:`leibrix.control._drain.cancel_drain`); answers the worker as it is now."""
        hub = self._hub
        await cancel_drain(hub, request.worker_id)
        return hub.info(request.worker_id)
