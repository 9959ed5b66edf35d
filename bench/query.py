"""``python -m bench.query [--quick] [--json PATH]``: a query through Leibrix against DuckDB in-process.

Processes (all on loopback): a real master (``leibrix master``, embedded etcd)
and one reference worker (``leibrix worker``, Arrow Flight on a free port). A
dataset of 30 daily epochs is admitted and loaded; the same rows are then
rebuilt in this process from the plans (the worker's rows are deterministic)
into an in-process DuckDB, one table per epoch under one ``UNION ALL`` view,
exactly as the worker holds them. Both DuckDBs run one thread, so the
difference is what Leibrix adds: the route lookup (cached by the client),
the Flight round trip, the worker's SQL analysis and per-query view, and Arrow
transfer of the result.

Measured (p50 of many runs, after warm-up, results checked equal):

* ``query.day``: a selective one-day query (``--start``/``--end`` of one day,
  top keys by count), one epoch on one worker;
* ``query.month``: a 30-day aggregate (per-day count and mean), all epochs;
* ``query.<q>.leibrix_p50_ms`` / ``inprocess_p50_ms`` and their ratio
  ``query.<q>.overhead_vs_inprocess_p50``; ``query.overhead_vs_inprocess_p50``
  is the worse of the two. Goal: ≤ 2×.
* ``query.route_fetch_ms``: one uncached route lookup (GetDataset, ResolveRoute,
  ListEpochs on one channel), paid once per ``route_ttl`` per dataset.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timedelta, timezone

import trio

from bench._report import Report, options
from leibrix.cli._local import free_hostport
from leibrix.client._call import call
from leibrix.client._query import Client
from leibrix.client._requests import time_partitioned_admission
from leibrix.client._routes import fetch_coverage
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker import Loader
from leibrix.worker._cmd import worker_command

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 30
DAY_SQL = ("SELECT key, count(*) AS n, sum(value) AS total FROM orders "
           "WHERE ts >= TIMESTAMP '2026-11-15' AND ts < TIMESTAMP '2026-11-16' "
           "GROUP BY key ORDER BY n DESC, key LIMIT 10")
MONTH_SQL = ("SELECT date_trunc('day', ts) AS day, count(*) AS n, avg(value) AS mean "
             "FROM orders GROUP BY 1 ORDER BY 1")
_LOG = open(os.environ["LEIBRIX_BENCH_LOG"], "a") if os.environ.get("LEIBRIX_BENCH_LOG") else subprocess.DEVNULL


def _rpc(addr: str, method: str, request):
    reply, _ = trio.run(lambda: call(addr, lambda stub: getattr(stub, method)(request), timeout=30))
    return reply


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def _leading(http: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{http}/healthz", timeout=1) as r:
            return r.status == 200 and bool(json.loads(r.read()).get("is_leader"))
    except Exception:
        return False


def _local_copy(epochs: list[cp.EpochStatus], rows: int) -> Loader:
    """The worker's rows rebuilt from the same plans, in this process."""
    loader = Loader(memory_limit_bytes=4 << 30, max_rows=rows, threads=1)
    for e in epochs:
        a = pb.DataAssignmentEvent(dataset_id="orders", epoch_id=e.info.epoch_id, load_plan=pb.LoadPlan(
            plan_id=e.replicas[0].plan_id, destination_table_name=f"orders__{e.info.epoch_id}",
            expected_rows=rows, tenant_id="acme"))
        part = a.load_plan.resolved_partition
        part.time_column_name = "ts"
        part.time_range.start_inclusive.FromDatetime(e.info.time_range.start_inclusive)
        part.time_range.end_exclusive.FromDatetime(e.info.time_range.end_exclusive)
        for k, v in e.info.dimension_values.items():
            part.dimension_values[k] = v
        loader.load(a, tenant_id="acme")
    return loader


def _p50(fn, runs: int) -> tuple[float, object]:
    result = fn()  # warm-up
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times) * 1000, result


def run(report: Report, quick: bool) -> None:
    rows = 20_000 if quick else 100_000
    runs = 30 if quick else 100
    tmp = tempfile.mkdtemp(prefix="bench-query-")
    grpc, http = free_hostport(), free_hostport()
    master = subprocess.Popen(
        [sys.executable, "-m", "leibrix", "master", "--name", "bench", "--cluster", "bench", "--grpc-listen", grpc,
         "--http-listen", http, "--data-dir", tmp, "--etcd-client-url", "http://" + free_hostport(),
         "--etcd-peer-url", "http://" + free_hostport(), "--etcd-heartbeat-ms", "10", "--etcd-election-ms", "100",
         "--log-level", "warning"], stdout=_LOG, stderr=_LOG)
    children = [master]
    try:
        _wait(lambda: _leading(http), 60, "the master to lead")
        worker = subprocess.Popen(worker_command([grpc], "w1", memory="3GiB", cpu=1.0,
                                                 extra=("--max-rows", str(rows), "--log-level", "WARNING")),
                                  stdout=_LOG, stderr=_LOG)
        children.append(worker)
        _rpc(grpc, "upsert_tenant_quota", cp.TenantQuota(tenant_id="acme", admission_policy=cp.AdmissionPolicy.QUEUE))
        _wait(lambda: any(w.state == cp.WorkerState.ACTIVE
                          for w in _rpc(grpc, "list_workers", cp.ListWorkersRequest()).workers), 30, "the worker")
        _rpc(grpc, "admit_dataset", time_partitioned_admission(
            "acme", "orders", start=T0, end=T0 + timedelta(days=DAYS), dimensions={"region": ["eu"]},
            hints=cp.EstimateHints(bytes_per_epoch=rows * 64, rows_per_epoch=rows, cpu_cores_per_epoch=0.01)))

        def ready() -> bool:
            listed = _rpc(grpc, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
            return len(listed.epochs) == DAYS and all(e.state == cp.EpochState.READY for e in listed.epochs)

        began = time.perf_counter()
        _wait(ready, 300, f"{DAYS} epochs READY")
        report.add("query.load_s", time.perf_counter() - began, "s", f"{DAYS} epochs x {rows:,} rows, one worker")
        epochs = _rpc(grpc, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders")).epochs
        local = _local_copy(epochs, rows)
        cursor = local.cursor()
        cursor.execute("CREATE TEMP VIEW orders AS " + " UNION ALL ".join(
            f'SELECT * FROM "orders__{e.info.epoch_id}"' for e in sorted(epochs, key=lambda e: e.info.epoch_id)))
        route_ms = []
        for _ in range(5):
            t = time.perf_counter()
            trio.run(lambda: fetch_coverage(grpc, "acme", "orders", None, None))
            route_ms.append((time.perf_counter() - t) * 1000)
        report.add("query.route_fetch_ms", statistics.median(route_ms), "ms", "uncached; p50 of 5")
        worst = 0.0
        with Client(masters=[grpc], route_ttl=3600) as client:
            day = T0 + timedelta(days=14)
            cases = {
                "day": (DAY_SQL, day, day + timedelta(days=1), "1 epoch, top 10 keys of one day"),
                "month": (MONTH_SQL, None, None, f"{DAYS} epochs, per-day count and mean"),
            }
            for name, (sql, start, end, note) in cases.items():
                inproc, want = _p50(lambda: cursor.sql(sql).to_arrow_table(), runs)
                leibrix, got = _p50(lambda: client.query("acme", "orders", sql, start, end), runs)
                if got.to_pylist() != want.to_pylist():
                    report.note(f"{name}: RESULTS DIFFER (Leibrix {got.num_rows} rows vs in-process {want.num_rows})")
                report.add(f"query.{name}.leibrix_p50_ms", leibrix, "ms", note)
                report.add(f"query.{name}.inprocess_p50_ms", inproc, "ms", "the floor: same rows, same SQL, 1 thread")
                ratio = report.add(f"query.{name}.overhead_vs_inprocess_p50", leibrix / inproc, "x", "goal <= 2")
                worst = max(worst, ratio)
            report.add("query.overhead_vs_inprocess_p50", worst, "x", "worse of day and month; goal <= 2")
            report.note(f"{runs} timed runs per query after one warm-up; routes cached by the client "
                        f"({client.routes.fetches} fetch(es)); access reports sent in the background "
                        f"({client.reporter.totals['accesses']} epoch accesses)")
        cursor.close()
        local.close()
    finally:
        for child in reversed(children):
            child.terminate()
        for child in reversed(children):
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = options("a query through Leibrix (routes + Arrow Flight) against an in-process DuckDB", argv)
    report = Report("bench.query", quick=args.quick)
    run(report, args.quick)
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
