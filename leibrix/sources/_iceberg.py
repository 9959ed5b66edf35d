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
    connector reads each snapshot's manifests once per process into a
    snapshot index (:mod:`leibrix.sources._iceberg_index`: every live data
    file with its delete files, positional ones matched by pyiceberg's delete
    file index), selects from it the files of the admission's *union* filter
    (the windows merged into ranges, AND the dimension ``IN`` lists: the files
    whose time interval overlaps a range and whose ``identity`` partition values
    are admitted, then pyiceberg's partition and column-metrics pruning; no
    per-file residuals, which are most of ``plan_files()``' cost), and then
    assigns each selected data file to the epochs it may hold rows of:

    * time: the file's time interval is the intersection of what its partition
      values say (``identity``, ``hour``, ``day``, ``month``, ``year`` on the time
      column) and what its lower/upper column bounds say; it belongs to every
      window that interval overlaps;
    * dimensions: an ``identity`` partition value, else the column bounds,
      narrow the admitted values the file can hold; it belongs to each remaining
      combination.

Caches
    Catalogs, each table's current metadata and each table schema converted to
    Arrow are kept per process (:mod:`leibrix.sources._iceberg_cache`): an
    admission against an unchanged table reads one catalog row (the table's
    metadata location) and no metadata or manifest file; a new snapshot is read
    on the next request (after at most 1 s for catalogs other than SQL).

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

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from urllib.parse import parse_qsl

import pyarrow as pa

from leibrix.domain import _schema
from leibrix.domain._errors import ApiError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from leibrix.sources import _iceberg_cache, _secrets
from leibrix.sources._iceberg_assign import assign
from leibrix.sources._iceberg_index import index_for
from leibrix.sources._iceberg_time import _TimeColumn
from leibrix.sources._types import (
    TIME_FIELD,
    EpochPlan,
    IcebergRead,
    SourcePlan,
    SourceRequest,
    dimension_field,
)

__all__ = ["IcebergConnector", "union_filter"]



def _catalog_properties(uri: str) -> tuple[str, dict[str, str]]:
    base, _, fragment = uri.partition("#")
    props = dict(parse_qsl(fragment, keep_blank_values=True))
    name = props.pop("name", "default")
    props["uri"] = base
    return name, props


def _load_table(request: SourceRequest, ttl_s: float | None = None):
    from pyiceberg import exceptions as ie

    field_uri = "source.catalog.iceberg.uri"
    shown = _secrets.redact(request.uri)
    name, props = _catalog_properties(request.uri)
    secrets = _secrets.secrets_in(request.uri)
    resolved = {k: _secrets.resolve(v, field_uri) for k, v in props.items()}
    missing_namespace = NotFound(f"source.database: namespace {request.database!r} not found in Iceberg catalog {shown}")
    try:
        key, catalog = _iceberg_cache.catalog(name, resolved)
        try:
            return _iceberg_cache.current_table(key, catalog, (request.database, request.table),
                                                snapshot_id=_version_id(request), ttl_s=ttl_s)
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


def _version_id(request: SourceRequest) -> int | None:
    if not request.version:
        return None
    try:
        return int(request.version)
    except ValueError:
        raise InvalidArgument("source.version", f"{request.version!r} is not an Iceberg snapshot id") from None


def _looks_unreachable(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("connect", "unable to open", "timed out", "timeout", "unreachable",
                                   "name or service", "refused", "serviceunavailable"))


# -- the time and dimension columns ------------------------------------------------------------------

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

@dataclass
class IcebergConnector:
    """Plans Iceberg epochs from manifests (see the module docstring). ``plan`` is the one entry point.

    The table comes from the process's catalog and metadata caches
    (:mod:`leibrix.sources._iceberg_cache`; ``metadata_ttl_s``, when set, is
    how long a table's current metadata is reused without asking its catalog
    instead of that module's defaults), unless
    ``load_table`` is given: it takes the request and returns a pyiceberg
    ``Table``. Either way a snapshot's files come from the snapshot index
    cache (:mod:`leibrix.sources._iceberg_index`).
    """

    load_table: Callable[[SourceRequest], object] | None = None
    metadata_ttl_s: float | None = None

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
        table = self.load_table(request) if self.load_table is not None else _load_table(request, self.metadata_ttl_s)
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
        schema = _planned_schema(table, ischema)
        if snapshot is None:
            return _empty_plan(request, schema)
        files = index_for(table, snapshot).select(table, time, _merged(request.windows),
                                                  union_filter(request, time, dim_values),
                                                  [(nf, values) for nf, (_, values) in zip(dim_fields, dim_values)])
        return assign(request, table, snapshot.snapshot_id, time, dim_fields, dim_values, files, schema)


def _planned_schema(table, ischema) -> tuple[pa.Schema, str, bytes]:
    """``ischema`` as the plan carries it: in Arrow (``_narrow``ed), its fingerprint and its IPC bytes,
    converted once per table schema (:func:`leibrix.sources._iceberg_cache.schema`)."""
    from pyiceberg.io.pyarrow import schema_to_pyarrow

    def convert() -> tuple[pa.Schema, str, bytes]:
        arrow = _narrow(schema_to_pyarrow(ischema, include_field_ids=False))
        return arrow, _schema.fingerprint(arrow), _schema.to_ipc(arrow)

    return _iceberg_cache.schema(table, ischema.schema_id, convert)


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


def _empty_plan(request: SourceRequest, schema: tuple[pa.Schema, str, bytes]) -> SourcePlan:
    epochs = {k: EpochPlan(k[0], k[1], k[2], IcebergRead(None, ()), 0, True, 0, 0, 0) for k in request.epoch_keys()}
    arrow, fingerprint, ipc = schema
    return SourcePlan(None, arrow, epochs, ("the table has no snapshot",), known_fingerprint=fingerprint, known_ipc=ipc)
