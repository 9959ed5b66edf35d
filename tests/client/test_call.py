"""``call`` over several masters: a master that accepts connections but never answers (a stopped process)."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.api._cluster import ManagementService
from leibrix.api._server import trio_rpc
from leibrix.store._ports import free_hostport
from leibrix.client._call import call
from leibrix.domain._errors import Unavailable
from leibrix.master._compose import Parts
from leibrix.master._config import MasterConfig
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.cluster import leading, start_master


@pytest.fixture
def silent() -> Iterator[str]:
    """``host:port`` of a socket that listens (the kernel completes the handshake) and never reads or answers."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    try:
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


def status(stub: cp.ManagementServiceStub):
    return stub.get_cluster_status(cp.GetClusterStatusRequest())


async def test_a_master_that_does_not_answer_costs_one_deadline(
        nursery: trio.Nursery, etcd_server: Any, silent: str) -> None:
    master = await leading(await start_master(nursery, etcd_server.endpoint))
    live = master.config.grpc_listen
    began = time.monotonic()
    reply, answered = await call(f"{silent},{live}", status, timeout=0.5)
    assert answered == live and reply.leader.id == "m1"
    assert time.monotonic() - began >= 0.5  # the silent master had its deadline before the next was asked
    with pytest.raises(TimeoutError):
        await call(silent, status, timeout=0.5)


class NoLeader(cp.ManagementServiceBase):
    """A master between two terms: not leading and knowing no leader."""

    @trio_rpc
    async def get_cluster_status(self, request: cp.GetClusterStatusRequest) -> cp.ClusterStatus:
        raise Unavailable("no leader right now; retry")


async def _between_terms(nursery: trio.Nursery, etcd_endpoint: str) -> str:
    config = MasterConfig(name="f1", cluster="call-test", grpc_listen=free_hostport(), http_listen=free_hostport(),
                          etcd_endpoints=[etcd_endpoint], lease_ttl=1).validate()
    master = Master(config, compose=lambda m: Parts(management=ManagementService([NoLeader()])))
    await nursery.start(master.run)
    return config.grpc_listen


async def test_a_master_that_missed_its_deadline_is_not_waited_for_while_others_answer(
        nursery: trio.Nursery, etcd_server: Any, silent_counting: tuple[str, list[int]]) -> None:
    """During an election every live master answers "no leader" at once: a retry must not spend its whole
    deadline on a stopped master again to hear that."""
    silent, accepted = silent_counting
    follower = await _between_terms(nursery, etcd_server.endpoint)
    for _ in range(3):
        with pytest.raises(GRPCError) as info:
            await call(f"{silent},{follower}", status, timeout=0.3)
        assert info.value.status == Status.UNAVAILABLE
    assert len(accepted) == 1  # only the first call asked the silent master
    with pytest.raises(TimeoutError):  # named alone, it is still asked
        await call(silent, status, timeout=0.3)
    assert len(accepted) == 2


@pytest.fixture
async def silent_counting() -> AsyncIterator[tuple[str, list[int]]]:
    """Like ``silent``, counting the connections it accepted (and never answering them)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    accepted: list[int] = []
    held: list[trio.SocketStream] = []

    async def serve() -> None:
        while True:
            held.append(await listeners[0].accept())
            accepted.append(1)

    async with trio.open_nursery() as server:
        server.start_soon(serve)
        try:
            yield f"127.0.0.1:{listeners[0].socket.getsockname()[1]}", accepted
        finally:
            server.cancel_scope.cancel()
            for stream in [*held, *listeners]:
                await stream.aclose()
