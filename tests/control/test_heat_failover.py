"""Heat checkpoints through real masters and real etcd: heat survives a failover, decayed by the time since.

Timings: checkpoints every 0.2 s and a 5 s half-life, so a test sees
checkpoints quickly and decay within a second or two.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.control._heat_checkpoint import HeatCheckpointer
from leibrix.store._etcd import EtcdClient
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import MiB, admission, quota, rpc, states
from tests.support.cluster import (
    crashable_master,
    leader_and_follower,
    leader_id,
    leading,
    master_process,
    start_master,
    workers,
)
from tests.support.heat import heat_records
from tests.support.poll import Passes, eventually

HALF_LIFE = 5.0
OPTS = {"heat_checkpoint_interval_s": 0.2, "heat_half_life_s": HALF_LIFE}
QUEUE = cp.AdmissionPolicy.QUEUE


def key(epoch_id: str) -> str:
    return f"acme/orders/{epoch_id}"


async def list_epochs(master: Master | str) -> dict[str, cp.EpochStatus]:
    resp = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
    return {e.info.epoch_id: e for e in resp.epochs}


async def access(master: Master | str, epoch_id: str, count: int) -> None:
    await rpc(master, "report_access",
              cp.ReportAccessRequest(tenant_id="acme", dataset_id="orders", epoch_id=epoch_id, count=count))


async def until_ok(master: Master | str, name: str, request: Any) -> Any:
    """Call an RPC until the master answers it (a new leader is UNAVAILABLE until its term has started)."""

    async def attempt() -> tuple[bool, Any]:
        try:
            return True, await rpc(master, name, request)
        except GRPCError as exc:
            if exc.status is not Status.UNAVAILABLE:
                raise
            return False, exc

    _, reply = await eventually(attempt, until=lambda outcome: outcome[0], interval=0.05,
                                what=f"{name} answered (not UNAVAILABLE)")
    return reply


async def feed_three(leader: Master | str, etcd: EtcdClient) -> tuple[str, str, str]:
    """Three PENDING epochs (cold, hot, warm: the cold one sorts first); hot and warm fed and checkpointed."""
    await until_ok(leader, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await until_ok(leader, "admit_dataset", admission(days=3))
    cold, hot, warm = sorted(e.epoch_id for e in resp.epochs.epochs)
    await access(leader, hot, 40)
    await access(leader, warm, 10)

    async def both() -> bool:
        recs = await heat_records(etcd)
        return key(hot) in recs and key(warm) in recs

    await eventually(both, what="heat checkpoints")
    return cold, hot, warm


async def check_resumed_heat(new_leader: Master, etcd: EtcdClient, cold: str, hot: str, warm: str) -> None:
    """The new leader ranks by the fed heat, which is the checkpoint decayed by the wall time since it."""
    recs = await heat_records(etcd)
    assert set(recs) == {key(hot), key(warm)}, "only fed epochs get a checkpoint"
    rec = recs[key(hot)][0]
    assert 30 < rec.value <= 41  # the prior 1 + 40 accesses, decayed until the checkpoint
    written = rec.at.ToNanoseconds() / 1e9
    await trio.sleep(max(0.0, written + 1.5 - time.time()))  # let a visible part of a half-life pass
    t0 = time.time()
    epochs = await list_epochs(new_leader)
    t1 = time.time()
    low = rec.value * 2 ** (-(t1 - written) / HALF_LIFE)
    high = rec.value * 2 ** (-(t0 - written) / HALF_LIFE)
    assert low * 0.99 <= epochs[hot].heat <= high * 1.01
    assert epochs[hot].heat < 0.85 * rec.value
    assert epochs[cold].heat <= 1.0  # never fed: the prior
    assert epochs[hot].benefit > epochs[warm].benefit > epochs[cold].benefit


async def test_heat_survives_the_leaders_resignation_decayed_by_the_time_since(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    a, b = await leader_and_follower(nursery, etcd_server.endpoint, **OPTS)
    cold, hot, warm = await feed_three(a, etcd)
    await a.shutdown()
    await leading(b)
    await check_resumed_heat(b, etcd, cold, hot, warm)


async def test_heat_survives_a_killed_leader(etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    proc, a_addr = await master_process(nursery, etcd_server.endpoint, "a", **OPTS)

    async def a_leads() -> bool:
        return await leader_id(etcd) == "a"

    await eventually(a_leads, what="the child master's leadership")
    b = await start_master(nursery, etcd_server.endpoint, "b", **OPTS)
    cold, hot, warm = await feed_three(a_addr, etcd)
    proc.send_signal(signal.SIGKILL)  # no finally of the child runs: only the periodic checkpoints count
    assert await proc.wait() == -signal.SIGKILL
    await leading(b)
    await check_resumed_heat(b, etcd, cold, hot, warm)


async def test_a_pending_epoch_made_hot_before_a_failover_is_still_loaded_first(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    a, b = await leader_and_follower(nursery, etcd_server.endpoint, **OPTS)
    await rpc(a, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(a, "admit_dataset", admission(days=2, bytes_per_epoch=100 * MiB))
    cold, hot = sorted(e.epoch_id for e in resp.epochs.epochs)  # by the prior alone, cold would go first
    await access(a, hot, 20)

    async def stored() -> bool:
        return key(hot) in await heat_records(etcd)

    await eventually(stored, what="the checkpoint")
    await a.shutdown()
    await leading(b)
    await workers(nursery, b, "w1", memory="150MiB")  # room for one of the two epochs only
    await eventually(lambda: states(b), until=lambda s: s[hot] == "READY", timeout=30, what="the hot epoch loaded")
    # Once loaded, the hot epoch is charged its measured bytes, which may make room for the cold one: only
    # after the hot one was placed.
    epochs = b.parts.admission.state.epochs
    placed = {eid: [t.at_ms for t in epochs[("acme", "orders", eid)].history if t.to_state.name == "LOADING"]
              for eid in (hot, cold)}
    assert placed[hot] and all(at >= placed[hot][0] for at in placed[cold])
    assert [t.from_state.name for t in epochs[("acme", "orders", hot)].history][:1] == ["PENDING"]


async def test_a_term_ended_while_still_valid_flushes_its_heat(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    a, scope = await crashable_master(nursery, etcd_server.endpoint, "a", heat_checkpoint_interval_s=600.0)
    await leading(a)
    await rpc(a, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(a, "admit_dataset", admission(days=2))
    first = resp.epochs.epochs[0].epoch_id
    await access(a, first, 7)
    assert (await list_epochs(a))[first].heat > 7  # the accesses are fed ...
    assert await heat_records(etcd) == {}  # ... but the interval is 10 minutes: nothing written yet
    scope.cancel()  # the term's lease is still alive: the final flush is allowed
    await eventually(lambda: not a.is_leader, what="the master's end")
    recs = await eventually(lambda: heat_records(etcd), what="the final flush")
    assert set(recs) == {key(first)} and 7 < recs[key(first)][0].value <= 8


async def test_checkpoints_are_bounded_by_the_interval_and_go_with_their_epochs(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> None:
    checkpoints = Passes.of(monkeypatch, HeatCheckpointer, "flush")
    m = await leading(await start_master(nursery, etcd_server.endpoint, "a", heat_checkpoint_interval_s=0.5))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=3))
    ids = sorted(e.epoch_id for e in resp.epochs.epochs)
    started = trio.current_time()
    for _ in range(60):
        await access(m, ids[0], 1)
    await access(m, ids[1], 1)
    def written() -> float:
        return m.metrics.registry.get_sample_value("leibrix_heat_checkpoints_total")

    async def both() -> bool:  # the counter follows the commit's answer, which may come after etcd applied it
        return await _has(etcd, {key(ids[0]), key(ids[1])}) and written() >= 2

    await eventually(both, what="checkpoints")
    intervals = (trio.current_time() - started) / 0.5 + 2
    # 61 reports, but at most one record per fed epoch per interval
    assert written() <= 2 * intervals < 61
    assert set(await heat_records(etcd)) == {key(ids[0]), key(ids[1])}
    await rpc(m, "drop_dataset", cp.DropDatasetRequest(tenant_id="acme", dataset_id="orders"))
    assert await heat_records(etcd) == {}  # deleted with the epochs, in the same transactions
    await checkpoints.after(count=2)  # two more checkpoint passes: nothing comes back
    assert await heat_records(etcd) == {}


async def _has(etcd: EtcdClient, keys: set[str]) -> bool:
    return keys <= set(await heat_records(etcd))


async def test_a_new_leader_warms_every_checkpointed_epoch_at_the_start_of_its_term(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    a, b = await leader_and_follower(nursery, etcd_server.endpoint, **OPTS)
    await rpc(a, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(a, "admit_dataset", admission(days=1))
    (only,) = [e.epoch_id for e in resp.epochs.epochs]
    await access(a, only, 9)

    async def stored() -> bool:
        return key(only) in await heat_records(etcd)

    await eventually(stored, what="the checkpoint")
    # RETIRED: no scheduling pass or RPC of the new leader will ask for its heat, only the warm-up
    await rpc(a, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="orders", epoch_id=only))
    await a.shutdown()
    await leading(b)
    svc = b.parts.admission
    e = svc.state.epochs[("acme", "orders", only)]
    await eventually(lambda: e.heat is not None, what="the warm-up")
    model = svc.coordinator.config.heat
    assert 8 < e.heat.get(model, trio.current_time()) <= 10


async def test_a_graceful_shutdown_writes_its_heat_before_resigning(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    """SIGTERM path (``Master.shutdown``): heat fed after the last checkpoint reaches the successor."""
    a, b = await leader_and_follower(nursery, etcd_server.endpoint, heat_checkpoint_interval_s=600.0)
    await rpc(a, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(a, "admit_dataset", admission(days=2))
    first = resp.epochs.epochs[0].epoch_id
    await access(a, first, 7)
    assert await heat_records(etcd) == {}  # the interval is 10 minutes: nothing written yet
    await a.shutdown()
    recs = await heat_records(etcd)
    assert set(recs) == {key(first)} and 7 < recs[key(first)][0].value <= 8
    await leading(b)
    assert 7 < (await list_epochs(b))[first].heat <= 8
