"""Losing etcd's Raft leader, with the production Raft timings: short stalls, and no term lost.

A 3-member cluster runs with ``PRODUCTION_TIMINGS`` (50 ms heartbeat, 300 ms
election). The client under test is connected to one *follower* member only,
the way a master is connected to its embedded member; the Raft leader is
another member and is killed (SIGKILL, then restarted by its supervisor).

* A write sent right after the kill is accepted by the follower and dropped by
  Raft with the leader; etcd itself would answer it only after 5 s + two
  election timeouts. The client's per-call deadline abandons it and the next
  attempt lands once etcd has a new leader.
* A master's term (1 s lease, kept alive by :meth:`Election.keep_alive`)
  survives the re-election: its keepalives are held while there is no leader
  and answered by the new one before the local deadline.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio

from leibrix.store._election import Election
from leibrix.store._etcd import DEFAULT_CALL_TIMEOUT, EtcdClient, EtcdUnavailable, Put
from leibrix.store._store import FencedWriter, Keys
from leibrix.wire._proto.records import state_pb2
from tests.support.chaos import production_etcd_cluster, raft_leader
from tests.support.etcd import EtcdServer

KEYS = Keys("raft")
#: Raft-leader kills per test: each re-election's timing is randomised by etcd.
KILLS = 3


@pytest.fixture
async def servers(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[list[EtcdServer]]:
    started = await production_etcd_cluster(nursery, tmp_path)
    try:
        yield started
    finally:
        with trio.CancelScope(shield=True):
            for server in started:
                await server.stop()


async def follower_client(servers: list[EtcdServer], leader: EtcdServer) -> EtcdClient:
    follower = next(s for s in servers if s is not leader)
    return await EtcdClient.connect([follower.endpoint])


async def settle(servers: list[EtcdServer]) -> None:
    """Wait until every member answers again and the cluster accepts writes."""
    for server in servers:
        client = await EtcdClient.connect([server.endpoint], discover=False)
        try:
            await client.wait_ready(deadline=trio.current_time() + 20)
        finally:
            await client.aclose()


async def test_client_learns_every_member_from_one(servers: list[EtcdServer]) -> None:
    client = await EtcdClient.connect([servers[0].endpoint])
    try:
        assert sorted(client.endpoints) == sorted(s.endpoint for s in servers)
        assert client.endpoints[0] == servers[0].endpoint
    finally:
        await client.aclose()


async def test_a_write_stalled_by_the_raft_leaders_death_is_retried_within_two_seconds(
    servers: list[EtcdServer],
) -> None:
    for kill in range(KILLS):
        leader = await raft_leader(servers)
        client = await follower_client(servers, leader)
        try:
            leader.kill()
            started = trio.current_time()
            with trio.fail_after(10):
                while True:
                    try:
                        await client.put(f"/raft/w{kill}", b"x")
                        break
                    except EtcdUnavailable:
                        pass
            took = trio.current_time() - started
            assert await client.get(f"/raft/w{kill}") is not None
        finally:
            await client.aclose()
        # etcd alone would hold the first attempt for 5.6 s: abandoned at the deadline, then retried.
        assert took < 1.0 + 2 * DEFAULT_CALL_TIMEOUT, f"kill {kill}: write accepted after {took:.2f} s"
        await settle(servers)


async def test_a_healthy_term_survives_the_raft_leaders_death(servers: list[EtcdServer]) -> None:
    for kill in range(KILLS):
        leader = await raft_leader(servers)
        client = await follower_client(servers, leader)
        try:
            record = state_pb2.MasterRecord(id=f"m{kill}").SerializeToString()
            election = Election(client, key=KEYS.leader, record=record, ttl=1)
            term = await election.campaign()
            async with trio.open_nursery() as nursery:
                await nursery.start(election.keep_alive, term)
                await trio.sleep(0.5)  # several keepalives acknowledged
                leader.kill()
                # Past the 1 s TTL plus etcd's re-election: the term must still be valid...
                with trio.move_on_after(2.5):
                    await term.lost.wait()
                assert not term.lost.is_set(), f"kill {kill}: the term ended when etcd lost its Raft leader"
                # ...and its fenced writes accepted.
                revision = await FencedWriter(client, term).commit([Put(KEYS.tenant(f"t{kill}"), b"ok")])
                assert revision > term.token
                await election.resign(term)
                nursery.cancel_scope.cancel()
        finally:
            await client.aclose()
        await settle(servers)
