"""``leibrix local``: a development cluster of real master processes on this machine.

The masters run under a :class:`~leibrix.cli._cluster.LocalCluster`.
``leibrix local`` runs it in the foreground with three reference
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
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.cli import _sample
from leibrix.client._call import call
from leibrix.cli._cluster import LocalCluster, MasterProcess, spawn_tied, stop_process
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.cli._logging import add_arguments as add_log_arguments, setup_logging
from leibrix.worker._cmd import worker_command

__all__ = ["configure", "run"]

R = TypeVar("R")

HELP = "run a local dev cluster: masters on embedded etcd, 3 workers, sample datasets; data under ./data (or a tmp dir)"


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
