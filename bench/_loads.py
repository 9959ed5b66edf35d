"""The reference worker's loads of real sources, against the floor and a common peer (part of ``bench.sources``).

* ``sources.load_mb_per_s``: one daily Iceberg epoch (``files`` Parquet files of
  ``rows`` rows each, one day, one region) loaded by ``Loader.load`` (plan from
  ``IcebergConnector``, window filter, planned schema) — Parquet bytes / s.
  ``sources.load_floor_mb_per_s``: DuckDB alone, ``CREATE TABLE t AS SELECT *
  FROM read_parquet([...])`` on the same files, same ``threads`` and ``memory_limit``,
  one connection reused across the repeats (as the loader's is).
  ``sources.load_vs_floor``: ours / floor (goal >= 0.8).
* ``sources.sql_load_rows_per_s``: one epoch of a PostgreSQL table (``sql_rows``
  rows: bigint, timestamp, varchar, double, numeric(12, 2), text, integer)
  loaded by ``Loader.load`` (plan from ``SqlConnector``); ``sources.sql_load_peer_rows_per_s``:
  ``pandas.read_sql`` of the same query and parameters, then ``CREATE TABLE AS``
  from the DataFrame in DuckDB. Each pair runs alternately 5 times and the best
  time of each counts (a shared machine's noise hits both alike). Needs pandas (a measurement-only
  dependency) and the PostgreSQL server binaries; the section is skipped with a
  note when either is missing.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path

from bench._report import Report
from leibrix.domain import _schema
from leibrix.sources import IcebergConnector, SourceRequest, SqlConnector
from leibrix.sources._wire import read_plan
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._loader import Loader
from tests.support.sources import day_windows, make_events_table

THREADS = 2
MEMORY = 4 << 30


def interleaved(ours, theirs, rounds: int = 5) -> tuple[float, float]:
    """Best seconds of each of two functions run alternately ``rounds`` times (fair under a shared machine's noise)."""
    best = [float("inf"), float("inf")]
    for _ in range(rounds):
        for i, fn in enumerate((ours, theirs)):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


def _assignment(plan, epoch, catalog: cpb.Catalog, time_column: str) -> pb.DataAssignmentEvent:
    a = pb.DataAssignmentEvent(dataset_id="bench", epoch_id="e0", load_plan=pb.LoadPlan(
        plan_id="p0", expected_rows=epoch.rows, arrow_schema=_schema.to_ipc(plan.schema), read=read_plan(epoch)))
    a.load_plan.source.catalog.CopyFrom(catalog)
    part = a.load_plan.resolved_partition
    part.time_column_name = time_column
    part.time_range.start_inclusive.FromMilliseconds(epoch.start_ms)
    part.time_range.end_exclusive.FromMilliseconds(epoch.end_ms)
    part.dimension_values.update(dict(epoch.dims))
    return a


def parquet_section(report: Report, root: Path, files: int, rows: int) -> None:
    import duckdb

    fx = make_events_table(root / "load", days=1, regions=("eu",), parts=files, rows_per_file=rows, name="load")
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(1)))
    (epoch,) = plan
    size_mb = sum(os.path.getsize(p) for p in fx.files) / 1e6
    a = _assignment(plan, epoch, cpb.Catalog(iceberg=cpb.IcebergCatalog(uri=fx.uri)), "ts")
    paths = ", ".join(f"'{p}'" for p in fx.files)
    con = duckdb.connect(":memory:")  # one connection reused across repeats, as the loader's is
    con.execute(f"SET memory_limit = '{MEMORY}B'")
    con.execute(f"SET threads = {THREADS}")
    loader = Loader(memory_limit_bytes=MEMORY, threads=THREADS)
    try:
        ours, theirs = interleaved(
            lambda: loader.load(a, tenant_id="t"),
            lambda: con.execute(f"CREATE OR REPLACE TABLE t AS SELECT * FROM read_parquet([{paths}])"))
        loaded = loader.holds("bench", "e0")
        assert loaded is not None and loaded.rows == files * rows, loaded
        assert con.execute("SELECT count(*) FROM t").fetchall() == [(files * rows,)]
    finally:
        loader.close()
        con.close()
    note = f"{files} files x {rows:,} rows, {size_mb:.1f} MB of Parquet, {THREADS} threads"
    report.add("sources.load_mb_per_s", size_mb / ours, "MB/s", f"Loader.load of one Iceberg epoch: {note}")
    report.add("sources.load_floor_mb_per_s", size_mb / theirs, "MB/s", "DuckDB CREATE TABLE AS read_parquet, same files")
    report.add("sources.load_vs_floor", theirs / ours, "x", "goal >= 0.8")


def sql_section(report: Report, root: Path, rows: int) -> None:
    try:
        import pandas as pd
    except ImportError:
        report.note("sql load: skipped (pandas, the peer, is not installed: it is a measurement-only dependency)")
        return
    import duckdb
    import sqlalchemy as sa

    from tests.support import databases

    bindir = databases.find_postgres()
    if bindir is None:
        report.note("sql load: skipped (no PostgreSQL server binaries)")
        return
    server = databases.start_postgres(bindir)
    try:
        eng = sa.create_engine(server.sqlalchemy_url("postgres"), isolation_level="AUTOCOMMIT")
        with eng.connect() as conn:
            conn.execute(sa.text("CREATE DATABASE bench"))
        eng.dispose()
        url = server.sqlalchemy_url("bench")
        eng = sa.create_engine(url)
        base = datetime(2024, 1, 1)
        with eng.begin() as conn:
            conn.execute(sa.text("CREATE TABLE ev (id bigint PRIMARY KEY, t timestamp NOT NULL, region varchar(8), "
                                 "value double precision, amount numeric(12, 2), note text, n integer)"))
            conn.execute(sa.text(
                "INSERT INTO ev SELECT i, :base + make_interval(secs => i * 86400.0 / :rows), "
                "CASE WHEN i % 2 = 0 THEN 'eu' ELSE 'us' END, i * 0.5, (i % 100000) / 4.0, "
                "CASE WHEN i % 5 = 0 THEN NULL ELSE 'note-' || i END, i % 1000 "
                "FROM generate_series(0, :rows - 1) AS i"), {"base": base, "rows": rows})
            conn.execute(sa.text("ANALYZE ev"))
        plan = SqlConnector().plan(SourceRequest(server.jdbc("bench"), "public", "ev", "t", day_windows(1)))
        (epoch,) = plan
        assert epoch.rows == rows, epoch.rows
        a = _assignment(plan, epoch, cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=server.jdbc("bench"))), "t")
        query, params = epoch.read.sql(), dict(epoch.read.params)

        def peer() -> None:
            con = duckdb.connect(":memory:")
            con.execute(f"SET memory_limit = '{MEMORY}B'")
            con.execute(f"SET threads = {THREADS}")
            df = pd.read_sql(sa.text(query), eng, params=params)
            con.register("df", df)
            con.execute("CREATE TABLE t AS SELECT * FROM df")
            assert con.execute("SELECT count(*) FROM t").fetchall() == [(rows,)]
            con.close()

        loader = Loader(memory_limit_bytes=MEMORY, threads=THREADS)
        try:
            ours, theirs = interleaved(lambda: loader.load(a, tenant_id="t"), peer)
            assert loader.holds("bench", "e0").rows == rows
        finally:
            loader.close()
        eng.dispose()
    finally:
        databases.stop_postgres(server, bindir)
    report.add("sources.sql_load_rows_per_s", rows / ours, "rows/s",
               f"Loader.load of a PostgreSQL epoch, {rows:,} rows x 7 columns (COPY to Arrow CSV reader)")
    report.add("sources.sql_load_peer_rows_per_s", rows / theirs, "rows/s", "pandas.read_sql, then DuckDB from the DataFrame")
    report.add("sources.sql_load_vs_peer", theirs / ours, "x", "goal >= 2")
