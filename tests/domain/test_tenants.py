"""Quotas, usage accounting and the in-memory state model (leibrix.domain._tenants, leibrix.state._model)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from leibrix.state import _model as _state
from leibrix.domain._lifecycle import State, Transition
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.state._model import ClusterState, Epoch, Replica
from leibrix.store._store import Keys, Mirror
from leibrix.domain._tenants import Policy, Quota, Usage, budget_shortfall, dataset_shortfall


def epoch(tenant="acme", dataset="orders", eid="1_abcdef", state=State.READY, mem=100, cpu=0.5,
          replicas=(("w1", _state.LOADED),)) -> Epoch:
    return Epoch(tenant, dataset, eid, 0, 3_600_000, (("region", "eu"),), state,
                 (Transition(State.PENDING, State.LOADING, 5, "placed"),),
                 tuple(Replica(w, s, "p1") for w, s in replicas), mem, cpu, 42.0, 7, "v1", attempts=1,
                 replaces="0_000000", plan_id="p1")


def dataset_record(tenant="acme", dataset="orders", rf=1) -> bytes:
    req = cp.AdmitDatasetRequest(
        tenant_id=tenant, dataset_id=dataset,
        source=cp.DataSource(table="t", partition=cp.Partition(time_partition=cp.TimePartition(
            column=cp.PartitionColumn(name="ts")))),
        epoch_granularity=cp.EpochGranularity(value=2, unit=cp.EpochGranularityTimeUnit.DAY),
    )
    return _state.encode_dataset(bytes(req), rf, 1, 1000, "v1")


def test_budget_boundary_is_inclusive():
    q = Quota("acme", max_epochs=3, max_memory_bytes=300, max_cpu_cores=1.5)
    u = Usage()
    u.charge(200, 1.0, 2)
    assert budget_shortfall(q, u, memory_bytes=100, cpu_cores=0.5, epochs=1) is None  # exactly at every budget
    msg = budget_shortfall(q, u, memory_bytes=101, cpu_cores=0.5, epochs=1)
    assert msg == "tenant 'acme' memory budget: 300 bytes, 200 charged + 101 requested = 301"
    assert "epoch budget: 3 epochs, 2 charged + 2 requested = 4" in budget_shortfall(
        q, u, memory_bytes=0, cpu_cores=0, epochs=2)
    assert "CPU budget: 1.5 cores" in budget_shortfall(q, u, memory_bytes=0, cpu_cores=0.6, epochs=1)


def test_zero_means_unlimited_and_datasets_are_counted():
    q = Quota("acme")
    u = Usage()
    u.charge(10**15, 10**6, 10**6)
    assert budget_shortfall(q, u, memory_bytes=10**15, cpu_cores=10**6, epochs=10**6) is None
    q = Quota("acme", max_datasets=1)
    assert dataset_shortfall(q, 0) is None
    assert dataset_shortfall(q, 1) == "tenant 'acme' dataset budget: 1 datasets, 1 admitted"


def test_quota_from_wire_storage_mb_and_default_policy():
    q = Quota.from_wire(cp.TenantQuota(tenant_id="a", max_storage_mb=1, max_memory_bytes=10 << 20))
    assert q.max_memory_bytes == 1 << 20 and q.policy is Policy.REJECT
    q = Quota.from_wire(cp.TenantQuota(tenant_id="a", max_memory_bytes=5, admission_policy=cp.AdmissionPolicy.QUEUE,
                                       worker_pool="gold"))
    assert (q.max_memory_bytes, q.policy, q.pool) == (5, Policy.QUEUE, "gold")
    assert Quota.from_wire(q.to_wire()) == q


def test_epoch_codec_round_trip_keeps_everything():
    e = epoch(replicas=(("w1", _state.LOADED), ("w2", _state.ASSIGNED)))
    d = _state.decode_epoch(_state.encode_epoch(e))
    for name in ("tenant_id", "dataset_id", "epoch_id", "start_ms", "end_ms", "dims", "state", "history",
                 "replicas", "memory_bytes", "cpu_cores", "scan_cost", "rows", "version", "attempts", "replaces",
                 "plan_id"):
        assert getattr(d, name) == getattr(e, name), name
    assert _state.encode_epoch(d) == _state.encode_epoch(e)


def test_dataset_and_tenant_codecs():
    d = _state.decode_dataset(dataset_record(rf=3))
    assert (d.tenant_id, d.dataset_id, d.replication_factor, d.version, d.time_column) == ("acme", "orders", 3, "v1", "ts")
    assert str(d.granularity) == "2 days"
    t = _state.decode_tenant(_state.encode_tenant(cp.TenantQuota(tenant_id="acme", max_epochs=4), 99))
    assert (t.quota.max_epochs, t.updated_ms) == (4, 99)


def test_usage_charges_loading_and_ready_replicas_not_pending():
    cs = ClusterState()
    cs.put_dataset(_state.decode_dataset(dataset_record(rf=2)))
    cs.put_epoch(epoch(eid="1_a", state=State.PENDING))
    u = cs.usage("acme")
    assert (u.epochs, u.memory_bytes, u.pending, u.datasets) == (0, 0, 1, 1)
    cs.put_epoch(epoch(eid="1_a", state=State.LOADING))
    cs.put_epoch(epoch(eid="1_b", state=State.READY))
    assert (u.epochs, u.memory_bytes, u.cpu_cores, u.pending) == (2, 400, 2.0, 0)
    cs.put_epoch(epoch(eid="1_b", state=State.RETIRED, replicas=()))
    assert (u.epochs, u.memory_bytes) == (1, 200)
    cs.delete_epoch(("acme", "orders", "1_a"))
    assert (u.epochs, u.memory_bytes, u.cpu_cores) == (0, 0, pytest.approx(0.0))
    assert cs.usage("other").epochs == 0  # another tenant is never touched


def test_replication_change_recharges_and_indices_follow_replicas():
    cs = ClusterState()
    cs.put_dataset(_state.decode_dataset(dataset_record(rf=1)))
    cs.put_epoch(epoch(replicas=(("w1", _state.LOADED),)))
    assert cs.usage("acme").memory_bytes == 100
    cs.put_dataset(_state.decode_dataset(dataset_record(rf=3)))
    assert cs.usage("acme").memory_bytes == 300 and cs.usage("acme").datasets == 1
    assert cs.by_worker == {"w1": {("acme", "orders", "1_abcdef")}}
    cs.put_epoch(epoch(replicas=(("w2", _state.LOADED),)))
    assert cs.by_worker == {"w2": {("acme", "orders", "1_abcdef")}}


async def test_state_follows_etcd_through_the_mirror(etcd, nursery):
    """``ClusterState.attach``: listed, watched and deleted records reach the model and its listeners."""
    keys = Keys("st")
    cs = ClusterState()
    seen = []
    cs.listeners.append(lambda old, new: seen.append((old and old.state, new and new.state)))
    mirror = Mirror(etcd, keys)
    requests = cs.attach(mirror)
    await etcd.put(keys.tenant("acme"), _state.encode_tenant(cp.TenantQuota(tenant_id="acme", max_epochs=9), 1))
    await nursery.start(mirror.run)  # the listing brings the tenant
    assert cs.tenants["acme"].quota.max_epochs == 9
    await etcd.put(keys.dataset("acme", "orders"), dataset_record())
    await etcd.put(keys.epoch("acme", "orders", "1_abcdef"), _state.encode_epoch(epoch(state=State.LOADING)))
    rev = await etcd.put(keys.epoch("acme", "orders", "1_abcdef"), _state.encode_epoch(epoch(state=State.READY)))
    await etcd.put(keys.request("r1"), b"")
    await mirror.wait_for(rev + 1)
    assert cs.tenants["acme"].usage is cs.usage("acme") and cs.usage("acme").epochs == 1 and "r1" in requests
    await etcd.delete(keys.epoch("acme", "orders", "1_abcdef"))
    await etcd.delete(keys.dataset("acme", "orders"))
    rev = await etcd.put(keys.tenant("other"), _state.encode_tenant(cp.TenantQuota(tenant_id="other"), 1))
    await mirror.wait_for(rev)
    assert seen == [(None, State.LOADING), (State.LOADING, State.READY), (State.READY, None)]
    assert not cs.epochs and not cs.datasets and not cs.by_dataset and set(cs.tenants) == {"acme", "other"}


def test_wire_views():
    st = _state.epoch_to_wire(epoch(), addr=lambda w: "127.0.0.1:9", heat=2.0, benefit=3.0)
    assert st.state == cp.EpochState.READY and st.replicas[0].addr == "127.0.0.1:9"
    assert st.history[0].at == datetime.fromtimestamp(0.005, tz=timezone.utc)
    assert st.info.dimension_values == {"region": "eu"} and st.estimate.memory_bytes == 100


# ---------------------------------------------------------------- guaranteed memory and heat fairness


def test_guaranteed_memory_round_trips_and_is_validated() -> None:
    from leibrix.domain._errors import InvalidArgument
    from leibrix.domain._validation import validate_quota

    q = cp.TenantQuota(tenant_id="acme", max_memory_bytes=100, guaranteed_memory_bytes=60)
    assert Quota.from_wire(validate_quota(q)).guaranteed_memory_bytes == 60
    assert Quota.from_wire(q).to_wire().guaranteed_memory_bytes == 60
    for bad, why in [(cp.TenantQuota(tenant_id="acme", guaranteed_memory_bytes=-1), "must be >= 0"),
                     (cp.TenantQuota(tenant_id="acme", max_memory_bytes=100, guaranteed_memory_bytes=101),
                      "more than the tenant's memory budget of 100 bytes"),
                     (cp.TenantQuota(tenant_id="acme", max_storage_mb=1, guaranteed_memory_bytes=(1 << 20) + 1),
                      f"memory budget of {1 << 20} bytes")]:
        with pytest.raises(InvalidArgument, match="guaranteed_memory_bytes") as info:
            validate_quota(bad)
        assert why in str(info.value)


def test_only_memory_above_the_guarantee_is_displaceable() -> None:
    from leibrix.domain._tenants import below_guarantee, displaceable

    q = Quota("acme", guaranteed_memory_bytes=100)
    assert [displaceable(q, m) for m in (0, 60, 100, 130)] == [0, 0, 0, 30]
    assert displaceable(Quota("acme"), 130) == 130  # no guarantee: everything
    assert below_guarantee(q, 60, 40) and not below_guarantee(q, 60, 41)
    assert not below_guarantee(Quota("acme"), 0, 1)  # no guarantee is never claimed


def test_guarantees_must_fit_the_pool_with_the_numbers() -> None:
    from leibrix.domain._tenants import guarantee_shortfall

    assert guarantee_shortfall("p", {"a": 60, "b": 40}, 100) is None
    msg = guarantee_shortfall("p", {"a": 60, "b": 41, "c": 0}, 100)
    assert msg == ("guaranteed memory of pool 'p': 101 bytes guaranteed ('a' 60, 'b' 41) > 100 bytes of capacity "
                   "on its workers now; add workers or lower a guarantee")
    assert guarantee_shortfall("", {"a": 1}, 0).startswith("guaranteed memory of the shared pool: 1 bytes")


def test_the_heat_fairness_rule_bounds_each_tenants_total_weight() -> None:
    from leibrix.domain._heat import HeatModel, fair_share

    model = HeatModel(tenant_budget=1000.0)
    assert fair_share(model, 0.0) == fair_share(model, 1000.0) == 1.0  # within the budget: raw heat
    assert fair_share(model, 4000.0) == 0.25
    for total in (1e3, 1e6, 1e12):  # scaled heat never weighs more than the budget, whatever is reported
        assert total * fair_share(model, total) == pytest.approx(min(total, 1000.0))
    assert fair_share(HeatModel(tenant_budget=0.0), 1e12) == 1.0  # 0: unbounded
    with pytest.raises(ValueError, match="tenant_budget"):
        HeatModel(tenant_budget=-1.0)
