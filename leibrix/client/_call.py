"""One unary ManagementService call to any master, following the leader redirect.

:func:`call` dials a master, makes one unary call and, when a follower answers
UNAVAILABLE with ``leibrix-leader`` trailing metadata, re-sends the call to
that leader (a few hops at most, so two confused masters cannot bounce a call
forever). grpclib is asyncio-only, so each call runs inside a trio-asyncio
loop and closes its channel in ``finally``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.events import RecvTrailingMetadata, listen
from grpclib.exceptions import GRPCError

from leibrix.wire._address import split_hostport
from leibrix.wire._grpc import LEADER_METADATA
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["call"]

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
