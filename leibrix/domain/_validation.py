"""Validation of client requests: turn wire messages into clean specs or a precise ``InvalidArgument``.

Like scikit-learn's public functions, the API layer checks and converts its
inputs here once, so the admission queue, the coordinator and the state model
only ever see valid values. Every error names the offending field with its
dotted wire path (``source.partition.time_partition.filter.end_exclusive``) so
that a client can fix the request without reading master logs.

Identifiers
    Tenant, dataset and epoch ids appear in etcd keys
    (``epochs/<tenant>/<dataset>/<epoch>``) and in worker table names
    (``{dataset_id}__{epoch_id}``), so they are restricted to
    ``[A-Za-z0-9_-]``, 1 to 64 characters, starting with a letter or digit
    (``ID_PATTERN``): no ``/`` (key separator), no ``.`` (SQL schema
    separator), no spaces. Request ids (idempotency keys) may also contain
    ``.`` and ``:`` and be up to 128 characters (``REQUEST_ID_PATTERN``), so
    UUIDs and ``client:seq`` both work.

Bounds of every request (:func:`check_request_bounds`)
    Before any RPC looks at a request, every string, repeated field and map
    in it, at any depth, is checked against a size limit, so no code path
    ever handles (logs, compares, echoes) an unbounded client value:
    identifiers (any field named ``*_id``, ``page_token``, ``worker_pool``)
    up to 128 characters; URIs and DSNs up to 4,096; versions up to 128;
    names up to 128; dimension values (``values``) up to 256; map keys up to
    128 and map values up to 256; any other string up to 1,024; repeated
    fields and maps at most 1,000 entries (dimension columns and filters 16).
    The error names the field and the limit, never the value.

Limits (``AdmissionLimits``; the epochs-per-request cap is configurable)
    at most ``max_epochs_per_request`` epochs (windows × dimension
    combinations, default 10,000) per admission; at most 16 dimension columns
    and 1,000 values per column; dimension values up to 256 characters;
    versions up to 128 characters; replication factor 0 (tenant default) to 16;
    granularity value 1 to 1,000.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from datetime import datetime

import betterproto

from leibrix.domain import _epochs
from leibrix.domain._errors import InvalidArgument, bounded
from leibrix.domain._tenants import Quota
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import management_pb2

ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
REQUEST_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
DEFAULT_MAX_EPOCHS_PER_REQUEST = 10_000
MAX_DIMENSIONS = 16
MAX_VALUES_PER_DIMENSION = 1_000
MAX_VALUE_LEN = 256
MAX_VERSION_LEN = 128
MAX_NAME_LEN = 128
MAX_REPLICATION = 16
MAX_GRANULARITY_VALUE = 1_000
MAX_ID_LEN = 128
MAX_URI_LEN = 4_096
MAX_STRING_LEN = 1_024
MAX_ENTRIES = 1_000

#: Per field name: the longest string (or each string of a repeated field) a request may carry.
_STRING_LIMITS = {
    "uri": MAX_URI_LEN, "dsn": MAX_URI_LEN, "version": MAX_VERSION_LEN, "name": MAX_NAME_LEN,
    "values": MAX_VALUE_LEN, "page_token": MAX_ID_LEN, "worker_pool": MAX_ID_LEN,
}
#: Per field name: the most entries a repeated field or map may carry.
_ENTRY_LIMITS = {
    "dimension_partitions": MAX_DIMENSIONS, "dimension_filter": MAX_DIMENSIONS, "values": MAX_VALUES_PER_DIMENSION,
}

_UNIT_FROM_REQUEST = {
    cp.EpochGranularityTimeUnit.HOUR: _epochs.Unit.HOUR,
    cp.EpochGranularityTimeUnit.DAY: _epochs.Unit.DAY,
    cp.EpochGranularityTimeUnit.WEEK: _epochs.Unit.WEEK,
    cp.EpochGranularityTimeUnit.MONTH: _epochs.Unit.MONTH,
}
_UNIT_FROM_COLUMN = {
    cp.PartitionColumnGranularity.GRANULARITY_HOUR: _epochs.Unit.HOUR,
    cp.PartitionColumnGranularity.GRANULARITY_DAY: _epochs.Unit.DAY,
    cp.PartitionColumnGranularity.GRANULARITY_WEEK: _epochs.Unit.WEEK,
    cp.PartitionColumnGranularity.GRANULARITY_MONTH: _epochs.Unit.MONTH,
}
_STRATEGIES = {int(s) for s in cp.PlacementStrategy}
_POLICIES = {int(p) for p in cp.AdmissionPolicy}
_COLUMN_TYPES = {int(t) for t in cp.PartitionColumnType}


def _check_column_type(field: str, value: int) -> None:
    if int(value) not in _COLUMN_TYPES:
        raise InvalidArgument(field, f"unknown column type {int(value)}")


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Configurable caps applied while validating an admission."""

    max_epochs_per_request: int = DEFAULT_MAX_EPOCHS_PER_REQUEST


@dataclass(frozen=True, slots=True)
class AdmissionSpec:
    """A validated ``AdmitDatasetRequest``: everything downstream code needs, already checked.

    ``fingerprint`` identifies *what* is admitted (source, partitioning,
    granularity, placement options, hints) but not *who asked* (the request id),
    so re-admitting an identical dataset is recognised as a no-op, and a request
    id reused for a different request is recognised as a client bug.
    """

    tenant_id: str
    dataset_id: str
    request_id: str
    version: str
    time_column: str
    granularity: _epochs.Granularity
    start_ms: int
    end_ms: int
    dimensions: tuple[tuple[str, tuple[str, ...]], ...]
    replication_factor: int
    strategy: int
    retention_epochs: int
    hints: cp.EstimateHints
    request: cp.AdmitDatasetRequest
    raw: bytes
    fingerprint: str
    epoch_count: int

    def generate(self) -> list[_epochs.EpochSlice]:
        """The epochs of this admission (see ``leibrix.domain._epochs.generate``)."""
        return _epochs.generate(self.start_ms, self.end_ms, self.granularity, self.dimensions, version=self.version,
                                scope=f"{self.tenant_id}/{self.dataset_id}")


def _string_limit(name: str) -> int:
    if name.endswith("_id"):
        return MAX_ID_LEN
    return _STRING_LIMITS.get(name, MAX_STRING_LEN)


def _check_scalar(path: str, value: object, limit: int) -> None:
    if isinstance(value, (str, bytes)) and len(value) > limit:
        raise InvalidArgument(path, f"longer than {limit} characters ({len(value)} given)")
    if isinstance(value, betterproto.Message):
        check_request_bounds(value, f"{path}.")


def check_request_bounds(message: betterproto.Message, prefix: str = "") -> None:
    """Raise ``InvalidArgument`` naming the first string, repeated field or map of ``message`` over its limit.

    Walks every set field at any depth (``prefix`` is the dotted path of
    ``message`` itself, with a trailing dot). The limits are the ones listed
    in this module's docstring; the problem quotes the limit and the size
    given, never the value.
    """
    meta = message._betterproto
    groups = {group: betterproto.which_one_of(message, group)[0] for group in meta.oneof_field_by_group}
    for name in meta.sorted_field_names:
        group = meta.oneof_group_by_field.get(name)
        if group is not None and groups[group] != name:
            continue
        value = getattr(message, name)
        path = prefix + name
        if isinstance(value, (list, dict)):
            entries = _ENTRY_LIMITS.get(name, MAX_ENTRIES)
            if len(value) > entries:
                raise InvalidArgument(path, f"at most {entries} entries ({len(value)} given)")
            if isinstance(value, dict):
                for key, item in value.items():
                    _check_scalar(f"{path} key", key, MAX_NAME_LEN)
                    _check_scalar(f"{path}[{bounded(str(key), 64)!r}]", item, MAX_VALUE_LEN)
            else:
                for i, item in enumerate(value):
                    _check_scalar(f"{path}[{i}]", item, _string_limit(name))
        elif value is not None:
            _check_scalar(path, value, _string_limit(name))


def check_id(field: str, value: str) -> str:
    """Return ``value`` if it is a well-formed tenant/dataset/epoch id, else raise naming ``field``."""
    if not value:
        raise InvalidArgument(field, "is required")
    if not ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{value[:80]!r} is malformed: use 1-64 characters of [A-Za-z0-9_-], starting with a letter or digit",
        )
    return value


def check_request_id(field: str, value: str) -> str:
    """Request ids are optional; when present they must match ``REQUEST_ID_PATTERN``."""
    if value and not REQUEST_ID_PATTERN.fullmatch(value):
        raise InvalidArgument(
            field,
            f"{value[:80]!r} is malformed: use 1-128 characters of [A-Za-z0-9_.:-], starting with a letter or digit",
        )
    return value


def _check_name(field: str, value: str) -> str:
    if not value:
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_NAME_LEN or not value.isprintable():
        raise InvalidArgument(field, f"must be 1-{MAX_NAME_LEN} printable characters")
    return value


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _check_catalog(source: cp.DataSource) -> None:
    catalog = source.catalog
    if not betterproto.serialized_on_wire(catalog):
        raise InvalidArgument("source.catalog", "is required (one of iceberg, starrocks, jdbc)")
    kind, value = betterproto.which_one_of(catalog, "catalog_type")
    if not kind:
        raise InvalidArgument("source.catalog", "unknown source type: expected one of iceberg, starrocks, jdbc")
    if kind == "iceberg" and not value.uri:
        raise InvalidArgument("source.catalog.iceberg.uri", "is required")
    if kind == "starrocks" and not value.dsn:
        raise InvalidArgument("source.catalog.starrocks.dsn", "is required")
    if kind == "jdbc" and not value.uri:
        raise InvalidArgument("source.catalog.jdbc.uri", "is required")


def _granularity(req: cp.AdmitDatasetRequest, column: cp.PartitionColumn) -> _epochs.Granularity:
    g = req.epoch_granularity
    if g is not None:
        unit = _UNIT_FROM_REQUEST.get(g.unit)
        if unit is None:
            raise InvalidArgument("epoch_granularity.unit", f"unknown unit {int(g.unit)}")
        if not 1 <= g.value <= MAX_GRANULARITY_VALUE:
            raise InvalidArgument("epoch_granularity.value", f"must be 1-{MAX_GRANULARITY_VALUE}, got {g.value}")
        return _epochs.Granularity(g.value, unit)
    src = column.source_granularity
    unit = _UNIT_FROM_COLUMN.get(src) if src is not None else None
    if unit is None:
        raise InvalidArgument(
            "epoch_granularity",
            "is required when source.partition.time_partition.column.source_granularity is not set",
        )
    return _epochs.Granularity(1, unit)


def _dimensions(partition: cp.Partition, time_column: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    dims = partition.dimension_partitions
    if len(dims) > MAX_DIMENSIONS:
        raise InvalidArgument("source.partition.dimension_partitions", f"at most {MAX_DIMENSIONS} columns, got {len(dims)}")
    out: list[tuple[str, tuple[str, ...]]] = []
    seen = {time_column}
    for i, dp in enumerate(dims):
        base = f"source.partition.dimension_partitions[{i}]"
        name = _check_name(f"{base}.column.name", dp.column.name)
        _check_column_type(f"{base}.column.type", dp.column.type)
        if name in seen:
            raise InvalidArgument(f"{base}.column.name", f"{name!r} is used twice (or is the time column)")
        seen.add(name)
        values = list(dp.values.values)
        if not values:
            raise InvalidArgument(f"{base}.values", "needs at least one value")
        if len(values) > MAX_VALUES_PER_DIMENSION:
            raise InvalidArgument(f"{base}.values", f"at most {MAX_VALUES_PER_DIMENSION} values, got {len(values)}")
        if len(set(values)) != len(values):
            raise InvalidArgument(f"{base}.values", "values must be distinct")
        for j, v in enumerate(values):
            if len(v) > MAX_VALUE_LEN:
                raise InvalidArgument(f"{base}.values[{j}]", f"longer than {MAX_VALUE_LEN} characters")
        out.append((name, tuple(values)))
    return tuple(out)


def _check_finite_non_negative(field: str, value: float) -> None:
    if not math.isfinite(value) or value < 0:
        raise InvalidArgument(field, f"must be a finite number >= 0, got {value}")


def fingerprint(raw: bytes) -> str:
    """sha256 of a serialized ``AdmitDatasetRequest`` without its request id: equal for identical admissions.

    Computed on the upb message's deterministic serialization, so the
    fingerprint of a stored request (``DatasetRecord.request``) and of a new
    wire request compare equal when their content is equal.
    """
    req = management_pb2.AdmitDatasetRequest.FromString(raw)
    req.request_id = ""
    return hashlib.sha256(req.SerializeToString(deterministic=True)).hexdigest()


def validate_admission(req: cp.AdmitDatasetRequest, limits: AdmissionLimits = AdmissionLimits()) -> AdmissionSpec:
    """Check an ``AdmitDatasetRequest`` completely; raise ``InvalidArgument`` naming the first bad field."""
    tenant = check_id("tenant_id", req.tenant_id)
    dataset = check_id("dataset_id", req.dataset_id)
    request_id = check_request_id("request_id", req.request_id)
    source = req.source
    if not betterproto.serialized_on_wire(source):
        raise InvalidArgument("source", "is required")
    _check_catalog(source)
    if not source.table:
        raise InvalidArgument("source.table", "is required")
    version = source.version or ""
    if len(version) > MAX_VERSION_LEN or not version.isprintable():
        raise InvalidArgument("source.version", f"must be at most {MAX_VERSION_LEN} printable characters")
    partition = source.partition
    tp = partition.time_partition
    if not betterproto.serialized_on_wire(tp):
        raise InvalidArgument("source.partition.time_partition", "is required")
    time_column = _check_name("source.partition.time_partition.column.name", tp.column.name)
    _check_column_type("source.partition.time_partition.column.type", tp.column.type)
    if not betterproto.serialized_on_wire(tp.filter):
        raise InvalidArgument("source.partition.time_partition.filter", "is required")
    start_ms, end_ms = _ms(tp.filter.start_inclusive), _ms(tp.filter.end_exclusive)
    if end_ms <= start_ms:
        raise InvalidArgument(
            "source.partition.time_partition.filter.end_exclusive",
            f"must be after start_inclusive ({tp.filter.end_exclusive.isoformat()} <= {tp.filter.start_inclusive.isoformat()})",
        )
    granularity = _granularity(req, tp.column)
    if tp.column.type == cp.PartitionColumnType.DATE and granularity.unit is _epochs.Unit.HOUR:
        field = "epoch_granularity.unit" if req.epoch_granularity is not None else "epoch_granularity"
        raise InvalidArgument(field, "HOUR windows are finer than the DATE time column")
    dimensions = _dimensions(partition, time_column)
    count = _epochs.count_epochs(start_ms, end_ms, granularity, dimensions)
    if count > limits.max_epochs_per_request:
        raise InvalidArgument(
            "source.partition",
            f"would create {count} epochs ({_epochs.count_windows(start_ms, end_ms, granularity)} windows of "
            f"{granularity} × dimension combinations); the limit per request is {limits.max_epochs_per_request}",
        )
    if not 0 <= req.replication_factor <= MAX_REPLICATION:
        raise InvalidArgument("replication_factor", f"must be 0 (tenant default) to {MAX_REPLICATION}, got {req.replication_factor}")
    if int(req.strategy) not in _STRATEGIES:
        raise InvalidArgument("strategy", f"unknown placement strategy {int(req.strategy)}")
    if req.retention_epochs < 0:
        raise InvalidArgument("retention_epochs", f"must be >= 0, got {req.retention_epochs}")
    hints = req.hints
    if hints.bytes_per_epoch < 0:
        raise InvalidArgument("hints.bytes_per_epoch", f"must be >= 0, got {hints.bytes_per_epoch}")
    if hints.rows_per_epoch < 0:
        raise InvalidArgument("hints.rows_per_epoch", f"must be >= 0, got {hints.rows_per_epoch}")
    _check_finite_non_negative("hints.cpu_cores_per_epoch", hints.cpu_cores_per_epoch)
    _check_finite_non_negative("hints.scan_cost", hints.scan_cost)
    raw = bytes(req)
    return AdmissionSpec(
        tenant_id=tenant,
        dataset_id=dataset,
        request_id=request_id,
        version=version,
        time_column=time_column,
        granularity=granularity,
        start_ms=start_ms,
        end_ms=end_ms,
        dimensions=dimensions,
        replication_factor=req.replication_factor,
        strategy=int(req.strategy),
        retention_epochs=req.retention_epochs,
        hints=hints,
        request=req,
        raw=raw,
        fingerprint=fingerprint(raw),
        epoch_count=count,
    )


def validate_quota(q: cp.TenantQuota) -> cp.TenantQuota:
    """Check an ``UpsertTenantQuota`` request (limits are 0 = unlimited, never negative)."""
    check_id("tenant_id", q.tenant_id)
    for field in ("max_datasets", "max_epochs", "max_storage_mb", "max_memory_bytes", "default_replication"):
        if getattr(q, field) < 0:
            raise InvalidArgument(field, f"must be >= 0 (0 = unlimited/default), got {getattr(q, field)}")
    _check_finite_non_negative("max_cpu_cores", q.max_cpu_cores)
    if q.default_replication > MAX_REPLICATION:
        raise InvalidArgument("default_replication", f"must be at most {MAX_REPLICATION}, got {q.default_replication}")
    if int(q.admission_policy) not in _POLICIES:
        raise InvalidArgument("admission_policy", f"unknown policy {int(q.admission_policy)}")
    if int(q.default_strategy) not in _STRATEGIES:
        raise InvalidArgument("default_strategy", f"unknown placement strategy {int(q.default_strategy)}")
    if q.worker_pool and not ID_PATTERN.fullmatch(q.worker_pool):
        raise InvalidArgument("worker_pool", f"{q.worker_pool[:80]!r} is malformed: use 1-64 characters of [A-Za-z0-9_-]")
    g = q.guaranteed_memory_bytes
    if g < 0:
        raise InvalidArgument("guaranteed_memory_bytes", f"must be >= 0 (0 = none), got {g}")
    budget = Quota.from_wire(q).max_memory_bytes
    if g and budget and g > budget:
        raise InvalidArgument("guaranteed_memory_bytes",
                              f"{g} bytes is more than the tenant's memory budget of {budget} bytes")
    return q
