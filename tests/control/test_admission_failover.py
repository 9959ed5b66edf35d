"""Leader failover in the middle of admissions, and a worker killed under READY epochs."""

from __future__ import annotations

import signal
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.store._etcd import EtcdClient
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from tests.support.admission import admission, quota, routed, rpc, states
from tests.support.cluster import KEYS, crashable_master, leading, start_master, workers
from tests.support.poll import eventually


async def test_failover_mid_admissions_loses_no_acknowledged_admission(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    a, a_scope = await crashable_master(nursery, etcd_server.endpoint, "m1")
    await leading(a)
    b = await start_master(nursery, etcd_server.endpoint, "m2")
    await rpc(a, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    acked: dict[int, list[str]] = {}
    retries = 0
    crashed = trio.Event()

    async def client(worker: int) -> None:
        nonlocal retries
        for i in range(worker, 120, 4):
            req = admission(dataset=f"d{i}", request_id=f"req-{i}", days=2)
            while True:
                target = b if crashed.is_set() else a
                try:
                    resp = await rpc(target, "admit_dataset", req, timeout=3)
                    break
                except Exception as exc:  # noqa: BLE001
                    # A client whose server vanishes mid-call sees assorted transport errors from grpclib
                    # (even AttributeError from its Connection): all are retried; only a definite answer is not.
                    if isinstance(exc, GRPCError) and exc.status not in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED,
                                                                         Status.CANCELLED, Status.UNKNOWN):
                        raise
                    retries += 1
                    await trio.sleep(0.05)
            acked[i] = [e.epoch_id for e in resp.epochs.epochs]

    async def crash() -> None:
        await eventually(lambda: len(acked) >= 30, what="30 acknowledged admissions")
        a_scope.cancel()
        crashed.set()

    async with trio.open_nursery() as n:
        for w in range(4):
            n.start_soon(client, w)
        n.start_soon(crash)
    assert len(acked) == 120 and retries > 0
    await leading(b)
    kvs, _ = await etcd.get_prefix(KEYS.root + "epochs/acme/")
    stored: dict[str, set[str]] = {}
    for kv in kvs:
        rec = state_pb2.EpochRecord.FromString(kv.value)
        stored.setdefault(rec.dataset_id, set()).add(rec.info.epoch_id)
    for i, epoch_ids in acked.items():
        assert stored.get(f"d{i}") == set(epoch_ids), f"acknowledged admission d{i} lost"
        assert set(states(b, "acme", f"d{i}")) == set(epoch_ids)
    # Retries that crossed the failover were answered from requests/<id>, never admitted twice.
    assert len(b.parts.admission.state.datasets) == 120


@pytest.mark.slow
async def test_killed_worker_replicas_are_replaced_and_stay_routable(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    procs = await workers(nursery, m, "w1", "w2", "w3")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc(m, "admit_dataset", admission(days=3, replication_factor=2))
    await eventually(lambda: states(m), until=lambda s: set(s.values()) == {"READY"} and len(s) == 3, what="READY")
    victim = max(("w1", "w2", "w3"), key=lambda w: len(m.parts.admission.coordinator.replicas_on(w)))
    assert m.parts.admission.coordinator.replicas_on(victim)
    procs[victim].send_signal(signal.SIGKILL)
    # Every epoch keeps at least one LOADED replica, so it stays routed throughout.
    def re_replicated() -> bool:
        assert routed(m) == set(states(m)), "an epoch lost its route"
        return all(victim not in e.worker_ids() and len([r for r in e.replicas if r.state == 2]) == 2
                   for e in m.parts.admission.state.epochs.values())

    await eventually(re_replicated, timeout=40, interval=0.05, what=f"{victim}'s replicas replaced on survivors")

