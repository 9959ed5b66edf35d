"""Operator commands that talk to a running master over gRPC (``leibrix status`` ...).

:func:`call` is the one client helper: it dials a master, makes one unary
ManagementService call and, when a follower answers UNAVAILABLE with
``leibrix-leader`` trailing metadata, re-sends the call to that leader (a few
hops at most, so two confused masters cannot bounce a call forever). grpclib
is asyncio-only, so each call runs inside a trio-asyncio loop and closes its
channel in ``finally``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.events import RecvTrailingMetadata, listen
from grpclib.exceptions import GRPCError
from rich.console import Console
from rich.table import Table

from leibrix._config import ConfigError, split_hostport
from leibrix._grpc import LEADER_METADATA
from leibrix._proto import leibrix_cp as cp

__all__ = ["call", "render_status"]

HELP = "show the cluster: masters, leader and term, etcd members and health"

R = TypeVar("R")

#: Redirects followed before giving up.
_MAX_HOPS = 3


async def call(
    addr: str,
    rpc: Callable[[cp.ManagementServiceStub], Awaitable[R]],
    *,
    timeout: float = 5.0,
) -> tuple[R, str]:
    """Run ``rpc(stub)`` against the master at ``addr``, following leader redirects.

    Returns ``(response, address that answered)``. Raises ``GRPCError`` for
    any other failure, ``OSError`` if no master listens at the address.
    """
    try:
        return await _call(addr, rpc, timeout)
    except BaseExceptionGroup as group:
        # trio-asyncio's loop nursery wraps the call's own error; callers want that error.
        raise _single(group) from None


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _call(
    addr: str, rpc: Callable[[cp.ManagementServiceStub], Awaitable[R]], timeout: float
) -> tuple[R, str]:
    async with trio_asyncio.open_loop():
        for _ in range(_MAX_HOPS + 1):
            host, port = split_hostport(addr, what="--master")
            trailers: dict[str, str] = {}

            async def once() -> Any:
                channel = Channel(host, port)

                async def keep(event: RecvTrailingMetadata) -> None:
                    trailers.update(event.metadata)

                listen(channel, RecvTrailingMetadata, keep)
                try:
                    return await rpc(cp.ManagementServiceStub(channel, timeout=timeout))
                finally:
                    channel.close()

            try:
                return await trio_asyncio.aio_as_trio(once)(), addr
            except GRPCError as exc:
                leader = trailers.get(LEADER_METADATA)
                if exc.status is not Status.UNAVAILABLE or not leader or leader == addr:
                    raise
                addr = leader
        raise GRPCError(Status.UNAVAILABLE, f"gave up after {_MAX_HOPS} leader redirects (last: {addr})")


def render_status(status: cp.ClusterStatus, answered_by: str) -> Table:
    """The cluster status as a rich table (one row per master, then the etcd members)."""
    table = Table(
        title=(
            f"cluster {status.cluster or '?'}  term {status.term}  "
            f"{'healthy' if status.healthy else 'UNHEALTHY'}  etcd {status.etcd_version or '?'}  "
            f"(answered by {status.self_id} at {answered_by})"
        )
    )
    for column in ("kind", "name", "address", "role"):
        table.add_column(column)
    for m in status.masters:
        table.add_row("master", m.id, f"grpc {m.grpc_addr}  http {m.http_addr}", "LEADER" if m.is_leader else "follower")
    if status.leader.id and status.leader.id not in {m.id for m in status.masters}:
        table.add_row("master", status.leader.id, status.leader.grpc_addr, "LEADER (no presence key)")
    for e in status.etcd_members:
        table.add_row(
            "etcd", e.name or f"{e.id:x}", ", ".join(e.client_urls) or "(not started)", "raft leader" if e.is_leader else ""
        )
    return table


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``leibrix status``."""
    parser.add_argument(
        "--master", default="127.0.0.1:50051", metavar="HOST:PORT", help="any master's gRPC address (default 127.0.0.1:50051)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call (default 5)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``leibrix status``."""
    try:
        split_hostport(args.master, what="--master")
        status, answered = trio.run(
            lambda: call(args.master, lambda stub: stub.get_cluster_status(cp.GetClusterStatusRequest()), timeout=args.timeout)
        )
    except ConfigError as exc:
        print(f"leibrix status: error: {exc}", file=sys.stderr)
        return 2
    except GRPCError as exc:
        print(f"leibrix status: error: {args.master} answered {exc.status.name}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"leibrix status: error: cannot reach a master at {args.master}: {exc}", file=sys.stderr)
        return 1
    Console().print(render_status(status, answered))
    return 0 if status.healthy else 1
