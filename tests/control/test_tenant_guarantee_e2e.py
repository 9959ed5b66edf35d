"""Over real gRPC on loopback, with a real master, etcd and a reference worker: UpsertTenantQuota refuses
guarantees the pool cannot honour, with the numbers; a flood of AdmitDataset past the in-flight bound is shed
with RESOURCE_EXHAUSTED and a retry hint while the admissions let in are all acknowledged."""

from __future__ import annotations

import dataclasses
import threading
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import MiB, admission, quota, rpc
from tests.support.cluster import master_with_workers


async def test_guarantees_beyond_the_pools_capacity_are_refused_with_the_numbers(
        etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1", memory="256MiB")
    await rpc(m, "upsert_tenant_quota", quota("a", guaranteed_memory_bytes=200 * MiB))
    with pytest.raises(GRPCError) as info:
        await rpc(m, "upsert_tenant_quota", quota("b", guaranteed_memory_bytes=57 * MiB))
    assert info.value.status == Status.FAILED_PRECONDITION
    assert info.value.message == (
        f"guaranteed memory of the shared pool: {257 * MiB} bytes guaranteed ('a' {200 * MiB}, 'b' {57 * MiB}) > "
        f"{256 * MiB} bytes of capacity on its workers now; add workers or lower a guarantee")
    await rpc(m, "upsert_tenant_quota", quota("b", guaranteed_memory_bytes=56 * MiB))  # exactly fits
    # an edit that does not raise the guarantee is never refused for capacity
    await rpc(m, "upsert_tenant_quota", quota("a", guaranteed_memory_bytes=200 * MiB, max_epochs=5))
    tenant = await rpc(m, "get_tenant", cp.GetTenantRequest(tenant_id="b"))
    assert tenant.quota.guaranteed_memory_bytes == 56 * MiB


async def test_an_admission_flood_on_loopback_is_shed_with_a_retry_hint(etcd_server: Any,
                                                                         nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    admissions = m.parts.admission.admissions
    # The admissions let in stay in planning until one is shed: the flood overlaps them however fast they plan.
    flooded = threading.Event()

    def held(spec):
        flooded.wait(10)
        return admissions_config.planner(spec)

    admissions_config = admissions.config
    admissions.config = dataclasses.replace(admissions_config, max_in_flight=2, retry_after_ms=300, planner=held)
    ok, shed, other = [], [], []

    async def admit(i: int) -> None:
        try:
            ok.append(await rpc(m, "admit_dataset", admission(dataset=f"flood{i}", request_id=f"flood-{i}")))
        except GRPCError as exc:
            (shed if exc.status == Status.RESOURCE_EXHAUSTED else other).append(exc)
            flooded.set()

    async with trio.open_nursery() as flood:
        for i in range(40):
            flood.start_soon(admit, i)
    assert other == [] and len(ok) + len(shed) == 40
    assert shed and ok, (len(ok), len(shed))
    assert all("retry-after-ms=300" in e.message and "limit 2" in e.message for e in shed)
    assert admissions.in_flight == 0 and admissions.shed == len(shed)
    # exactly the admissions let in are stored, every one of them
    assert {d for (t, d) in m.parts.admission.state.datasets if t == "acme"} == \
        {f"flood{r.request_id.split('-')[1]}" for r in ok}
