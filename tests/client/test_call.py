"""``call`` over several masters: a master that accepts connections but never answers (a stopped process)."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from leibrix.client._call import call
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
