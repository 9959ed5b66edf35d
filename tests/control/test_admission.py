"""Admission through a real master over gRPC (real etcd), without workers: tenants, validation,
the response rule, idempotency, and every policy when no capacity has joined (accepted, PENDING)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.store._etcd import EtcdClient
from leibrix.store._store import Keys
from leibrix.wire._grpc import LEADER_METADATA
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from tests.support.admission import MiB, admission, quota, rpc, states
from tests.support.cluster import leading, start_master
from tests.support.poll import eventually
from tests.support.raw_grpc import raw_unary


async def error_of(master: Any, name: str, request: Any) -> GRPCError:
    with pytest.raises(GRPCError) as info:
        await rpc(master, name, request)
    return info.value


async def test_tenant_crud_and_unknown_tenant(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    r = await rpc(m, "upsert_tenant_quota", quota(max_epochs=5, admission_policy=cp.AdmissionPolicy.QUEUE,
                                                  worker_pool="gold", max_cpu_cores=2.5))
    assert r.status == cp.ResponseStatus.SUCCESS and "created" in r.message
    r = await rpc(m, "upsert_tenant_quota", quota(max_epochs=6, admission_policy=cp.AdmissionPolicy.QUEUE))
    assert "updated" in r.message
    info = await rpc(m, "get_tenant", cp.GetTenantRequest(tenant_id="acme"))
    assert info.quota.max_epochs == 6 and info.quota.admission_policy == cp.AdmissionPolicy.QUEUE
    listed = await rpc(m, "list_tenants", cp.ListTenantsRequest())
    assert [t.quota.tenant_id for t in listed.tenants] == ["acme"]
    err = await error_of(m, "get_tenant", cp.GetTenantRequest(tenant_id="nope"))
    assert err.status == Status.NOT_FOUND and "nope" in err.message
    err = await error_of(m, "admit_dataset", admission(tenant="ghost"))
    assert err.status == Status.NOT_FOUND and "'ghost'" in err.message
    err = await error_of(m, "upsert_tenant_quota", quota(max_epochs=-1))
    assert err.status == Status.INVALID_ARGUMENT and err.message.startswith("max_epochs:")
    r = await rpc(m, "delete_tenant", cp.DeleteTenantRequest(tenant_id="acme"))
    assert r.status == cp.ResponseStatus.SUCCESS
    assert (await rpc(m, "list_tenants", cp.ListTenantsRequest())).tenants == []


@pytest.mark.parametrize(
    "mutate,field",
    [
        (lambda r: setattr(r, "tenant_id", ""), "tenant_id"),
        (lambda r: setattr(r, "dataset_id", "bad/id"), "dataset_id"),
        (lambda r: setattr(r.source, "catalog", cp.Catalog()), "source.catalog"),
        (lambda r: setattr(r.source.partition.time_partition.filter, "end_exclusive",
                           r.source.partition.time_partition.filter.start_inclusive),
         "source.partition.time_partition.filter.end_exclusive"),
        (lambda r: setattr(r, "epoch_granularity", None), "epoch_granularity"),
        (lambda r: setattr(r.source.partition.time_partition.filter, "end_exclusive",
                           r.source.partition.time_partition.filter.start_inclusive.replace(year=2030)),
         "source.partition"),  # ~1,500 days x 1 region > 10,000? no: 3 regions below make it exceed
    ],
)
async def test_every_validation_error_is_invalid_argument_naming_the_field(
        etcd_server: Any, nursery: trio.Nursery, mutate: Any, field: str) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    req = admission(regions=tuple(f"r{i}" for i in range(8)))
    mutate(req)
    err = await error_of(m, "admit_dataset", req)
    assert err.status == Status.INVALID_ARGUMENT
    assert err.message.startswith(field + ":"), err.message


async def test_unknown_source_type_over_the_wire(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    req = admission()
    # A catalog oneof member this master does not know (field 4): only its bytes reach the server.
    req.source.catalog = cp.Catalog()
    req.source.catalog._unknown_fields = bytes([0x22, 0x02, 0x0A, 0x00])
    err = await error_of(m, "admit_dataset", req)
    assert err.status == Status.INVALID_ARGUMENT and "unknown source type" in err.message


@pytest.mark.parametrize("policy", [cp.AdmissionPolicy.QUEUE, cp.AdmissionPolicy.REJECT,
                                    cp.AdmissionPolicy.EVICT_LOWER_BENEFIT])
async def test_no_capacity_yet_is_not_a_rejection_under_any_policy(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery, policy: cp.AdmissionPolicy) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    await rpc(m, "upsert_tenant_quota", quota("t", admission_policy=policy, max_epochs=6))
    resp = await rpc(m, "admit_dataset", admission("t", days=2, regions=("eu", "us")))
    assert resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED
    assert len(resp.epochs.epochs) == 4 and resp.pending_epochs == 4
    assert set(states(m, "t").values()) == {"PENDING"}
    # The acknowledged admission is in etcd, not only in memory.
    kvs, _ = await etcd.get_prefix(Keys("adm").epochs_of("t", "orders"))
    assert sorted(state_pb2.EpochRecord.FromString(kv.value).info.epoch_id for kv in kvs) == sorted(
        e.epoch_id for e in resp.epochs.epochs)
    # The tenant's own budget still binds: 4 queued + 4 more > 6 epochs.
    if policy == cp.AdmissionPolicy.QUEUE:
        more = await rpc(m, "admit_dataset", admission("t", "more", days=2, regions=("eu", "us")))
        assert more.pending_epochs == 4 and "PENDING" in more.message
    else:
        err = await error_of(m, "admit_dataset", admission("t", "more", days=2, regions=("eu", "us")))
        assert err.status == Status.RESOURCE_EXHAUSTED
        assert err.message.startswith("tenant 't' epoch budget: 6 epochs, 4 charged + 4 requested = 8")
        assert states(m, "t", "more") == {}


async def test_idempotent_retries_and_no_op_readmission(etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    first = await rpc(m, "admit_dataset", admission(request_id="req-1", days=3))
    kvs, rev = await etcd.get_prefix(Keys("adm").root)
    again = await rpc(m, "admit_dataset", admission(request_id="req-1", days=3))
    assert again == first and again.request_id == "req-1"
    _, rev2 = await etcd.get_prefix(Keys("adm").root)
    assert rev2 == rev  # a retry writes nothing
    err = await error_of(m, "admit_dataset", admission(request_id="req-1", days=4))
    assert err.status == Status.INVALID_ARGUMENT and err.message.startswith("request_id:")
    same = await rpc(m, "admit_dataset", admission(days=3))
    assert same.message == "already admitted: no change"
    assert [e.epoch_id for e in same.epochs.epochs] == [e.epoch_id for e in first.epochs.epochs]
    wider = await rpc(m, "admit_dataset", admission(days=4))
    assert "admitted 1 new epoch(s) of 4" in wider.message
    assert len(states(m)) == 4


async def test_concurrent_admissions_are_batched_and_all_acknowledged(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    got: dict[str, cp.AdmitDatasetResponse] = {}

    async def one(i: int) -> None:
        got[f"d{i}"] = await rpc(m, "admit_dataset", admission(dataset=f"d{i}", request_id=f"r{i}"))

    async with trio.open_nursery() as n:
        for i in range(40):
            n.start_soon(one, i)
    assert all(r.status == cp.AdmitDatasetResponseStatus.ACCEPTED for r in got.values())
    kvs, _ = await etcd.get_prefix(Keys("adm").root + "datasets/acme/")
    assert len(kvs) == 40
    assert len(m.parts.admission.state.epochs) == 40


async def test_follower_refuses_writes_but_answers_reads(etcd_server: Any, nursery: trio.Nursery) -> None:
    a = await leading(await start_master(nursery, etcd_server.endpoint, "m1"))
    b = await start_master(nursery, etcd_server.endpoint, "m2")
    await rpc(a, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc(a, "admit_dataset", admission())
    await eventually(lambda: "acme" in b.parts.admission.state.tenants and states(b), timeout=10,
                     what="the follower's mirror holding the tenant and its epochs")
    info = await rpc(b.config.grpc_listen, "get_tenant", cp.GetTenantRequest(tenant_id="acme"))
    assert info.usage.pending_epochs == 1
    # A write sent to the follower is redirected (leibrix-leader) and lands on the leader.
    resp = await rpc(b.config.grpc_listen, "admit_dataset", admission(dataset="other"))
    assert resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED
    assert ("acme", "other") in a.parts.admission.state.datasets


@pytest.mark.parametrize(("path", "request_", "reply"), [
    ("DropDataset", cp.DropDatasetRequest(tenant_id="acme", dataset_id="unseen"), cp.CommonResponse),
    ("RetireEpoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="unseen", epoch_id="e1"), cp.CommonResponse),
    ("ReportAccess", cp.ReportAccessRequest(tenant_id="acme", dataset_id="unseen", count=1), cp.CommonResponse),
    ("DeleteTenant", cp.DeleteTenantRequest(tenant_id="unseen"), cp.CommonResponse),
])
async def test_a_follower_sends_writes_to_the_leader_before_looking_anything_up(
        etcd_server: Any, nursery: trio.Nursery, path: str, request_: Any, reply: type) -> None:
    """A follower's state may lag the leader's (a dataset admitted a moment ago): a write about something it
    does not know is redirected, never answered NOT_FOUND from the follower's own state."""
    a = await leading(await start_master(nursery, etcd_server.endpoint, "m1"))
    b = await start_master(nursery, etcd_server.endpoint, "m2")
    await eventually(lambda: b.leader is not None and b.leader.id == "m1", timeout=10, what="m2 following m1")
    _, error, trailers = await raw_unary(b.config.grpc_listen, f"/leibrix_cp.ManagementService/{path}", request_, reply)
    assert error is not None and error.status == Status.UNAVAILABLE, error
    assert trailers.get(LEADER_METADATA) == a.config.grpc_listen
    # The leader itself does look it up.
    _, error, trailers = await raw_unary(a.config.grpc_listen, f"/leibrix_cp.ManagementService/{path}", request_, reply)
    assert error is not None and error.status == Status.NOT_FOUND, error


async def test_delete_tenant_is_refused_while_it_has_datasets_unless_forced(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc(m, "admit_dataset", admission(days=2))
    err = await error_of(m, "delete_tenant", cp.DeleteTenantRequest(tenant_id="acme"))
    assert err.status == Status.FAILED_PRECONDITION and "1 dataset(s) with 2 live epoch(s)" in err.message
    r = await rpc(m, "delete_tenant", cp.DeleteTenantRequest(tenant_id="acme", force=True))
    assert "1 dataset(s) dropped" in r.message
    kvs, _ = await etcd.get_prefix(Keys("adm").root)
    assert [kv.key for kv in kvs if "/acme" in kv.key] == []
    err = await error_of(m, "delete_tenant", cp.DeleteTenantRequest(tenant_id="acme"))
    assert err.status == Status.NOT_FOUND


async def test_report_access_feeds_heat_and_checks_its_arguments(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=2))
    hot = resp.epochs.epochs[0].epoch_id
    await rpc(m, "report_access", cp.ReportAccessRequest(tenant_id="acme", dataset_id="orders", epoch_id=hot,
                                                         count=9, scanned_bytes=9 * 32 * MiB))
    listed = await rpc(m, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
    by_id = {e.info.epoch_id: e for e in listed.epochs}
    assert by_id[hot].heat == pytest.approx(10.0, rel=0.01)  # prior 1 + 9 accesses, barely decayed
    cold = next(e for e in by_id if e != hot)
    # benefit = scan cost x heat / memory: the observed 28.8 MiB per access x 10 / 16 MiB (the hinted memory), vs
    # the source's planned scan cost x 1 / 16 MiB.
    assert by_id[hot].benefit == pytest.approx(9 * 32 / 10 * 10 / 16, rel=0.01)
    assert 0 < by_id[cold].scan_cost < 16 * MiB
    assert by_id[cold].benefit == pytest.approx(by_id[cold].scan_cost / (16 * MiB), rel=0.01)
    for field, req in [("count", cp.ReportAccessRequest(tenant_id="acme", dataset_id="orders", count=-1)),
                       ("scanned_bytes", cp.ReportAccessRequest(tenant_id="acme", dataset_id="orders",
                                                                scanned_bytes=-5))]:
        err = await error_of(m, "report_access", req)
        assert err.status == Status.INVALID_ARGUMENT and err.message.startswith(field + ":")
    err = await error_of(m, "report_access", cp.ReportAccessRequest(tenant_id="acme", dataset_id="orders",
                                                                    epoch_id="1_ffffff"))
    assert err.status == Status.NOT_FOUND
