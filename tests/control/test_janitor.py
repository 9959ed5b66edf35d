"""The janitor through real masters and real etcd: expired requests and old RETIRED epochs are pruned,
nothing else is, and a record rewritten meanwhile is never deleted."""

from __future__ import annotations

import argparse
from typing import Any

import pytest
import trio

from leibrix.master._compose import admission_configs
from leibrix.master._config import ConfigError, MasterConfig, add_arguments, load_config
from leibrix.store._etcd import EtcdClient
from leibrix.control._janitor import Janitor
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, quota, rpc, states
from tests.support.cluster import KEYS, leading, start_master, workers
from tests.support.heat import heat_records
from tests.support.poll import Passes, eventually

QUEUE = cp.AdmissionPolicy.QUEUE


async def epoch_revisions(etcd: EtcdClient, dataset: str = "orders") -> dict[str, int]:
    """epoch id -> mod revision of its record in etcd."""
    prefix = KEYS.epochs_of("acme", dataset)
    kvs, _ = await etcd.get_prefix(prefix)
    return {kv.key[len(prefix):]: kv.mod_revision for kv in kvs}


async def by_state(master: Master, dataset: str = "orders") -> dict[str, int]:
    info = await rpc(master, "get_dataset", cp.GetDatasetRequest(tenant_id="acme", dataset_id=dataset))
    return dict(info.epochs_by_state)


async def listed(master: Master, dataset: str = "orders") -> set[str]:
    resp = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id=dataset))
    return {e.info.epoch_id for e in resp.epochs}


async def retire(master: Master, epoch_id: str, dataset: str = "orders") -> None:
    await rpc(master, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id=dataset, epoch_id=epoch_id))


def pruned(master: Master, what: str) -> float:
    return master.metrics.registry.get_sample_value(f"leibrix_pruned_{what}_total")


def test_housekeeping_options_reach_the_services_and_are_validated() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    config = load_config(parser.parse_args(["--retired-ttl-s", "5", "--prune-interval-s", "0.5"]),
                         environ={"LEIBRIX_REQUEST_TTL_S": "60", "LEIBRIX_HEAT_CHECKPOINT_INTERVAL_S": "2"})
    admission, coord = admission_configs(config)
    assert (admission.request_ttl_s, coord.retired_ttl_s, coord.prune_interval_s, coord.heat_checkpoint_interval_s) \
        == (60.0, 5.0, 0.5, 2.0)
    default_admission, default_coord = admission_configs(MasterConfig())
    assert (default_admission.request_ttl_s, default_coord.retired_ttl_s, default_coord.prune_interval_s,
            default_coord.heat_checkpoint_interval_s) == (86400.0, 3600.0, 60.0, 10.0)
    for flag in ("--request-ttl-s", "--retired-ttl-s", "--prune-interval-s", "--heat-checkpoint-interval-s"):
        with pytest.raises(ConfigError, match=f"{flag} \\(flag\\): 0.0 must be > 0"):
            load_config(parser.parse_args([flag, "0"]), environ={})


def janitor_passes(monkeypatch: pytest.MonkeyPatch) -> Passes:
    """Counts every janitor's pruning passes (``Janitor.prune``)."""
    return Passes.of(monkeypatch, Janitor, "prune")


async def test_expired_requests_are_pruned_and_a_retry_after_that_is_a_no_op(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    passes = janitor_passes(monkeypatch)
    m = await leading(await start_master(nursery, etcd_server.endpoint, request_ttl_s=1.5, prune_interval_s=0.2))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    first = await rpc(m, "admit_dataset", admission(days=2, request_id="r1"))
    assert first.pending_epochs == 2
    before = await epoch_revisions(etcd)
    await passes.after(count=2)  # passes after the request was stored, before its TTL
    assert await etcd.get(KEYS.request("r1")) is not None

    async def gone() -> bool:
        # The janitor's own view follows its commit's answer, which can come a moment after etcd applied it.
        return await etcd.get(KEYS.request("r1")) is None and pruned(m, "requests") == 1

    await eventually(gone, timeout=10, what="the request record's pruning")
    assert "r1" not in m.parts.admission.requests
    again = await rpc(m, "admit_dataset", admission(days=2, request_id="r1"))
    # A new request now, and still safe: re-admitting the same dataset and source changes nothing.
    assert again.status == cp.AdmitDatasetResponseStatus.ACCEPTED and "already admitted" in again.message
    assert [e.epoch_id for e in again.epochs.epochs] == [e.epoch_id for e in first.epochs.epochs]
    assert await epoch_revisions(etcd) == before
    assert set(states(m).values()) == {"PENDING"} and len(states(m)) == 2
    assert await etcd.get(KEYS.request("r1")) is not None  # the new answer is remembered for its own window


async def test_retired_epochs_are_pruned_with_their_heat_after_the_ttl(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    passes = janitor_passes(monkeypatch)
    m = await leading(await start_master(nursery, etcd_server.endpoint, retired_ttl_s=2.0, prune_interval_s=0.2,
                                         heat_checkpoint_interval_s=0.2))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=3))
    old, *kept = sorted(e.epoch_id for e in resp.epochs.epochs)
    await rpc(m, "report_access", cp.ReportAccessRequest(tenant_id="acme", dataset_id="orders", epoch_id=old, count=3))

    async def checkpointed() -> bool:
        return f"acme/orders/{old}" in await heat_records(etcd)

    await eventually(checkpointed, what="the heat checkpoint")
    await retire(m, old)
    assert await by_state(m) == {"PENDING": 2, "RETIRED": 1}
    await passes.after(count=2)  # passes before the TTL keep it
    assert old in await listed(m)
    await eventually(lambda: old not in states(m), timeout=10, what="the RETIRED epoch's pruning")
    assert set(await epoch_revisions(etcd)) == set(kept)
    assert await heat_records(etcd) == {}
    assert await listed(m) == set(kept)
    assert await by_state(m) == {"PENDING": 2}
    assert pruned(m, "epochs") == 1
    await passes.after(count=2)
    assert set(states(m)) == set(kept)  # PENDING epochs are never pruned


async def test_ready_and_failed_epochs_are_never_pruned_until_retired(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    passes = janitor_passes(monkeypatch)
    m = await leading(await start_master(nursery, etcd_server.endpoint, retired_ttl_s=0.1, prune_interval_s=0.1))
    await workers(nursery, m, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    await rpc(m, "admit_dataset", admission(days=2))
    # The plan allows 2 x 1,000 bytes; DuckDB holds any table in far more: the load fails validation.
    await rpc(m, "admit_dataset", admission(dataset="bad", bytes_per_epoch=1000))
    await eventually(lambda: (set(states(m).values()), set(states(m, dataset="bad").values())),
                     until=lambda s: s == ({"READY"}, {"FAILED"}), timeout=40, what="READY and FAILED epochs")
    await passes.after(count=10)  # ten passes with a 0.1 s TTL
    assert set(states(m).values()) == {"READY"} and len(states(m)) == 2
    assert set(states(m, dataset="bad").values()) == {"FAILED"}
    assert len(await epoch_revisions(etcd)) == 2 and len(await epoch_revisions(etcd, "bad")) == 1
    (failed,) = states(m, dataset="bad")
    ready = sorted(states(m))[0]
    await retire(m, failed, dataset="bad")  # an operator's decision: FAILED -> RETIRED, then the TTL
    await retire(m, ready)  # READY -> RETIRING -> RETIRED
    await eventually(lambda: not states(m, dataset="bad") and ready not in states(m), timeout=10,
                     what="pruning after retirement")
    assert await epoch_revisions(etcd, "bad") == {} and len(await epoch_revisions(etcd)) == 1
    assert pruned(m, "epochs") == 2


async def test_pruning_never_deletes_an_epoch_rewritten_meanwhile(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint, prune_interval_s=600.0))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=2))
    first, second = sorted(e.epoch_id for e in resp.epochs.epochs)
    await retire(m, first)
    await retire(m, second)
    svc = m.parts.admission
    coord = svc.coordinator
    janitor = Janitor(coord, svc.requests, commit=m.leader_context().writer.commit, request_ttl_s=600.0,
                      retired_ttl_s=0.05, interval_s=600.0)
    await trio.sleep(0.1)  # time itself is the condition: the janitor's 0.05 s TTL passes
    real_commit = coord._commit
    raced = trio.Event()

    async def admission_lands_first(ops: Any, **kw: Any) -> int:
        if any(getattr(item, "compares", ()) for item in ops) and not raced.is_set():  # the guarded deletes
            raced.set()
            # Between the janitor's decision and its delete, a re-admission (a changed request, so not a
            # no-op) rewrites both RETIRED epochs as PENDING: admissions do not take the coordinator's lock.
            await rpc(m, "admit_dataset", admission(days=3))
        return await real_commit(ops, **kw)

    coord._commit = admission_lands_first
    try:
        assert await janitor.prune_epochs() == 0
    finally:
        coord._commit = real_commit
    assert raced.is_set()
    assert states(m)[first] == states(m)[second] == "PENDING" and len(states(m)) == 3
    assert len(await epoch_revisions(etcd)) == 3
    assert await janitor.prune_epochs() == 0  # the next pass sees PENDING epochs: nothing to prune
    # Without a race the same re-admission after pruning gives the same result: the epoch comes back PENDING.
    await retire(m, first)
    await trio.sleep(0.1)  # the 0.05 s TTL passes
    assert await janitor.prune_epochs() == 1 and first not in states(m)
    await rpc(m, "admit_dataset", admission(days=4))
    assert states(m)[first] == "PENDING" and first in await epoch_revisions(etcd)
