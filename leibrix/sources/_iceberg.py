"""Iceberg tables through pyiceberg: every epoch of an admission planned in one pass over the manifests.

Catalog URI
    Whatever pyiceberg's ``load_catalog(uri=...)`` accepts: a SQL catalog
    (``sqlite:////path/catalog.db``, ``postgresql+psycopg://user:${env:PW}@host/db``)
    or a REST catalog (``http(s)://host/...``). Catalog properties other than
    the URI go in the fragment as ``key=value`` pairs, e.g.
    ``sqlite:////data/cat.db#name=prod`` (the SQL catalog keys its tables by
    catalog ``name``, default ``default``) or ``https://rest/api#warehouse=wh&token=${env:TOKEN}``.
    ``${env:..}``/``${file:..}`` references are resolved only when the catalog is loaded.

One pass
    ``scan(row_filter).plan_files()`` reads every manifest on every call, so
    planning 365 epochs with it reads the manifests 365 times. Instead the
    connector builds the *union* filter of the admission (the windows merged
    into ranges, AND the dimension ``IN`` lists), plans the files once with
    pyiceberg's manifest planner (manifest-summary, partition and column-metrics
    pruning; positional deletes matched by its delete file index; no per-file
    residuals, which are most of ``plan_files()``' cost), and then assigns each planned data
    file to the epochs it may hold rows of:

    * time: the file's time interval is the intersection of what its partition
      values say (``identity``, ``hour``, ``day``, ``month``, ``year`` on the time
      column) and what its lower/upper column bounds say; it belongs to every
      window that interval overlaps;
    * dimensions: an ``identity`` partition value, else the column bounds,
      narrow the admitted values the file can hold; it belongs to each remaining
      combination.

Schema
    The snapshot's schema as pyiceberg maps it to Arrow, with ``large_string``
    and ``large_binary`` narrowed to ``string`` and ``binary`` (what the
    Parquet files and a DuckDB table of them hold, so a worker's table has the
    planned fingerprint).

Rows, bytes, exactness
    A file wholly inside one window whose dimension values are known (identity
    partition, or lower bound = upper bound) gives that epoch exactly its
    ``record_count``. A file spanning several epochs is apportioned: by the
    share of its time interval inside each window (uniform density), then
    equally among its dimension combinations; such an epoch is ``rows_exact=False``.
    Delete files travel with their data files (``IcebergFile.delete_files``) so
    a loader can apply them. A positional delete file that targets one data
    file (its ``file_path`` bounds are equal) subtracts its ``record_count``
    exactly; one spanning several data files is apportioned among them by
    record count, and an equality delete file subtracts nothing (which rows
    it matches is unknowable from metadata): both make the epoch inexact.
    ``source_bytes`` apportions file sizes the same way; ``scan_cost_bytes``
    is the full size of every data and delete file of the epoch (an engine
    without Leibrix reads whole files). String widths come from the column
    bounds' lengths (exact below the 16-byte truncation Iceberg writers apply)
    and column sizes per value, whichever is larger.

Errors
    A catalog that cannot be reached is ``UNAVAILABLE`` (retry later: the
    request may be right); rejected credentials (REST 401/403) are
    ``PERMISSION_DENIED``; a missing namespace or table is ``NOT_FOUND`` naming
    ``source.database`` / ``source.table``; an unknown snapshot is ``NOT_FOUND``
    naming ``source.version``; a missing or non-temporal time column and an
    unknown dimension column are ``INVALID_ARGUMENT`` naming the request field.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from urllib.parse import parse_qsl

import pyarrow as pa

from leibrix.domain._errors import ApiError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from leibrix.sources import _secrets, _sizes
from leibrix.sources._types import (
    TIME_FIELD,
    EpochKey,
    EpochPlan,
    IcebergDeleteFile,
    IcebergFile,
    IcebergRead,
    SourcePlan,
    SourceRequest,
    dimension_field,
)

__all__ = ["IcebergConnector", "union_filter"]

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
#: Iceberg's reserved field id of ``file_path`` in positional delete files.
_DELETE_FILE_PATH_ID = 2147483546
#: Iceberg writers truncate string bounds to this many characters by default.
_BOUND_TRUNCATE = 16


def _catalog_properties(uri: str) -> tuple[str, dict[str, str]]:
    base, _, fragment = uri.partition("#")
    props = dict(parse_qsl(fragment, keep_blank_values=True))
    name = props.pop("name", "default")
    props["uri"] = base
    return name, props


def _load_table(request: SourceRequest):
    from pyiceberg import exceptions as ie
    from pyiceberg.catalog import load_catalog

    field_uri = "source.catalog.iceberg.uri"
    shown = _secrets.redact(request.uri)
    name, props = _catalog_properties(request.uri)
    secrets = _secrets.secrets_in(request.uri)
    resolved = {k: _secrets.resolve(v, field_uri) for k, v in props.items()}
    missing_namespace = NotFound(f"source.database: namespace {request.database!r} not found in Iceberg catalog {shown}")
    try:
        catalog = load_catalog(name, **resolved)
        try:
            return catalog.load_table((request.database, request.table))
        except ie.NoSuchTableError:
            if not catalog.namespace_exists(request.database):
                raise missing_namespace from None
            raise
    except ApiError:
        raise
    except ie.NoSuchNamespaceError:
        raise missing_namespace from None
    except ie.NoSuchTableError:
        raise NotFound(f"source.table: table {request.database}.{request.table} not found in Iceberg catalog {shown}") from None
    except (ie.UnauthorizedError, ie.ForbiddenError, ie.AuthorizationExpiredError, ie.OAuthError) as exc:
        raise PermissionDenied(f"{field_uri}: catalog {shown} rejected the credentials: "
                               f"{_secrets.scrub(str(exc), *secrets)}") from None
    except Exception as exc:  # connection refused, DNS, timeouts: the drivers' many types
        text = _secrets.scrub(f"{type(exc).__name__}: {exc}", *secrets)
        low = text.lower()
        if "authentication failed" in low or "access denied" in low or "permission denied" in low:
            raise PermissionDenied(f"{field_uri}: catalog {shown} rejected the credentials: {text[:300]}") from None
        if _looks_unreachable(exc):
            raise Unavailable(f"{field_uri}: Iceberg catalog {shown} is unreachable: {text[:300]}") from None
        raise FailedPrecondition(f"{field_uri}: cannot load table from Iceberg catalog {shown}: {text[:300]}") from None


def _looks_unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("connect", "unable to open", "timed out", "timeout", "unreachable",
                                   "name or service", "refused", "serviceunavailable"))


# -- the time and dimension columns ------------------------------------------------------------------

@dataclass(slots=True)
class _TimeColumn:
    field_id: int
    kind: str  # "timestamp" (micros) | "date" (days) | "int" (ms) | "string" (ISO text)
    iceberg_type: object

    def literal(self, ms: int):
        if self.kind == "timestamp":
            return ms * 1000
        if self.kind == "date":
            return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date().isoformat()
        if self.kind == "int":
            return ms
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    def to_ms(self, value) -> tuple[int, int] | None:
        """``[lo, hi)`` in ms covered by one column value."""
        if value is None:
            return None
        if self.kind == "timestamp":
            if isinstance(value, datetime):
                value = int(value.replace(tzinfo=value.tzinfo or timezone.utc).timestamp() * 1_000_000)
            return value // 1000, value // 1000 + 1
        if self.kind == "date":
            if isinstance(value, date):
                value = (value - date(1970, 1, 1)).days
            return value * _DAY_MS, (value + 1) * _DAY_MS
        if self.kind == "int":
            return int(value), int(value) + 1
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            return None
        ms = int(dt.replace(tzinfo=dt.tzinfo or timezone.utc).timestamp() * 1000)
        return ms, ms + 1


def _time_column(schema, request: SourceRequest) -> _TimeColumn:
    from pyiceberg import types as it

    try:
        nf = schema.find_field(request.time_column)
    except ValueError:
        raise InvalidArgument(TIME_FIELD, f"no column {request.time_column!r} in {request.database}.{request.table}") from None
    t = nf.field_type
    if isinstance(t, (it.TimestampType, it.TimestamptzType)):
        kind = "timestamp"
    elif isinstance(t, it.DateType):
        kind = "date"
    elif isinstance(t, (it.LongType, it.IntegerType)):
        kind = "int"
    elif isinstance(t, it.StringType):
        kind = "string"
    else:
        raise InvalidArgument(TIME_FIELD, f"column {request.time_column!r} is {t}, not a timestamp, date, "
                                          "integer (epoch ms) or string column")
    declared = {"TIMESTAMP": "timestamp", "DATE": "date", "INT64": "int", "STRING": "string"}.get(request.time_type)
    if declared and declared != kind:
        raise InvalidArgument(TIME_FIELD, f"column {request.time_column!r} is {t}, not {request.time_type}")
    return _TimeColumn(nf.field_id, kind, t)


def _typed(t, text: str):
    from pyiceberg import types as it

    if isinstance(t, (it.IntegerType, it.LongType)):
        return int(text)
    if isinstance(t, (it.FloatType, it.DoubleType)):
        return float(text)
    if isinstance(t, it.BooleanType):
        if text.lower() not in ("true", "false"):
            raise ValueError(text)
        return text.lower() == "true"
    if isinstance(t, it.DateType):
        return date.fromisoformat(text)
    if isinstance(t, (it.StringType,)):
        return text
    raise ValueError(f"dimension columns of type {t} are not supported")


def _bound_value(t, value):
    """A decoded bound or partition value in the same Python type ``_typed`` produces."""
    from pyiceberg import types as it

    if isinstance(t, it.DateType) and isinstance(value, int):
        return date(1970, 1, 1) + timedelta(days=value)
    return value


# -- the union filter ----------------------------------------------------------------------------------

def _merged(windows: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for s, e in windows:
        if out and s <= out[-1][1]:
            out[-1][1] = max(out[-1][1], e)
        else:
            out.append([s, e])
    return [(s, e) for s, e in out]


def union_filter(request: SourceRequest, time: _TimeColumn, dim_values: list[tuple[str, list]]):
    """The pyiceberg expression every row of every epoch of ``request`` satisfies (and few others do)."""
    from pyiceberg.expressions import And, GreaterThanOrEqual, In, LessThan, Or

    ranges = [And(GreaterThanOrEqual(request.time_column, time.literal(s)), LessThan(request.time_column, time.literal(e)))
              for s, e in _merged(request.windows)]
    expr = ranges[0] if len(ranges) == 1 else Or(*ranges)
    for column, values in dim_values:
        expr = And(expr, In(column, values))
    return expr


def epoch_filter(request: SourceRequest, time: _TimeColumn, start: int, end: int, dims):
    """One epoch's filter (what a per-epoch planner, or a loader, would use)."""
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    expr = And(GreaterThanOrEqual(request.time_column, time.literal(start)), LessThan(request.time_column, time.literal(end)))
    for column, value in dims:
        expr = And(expr, EqualTo(column, value))
    return expr


# -- planning -----------------------------------------------------------------------------------------

@dataclass(slots=True)
class _Acc:
    files: list[IcebergFile] = field(default_factory=list)
    rows: float = 0.0
    exact: bool = True
    source_bytes: float = 0.0
    scan_bytes: int = 0
    deletes_seen: set[str] = field(default_factory=set)


@dataclass
class IcebergConnector:
    """Plans Iceberg epochs from manifests (see the module docstring). ``plan`` is the one entry point.

    ``load_table`` may be replaced (tests, a cached catalog): it takes the
    request and returns a pyiceberg ``Table``.
    """

    load_table: Callable[[SourceRequest], object] = _load_table

    def plan(self, request: SourceRequest) -> SourcePlan:
        """Resolve the snapshot and schema, then plan every epoch of ``request`` in one manifest pass.

        Parameters
        ----------
        request:
            The admission's source, windows and dimension values. ``version``,
            when set, is a snapshot id to plan at instead of the current one.

        Returns
        -------
        SourcePlan
            ``version`` is the snapshot id (``None`` for a table with no
            snapshot: every epoch is then empty).

        Raises
        ------
        InvalidArgument, NotFound, PermissionDenied, Unavailable, FailedPrecondition
            See the module docstring.
        """
        from pyiceberg.io.pyarrow import schema_to_pyarrow

        table = self.load_table(request)
        metadata = table.metadata
        snapshot = _snapshot(table, request)
        ischema = metadata.schema_by_id(snapshot.schema_id) if snapshot and snapshot.schema_id is not None else None
        ischema = ischema or metadata.schema()
        time = _time_column(ischema, request)
        dim_values: list[tuple[str, list]] = []
        dim_fields = []
        for i, d in enumerate(request.dimensions):
            try:
                nf = ischema.find_field(d.column)
            except ValueError:
                raise InvalidArgument(dimension_field(i), f"no column {d.column!r} in {request.database}.{request.table}") from None
            typed = []
            for j, v in enumerate(d.values):
                try:
                    typed.append(_typed(nf.field_type, v))
                except ValueError as exc:
                    raise InvalidArgument(dimension_field(i, f"values[{j}]"),
                                          f"{v!r} is not a value of column {d.column!r} ({nf.field_type}): {exc}") from None
            dim_values.append((d.column, typed))
            dim_fields.append(nf)
        arrow_schema = _narrow(schema_to_pyarrow(ischema, include_field_ids=False))
        if snapshot is None:
            return _empty_plan(request, arrow_schema)
        files = plan_files_once(table, snapshot, union_filter(request, time, dim_values))
        return _assign(request, table, snapshot.snapshot_id, time, dim_fields, dim_values, files, arrow_schema)


def _narrow(schema: pa.Schema) -> pa.Schema:
    """pyiceberg's ``large_string``/``large_binary`` as ``string``/``binary``: what the Parquet files and DuckDB hold."""
    def narrow(t: pa.DataType) -> pa.DataType:
        if pa.types.is_large_string(t):
            return pa.string()
        if pa.types.is_large_binary(t):
            return pa.binary()
        if pa.types.is_large_list(t):
            return pa.list_(t.value_field.with_type(narrow(t.value_type)))
        if pa.types.is_list(t):
            return pa.list_(t.value_field.with_type(narrow(t.value_type)))
        if pa.types.is_struct(t):
            return pa.struct([f.with_type(narrow(f.type)) for f in t])
        return t

    return pa.schema([f.with_type(narrow(f.type)) for f in schema], metadata=schema.metadata)


def _snapshot(table, request: SourceRequest):
    version = request.version
    if not version:
        return table.current_snapshot()
    try:
        snap = table.snapshot_by_id(int(version))
    except ValueError:
        raise InvalidArgument("source.version", f"{version!r} is not an Iceberg snapshot id") from None
    if snap is None:
        raise NotFound(f"source.version: snapshot {version} not found in {request.database}.{request.table}")
    return snap


@dataclass(slots=True)
class _Planned:
    data_file: object
    sequence_number: int
    deletes: list[IcebergDeleteFile]
    delete_files: list[object]


def plan_files_once(table, snapshot, row_filter) -> list[_Planned]:
    """One pass over ``snapshot``'s manifests with ``row_filter``: data files with the delete files that apply.

    Positional deletes are matched by pyiceberg's delete file index; equality deletes
    (which its planner refuses) are set aside during the same pass and matched
    here: same partition (or an unpartitioned delete) and a data sequence
    number below the delete's.
    """
    from pyiceberg.manifest import DataFileContent
    from pyiceberg.table import ManifestGroupPlanner
    from pyiceberg.table.delete_file_index import DeleteFileIndex

    sequence: dict[str, int] = {}
    equality: list[tuple[object, int]] = []

    def keep(entry) -> bool:
        df = entry.data_file
        if df.content == DataFileContent.EQUALITY_DELETES:
            equality.append((df, entry.sequence_number or 0))
            return False
        if df.content == DataFileContent.DATA:
            sequence[df.file_path] = entry.sequence_number or 0
        return True

    planner = ManifestGroupPlanner(table_metadata=table.metadata, io=table.io, row_filter=row_filter)
    # Manifest-summary, partition and metrics pruning, manifests read in parallel; no residuals (we group
    # files into epochs ourselves, and pyiceberg's per-file residual is most of plan_files()' time).
    data_entries = []
    index = DeleteFileIndex()
    for entry in itertools.chain.from_iterable(planner.plan_manifest_entries(snapshot.manifests(table.io))):
        if not keep(entry):
            continue
        df = entry.data_file
        if df.content == DataFileContent.DATA:
            data_entries.append(entry)
        elif df.content == DataFileContent.POSITION_DELETES:
            index.add_delete_file(entry, partition_key=df.partition)
    tasks = [(e.data_file, index.for_data_file(e.sequence_number or 0, e.data_file, partition_key=e.data_file.partition))
             for e in data_entries]
    specs = table.metadata.specs()
    out = []
    for df, positional in tasks:
        seq = sequence.get(df.file_path, 0)
        dels = [_delete(d, "position") for d in positional]
        raw = list(positional)
        for eq, eq_seq in equality:
            same_scope = specs[eq.spec_id].is_unpartitioned() or (eq.spec_id == df.spec_id and eq.partition == df.partition)
            if eq_seq > seq and same_scope:
                dels.append(_delete(eq, "equality"))
                raw.append(eq)
        out.append(_Planned(df, seq, dels, raw))
    return out


def _delete(df, kind: str) -> IcebergDeleteFile:
    return IcebergDeleteFile(df.file_path, kind, df.record_count, df.file_size_in_bytes, tuple(df.equality_ids or ()))


def _partition_interval(table, df, time: _TimeColumn) -> tuple[int, int] | None:
    from pyiceberg import transforms as tr

    spec = table.metadata.specs()[df.spec_id]
    best = None
    for pos, pf in enumerate(spec.fields):
        if pf.source_id != time.field_id:
            continue
        value = df.partition[pos]
        if value is None:
            continue
        t = pf.transform
        if isinstance(t, tr.IdentityTransform):
            iv = time.to_ms(value)
        elif isinstance(t, tr.HourTransform):
            iv = (value * _HOUR_MS, (value + 1) * _HOUR_MS)
        elif isinstance(t, tr.DayTransform):
            v = (value - date(1970, 1, 1)).days if isinstance(value, date) else value
            iv = (v * _DAY_MS, (v + 1) * _DAY_MS)
        elif isinstance(t, tr.MonthTransform):
            iv = (_month_ms(value), _month_ms(value + 1))
        elif isinstance(t, tr.YearTransform):
            iv = (_month_ms(value * 12), _month_ms(value * 12 + 12))
        else:
            continue
        best = iv if best is None else (max(best[0], iv[0]), min(best[1], iv[1]))
    return best


def _month_ms(months: int) -> int:
    y, m = divmod(months, 12)
    return int(datetime(1970 + y, m + 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def _file_interval(table, df, time: _TimeColumn, full: tuple[int, int]) -> tuple[tuple[int, int], bool]:
    """The file's ``[lo, hi)`` ms interval and whether anything bounded it."""
    from pyiceberg.conversions import from_bytes

    iv = _partition_interval(table, df, time)
    lo_b, hi_b = (df.lower_bounds or {}).get(time.field_id), (df.upper_bounds or {}).get(time.field_id)
    if lo_b is not None and hi_b is not None and time.kind != "string":
        lo = time.to_ms(from_bytes(time.iceberg_type, lo_b))
        hi = time.to_ms(from_bytes(time.iceberg_type, hi_b))
        if lo and hi:
            bounds = (lo[0], hi[1])
            iv = bounds if iv is None else (max(iv[0], bounds[0]), min(iv[1], bounds[1]))
    if iv is None:
        return full, False
    return iv, True


def _dimension_candidates(table, df, dim_fields, dim_values) -> tuple[list[list[tuple[object, str]]], bool]:
    """Per dimension, the admitted ``(typed, text)`` values the file may hold, and whether each is certain."""
    from pyiceberg import transforms as tr
    from pyiceberg.conversions import from_bytes

    spec = table.metadata.specs()[df.spec_id]
    out, certain = [], True
    for nf, (column, typed_values) in zip(dim_fields, dim_values):
        pairs = [(tv, str(tv) if not isinstance(tv, bool) else str(tv).lower()) for tv in typed_values]
        ident = None
        for pos, pf in enumerate(spec.fields):
            if pf.source_id == nf.field_id and isinstance(pf.transform, tr.IdentityTransform):
                ident = _bound_value(nf.field_type, df.partition[pos])
        if ident is not None:
            pairs = [p for p in pairs if p[0] == ident]
        else:
            lo_b, hi_b = (df.lower_bounds or {}).get(nf.field_id), (df.upper_bounds or {}).get(nf.field_id)
            if lo_b is not None and hi_b is not None:
                lo, hi = from_bytes(nf.field_type, lo_b), from_bytes(nf.field_type, hi_b)
                truncated = isinstance(hi, str) and len(hi) >= _BOUND_TRUNCATE
                pairs = [p for p in pairs if lo <= p[0] and (truncated or p[0] <= hi)]
                certain = certain and lo == hi and not truncated
            else:
                certain = False
        out.append(pairs)
    return out, certain


def _string_lengths(table, files: list[_Planned], arrow_schema: pa.Schema) -> dict[str, float]:
    from pyiceberg import types as it

    schema = table.metadata.schema()
    out: dict[str, float] = {}
    for f in arrow_schema:
        if not (pa.types.is_string(f.type) or pa.types.is_binary(f.type) or pa.types.is_large_string(f.type)):
            continue
        try:
            nf = schema.find_field(f.name)
        except ValueError:
            continue
        if not isinstance(nf.field_type, (it.StringType, it.BinaryType)):
            continue
        size = values = 0
        bound_len = []
        for p in files:
            df = p.data_file
            size += (df.column_sizes or {}).get(nf.field_id, 0)
            values += (df.value_counts or {}).get(nf.field_id, 0)
            for b in ((df.lower_bounds or {}).get(nf.field_id), (df.upper_bounds or {}).get(nf.field_id)):
                if b is not None:
                    bound_len.append(len(b))
        if values or bound_len:
            per_value = size / values if values else 0.0
            mean_bound = sum(bound_len) / len(bound_len) if bound_len else 0.0
            out[f.name] = max(per_value, mean_bound)
    return out


def _assign(request, table, snapshot_id, time, dim_fields, dim_values, planned, arrow_schema) -> SourcePlan:
    windows = list(request.windows)
    starts = [s for s, _ in windows]
    ends = [e for _, e in windows]
    full = (starts[0], ends[-1])
    names = [c for c, _ in dim_values]
    order = sorted(range(len(names)), key=lambda k: names[k])
    acc: dict[EpochKey, _Acc] = defaultdict(_Acc)
    # how many planned data files each positional delete file is attached to (for apportioning)
    attached: dict[str, int] = defaultdict(int)
    attached_rows: dict[str, int] = defaultdict(int)
    for p in planned:
        for d in p.deletes:
            if d.kind == "position":
                attached[d.path] += 1
                attached_rows[d.path] += p.data_file.record_count
    for p in planned:
        df = p.data_file
        (lo, hi), _ = _file_interval(table, df, time, full)
        if hi <= lo:
            continue
        first, last = bisect.bisect_right(ends, lo), bisect.bisect_left(starts, hi)
        if first >= last:
            continue
        candidates, dims_certain = _dimension_candidates(table, df, dim_fields, dim_values)
        combos = list(itertools.product(*candidates))
        if not combos:
            continue
        deleted, deletes_exact = 0.0, True
        for d, raw in zip(p.deletes, p.delete_files):
            if d.kind == "equality":
                deletes_exact = False
                continue
            fp_lo = (raw.lower_bounds or {}).get(_DELETE_FILE_PATH_ID)
            fp_hi = (raw.upper_bounds or {}).get(_DELETE_FILE_PATH_ID)
            if fp_lo is not None and fp_lo == fp_hi:
                deleted += d.record_count
            else:
                deletes_exact = False
                deleted += d.record_count * df.record_count / max(1, attached_rows[d.path])
        live = max(0.0, df.record_count - deleted)
        span = hi - lo
        ifile = IcebergFile(df.file_path, str(df.file_format.value if hasattr(df.file_format, "value") else df.file_format),
                            df.record_count, df.file_size_in_bytes, tuple(p.deletes))
        whole = last - first == 1 and starts[first] <= lo and hi <= ends[first] and len(combos) == 1 and dims_certain
        for w in range(first, last):
            share_t = (min(hi, ends[w]) - max(lo, starts[w])) / span
            if share_t <= 0:
                continue
            for combo in combos:
                dims = tuple((names[k], combo[k][1]) for k in order)
                a = acc[(starts[w], ends[w], dims)]
                share = share_t / len(combos)
                a.files.append(ifile)
                a.rows += live * share
                a.source_bytes += df.file_size_in_bytes * share
                a.scan_bytes += df.file_size_in_bytes
                a.exact = a.exact and whole and deletes_exact
                for d in p.deletes:
                    if d.path not in a.deletes_seen:
                        a.deletes_seen.add(d.path)
                        a.scan_bytes += d.file_size_in_bytes
                        a.source_bytes += d.file_size_in_bytes * (1 if attached[d.path] <= 1 else 1 / attached[d.path])
    width = _sizes.row_width(arrow_schema, _string_lengths(table, planned, arrow_schema))
    epochs = {}
    for key in request.epoch_keys():
        a = acc.get(key) or _Acc()
        rows = int(round(a.rows))
        epochs[key] = EpochPlan(key[0], key[1], key[2], IcebergRead(snapshot_id, tuple(a.files)), rows, a.exact,
                                int(round(a.source_bytes)), _sizes.memory_bytes(rows, width), a.scan_bytes)
    return SourcePlan(str(snapshot_id), arrow_schema, epochs)


def _empty_plan(request: SourceRequest, arrow_schema: pa.Schema) -> SourcePlan:
    epochs = {k: EpochPlan(k[0], k[1], k[2], IcebergRead(None, ()), 0, True, 0, 0, 0) for k in request.epoch_keys()}
    return SourcePlan(None, arrow_schema, epochs, ("the table has no snapshot",))
