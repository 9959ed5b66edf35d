"""The rows a cluster's epochs hold, read straight from the sample Iceberg table's files, and DuckDB over them.

Datasets admitted by :func:`tests.support.admission.admission` name the test
session's Iceberg table (:mod:`tests.support.sample_source`). :func:`expected_rows`
reads that table's Parquet files with DuckDB's ``read_parquet`` (no Leibrix
code in between) and keeps the rows of the dataset's epochs as the master
lists them, so a test can compare a query through Leibrix with the same SQL
run by :func:`direct` over the same rows in one DuckDB.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import rpc
from tests.support.sample_source import sample_source


async def expected_rows(master, tenant: str, dataset: str, states: tuple[str, ...] = ("READY",)) -> pa.Table:
    """All source rows of the dataset's epochs (each in one of ``states``), read from the data files directly."""
    listed = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset))
    terms = []
    for e in listed.epochs:
        assert e.state.name in states, e
        tr = e.info.time_range
        lo, hi = (t.replace(tzinfo=None).isoformat(sep=" ") for t in (tr.start_inclusive, tr.end_exclusive))
        dims = "".join(f" AND {k} = '{v}'" for k, v in sorted(e.info.dimension_values.items()))
        terms.append(f"(ts >= TIMESTAMP '{lo}' AND ts < TIMESTAMP '{hi}'{dims})")
    files = str(sample_source().root / "files" / "*.parquet")
    con = duckdb.connect(":memory:")
    try:
        return con.sql(f"SELECT * FROM read_parquet('{files}') WHERE {' OR '.join(terms)} ORDER BY id").to_arrow_table()
    finally:
        con.close()


def direct(rows: pa.Table, dataset: str, sql: str, start: datetime | None = None, end: datetime | None = None,
           time_column: str = "ts") -> pa.Table:
    """``sql`` over ``rows`` restricted to ``[start, end)``, in one in-process DuckDB: the expected answer."""
    con = duckdb.connect(":memory:")
    try:
        con.register("all_rows", rows)
        where = []
        if start is not None:
            where.append(f"{time_column} >= TIMESTAMP '{start.replace(tzinfo=None).isoformat(sep=' ')}'")
        if end is not None:
            where.append(f"{time_column} < TIMESTAMP '{end.replace(tzinfo=None).isoformat(sep=' ')}'")
        con.execute(f'CREATE VIEW "{dataset}" AS SELECT * FROM all_rows'
                    + (" WHERE " + " AND ".join(where) if where else ""))
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()
