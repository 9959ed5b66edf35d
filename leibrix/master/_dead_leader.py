"""Deposing a leader whose process is gone, instead of waiting out its lease.

A leader killed outright (kill -9, OOM, a crash) leaves its lease behind:
etcd keeps the leader key, and with it the cluster leaderless, until the lease
expires, which is up to a TTL plus etcd's expiry tick, and a further TTL when
the dead master's etcd member was also the Raft leader (a new Raft leader
renews every lease). A follower can know sooner, because a dead process no
longer listens: :func:`depose_dead_leader` holds one idle TCP connection to
the leader's advertised gRPC address; when it ends, the follower connects
again, and if connecting is *refused* :data:`REFUSALS` times in a row it
revokes the term's lease (:meth:`~leibrix.store._election.Election.depose`)
and the election proceeds at once.

Only a refusal counts, and only from an address this follower reached during
the same term: a host that is unreachable (a partition, a powered-off machine)
times out instead and is left to the lease, as is an address that never
answered (a wrong advertised address must not depose a healthy leader over
and over). Deposing is safe even when wrong: terms are fenced, so a live
leader deposed by mistake only loses its term.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from leibrix.store._election import LeaderInfo

__all__ = ["REFUSALS", "depose_dead_leader"]

log = logging.getLogger(__name__)

#: Refused connections in a row that prove the leader's process is gone.
REFUSALS = 2
#: Pause between two connection attempts, and how often the observed leader is looked at.
RETRY_S = 0.05
#: Bound of one connection attempt (a timeout is not a refusal: nothing is concluded from it).
CONNECT_TIMEOUT_S = 0.5
#: How long a revoke gets to show (the leader key deleted) before it is sent again.
DEPOSE_RETRY_S = 0.25


def _refused(exc: OSError) -> bool:
    """Whether a failed ``trio.open_tcp_stream`` was refused by every address it tried."""
    cause = exc.__cause__
    if isinstance(cause, BaseExceptionGroup):
        return all(isinstance(e, ConnectionRefusedError) for e in cause.exceptions)
    return isinstance(exc, ConnectionRefusedError) or isinstance(cause, ConnectionRefusedError)


async def _connect(addr: str) -> trio.SocketStream | bool:
    """A connection to ``host:port``; False when refused, True when it failed otherwise (or timed out)."""
    host, _, port = addr.rpartition(":")
    with trio.move_on_after(CONNECT_TIMEOUT_S):
        try:
            return await trio.open_tcp_stream(host.strip("[]"), int(port))
        except OSError as exc:
            return not _refused(exc)
    return True


async def depose_dead_leader(self_id: str, leader: Callable[[], LeaderInfo | None],
                             depose: Callable[[LeaderInfo], Awaitable[None]]) -> None:
    """Watch whoever else leads (``leader()``: the latest observed) and ``depose`` it once its process is gone.

    See the module docstring. Runs until cancelled.
    """
    while True:
        info = leader()
        if info is None or info.id == self_id or not info.grpc_addr:
            await trio.sleep(RETRY_S)
            continue
        conn = await _connect(info.grpc_addr)
        if not isinstance(conn, trio.SocketStream):
            await trio.sleep(RETRY_S)  # never reached in this term yet: nothing to conclude
            continue
        # Reached: hold the connection until it ends or someone else leads.
        async with conn:
            while leader() == info:
                with trio.move_on_after(RETRY_S):
                    try:
                        if not await conn.receive_some(4096):
                            break
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        break
        refusals = 0
        while leader() == info and refusals < REFUSALS:
            again = await _connect(info.grpc_addr)
            if isinstance(again, trio.SocketStream):
                await again.aclose()
                break  # it still listens (it closed our connection): watch again
            refusals = refusals + 1 if again is False else 0
            if refusals < REFUSALS:
                await trio.sleep(RETRY_S)
        if refusals >= REFUSALS and leader() == info:
            log.warning("leader %s (term %d) refuses connections at %s: its process is gone", info.id,
                        info.token, info.grpc_addr)
            while leader() == info:  # until our observer sees the key go (a revoke may fail: etcd re-elects)
                await depose(info)
                with trio.move_on_after(DEPOSE_RETRY_S):
                    while leader() == info:
                        await trio.sleep(RETRY_S)
