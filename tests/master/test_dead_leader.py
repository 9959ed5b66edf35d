"""Deposing a leader whose process is gone: real TCP listeners stand in for the leader's gRPC port, and a real
3-master cluster with a long lease loses its leader to kill -9."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import trio

from leibrix.master._dead_leader import depose_dead_leader
from leibrix.store._election import LeaderInfo
from leibrix.store._etcd import EtcdClient
from tests.support.cluster import local_cluster, written_leader


def _info(port: int) -> LeaderInfo:
    return LeaderInfo("m1", f"127.0.0.1:{port}", "", token=7, lease=0x77)


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


async def _watch(nursery: trio.Nursery, info: LeaderInfo | None, deposed: list[LeaderInfo]) -> list[LeaderInfo | None]:
    current: list[LeaderInfo | None] = [info]

    async def depose(leader: LeaderInfo) -> None:
        deposed.append(leader)
        current[0] = None  # the key goes with the lease

    nursery.start_soon(depose_dead_leader, "m2", lambda: current[0], depose)
    return current


async def test_a_leader_that_stops_listening_is_deposed(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    accepted: list[trio.SocketStream] = []

    async def serve() -> None:
        while True:
            accepted.append(await listeners[0].accept())

    server = trio.CancelScope()
    nursery.start_soon(_run, server, serve)
    deposed: list[LeaderInfo] = []
    await _watch(nursery, _info(port), deposed)
    with trio.fail_after(5):
        while not accepted:  # the follower holds a connection to the leader
            await trio.sleep(0.01)
    await trio.sleep(0.3)
    assert deposed == []  # alive and listening: left alone
    # The process dies: its listener and connections close together.
    server.cancel()
    for s in [*listeners, *accepted]:
        await s.aclose()
    with trio.fail_after(5):
        while not deposed:
            await trio.sleep(0.01)
    assert deposed == [_info(port)] and deposed[0].lease == 0x77


async def _run(scope: trio.CancelScope, fn) -> None:
    with scope:
        await fn()


async def test_a_leader_that_closes_a_connection_but_still_listens_is_not_deposed(nursery: trio.Nursery) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    served = 0

    async def serve() -> None:
        nonlocal served
        try:
            while True:
                conn = await listeners[0].accept()
                served += 1
                await conn.aclose()  # an idle connection dropped, as a server may
        except trio.ClosedResourceError:
            pass  # the test closed the listener

    try:
        nursery.start_soon(serve)
        deposed: list[LeaderInfo] = []
        await _watch(nursery, _info(port), deposed)
        with trio.fail_after(5):
            while served < 5:
                await trio.sleep(0.01)
        assert deposed == []
    finally:
        await listeners[0].aclose()


async def test_an_address_never_reached_is_never_deposed(nursery: trio.Nursery) -> None:
    """A wrong advertised address refuses from the start: that proves nothing about the leader's process."""
    deposed: list[LeaderInfo] = []
    await _watch(nursery, _info(_closed_port()), deposed)
    await trio.sleep(1.0)
    assert deposed == []


async def test_kill9_of_the_leader_is_followed_by_a_new_term_well_before_its_lease_ends(tmp_path: Path) -> None:
    """With a 10 s lease, waiting for expiry would take 10 s or more; a follower sees the dead process and
    revokes the lease instead."""
    async with local_cluster(tmp_path, 3, lease_ttl=10) as c:
        client = await EtcdClient.connect(c.etcd_endpoints)
        try:
            old, token = await written_leader(client, timeout=30)
            await trio.sleep(0.5)  # the followers reach the leader
            killed = trio.current_time()
            c.signal(old.id, signal.SIGKILL)
            new, new_token = await written_leader(client, not_token=token, timeout=30)
            assert new.id != old.id and new_token > token
            assert trio.current_time() - killed < 8.0, "the new term waited for the dead leader's lease"
        finally:
            with trio.CancelScope(shield=True):
                await client.aclose()
