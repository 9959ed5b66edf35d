"""``leibrix worker``: run the reference worker process.

Example::

    leibrix worker --master 127.0.0.1:7070 --id w1 --memory 8GiB --cpu 4 --zone z1 --pool acme

``--master`` may be repeated (or comma-separated) to list every master: the
worker tries them in turn and follows ``leibrix-leader`` redirects, so it finds
the leader wherever it is.

The worker answers queries over Arrow Flight on ``--query-listen-addr``
(default: a free loopback port) and registers that address as its
``flight_addr`` label, so routes name it.

TLS (:mod:`leibrix.worker._tls`): ``--tls-ca/--tls-cert/--tls-key`` (all or
none) and ``--tls-server-name``, as the Rust worker takes them: the master
stream and the Flight server then both speak TLS with that certificate.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

import trio
import trio_asyncio

from leibrix.domain._logging import FORMATS, LEVELS, setup_logging
from leibrix.wire._labels import FLIGHT_ADDR
from leibrix.worker._agent import Agent, WorkerConfig
from leibrix.worker._budget import Budgets, parse_tenant_cpu
from leibrix.worker._flight import QueryService
from leibrix.worker._loader import Loader
from leibrix.worker._sizes import parse_size
from leibrix.worker._tls import WorkerTls

log = logging.getLogger("leibrix.worker")


def worker_command(masters: list[str], worker_id: str, *, memory: str = "1GiB", cpu: float = 1.0,
                   zone: str = "", pool: str = "", extra: tuple[str, ...] = ()) -> list[str]:
    """The command line that runs one reference worker with this interpreter.

    For whatever starts workers as child processes (``leibrix local``, tests,
    benchmarks), so the flags are spelled in one place.
    """
    cmd = [sys.executable, "-m", "leibrix", "worker", "--master", ",".join(masters), "--id", worker_id,
           "--memory", memory, "--cpu", str(cpu)]
    if zone:
        cmd += ["--zone", zone]
    if pool:
        cmd += ["--pool", pool]
    return [*cmd, *extra]


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"label {text!r}: expected KEY=VALUE")
    return key, value


def _listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` to listen on (port 0 allowed: a free one)."""
    host, sep, port = text.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise SystemExit(f"--query-listen-addr: {text!r} is not HOST:PORT")
    return host, int(port)


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the worker's arguments."""
    parser.add_argument("--master", action="append", required=True, metavar="HOST:PORT",
                        help="a master's gRPC address; repeat or comma-separate to list all masters")
    parser.add_argument("--id", required=True, help="worker id, unique in the cluster")
    parser.add_argument("--memory", type=_size, required=True, help="memory capacity, e.g. 8GiB or 512MiB")
    parser.add_argument("--cpu", type=_positive_float, required=True, help="CPU cores offered")
    parser.add_argument("--zone", default="", help="failure zone label (replicas spread across zones)")
    parser.add_argument("--pool", default="", help="tenant pool this worker serves (label `pool`)")
    parser.add_argument("--label", type=_label, action="append", default=[], metavar="KEY=VALUE",
                        help="extra label; repeatable")
    parser.add_argument("--addr", default="", help="address clients reach this worker at "
                        "(default: its Arrow Flight query address)")
    parser.add_argument("--parallel-loads", type=int, default=2, help="loads executed at once")
    parser.add_argument("--max-rows", type=int, default=5_000_000,
                        help="cap on generated rows per epoch for a LoadPlan that carries no read plan")
    parser.add_argument("--query-listen-addr", default="127.0.0.1:0", metavar="HOST:PORT",
                        help="Arrow Flight query address (port 0: a free one); registered as label flight_addr")
    parser.add_argument("--max-queries", type=int, default=4, help="queries executed at once")
    parser.add_argument("--tenant-cpu", default="", metavar="TENANT=CORES,...",
                        help="CPU share of named tenants: at most floor(CORES) of their queries (and loads) run at "
                        "once; reported as labels cpu_share/<TENANT> (see leibrix.worker._budget)")
    parser.add_argument("--tenant-cpu-default", type=_positive_float, default=None, metavar="CORES",
                        help="CPU share of tenants --tenant-cpu does not name (default: half of --cpu, at least 1; "
                        "a --pool worker's tenant gets all of --cpu)")
    parser.add_argument("--query-timeout", type=_positive_float, default=300.0,
                        help="seconds a query may run when its ticket sets no timeout_secs")
    parser.add_argument("--query-memory-limit-mb", type=int, default=1024,
                        help="largest result (MB) a query may materialise when its ticket sets no memory_limit_mb")
    parser.add_argument("--tls-ca", metavar="FILE", help="CA (PEM) the masters' certificates are checked against; "
                        "with --tls-cert/--tls-key (all or none): TLS to the master and on Arrow Flight")
    parser.add_argument("--tls-cert", metavar="FILE", help="this worker's certificate chain (PEM), naming its id")
    parser.add_argument("--tls-key", metavar="FILE", help="the private key (PEM) of --tls-cert")
    parser.add_argument("--tls-server-name", metavar="NAME",
                        help="name the masters' certificates must carry (default: the host dialled)")
    parser.add_argument("--log-level", default="info", type=str.lower, choices=LEVELS,
                        help="least severe level logged (default info)")
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="'text' lines for people or one JSON object per line ('json'); default text")


def run(args: argparse.Namespace) -> int:
    """Run the worker until it is drained (exit 0) or refused for good (exit 2)."""
    setup_logging(args.log_level, args.log_format)
    masters = [m.strip() for arg in args.master for m in arg.split(",") if m.strip()]
    try:
        tls = WorkerTls.from_flags(args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name)
    except (ValueError, OSError) as exc:
        print(f"leibrix worker: {exc}", file=sys.stderr)
        return 2
    try:
        shares = parse_tenant_cpu(args.tenant_cpu)
    except ValueError as exc:
        print(f"leibrix worker: --tenant-cpu: {exc}", file=sys.stderr)
        return 2
    parallel_loads = max(1, args.parallel_loads)
    budget = dict(default_share=args.tenant_cpu_default, pool=args.pool)
    config = WorkerConfig(
        masters=masters, worker_id=args.id, memory_bytes=args.memory, cpu_cores=args.cpu,
        zone=args.zone, pool=args.pool, addr=args.addr,
        labels=dict(args.label), max_parallel_loads=parallel_loads, tls=tls,
        budgets=Budgets(args.cpu, shares, cap=parallel_loads, **budget),
    )
    config.labels.update({f"cpu_share/{t}": f"{s:g}" for t, s in shares.items()})
    loader = Loader(memory_limit_bytes=args.memory, max_rows=args.max_rows, threads=max(1, int(args.cpu)))
    host, port = _listen(args.query_listen_addr)
    scheme = "grpc+tls" if tls else "grpc"
    service = QueryService(loader, f"{scheme}://{host}:{port}", max_queries=max(1, args.max_queries),
                           timeout_secs=args.query_timeout, memory_limit_mb=args.query_memory_limit_mb,
                           tls_certificates=tls.flight_certificates() if tls else None,
                           budgets=Budgets(args.cpu, shares, **budget))
    advertised = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    config.labels.setdefault(FLIGHT_ADDR, f"{advertised}:{service.port}")
    config.addr = config.addr or config.labels[FLIGHT_ADDR]
    log.info("serving Arrow Flight queries on %s://%s", scheme, config.labels[FLIGHT_ADDR])

    async def main() -> int:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_queries, service)
            async with trio_asyncio.open_loop():
                code = await Agent(config, loader).run()
            nursery.cancel_scope.cancel()
        return code

    try:
        return trio.run(main)
    except KeyboardInterrupt:
        return 130
    finally:
        loader.close()


async def serve_queries(service: QueryService, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Own the Flight server: ``serve()`` blocks in a thread until this task is cancelled, then the
    server shuts down (waiting for RPCs in flight) and the thread returns."""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.to_thread.run_sync, service.serve)
        task_status.started(service.port)
        try:
            await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(service.shutdown)
