"""One unary gRPC call without the client's redirect-following, to see exactly what one master answers."""

from __future__ import annotations

from typing import Any

import grpclib.const
import trio_asyncio
from grpclib.client import Channel
from grpclib.events import RecvTrailingMetadata, listen
from grpclib.exceptions import GRPCError


async def raw_unary(addr: str, path: str, request: Any, reply: type) -> tuple[Any, GRPCError | None, dict[str, str]]:
    """One unary call; returns (reply or None, error or None, trailing metadata)."""
    host, port = addr.rsplit(":", 1)
    trailers: dict[str, str] = {}

    async def once() -> Any:
        channel = Channel(host, int(port))

        async def keep(event: RecvTrailingMetadata) -> None:
            trailers.update(event.metadata)

        listen(channel, RecvTrailingMetadata, keep)
        try:
            async with channel.request(path, grpclib.const.Cardinality.UNARY_UNARY, type(request), reply) as stream:
                await stream.send_message(request, end=True)
                try:
                    return await stream.recv_message(), None
                except GRPCError as exc:
                    return None, exc
        finally:
            channel.close()

    async with trio_asyncio.open_loop():
        response, error = await trio_asyncio.aio_as_trio(once)()
    return response, error, trailers
