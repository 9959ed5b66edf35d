"""Join rebalancing asks the coordinator for a few movable replicas of a worker, never for all of them:
only loaded replicas of READY epochs qualify (moving one that is still loading would load it twice)."""

from __future__ import annotations

from typing import Any

import trio

from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, leading, quota, rpc, start_master, states, wait_for
from tests.support.raw_worker import RawWorker, connected, planned


async def test_movable_replicas_are_loaded_replicas_of_ready_epochs_up_to_the_limit(
        etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    # the worker reports the "done" dataset's loads and stays silent (still loading) on "busy"
    raw = RawWorker("raw1", lambda a: planned(a) if a.dataset_id == "done" else None)
    async with connected(m, raw):
        await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
        await rpc(m, "admit_dataset", admission(dataset="done", days=5))
        await rpc(m, "admit_dataset", admission(dataset="busy", days=3))
        await wait_for(lambda: len(states(m, dataset="done")) == 5
                       and set(states(m, dataset="done").values()) == {"READY"}, what="done READY")
        await wait_for(lambda: len(raw.plans) == 8, what="all eight assignments")
        assert set(states(m, dataset="busy").values()) == {"LOADING"}
        coord = m.parts.admission.coordinator
        assert coord.replica_count("raw1") == 8 and coord.replica_count("nobody") == 0
        ready = {("acme", "done", e) for e in states(m, dataset="done")}
        picked = coord.movable_replicas("raw1", 3)
        assert len(picked) == 3 and set(picked) <= ready
        assert set(coord.movable_replicas("raw1", 100)) == ready
        assert coord.movable_replicas("nobody", 3) == []
