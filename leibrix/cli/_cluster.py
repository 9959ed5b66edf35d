"""Local clusters of real master processes: :class:`LocalCluster` and the child-process helpers it uses.

:class:`LocalCluster` starts N ``python -m leibrix master`` processes, each
with its own embedded etcd member, joined into one quorum with
``--initial-cluster`` — exactly what a production deployment runs, only on
loopback ports. It drives ``leibrix local``, the multi-master tests and
``bench.failover``, so what they measure is what ``make run`` starts. It can
stop, kill, pause (SIGSTOP) and resume masters, and always reaps every
process it started (each master's etcd member dies with its master through
the parent-death signal).
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from leibrix.store._member import PRODUCTION_TIMINGS, Timings, _Child
from leibrix.store._ports import free_hostport, free_port_url

__all__ = ["LocalCluster", "MasterProcess", "MasterSpec", "spawn_tied", "stop_process"]


#: Runs in each master child before the master itself: ask the kernel for SIGTERM
#: when our spawning thread dies (a master whose launcher was killed shuts down
#: gracefully instead of lingering), check the launcher is still there, then exec
#: the master (same pid). The technique of leibrix.store._member's member spawn.
_PARENT_DEATH_SHIM = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None).prctl(1, int(signal.SIGTERM), 0, 0, 0)\n"  # PR_SET_PDEATHSIG
    "if os.getppid() != int(sys.argv[1]):\n"
    "    os._exit(70)\n"
    "os.execv(sys.argv[2], sys.argv[2:])\n"
)


class MasterProcess:
    """One running child (a master, or a ``leibrix local`` worker): ``pid``, ``returncode``, signals, ``wait()``.

    Waited on through a pidfd, so the Trio loop never blocks.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._child = _Child(popen)
        self.pid = popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once the master has exited (negative: killed by that signal)."""
        return self._child.popen.poll()

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` unless the master has already been reaped."""
        self._child.signal(sig)

    async def wait(self) -> int:
        """Wait until the master exits and reap it; returns its exit status."""
        status = await self._child.wait()
        self._child.close()
        return status


def spawn_tied(command: list[str], log_path: Path) -> MasterProcess:
    """Spawn ``command`` (output appended to ``log_path``) so that it never outlives this process.

    The child gets SIGTERM if this process dies (the parent-death shim); call
    this on the Trio thread, because the parent-death signal follows the
    spawning *thread*. The child runs in its own session: a Ctrl-C on the
    terminal reaches only us, and we stop each child with one signal.
    """
    env = dict(os.environ)
    env.pop("LEIBRIX_CONFIG", None)
    with open(log_path, "ab") as log:
        popen = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _PARENT_DEATH_SHIM, str(os.getpid()), *command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            env=env,
            start_new_session=True,
        )
    return MasterProcess(popen)


async def stop_process(process: MasterProcess, *, timeout: float) -> int:
    """SIGTERM ``process`` and reap it (SIGKILL after ``timeout``); returns its exit status."""
    if process.returncode is None:
        process.send_signal(signal.SIGCONT)  # a paused process cannot handle SIGTERM
        process.send_signal(signal.SIGTERM)
        with trio.move_on_after(timeout):
            return await process.wait()
        process.send_signal(signal.SIGKILL)
    return await process.wait()


def _in_use(port: int) -> bool:
    """True if a loopback listener already holds ``port`` (a bind as the master and etcd do it fails)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


#: Restarts of a master whose gRPC or HTTP port was taken between choosing it and binding it.
_PORT_RETRIES = 3
#: The master's start-up errors for a port in use (its check before starting, or the bind itself), with the port.
_TAKEN = re.compile(r"--(?:grpc|http)-listen \S*:(\d+) is already in use"
                    r"|cannot listen: .*address \('[^']*', (\d+)\).*address already in use")


@dataclass(frozen=True, slots=True)
class MasterSpec:
    """Addresses and data dir of one local master (fixed for its lifetime, restarts included)."""

    name: str
    grpc: str
    http: str
    client_url: str
    peer_url: str
    data_dir: Path

    @property
    def log_path(self) -> Path:
        """The master's combined stdout/stderr."""
        return self.data_dir.with_name(self.data_dir.name + ".log")


class LocalCluster:
    """N masters on loopback forming one etcd quorum; use as ``async with LocalCluster(...)``.

    ``base_port`` None picks free ports; otherwise master ``i`` uses gRPC
    ``base_port + i``, HTTP ``8081 + i`` and etcd ``2379 + 10 i`` / ``2380 + 10 i``
    (the single-master layout then equals ``leibrix master``'s defaults), except
    that a port some other program already listens on (a system etcd on 2379,
    say) is replaced by a free one; :attr:`moved` says which, for the operator.
    ``timings``/``lease_ttl`` are passed to every master (tests use the fast
    test timings; the failover benchmark the production ones).
    """

    def __init__(
        self,
        directory: Path,
        size: int = 1,
        *,
        cluster: str = "local",
        timings: Timings = PRODUCTION_TIMINGS,
        lease_ttl: int | None = None,
        base_port: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        if size < 1:
            raise ValueError(f"size must be >= 1, got {size}")
        self.directory = Path(directory)
        self.cluster = cluster
        self.timings = timings
        self.lease_ttl = lease_ttl
        self.extra_args = extra_args
        self.specs: dict[str, MasterSpec] = {}
        #: One line per layout port that was busy: what it was for and the port taken instead.
        self.moved: list[str] = []
        for i in range(size):
            name = f"m{i + 1}"
            if base_port is None:
                grpc, http = free_hostport(), free_hostport()
                client, peer = free_port_url(), free_port_url()
            else:
                grpc = self._layout_port(base_port + i, f"{name} gRPC")
                http = self._layout_port(8081 + i, f"{name} HTTP")
                client = "http://" + self._layout_port(2379 + 10 * i, f"{name} etcd client")
                peer = "http://" + self._layout_port(2380 + 10 * i, f"{name} etcd peer")
            self.specs[name] = MasterSpec(name, grpc, http, client, peer, self.directory / name)
        self.processes: dict[str, MasterProcess] = {}

    def _layout_port(self, port: int, what: str) -> str:
        """``127.0.0.1:port``, or a free loopback address (noted in :attr:`moved`) if ``port`` is in use."""
        if not _in_use(port):
            return f"127.0.0.1:{port}"
        taken = free_hostport()
        self.moved.append(f"{what}: 127.0.0.1:{port} is in use by another program, using {taken} instead")
        return taken

    @property
    def names(self) -> list[str]:
        """Master names, ``m1`` .. ``mN``."""
        return list(self.specs)

    @property
    def etcd_endpoints(self) -> list[str]:
        """Client URLs of every member (for an ``EtcdClient`` watching the cluster)."""
        return [s.client_url for s in self.specs.values()]

    def command(self, name: str) -> list[str]:
        """The ``leibrix master`` command line of one master."""
        spec = self.specs[name]
        args = [
            sys.executable, "-m", "leibrix", "master",
            "--name", name,
            "--cluster", self.cluster,
            "--grpc-listen", spec.grpc,
            "--http-listen", spec.http,
            "--data-dir", str(spec.data_dir),
            "--etcd-client-url", spec.client_url,
            "--etcd-peer-url", spec.peer_url,
            "--etcd-heartbeat-ms", str(self.timings.heartbeat_ms),
            "--etcd-election-ms", str(self.timings.election_ms),
        ]
        if len(self.specs) > 1:
            args += ["--initial-cluster", ",".join(f"{s.name}={s.peer_url}" for s in self.specs.values())]
        if self.lease_ttl is not None:
            args += ["--lease-ttl", str(self.lease_ttl)]
        return [*args, *self.extra_args]

    async def start(self, name: str) -> MasterProcess:
        """Spawn one master (output appended to its log file); does not wait for it to serve.

        The master gets SIGTERM if this process dies, so it never outlives its
        launcher; the spawn runs on the Trio thread because the parent-death
        signal follows the spawning *thread*.
        """
        if name in self.processes and self.processes[name].returncode is None:
            raise RuntimeError(f"master {name} is already running")
        spec = self.specs[name]
        spec.data_dir.parent.mkdir(parents=True, exist_ok=True)
        self.processes[name] = process = spawn_tied(self.command(name), spec.log_path)
        await trio.lowlevel.checkpoint()
        return process

    async def start_all(self, *, timeout: float = 60.0) -> None:
        """Start every master and wait until each one reports healthy.

        A free port can be taken by another program between the moment it is
        chosen and the master's bind: a master that exits because its gRPC or
        HTTP port is in use is given another free port (noted in :attr:`moved`)
        and started again, a few times at most.
        """
        for name in self.specs:
            await self.start(name)
        with trio.fail_after(timeout):
            for name in self.specs:
                for attempt in range(_PORT_RETRIES + 1):
                    try:
                        await self.wait_healthy(name)
                        break
                    except RuntimeError:
                        if attempt == _PORT_RETRIES or not self._move_taken_port(name):
                            raise
                    await self.start(name)

    def _move_taken_port(self, name: str) -> bool:
        """After ``name`` exited: if its log says its gRPC or HTTP port was in use, take another; True if so."""
        found = _TAKEN.search(self.log_tail(name, lines=5))
        if found is None:
            return False
        spec = self.specs[name]
        port = found.group(1) or found.group(2)
        for field_name, what in (("grpc", "gRPC"), ("http", "HTTP")):
            if getattr(spec, field_name).endswith(f":{port}"):
                taken = free_hostport()
                self.moved.append(f"{name} {what}: {getattr(spec, field_name)} was taken before it listened, "
                                  f"using {taken} instead")
                self.specs[name] = replace(spec, **{field_name: taken})
                return True
        return False

    def healthz(self, name: str) -> tuple[int, bytes] | None:
        """GET /healthz of one master: ``(status, body)``, or None if it does not answer (blocking)."""
        try:
            with urllib.request.urlopen(f"http://{self.specs[name].http}/healthz", timeout=1.0) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except (OSError, ValueError):
            return None

    async def wait_healthy(self, name: str) -> None:
        """Poll /healthz until 200; raises RuntimeError (with the log tail) if the master exits first."""
        process = self.processes[name]
        while True:
            answer = await trio.to_thread.run_sync(self.healthz, name)
            if answer is not None and answer[0] == 200:
                return
            if process.returncode is not None:
                raise RuntimeError(f"master {name} exited with {process.returncode}:\n{self.log_tail(name)}")
            await trio.sleep(0.05)

    def log_tail(self, name: str, lines: int = 20) -> str:
        """The last lines of one master's log (for failure messages)."""
        try:
            text = self.specs[name].log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to a running master (SIGKILL, SIGSTOP, SIGCONT, SIGTERM...)."""
        process = self.processes[name]
        if process.returncode is None:
            process.send_signal(sig)

    async def stop(self, name: str, *, timeout: float = 10.0) -> int:
        """SIGTERM one master and wait for it (SIGKILL after ``timeout``); returns its exit status."""
        return await stop_process(self.processes[name], timeout=timeout)

    async def aclose(self) -> None:
        """Stop every master still running (gracefully, then by force) and reap them all."""
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for name in self.processes:
                    nursery.start_soon(lambda n=name: self.stop(n, timeout=6.0))

    async def __aenter__(self) -> LocalCluster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
