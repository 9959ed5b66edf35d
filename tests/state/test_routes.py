"""Routes: only READY epochs with LOADED replicas, refresh hiding, watch streams (leibrix.state._routes)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
import trio

from leibrix.state import _model as _state
from leibrix.domain._errors import InvalidArgument, NotFound
from leibrix.domain._lifecycle import State
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.state._routes import RouteTable
from leibrix.state._model import ASSIGNED, LOADED, ClusterState, Epoch, Replica

H = 3_600_000


def dataset(cs: ClusterState, tenant="acme", name="orders") -> None:
    req = cp.AdmitDatasetRequest(
        tenant_id=tenant, dataset_id=name,
        source=cp.DataSource(table="t", partition=cp.Partition(
            time_partition=cp.TimePartition(column=cp.PartitionColumn(name="ts")),
            dimension_partitions=[cp.DimensionPartition(column=cp.PartitionColumn(name="region"),
                                                        values=cp.PartitionValues(values=["eu", "us"]))])),
        epoch_granularity=cp.EpochGranularity(value=1, unit=cp.EpochGranularityTimeUnit.HOUR),
    )
    cs.put_dataset(_state.decode_dataset(_state.encode_dataset(bytes(req), 1, 1, 0, "")))


def epoch(eid, state, replicas, start=0, region="eu", tenant="acme", replaces="") -> Epoch:
    return Epoch(tenant, "orders", eid, start, start + H, (("region", region),), state, (),
                 tuple(Replica(w, s, "p") for w, s in replicas), 10, 0.1, 1.0, 0, "", replaces=replaces, plan_id="p")


def ids(resp: cp.ResolveRouteResponse) -> list[str]:
    return [r.epoch.epoch_id for r in resp.routes]


def req(**kw) -> cp.ResolveRouteRequest:
    return cp.ResolveRouteRequest(tenant_id="acme", dataset_id="orders", **kw)


def test_only_ready_epochs_with_loaded_replicas_are_routed():
    cs = ClusterState()
    dataset(cs)
    table = RouteTable(cs, addr=lambda w: f"{w}:1")
    for i, st in enumerate([State.PENDING, State.LOADING, State.VALIDATING, State.RETIRING, State.RETIRED,
                            State.FAILED]):
        cs.put_epoch(epoch(f"{i}_x", st, [("w1", LOADED)]))
    cs.put_epoch(epoch("9_assigned", State.READY, [("w1", ASSIGNED)]))
    assert ids(table.resolve(req())) == []
    cs.put_epoch(epoch("8_ok", State.READY, [("w2", LOADED), ("w1", LOADED), ("w3", ASSIGNED)]))
    (r,) = table.resolve(req()).routes
    assert r.worker_ids == ["w1", "w2"] and r.worker_addrs == ["w1:1", "w2:1"] and r.table_name == "orders__8_ok"
    token = r.token
    cs.put_epoch(epoch("8_ok", State.READY, [("w2", LOADED)]))
    assert table.resolve(req()).routes[0].token != token
    cs.put_epoch(epoch("8_ok", State.RETIRING, [("w2", LOADED)]))
    assert ids(table.resolve(req())) == []


def test_time_range_and_dimension_filter():
    cs = ClusterState()
    dataset(cs)
    table = RouteTable(cs)
    cs.put_epoch(epoch("0_eu", State.READY, [("w1", LOADED)], start=0))
    cs.put_epoch(epoch("1_eu", State.READY, [("w1", LOADED)], start=H))
    cs.put_epoch(epoch("1_us", State.READY, [("w1", LOADED)], start=H, region="us"))
    at = lambda ms: datetime.fromtimestamp(ms / 1000, tz=timezone.utc)  # noqa: E731
    assert ids(table.resolve(req())) == ["0_eu", "1_eu", "1_us"]
    assert ids(table.resolve(req(time_range=cp.TimeRange(start_inclusive=at(H), end_exclusive=at(2 * H))))) == [
        "1_eu", "1_us"]
    assert ids(table.resolve(req(dimension_filter={"region": "us"}))) == ["1_us"]
    with pytest.raises(InvalidArgument) as info:
        table.resolve(req(dimension_filter={"country": "fr"}))
    assert info.value.field == "dimension_filter.country"
    with pytest.raises(InvalidArgument) as info:
        table.resolve(req(time_range=cp.TimeRange(start_inclusive=at(2 * H), end_exclusive=at(H))))
    assert info.value.field == "time_range.end_exclusive"
    with pytest.raises(NotFound):
        table.resolve(cp.ResolveRouteRequest(tenant_id="acme", dataset_id="nope"))


def test_refresh_hides_the_replaced_epoch_once_the_new_one_is_ready():
    cs = ClusterState()
    dataset(cs)
    table = RouteTable(cs)
    cs.put_epoch(epoch("0_old", State.READY, [("w1", LOADED)]))
    cs.put_epoch(epoch("0_new", State.LOADING, [("w2", ASSIGNED)], replaces="0_old"))
    assert ids(table.resolve(req())) == ["0_old"]
    cs.put_epoch(epoch("0_new", State.READY, [("w2", LOADED)], replaces="0_old"))
    assert ids(table.resolve(req())) == ["0_new"]


async def test_watch_gets_snapshot_then_changes_only_for_its_tenant():
    cs = ClusterState()
    dataset(cs)
    dataset(cs, tenant="other")
    table = RouteTable(cs)
    cs.put_epoch(epoch("0_a", State.READY, [("w1", LOADED)]))
    rx = table.subscribe("acme")
    first = rx.receive_nowait()
    assert first.kind == cp.RouteUpdateKind.UPSERT and first.route.epoch.epoch_id == "0_a"
    assert rx.receive_nowait().kind == cp.RouteUpdateKind.SNAPSHOT_DONE
    cs.put_epoch(epoch("0_b", State.READY, [("w1", LOADED)], tenant="other"))
    cs.put_epoch(epoch("0_new", State.READY, [("w1", LOADED)], replaces="0_a"))
    cs.put_epoch(epoch("0_a", State.RETIRING, [("w1", LOADED)]))
    got = [rx.receive_nowait() for _ in range(2)]
    assert [(u.kind, u.route.epoch.epoch_id) for u in got] == [
        (cp.RouteUpdateKind.UPSERT, "0_new"), (cp.RouteUpdateKind.REMOVE, "0_a")]
    assert got[0].revision < got[1].revision
    with pytest.raises(trio.WouldBlock):
        rx.receive_nowait()
    rx.close()  # the subscriber leaves: the table forgets it on its next update for the tenant
    cs.put_epoch(epoch("0_c", State.READY, [("w1", LOADED)]))
    assert not table._subscribers.get("acme")
