"""SQL tables (PostgreSQL, MySQL/MariaDB, SQLite) through SQLAlchemy: reflection, statistics and one COUNT.

For one admission the connector runs, on one connection:

1. reflection of ``database.table`` (the schema: PostgreSQL schema, MySQL
   database; ignored by SQLite) → the Arrow schema (:data:`ARROW_TYPES`);
2. the table's size from the database's statistics: PostgreSQL
   ``pg_total_relation_size`` and ``pg_class.reltuples`` (plus ``pg_stats.avg_width``
   for string widths), MySQL/MariaDB ``information_schema.tables``
   ``data_length``/``table_rows``/``update_time``, SQLite the ``dbstat`` table when
   compiled in;
3. **one** grouped, bounded ``COUNT``: rows inside the admission's windows
   (and dimension ``IN`` lists) grouped by window and dimension values. The
   window of a row is a nested ``CASE`` that binary-searches the window starts
   (``log2(windows)`` comparisons per row, any window shape, no dialect
   date arithmetic), computed in a subquery and grouped outside it.

Per process, one engine is kept per resolved URL, and a table's reflection
(step 1, with its indexes) per (database URL, schema, table). Statistics
(step 2) are read for every request, with a schema token: PostgreSQL the
table's ``pg_class`` row (oid, relfilenode, column count, xmin), MySQL/MariaDB
its ``create_time`` and its columns' names and types, SQLite ``PRAGMA schema_version``. The kept reflection is
used while the token is unchanged and for at most :data:`REFLECTION_TTL_S`
(30 s), so a recreated or altered table is reflected again at once, and a
change no token shows (a second index, on PostgreSQL) at most that late.
The ``COUNT`` runs for every request: rows are never older than the request.

Rows are exact (counted). ``source_bytes`` apportions the table's size by rows:
``table_bytes × rows / max(table_rows_stat, rows counted)``; when the
statistics have no row count the counted rows stand for the whole table.
``scan_cost_bytes`` is that share when an index leads with the time column
(a range scan), else the whole table (a full scan). String widths: PostgreSQL's
``avg_width``, else :data:`leibrix.sources._sizes.DEFAULT_STRING_BYTES` capped by a declared
``VARCHAR(n)``. ``version``: MySQL/MariaDB's ``update_time`` when the engine keeps
it, else ``None`` (PostgreSQL and SQLite keep no table version).

Time column types: timestamps (naive ones are read as UTC), dates, integers
(epoch milliseconds) and strings holding ISO-8601 text (compared as text:
``YYYY-MM-DD`` bounds for day-aligned windows, else ``YYYY-MM-DD HH:MM:SS``).

Each epoch's ``SqlRead`` is ``SELECT <every column> FROM <table> WHERE time >= :t_start
AND time < :t_end [AND dim = :d0 ...]`` with the parameters already converted
by the dialect (what ``connection.execute(text(read.sql()), read.params)`` takes).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, datetime, timezone

import pyarrow as pa

from leibrix.domain._errors import ApiError, InvalidArgument, NotFound
from leibrix.sources import _jdbc, _sizes
from leibrix.sources._lru import Lru
from leibrix.sources._types import TIME_FIELD, EpochPlan, SourcePlan, SourceRequest, SqlRead, dimension_field

__all__ = ["ARROW_TYPES", "Partition", "SqlConnector", "TableStats", "arrow_type"]

#: How reflected SQLAlchemy types become Arrow types (checked in this order; anything else is read as text).
ARROW_TYPES = """
SQLite: integer → int64, real → float64 (its storage classes); elsewhere:
boolean → bool; tinyint → int8; smallint → int16; integer, mediumint → int32; bigint → int64
(MySQL unsigned → uint8/16/32/64); real, MySQL float → float32; double, float → float64;
numeric(p, s) → decimal128(p, s) (decimal256 above 38 digits), numeric without precision → float64;
date → date32; timestamp/datetime → timestamp[us] (with time zone → timestamp[us, tz=UTC]); time → time64[us];
interval → duration[us]; bytea/blob/binary → binary; char/varchar/text/enum/json/uuid/anything else → string
"""


def arrow_type(t, dialect: str = "") -> pa.DataType:
    """The Arrow type of a reflected SQLAlchemy column type (see :data:`ARROW_TYPES`).

    SQLite stores every integer in 8 bytes and every ``REAL`` as a double, so
    with ``dialect="sqlite"`` integers are ``int64`` and floats ``float64``.
    """
    import sqlalchemy as sa

    name = type(t).__name__.upper()
    if dialect == "sqlite" and isinstance(t, (sa.Integer, sa.Float)) and not isinstance(t, sa.Boolean):
        return pa.int64() if isinstance(t, sa.Integer) else pa.float64()
    unsigned = bool(getattr(t, "unsigned", False))
    if isinstance(t, sa.Boolean):
        return pa.bool_()
    if name == "TINYINT":
        return pa.uint8() if unsigned else pa.int8()
    if isinstance(t, sa.SmallInteger):
        return pa.uint16() if unsigned else pa.int16()
    if isinstance(t, sa.BigInteger):
        return pa.uint64() if unsigned else pa.int64()
    if isinstance(t, sa.Integer):
        return pa.uint32() if unsigned else pa.int32()
    if isinstance(t, sa.Float) or name in ("REAL", "DOUBLE", "DOUBLE_PRECISION", "FLOAT"):
        return pa.float32() if name in ("REAL", "FLOAT") and not isinstance(t, sa.Double) and \
            (name == "REAL" or getattr(t, "precision", None) is None or t.precision <= 24) else pa.float64()
    if isinstance(t, sa.Numeric):
        p, s = getattr(t, "precision", None), getattr(t, "scale", None) or 0
        if not p:
            return pa.float64()
        return pa.decimal128(p, s) if p <= 38 else pa.decimal256(min(p, 76), s)
    if isinstance(t, sa.DateTime):
        return pa.timestamp("us", tz="UTC") if getattr(t, "timezone", False) else pa.timestamp("us")
    if isinstance(t, sa.Date):
        return pa.date32()
    if isinstance(t, sa.Time):
        return pa.time64("us")
    if isinstance(t, sa.Interval):
        return pa.duration("us")
    if isinstance(t, sa.LargeBinary) or isinstance(t, sa.types._Binary):
        return pa.binary()
    return pa.string()


@dataclass(frozen=True, slots=True)
class TableStats:
    """What the database's statistics say about the whole table (``None``: it does not know).

    ``schema_token`` changes when the table is recreated or (mostly) altered
    (see the module docstring); ``None`` where the database shows none.
    """

    total_bytes: int | None
    rows: int | None
    version: str | None
    string_widths: dict[str, float]
    schema_token: object = None


@dataclass(frozen=True, slots=True)
class Partition:
    """One partition as the source describes it: ``[start_ms, end_ms)`` of the time column, bytes, rows."""

    name: str
    start_ms: int | None
    end_ms: int | None
    data_bytes: int
    rows: int
    version: int = 0


def _window_sizes(windows: list[tuple[int, int]], parts: list[Partition]) -> list[tuple[float, float, int]]:
    """Per window: (bytes, rows) of its share of every overlapping partition, and the bytes of those partitions whole."""
    out = []
    for s, e in windows:
        b = r = 0.0
        scan = 0
        for p in parts:
            if p.start_ms is None or p.end_ms is None or p.end_ms <= s or p.start_ms >= e:
                continue
            f = (min(e, p.end_ms) - max(s, p.start_ms)) / (p.end_ms - p.start_ms)
            b += p.data_bytes * f
            r += p.rows * f
            scan += p.data_bytes
        out.append((b, r, scan))
    return out


def _time_kind(t: pa.DataType) -> str | None:
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_string(t):
        return "string"
    return None


def _bound(kind: str, t: pa.DataType, ms: int, day_aligned: bool):
    dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    if kind == "timestamp":
        return dt if t.tz else dt.replace(tzinfo=None)
    if kind == "date":
        return dt.date()
    if kind == "int":
        return ms
    return dt.strftime("%Y-%m-%d") if day_aligned else dt.strftime("%Y-%m-%d %H:%M:%S")


def _typed(t: pa.DataType, text: str):
    if pa.types.is_integer(t):
        return int(text)
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return float(text)
    if pa.types.is_boolean(t):
        if text.lower() not in ("true", "false", "1", "0"):
            raise ValueError(text)
        return text.lower() in ("true", "1")
    if pa.types.is_date(t):
        return date.fromisoformat(text)
    if pa.types.is_string(t):
        return text
    raise ValueError(f"dimension columns of type {t} are not supported")


@dataclass(frozen=True, slots=True)
class _Reflected:
    table: object  # sqlalchemy.Table
    arrow: pa.Schema
    leading: frozenset[str]
    token: object
    checked: float


#: Seconds at most a table's reflection (columns, indexes) is reused while its schema token is unchanged.
REFLECTION_TTL_S = 30.0
#: Tables whose reflection is kept.
MAX_REFLECTED = 256
_reflected: Lru[_Reflected] = Lru(MAX_REFLECTED)


def clear() -> None:
    """Forget every kept reflection (pooled engines stay)."""
    _reflected.clear()


class SqlConnector:
    """Plans SQL epochs from reflection, statistics and one grouped COUNT (see the module docstring).

    Subclasses adjust one step each: ``stats`` (the table's size) and
    ``partition_sizes`` (per-window sizes a source keeps itself, e.g. StarRocks).
    ``pooled``: connect through the process's engine of the resolved URL
    (:func:`leibrix.sources._jdbc.shared_engine`) rather than an engine of its
    own; ``reflection_ttl_s``: how long at most a table's reflection is reused.
    """

    uri_field = "source.catalog.jdbc.uri"
    pooled = True
    reflection_ttl_s = REFLECTION_TTL_S

    def target(self, request: SourceRequest) -> _jdbc.JdbcTarget:
        """The connection target of ``request`` (``JdbcCatalog{uri, driver}``)."""
        return _jdbc.parse_jdbc(request.uri, request.driver, field=self.uri_field)

    def plan(self, request: SourceRequest) -> SourcePlan:
        """Reflect the table, read its statistics, count every epoch's rows in one query, and plan each epoch.

        Parameters
        ----------
        request:
            The admission's source, windows and dimension values.

        Returns
        -------
        SourcePlan
            Exact per-epoch rows; ``version`` as the module docstring says.

        Raises
        ------
        InvalidArgument, NotFound, PermissionDenied, Unavailable, FailedPrecondition
            See :mod:`leibrix.sources._jdbc` for connection errors; a missing
            table is ``NOT_FOUND`` naming ``source.table``; bad time/dimension
            columns are ``INVALID_ARGUMENT`` naming their request field.
        """
        target = self.target(request)
        eng = None
        try:
            if self.pooled:
                key, eng = _jdbc.shared_engine(target)
            else:
                eng = _jdbc.engine(target)
                key = eng.url.render_as_string(hide_password=False)
            with eng.connect() as conn:
                return self._plan(conn, request, target, key)
        except ApiError:
            raise
        except Exception as exc:
            raise _jdbc.connection_error(exc, target) from None
        finally:
            if eng is not None and not self.pooled:
                eng.dispose()

    def schema_name(self, conn, request: SourceRequest) -> str | None:
        """The reflection schema: the request's database (SQLite has none)."""
        if conn.dialect.name == "sqlite":
            return None
        return request.database or None

    def _reflect(self, conn, request: SourceRequest, schema: str | None, qualified: str, target, token) -> _Reflected:
        import sqlalchemy as sa

        insp = sa.inspect(conn)
        if not insp.has_table(request.table, schema=schema):
            raise NotFound(f"source.table: table {qualified} not found in {target.shown}")
        table = sa.Table(request.table, sa.MetaData(), autoload_with=conn, schema=schema)
        arrow = pa.schema([pa.field(c.name, arrow_type(c.type, conn.dialect.name), nullable=bool(c.nullable)) for c in table.columns])
        return _Reflected(table, arrow, self._leading_columns(insp, request.table, schema), token, time.monotonic())

    def _plan(self, conn, request: SourceRequest, target, engine_key: str) -> SourcePlan:
        schema = self.schema_name(conn, request)
        qualified = f"{schema}.{request.table}" if schema else request.table
        key = (engine_key, request.catalog_name, schema, request.table)
        reflected = _reflected.get(key)
        stats = self.stats(conn, schema, request.table, reflected.table if reflected else None)
        if reflected is None or reflected.token != stats.schema_token \
                or time.monotonic() - reflected.checked >= self.reflection_ttl_s:
            reflected = self._reflect(conn, request, schema, qualified, target, stats.schema_token)
            _reflected.put(key, reflected)
        table, arrow = reflected.table, reflected.arrow
        if request.time_column not in table.c:
            raise InvalidArgument(TIME_FIELD, f"no column {request.time_column!r} in {qualified}")
        time_col = table.c[request.time_column]
        time_type = arrow.field(request.time_column).type
        kind = _time_kind(time_type)
        declared = {"TIMESTAMP": "timestamp", "DATE": "date", "INT64": "int", "STRING": "string"}.get(request.time_type)
        if kind is None or (declared and declared != kind):
            want = request.time_type or "a timestamp, date, integer (epoch ms) or ISO-text"
            raise InvalidArgument(TIME_FIELD, f"column {request.time_column!r} of {qualified} is "
                                              f"{time_col.type} ({time_type}), not {want} column")
        dims = []
        for i, d in enumerate(request.dimensions):
            if d.column not in table.c:
                raise InvalidArgument(dimension_field(i), f"no column {d.column!r} in {qualified}")
            t = arrow.field(d.column).type
            typed = {}
            for j, v in enumerate(d.values):
                try:
                    typed[_typed(t, v)] = v
                except ValueError as exc:
                    raise InvalidArgument(dimension_field(i, f"values[{j}]"),
                                          f"{v!r} is not a value of column {d.column!r} ({t}): {exc}") from None
            dims.append((table.c[d.column], typed))
        windows = list(request.windows)
        day_aligned = all(s % 86_400_000 == 0 and e % 86_400_000 == 0 for s, e in windows)
        bound = lambda ms: _bound(kind, time_type, ms, day_aligned)  # noqa: E731
        counts = self.count(conn, time_col, [(bound(s), bound(e)) for s, e in windows], dims)
        indexed = request.time_column in reflected.leading
        width = _sizes.row_width(arrow, self._string_widths(table, arrow, stats))
        counted_total = sum(counts.values())
        denominator = max(stats.rows or 0, counted_total)
        parts = self.partition_sizes(conn, schema, request.table)
        per_window = _window_sizes(windows, parts) if parts else None
        version = self.version(parts) if parts else stats.version
        preparer = conn.dialect.identifier_preparer
        table_sql = preparer.format_table(table)
        columns = tuple(preparer.quote(c.name) for c in table.columns)
        index_of = {w: i for i, w in enumerate(windows)}
        epochs = {}
        for key in request.epoch_keys():
            start, end, dvals = key
            w = index_of[(start, end)]
            rows = counts.get((w, dvals), 0)
            if per_window is not None:  # the source's own partition sizes: bytes per row of the window's partitions
                w_bytes, w_rows, w_scan = per_window[w]
                share = rows * w_bytes / w_rows if w_rows else 0.0
                scan = w_scan
            else:
                share = stats.total_bytes * rows / denominator if stats.total_bytes and denominator else rows * width
                scan = int(round(share)) if indexed or not stats.total_bytes else stats.total_bytes
            read = self._read(conn, table, table_sql, columns, time_col, bound(start), bound(end), dvals)
            epochs[key] = EpochPlan(start, end, dvals, read, rows, True, int(round(share)),
                                    _sizes.memory_bytes(rows, width), int(scan))
        return SourcePlan(version, arrow, epochs)

    def partition_sizes(self, conn, schema: str | None, table_name: str) -> list[Partition] | None:
        """Per-partition time ranges and sizes the source keeps itself; ``None`` (the default) when it keeps none."""
        return None

    def version(self, parts: list[Partition]) -> str | None:
        """The table version implied by its partitions (sources with ``partition_sizes`` override it)."""
        return None

    def count(self, conn, time_col, bounds, dims) -> dict[tuple[int, tuple[tuple[str, str], ...]], int]:
        """Rows per ``(window index, sorted dim pairs)`` with one grouped query (see the module docstring)."""
        import sqlalchemy as sa

        starts = [s for s, _ in bounds]
        gaps = [i < len(bounds) - 1 and bounds[i][1] != bounds[i + 1][0] for i in range(len(bounds))]

        def bucket(lo: int, hi: int):
            if lo == hi:
                leaf = sa.literal(lo, sa.Integer)
                return sa.case((time_col < bounds[lo][1], leaf), else_=-1) if gaps[lo] else leaf
            mid = (lo + hi + 1) // 2
            return sa.case((time_col < starts[mid], bucket(lo, mid - 1)), else_=bucket(mid, hi))

        ranges, cur = [], None
        for s, e in bounds:
            if cur and s == cur[1]:
                cur[1] = e
            else:
                cur = [s, e]
                ranges.append(cur)
        where = [sa.or_(*[sa.and_(time_col >= s, time_col < e) for s, e in ranges])]
        for col, typed in dims:
            where.append(col.in_(list(typed)))
        inner = sa.select(bucket(0, len(bounds) - 1).label("w"), *[c.label(f"d{i}") for i, (c, _) in enumerate(dims)])
        sub = inner.where(*where).subquery("epochs")
        cols = [sub.c.w, *[sub.c[f"d{i}"] for i in range(len(dims))]]
        stmt = sa.select(*cols, sa.func.count().label("n")).group_by(*cols)
        names = [c.name for c, _ in dims]
        order = sorted(range(len(names)), key=lambda k: names[k])
        folded = [{str(k).casefold(): v for k, v in typed.items()} for _, typed in dims]
        out: dict = defaultdict(int)
        for row in conn.execute(stmt):
            if row[0] < 0:
                continue
            texts = []
            for i, (_, typed) in enumerate(dims):
                v = row[1 + i]
                text = typed.get(v)
                if text is None:
                    text = folded[i].get(str(v).casefold())
                texts.append(text)
            if None in texts:
                continue
            out[(row[0], tuple((names[k], texts[k]) for k in order))] += row[-1]
        return out

    def stats(self, conn, schema: str | None, table_name: str, table) -> TableStats:
        """The table's size, row count, version and string widths from the database's statistics."""
        import sqlalchemy as sa

        dialect = conn.dialect.name
        if dialect == "postgresql":
            row = conn.execute(sa.text(
                "SELECT pg_total_relation_size(c.oid), c.reltuples, c.oid, c.relfilenode, c.relnatts, c.xmin::text "
                "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :t"),
                {"s": schema or "public", "t": table_name}).first()
            widths = {r[0]: float(r[1]) for r in conn.execute(sa.text(
                "SELECT attname, avg_width FROM pg_stats WHERE schemaname = :s AND tablename = :t"),
                {"s": schema or "public", "t": table_name})}
            rows = int(row[1]) if row and row[1] is not None and row[1] >= 0 else None
            return TableStats(int(row[0]) if row else None, rows, None, widths, tuple(row[2:]) if row else None)
        if dialect in ("mysql", "mariadb"):
            row = conn.execute(sa.text(
                "SELECT t.data_length, t.table_rows, t.update_time, t.create_time, "
                "(SELECT GROUP_CONCAT(c.column_name, ' ', c.column_type, ' ', c.is_nullable ORDER BY c.ordinal_position) "
                " FROM information_schema.columns c WHERE c.table_schema = t.table_schema AND c.table_name = t.table_name) "
                "FROM information_schema.tables t "
                "WHERE t.table_schema = COALESCE(:s, DATABASE()) AND t.table_name = :t"),
                {"s": schema, "t": table_name}).first()
            if not row:
                return TableStats(None, None, None, {})
            version = row[2].isoformat() if row[2] is not None else None
            return TableStats(int(row[0]) if row[0] is not None else None,
                              int(row[1]) if row[1] else None, version, {}, (row[3], row[4]))
        if dialect == "sqlite":
            try:
                size = conn.execute(sa.text("SELECT SUM(pgsize) FROM dbstat WHERE name = :t"), {"t": table_name}).scalar()
            except Exception:  # dbstat not compiled in
                size = None
            token = conn.execute(sa.text("PRAGMA schema_version")).scalar()
            return TableStats(int(size) if size else None, None, None, {}, token)
        return TableStats(None, None, None, {})

    @staticmethod
    def _string_widths(table, arrow: pa.Schema, stats: TableStats) -> dict[str, float]:
        out = {}
        for c in table.columns:
            t = arrow.field(c.name).type
            if not (pa.types.is_string(t) or pa.types.is_binary(t)):
                continue
            if c.name in stats.string_widths:
                out[c.name] = stats.string_widths[c.name]
            elif getattr(c.type, "length", None):
                out[c.name] = float(min(c.type.length, _sizes.DEFAULT_STRING_BYTES))
        return out

    @staticmethod
    def _leading_columns(insp, table_name: str, schema: str | None) -> frozenset[str]:
        """The first column of the primary key and of each index (what a range scan can start from)."""
        try:
            indexes = insp.get_indexes(table_name, schema=schema)
            pk = insp.get_pk_constraint(table_name, schema=schema).get("constrained_columns") or []
        except Exception:  # reflection of indexes unsupported: assume a full scan
            return frozenset()
        return frozenset([*pk[:1], *((ix.get("column_names") or [None])[0] for ix in indexes)]) - {None}

    @staticmethod
    def _read(conn, table, table_sql, columns, time_col, start, end, dvals) -> SqlRead:
        preparer = conn.dialect.identifier_preparer

        def processed(col, value):
            proc = col.type.bind_processor(conn.dialect)
            return proc(value) if proc else value

        params = {"t_start": processed(time_col, start), "t_end": processed(time_col, end)}
        quoted = preparer.quote(time_col.name)
        pred = [f"{quoted} >= :t_start", f"{quoted} < :t_end"]
        for i, (name, text) in enumerate(dvals):
            col = table.c[name]
            params[f"d{i}"] = processed(col, _typed(arrow_type(col.type, conn.dialect.name), text))
            pred.append(f"{preparer.quote(name)} = :d{i}")
        return SqlRead(table_sql, columns, " AND ".join(pred), params)

