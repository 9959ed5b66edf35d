"""Reading one epoch's ``ReadPlan``: Iceberg data files through DuckDB, SQL sources as Arrow record batches.

Iceberg (:func:`iceberg_query`)
    The plan lists the epoch's Parquet data files and, with each, the delete
    files that apply to it. The epoch's rows are one DuckDB query over them:
    ``read_parquet([...], union_by_name=true)`` (DuckDB's built-in reader:
    column pruning, row-group pruning on the filters, parallel scans),
    filtered to the epoch's time window and dimension values
    (``LoadPlan.resolved_partition``), minus

    * positional deletes: an anti-join on ``(data file path, row position)``,
      the data read with ``filename=true, file_row_number=true`` and the
      delete files' ``file_path``/``pos`` columns (``file:`` scheme stripped on
      both sides);
    * equality deletes: per delete file, an anti-join on its equality columns
      (``IS NOT DISTINCT FROM``: Iceberg matches nulls), restricted to the
      data files it applies to. The columns are the delete file's Parquet
      columns whose field ids are the plan's ``equality_ids``, or all of its
      columns when it carries no field ids.

    The time predicate compares the column with a constant of its own type
    (so DuckDB prunes row groups by their statistics): timestamps against
    the window's instants, dates against the window's UTC days, integers
    against epoch milliseconds, strings against ISO-8601 text
    (``YYYY-MM-DDTHH:MM:SS``, as the Iceberg connector plans them).

SQL (:func:`sql_batches`)
    ``SqlRead.query`` with its ``:name`` parameters bound, run through
    SQLAlchemy on the connection of ``LoadPlan.source.catalog`` (JDBC URI and
    driver, or StarRocks DSN, mapped by :mod:`leibrix.sources._jdbc`; secret
    references resolved there), streamed with a server-side cursor where the
    driver has one and fetched ``batch_rows`` rows at a time, each batch
    turned column by column into Arrow arrays of the planned types. Memory
    is bounded by one batch, whatever the epoch's size. PostgreSQL epochs
    whose columns all have an exact text form are read with ``COPY .. TO
    STDOUT`` and Arrow's CSV reader instead (:mod:`leibrix.sources._pgcopy`),
    in blocks of about 4 MiB. Timestamp parameters
    are bound as naive UTC datetimes unless the planned time column carries a
    time zone.

Both end in :func:`create_epoch_table`: one epoch's rows as a table of a
DuckDB connection, its columns in the planned schema's order and cast to
the planned types where the source's representation differs. The worker's
loader builds its resident tables with it, and a client reads epochs that
no worker holds with the same function into its own DuckDB, so both see
exactly the same rows.

Errors from the source are :class:`SourceError`: the driver's or DuckDB's own
message, with the connection shown redacted and resolved secrets scrubbed.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from datetime import date, datetime, timezone

import duckdb
import pyarrow as pa

from leibrix.sources import _jdbc, _secrets
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.sources import _pgcopy

__all__ = ["SchemaMismatch", "SourceError", "create_epoch_table", "iceberg_query", "sql_batches", "sql_params",
           "sql_target"]

#: Rows fetched from a SQL source per Arrow batch.
BATCH_ROWS = 65_536


class SourceError(RuntimeError):
    """The source refused or failed a read; the message is the source's own, without secrets."""


class SchemaMismatch(ValueError):
    """A table built from a plan does not have (or cannot be cast to) the schema the plan carries."""


def quote(identifier: str) -> str:
    """``identifier`` as a DuckDB quoted identifier."""
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    """``text`` as a DuckDB string literal."""
    return "'" + text.replace("'", "''") + "'"


def local_path(path: str) -> str:
    """A data file's path as DuckDB opens it: ``file:`` URIs become plain paths, other schemes stay as written."""
    if path.startswith("file://"):
        return path[len("file://"):]
    if path.startswith("file:"):
        return path[len("file:"):]
    return path


# -- Iceberg -------------------------------------------------------------------------------------------

def _window_us(part: pb.ResolvedPartition) -> tuple[int, int] | None:
    if part.HasField("time_range") and part.time_range.HasField("start_inclusive"):
        return part.time_range.start_inclusive.ToMicroseconds(), part.time_range.end_exclusive.ToMicroseconds()
    return None


def time_predicate(column: str, duck_type: str, start_us: int, end_us: int) -> str:
    """``start <= column < end`` with constants of the column's DuckDB type (see the module docstring)."""
    col, t = quote(column), duck_type.upper()
    if t.startswith("TIMESTAMP"):
        lo, hi = f"make_timestamp({start_us}::BIGINT)", f"make_timestamp({end_us}::BIGINT)"
        return f"{col} >= CAST({lo} AS {t}) AND {col} < CAST({hi} AS {t})"
    if t == "DATE":
        return (f"{col} >= CAST(make_timestamp({start_us}::BIGINT) AS DATE) AND "
                f"{col} < CAST(make_timestamp({end_us}::BIGINT) AS DATE)")
    if t in ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT"):
        return f"{col} >= {start_us // 1000} AND {col} < {end_us // 1000}"
    if t == "VARCHAR":
        iso = lambda us: datetime.fromtimestamp(us / 1e6, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # noqa: E731
        return f"{col} >= {literal(iso(start_us))} AND {col} < {literal(iso(end_us))}"
    raise SourceError(f"time column {column!r} is {duck_type} in the data files: not a timestamp, date, "
                      "integer (epoch ms) or ISO-text column")


def _equality_columns(con, path: str, ids: list[int]) -> list[str]:
    rows = con.execute("SELECT name, field_id FROM parquet_schema(?) WHERE num_children IS NULL OR num_children = 0",
                       [path]).fetchall()
    named = [name for name, fid in rows if fid is not None and int(fid) in ids]
    return named or [name for name, _ in rows]


def iceberg_query(con, read: pb.IcebergRead, part: pb.ResolvedPartition) -> str | None:
    """The DuckDB ``SELECT`` of one Iceberg epoch's rows (see the module docstring), or None when it has no files.

    ``con`` is used to read the files' column types and the delete files'
    schemas (metadata only).

    Raises
    ------
    SourceError
        A data file that is not Parquet, a time or dimension column the files
        do not have, or DuckDB's error reading the files' metadata.
    """
    files = list(read.files)
    if not files:
        return None
    for f in files:
        if f.file_format and f.file_format.upper() != "PARQUET":
            raise SourceError(f"{f.path}: {f.file_format} data files cannot be read (only Parquet)")
    paths = [local_path(f.path) for f in files]
    positional = sorted({local_path(d.path) for f in files for d in f.delete_files if d.kind == "position"})
    equality: dict[tuple[str, tuple[int, ...]], list[str]] = {}
    for f, p in zip(files, paths):
        for d in f.delete_files:
            if d.kind == "equality":
                equality.setdefault((local_path(d.path), tuple(d.equality_ids)), []).append(p)
            elif d.kind != "position":
                raise SourceError(f"{d.path}: unknown delete file kind {d.kind!r} (position or equality)")
    with_rows = bool(positional or equality)
    options = ", filename=true, file_row_number=true" if with_rows else ""
    scan = f"read_parquet([{', '.join(map(literal, paths))}], union_by_name=true{options})"
    try:
        types = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {scan}").fetchall()}
    except Exception as exc:  # duckdb.Error: missing file, not Parquet, ...
        raise SourceError(f"reading the epoch's data files: {exc}") from None
    where = []
    window = _window_us(part)
    if part.time_column_name and window is not None:
        if part.time_column_name not in types:
            raise SourceError(f"time column {part.time_column_name!r} is not in the data files")
        where.append(time_predicate(part.time_column_name, types[part.time_column_name], *window))
    for name, value in sorted(part.dimension_values.items()):
        if name not in types:
            raise SourceError(f"dimension column {name!r} is not in the data files")
        where.append(f"{quote(name)} = CAST({literal(value)} AS {types[name]})")
    joins = []
    if positional:
        deletes = f"read_parquet([{', '.join(map(literal, positional))}])"
        joins.append(f"ANTI JOIN (SELECT regexp_replace(file_path, '^file:(//)?', '') AS f, pos FROM {deletes}) AS p "
                     "ON p.f = d.filename AND p.pos = d.file_row_number")
    for i, ((path, ids), targets) in enumerate(sorted(equality.items())):
        try:
            columns = _equality_columns(con, path, list(ids))
        except Exception as exc:
            raise SourceError(f"reading equality delete file {path}: {exc}") from None
        missing = [c for c in columns if c not in types]
        if missing:
            raise SourceError(f"equality delete file {path}: columns {missing} are not in the data files")
        on = [f"d.{quote(c)} IS NOT DISTINCT FROM e{i}.{quote(c)}" for c in columns]
        if len(targets) < len(paths):
            on.insert(0, f"d.filename IN ({', '.join(map(literal, targets))})")
        cols = ", ".join(map(quote, columns))
        joins.append(f"ANTI JOIN (SELECT DISTINCT {cols} FROM read_parquet({literal(path)})) AS e{i} ON {' AND '.join(on)}")
    select = "d.* EXCLUDE (filename, file_row_number)" if with_rows else "d.*"
    sql = f"SELECT {select} FROM {scan} AS d {' '.join(joins)}"
    return sql + (f" WHERE {' AND '.join(where)}" if where else "")


# -- SQL -----------------------------------------------------------------------------------------------

def sql_target(catalog: cpb.Catalog) -> _jdbc.JdbcTarget:
    """The connection of a JDBC or StarRocks catalog (secret references unresolved)."""
    kind = catalog.WhichOneof("catalog_type")
    if kind == "jdbc":
        return _jdbc.parse_jdbc(catalog.jdbc.uri, catalog.jdbc.driver)
    if kind == "starrocks":
        from leibrix.sources._starrocks import parse_dsn

        return parse_dsn(catalog.starrocks.dsn)
    raise SourceError(f"a SQL read needs a jdbc or starrocks catalog, the plan's source has {kind or 'none'}")


def sql_params(read: pb.SqlRead, *, aware: bool = False) -> dict[str, object]:
    """The query's parameters as Python values (timestamps naive UTC unless ``aware``)."""
    out: dict[str, object] = {}
    for p in read.params:
        kind = p.WhichOneof("value")
        if kind == "timestamp":
            dt = p.timestamp.ToDatetime(tzinfo=timezone.utc)
            out[p.name] = dt if aware else dt.replace(tzinfo=None)
        elif kind == "date":
            out[p.name] = date.fromisoformat(p.date)
        elif kind is None:
            out[p.name] = None
        else:
            out[p.name] = getattr(p, kind)
    return out


def _column(values: tuple, t: pa.DataType | None) -> pa.Array:
    if t is None:
        return pa.array(values)
    try:
        return pa.array(values, type=t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError):
        # a driver's representation of the type (SQLite's text timestamps, Decimal for float, ...)
        return pa.array(values).cast(t)


def sql_batches(catalog: cpb.Catalog, read: pb.SqlRead, schema: pa.Schema | None, *,
                time_column: str = "", batch_rows: int = BATCH_ROWS,
                progress: Callable[[int], None] | None = None) -> Iterator[pa.RecordBatch]:
    """Run the plan's query and yield its rows as Arrow batches of ``schema``'s types (see the module docstring).

    With no ``schema`` the types are inferred from the first batch. ``progress``
    is called with the rows fetched so far after every batch.

    Raises
    ------
    SourceError
        The driver's error (connecting, running or fetching), redacted.
    """
    import sqlalchemy as sa

    target = sql_target(catalog)
    aware = bool(schema is not None and time_column in schema.names and
                 pa.types.is_timestamp(schema.field(time_column).type) and schema.field(time_column).type.tz)
    params = sql_params(read, aware=aware)
    rows_so_far = 0
    try:
        eng = _jdbc.engine(target)
    except Exception as exc:
        raise _error(exc, target) from None
    try:
        with eng.connect() as conn:
            if catalog.WhichOneof("catalog_type") == "starrocks":
                name = catalog.starrocks.internal_catalog_name
                if name and name != "default_catalog":
                    conn.execute(sa.text(f"SET CATALOG {conn.dialect.identifier_preparer.quote(name)}"))
            if target.drivername.startswith("postgresql") and _pgcopy.supports(schema):
                for batch in _pgcopy.copy_batches(conn, read.query, params, schema):
                    rows_so_far += batch.num_rows
                    yield batch
                    if progress is not None:
                        progress(rows_so_far)
                return
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(
                sa.text(read.query), params)
            names = list(result.keys())
            if schema is not None and names != schema.names:
                raise SourceError(f"the query returns columns {names}, the plan's schema has {schema.names}")
            types = [schema.field(i).type for i in range(len(names))] if schema is not None else [None] * len(names)
            while rows := result.fetchmany(batch_rows):
                columns = list(zip(*rows))
                arrays = [_column(c, t) for c, t in zip(columns, types)]
                if schema is None:
                    schema = pa.schema([pa.field(n, a.type) for n, a in zip(names, arrays)])
                    types = list(schema.types)
                rows_so_far += len(rows)
                yield pa.RecordBatch.from_arrays(arrays, schema=schema)
                if progress is not None:
                    progress(rows_so_far)
    except SourceError:
        raise
    except Exception as exc:
        raise _error(exc, target) from None
    finally:
        eng.dispose()


def _error(exc: BaseException, target: _jdbc.JdbcTarget) -> SourceError:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip()
    text = text.splitlines()[0] if text else type(orig).__name__
    return SourceError(f"{target.field}: {target.shown}: {_secrets.scrub(text, *_jdbc.secrets_of(target))}")


# -- one epoch as a table --------------------------------------------------------------------------------

def create_epoch_table(con: duckdb.DuckDBPyConnection, target: str, plan: pb.LoadPlan, planned: pa.Schema | None,
                       *, batch_rows: int = BATCH_ROWS, progress: Callable[[int], None] | None = None) -> None:
    """``CREATE OR REPLACE TABLE target`` on ``con`` from ``plan.read``, in ``planned``'s column order and types.

    ``target`` is the table's name as SQL: quoted, possibly schema-qualified
    (``"tenant_acme"."orders__e1"``).

    ``progress`` is called with the rows read so far after every batch of a
    SQL read. An epoch no data file holds rows of is an empty table of the
    planned schema.

    Raises
    ------
    SourceError
        The source's error, or a read naming neither Iceberg nor SQL.
    SchemaMismatch
        The data files' columns cannot be cast to the planned types.
    """
    read, part = plan.read, plan.resolved_partition
    kind = read.WhichOneof("read")
    if kind == "iceberg":
        query = iceberg_query(con, read.iceberg, part)
        if query is None:  # an epoch no data file holds rows of
            _create_from(con, target, planned.empty_table() if planned is not None else None)
            return
        try:
            con.execute(f"CREATE OR REPLACE TABLE {target} AS "
                        f"SELECT {_projection(con, f'({query})', planned)} FROM ({query})")
        except duckdb.ConversionException as exc:
            raise SchemaMismatch(f"the data files' columns cannot be cast to the plan's schema: "
                                 f"{str(exc).splitlines()[0]}") from None
    elif kind == "sql":
        batches = sql_batches(plan.source.catalog, read.sql, planned, time_column=part.time_column_name,
                              batch_rows=batch_rows, progress=progress)
        first = next(batches, None)  # connects and runs the query here: its errors are raised as they are
        if first is None:
            _create_from(con, target, planned.empty_table() if planned is not None else None)
            return
        failed: list[BaseException] = []

        def stream():
            yield first
            try:
                yield from batches
            except BaseException as exc:
                failed.append(exc)
                raise

        # DuckDB pulls the batches while the driver fetches the next ones: one statement, no per-batch INSERT
        try:
            _create_from(con, target, pa.RecordBatchReader.from_batches(first.schema, stream()))
        except Exception:
            if failed:
                raise failed[0] from None
            raise
        finally:
            batches.close()  # a load DuckDB gave up on (out of memory) closes its source connection now
    else:
        raise SourceError("load_plan.read names neither an iceberg nor a sql read")


def _create_from(con: duckdb.DuckDBPyConnection, target: str, data) -> None:
    """Create ``target`` (quoted SQL name) from an Arrow table or record batch reader already of the planned types."""
    if data is None:
        raise SourceError("the epoch has nothing to read and the plan carries no arrow_schema")
    view = f"__leibrix_src_{threading.get_ident()}"
    con.register(view, data)
    try:
        con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT * FROM {quote(view)}")
    finally:
        con.unregister(view)


def _projection(con: duckdb.DuckDBPyConnection, source: str, planned: pa.Schema | None) -> str:
    """The planned columns of ``source``, in planned order, each cast to its planned DuckDB type when it differs."""
    if planned is None:
        return "*"
    have = {r[0]: r[1] for r in con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
    view = f"__leibrix_planned_{threading.get_ident()}"
    con.register(view, planned.empty_table())
    try:
        want = [(r[0], r[1]) for r in con.execute(f"DESCRIBE SELECT * FROM {quote(view)}").fetchall()]
    finally:
        con.unregister(view)
    missing = [c for c, _ in want if c not in have]
    if missing:
        raise SourceError(f"columns {missing} of the plan's schema are not in the source")
    return ", ".join(quote(c) if have[c] == t else f"CAST({quote(c)} AS {t}) AS {quote(c)}" for c, t in want)
