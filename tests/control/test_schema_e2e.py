"""Schema validation end to end: real etcd, a real master, real gRPC, real reference workers, and a raw
protocol client standing in for a worker that misreports its table."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.domain import _schema
from leibrix.domain._lifecycle import RetryPolicy
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from tests.support.admission import admission, all_ready, quota, routed, rpc, states
from tests.support.cluster import leading, start_master, workers
from tests.support.poll import eventually
from tests.support.raw_worker import RawWorker, connected, planned

QUEUE = cp.AdmissionPolicy.QUEUE
#: Short enough for a test, long enough that each retry is a separate assignment.
FAST_RETRY = RetryPolicy(max_attempts=2, base_s=0.05, cap_s=0.1)


def short_retries(m: Any) -> None:
    coord = m.parts.admission.coordinator
    coord.config = dataclasses.replace(coord.config, retry=FAST_RETRY)


def record_reports(m: Any) -> list[cp.DataPullStatusUpdateEvent]:
    """Every status report the leader's coordinator receives (then handled as usual)."""
    coord = m.parts.admission.coordinator
    seen: list[cp.DataPullStatusUpdateEvent] = []
    handle = coord.on_status

    async def on_status(worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None:
        seen.append(update)
        await handle(worker_id, update)

    coord.on_status = on_status
    return seen


async def test_reference_worker_loads_an_epoch_ready_with_the_datasets_fingerprint(etcd_server: Any,
                                                                                  nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    reports = record_reports(m)
    await workers(nursery, m, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    await rpc(m, "admit_dataset", admission(regions=("eu",)))
    (eid,) = states(m)
    await eventually(lambda: states(m), until=lambda s: s[eid] == "READY", timeout=30, what="READY")
    ds = m.parts.admission.state.datasets[("acme", "orders")]
    # the sample table's columns are the synthetic table's: admission recorded the source's schema
    expected = _schema.synthetic("ts", ["region"])
    assert (ds.schema_fingerprint, ds.arrow_schema) == (expected.fingerprint, expected.ipc)
    completed = [u for u in reports if u.status == cp.DataPullStatusUpdateEventStatus.COMPLETED]
    # the worker measured its DuckDB table; it agrees with what admission recorded
    assert [u.schema_fingerprint for u in completed] == [expected.fingerprint]
    assert routed(m) == {eid}


async def test_admission_refuses_a_dimension_column_the_source_does_not_have(etcd_server: Any,
                                                                               nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    req = admission(regions=("eu",))
    req.source.partition.dimension_partitions.append(cp.DimensionPartition(
        column=cp.PartitionColumn(name="country"), values=cp.PartitionValues(values=["x"])))
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", req)
    assert info.value.status == Status.INVALID_ARGUMENT
    assert info.value.message.startswith("source.partition.dimension_partitions[1].column.name: no column 'country'")
    assert ("acme", "orders") not in m.parts.admission.state.datasets


# ---------------------------------------------------------------- a raw protocol worker


async def test_a_completed_report_with_another_schema_is_retried_then_failed(etcd_server: Any,
                                                                             nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    short_retries(m)
    table = _schema.synthetic("ts", ["region"])
    other = _schema.synthetic("ts", ["country"])  # a table this process knows: the master can name it

    def answer(a: pb.DataAssignmentEvent) -> str:
        return {"good": planned(a), "blank": "", "bad": other.fingerprint}[a.dataset_id]

    raw = RawWorker("raw1", answer)
    async with connected(m, raw):
        await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
        for name in ("good", "blank", "bad"):
            await rpc(m, "admit_dataset", admission(dataset=name, regions=("eu",)))
        (bad,) = states(m, dataset="bad")

        def failed_never_routed() -> str:
            assert bad not in routed(m, dataset="bad"), "a load with the wrong schema was routed"
            return states(m, dataset="bad")[bad]

        await eventually(failed_never_routed, until=lambda state: state == "FAILED", timeout=30, what="bad FAILED")
        await all_ready(m, dataset="good", timeout=20)
        await all_ready(m, dataset="blank", timeout=20)
    # every plan carried the dataset's schema
    assert {a.load_plan.arrow_schema for a in raw.plans} == {table.ipc}
    assert [a.dataset_id for a in raw.plans].count("bad") == FAST_RETRY.max_attempts
    e = m.parts.admission.state.epochs[("acme", "bad", bad)]
    assert e.attempts == FAST_RETRY.max_attempts and e.replicas == ()
    problem = (f"validation failed: loaded schema {other.fingerprint} ({other.text}) differs from the plan's "
               f"{table.fingerprint} ({table.text})")
    assert [t.reason for t in e.history if t.to_state.name in ("PENDING", "FAILED")] == [
        f"{problem}; attempt 1, retrying", f"{problem}; gave up after 2 attempts"]


@pytest.mark.parametrize("held", ["planned", "other"])
async def test_a_reconnecting_workers_inventory_is_schema_checked_like_a_load(etcd_server: Any, nursery: trio.Nursery,
                                                                             held: str) -> None:
    """A worker that loaded while disconnected reports the table in its registration inventory: the master
    validates that entry (schema fingerprint included) exactly as it validates a COMPLETED report."""
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    short_retries(m)
    other = _schema.synthetic("ts", ["country"])
    silent = RawWorker("raw1", lambda a: None)
    async with connected(m, silent):
        await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
        await rpc(m, "admit_dataset", admission(regions=("eu",)))
        await eventually(lambda: len(silent.plans) == 1, what="the assignment")
    (eid,) = states(m)
    assert states(m)[eid] == "LOADING"
    plan = silent.plans[0].load_plan
    fingerprint = {"planned": planned(silent.plans[0]),
                   "other": other.fingerprint}[held]
    entry = pb.InventoryEntry(dataset_id="orders", epoch_id=eid, plan_id=plan.plan_id, tenant_id="acme",
                              rows=plan.expected_rows, bytes=plan.expected_bytes // 2,
                              schema_fingerprint=fingerprint)
    async with connected(m, RawWorker("raw1", lambda a: None, inventory=[entry])):
        if held == "planned":
            await eventually(lambda: states(m), until=lambda s: s[eid] == "READY", what="READY from the inventory")
            assert routed(m) == {eid}
        else:
            await eventually(lambda: m.parts.admission.state.epochs[("acme", "orders", eid)].attempts == 1,
                             what="the inventory entry failing validation")
            e = m.parts.admission.state.epochs[("acme", "orders", eid)]
            assert e.state.name != "READY" and routed(m) == set()
            assert any(t.reason.startswith(f"validation failed: loaded schema {other.fingerprint}")
                       for t in e.history), e.history
