"""``python -m bench.query [--quick] [--json PATH]``: one Iceberg table queried through Leibrix and by its peers.

The data: an Iceberg table (pyiceberg SQL catalog on SQLite, in a temporary
directory) of 10M rows (``--quick``: 1M) over 30 days, partitioned by
``day(ts)``: one Parquet file per day written with pyarrow, committed in three
``add_files`` appends. Columns ``id`` long, ``ts`` timestamp, ``key`` string
(1000 values), ``value`` double. Generation and load times are reported.

Processes (all on loopback): a real master (``leibrix master``, embedded etcd)
and one reference worker (``leibrix worker``, one core, Arrow Flight). The
table is admitted as 30 daily epochs, planned by the Iceberg connector and
loaded by the worker from the data files. Every engine runs DuckDB with one
thread, so the ratios compare what is done, not how many cores do it.

Queries, each timed as p50 of many runs after a warm-up, results checked equal;
the runs of every engine are interleaved in rounds (one engine's batch, then
the next's ...), so a drift of the machine's speed during the measurement
reaches all of them alike:

* ``day``: a selective one-day drill-down (the orders of one ``key`` on one
  day: a filter on a non-partition column, a few dozen rows of ~333k; with
  ``--quick`` a handful of ~33k);
* ``day_groupby``: a one-day aggregate (top 10 keys of one day by count,
  compute-bound over the whole day);
* ``month``: a 30-day aggregate (per-day count and mean).

Per query, ``query.<q>.*_p50_ms`` for

* ``leibrix``: ``Client.query`` (cached routes, Flight to the worker holding
  the resident epochs);
* ``parquet``: DuckDB in this process over the same Iceberg data files with
  ``read_parquet`` (the day predicate prunes by row-group statistics);
* ``pyiceberg``: ``table.scan(row_filter).to_arrow()`` then DuckDB over the
  Arrow table (what a Python user of the table does without Leibrix);
* ``inprocess``: an in-process DuckDB already holding the same 30 epochs as
  tables under one ``UNION ALL`` view (the floor: no network, no routing).

The worker remembers the parse trees of statements it has seen, as a
dashboard repeats its statements; ``query.day.leibrix_adhoc_p50_ms`` times
the ``day`` query as a statement new to the worker on every run (a unique
comment), with the ratios it would give beside the goals.

Every peer gets the same SQL (so the same predicate); the Leibrix and
pyiceberg runs also get the query's time window (routing to one epoch; the
pyiceberg ``row_filter``). Ratios (the headline is the selective ``day``
query; the others are reported beside it): ``query.speedup_vs_parquet_p50``
(goal ≥ 3×), ``query.speedup_vs_pyiceberg_p50`` (goal ≥ 10×),
``query.overhead_vs_inprocess_p50`` (worst of the three queries, goal ≤ 2×).

Heat: ``query.heat_converge_s``. A second tenant (``dash``) has two datasets
of two days each, ``cold`` and ``hot`` (Iceberg tables over the same two day
files), and an epoch budget that holds one of them, not both (a memory quota
cannot: an epoch is charged its estimate, the room its load needs, until it is
loaded, then what its worker holds compressed, several times less): ``cold`` is
admitted and loaded first, ``hot`` waits PENDING. A workload then queries only
``hot`` through a fresh :class:`~leibrix.client._query.Client` (default
settings: its access reports are the only heat the master gets, no direct
``ReportAccess``); its epochs are read from the source until the control loop
displaces ``cold`` for them by benefit. The figure is the time from the first
query to the client's own routes (``WatchRoutes``) showing every ``hot`` epoch
on a worker and no ``cold`` one.
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
from pathlib import Path

import duckdb
import trio

from bench._report import Report, options
from leibrix.store._ports import free_hostport
from leibrix.client._call import call
from leibrix.client._query import Client
from leibrix.client._requests import time_partitioned_admission
from leibrix.client._routes import fetch_coverage
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.worker._cmd import worker_command

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
DAYS = 30
HEAT_DAYS = 2
HEAT_TENANT = "dash"
HEAT_SQL = "SELECT count(*) AS n FROM hot WHERE key = 'k777'"
DAY_SQL = ("SELECT id, ts, value FROM orders "
           "WHERE ts >= TIMESTAMP '2026-11-15' AND ts < TIMESTAMP '2026-11-16' AND key = 'k777' "
           "ORDER BY ts, id")
DAY_GROUPBY_SQL = ("SELECT key, count(*) AS n, sum(value) AS total FROM orders "
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


def _catalog(root: Path):
    from pyiceberg.catalog.sql import SqlCatalog

    uri = f"sqlite:///{root / 'catalog.db'}"
    return SqlCatalog("default", uri=uri, warehouse=f"file://{root / 'warehouse'}"), uri


def _create(catalog, name: str):
    """An empty ``db.<name>`` table of the bench's schema, partitioned by ``day(ts)``."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

    schema = Schema(NestedField(1, "id", LongType(), required=False), NestedField(2, "ts", TimestampType(), required=False),
                    NestedField(3, "key", StringType(), required=False),
                    NestedField(4, "value", DoubleType(), required=False))
    spec = PartitionSpec(PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"))
    return catalog.create_table(f"db.{name}", schema=schema, partition_spec=spec)


def make_table(root: Path, rows: int):
    """Write the day-partitioned Iceberg table ``db.orders`` under ``root``; returns (catalog URI, table, files)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    catalog, uri = _catalog(root)
    catalog.create_namespace("db")
    table = _create(catalog, "orders")
    per_day = rows // DAYS
    rng = np.random.default_rng(7)
    files: list[str] = []
    (root / "files").mkdir()
    for day in range(DAYS):
        ids = np.arange(day * per_day, (day + 1) * per_day, dtype=np.int64)
        start = np.datetime64(T0.replace(tzinfo=None), "us") + np.timedelta64(day, "D")
        ts = start + np.sort(rng.integers(0, 86_400_000_000, per_day)).astype("timedelta64[us]")
        data = pa.table({
            "id": pa.array(ids),
            "ts": pa.array(ts, pa.timestamp("us")),
            "key": pc.binary_join_element_wise("k", pc.cast(pa.array(rng.zipf(1.3, per_day) % 1000), pa.string()), ""),
            "value": pa.array(rng.random(per_day) * 1000),
        })
        path = root / "files" / f"day-{day:02d}.parquet"
        pq.write_table(data, path, row_group_size=128 * 1024)
        files.append(str(path))
    for chunk in range(3):  # three appends, three snapshots
        table.add_files([f"file://{f}" for f in files[chunk * 10:(chunk + 1) * 10]])
    return uri, catalog.load_table("db.orders"), files


def make_heat_tables(root: Path, files: list[str]) -> None:
    """``db.hot`` and ``db.cold``: the first :data:`HEAT_DAYS` day files of ``orders``, registered in each."""
    catalog, _ = _catalog(root)
    for name in ("hot", "cold"):
        _create(catalog, name).add_files([f"file://{f}" for f in files[:HEAT_DAYS]])


def _p50s(engines: dict[str, tuple[object, int]], rounds: int) -> dict[str, tuple[float, object]]:
    """Per engine ``name -> (fn, runs)``: the p50 in ms of its runs and its last result.

    After one warm-up each, the runs are spread over ``rounds`` rounds, each taking every engine in turn, so a
    drift of the machine's speed while they are measured reaches every engine alike, instead of whichever engine
    ran during a slow spell.
    """
    results = {name: fn() for name, (fn, _) in engines.items()}
    times: dict[str, list[float]] = {name: [] for name in engines}
    for _ in range(rounds):
        for name, (fn, runs) in engines.items():
            for _ in range(max(1, runs // rounds)):
                began = time.perf_counter()
                results[name] = fn()
                times[name].append(time.perf_counter() - began)
    return {name: (statistics.median(times[name]) * 1000, results[name]) for name in engines}


def run(report: Report, quick: bool) -> None:
    rows = 1_000_000 if quick else 10_000_000
    runs = 20 if quick else 60
    slow_runs = 5 if quick else 10
    rounds = 5 if quick else 10
    tmp = tempfile.mkdtemp(prefix="bench-query-")
    grpc, http = free_hostport(), free_hostport()
    children: list[subprocess.Popen] = []
    try:
        began = time.perf_counter()
        uri, table, files = make_table(Path(tmp), rows)
        report.add("query.generate_s", time.perf_counter() - began, "s",
                   f"{rows:,} rows, {DAYS} day files (pyarrow), 3 add_files appends")
        master = subprocess.Popen(
            [sys.executable, "-m", "leibrix", "master", "--name", "bench", "--cluster", "bench", "--grpc-listen", grpc,
             "--http-listen", http, "--data-dir", str(Path(tmp) / "master"), "--etcd-client-url",
             "http://" + free_hostport(), "--etcd-peer-url", "http://" + free_hostport(), "--etcd-heartbeat-ms", "10",
             "--etcd-election-ms", "100", "--log-level", "warning"], stdout=_LOG, stderr=_LOG)
        children.append(master)
        _wait(lambda: _leading(http), 60, "the master to lead")
        worker = subprocess.Popen(worker_command([grpc], "w1", memory="3GiB", cpu=1.0,
                                                 extra=("--log-level", "WARNING")), stdout=_LOG, stderr=_LOG)
        children.append(worker)
        _rpc(grpc, "upsert_tenant_quota", cp.TenantQuota(tenant_id="acme", admission_policy=cp.AdmissionPolicy.QUEUE))
        _wait(lambda: any(w.state == cp.WorkerState.ACTIVE
                          for w in _rpc(grpc, "list_workers", cp.ListWorkersRequest()).workers), 30, "the worker")
        began = time.perf_counter()
        _rpc(grpc, "admit_dataset", time_partitioned_admission(
            "acme", "orders", start=T0, end=T0 + timedelta(days=DAYS), catalog_uri=uri, database="db",
            hints=cp.EstimateHints(cpu_cores_per_epoch=0.01)))

        def ready() -> bool:
            listed = _rpc(grpc, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
            return len(listed.epochs) == DAYS and all(e.state == cp.EpochState.READY for e in listed.epochs)

        _wait(ready, 900, f"{DAYS} epochs READY")
        report.add("query.load_s", time.perf_counter() - began, "s",
                   f"admission to {DAYS} epochs READY ({rows:,} rows from the Iceberg files), one worker, 1 core")

        parquet = duckdb.connect(":memory:")
        parquet.execute("SET threads = 1")
        parquet.execute("CREATE VIEW orders AS SELECT * FROM read_parquet([" + ", ".join(f"'{f}'" for f in files) + "])")
        local = duckdb.connect(":memory:")
        local.execute("SET threads = 1")
        for d, f in enumerate(files):
            local.execute(f"CREATE TABLE orders__d{d} AS SELECT * FROM read_parquet('{f}')")
        local.execute("CREATE VIEW orders AS " + " UNION ALL ".join(f"SELECT * FROM orders__d{d}" for d in range(DAYS)))
        from pyiceberg.expressions import And, GreaterThanOrEqual, LessThan

        def pyiceberg(sql: str, start, end):
            def go():
                row_filter = (And(GreaterThanOrEqual("ts", start.replace(tzinfo=None).isoformat()),
                                  LessThan("ts", end.replace(tzinfo=None).isoformat())) if start else None)
                arrow = table.scan(row_filter=row_filter).to_arrow() if row_filter else table.scan().to_arrow()
                con = duckdb.connect(":memory:")
                con.execute("SET threads = 1")
                con.register("orders", arrow)
                try:
                    return con.sql(sql).to_arrow_table()
                finally:
                    con.close()
            return go

        route_ms = []
        for _ in range(5):
            t = time.perf_counter()
            trio.run(lambda: fetch_coverage(grpc, "acme", "orders", None, None))
            route_ms.append((time.perf_counter() - t) * 1000)
        report.add("query.route_fetch_ms", statistics.median(route_ms), "ms", "uncached ResolveRoute round; p50 of 5")
        ratios: dict[str, dict[str, float]] = {}
        with Client(masters=[grpc], route_ttl=3600) as client:
            day = T0 + timedelta(days=14)
            cases = {
                "day": (DAY_SQL, day, day + timedelta(days=1), "1 epoch, one key's orders of one day"),
                "day_groupby": (DAY_GROUPBY_SQL, day, day + timedelta(days=1), "1 epoch, top 10 keys of one day"),
                "month": (MONTH_SQL, None, None, f"{DAYS} epochs, per-day count and mean"),
            }
            for name, (sql, start, end, note) in cases.items():
                engines = {
                    "leibrix": (lambda: client.query("acme", "orders", sql, start, end, resident_only=True), runs),
                    "inprocess": (lambda: local.sql(sql).to_arrow_table(), runs),
                    "parquet": (lambda: parquet.sql(sql).to_arrow_table(), runs),
                    "pyiceberg": (pyiceberg(sql, start, end), slow_runs),
                }
                if name == "day":  # the same query as a statement the worker has not seen (ad hoc, no parse cache)
                    fresh = iter(range(1 << 30))
                    engines["adhoc"] = (lambda: client.query("acme", "orders", f"{sql} /* {next(fresh)} */", start,
                                                             end, resident_only=True), runs)
                measured = _p50s(engines, rounds)
                leibrix, got = measured.pop("leibrix")
                adhoc = measured.pop("adhoc", None)
                peers = measured
                report.add(f"query.{name}.leibrix_p50_ms", leibrix, "ms",
                           note + f", {got.num_rows} row(s) returned (routes: {client.last.routes})")
                for peer, (ms, want) in peers.items():
                    if _rows(got) != _rows(want):
                        report.note(f"{name}: RESULTS DIFFER from {peer} ({got.num_rows} vs {want.num_rows} rows)")
                    report.add(f"query.{name}.{peer}_p50_ms", ms, "ms", "DuckDB 1 thread")
                ratios[name] = {"parquet": peers["parquet"][0] / leibrix, "pyiceberg": peers["pyiceberg"][0] / leibrix,
                                "inprocess": leibrix / peers["inprocess"][0]}
                if adhoc is not None:
                    adhoc = adhoc[0]
                    report.add("query.day.leibrix_adhoc_p50_ms", adhoc, "ms",
                               "the day query as a new statement each run (its text never seen by the worker)")
                    report.add("query.day.adhoc_speedup_vs_parquet_p50", peers["parquet"][0] / adhoc, "x",
                               "reported beside the goal")
                    report.add("query.day.adhoc_speedup_vs_pyiceberg_p50", peers["pyiceberg"][0] / adhoc, "x",
                               "reported beside the goal")
                for peer, goal in (("parquet", ">= 3"), ("pyiceberg", ">= 10")):
                    report.add(f"query.{name}.speedup_vs_{peer}_p50", ratios[name][peer], "x", f"goal {goal}")
                report.add(f"query.{name}.overhead_vs_inprocess_p50", ratios[name]["inprocess"], "x", "goal <= 2")
            report.add("query.speedup_vs_parquet_p50", ratios["day"]["parquet"], "x",
                       "selective one-day query; goal >= 3")
            report.add("query.speedup_vs_pyiceberg_p50", ratios["day"]["pyiceberg"], "x",
                       "selective one-day query; goal >= 10")
            report.add("query.overhead_vs_inprocess_p50", max(r["inprocess"] for r in ratios.values()), "x",
                       "worst of day, day_groupby and month; goal <= 2")
            report.note(f"{runs} timed runs per query ({slow_runs} for pyiceberg) after one warm-up, spread over "
                        f"{rounds} rounds that take every engine in turn; routes from "
                        f"{client.last.routes} ({client.routes.fetches} ResolveRoute round(s)); access reports sent "
                        f"in the background ({client.reporter.totals['accesses']} epoch accesses)")
        parquet.close()
        local.close()
        heat_converge(report, grpc, uri, Path(tmp), files)
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


def _resident(client: Client, tenant: str, dataset: str, epochs: int) -> bool:
    """Whether the routes ``client`` itself holds (``WatchRoutes``) put all ``epochs`` of ``dataset`` on workers."""
    routes = client.routes.watcher.routes(tenant) if client.routes.watcher else None
    placed = [r for (d, _), r in (routes or {}).items() if d == dataset]
    return len(placed) == epochs and all(r.worker_ids for r in placed)


def _states(grpc: str, tenant: str, dataset: str) -> dict[str, int]:
    listed = _rpc(grpc, "list_epochs", cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset))
    counts: dict[str, int] = {}
    for e in listed.epochs:
        counts[cp.EpochState(e.state).name] = counts.get(cp.EpochState(e.state).name, 0) + 1
    return counts


def heat_converge(report: Report, grpc: str, uri: str, root: Path, files: list[str], timeout: float = 180.0) -> None:
    """``query.heat_converge_s``: queries alone (through the client) make a hot dataset displace a cold one."""
    make_heat_tables(root, files)
    policy = cp.AdmissionPolicy.QUEUE

    def admit(dataset: str) -> None:
        _rpc(grpc, "admit_dataset", time_partitioned_admission(
            HEAT_TENANT, dataset, start=T0, end=T0 + timedelta(days=HEAT_DAYS), catalog_uri=uri, database="db",
            hints=cp.EstimateHints(cpu_cores_per_epoch=0.01)))

    _rpc(grpc, "upsert_tenant_quota", cp.TenantQuota(tenant_id=HEAT_TENANT, admission_policy=policy,
                                                     max_epochs=HEAT_DAYS))
    admit("cold")
    _wait(lambda: _states(grpc, HEAT_TENANT, "cold") == {"READY": HEAT_DAYS}, 120, "cold READY")
    # cold was the hot one until now: a few queries give it heat (with none on either side, a tie of zero
    # benefits, hot displaced cold at admission, before any query)
    with Client(masters=[grpc]) as earlier:
        for _ in range(20):
            earlier.query(HEAT_TENANT, "cold", HEAT_SQL.replace("FROM hot", "FROM cold"))
    time.sleep(1.5)
    admit("hot")
    time.sleep(2)
    if _states(grpc, HEAT_TENANT, "hot").get("READY"):
        report.note(f"heat: hot loaded without displacing cold (both fit in {HEAT_DAYS} epochs; "
                    f"hot {_states(grpc, HEAT_TENANT, 'hot')}, cold {_states(grpc, HEAT_TENANT, 'cold')}): "
                    "query.heat_converge_s not measured")
        return
    began, queries, converged, from_source = time.monotonic(), 0, None, 0
    with Client(masters=[grpc]) as client:  # default settings: route watch, access reports every second
        while time.monotonic() - began < timeout:
            client.query(HEAT_TENANT, "hot", HEAT_SQL)
            queries += 1
            from_source += bool(client.last.from_source)
            if _resident(client, HEAT_TENANT, "hot", HEAT_DAYS) and not _resident(client, HEAT_TENANT, "cold",
                                                                                  HEAT_DAYS):
                converged = time.monotonic() - began
                break
        last = client.last
    states = f"hot {_states(grpc, HEAT_TENANT, 'hot')}, cold {_states(grpc, HEAT_TENANT, 'cold')}"
    if converged is None:
        report.note(f"heat: hot NOT resident after {timeout:.0f} s of {queries} queries ({states})")
        return
    report.add("query.heat_converge_s", converged, "s",
               f"first hot query to hot resident and cold displaced (client routes); {queries} queries, "
               f"{from_source} of them read from the source; a budget of {HEAT_DAYS} epochs holds one of the two "
               f"{HEAT_DAYS}-epoch datasets; last query served by {last.workers} ({states})")


def _rows(table) -> list:
    """Rows with doubles rounded (summation order differs between engines)."""
    return [tuple(round(v, 6) if isinstance(v, float) else v for v in r.values()) for r in table.to_pylist()]


def main(argv: list[str] | None = None) -> int:
    args = options("an Iceberg table queried through Leibrix, with read_parquet, with pyiceberg and in-process", argv)
    report = Report("bench.query", quick=args.quick)
    run(report, args.quick)
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
