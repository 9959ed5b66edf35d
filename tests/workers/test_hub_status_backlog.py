"""A busy coordinator never stops a worker's stream from being read: heartbeats stay current."""

from __future__ import annotations

from typing import Any

import trio

from leibrix.master._config import MasterConfig
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import _addr, admission, leading, quota, rpc, states, wait_for
from tests.control.test_schema_e2e import RawWorker, connected, planned

ACTIVE = cp.WorkerState.ACTIVE


async def test_heartbeats_are_read_while_the_coordinator_is_busy(etcd_server: Any, nursery: trio.Nursery) -> None:
    config = MasterConfig(name="m1", cluster="backlog", grpc_listen=_addr(), http_listen=_addr(),
                          etcd_endpoints=[etcd_server.endpoint], lease_ttl=1,
                          worker_heartbeat_interval=0.1, worker_missed_heartbeats=2).validate()
    m = Master(config)
    await nursery.start(m.run)
    await leading(m)

    async with connected(m, RawWorker("raw1", planned, delay_s=0.3)) as raw:
        await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
        await rpc(m, "admit_dataset", admission(regions=("eu",)))
        await wait_for(lambda: len(raw.plans) == 1, what="the assignment")
        (eid,) = states(m)
        coord = m.parts.admission.coordinator
        # The coordinator is busy (as in a long scheduling pass) when the worker's COMPLETED
        # arrives, and stays busy for many heartbeat intervals.
        async with coord.lock:
            seen: set[int] = set()
            with trio.move_on_after(2.0):
                while True:
                    seen.add(m.parts.hub.state("raw1"))
                    await trio.sleep(0.01)
            assert seen == {ACTIVE}, f"the worker looked {seen} while the coordinator was busy"
            assert states(m)[eid] == "LOADING"
        await wait_for(lambda: states(m)[eid] == "READY", what="READY once the coordinator is free")
