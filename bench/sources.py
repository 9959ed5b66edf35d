"""Source connector benchmark: one-pass Iceberg planning against pyiceberg's per-epoch planning, and the size model.

``python -m bench.sources [--quick] [--json PATH]``

* plan — an Iceberg table (pyiceberg SQL catalog on SQLite, in a temp dir)
  partitioned by ``day(ts)`` and ``region``, with 365 days x 2 regions x
  ``parts`` Parquet files (10,220 files; ``--quick``: 730) registered in 8
  ``add_files`` commits (8 manifests). ``sources.iceberg_plan_s``: our
  ``IcebergConnector.plan`` of all 365 daily epochs (one manifest pass plus
  grouping, the snapshot index dropped before each run; best of 3, catalog load excluded); ``sources.iceberg_plan_peer_s``:
  ``table.scan(row_filter=<epoch>).plan_files()`` once per epoch (one run).
  Both see the same loaded table; the peer's file sets are checked to equal ours.
* admission — planning one single-epoch admission (one day, one region) of a
  365-day table through its SQL catalog on SQLite, as admission does:
  ``sources.admission_plan_cold_ms`` with the connector's caches emptied
  first (catalog built, metadata and every manifest read) and
  ``sources.admission_plan_warm_ms`` against the unchanged snapshot.
* estimate — a second table with 5 days of 200,000 rows (``--quick``: 20,000);
  for each day, the planned ``memory_bytes`` against what DuckDB holds after
  ``CREATE TABLE .. AS SELECT * FROM read_parquet(<planned files>) WHERE <window>``
  (the growth of ``duckdb_memory()``), and against the Arrow table's ``nbytes``.
* load — the reference worker's loads of real sources: Iceberg Parquet against DuckDB's own
  ``CREATE TABLE AS read_parquet`` (``sources.load_*``), PostgreSQL against ``pandas.read_sql``
  (``sources.sql_load_*``); see :mod:`bench._loads`.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from bench import _loads
from bench._report import Report, best_of, options
from leibrix.sources import Dimension, IcebergConnector, SourceRequest, _iceberg_cache, _iceberg_index
from leibrix.sources._iceberg import _time_column, epoch_filter
from tests.support.sources import day_windows, make_events_table


def plan_section(report: Report, root: Path, parts: int) -> None:
    start = time.perf_counter()
    fx = make_events_table(root / "plan", days=365, parts=parts, rows_per_file=20, batches=8)
    report.note(f"table: {len(fx.files):,} data files in 8 manifests, written in {time.perf_counter() - start:.1f} s")
    table = fx.table
    request = SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(365))
    connector = IcebergConnector(load_table=lambda _: table)
    ours = best_of(lambda: (_iceberg_index.clear(), connector.plan(request)))  # the manifests read each time
    plan = connector.plan(request)
    time_col = _time_column(table.schema(), request)

    def peer() -> list[set[str]]:
        return [{t.file.file_path for t in table.scan(
            row_filter=epoch_filter(request, time_col, e.start_ms, e.end_ms, ())).plan_files()} for e in plan]

    t0 = time.perf_counter()
    peer_files = peer()
    theirs = time.perf_counter() - t0
    assert peer_files == [{f.path for f in e.read.files} for e in plan], "per-epoch plan differs from the one pass"
    report.add("sources.iceberg_plan_s", ours, "s", f"365 daily epochs, {len(fx.files):,} files, one manifest pass")
    report.add("sources.iceberg_plan_peer_s", theirs, "s", "pyiceberg plan_files() once per epoch")
    report.add("sources.iceberg_plan_speedup", theirs / ours, "x", "goal >= 20")


def admission_section(report: Report, root: Path, samples: int) -> None:
    """One single-epoch admission's planning, as the master's control loop runs it: cold and warm."""
    fx = make_events_table(root / "admission", days=365, regions=("eu", "us"), rows_per_file=20, batches=8)
    connector = IcebergConnector()

    def request(i: int) -> SourceRequest:
        return SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(1, first=i % 365),
                             (Dimension("region", ("eu",)),))

    cold, warm = [], []
    for i in range(samples):
        _iceberg_cache.clear()
        t0 = time.perf_counter()
        connector.plan(request(i))
        cold.append(time.perf_counter() - t0)
    for i in range(samples * 10):
        t0 = time.perf_counter()
        connector.plan(request(i))
        warm.append(time.perf_counter() - t0)
    report.add("sources.admission_plan_cold_ms", statistics.median(cold) * 1000, "ms",
               f"1 daily epoch x 1 region, {len(fx.files)} files in 8 manifests, SQL catalog on SQLite: "
               f"catalog, metadata and manifests read (median of {samples})")
    report.add("sources.admission_plan_warm_ms", statistics.median(warm) * 1000, "ms",
               f"the same, the snapshot unchanged: one catalog row read (median of {len(warm)}; "
               f"p99 {sorted(warm)[int(len(warm) * 0.99)] * 1000:.2f} ms)")


def estimate_section(report: Report, root: Path, rows: int) -> None:
    import duckdb
    import pyarrow.parquet as pq

    fx = make_events_table(root / "estimate", days=5, regions=("eu",), rows_per_file=rows, name="big")
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(5)))
    duck_errors, arrow_errors = [], []
    for i, epoch in enumerate(plan):
        files = [f.path.removeprefix("file://") for f in epoch.read.files]
        con = duckdb.connect()
        con.execute("SET threads = 1")
        before = con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
        con.execute(f"CREATE TABLE e AS SELECT * FROM read_parquet({files!r}) "
                    f"WHERE ts >= to_timestamp({epoch.start_ms / 1000})::TIMESTAMP "
                    f"AND ts < to_timestamp({epoch.end_ms / 1000})::TIMESTAMP")
        loaded = con.execute("SELECT count(*) FROM e").fetchall()[0][0]
        after = con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
        con.close()
        assert loaded == epoch.rows, (loaded, epoch.rows)
        arrow = sum(pq.read_table(p).nbytes for p in files)
        duck_errors.append(abs(epoch.memory_bytes - (after - before)) / (after - before))
        arrow_errors.append(abs(epoch.memory_bytes - arrow) / arrow)
        if i == 0:
            report.note(f"epoch 0: {epoch.rows:,} rows, estimate {epoch.memory_bytes:,} B, DuckDB {after - before:,} B, "
                        f"Arrow {arrow:,} B")
    report.add("sources.estimate_error_median", statistics.median(duck_errors), "ratio",
               f"|estimate - DuckDB| / DuckDB, {len(duck_errors)} epochs of {rows:,} rows")
    report.add("sources.estimate_error_arrow_median", statistics.median(arrow_errors), "ratio",
               "|estimate - Arrow nbytes| / Arrow nbytes (what the model estimates)")


def main(argv: list[str] | None = None) -> int:
    args = options("source connectors", argv)
    report = Report("bench.sources", quick=args.quick)
    with tempfile.TemporaryDirectory(prefix="leibrix-bench-sources-") as tmp:
        root = Path(tmp)
        plan_section(report, root, parts=1 if args.quick else 14)
        admission_section(report, root, samples=10 if args.quick else 30)
        estimate_section(report, root, rows=20_000 if args.quick else 200_000)
        _loads.parquet_section(report, root, files=4 if args.quick else 8, rows=50_000 if args.quick else 250_000)
        _loads.sql_section(report, root, rows=50_000 if args.quick else 200_000)
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
