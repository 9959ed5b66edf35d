"""/metrics of a real master: every documented series is exported, and moves when what it counts happens.

Scraped over HTTP and parsed with prometheus-client's own text parser; the
cluster is real (etcd, gRPC, ``leibrix worker`` processes, an Iceberg source).
"""

from __future__ import annotations

import re
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from prometheus_client.parser import text_string_to_metric_families

from leibrix.api._metrics import eviction_reason
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, all_ready, quota, rpc, watch_routes
from tests.support.cluster import leader_and_follower, leading, start_master, workers
from tests.support.poll import eventually

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

#: Series every master exports (names as exposed, counters with ``_total``).
EVERY_MASTER = {
    "leibrix_is_leader", "leibrix_term", "leibrix_etcd_up", "leibrix_leader_terms_total", "leibrix_leader",
    "leibrix_masters", "leibrix_etcd_probe_duration_seconds_count", "leibrix_loop_lag_seconds_count",
    "leibrix_datasets", "leibrix_epochs", "leibrix_tenant_memory_bytes", "leibrix_tenant_epochs",
    "leibrix_tenant_datasets", "leibrix_tenant_cpu_cores", "leibrix_tenant_pending_epochs",
}
#: Series only the leader exports.
LEADER_ONLY = {"leibrix_workers", "leibrix_worker_streams_open", "leibrix_worker_heartbeat_age_seconds_bucket",
               "leibrix_worker_heartbeat_age_max_seconds", "leibrix_query_heat", "leibrix_rebalance_passes_total",
               "leibrix_rebalance_moves_total"}


def _scrape_sync(addr: str) -> Samples:
    """Every sample, and every family (even one without samples now) as ``(name, ()) -> nan``."""
    with urllib.request.urlopen(f"http://{addr}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    families = list(text_string_to_metric_families(text))
    samples: Samples = {(f.name, ("family", "")): float("nan") for f in families}
    samples.update({(s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples})
    return samples


async def scrape(master: Any) -> Samples:
    return await trio.to_thread.run_sync(_scrape_sync, master.config.http_listen)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels`` (0 when none)."""
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls) and ls != ("family", ""))


def names(samples: Samples) -> set[str]:
    """Names with samples (families without any are left out)."""
    return {n for n, ls in samples if ls != ("family", "")}


async def test_series_move_with_workers_admissions_and_loads(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    before = await scrape(m)
    assert value(before, "leibrix_is_leader") == 1 and value(before, "leibrix_leader", leader="m1") == 1
    assert value(before, "leibrix_workers") == 0 and value(before, "leibrix_epochs") == 0

    await workers(nursery, m, "w1", "w2")
    joined = await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_workers", state="ACTIVE") == 2,
                              what="two ACTIVE workers in /metrics")
    assert value(joined, "leibrix_workers", state="ACTIVE", pool="shared") == 2
    assert value(joined, "leibrix_worker_streams_open") == 2
    assert value(joined, "leibrix_worker_heartbeat_age_seconds_bucket", le="+Inf") == 2

    await rpc(m, "upsert_tenant_quota", quota(max_epochs=10, max_memory_bytes=1 << 30, max_cpu_cores=64.0))
    await rpc(m, "admit_dataset", admission(days=2))
    with pytest.raises(GRPCError) as refused:  # over the tenant's epoch budget
        await rpc(m, "admit_dataset", admission(dataset="huge", days=20))
    assert refused.value.status is Status.RESOURCE_EXHAUSTED
    await all_ready(m, n=2)

    after = await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_loads_total", outcome="ready") >= 2,
                             what="two loads counted")
    assert names(after) >= EVERY_MASTER | LEADER_ONLY
    assert value(after, "leibrix_epochs", tenant="acme", dataset="orders", state="READY") == 2
    assert value(after, "leibrix_admissions_total", code="OK") == 1
    assert value(after, "leibrix_admissions_total", code="RESOURCE_EXHAUSTED") == 1
    assert value(after, "leibrix_admission_duration_seconds_count") == 2
    assert value(after, "leibrix_rpc_requests_total", method="UpsertTenantQuota", code="OK") == 1
    assert value(after, "leibrix_loads_total", source_type="iceberg", outcome="ready") == 2
    assert value(after, "leibrix_load_duration_seconds_count", source_type="iceberg") == 2
    assert value(after, "leibrix_load_bytes_total", source_type="iceberg") > 0
    assert value(after, "leibrix_epoch_transitions_total", to_state="READY") == 2
    assert value(after, "leibrix_tenant_epochs", tenant="acme") == 2
    assert value(after, "leibrix_tenant_epochs_limit", tenant="acme") == 10
    assert value(after, "leibrix_tenant_memory_limit_bytes", tenant="acme") == 1 << 30
    assert 0 < value(after, "leibrix_tenant_memory_bytes", tenant="acme") <= 1 << 30
    assert value(after, "leibrix_tenant_cpu_limit_cores", tenant="acme") == 64
    assert ("leibrix_tenant_datasets_limit", (("tenant", "acme"),)) not in after  # unlimited: no series
    assert value(after, "leibrix_query_heat", tenant="acme", dataset="orders") > 0
    assert value(after, "leibrix_etcd_probe_duration_seconds_count") > value(before,
                                                                             "leibrix_etcd_probe_duration_seconds_count")
    # counted on their own paths: scheduling passes, heartbeats, etcd requests by operation
    assert value(after, "leibrix_placement_pass_seconds_count") > value(before, "leibrix_placement_pass_seconds_count")
    await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_worker_heartbeat_lag_seconds_count") > 0,
                     what="a heartbeat's lag observed")
    assert value(after, "leibrix_etcd_request_seconds_count", op="txn") > \
        value(before, "leibrix_etcd_request_seconds_count", op="txn")
    assert value(after, "leibrix_etcd_request_seconds_count", op="range") > 0

    await rpc(m, "report_access", _access("acme", "orders", sorted(_states(m))[0], count=50))
    hotter = await scrape(m)
    assert value(hotter, "leibrix_query_heat", tenant="acme", dataset="orders") > \
        value(after, "leibrix_query_heat", tenant="acme", dataset="orders") + 40

    assert value(hotter, "leibrix_route_subscribers", tenant="acme") == 0
    stop = trio.Event()
    nursery.start_soon(partial(watch_routes, m, "acme", until=lambda updates: stop.is_set()))
    await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_route_subscribers", tenant="acme") == 1,
                     what="one route subscriber")
    stop.set()  # the watch ends at the next update: one epoch's route removal, after which the stream is idle
    first = sorted(m.parts.admission.state.dataset_epochs("acme", "orders"), key=lambda e: e.epoch_id)[0]
    await rpc(m, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="orders",
                                                       epoch_id=first.epoch_id))
    await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_route_subscribers", tenant="acme") == 0,
                     what="the route subscriber gone")

    await rpc(m, "drop_dataset", _drop("acme", "orders"))
    dropped = await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_evictions_total") >= 2,
                               what="evictions counted")
    assert value(dropped, "leibrix_evictions_total", reason="drop") == 1
    sent = await eventually(lambda: scrape(m), until=lambda s: value(s, "leibrix_evict_commands_total") >= 2,
                            what="evict commands counted")
    assert value(sent, "leibrix_evict_commands_total", reason="retired") >= 2
    # every series the sample alerts and the dashboard use is exported
    exported = {n for n, _ in dropped}  # families too: the epoch series are empty once the dataset is dropped
    assert _documented() <= exported, _documented() - exported


def _documented() -> set[str]:
    docs = Path(__file__).resolve().parents[2] / "docs"
    text = (docs / "alerts.yaml").read_text() + (docs / "grafana-dashboard.json").read_text()
    return set(re.findall(r"\bleibrix_[a-z_]+[a-z]", text))


async def test_followers_export_state_but_not_worker_series(etcd_server: Any, nursery: trio.Nursery) -> None:
    leader, follower = await leader_and_follower(nursery, etcd_server.endpoint)
    await rpc(leader, "upsert_tenant_quota", quota())
    samples = await eventually(lambda: scrape(follower),
                               until=lambda s: ("leibrix_tenant_epochs", (("tenant", "acme"),)) in s,
                               what="the tenant on the follower")
    assert value(samples, "leibrix_is_leader") == 0
    assert value(samples, "leibrix_leader", leader=leader.config.name) == 1
    assert value(samples, "leibrix_masters") == 2
    assert not names(samples) & LEADER_ONLY


def test_eviction_reasons_are_a_bounded_set() -> None:
    assert eviction_reason("replaced by refresh 1700_abc") == "refresh"
    assert eviction_reason("displaced by higher-benefit acme/orders/1") == "benefit"
    assert eviction_reason("dataset dropped") == "drop"
    assert eviction_reason("worker w1 died with the last replica") == "worker_lost"
    assert eviction_reason("load failed on w1: boom; attempt 1, retrying") == "load_failed"
    assert eviction_reason("retired by an operator") == "retire"


def _states(m: Any) -> dict[str, str]:
    return {e.epoch_id: e.state.name for e in m.parts.admission.state.dataset_epochs("acme", "orders")}


def _access(tenant: str, dataset: str, epoch: str, count: int) -> Any:
    from leibrix.wire._proto import leibrix_cp as cp

    return cp.ReportAccessRequest(tenant_id=tenant, dataset_id=dataset, epoch_id=epoch, count=count)


def _drop(tenant: str, dataset: str) -> Any:
    from leibrix.wire._proto import leibrix_cp as cp

    return cp.DropDatasetRequest(tenant_id=tenant, dataset_id=dataset)
