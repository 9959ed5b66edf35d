"""A master on an operator's etcd that runs etcd's defaults (128 ops per transaction, 1.5 MiB requests)."""

from __future__ import annotations

from typing import Any

import trio

from leibrix.store._etcd import EtcdClient
from leibrix.store._store import Keys
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, leading, quota, rpc, start_master


async def test_a_ten_thousand_epoch_admission_is_stored_and_the_term_survives(
        default_etcd_server: Any, default_etcd: EtcdClient, nursery: trio.Nursery) -> None:
    m = await start_master(nursery, default_etcd_server.endpoint)
    await leading(m)
    token = m.leader_context().token
    await rpc(m, "upsert_tenant_quota", quota())
    request = admission(days=2500, regions=("eu", "us", "ap", "sa"), request_id="big")
    reply = await rpc(m, "admit_dataset", request, timeout=60)
    assert reply.status == cp.AdmitDatasetResponseStatus.ACCEPTED, reply.message
    assert len(reply.epochs.epochs) == 10_000
    stored, _ = await default_etcd.get_prefix(Keys("adm").epochs_of("acme", "orders"))
    assert len(stored) == 10_000
    assert m.is_leader and m.leader_context().token == token
