"""Three ``leibrix master`` processes forming one 3-member etcd quorum: leadership and failover.

Each test starts a fresh cluster (fast etcd test timings, 1 s lease) through
:func:`tests.support.cluster.local_cluster`; assertions read etcd itself, never logs.
"A leader accepts writes" means its leadership probe — a transaction fenced
by the term's token — has been applied: the leader key's version is >= 2.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import grpclib.const
import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.events import RecvTrailingMetadata, listen
from grpclib.exceptions import GRPCError

from leibrix.store._etcd import EtcdClient, WatchEvent
from leibrix.store._member import PRODUCTION_TIMINGS
from leibrix.wire._grpc import LEADER_METADATA
from leibrix.cli._cluster import LocalCluster
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from tests.support.cluster import LOCAL_LEADER_KEY, local_cluster, written_leader
from tests.support.poll import eventually

PREFIX = "/leibrix/local/"
LEADER_KEY = LOCAL_LEADER_KEY


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[LocalCluster]:
    async with local_cluster(tmp_path, 3) as c:
        yield c


@pytest.fixture
async def etcd(cluster: LocalCluster) -> AsyncIterator[EtcdClient]:
    client = await EtcdClient.connect(cluster.etcd_endpoints)
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


async def leader_with_write(etcd: EtcdClient, *, not_token: int = 0, timeout: float = 15.0) -> tuple[str, int]:
    """``(leader id, token)`` of a term other than ``not_token`` whose leader has made a fenced write."""
    record, token = await written_leader(etcd, not_token=not_token, timeout=timeout)
    return record.id, token


async def role(cluster: LocalCluster, name: str) -> dict[str, object]:
    answer = await trio.to_thread.run_sync(cluster.healthz, name)
    assert answer is not None, f"{name} does not answer /healthz"
    return json.loads(answer[1])


async def roles_of(cluster: LocalCluster) -> dict[str, dict[str, object]]:
    return {name: await role(cluster, name) for name in cluster.names}


async def test_exactly_one_leader_and_everyone_agrees(cluster: LocalCluster, etcd: EtcdClient) -> None:
    leader, token = await leader_with_write(etcd)
    roles = await eventually(lambda: roles_of(cluster), until=lambda rs: all(r["leader"] == leader for r in rs.values()),
                             timeout=5, interval=0.05, what=f"every master naming {leader} the leader")
    assert [n for n, r in roles.items() if r["is_leader"]] == [leader]
    assert all(r["term"] == token for r in roles.values())
    members = await etcd.members()
    assert sorted(m.name for m in members) == ["m1", "m2", "m3"]


async def test_kill9_of_the_leader_elects_another_that_accepts_writes(cluster: LocalCluster, etcd: EtcdClient) -> None:
    old, token = await leader_with_write(etcd)
    cluster.signal(old, signal.SIGKILL)
    new, new_token = await leader_with_write(etcd, not_token=token)
    assert new != old and new_token > token
    assert await cluster.processes[old].wait() == -signal.SIGKILL


async def test_sigstopped_leader_is_replaced_and_after_sigcont_writes_nothing_and_steps_down(
    cluster: LocalCluster, etcd: EtcdClient
) -> None:
    old, token = await leader_with_write(etcd)
    cluster.signal(old, signal.SIGSTOP)
    try:
        new, new_token = await leader_with_write(etcd, not_token=token)
        assert new != old
    finally:
        cluster.signal(old, signal.SIGCONT)
    # Record everything written under the cluster prefix from the new term on,
    # while the old leader wakes up and finds out.
    events: list[WatchEvent] = []
    async with etcd.watch_prefix(PREFIX, start_revision=new_token) as stream:
        with trio.move_on_after(3.0):
            async for batch in stream:
                events.extend(batch)
    leader_writes = [e for e in events if e.kv.key == LEADER_KEY]
    assert leader_writes, "the new leader keeps proclaiming"
    for event in leader_writes:
        assert event.kind == "put" and event.kv.create_revision == new_token
        assert state_pb2.MasterRecord.FromString(event.kv.value).id == new
    old_role = await role(cluster, old)
    assert old_role["is_leader"] is False and old_role["leader"] == new
    assert cluster.processes[old].returncode is None, "the old leader steps down, it does not crash"
    kv = await etcd.get(LEADER_KEY)
    assert kv is not None and kv.create_revision == new_token


async def test_graceful_sigterm_of_the_leader_hands_over(cluster: LocalCluster, etcd: EtcdClient) -> None:
    old, token = await leader_with_write(etcd)
    assert await cluster.stop(old) == 0
    new, new_token = await leader_with_write(etcd, not_token=token)
    assert new != old
    assert await etcd.get(PREFIX + "masters/" + old) is None, "presence key revoked on shutdown"


async def test_follower_write_answers_unavailable_naming_the_leader(cluster: LocalCluster, etcd: EtcdClient) -> None:
    leader, _ = await leader_with_write(etcd)
    await eventually(lambda: roles_of(cluster), until=lambda rs: [r["leader"] for r in rs.values()] == [leader] * 3,
                     timeout=5, interval=0.05, what=f"every master naming {leader} the leader")
    follower = next(n for n in cluster.names if n != leader)
    host, port = cluster.specs[follower].grpc.rsplit(":", 1)
    trailers: dict[str, str] = {}

    async def upsert() -> GRPCError | None:
        channel = Channel(host, int(port))

        async def keep(event: RecvTrailingMetadata) -> None:
            trailers.update(event.metadata)

        listen(channel, RecvTrailingMetadata, keep)
        try:
            await cp.ManagementServiceStub(channel).upsert_tenant_quota(cp.TenantQuota(tenant_id="t1", max_datasets=1))
        except GRPCError as exc:
            return exc
        finally:
            channel.close()
        return None

    async with trio_asyncio.open_loop():
        error = await trio_asyncio.aio_as_trio(upsert)()
    assert error is not None and error.status is grpclib.const.Status.UNAVAILABLE
    assert trailers.get(LEADER_METADATA) == cluster.specs[leader].grpc
    assert await etcd.get(PREFIX + "tenants/t1") is None


@pytest.mark.slow
@pytest.mark.parametrize("round_", range(5))
async def test_repeated_kill9_failovers(tmp_path: Path, round_: int) -> None:
    """Chaos: five fresh clusters, each losing two leaders to kill -9 in a row (quorum kept)."""
    async with local_cluster(tmp_path, 3) as c:
        client = await EtcdClient.connect(c.etcd_endpoints)
        try:
            old, token = await leader_with_write(client)
            c.signal(old, signal.SIGKILL)
            new, token = await leader_with_write(client, not_token=token)
            assert new != old
            await c.start(old)  # rejoins the quorum with its data
            await c.wait_healthy(old)
            c.signal(new, signal.SIGKILL)
            third, _ = await leader_with_write(client, not_token=token)
            assert third != new
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()


@pytest.mark.slow
async def test_no_false_failover_under_cpu_load_with_production_settings(tmp_path: Path) -> None:
    """The production lease (1 s) and etcd timings hold a term while every core is saturated for 20 s."""
    async with local_cluster(tmp_path, 3, timings=PRODUCTION_TIMINGS, lease_ttl=None) as c:
        client = await EtcdClient.connect(c.etcd_endpoints)
        try:
            _, token = await leader_with_write(client)
            burn = "import time\nend = time.time() + 20\nwhile time.time() < end: pass\n"
            async with trio.open_nursery() as nursery:
                for _ in range(3):  # more burners than cores
                    nursery.start_soon(partial(trio.run_process, [sys.executable, "-c", burn]))
            kv = await client.get(LEADER_KEY)
            assert kv is not None and kv.create_revision == token, "the leader lost its term under load"
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
