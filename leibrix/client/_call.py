"""One unary ManagementService call to any master, following the leader redirect.

:func:`call` dials a master, makes one unary call and, when a follower answers
UNAVAILABLE with ``leibrix-leader`` trailing metadata, re-sends the call to
that leader (a few hops at most, so two confused masters cannot bounce a call
forever). grpclib is asyncio-only, so each call runs inside a trio-asyncio
loop and closes its channel in ``finally``.

``addr`` may name several masters, comma-separated: they are tried in order,
moving on only when one cannot be reached (``OSError``), does not answer
within ``timeout`` (a stopped or partitioned master; the request may then
reach the leader twice, which an admission's request id makes harmless) or
still answers UNAVAILABLE after its redirects (not leading and naming no
leader, or stepping down). Other errors are final: the call reached a master
that answered it. A master that missed a deadline is remembered as silent for
:data:`SILENT_S` seconds: calls meanwhile ask it last, and not at all once
another master has answered (during an election every live master answers
"no leader" at once, and a stopped one would cost each retry its whole
deadline). ``metadata`` (for instance a bearer token) is sent
with every request, redirects included; so is ``ssl`` (an ``ssl.SSLContext``,
see :func:`tls_context`) when the masters speak TLS.
"""

from __future__ import annotations

import ssl as _ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.events import RecvTrailingMetadata, SendRequest, listen
from grpclib.exceptions import GRPCError

from leibrix.wire._address import split_hostport
from leibrix.wire._grpc import LEADER_METADATA
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["SILENT_S", "call", "split_addresses", "tls_context"]

R = TypeVar("R")

#: Redirects followed before giving up.
_MAX_HOPS = 3
#: Seconds a master that missed a call's deadline is asked last, and only when no other master answered.
SILENT_S = 2.0
#: address -> until when it counts as silent (shared by every call of this process)
_silent: dict[str, float] = {}


async def call(
    addr: str,
    rpc: Callable[[cp.ManagementServiceStub], Awaitable[R]],
    *,
    timeout: float = 5.0,
    metadata: Mapping[str, str] | None = None,
    ssl: _ssl.SSLContext | None = None,
) -> tuple[R, str]:
    """Run ``rpc(stub)`` against the master at ``addr``, following leader redirects.

    ``addr`` is ``host:port`` or several of them comma-separated (tried in
    order, see the module docstring); ``timeout`` is each master's deadline,
    its redirects included. Returns ``(response, address that
    answered)``. Raises ``GRPCError`` for any other failure, ``OSError`` if no
    master listens at any of the addresses, ``ValueError`` for a malformed
    address.
    """
    addresses = split_addresses(addr)
    now = time.monotonic()
    quiet = [a for a in addresses if _silent.get(a, 0.0) <= now]
    last: BaseException | None = None
    answered = False  # some master answered (UNAVAILABLE: not leading, no leader known)
    for one in quiet + [a for a in addresses if a not in quiet]:
        if answered and one not in quiet:
            break  # a master that just missed its deadline is not waited for again to hear "no leader" once more
        try:
            reply = await _call(one, rpc, timeout, dict(metadata or {}), ssl)
            _silent.pop(one, None)
            return reply
        except BaseExceptionGroup as group:
            # trio-asyncio's loop nursery wraps the call's own error; callers want that error.
            exc = _single(group)
        except (OSError, GRPCError) as err:
            exc = err
        if not _try_next(exc):
            raise exc from None
        if isinstance(exc, TimeoutError):
            _silent[one] = time.monotonic() + SILENT_S
        answered = answered or isinstance(exc, GRPCError)
        last = exc
    assert last is not None
    raise last from None


def tls_context(ca: str | None = None, cert: str | None = None, key: str | None = None) -> _ssl.SSLContext:
    """A TLS context for the masters' gRPC port: trust ``ca`` (else the system CAs); present ``cert`` (mTLS)."""
    ctx = _ssl.create_default_context(_ssl.Purpose.SERVER_AUTH, cafile=ca)
    ctx.minimum_version = _ssl.TLSVersion.TLSv1_2
    if cert:
        ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def split_addresses(addr: str) -> list[str]:
    """The ``host:port`` addresses of a comma-separated list, each checked; ValueError when none or malformed."""
    addresses = [a.strip() for a in addr.split(",") if a.strip()]
    if not addresses:
        raise ValueError("no master address given (expected HOST:PORT[,HOST:PORT...])")
    for a in addresses:
        split_hostport(a, what="--master")
    return addresses


def _try_next(exc: BaseException) -> bool:
    """Whether another master may be asked after ``exc``: this one was unreachable, silent or unavailable.

    A deadline missed on the client's side is a ``TimeoutError`` (an ``OSError``); one the master
    enforced is DEADLINE_EXCEEDED.
    """
    return isinstance(exc, OSError) or (
        isinstance(exc, GRPCError) and exc.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED))


def _single(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _call(
    addr: str, rpc: Callable[[cp.ManagementServiceStub], Awaitable[R]], timeout: float, metadata: dict[str, str],
    ssl: _ssl.SSLContext | None = None,
) -> tuple[R, str]:
    async with trio_asyncio.open_loop():
        for _ in range(_MAX_HOPS + 1):
            host, port = split_hostport(addr, what="--master")
            trailers: dict[str, str] = {}

            async def once() -> Any:
                channel = Channel(host, port, ssl=ssl)

                async def keep(event: RecvTrailingMetadata) -> None:
                    trailers.update(event.metadata)

                listen(channel, RecvTrailingMetadata, keep)
                if metadata:

                    async def send(event: SendRequest) -> None:
                        event.metadata.update(metadata)

                    listen(channel, SendRequest, send)
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
