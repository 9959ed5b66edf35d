"""``leibrix local``: a development cluster of real master processes on this machine.

:class:`LocalCluster` starts N ``python -m leibrix master`` processes, each
with its own embedded etcd member, joined into one quorum with
``--initial-cluster`` — exactly what a production deployment runs, only on
loopback ports. The same class drives the multi-master tests and
``bench.failover``, so what they measure is what ``make run`` starts. It can
stop, kill, pause (SIGSTOP) and resume masters, and always reaps every
process it started (each master's etcd member dies with its master through
the parent-death signal).

``leibrix local`` runs the cluster in the foreground with three reference
workers (child processes that, like the masters, die with the launcher), a
sample tenant and two sample datasets admitted through the real gRPC API:
a day-partitioned Iceberg table (about a million rows over the last seven
days, SQL catalog on SQLite) and a SQLite table, both written once under the
data dir by :mod:`leibrix.cli._sample` and named by their real catalog URIs.
It prints where to look (gRPC address, /metrics, /healthz, the sample epochs'
states, the ``leibrix status`` and ``leibrix query`` commands), and on Ctrl-C
stops the workers, then every master, gracefully.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.cli import _sample
from leibrix.client._call import call
from leibrix.store._member import PRODUCTION_TIMINGS, Timings, _Child, free_port_url
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.cli._logging import add_arguments as add_log_arguments, setup_logging
from leibrix.worker._cmd import worker_command

__all__ = ["LocalCluster", "MasterProcess", "MasterSpec"]

R = TypeVar("R")

HELP = "run a local dev cluster: masters on embedded etcd, 3 workers, sample datasets; data under ./data (or a tmp dir)"


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


def free_hostport() -> str:
    """A free loopback ``host:port`` (for masters, workers and benchmarks started on this machine)."""
    return free_port_url().removeprefix("http://")


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


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``leibrix local``."""
    parser.add_argument("--masters", type=int, default=1, help="number of masters (1 or 3 make sense; default 1)")
    place = parser.add_mutually_exclusive_group()
    place.add_argument("--data-dir", type=Path, default=Path("data"), help="where the cluster keeps its state (default ./data)")
    place.add_argument("--tmp", action="store_true", help="keep the state in a fresh temporary directory instead")
    parser.add_argument(
        "--free-ports",
        action="store_true",
        help="pick free ports instead of the fixed layout (gRPC 50051+i, HTTP 8081+i, etcd 2379+10i/2380+10i); "
        "without it, a layout port another program holds is replaced by a free one, and said so",
    )
    add_log_arguments(parser)  # passed on to every master and worker the cluster starts


#: The sample the dev cluster loads: a tenant and two datasets (see leibrix.cli._sample), two replicas each.
SAMPLE_TENANT = "demo"
_SAMPLE_REPLICATION = 2
_SAMPLE_WORKERS = 3
#: Bound on setting up the sample (writing it, workers registering, planning, loads) before the summary.
_SAMPLE_TIMEOUT = 90.0
_WORKER_STOP_TIMEOUT = 5.0


async def _call_leader(addr: str, rpc: Callable[[cp.ManagementServiceStub], Awaitable[R]]) -> R:
    """``leibrix.cli._status.call`` that waits out the moments without a leader (UNAVAILABLE, nothing listening)."""
    while True:
        try:
            reply, _ = await call(addr, rpc)
            return reply
        except GRPCError as exc:
            if exc.status is not Status.UNAVAILABLE:
                raise
        except OSError:
            pass
        await trio.sleep(0.2)


async def _load_sample(addr: str, workers: int, sample: _sample.Sample,
                       found: dict[str, list[cp.EpochStatus]]) -> None:
    """Create the sample tenant, admit the sample datasets and wait until every epoch is READY (or failed).

    Admission checks the pool's capacity, so it waits first until the
    leader sees all ``workers`` ACTIVE. ``found`` holds each dataset's
    epochs as last listed (also when the caller stops waiting).
    """
    while True:
        listed = await _call_leader(addr, lambda stub: stub.list_workers(cp.ListWorkersRequest()))
        if sum(w.state == cp.WorkerState.ACTIVE for w in listed.workers) >= workers:
            break
        await trio.sleep(0.2)
    await _call_leader(addr, lambda stub: stub.upsert_tenant_quota(cp.TenantQuota(tenant_id=SAMPLE_TENANT)))
    requests = _sample.admissions(sample, SAMPLE_TENANT, replication_factor=_SAMPLE_REPLICATION)
    for request in requests:
        await _call_leader(addr, lambda stub, r=request: stub.admit_dataset(r))
    done = (cp.EpochState.READY, cp.EpochState.FAILED)
    while True:
        for request in requests:
            listing = cp.ListEpochsRequest(tenant_id=SAMPLE_TENANT, dataset_id=request.dataset_id)
            found[request.dataset_id] = (await _call_leader(addr, lambda stub, q=listing: stub.list_epochs(q))).epochs
        if all(epochs and all(e.state in done for e in epochs) for epochs in found.values()):
            return
        await trio.sleep(0.2)


async def _after_masters_ready(cluster: LocalCluster, workers: dict[str, MasterProcess]) -> None:
    """Everything the dev cluster adds once its masters serve: workers, sample data, the summary.

    This is the one place later issues extend ``leibrix local``. Workers are
    added to ``workers`` as they start, so the caller reaps them whatever
    happens here. A sample that cannot be loaded in time is reported in the
    summary; the cluster keeps running.
    """
    masters = [s.grpc for s in cluster.specs.values()]
    for i in range(1, _SAMPLE_WORKERS + 1):
        wid = f"w{i}"
        log_flags = tuple(a for a in cluster.extra_args if a.startswith("--log-"))
        workers[wid] = spawn_tied(worker_command(masters, wid, zone=f"z{i}", memory="512MiB", extra=log_flags),
                                  cluster.directory / f"{wid}.log")
    first = cluster.specs[cluster.names[0]]
    datasets: dict[str, list[cp.EpochStatus]] = {}
    sample: _sample.Sample | None = None
    created = False
    problem = ""
    with trio.move_on_after(_SAMPLE_TIMEOUT) as waited:
        try:
            sample, created = await trio.to_thread.run_sync(_sample.ensure, cluster.directory)
            await _load_sample(first.grpc, len(workers), sample, datasets)
        except GRPCError as exc:
            problem = f"{exc.status.name}: {exc.message}"
        except OSError as exc:
            problem = f"cannot write the sample data under {cluster.directory}: {exc}"
    if waited.cancelled_caught:
        problem = f"not all epochs READY after {_SAMPLE_TIMEOUT:.0f} s"

    print(f"Leibrix local cluster '{cluster.cluster}': {len(cluster.specs)} master(s), data in {cluster.directory}")
    for spec in cluster.specs.values():
        print(f"  {spec.name}: gRPC {spec.grpc}   http://{spec.http}/metrics   http://{spec.http}/healthz")
        print(f"      etcd {spec.client_url}   log {spec.log_path}")
    print(f"Workers: {len(workers)} reference workers (512MiB, 1 core each)")
    for i, (wid, process) in enumerate(workers.items(), 1):
        alive = "running" if process.returncode is None else f"exited with {process.returncode}"
        print(f"  {wid}: zone z{i}, pid {process.pid}, {alive}   log {cluster.directory / f'{wid}.log'}")
    if sample is not None:
        _print_sample(sample, created, datasets, problem, first.grpc)
    elif problem:
        print(f"Sample: not loaded: {problem}")
    print(f"Status:  leibrix status --master {first.grpc}")
    print("Ctrl-C stops the cluster.", flush=True)


def _print_sample(sample: _sample.Sample, created: bool, datasets: dict[str, list[cp.EpochStatus]], problem: str,
                  grpc: str) -> None:
    """The sample part of the summary: the tables, each epoch's state and replicas, a query to run."""
    how = f"written in {sample.seconds:.1f} s" if created else "reused"
    day = sample.first_day.date()
    print(f"Sample: tenant '{SAMPLE_TENANT}', days {day} .. {(sample.end.date())} (exclusive), regions "
          f"{'/'.join(sample.regions)}, replication {_SAMPLE_REPLICATION}; data in {sample.directory} ({how})")
    print(f"  dataset '{sample.events_table}': Iceberg {sample.iceberg_uri} table {sample.namespace}.{sample.events_table}, "
          f"{sample.events:,} rows")
    print(f"  dataset '{sample.orders_table}': JDBC {sample.jdbc_uri} table {sample.orders_table}, {sample.orders:,} rows")
    for dataset, epochs in datasets.items():
        for e in sorted(epochs, key=lambda e: e.info.epoch_id):
            on = ",".join(sorted(r.worker_id for r in e.replicas))
            print(f"  {dataset} epoch {e.info.epoch_id}: {e.state.name} on {on or '-'}")
    if problem:
        print(f"  sample not fully loaded: {problem}")
    print(f"Query:   leibrix query --master {grpc} --tenant {SAMPLE_TENANT} --dataset {sample.events_table} "
          f"--start {day} --end {sample.end.date()} "
          f"\"SELECT region, count(*) AS n, round(sum(amount), 2) AS amount FROM {sample.events_table} GROUP BY region\"")


async def _run_local(args: argparse.Namespace, directory: Path) -> int:
    log_flags = (f"--log-level={args.log_level}", f"--log-format={args.log_format}")
    cluster = LocalCluster(directory, args.masters, base_port=None if args.free_ports else 50051, extra_args=log_flags)
    for line in cluster.moved:
        print(f"leibrix local: {line}", flush=True)
    workers: dict[str, MasterProcess] = {}
    async with cluster:
        try:
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                chosen = len(cluster.moved)
                try:
                    await cluster.start_all()
                except RuntimeError as exc:
                    print(f"leibrix local: error: {exc}", file=sys.stderr)
                    return 1
                for line in cluster.moved[chosen:]:  # ports taken while the masters started
                    print(f"leibrix local: {line}", flush=True)
                async with trio.open_nursery() as nursery:

                    async def watch(name: str) -> None:
                        status = await cluster.processes[name].wait()
                        print(f"master {name} exited with {status}; see {cluster.specs[name].log_path}", file=sys.stderr)
                        nursery.cancel_scope.cancel()

                    for name in cluster.names:
                        nursery.start_soon(watch, name)
                    nursery.start_soon(_after_masters_ready, cluster, workers)
                    await signals.__anext__()
                    print("stopping...", flush=True)
                    nursery.cancel_scope.cancel()
        finally:
            # Workers first: stopped masters would only make them retry.
            with trio.CancelScope(shield=True):
                async with trio.open_nursery() as nursery:
                    for process in workers.values():
                        nursery.start_soon(lambda p=process: stop_process(p, timeout=_WORKER_STOP_TIMEOUT))
    return 0


def run(args: argparse.Namespace) -> int:
    """Entry point of ``leibrix local``."""
    setup_logging(args.log_level, args.log_format)
    if args.masters < 1:
        print("leibrix local: error: --masters must be >= 1", file=sys.stderr)
        return 2
    if args.tmp:
        with tempfile.TemporaryDirectory(prefix="leibrix-local-") as tmp:
            return trio.run(_run_local, args, Path(tmp))
    return trio.run(_run_local, args, args.data_dir.resolve())
