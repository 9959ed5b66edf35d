"""The Master: one Trio task tree that runs etcd, serves gRPC and HTTP, and leads when elected.

The tree::

    Master.run
    ├── etcd member supervisor        leibrix.store._member.run_member (none with --etcd-endpoints)
    └── services                      cancelled first on shutdown, while etcd still runs
        ├── mirror                    watched copy of /leibrix/<cluster>/ (leader and followers)
        ├── rpc server                leibrix.api._server.GrpcServer
        ├── http server               leibrix.api._http.HttpServer
        ├── presence                  masters/<id> on this master's own lease
        ├── leader observer           who leads (for redirects, status, metrics)
        ├── dead-leader watch         another leader's process gone? revoke its lease (._dead_leader)
        ├── health probe              etcd answering? -> Health SERVING, /healthz, etcd_up
        └── election                  campaign; on winning, one leader nursery per term:
            └── term                  cancelled the moment the term ends (Term.lost or Fenced)
                ├── keepalive         leibrix.store._election.Election.keep_alive
                ├── leadership probe  a fenced write every lease TTL (proclaim)
                └── leader services   Parts.leader_services, in their listed order

**What runs inside** is decided in one place, the composition root
(:func:`leibrix.master._compose.compose`): it builds the ManagementService, the
worker stream service and the leader services from this master's etcd client,
mirror and configuration, and lists the leader services in their start order.

Shutdown (SIGTERM/SIGINT, :meth:`Master.shutdown`): report NOT_SERVING, resign
the term (a follower takes over in one watch round trip), drop the presence
key, cancel the services (open streams close), then stop the etcd member.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import trio
from google.protobuf.timestamp_pb2 import Timestamp

from leibrix.master._config import MasterConfig
from leibrix.wire._address import split_hostport
from leibrix.master._dead_leader import depose_dead_leader
from leibrix.store._election import Election, LeaderInfo, Term
from leibrix.domain._errors import Unavailable
from leibrix.store._etcd import EtcdClient, EtcdError, EtcdUnavailable, LeaseLost
from leibrix.store._member import EtcdBinaryError, MemberState, find_etcd_binary, run_member
from leibrix.api._server import GrpcServer, HealthFlag
from leibrix.api._http import HttpServer, Metrics
from leibrix.master._loop import LoopWatch
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Fenced, FencedWriter, Keys, Mirror, Table
from leibrix.store._term import TermContext
from leibrix.master._compose import Parts, compose
from leibrix.master._gc import pace_gc, quiet_gc

__all__ = ["Master", "StartupError"]

log = logging.getLogger(__name__)

#: Seconds between health probes of etcd (also the staleness bound of /healthz).
_PROBE_INTERVAL = 0.5
#: Pause before campaigning again after a term ended by a crashed leader service.
_CRASH_BACKOFF = 1.0
#: Longest a leaving leader waits for its successor's first write (inside the shutdown budget).
_HANDOVER_WAIT = 1.5
#: How long start-up waits for the etcd cluster to have a quorum.
_READY_TIMEOUT = 60.0


class StartupError(Exception):
    """The master cannot start with this configuration; nothing was started or created."""


#: How long a graceful shutdown lets leader services write before it resigns.
_BEFORE_RESIGN_S = 0.5


def _check_bindable(addr: tuple[str, int], what: str) -> None:
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound: {exc.strerror}"
            raise StartupError(f"{what} {addr[0]}:{addr[1]} {reason}") from None


def _check_data_dir(path: Path) -> None:
    if path.exists():
        if not path.is_dir():
            raise StartupError(f"--data-dir {path} exists and is not a directory")
        for item in (path, path / "etcd"):
            if item.exists() and not os.access(item, os.R_OK | os.W_OK | os.X_OK):
                raise StartupError(f"--data-dir {item} is not readable and writable by this user")
        return
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise StartupError(f"--data-dir {path} cannot be created: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise StartupError(f"--data-dir {path} cannot be created: {parent} is not writable by this user")


def preflight(config: MasterConfig) -> None:
    """Check everything that can be checked before starting anything: ports, data dir, etcd binary.

    Raises :class:`StartupError` (or ``ConfigError``), having created nothing.
    """
    _check_bindable(split_hostport(config.grpc_listen, what="--grpc-listen"), "--grpc-listen")
    _check_bindable(split_hostport(config.http_listen, what="--http-listen"), "--http-listen")
    if not config.embedded:
        return
    member = config.member_config()
    for url, what in ((member.client_url, "--etcd-client-url"), (member.peer_url, "--etcd-peer-url")):
        host_port = url.split("://", 1)[1].rstrip("/")
        _check_bindable(split_hostport(host_port, what=what), what)
    _check_data_dir(config.data_dir)
    try:
        find_etcd_binary(member.binary)
    except EtcdBinaryError as exc:
        raise StartupError(str(exc)) from None


class Master:
    """One master process's state and task tree; :meth:`run` it inside ``trio.run``.

    Public attributes: ``config``, ``keys``, ``metrics``, ``health``, ``etcd``
    (the :class:`EtcdClient`, set once running), ``mirror``, ``election``,
    ``leader`` (the last observed :class:`LeaderInfo`, or None),
    ``member_state`` (the embedded member's pid and restarts) and ``parts``
    (what the composition root built).
    """

    def __init__(self, config: MasterConfig, *, compose: Callable[[Master], Parts] = compose) -> None:
        """``compose`` builds what this master serves and runs while leading (tests pass their own)."""
        self.config = config
        self._compose = compose
        self.keys = Keys(config.cluster)
        self.metrics = Metrics()
        self.health = HealthFlag()
        self.member_state = MemberState()
        self.etcd: EtcdClient | None = None
        self.mirror: Mirror | None = None
        self.election: Election | None = None
        self.masters: Table[state_pb2.MasterRecord] | None = None
        self.leader: LeaderInfo | None = None
        #: What :attr:`compose` built, once :meth:`run` has connected to etcd.
        self.parts: Parts | None = None
        self.etcd_up = False
        self.started_at = Timestamp()
        self.started_at.GetCurrentTime()
        self._ctx: TermContext | None = None
        self._services_scope: trio.CancelScope | None = None
        self._stopping = False
        self._mirror_ready = False

    # -- what handlers ask ----------------------------------------------------------

    @property
    def is_leader(self) -> bool:
        """True while this master holds a valid term."""
        return self._ctx is not None and self._ctx.term.is_valid()

    def leader_context(self) -> TermContext:
        """The current term's context, or :class:`~leibrix.domain._errors.Unavailable` naming the leader.

        Every write RPC starts with this: on a follower the client gets
        UNAVAILABLE with trailing metadata ``leibrix-leader: <host:port>``.
        """
        ctx = self._ctx
        if ctx is not None and ctx.term.is_valid():
            return ctx
        leader = self.leader
        if leader is not None and leader.id != self.config.name:
            raise Unavailable(f"this master is a follower; the leader is {leader.id}", leader=leader.grpc_addr)
        raise Unavailable("no leader is elected right now; retry shortly")

    def leader_hint(self) -> str:
        """The leader's gRPC address when another master leads (for redirects), else ``""``."""
        leader = self.leader
        return leader.grpc_addr if leader is not None and leader.id != self.config.name else ""

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)`` for /healthz: healthy when etcd answers and the mirror is loaded."""
        healthy = self.etcd_up and self._mirror_ready and not self._stopping
        leader = self.leader
        return healthy, {
            "id": self.config.name,
            "etcd_up": self.etcd_up,
            "mirror_loaded": self._mirror_ready,
            "is_leader": self.is_leader,
            "leader": leader.id if leader else None,
            "term": leader.token if leader else 0,
            "stopping": self._stopping,
        }

    # -- running --------------------------------------------------------------------

    def _record(self) -> bytes:
        return state_pb2.MasterRecord(
            id=self.config.name,
            grpc_addr=self.config.advertise,
            http_addr=self.config.http_listen,
            started_at=self.started_at,
        ).SerializeToString()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until :meth:`shutdown` (or cancellation); ``started()`` once serving.

        Raises :class:`StartupError`/``ConfigError`` for a configuration
        that cannot work (before anything starts), and
        :class:`leibrix.store._member.MemberFailed` if the embedded etcd keeps dying.
        """
        cfg = self.config
        preflight(cfg)
        async with trio.open_nursery() as root:
            if cfg.embedded:
                await root.start(partial(run_member, cfg.member_config(), state=self.member_state))
            # The client's per-call deadline (5 s) suits large listings; leadership does
            # not depend on it: keepalives and writes are bounded by the term's own deadline.
            self.etcd = await EtcdClient.connect(cfg.endpoints, tls=cfg.etcd_tls)
            try:
                await self.etcd.wait_ready(deadline=trio.current_time() + _READY_TIMEOUT)
                await self._run_services(task_status)
            finally:
                with trio.CancelScope(shield=True):
                    await self.etcd.aclose()
            root.cancel_scope.cancel()

    async def _run_services(self, task_status: trio.TaskStatus[None]) -> None:
        assert self.etcd is not None
        cfg = self.config
        self.mirror = Mirror(self.etcd, self.keys)
        self.masters = self.mirror.table(Keys.MASTERS, state_pb2.MasterRecord.FromString)
        self.election = Election(self.etcd, key=self.keys.leader, record=self._record(), ttl=cfg.lease_ttl)
        self.parts = parts = self._compose(self)
        services = [parts.management, *parts.grpc_services]
        grpc_host, grpc_port = split_hostport(cfg.grpc_listen, what="--grpc-listen")
        http_host, http_port = split_hostport(cfg.http_listen, what="--http-listen")
        async with trio.open_nursery() as nursery:
            self._services_scope = nursery.cancel_scope
            await nursery.start(self.mirror.run)
            self._mirror_ready = True
            # before campaigning or taking any lease, so the one full collection stalls nothing
            quiet_gc()
            nursery.start_soon(pace_gc)
            await nursery.start(LoopWatch(self.metrics).run)
            await nursery.start(GrpcServer(services, self.health, authorizer=parts.authorizer, tls=parts.tls,
                                           observe=self.metrics.rpc.observe).serve, grpc_host, grpc_port)
            await nursery.start(HttpServer(self.metrics, self.health_report, parts.status).serve,
                                http_host, http_port)
            await nursery.start(self._presence)
            nursery.start_soon(self._observe_leader)
            nursery.start_soon(depose_dead_leader, cfg.name, lambda: self.leader, self.election.depose)
            await nursery.start(self._probe_health)
            nursery.start_soon(self._elect)
            log.info(
                "master %s serving: grpc %s, http %s, etcd %s",
                cfg.name, cfg.grpc_listen, cfg.http_listen, ",".join(cfg.endpoints),
            )
            task_status.started()

    async def shutdown(self) -> None:
        """Leave gracefully: NOT_SERVING, resign, wait for the handover, cancel the services.

        Waiting (at most ``_HANDOVER_WAIT``) until the next leader has made its
        first fenced write matters with an embedded member: stopping our member
        right away could take etcd's Raft leader down in the middle of the
        successor's campaign and stall it for seconds. Safe to call more than once and before :meth:`run` is
        serving. The etcd member is stopped by :meth:`run` after the services end.
        """
        if self._stopping:
            return
        self._stopping = True
        self.health.set(False)
        ctx = self._ctx
        if ctx is not None and self.election is not None:
            for service in self.parts.leader_services if self.parts is not None else ():
                if ctx.term.is_valid():
                    with trio.move_on_after(_BEFORE_RESIGN_S):
                        await service.before_resign(ctx)
            with trio.move_on_after(1.0):
                try:
                    await self.election.resign(ctx.term)
                    log.info("resigned term %d", ctx.token)
                except EtcdError as exc:
                    log.warning("could not resign term %d (%s); it expires with its lease", ctx.token, exc)
            await self._await_handover(ctx.token)
        if self._services_scope is not None:
            self._services_scope.cancel()

    async def _await_handover(self, token: int) -> None:
        """Return once another master leads and has written (or after ``_HANDOVER_WAIT``)."""
        assert self.etcd is not None and self.masters is not None
        if not any(name != self.config.name for name in self.masters):
            return  # nobody to hand over to
        with trio.move_on_after(_HANDOVER_WAIT):
            while True:
                try:
                    kv = await self.etcd.get(self.keys.leader)
                except EtcdError:
                    return
                # version >= 2: the successor's first leadership probe has been applied
                if kv is not None and kv.create_revision != token and kv.version >= 2:
                    log.info("handed over to %s", state_pb2.MasterRecord.FromString(kv.value).id)
                    return
                await trio.sleep(0.01)

    # -- services ---------------------------------------------------------------------

    async def _presence(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep ``masters/<id>`` alive on this master's own lease (listed by GetClusterStatus)."""
        assert self.etcd is not None
        etcd, ttl = self.etcd, self.config.lease_ttl
        key, lease, started = self.keys.master(self.config.name), 0, False
        try:
            while True:
                try:
                    if not lease:
                        lease = await etcd.lease_grant(max(ttl, 2))
                        await etcd.put(key, self._record(), lease=lease)
                    if not started:
                        task_status.started()
                        started = True
                    await trio.sleep(max(ttl, 2) / 3)
                    await etcd.lease_keepalive(lease)
                except LeaseLost:
                    lease = 0
                except EtcdUnavailable:
                    if not started:
                        raise
                    await trio.sleep(0.1)
        finally:
            if lease:
                with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                    try:
                        await etcd.lease_revoke(lease)
                    except EtcdError:
                        pass  # the key goes with the lease's expiry instead

    async def _observe_leader(self) -> None:
        assert self.election is not None
        async with self.election.observe() as changes:
            async for info in changes:
                self.leader = info
                self.metrics.term.set(info.token if info else 0)
                log.info("leader is now %s", f"{info.id} (term {info.token})" if info else "nobody")

    async def _probe_health(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        assert self.etcd is not None
        while True:
            started = trio.current_time()
            try:
                with trio.fail_after(max(1.0, self.config.lease_ttl)):
                    status = await self.etcd.status()
                self.etcd_up = status.leader_id != 0
                self.metrics.etcd_probe.observe(trio.current_time() - started)
            except (EtcdError, trio.TooSlowError) as exc:
                self.etcd_up = False
                error = "timeout" if isinstance(exc, trio.TooSlowError) else type(exc).__name__
                self.metrics.etcd_probe_errors.labels(error).inc()
            self.metrics.etcd_up.set(1 if self.etcd_up else 0)
            self.health.set(self.health_report()[0])
            task_status.started()
            task_status = trio.TASK_STATUS_IGNORED
            await trio.sleep(_PROBE_INTERVAL)

    async def _elect(self) -> None:
        assert self.election is not None
        while not self._stopping:
            term = await self.election.campaign()
            if self._stopping:
                await self.election.resign(term)
                return
            crashed = await self._lead(term)
            if crashed:
                with trio.move_on_after(1.0):
                    try:
                        await self.election.resign(term)
                    except EtcdError:
                        pass
                await trio.sleep(_CRASH_BACKOFF)

    async def _lead(self, term: Term) -> bool:
        """Lead for one term; returns True if a leader service crashed (the term is then resigned)."""
        assert self.etcd is not None and self.election is not None and self.mirror is not None
        ctx = TermContext(term, FencedWriter(self.etcd, term, self.mirror, limits=self.config.txn_limits), self.mirror, self.keys)
        log.info("elected: term %d", term.token)
        self.metrics.terms_won.inc()
        crashed = False
        try:
            async with trio.open_nursery() as nursery:

                async def end_with_term() -> None:
                    await term.lost.wait()
                    nursery.cancel_scope.cancel()

                nursery.start_soon(end_with_term)
                await nursery.start(self.election.keep_alive, term)
                # Act only on state at least as new as the election: a watch still delivering the last
                # term's writes would have this leader overwrite them from an older picture.
                await self.mirror.wait_for(term.token)
                self._ctx = ctx
                self.metrics.is_leader.set(1)
                nursery.start_soon(self._leadership_probe_loop, ctx)
                assert self.parts is not None
                for service in self.parts.leader_services:
                    await nursery.start(service.run_term, ctx)
        except* Fenced:
            log.warning("term %d ended by a rejected (fenced) write", term.token)
        except* Exception:
            log.exception("a leader service crashed; ending term %d", term.token)
            crashed = True
        finally:
            term.lost.set()
            self._ctx = None
            self.metrics.is_leader.set(0)
            log.info("term %d is over", term.token)
        return crashed

    async def _probe_leadership(self, ctx: TermContext) -> None:
        """One fenced write (proclaim our record): proves to etcd, and to observers, that we still lead."""
        assert self.election is not None
        if not ctx.term.is_valid() or not await self.election.proclaim(ctx.term, self._record()):
            raise Fenced(f"term {ctx.token} is over: the leader key changed hands")

    async def _leadership_probe_loop(self, ctx: TermContext) -> None:
        """Probe at once (the term's first write), then every lease TTL.

        Besides telling observers the leader is alive, the probe makes a term
        that was silently lost (say, after a SIGSTOP) end on its first
        rejected write even if the watch on the leader key lags.
        """
        while True:
            try:
                await self._probe_leadership(ctx)
            except EtcdUnavailable:
                pass  # keep_alive decides when an unreachable etcd ends the term
            await trio.sleep(self.config.lease_ttl)
