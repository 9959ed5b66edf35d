"""The one door to etcd: a small Trio-native wrapper over the synchronous ``etcd3`` client.

Nothing else in Leibrix imports ``etcd3`` (but :mod:`leibrix.store._watch`,
the watches' half of this client). The client library is synchronous
(blocking gRPC calls), so every call here runs in a worker thread through
:func:`trio.to_thread.run_sync` with its own gRPC deadline: the Trio loop never
blocks, and a call abandoned by a cancelled caller still ends by its deadline
(nothing leaks for longer than ``timeout``). Watches are in
:mod:`leibrix.store._watch`.

**TLS.** ``connect(..., tls=EtcdTls(ca, cert, key))`` dials every endpoint
over TLS, trusting ``ca`` (the system's CAs when None) and presenting the
client certificate when given (etcd's ``--client-cert-auth``). An
``https://`` endpoint is dialled over TLS even without ``tls`` (system CAs,
no client certificate); an ``http://`` endpoint together with ``tls`` is
refused (``ValueError``), and members discovered at ``http://`` URLs are
left out. The files are read once, at :meth:`EtcdClient.connect`.

**Observation.** ``EtcdClient.observe``, when set, is called once per request
with ``(operation, seconds, error)``: the operation (``range``, ``put``,
``delete``, ``txn``, ...), the time the whole call took (every endpoint
tried), and ``None`` or the error's class name (``EtcdUnavailable``,
``EtcdRefused``). The metrics install it; nothing else depends on it.

The values and errors the client takes and raises are defined in
:mod:`leibrix.store._ops` and re-exported here, so callers import everything
etcd-shaped from this one module.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

import etcd3
import etcd3.etcdrpc as rpc
import etcd3.exceptions
import grpc
import trio

from leibrix.store._ops import (
    Compacted,
    Compare,
    Delete,
    EtcdError,
    EtcdRefused,
    EtcdUnavailable,
    KeyValue,
    LeaseLost,
    Member,
    Put,
    ServerStatus,
    TxnResult,
    WatchEvent,
    _compare_msg,
    _kv,
    _op_msg,
    op_size,
    prefix_end,
)
from leibrix.store._endpoints import EtcdTls, parse_endpoint
from leibrix.store._lease import hedged_keepalive
from leibrix.store._watch import WatchStream, open_watch

__all__ = [
    "Compacted", "Compare", "Delete", "EtcdClient", "EtcdError", "EtcdRefused", "EtcdTls", "EtcdUnavailable",
    "KeyValue", "LeaseLost", "Member", "Put", "ServerStatus", "TxnResult", "WatchEvent", "WatchStream",
    "op_size", "prefix_end",
]

T = TypeVar("T")

#: Page size for :meth:`EtcdClient.get_prefix`: bounds one Range response (a
#: 100,000-epoch cluster is listed in ~10 pages at one pinned revision).
_PAGE = 10_000
#: gRPC message limit for responses: a page of large records must fit.
_MAX_MESSAGE = 256 * 1024 * 1024
#: Default per-call deadline (seconds). A request a member accepted just before
#: its Raft leader died is dropped by Raft, and etcd only answers it with
#: "request timed out" after 5 s + 2 election timeouts; a Raft re-election takes
#: 0.3-0.7 s with the production timings, so after one second the call is
#: abandoned and retried (on another member) instead of waited out.
DEFAULT_CALL_TIMEOUT = 1.0
#: Deadline of one page of :meth:`EtcdClient.get_prefix` (a page is up to
#: ``_PAGE`` records, which can take longer than a point call to serve).
LIST_TIMEOUT = 5.0
#: Lease keepalives waiting for an answer at once; their threads use their own
#: limiter, so keepalives stuck behind a dead Raft leader never take the
#: threads every other call needs.
_KEEPALIVE_THREADS = 8

# Failures that prove the request never reached etcd's Raft log, so sending
# it again cannot apply it twice: the connection was never made, or the member
# refused it up front because it has no leader.
_NOT_SENT = ("failed to connect", "connection refused", "connect failed", "no leader", "dns resolution")

# gRPC codes that mean "this endpoint cannot answer now"; etcd also reports
# "no leader", "leader changed" and "request timed out" as UNAVAILABLE.
_UNAVAILABLE_CODES = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED}
)


def _never_sent(exc: EtcdUnavailable) -> bool:
    """True if the failure proves the request never reached etcd's Raft log."""
    text = str(exc).lower()
    return any(marker in text for marker in _NOT_SENT)


class EtcdClient:
    """Async etcd v3 client for one cluster (one or more endpoints, failing over between them).

    Create it with :meth:`connect` and close it with :meth:`aclose` (in a
    ``finally``). Every method raises :class:`EtcdUnavailable` when no endpoint
    answers within ``timeout`` seconds, and :class:`EtcdRefused` when etcd
    refuses the request itself.
    """

    def __init__(self, raw: Any, *, timeout: float, options: list[tuple[str, int]] | None = None,
                 tls: EtcdTls | None = None, credentials: grpc.ChannelCredentials | None = None) -> None:
        """Wrap an already-built ``etcd3`` client; use :meth:`connect` instead."""
        self._raw = raw
        self.timeout = timeout
        self._options = options or []
        self._tls = tls
        self._credentials = credentials
        self._keepalive_threads = trio.CapacityLimiter(_KEEPALIVE_THREADS)
        # each keepalive waiting in one of those threads may be hedged to every member
        self._keepalive_pool = cf.ThreadPoolExecutor(max_workers=4 * _KEEPALIVE_THREADS,
                                                     thread_name_prefix="etcd-keepalive")
        self._closed = False
        #: ``(operation, seconds, error class name or None)`` per request (see the module docstring)
        self.observe: Callable[[str, float, str | None], None] | None = None

    @classmethod
    async def connect(
        cls, endpoints: Sequence[str], *, timeout: float = DEFAULT_CALL_TIMEOUT, discover: bool = True,
        tls: EtcdTls | None = None,
    ) -> EtcdClient:
        """Open a client on ``endpoints`` (``host:port``, ``http://`` or ``https://host:port``) and check one answers.

        ``tls``: dial over TLS with these files (see the module doc); a
        member that refuses the connection (an untrusted CA, no client
        certificate where it requires one) raises :class:`EtcdUnavailable`.

        ``timeout`` is the deadline of one attempt of one call. With
        ``discover`` the client also learns every member's client URL from the
        cluster (``MemberList``) and appends them to ``endpoints``: a master
        given only its own embedded member can still reach the others. The
        given endpoints stay first in line; a failing one is skipped for a
        second while the next is used.

        Reads, leases and status calls that get no answer are retried at once
        on the next endpoint (each endpoint at most once per call). Writes
        (``txn``, ``put``, ``delete``) are retried only when the failure proves
        they never reached etcd (no connection, or the member had no leader):
        a write whose outcome is unknown raises :class:`EtcdUnavailable` and
        the caller decides.
        """
        if isinstance(endpoints, str):
            raise TypeError("endpoints must be a sequence of strings, not one string")
        if not endpoints:
            raise ValueError("at least one etcd endpoint is required")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        hosts = [parse_endpoint(e, tls) for e in endpoints]
        credentials = (tls or EtcdTls()).credentials() if any(secure for _, _, secure in hosts) else None
        options = [
            ("grpc.max_receive_message_length", _MAX_MESSAGE),
            ("grpc.max_send_message_length", _MAX_MESSAGE),
            # Detect a silently dead connection (peer frozen or its host gone,
            # no RST ever arrives) even under an idle watch: ping after 10 s of
            # silence (etcd refuses pings more often than every 5 s, its
            # --grpc-keepalive-min-time) and drop the connection if a ping goes
            # unanswered for 5 s. keepalive_timeout_ms alone does not do it in
            # grpcio 1.85; ping_timeout_ms is what closes the transport.
            ("grpc.keepalive_time_ms", 10_000),
            ("grpc.keepalive_timeout_ms", 5_000),
            ("grpc.http2.ping_timeout_ms", 5_000),
        ]
        # One endpoint must never be benched (there is nothing to fail over to);
        # with several, a failed one rests briefly so the next call tries another.
        rest = 0.0 if len(hosts) == 1 else 1.0
        raw = etcd3.MultiEndpointEtcd3Client(
            endpoints=[etcd3.Endpoint(h, p, secure=secure, creds=credentials if secure else None, time_retry=rest,
                                      opts=options) for h, p, secure in hosts],
            timeout=timeout,
            failover=True,
        )
        client = cls(raw, timeout=timeout, options=options, tls=tls, credentials=credentials)
        try:
            # Each failure benches that endpoint, so every endpoint gets one try.
            await client.status()
            if discover:
                await client.discover()
        except BaseException:
            with trio.CancelScope(shield=True):
                await client.aclose()
            raise
        return client

    @property
    def endpoints(self) -> list[str]:
        """Every endpoint the client knows (``host:port``), given ones first."""
        return list(self._raw.endpoints)

    async def discover(self) -> list[str]:
        """Add every member's client URLs to the endpoints (failover targets); returns the endpoints.

        A member that is down is still added: it is tried (and benched for a
        second if it does not answer) only when the endpoints before it fail.
        """
        members = await self.members()
        rest = 1.0
        for member in members:
            for url in member.client_urls:
                try:
                    host, port, secure = parse_endpoint(url, self._tls)
                except ValueError:
                    continue
                netloc = f"{host}:{port}"
                if netloc not in self._raw.endpoints:
                    if secure and self._credentials is None:
                        self._credentials = EtcdTls().credentials()
                    self._raw.endpoints[netloc] = etcd3.Endpoint(
                        host, port, secure=secure, creds=self._credentials if secure else None, time_retry=rest,
                        opts=self._options
                    )
        if len(self._raw.endpoints) > 1:
            # A single endpoint is never benched (nothing to fail over to); now there is.
            for endpoint in self._raw.endpoints.values():
                endpoint.time_retry = rest
        return self.endpoints

    async def aclose(self) -> None:
        """Close the gRPC channels (open watches end with EtcdUnavailable); later calls raise :class:`EtcdUnavailable`."""
        self._closed = True
        self._keepalive_pool.shutdown(wait=False, cancel_futures=True)
        await trio.to_thread.run_sync(self._raw.close)

    # -- plumbing -----------------------------------------------------------------

    def _failed(self, exc: BaseException) -> EtcdError:
        """Translate a library/gRPC failure, benching the endpoint if it did not answer."""
        if isinstance(exc, grpc.RpcError):
            code = exc.code()
            if code in _UNAVAILABLE_CODES:
                if len(self._raw.endpoints) > 1:
                    # The library's own failover step: bench this endpoint and
                    # drop its stubs (open watches end and are re-established by
                    # their consumers on the next endpoint). With one endpoint
                    # gRPC reconnects by itself and watches are left alone.
                    self._raw.endpoint_in_use.fail()
                    self._raw._clear_old_stubs()
                return EtcdUnavailable(f"etcd {code.name}: {exc.details()}")
            return EtcdRefused(code.name, exc.details() or "")
        if isinstance(exc, etcd3.exceptions.RevisionCompactedError):
            return Compacted(exc.compacted_revision)
        if isinstance(exc, etcd3.exceptions.WatchTimedOut):
            return EtcdUnavailable("etcd did not confirm the watch in time")
        if isinstance(exc, etcd3.exceptions.NoServerAvailableError):
            return EtcdUnavailable("no etcd endpoint available")
        if isinstance(exc, ValueError) and "closed" in str(exc).lower() and "channel" in str(exc).lower():
            return EtcdUnavailable("etcd client is closed")
        if isinstance(exc, etcd3.exceptions.Etcd3Exception):
            return EtcdUnavailable(f"etcd: {exc}")
        raise exc

    async def _call(self, fn: Callable[[], T], *, abandon_on_cancel: bool = True, retry: str = "always",
                    op: str = "other") -> T:
        """Run ``fn`` in a thread; on no answer, run it again on the next endpoint.

        ``retry``: ``"always"`` (idempotent calls), ``"unsent"`` (writes: only
        when the failure proves the request never reached etcd) or ``"never"``.
        Every endpoint gets at most one attempt per call, each bounded by the
        per-call deadline. ``op`` names the request for ``observe``.
        """
        observe = self.observe
        if observe is None:
            return await self._attempts(fn, abandon_on_cancel, retry)
        started = trio.current_time()
        try:
            out = await self._attempts(fn, abandon_on_cancel, retry)
        except EtcdError as exc:
            observe(op, trio.current_time() - started, type(exc).__name__)
            raise
        observe(op, trio.current_time() - started, None)
        return out

    async def _attempts(self, fn: Callable[[], T], abandon_on_cancel: bool, retry: str) -> T:

        def run() -> T:
            try:
                return fn()
            except (grpc.RpcError, etcd3.exceptions.Etcd3Exception, ValueError) as exc:
                raise self._failed(exc) from None

        attempts = 1 if retry == "never" else max(1, len(self._raw.endpoints))
        for attempt in range(attempts):
            try:
                # abandon_on_cancel: a cancelled caller returns at once; the thread
                # ends by its own gRPC deadline and its result is dropped. Calls
                # that create something we must undo (a watch) pass False.
                return await trio.to_thread.run_sync(run, abandon_on_cancel=abandon_on_cancel)
            except EtcdUnavailable as exc:
                last = attempt == attempts - 1
                if last or self._closed or (retry == "unsent" and not _never_sent(exc)):
                    raise
        raise AssertionError("unreachable")

    def _kv_call(self, method: str, request: Any, timeout: float | None = None) -> Any:
        return getattr(self._raw.kvstub, method)(request, timeout or self.timeout)

    # -- KV -----------------------------------------------------------------------

    async def get(self, key: str) -> KeyValue | None:
        """The key's current value and revisions, or ``None`` if it does not exist."""
        resp = await self._call(lambda: self._kv_call("Range", rpc.RangeRequest(key=key.encode())), op="range")
        return _kv(resp.kvs[0]) if resp.kvs else None

    async def get_with_revision(self, key: str) -> tuple[KeyValue | None, int]:
        """Like :meth:`get`, plus the store revision the answer reflects (to watch from revision + 1)."""
        resp = await self._call(lambda: self._kv_call("Range", rpc.RangeRequest(key=key.encode())), op="range")
        return (_kv(resp.kvs[0]) if resp.kvs else None), resp.header.revision

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under ``prefix``, sorted by key, as of one revision (also returned).

        Large ranges are read in pages pinned to the first page's revision, so
        the result is a consistent snapshot and watching from ``revision + 1``
        misses nothing.
        """
        end = prefix_end(prefix)

        def list_all() -> tuple[list[KeyValue], int]:
            out: list[KeyValue] = []
            start = prefix.encode()
            revision = 0
            while True:
                req = rpc.RangeRequest(key=start, range_end=end, limit=_PAGE, revision=revision)
                try:
                    resp = self._kv_call("Range", req, max(self.timeout, LIST_TIMEOUT))
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.OUT_OF_RANGE or not revision:
                        raise
                    # Our pinned revision was compacted between pages: start over.
                    out, start, revision = [], prefix.encode(), 0
                    continue
                if not revision:
                    revision = resp.header.revision
                out.extend(map(_kv, resp.kvs))
                if not resp.more or not resp.kvs:
                    return out, revision
                start = resp.kvs[-1].key + b"\0"

        return await self._call(list_all, op="range")

    async def put(self, key: str, value: bytes, *, lease: int = 0) -> int:
        """Unconditional write (tests and tools only: state writes go through a fenced txn)."""
        req = rpc.PutRequest(key=key.encode(), value=value, lease=lease)
        resp = await self._call(lambda: self._kv_call("Put", req), retry="unsent", op="put")
        return resp.header.revision

    async def delete(self, key: str) -> bool:
        """Delete one key unconditionally; ``True`` if it existed."""
        req = rpc.DeleteRangeRequest(key=key.encode())
        resp = await self._call(lambda: self._kv_call("DeleteRange", req), retry="unsent", op="delete")
        return resp.deleted > 0

    async def txn(
        self,
        compare: Sequence[Compare],
        success: Sequence[Put | Delete],
        failure: Sequence[Put | Delete] = (),
    ) -> TxnResult:
        """Atomically: if every compare holds apply ``success``, else ``failure``.

        etcd caps the number of ops per transaction (``--max-txn-ops``) and the
        request size (``--max-request-bytes``); exceeding either raises
        :class:`EtcdRefused` and applies nothing (size transactions with
        :func:`op_size`, as :class:`~leibrix.store._writer.FencedWriter` does).
        """
        req = rpc.TxnRequest(
            compare=[_compare_msg(c) for c in compare],
            success=[_op_msg(op) for op in success],
            failure=[_op_msg(op) for op in failure],
        )
        resp = await self._call(lambda: self._kv_call("Txn", req), retry="unsent", op="txn")
        return TxnResult(resp.succeeded, resp.header.revision)

    # -- leases -------------------------------------------------------------------

    async def lease_grant(self, ttl: int) -> int:
        """A new lease of ``ttl`` whole seconds (etcd's unit); returns its id."""
        if not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"lease ttl must be a whole number of seconds >= 1, got {ttl!r}")
        req = rpc.LeaseGrantRequest(TTL=ttl)
        resp = await self._call(lambda: self._raw.leasestub.LeaseGrant(req, self.timeout), op="lease_grant")
        if resp.error:
            raise EtcdRefused("LEASE_GRANT", resp.error)
        return resp.ID

    async def lease_keepalive(self, lease_id: int, *, timeout: float | None = None) -> int:
        """Refresh a lease once; returns the TTL it now has. Raises :class:`LeaseLost` if it is gone.

        Sent to the current endpoint first; if it has not answered after a
        tenth of a second it is also sent to every other member, and the first
        answer wins. A member whose Raft leader just died holds a keepalive
        until it learns the new leader and forwards it there; the member that
        *is* the new leader answers as soon as it is elected. ``timeout`` (the
        client's per-call deadline by default) bounds every attempt; the
        threads of abandoned attempts end by it.
        """
        return await hedged_keepalive(self, lease_id, timeout or self.timeout)

    async def lease_revoke(self, lease_id: int) -> None:
        """Revoke a lease, deleting every key attached to it. Revoking a gone lease is not an error."""
        req = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            await self._call(lambda: self._raw.leasestub.LeaseRevoke(req, self.timeout), op="lease_revoke")
        except EtcdRefused as exc:
            if exc.code != "NOT_FOUND":
                raise

    # -- watches ------------------------------------------------------------------

    def watch_prefix(self, prefix: str, *, start_revision: int) -> AbstractAsyncContextManager[WatchStream]:
        """Watch every key under ``prefix`` from ``start_revision`` on (inclusive).

        Yields a :class:`WatchStream` of event batches; the etcd watch is
        cancelled when the block exits, however it exits. Pair it with
        :meth:`get_prefix`: list at revision R, then watch from R + 1. A start
        revision etcd has compacted surfaces as :class:`Compacted` from the
        stream's ``receive`` (etcd accepts the watch, then cancels it).
        """
        return open_watch(self, prefix, prefix_end(prefix), start_revision)

    def watch_key(self, key: str, *, start_revision: int) -> AbstractAsyncContextManager[WatchStream]:
        """Watch exactly one key from ``start_revision`` on; see :meth:`watch_prefix`."""
        return open_watch(self, key, None, start_revision)

    def _failed_quietly(self, exc: BaseException, *, bench: bool = True) -> EtcdError:
        """Like :meth:`_failed` but never raises (watch reader threads, keepalive attempts)."""
        if not bench and isinstance(exc, grpc.RpcError):
            code = exc.code()
            if code in _UNAVAILABLE_CODES:
                return EtcdUnavailable(f"etcd {code.name}: {exc.details()}")
            return EtcdRefused(code.name, exc.details() or "")
        try:
            return self._failed(exc)
        except BaseException as other:
            return EtcdUnavailable(f"etcd watch failed: {other!r}")

    # -- cluster ------------------------------------------------------------------

    async def compact(self, revision: int) -> None:
        """Discard history before ``revision`` (watches starting earlier get :class:`Compacted`).

        The embedded members compact on their own (periodic, 30 min); this is
        for tools and tests.
        """
        req = rpc.CompactionRequest(revision=revision, physical=True)
        await self._call(lambda: self._kv_call("Compact", req), retry="unsent", op="compact")

    async def members(self) -> list[Member]:
        """The cluster's members as the answering endpoint knows them."""
        resp = await self._call(
            lambda: self._raw.clusterstub.MemberList(rpc.MemberListRequest(), self.timeout), op="member_list"
        )
        return [Member(m.ID, m.name, tuple(m.peerURLs), tuple(m.clientURLs)) for m in resp.members]

    async def status(self) -> ServerStatus:
        """Status of the answering member; ``leader_id == 0`` means it sees no Raft leader."""
        resp = await self._call(lambda: self._raw.maintenancestub.Status(rpc.StatusRequest(), self.timeout),
                                op="status")
        return ServerStatus(resp.version, resp.header.member_id, resp.leader, resp.raftTerm, resp.dbSize)

    async def wait_ready(self, *, deadline: float = math.inf) -> None:
        """Poll until a write round trip succeeds (the cluster has quorum and a leader).

        ``deadline`` is a :func:`trio.current_time` value; :class:`EtcdUnavailable`
        is raised past it. Used after starting members, before campaigning.
        """
        while True:
            try:
                await self._call(
                    lambda: self._kv_call("Range", rpc.RangeRequest(key=b"\0", serializable=False, limit=1)),
                    op="range")
                return
            except EtcdUnavailable:
                if trio.current_time() >= deadline:
                    raise
                await trio.sleep(0.05)
