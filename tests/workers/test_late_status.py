"""A status report that crosses the master's evict on the wire is late, not bad input.

Real etcd, a real master, real gRPC; the worker is a raw protocol client so
the test decides when its COMPLETED report leaves (after the replica was
withdrawn).
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from leibrix.domain._errors import FailedPrecondition
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, leading, quota, rpc, start_master, states, wait_for
from tests.support.raw_worker import RawWorker, connected, planned

QUEUE = cp.AdmissionPolicy.QUEUE


async def test_completed_after_the_epoch_was_retired_is_answered_with_an_evict_not_a_closed_stream(
        etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    # the worker reports 1.5 s after each assignment: long enough for the epoch to be retired meanwhile
    raw = RawWorker("raw1", planned, delay_s=1.5)
    async with connected(m, raw):
        session = m.parts.hub.members["raw1"].session
        await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
        await rpc(m, "admit_dataset", admission(regions=("eu",)))
        (eid,) = states(m)
        await wait_for(lambda: len(raw.plans) == 1, what="the assignment")
        await rpc(m, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="orders", epoch_id=eid))
        assert states(m)[eid] == "RETIRED"
        # the worker reads the retirement's evict only after its report has left; the master answers that
        # late COMPLETED with a second evict and keeps the stream
        await wait_for(lambda: len(raw.evicts) >= 2, timeout=10, what="the retirement's evict and the answer")
        await trio.sleep(0.2)
        assert raw.evicts == [("orders", eid)] * 2
        assert m.parts.hub.members["raw1"].session is session
        assert m.parts.hub.state("raw1") == cp.WorkerState.ACTIVE
        e = m.parts.admission.state.epochs[("acme", "orders", eid)]
        assert (e.state.name, e.replicas) == ("RETIRED", ())


async def test_a_status_for_an_epoch_never_assigned_to_the_worker_is_still_refused(
        etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    raw = RawWorker("raw1", lambda a: None)  # silent: its replica stays ASSIGNED
    async with connected(m, raw):
        await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
        await rpc(m, "admit_dataset", admission(regions=("eu",)))
        (eid,) = states(m)
        await wait_for(lambda: len(raw.plans) == 1, what="the assignment")
        coord = m.parts.admission.coordinator
        done = cp.DataPullStatusUpdateEvent(dataset_id="orders", epoch_id=eid,
                                            status=cp.DataPullStatusUpdateEventStatus.COMPLETED)
        for worker, epoch in (("raw2", eid), ("raw1", "1767225600000_000000")):
            with pytest.raises(FailedPrecondition, match="was never assigned to worker"):
                await coord.on_status(worker, cp.DataPullStatusUpdateEvent(
                    dataset_id="orders", epoch_id=epoch, status=done.status))
        assert states(m)[eid] == "LOADING" and raw.evicts == []
