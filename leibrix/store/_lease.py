"""Lease keepalives: hedged across members (:func:`refresh_lease`), and kept up from threads (:class:`LeaseKeeper`).

**Hedging.** A member whose Raft leader just died holds a keepalive until it
learns the new leader and forwards it there; the member that *is* the new
leader answers as soon as it is elected. So a keepalive goes to the client's
current endpoint first and, if no answer came within :data:`HEDGE_AFTER`
seconds, to every other member too; the first answer wins. The attempts run on
the client's own keepalive thread pool, so keepalives stuck behind a dead Raft
leader never take the threads every other call needs.

**Off the event loop.** A leader's lease must not depend on its Trio loop
being responsive: a loop busy for longer than the lease (a large rebalancing
pass, a burst of work on a saturated machine) would otherwise send no
keepalive, etcd would expire the lease, and a healthy leader would lose its
term. :class:`LeaseKeeper` sends the keepalives from a thread of its own and
moves the term's deadline from there; the loop only reads it. A paused process
(SIGSTOP, a VM freeze) pauses that thread too, so the deadline still runs out
and the term still ends by the leader's own clock.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import threading
import time
from typing import Any, Protocol

import etcd3.etcdrpc as rpc
import grpc
import trio

from leibrix.store._ops import EtcdError, EtcdUnavailable, LeaseLost

__all__ = ["HEDGE_AFTER", "KeepaliveClient", "LeaseKeeper", "hedged_keepalive", "refresh_lease"]

log = logging.getLogger(__name__)

#: How long a keepalive waits on the current member before it is also sent to
#: every other member (the first answer wins).
HEDGE_AFTER = 0.1


class KeepaliveClient(Protocol):
    """What a keepalive uses of ``leibrix.store._etcd.EtcdClient``: its raw client, keepalive threads and error mapping."""

    #: the ``etcd3`` client (``endpoint_in_use``, ``endpoints``)
    _raw: Any
    _keepalive_threads: trio.CapacityLimiter
    _keepalive_pool: cf.ThreadPoolExecutor

    def _failed_quietly(self, exc: BaseException, *, bench: bool = True) -> EtcdError: ...


def refresh_lease(client: KeepaliveClient, lease_id: int, timeout: float) -> int:
    """Refresh ``lease_id`` once (blocking; hedged, see the module docstring); its new TTL.

    :class:`LeaseLost` if it is gone; :class:`EtcdUnavailable` if no member
    answered within ``timeout`` seconds, which also bounds every attempt.
    """
    request = rpc.LeaseKeepAliveRequest(ID=lease_id)
    first = client._raw.endpoint_in_use or next(iter(client._raw.endpoints.values()))
    others = [e for e in client._raw.endpoints.values() if e is not first]
    until = time.monotonic() + timeout

    def refresh(endpoint: Any) -> int:
        try:
            stream = rpc.LeaseStub(endpoint.channel).LeaseKeepAlive(iter([request]), max(0.001, until - time.monotonic()))
            try:
                for resp in stream:
                    return int(resp.TTL)
                raise EtcdUnavailable("lease keepalive stream ended without an answer")
            finally:
                stream.cancel()
        except (grpc.RpcError, ValueError) as exc:
            raise client._failed_quietly(exc, bench=False) from None

    pool = client._keepalive_pool
    attempts = [pool.submit(refresh, first)]
    done, _ = cf.wait(attempts, timeout=min(HEDGE_AFTER, timeout))
    if others and not any(f.exception() is None for f in done):
        attempts += [pool.submit(refresh, e) for e in others]
    failure: EtcdError = EtcdUnavailable(f"no member answered a keepalive of lease {lease_id:x} within {timeout:.2f}s")
    try:
        for attempt in cf.as_completed(attempts, timeout=max(0.0, until - time.monotonic())):
            try:
                ttl = attempt.result()
            except EtcdError as exc:
                failure = exc
                continue
            if ttl <= 0:
                raise LeaseLost(f"lease {lease_id:x} has expired or was revoked")
            return ttl
    except cf.TimeoutError:
        pass
    finally:
        for attempt in attempts:
            attempt.cancel()
    raise failure


async def hedged_keepalive(client: KeepaliveClient, lease_id: int, deadline: float) -> int:
    """:func:`refresh_lease` from Trio (a thread waits for it; cancelling abandons it, bounded by ``deadline``)."""
    return await trio.to_thread.run_sync(refresh_lease, client, lease_id, deadline, abandon_on_cancel=True,
                                         limiter=client._keepalive_threads)


class _Deadline(Protocol):
    """The term a :class:`LeaseKeeper` keeps: its ``deadline`` (the Trio clock) is moved by the keeper."""

    deadline: float


class LeaseKeeper:
    """Keeps one lease alive from threads of its own until :meth:`stop` (see the module docstring).

    Every ``interval`` seconds a keepalive is sent (at most ``in_flight`` wait
    for an answer at once, each bounded by the deadline); each acknowledged one
    moves ``term.deadline`` to its send time + ``ttl``, in Trio's clock
    (``clock_offset`` = ``trio.current_time() - time.perf_counter()``). Once
    the deadline has passed no keepalive is sent any more. :attr:`gone` is set
    when etcd says the lease no longer exists.
    """

    def __init__(self, client: KeepaliveClient, term: _Deadline, lease_id: int, *, ttl: float, interval: float,
                 in_flight: int, clock_offset: float) -> None:
        self._client = client
        self._term = term
        self._lease_id = lease_id
        self._ttl = ttl
        self._interval = interval
        self._offset = clock_offset
        self._slots = threading.BoundedSemaphore(in_flight)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = cf.ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=f"lease-{lease_id:x}")
        self._thread = threading.Thread(target=self._run, name=f"lease-{lease_id:x}", daemon=True)
        #: Set once etcd answered that the lease is gone (expired or revoked).
        self.gone = threading.Event()

    def _now(self) -> float:
        return time.perf_counter() + self._offset

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop sending (keepalives in flight end by the deadline; nobody waits for them)."""
        self._stop.set()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        next_at = self._now()
        while not self._stop.wait(max(0.0, next_at - self._now())):
            now = self._now()
            next_at = now + self._interval
            if now >= self._term.deadline:
                return  # the term is over by our own clock: the loop sees it too
            if not self._slots.acquire(blocking=False):
                continue  # every slot waits for etcd (no Raft leader): the next tick tries again
            try:
                self._pool.submit(self._refresh, now)
            except RuntimeError:  # stopped meanwhile
                self._slots.release()
                return

    def _refresh(self, sent: float) -> None:
        try:
            refresh_lease(self._client, self._lease_id, max(0.001, self._term.deadline - self._now()))
            with self._lock:
                self._term.deadline = max(self._term.deadline, sent + self._ttl)
        except LeaseLost:
            self.gone.set()
        except EtcdError as exc:
            log.info("lease keepalive failed (%s); retrying until the local deadline", exc)
        finally:
            self._slots.release()
