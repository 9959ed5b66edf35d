"""The rows a cluster's workers hold, rebuilt in this process, and DuckDB run directly over them.

The reference worker's rows are deterministic: they derive from the plan id,
the row count, the epoch's window and dimension values. :func:`expected_rows`
reads those facts from the master (``ListEpochs``) and loads the same plans
into a local :class:`~leibrix.worker.Loader`, so a test can compare a query
through Leibrix with the same SQL run over the same rows in one DuckDB.
"""

from __future__ import annotations

from datetime import datetime

import duckdb
import pyarrow as pa

from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker import Loader
from tests.support.admission import rpc


async def expected_rows(master, tenant: str, dataset: str, rows: int, time_column: str = "ts") -> pa.Table:
    """All rows of the dataset's READY epochs, generated locally exactly as the workers did."""
    listed = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset))
    loader = Loader(memory_limit_bytes=1 << 30)
    try:
        tables = []
        for e in listed.epochs:
            assert e.state == cp.EpochState.READY, e
            a = pb.DataAssignmentEvent(dataset_id=dataset, epoch_id=e.info.epoch_id, load_plan=pb.LoadPlan(
                plan_id=e.replicas[0].plan_id, destination_table_name=f"{dataset}__{e.info.epoch_id}",
                expected_rows=rows, tenant_id=tenant))
            part = a.load_plan.resolved_partition
            part.time_column_name = time_column
            part.time_range.start_inclusive.FromDatetime(e.info.time_range.start_inclusive)
            part.time_range.end_exclusive.FromDatetime(e.info.time_range.end_exclusive)
            for k, v in e.info.dimension_values.items():
                part.dimension_values[k] = v
            loaded = loader.load(a, tenant_id=tenant)
            tables.append(loaded.table)
        cursor = loader.cursor()
        try:
            return cursor.sql(" UNION ALL ".join(f'SELECT * FROM "{t}"' for t in tables)).to_arrow_table()
        finally:
            cursor.close()
    finally:
        loader.close()


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
