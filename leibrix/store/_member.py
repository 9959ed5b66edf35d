"""The embedded etcd member: a supervised child process that never outlives its master.

By default every master runs its own etcd member, so a three-master deployment is
also a three-member etcd quorum and needs nothing else installed. This module

* finds the ``etcd`` binary and refuses versions known to lose data
  (:func:`find_etcd_binary`, :func:`check_etcd_version`, from
  :mod:`leibrix.store._etcd_binary`);
* validates ``--initial-cluster name=peerURL,...`` (:func:`parse_initial_cluster`);
* describes one member (:class:`MemberConfig`) with two timing profiles,
  :data:`TEST_TIMINGS` (ready in ~0.15 s) and :data:`PRODUCTION_TIMINGS`;
* runs it (:func:`run_member`): start, wait until it answers, restart it with
  bounded backoff if it dies, give up (raise) after repeated failures so the
  master exits non-zero, and on cancellation SIGTERM then SIGKILL, always reaping.

The member listens where its URLs say (loopback by default). With
:class:`MemberTls` it serves clients and peers over TLS only, requiring a
certificate signed by its CA from both (``--client-cert-auth``,
``--peer-client-cert-auth``); its URLs are then ``https://``.

"Never outlives its master" is enforced by the kernel, not by us: the child
runs with ``PR_SET_PDEATHSIG=SIGKILL``, so a master killed with SIGKILL (which
runs no cleanup at all) still takes its member with it. Two details matter:

* The signal fires when the *thread* that spawned the child exits, so the spawn
  happens on the Trio thread (the main thread, alive as long as the master), not
  in one of Trio's worker threads, which retire after 10 idle seconds.
* The prctl is made by a tiny exec shim (``python -I -S -c ...``: prctl, check
  the parent is still there, exec etcd) rather than a ``preexec_fn``: a
  ``preexec_fn`` forces a real ``fork()`` whose at-fork handlers restart gRPC's
  event engine in the child, where ``close_fds`` has just closed its epoll fd, and
  the child aborts (seen under load). Without ``preexec_fn`` the spawn is a
  ``vfork``+``exec`` that runs no handlers and takes about a millisecond.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import trio

from leibrix.store._etcd import EtcdClient, EtcdError, EtcdTls
from leibrix.store._endpoints import parse_initial_cluster, validate_url
from leibrix.store._etcd_binary import (
    EtcdBinaryError,
    UnsafeEtcdVersion,
    check_etcd_version,
    find_etcd_binary,
    is_known_bad,
    parse_etcd_version,
)
from leibrix.store._writer import TxnLimits

__all__ = [
    "EMBEDDED_TXN_LIMITS",
    "EtcdBinaryError",
    "MEMBER_HEADROOM",
    "MemberConfig",
    "MemberFailed",
    "MemberState",
    "MemberTls",
    "PRODUCTION_TIMINGS",
    "TEST_TIMINGS",
    "Timings",
    "UnsafeEtcdVersion",
    "check_etcd_version",
    "find_etcd_binary",
    "is_known_bad",
    "parse_etcd_version",
    "parse_initial_cluster",
    "run_member",
    "validate_url",
]

#: What the master's writer sends to its own embedded member by default: about a
#: thousand epoch records per fenced transaction (etcd's defaults, 128 ops and
#: 1.5 MiB, would cut a large admission into many more round trips).
EMBEDDED_TXN_LIMITS = TxnLimits(max_ops=1024, max_request_bytes=4 * 1024 * 1024)
#: An embedded member accepts this many times the writer's limits, so an item the
#: writer never splits (an ``Atomic`` group with its compares) still fits.
MEMBER_HEADROOM = 2
#: Backend quota. etcd's default is 2 GiB; 100,000 epochs with history need far less,
#: but running out is an outage (etcd goes read-only), so leave headroom.
QUOTA_BACKEND_BYTES = 4 * 1024 * 1024 * 1024

_PR_SET_PDEATHSIG = 1

log = logging.getLogger(__name__)


class MemberFailed(Exception):
    """The member kept dying: restarts are exhausted and the master must exit non-zero."""


@dataclass(frozen=True, slots=True)
class Timings:
    """Raft timing of a member: how fast a dead Raft leader is replaced.

    etcd needs ``election_ms >= 5 * heartbeat_ms``. A lease held by a master is
    only revoked ``TTL + election_ms`` after a new Raft leader takes over (etcd
    extends every lease by one election timeout on promotion), so the election
    timeout adds directly to the worst-case master failover.
    """

    heartbeat_ms: int
    election_ms: int

    def __post_init__(self) -> None:
        if self.heartbeat_ms < 1:
            raise ValueError(f"heartbeat_ms must be >= 1, got {self.heartbeat_ms}")
        if self.election_ms < 5 * self.heartbeat_ms:
            raise ValueError(
                f"election_ms ({self.election_ms}) must be >= 5 x heartbeat_ms ({self.heartbeat_ms})"
            )


#: Tests: ready in ~0.15 s and re-elects in ~0.1–0.2 s on loopback.
TEST_TIMINGS = Timings(heartbeat_ms=10, election_ms=100)
#: Production (one host or a LAN, RTT well under 10 ms): with the default 1 s
#: master lease this bounds a kill -9 of the master whose member is the Raft
#: leader to about 0.3–0.6 s (Raft re-election) + 0.3 s (lease extension on
#: promotion) + 1 s (TTL) + 0.5 s (etcd's lease-expiry tick) ≈ 2.4 s worst case,
#: under the 3 s goal; a kill of a non-Raft-leader master costs ≤ 1.5 s. The
#: heartbeat is 6x shorter than the election timeout so one late heartbeat
#: (a slow fsync under load) does not trigger a Raft election. Use larger values
#: across a WAN (etcd's rule: election timeout >= 10 x RTT).
PRODUCTION_TIMINGS = Timings(heartbeat_ms=50, election_ms=300)


@dataclass(slots=True)
class MemberState:
    """Live facts about a supervised member, updated by :func:`run_member` (for status pages and tests).

    ``pid`` is the running child's pid (``None`` between restarts), ``starts``
    counts spawns, ``last_exit`` describes the last unexpected exit.
    """

    pid: int | None = None
    starts: int = 0
    last_exit: str | None = None


@dataclass(frozen=True, slots=True)
class MemberTls:
    """The member's TLS files: its certificate and key, and the CA its clients' and peers' certificates need.

    One certificate serves clients, peers, and the member as a peer's client,
    so it must name the member's hosts (SAN DNS or IP) and, if it carries an
    extended key usage, allow both ``serverAuth`` and ``clientAuth``.
    """

    cert: str
    key: str
    ca: str

    def args(self) -> list[str]:
        """etcd's flags for client and peer TLS with certificates required on both."""
        return [
            f"--cert-file={self.cert}", f"--key-file={self.key}", f"--trusted-ca-file={self.ca}",
            "--client-cert-auth",
            f"--peer-cert-file={self.cert}", f"--peer-key-file={self.key}", f"--peer-trusted-ca-file={self.ca}",
            "--peer-client-cert-auth",
        ]

    def client(self) -> EtcdTls:
        """How a client with the member's own certificate dials it (the supervisor's readiness probe)."""
        return EtcdTls(self.ca, self.cert, self.key)


@dataclass(frozen=True, slots=True)
class MemberConfig:
    """Everything needed to run one etcd member.

    ``initial_cluster`` maps member name to peer URL; empty means a one-member
    cluster of just this member. ``peer_url``/``client_url`` are both listened on
    and advertised. The data directory decides "new cluster" versus "rejoin": a
    member whose ``data_dir`` already holds data restarts with it and ignores
    the bootstrap flags. ``txn_limits`` are the limits the master's writer
    keeps to; the member is started accepting :data:`MEMBER_HEADROOM` times
    more (``None``: etcd's own defaults, as an operator's cluster runs).
    ``tls``: serve clients and peers over TLS (every URL then ``https://``).
    """

    name: str
    data_dir: Path
    client_url: str
    peer_url: str
    initial_cluster: Mapping[str, str] = field(default_factory=dict)
    cluster_token: str = "leibrix"
    timings: Timings = PRODUCTION_TIMINGS
    binary: str | None = None
    allow_unsafe: bool = False
    quota_bytes: int = QUOTA_BACKEND_BYTES
    txn_limits: TxnLimits | None = EMBEDDED_TXN_LIMITS
    tls: MemberTls | None = None
    #: consecutive failed starts/crashes before :func:`run_member` gives up
    max_restarts: int = 5
    #: how long the member must stay up for the failure count to reset
    stable_after: float = 30.0
    #: seconds between SIGTERM and SIGKILL on shutdown
    stop_grace: float = 2.0
    #: seconds a (re)started single-member cluster has to answer before the start
    #: counts as failed (a member of a multi-member cluster waits for its peers
    #: as long as its process lives)
    start_timeout: float = 30.0

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name or ""):
            raise ValueError(f"member name {self.name!r}: use letters, digits, '.', '_' and '-'")
        validate_url(self.client_url, what="client URL")
        validate_url(self.peer_url, what="peer URL")
        scheme = "https" if self.tls else "http"
        urls = {"client URL": self.client_url, "peer URL": self.peer_url,
                **{f"initial-cluster peer URL of {n}": u for n, u in self.initial_cluster.items()}}
        for what, url in urls.items():
            if urlsplit(url).scheme != scheme:
                raise ValueError(f"{what} {url}: must be {scheme}:// "
                                 + ("with member TLS" if self.tls else "without member TLS (no certificate given)"))
        if self.initial_cluster:
            mine = self.initial_cluster.get(self.name)
            if mine is None:
                raise ValueError(
                    f"initial-cluster does not name this member {self.name!r} "
                    f"(it names {', '.join(self.initial_cluster)})"
                )
            if mine.rstrip("/") != self.peer_url.rstrip("/"):
                raise ValueError(
                    f"initial-cluster gives member {self.name!r} peer URL {mine}, "
                    f"but this member listens on {self.peer_url}"
                )
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")

    @property
    def max_txn_ops(self) -> int | None:
        """The member's ``--max-txn-ops`` (None: etcd's default)."""
        return None if self.txn_limits is None else self.txn_limits.max_ops * MEMBER_HEADROOM

    @property
    def max_request_bytes(self) -> int | None:
        """The member's ``--max-request-bytes`` (None: etcd's default)."""
        return None if self.txn_limits is None else self.txn_limits.max_request_bytes * MEMBER_HEADROOM

    @property
    def log_path(self) -> Path:
        """Where the member's own log goes: beside the data dir (etcd owns the data dir's contents)."""
        return self.data_dir.with_name(self.data_dir.name + ".etcd.log")

    def has_data(self) -> bool:
        """True if the data dir already holds a member (a restart must rejoin, not bootstrap)."""
        return (self.data_dir / "member").is_dir()

    def command(self, binary: str) -> list[str]:
        """The etcd command line for this member."""
        cluster = self.initial_cluster or {self.name: self.peer_url}
        args = [
            binary,
            f"--name={self.name}",
            f"--data-dir={self.data_dir}",
            f"--listen-client-urls={self.client_url}",
            f"--advertise-client-urls={self.client_url}",
            f"--listen-peer-urls={self.peer_url}",
            f"--initial-advertise-peer-urls={self.peer_url}",
            f"--heartbeat-interval={self.timings.heartbeat_ms}",
            f"--election-timeout={self.timings.election_ms}",
            f"--quota-backend-bytes={self.quota_bytes}",
            # Keep 30 minutes of history: long enough for a follower's watch to
            # resume after a hiccup without a re-list, short enough to bound the db.
            "--auto-compaction-mode=periodic",
            "--auto-compaction-retention=30m",
            "--logger=zap",
            "--log-level=warn",
        ]
        if self.tls is not None:
            args += self.tls.args()
        if self.txn_limits is not None:
            args += [f"--max-txn-ops={self.max_txn_ops}", f"--max-request-bytes={self.max_request_bytes}"]
        if not self.has_data():
            args += [
                "--initial-cluster=" + ",".join(f"{n}={u}" for n, u in cluster.items()),
                f"--initial-cluster-token={self.cluster_token}",
                "--initial-cluster-state=new",
            ]
        return args


#: Runs in the child before etcd: set PDEATHSIG (it survives exec), make sure the
#: parent did not die before that took effect, then become etcd (same pid).
_EXEC_SHIM = (
    "import ctypes, os, sys\n"
    f"ctypes.CDLL(None).prctl({_PR_SET_PDEATHSIG}, {int(signal.SIGKILL)}, 0, 0, 0)\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class _Child:
    """One running etcd process, waited on through a pidfd so the Trio loop never blocks."""

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self.popen = popen
        self.pid = popen.pid
        self._pidfd = os.pidfd_open(popen.pid)

    async def wait(self) -> int:
        """Wait for exit and reap; returns the exit status (negative: killed by that signal)."""
        if self.popen.returncode is None:
            await trio.lowlevel.wait_readable(self._pidfd)
        return self.popen.wait()

    def signal(self, sig: int) -> None:
        """Send ``sig`` unless the process has already been reaped."""
        if self.popen.returncode is None:
            try:
                self.popen.send_signal(sig)
            except ProcessLookupError:
                pass

    def close(self) -> None:
        """Release the pidfd (after the process has been reaped)."""
        if self._pidfd >= 0:
            trio.lowlevel.notify_closing(self._pidfd)
            os.close(self._pidfd)
            self._pidfd = -1

    async def stop(self, grace: float) -> int:
        """SIGTERM, then SIGKILL after ``grace`` seconds; always reaps. Safe to call when dead."""
        try:
            self.signal(signal.SIGTERM)
            with trio.move_on_after(grace):
                return await self.wait()
            self.signal(signal.SIGKILL)
            return await self.wait()
        finally:
            self.close()


def _spawn(cfg: MemberConfig, binary: str) -> _Child:
    try:
        cfg.data_dir.parent.mkdir(parents=True, exist_ok=True)
        log_file = open(cfg.log_path, "ab")  # noqa: SIM115 - closed below, after the fork
    except OSError as exc:
        raise MemberFailed(f"etcd member {cfg.name!r}: cannot prepare {cfg.log_path}: {exc}") from None
    with log_file:
        # Deliberately synchronous on the Trio thread: see the module docstring
        # (PDEATHSIG follows the spawning thread). vfork+exec takes ~1 ms.
        popen = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _EXEC_SHIM, str(os.getpid()), *cfg.command(binary)],
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            start_new_session=True,  # a Ctrl-C to the master's terminal is the master's to handle
        )
    return _Child(popen)


def _log_tail(cfg: MemberConfig, lines: int = 8) -> str:
    try:
        text = cfg.log_path.read_text(errors="replace")
    except OSError:
        return ""
    tail = text.strip().splitlines()[-lines:]
    return ("\n  " + "\n  ".join(tail)) if tail else ""


async def _wait_serving(cfg: MemberConfig, child: _Child) -> bool:
    """Poll the client URL until the member answers (True) or the process exits (False).

    "Answers" means a Maintenance.Status round trip. etcd serves clients only
    once the member has joined its cluster, so in a new multi-member cluster
    this waits for a quorum of members to be running; meanwhile a warning is
    logged every 10 s naming the peers it waits for.
    """
    async with trio.open_nursery() as nursery:
        exited = trio.Event()

        async def watch_exit() -> None:
            await child.wait()
            exited.set()
            nursery.cancel_scope.cancel()

        nursery.start_soon(watch_exit)
        next_warning = trio.current_time() + 10
        while not exited.is_set():
            try:
                client = await EtcdClient.connect([cfg.client_url], timeout=0.5,
                                                  tls=cfg.tls.client() if cfg.tls else None)
            except EtcdError:
                if len(cfg.initial_cluster) > 1 and trio.current_time() >= next_warning:
                    next_warning += 10
                    log.warning(
                        "etcd member %r is waiting to join its cluster (peers: %s)",
                        cfg.name,
                        ", ".join(f"{n}={u}" for n, u in cfg.initial_cluster.items() if n != cfg.name),
                    )
                await trio.sleep(0.02)
                continue
            await client.aclose()
            nursery.cancel_scope.cancel()
            return True
    return False


async def run_member(
    cfg: MemberConfig,
    *,
    state: MemberState | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run and supervise the member until cancelled; ``started(client_url)`` once it answers.

    In a new multi-member cluster "answers" needs a quorum of members running
    (etcd serves clients only after joining), so start the masters together.

    A member that exits is restarted after a backoff (0.1 s doubling to 5 s);
    after ``max_restarts`` consecutive failures (a failure is a start that never
    answers or a crash within ``stable_after`` seconds of starting)
    :class:`MemberFailed` is raised, with the tail of the member's log, so the
    master exits non-zero instead of serving without its store. Binary and
    version problems raise :class:`EtcdBinaryError` before anything starts. On
    cancellation the member gets SIGTERM, then SIGKILL after ``stop_grace``
    seconds, and is always reaped. ``state``, if given, is kept current.
    """
    state = state if state is not None else MemberState()
    binary = find_etcd_binary(cfg.binary)
    await check_etcd_version(binary, allow_unsafe=cfg.allow_unsafe)
    failures = 0
    started = False
    while True:
        child = _spawn(cfg, binary)
        state.pid = child.pid
        state.starts += 1
        began = trio.current_time()
        serving = False
        try:
            # A member of a multi-member cluster may legitimately wait for its
            # peers for as long as it takes; a lone member must answer quickly.
            alone = len(cfg.initial_cluster) <= 1
            with trio.move_on_after(cfg.start_timeout if alone else math.inf):
                serving = await _wait_serving(cfg, child)
            if serving:
                if not started:
                    task_status.started(cfg.client_url)
                    started = True
                status = await child.wait()
                how = f"exited with status {status}"
            else:
                how = (
                    "did not start serving"
                    if child.popen.returncode is None
                    else (f"exited with status {child.popen.returncode} before serving")
                )
        finally:
            with trio.CancelScope(shield=True):
                await child.stop(cfg.stop_grace)
            state.pid = None
        state.last_exit = how
        if not started:
            # The very first start failing is a configuration problem (port in
            # use, unreadable data dir, bad flags): retrying cannot fix it.
            raise MemberFailed(f"etcd member {cfg.name!r} {how} (log: {cfg.log_path}){_log_tail(cfg)}")
        if serving and trio.current_time() - began >= cfg.stable_after:
            failures = 0
        failures += 1
        if failures > cfg.max_restarts:
            raise MemberFailed(
                f"etcd member {cfg.name!r} {how}; gave up after {failures} consecutive failures "
                f"(log: {cfg.log_path}){_log_tail(cfg)}"
            )
        await trio.sleep(min(5.0, 0.1 * 2 ** (failures - 1)))
