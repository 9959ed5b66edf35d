"""Lease keepalives sent to every member when the current one is slow: :func:`hedged_keepalive`.

A member whose Raft leader just died holds a keepalive until it learns the
new leader and forwards it there; the member that *is* the new leader answers
as soon as it is elected. So a keepalive goes to the client's current
endpoint first and, if no answer came within :data:`HEDGE_AFTER` seconds, to
every other member too; the first answer wins. The attempts' threads use the
client's own limiter (``_keepalive_threads``), so keepalives stuck behind a
dead Raft leader never take the threads every other call needs.
"""

from __future__ import annotations

from typing import Any, Protocol

import etcd3.etcdrpc as rpc
import grpc
import trio

from leibrix.store._ops import EtcdError, EtcdUnavailable, LeaseLost

__all__ = ["HEDGE_AFTER", "KeepaliveClient", "hedged_keepalive"]

#: How long a keepalive waits on the current member before it is also sent to
#: every other member (the first answer wins).
HEDGE_AFTER = 0.1


class KeepaliveClient(Protocol):
    """What a keepalive uses of ``leibrix.store._etcd.EtcdClient``: its raw client, thread limiter and error mapping."""

    #: the ``etcd3`` client (``endpoint_in_use``, ``endpoints``)
    _raw: Any
    _keepalive_threads: trio.CapacityLimiter

    def _failed_quietly(self, exc: BaseException, *, bench: bool = True) -> EtcdError: ...


async def hedged_keepalive(client: KeepaliveClient, lease_id: int, deadline: float) -> int:
    """Refresh ``lease_id`` once through ``client``; its new TTL. :class:`LeaseLost` if it is gone.

    ``deadline`` bounds every attempt; the threads of abandoned attempts end by it.
    """
    request = rpc.LeaseKeepAliveRequest(ID=lease_id)
    first = client._raw.endpoint_in_use or next(iter(client._raw.endpoints.values()))
    others = [e for e in client._raw.endpoints.values() if e is not first]

    def refresh(endpoint: Any) -> int:
        try:
            stream = rpc.LeaseStub(endpoint.channel).LeaseKeepAlive(iter([request]), deadline)
            try:
                for resp in stream:
                    return int(resp.TTL)
                raise EtcdUnavailable("lease keepalive stream ended without an answer")
            finally:
                stream.cancel()
        except (grpc.RpcError, ValueError) as exc:
            raise client._failed_quietly(exc, bench=False) from None

    send, receive = trio.open_memory_channel[int | EtcdError](len(others) + 1)

    async def attempt(endpoint: Any) -> None:
        try:
            answer: int | EtcdError = await trio.to_thread.run_sync(
                refresh, endpoint, abandon_on_cancel=True, limiter=client._keepalive_threads
            )
        except EtcdError as exc:
            answer = exc
        send.send_nowait(answer)

    ttl: int | None = None
    failure: EtcdError | None = None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(attempt, first)
        pending, hedged = 1 + len(others), not others
        while pending and ttl is None:
            answer: int | EtcdError | None = None
            if hedged:
                answer = await receive.receive()
            else:
                with trio.move_on_after(HEDGE_AFTER):
                    answer = await receive.receive()
                if not isinstance(answer, int):
                    for endpoint in others:
                        nursery.start_soon(attempt, endpoint)
                    hedged = True
            if isinstance(answer, int):
                ttl = answer
            elif answer is not None:
                failure = answer
                pending -= 1
        nursery.cancel_scope.cancel()
    if ttl is None:
        assert failure is not None
        raise failure
    if ttl <= 0:
        raise LeaseLost(f"lease {lease_id:x} has expired or was revoked")
    return ttl
