"""A master on an operator's etcd that runs etcd's defaults (128 ops per transaction, 1.5 MiB requests):
etcd refusing a write is that request's error, never the end of the term."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.store._etcd import EtcdClient, EtcdRefused
from leibrix.store._store import Keys
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, quota, rpc
from tests.support.cluster import leading, start_master
from tests.support.etcd import EtcdServer, member_config


async def test_a_ten_thousand_epoch_admission_is_stored_and_the_term_survives(
        default_etcd_server: Any, default_etcd: EtcdClient, nursery: trio.Nursery) -> None:
    # A 5 s lease: deciding 10,000 epochs may hold the loop for longer than the tests' usual 1 s lease
    # allows, and a lease lost that way is a different story from etcd's limits.
    m = await leading(await start_master(nursery, default_etcd_server.endpoint, lease_ttl=5))
    token = m.leader_context().token
    await rpc(m, "upsert_tenant_quota", quota())
    request = admission(days=2500, regions=("eu", "us", "ap", "sa"), request_id="big")
    reply = await rpc(m, "admit_dataset", request, timeout=60)
    assert reply.status == cp.AdmitDatasetResponseStatus.ACCEPTED, reply.message
    assert len(reply.epochs.epochs) == 10_000
    stored, _ = await default_etcd.get_prefix(Keys("adm").epochs_of("acme", "orders"))
    assert len(stored) == 10_000
    assert m.is_leader and m.leader_context().token == token


async def test_a_full_etcd_refuses_writes_with_resource_exhausted_and_the_term_survives(
        tmp_path: Path, nursery: trio.Nursery) -> None:
    server = EtcdServer(member_config(tmp_path, txn_limits=None, quota_bytes=4 * 1024 * 1024), nursery)
    await server.start()
    client = await EtcdClient.connect([server.endpoint])
    try:
        m = await leading(await start_master(nursery, server.endpoint))
        token = m.leader_context().token
        with trio.fail_after(30):
            for i in itertools.count():  # fill the backend until etcd raises its NOSPACE alarm
                try:
                    await client.put(f"/filler/{i}", b"x" * 1_000_000)
                except EtcdRefused as exc:
                    assert exc.reason == "no_space", exc
                    break
        with pytest.raises(GRPCError) as info:
            await rpc(m, "upsert_tenant_quota", quota())
        assert info.value.status == Status.RESOURCE_EXHAUSTED and "no_space" in info.value.message
        assert m.is_leader and m.leader_context().token == token
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()
