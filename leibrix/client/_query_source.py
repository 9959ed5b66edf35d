"""Reading epochs that no worker holds, from the dataset's source, exactly as a worker would load them.

A query must never be answered from part of the data. When some epochs in
the query's range are not READY on any reachable worker (PENDING, LOADING,
evicted for a hotter dataset ...), the client reads those epochs' rows from
the source itself:

1. the dataset's source (``GetDataset``: catalog, table, time column and
   type, version) and the missing epochs' windows and dimension values
   become one :class:`~leibrix.sources.SourceRequest`;
2. the source's connector plans them (:func:`leibrix.sources.connector_for`:
   Iceberg manifests, SQL statistics), giving each epoch its ``ReadPlan``;
3. each epoch becomes a table of a private in-memory DuckDB through
   :func:`leibrix.sources._readers.create_epoch_table`, the very function a
   worker's loader uses (Iceberg Parquet files with deletes applied, SQL
   through the drivers), so the rows are the ones a worker would hold;
4. the rows inside ``[lo, hi)`` are returned as one Arrow table, to be
   combined with the workers' rows by the caller.

The masters redact passwords from ``DatasetInfo``: a SQL source whose
credential is written inline cannot be read from a client (one given by
``${env:..}``/``${file:..}`` reference is resolved here, like on a worker).

Everything here blocks (files, network): the query path calls it from its
own thread.
"""

from __future__ import annotations

from collections.abc import Sequence

import betterproto
import duckdb
import pyarrow as pa

from leibrix.sources import Dimension, SourceRequest, connector_for
from leibrix.sources._readers import create_epoch_table, quote
from leibrix.sources._wire import read_plan
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = ["read_from_source", "time_bound"]



def _uri(catalog: cp.Catalog) -> tuple[str, str, str]:
    """(URI or DSN, JDBC driver, StarRocks catalog name) of a wire catalog."""
    kind, inner = betterproto.which_one_of(catalog, "catalog_type")
    if kind == "iceberg":
        return inner.uri, "", ""
    if kind == "jdbc":
        return inner.uri, inner.driver, ""
    if kind == "starrocks":
        return inner.dsn, "", inner.internal_catalog_name
    raise ValueError("the dataset's source names no catalog")


def time_bound(arrow_type: pa.DataType | None, ms: int) -> str:
    """A SQL constant for the instant ``ms`` in the time column's own type (epoch ms for integers)."""
    if arrow_type is not None and pa.types.is_integer(arrow_type):
        return str(ms)
    micros = ms * 1000
    if arrow_type is not None and pa.types.is_date(arrow_type):
        return f"CAST(make_timestamp({micros}::BIGINT) AS DATE)"
    if arrow_type is not None and pa.types.is_string(arrow_type):
        return f"strftime(make_timestamp({micros}::BIGINT), '%Y-%m-%dT%H:%M:%S')"
    if arrow_type is not None and pa.types.is_timestamp(arrow_type) and arrow_type.tz:
        return f"CAST(make_timestamp({micros}::BIGINT) AS TIMESTAMPTZ)"
    return f"make_timestamp({micros}::BIGINT)"


def read_from_source(source: cp.DataSource, time_column: str,
                     epochs: Sequence[tuple[str, int, int, tuple[tuple[str, str], ...]]],
                     lo_ms: int | None, hi_ms: int | None) -> pa.Table:
    """The rows of ``epochs`` (``(epoch_id, start_ms, end_ms, dims)``) with time in ``[lo_ms, hi_ms)``.

    Raises
    ------
    leibrix.sources._readers.SourceError
        The source's own error (redacted).
    ValueError
        The source has no catalog, or its plan lacks one of the epochs.
    """
    uri, driver, catalog_name = _uri(source.catalog)
    column_type = source.partition.time_partition.column.type
    windows = tuple(sorted({(s, e) for _, s, e, _ in epochs}))
    names = sorted({k for _, _, _, dims in epochs for k, _ in dims})
    dimensions = tuple(Dimension(n, tuple(sorted({v for _, _, _, dims in epochs for k, v in dims if k == n})))
                       for n in names)
    request = SourceRequest(
        uri=uri, database=source.database, table=source.table, time_column=time_column,
        windows=_disjoint(windows), dimensions=dimensions,
        time_type="" if column_type == cp.PartitionColumnType.UNKNOWN else cp.PartitionColumnType(column_type).name,
        driver=driver, catalog_name=catalog_name, version=source.version or "")
    plan = connector_for(source.catalog).plan(request)
    catalog = cpb.Catalog.FromString(bytes(source.catalog))
    con = duckdb.connect(":memory:")
    try:
        con.execute("SET TimeZone = 'UTC'")
        parts = []
        for epoch_id, start, end, dims in epochs:
            planned = plan.epochs.get((start, end, tuple(sorted(dims))))
            if planned is None:
                raise ValueError(f"the source's plan has no epoch {epoch_id} ({start}..{end} {dims})")
            load = pb.LoadPlan(plan_id=f"client-{epoch_id}", read=read_plan(planned))
            load.source.catalog.CopyFrom(catalog)
            part = load.resolved_partition
            part.time_column_name = time_column
            part.time_range.start_inclusive.FromMilliseconds(start)
            part.time_range.end_exclusive.FromMilliseconds(end)
            part.dimension_values.update(dict(dims))
            target = quote(f"e{len(parts)}")
            create_epoch_table(con, target, load, plan.schema)
            parts.append(target)
        union = " UNION ALL ".join(f"SELECT * FROM {t}" for t in parts)
        field = plan.schema.field(time_column) if time_column in plan.schema.names else None
        where = []
        if lo_ms is not None:
            where.append(f"{quote(time_column)} >= {time_bound(field.type if field else None, lo_ms)}")
        if hi_ms is not None:
            where.append(f"{quote(time_column)} < {time_bound(field.type if field else None, hi_ms)}")
        sql = f"SELECT * FROM ({union})" + (f" WHERE {' AND '.join(where)}" if where else "")
        return con.sql(sql).to_arrow_table()
    finally:
        con.close()


def _disjoint(windows: tuple[tuple[int, int], ...]) -> tuple[tuple[int, int], ...]:
    """Windows of a SourceRequest must not overlap: epochs of one dataset never do, but check."""
    out: list[tuple[int, int]] = []
    for s, e in windows:
        if out and s < out[-1][1]:
            raise ValueError(f"epoch windows overlap: {out[-1]} and {(s, e)}")
        out.append((s, e))
    return tuple(out)
