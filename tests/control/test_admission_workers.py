"""Admission end to end with real reference workers: loads, READY only after validation, routes,
quota boundaries, every policy, benefit residency with hysteresis, refresh make-before-break,
retention, retire/drop, tenant isolation."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import MiB, admission, all_ready, quota, routed, rpc, states, watch_routes
from tests.support.cluster import leading, master_with_workers, scheduling_pass, start_master, workers
from tests.support.poll import eventually
from tests.support.sample_source import SECOND_APPEND, sample_source

QUEUE, REJECT, EVICT = cp.AdmissionPolicy.QUEUE, cp.AdmissionPolicy.REJECT, cp.AdmissionPolicy.EVICT_LOWER_BENEFIT


async def test_epochs_load_on_replicas_validate_and_route(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1", "w2")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=2, regions=("eu", "us"), replication_factor=2))
    assert len(resp.epochs.epochs) == 4
    await all_ready(m, n=4)
    listed = await rpc(m, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
    for ep in listed.epochs:
        assert [(t.from_state.name, t.to_state.name) for t in ep.history] == [
            ("PENDING", "LOADING"), ("LOADING", "VALIDATING"), ("VALIDATING", "READY")]
        assert sorted(r.worker_id for r in ep.replicas) == ["w1", "w2"]
        assert {r.state for r in ep.replicas} == {cp.ReplicaInfoState.LOADED}
        # the worker's measured bytes replaced the hinted 16 MiB estimate
        assert 0 < ep.estimate.memory_bytes < 16 * MiB and ep.benefit > 0
    routes = await rpc(m, "resolve_route", cp.ResolveRouteRequest(tenant_id="acme", dataset_id="orders",
                                                                     dimension_filter={"region": "us"}))
    assert len(routes.routes) == 2
    for r in routes.routes:
        assert r.worker_ids == ["w1", "w2"] and all(a for a in r.worker_addrs) and r.token
        assert r.table_name == f"orders__{r.epoch.epoch_id}" and r.epoch.dimension_values == {"region": "us"}
    info = await rpc(m, "get_dataset", cp.GetDatasetRequest(tenant_id="acme", dataset_id="orders"))
    assert info.epochs_by_state == {"READY": 4} and info.replication_factor == 2
    tenant = await rpc(m, "get_tenant", cp.GetTenantRequest(tenant_id="acme"))
    assert tenant.usage.epochs == 4
    assert tenant.usage.memory_bytes == sum(2 * ep.estimate.memory_bytes for ep in listed.epochs)


async def test_memory_quota_is_enforced_at_the_exact_boundary(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=REJECT, max_memory_bytes=3 * 16 * MiB))
    await rpc(m, "admit_dataset", admission(days=2))  # 2 epochs: 32 MiB of 48
    await rpc(m, "admit_dataset", admission(dataset="more", days=1))  # exactly 48 of 48: fits
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", admission(dataset="over", days=1))
    assert info.value.status == Status.RESOURCE_EXHAUSTED
    assert info.value.message == (f"tenant 'acme' memory budget: {48 * MiB} bytes, {48 * MiB} charged + "
                                  f"{16 * MiB} requested = {64 * MiB}")
    await all_ready(m, n=2)
    await all_ready(m, dataset="more", n=1)
    # Loaded, the epochs are charged what the worker measured: the budget has room again.
    state = m.parts.admission.state
    measured = sum(e.memory_bytes for d in ("orders", "more") for e in state.dataset_epochs("acme", d))
    assert state.usage("acme").memory_bytes == measured < 48 * MiB
    await rpc(m, "admit_dataset", admission(dataset="over", days=1))


async def test_epoch_and_dataset_budgets(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=REJECT, max_epochs=2, max_datasets=2))
    await rpc(m, "admit_dataset", admission(days=2))
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", admission(dataset="b"))
    assert info.value.status == Status.RESOURCE_EXHAUSTED and "epoch budget: 2 epochs, 2 charged + 1" in info.value.message
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=REJECT, max_epochs=10, max_datasets=2))
    await rpc(m, "admit_dataset", admission(dataset="b"))
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", admission(dataset="c"))
    assert info.value.status == Status.RESOURCE_EXHAUSTED and "dataset budget: 2 datasets, 2 admitted" in info.value.message


async def test_queue_policy_waits_as_pending_and_loads_when_room_appears(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE, max_epochs=1))
    resp = await rpc(m, "admit_dataset", admission(days=3))
    assert resp.pending_epochs == 3
    await eventually(lambda: sorted(states(m).values()), until=lambda s: s == ["PENDING", "PENDING", "READY"],
                     what="one loaded")
    await scheduling_pass(m)  # a pass after the load: it places nothing more
    assert sorted(states(m).values()) == ["PENDING", "PENDING", "READY"]  # the budget holds
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE, max_epochs=3))
    await all_ready(m, n=3)


async def test_evict_lower_benefit_policy_with_hysteresis(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=EVICT))
    await rpc(m, "admit_dataset", admission(dataset="cold", days=2, hints=cp.EstimateHints(scan_cost=100.0)))
    await all_ready(m, dataset="cold", n=2)
    # Loaded, the cold epochs are charged their measured bytes; the new ones are hinted the same size, and the
    # budget leaves room for one more only after an eviction.
    state = m.parts.admission.state
    size = max(e.memory_bytes for e in state.dataset_epochs("acme", "cold"))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=EVICT,
                                              max_memory_bytes=state.usage("acme").memory_bytes + size - 1))
    # 1.2x the benefit does not beat the 1.5x hysteresis: nothing is evicted, the admission is rejected.
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", admission(dataset="warm", hints=cp.EstimateHints(
            bytes_per_epoch=size, scan_cost=120.0)))
    assert info.value.status == Status.RESOURCE_EXHAUSTED and "evicting 0 lower-benefit" in info.value.message
    assert set(states(m, dataset="cold").values()) == {"READY"}
    # 10x the benefit evicts the tenant's lowest-benefit resident (heat breaks the tie: the other is hot).
    hot = sorted(states(m, dataset="cold"))[1]
    await rpc(m, "report_access", cp.ReportAccessRequest(tenant_id="acme", dataset_id="cold", epoch_id=hot, count=50))
    resp = await rpc(m, "admit_dataset", admission(dataset="hot", hints=cp.EstimateHints(
        bytes_per_epoch=size, scan_cost=1000.0)))
    assert resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED
    await all_ready(m, dataset="hot", n=1)
    cold = states(m, dataset="cold")
    assert cold[hot] == "READY" and sorted(cold.values()) == ["READY", "RETIRED"]


async def test_measured_bytes_replace_the_estimates_in_placement(etcd_server: Any, nursery: trio.Nursery) -> None:
    # One worker fits four 64 MiB estimates; loaded, epochs are charged what they measure (far less), which
    # makes room for a fifth. (Sharing a full pool by benefit: tests/control/test_coordinator_unit.py.)
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1", memory="256MiB")
    await rpc(m, "upsert_tenant_quota", quota("a", admission_policy=QUEUE))
    big = cp.EstimateHints(bytes_per_epoch=64 * MiB, scan_cost=100.0)
    await rpc(m, "admit_dataset", admission("a", "base", days=4, hints=big))
    await rpc(m, "admit_dataset", admission("a", "more", hints=big))
    await all_ready(m, "a", "base", n=4)
    await all_ready(m, "a", "more", n=1)
    state = m.parts.admission.state
    measured = sum(e.memory_bytes for d in ("base", "more") for e in state.dataset_epochs("a", d))
    assert measured < 64 * MiB and state.reserved["w1"][0] == measured == state.usage("a").memory_bytes


async def test_refresh_is_make_before_break_and_routes_never_empty(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1", "w2")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    # the second snapshot adds the files from 2028 on: every epoch of these windows changes
    first, second = (str(v) for v in sample_source().versions[:2])
    v1 = await rpc(m, "admit_dataset", admission(version=first, days=2, start=SECOND_APPEND))
    await all_ready(m, n=2)
    old = {e.epoch_id for e in v1.epochs.epochs}
    seen: dict[str, Any] = {}

    def swapped(updates: list[cp.RouteUpdate]) -> bool:
        removed = {u.route.epoch.epoch_id for u in updates if u.kind == cp.RouteUpdateKind.REMOVE}
        return old <= removed

    async def watch() -> None:
        seen["updates"] = await watch_routes(m, "acme", swapped)

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        await eventually(lambda: m.parts.admission.routes._subscribers.get("acme"), what="subscribed")
        v2 = await rpc(m, "admit_dataset", admission(version=second, days=2, start=SECOND_APPEND))
        assert v2.refresh and {e.epoch_id for e in v2.epochs.epochs}.isdisjoint(old)
    updates = seen["updates"]
    snapshot = [u for u in updates[: updates.index(next(u for u in updates if u.kind == cp.RouteUpdateKind.SNAPSHOT_DONE))]]
    live = {u.route.epoch.epoch_id for u in snapshot}
    assert live == old
    # Replay the stream: at every point each time window has at least one routed epoch.
    windows = {e.epoch_id: e.time_range.start_inclusive for e in [*v1.epochs.epochs, *v2.epochs.epochs]}
    for u in updates[len(snapshot) + 1:]:
        (live.add if u.kind == cp.RouteUpdateKind.UPSERT else live.discard)(u.route.epoch.epoch_id)
        assert {windows[e] for e in live} == set(windows[e] for e in old), "a window lost its route"
    await eventually(lambda: states(m), until=lambda s: all(s[e] == "RETIRED" for e in old), what="old retired")
    assert routed(m) == {e.epoch_id for e in v2.epochs.epochs}
    resolved = await rpc(m, "resolve_route", cp.ResolveRouteRequest(tenant_id="acme", dataset_id="orders"))
    assert {r.epoch.epoch_id for r in resolved.routes} == {e.epoch_id for e in v2.epochs.epochs}


async def test_retention_keeps_the_newest_epochs(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    first = await rpc(m, "admit_dataset", admission(days=3, retention_epochs=2))
    assert len(first.epochs.epochs) == 2  # the oldest of 3 windows is never created
    await all_ready(m, n=2)
    later = admission(days=1, retention_epochs=2, start=first.epochs.epochs[-1].time_range.end_exclusive)
    resp = await rpc(m, "admit_dataset", later)
    (new,) = resp.epochs.epochs
    oldest = first.epochs.epochs[0].epoch_id
    await eventually(lambda: states(m), until=lambda s: s.get(oldest) == "RETIRED" and s.get(new.epoch_id) == "READY",
                     what="the oldest epoch RETIRED and the new one READY")
    assert routed(m) == {first.epochs.epochs[1].epoch_id, new.epoch_id}


async def test_retire_and_drop_withdraw_routes_then_evict(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    await rpc(m, "admit_dataset", admission(days=2))
    await all_ready(m, n=2)
    a, b = sorted(states(m))
    await rpc(m, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="orders", epoch_id=a))
    assert routed(m) == {b}
    ep = m.parts.admission.state.epochs[("acme", "orders", a)]
    assert ep.state.name == "RETIRED" and ep.replicas == ()
    assert [t.to_state.name for t in ep.history][-2:] == ["RETIRING", "RETIRED"]
    await rpc(m, "drop_dataset", cp.DropDatasetRequest(tenant_id="acme", dataset_id="orders"))
    assert routed(m) == set() and states(m) == {}
    with pytest.raises(GRPCError) as info:
        await rpc(m, "get_dataset", cp.GetDatasetRequest(tenant_id="acme", dataset_id="orders"))
    assert info.value.status == Status.NOT_FOUND
    await eventually(lambda: m.parts.admission.state.reserved.get("w1", [0])[0] == 0, what="w1's memory released")


async def test_two_tenants_cannot_touch_each_others_budgets(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota("a", admission_policy=REJECT, max_memory_bytes=16 * MiB))
    await rpc(m, "upsert_tenant_quota", quota("b", admission_policy=REJECT, max_memory_bytes=64 * MiB))
    await rpc(m, "admit_dataset", admission("b", days=4))  # b fills its own budget
    await rpc(m, "admit_dataset", admission("a"))  # a's budget is untouched by b
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", admission("a", "second"))
    assert "tenant 'a' memory budget" in info.value.message
    with pytest.raises(GRPCError) as info:
        await rpc(m, "admit_dataset", admission("b", "second"))
    assert "tenant 'b' memory budget" in info.value.message
    await all_ready(m, "a", n=1)
    await all_ready(m, "b", n=4)
    state = m.parts.admission.state
    for t, n in (("a", 1), ("b", 4)):  # each charged its own epochs' measured bytes
        measured = sum(e.memory_bytes for e in state.dataset_epochs(t, "orders"))
        assert state.usage(t).memory_bytes == measured < n * 16 * MiB


async def test_invalid_loads_retry_with_backoff_then_fail_and_never_route(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    # The plan allows 2 x 1,000 bytes; DuckDB holds any table in far more: every load fails validation.
    await rpc(m, "admit_dataset", admission(bytes_per_epoch=1000))
    (eid,) = states(m)

    def failed_never_routed() -> str:
        assert routed(m) == set(), "a load that failed validation was routed"
        return states(m)[eid]

    await eventually(failed_never_routed, until=lambda state: state == "FAILED", timeout=30, what="FAILED")
    e = m.parts.admission.state.epochs[("acme", "orders", eid)]
    assert e.attempts == 3 and e.replicas == ()
    assert "validation failed: loaded" in e.history[-1].reason and "gave up after 3 attempts" in e.history[-1].reason
    retries = [t.at_ms for t in e.history if t.to_state.name == "LOADING"]
    assert len(retries) == 3 and retries[2] - retries[1] >= 1500  # backoff 1 s, then 2 s
    assert m.parts.admission.state.usage("acme").epochs == 0  # a FAILED epoch charges nothing


async def test_pools_isolate_tenants(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await master_with_workers(etcd_server.endpoint, nursery, "shared1")
    await rpc(m, "upsert_tenant_quota", quota("acme", admission_policy=QUEUE, worker_pool="gold"))
    await rpc(m, "upsert_tenant_quota", quota("free", admission_policy=QUEUE))
    await workers(nursery, m, "gold1", "gold2", pool="gold")
    await rpc(m, "admit_dataset", admission("acme", days=3, replication_factor=2))
    await rpc(m, "admit_dataset", admission("free", days=2))
    await all_ready(m, "acme", n=3)
    await all_ready(m, "free", n=2)
    state = m.parts.admission.state
    assert {w for e in state.dataset_epochs("acme", "orders") for w in e.worker_ids()} == {"gold1", "gold2"}
    assert {w for e in state.dataset_epochs("free", "orders") for w in e.worker_ids()} == {"shared1"}


@pytest.mark.parametrize("policy", [REJECT, EVICT])
async def test_admitted_before_any_worker_joins_loads_once_capacity_joins(
        etcd_server: Any, nursery: trio.Nursery, policy: cp.AdmissionPolicy) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=policy, max_memory_bytes=2 * 16 * MiB))
    resp = await rpc(m, "admit_dataset", admission(days=2))
    assert resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED and resp.pending_epochs == 2
    assert set(states(m).values()) == {"PENDING"}
    await workers(nursery, m, "w1")
    await all_ready(m, n=2)
