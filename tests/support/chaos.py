"""Fault helpers shared by the chaos tests and the store's Raft-leader-loss tests.

* :func:`production_etcd_cluster` — a 3-member etcd cluster on loopback with
  the production Raft timings (what a deployment runs), started in the
  caller's nursery and stopped by the caller;
* :func:`raft_leader` — which member is etcd's Raft leader right now, asked of
  each member directly.
"""

from __future__ import annotations

from pathlib import Path

import trio

from leibrix.store._etcd import EtcdClient, EtcdError
from leibrix.store._member import PRODUCTION_TIMINGS, Timings
from leibrix.store._ports import free_port_url
from tests.support.etcd import EtcdServer, member_config


async def production_etcd_cluster(
    nursery: trio.Nursery, directory: Path, size: int = 3, timings: Timings = PRODUCTION_TIMINGS
) -> list[EtcdServer]:
    """``size`` supervised members with ``timings``; returns once a write round trip succeeds."""
    peers = {f"p{i}": free_port_url() for i in range(size)}
    servers = [
        EtcdServer(member_config(directory, name, peer_url=url, initial_cluster=peers, timings=timings), nursery)
        for name, url in peers.items()
    ]
    async with trio.open_nursery() as starting:
        for server in servers:
            starting.start_soon(server.start)
    client = await EtcdClient.connect([s.endpoint for s in servers], discover=False)
    try:
        await client.wait_ready(deadline=trio.current_time() + 20)
    finally:
        await client.aclose()
    return servers


async def raft_leader(servers: list[EtcdServer], *, timeout: float = 10.0) -> EtcdServer:
    """The member that is etcd's Raft leader (asked of each member itself, until one says so)."""
    with trio.fail_after(timeout):
        while True:
            for server in servers:
                if not server.running:
                    continue
                try:
                    client = await EtcdClient.connect([server.endpoint], discover=False)
                except EtcdError:
                    continue
                try:
                    status = await client.status()
                finally:
                    await client.aclose()
                if status.leader_id and status.leader_id == status.member_id:
                    return server
            await trio.sleep(0.05)
