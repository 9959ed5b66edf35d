"""The declarative dataset file: a readable document that is one ``AdmitDatasetRequest``.

``leibrix ctl datasets apply -f FILE`` reads it; ``leibrix ctl datasets get -o
yaml`` writes it, so a dataset can be exported, edited and applied again. The
document mirrors the request with friendlier spellings (enum names instead of
numbers, ISO timestamps, byte sizes like ``16MiB``)::

    kind: Dataset                      # optional; anything else is refused
    tenant: acme
    dataset: orders
    source:
      iceberg: {uri: "http://rest:8181"}      # or jdbc: {uri, driver}
                                               # or starrocks: {dsn, internal_catalog_name}
      database: sales
      table: orders
      version: "2026-11-01"                    # optional; a new value refreshes
      partition:
        time:
          column: ts
          type: TIMESTAMP                      # TIMESTAMP | DATE | STRING | INT64
          source_granularity: DAY              # optional: HOUR | DAY | WEEK | MONTH
          start: 2026-11-01T00:00:00Z
          end: 2026-11-08T00:00:00Z
        dimensions:
          region: [eu, us]                     # or {type: STRING, values: [eu, us]}
    epoch_granularity: {value: 1, unit: DAY}   # or "1 DAY"; optional with source_granularity
    strategy: HASH                             # DEFAULT | ROUND_ROBIN | HASH | CAPACITY
    replication: 2                             # 0 = the tenant's default
    retention: 30                              # newest N epochs (0 = all)
    refresh_interval: 10m                      # optional: poll the source and refresh by itself (s, m, h)
    hints: {bytes_per_epoch: 16MiB, rows_per_epoch: 100000, cpu_cores_per_epoch: 0.5, scan_cost: 1}
    request_id: ""                             # optional idempotency key

``status`` (written by ``get``) is ignored on input, like kubectl's. Unknown
keys are refused with their path, because a misspelt key silently dropped
would admit something other than what the file says. Files may be YAML (also
``---``-separated documents), JSON (``.json``) or TOML (``.toml``).

The master reports a dataset (``DatasetInfo``) without its epoch granularity
or estimator hints, and with the replication factor and strategy it resolved.
:func:`dataset_document` therefore writes the effective replication and
strategy, and an epoch granularity read back from the epochs' windows
(:func:`infer_granularity`) when the time column names no source granularity,
so the printed file applies again.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Sequence
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import betterproto
import yaml

from leibrix.domain import _epochs
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["DatasetFileError", "dataset_document", "dump_yaml", "infer_granularity", "iso", "load_dataset_file",
           "parse_bytes", "parse_dataset", "parse_duration", "parse_time"]

_TOP = {"kind", "apiVersion", "tenant", "dataset", "source", "epoch_granularity", "strategy", "replication",
        "retention", "refresh_interval", "hints", "request_id", "status"}
_SOURCE = {"iceberg", "jdbc", "starrocks", "database", "table", "version", "partition"}
_CATALOGS = {"iceberg": ({"uri"}, cp.IcebergCatalog), "jdbc": ({"uri", "driver"}, cp.JdbcCatalog),
             "starrocks": ({"dsn", "internal_catalog_name"}, cp.StarRocksCatalog)}
_TIME = {"column", "type", "source_granularity", "start", "end"}
_HINTS = {"bytes_per_epoch", "rows_per_epoch", "cpu_cores_per_epoch", "scan_cost"}
_UNITS = {"HOUR": _epochs.Unit.HOUR, "DAY": _epochs.Unit.DAY, "WEEK": _epochs.Unit.WEEK, "MONTH": _epochs.Unit.MONTH}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "B": 1, "K": 1000, "KB": 1000, "M": 10**6, "MB": 10**6, "G": 10**9, "GB": 10**9,
               "T": 10**12, "TB": 10**12, "KI": 1 << 10, "KIB": 1 << 10, "MI": 1 << 20, "MIB": 1 << 20,
               "GI": 1 << 30, "GIB": 1 << 30, "TI": 1 << 40, "TIB": 1 << 40}


class DatasetFileError(ValueError):
    """A dataset document that does not describe an admission; the message names the file and the key."""


# ------------------------------------------------------------------ reading


def load_dataset_file(path: str, text: str | None = None) -> list[cp.AdmitDatasetRequest]:
    """The admissions a file describes (one per document); ``path`` ``-`` with ``text`` is stdin."""
    if text is None:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise DatasetFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    suffix = Path(path).suffix.lower()
    try:
        if suffix == ".toml":
            docs: list[Any] = [tomllib.loads(text)]
        elif suffix == ".json":
            docs = [json.loads(text)]
        else:
            docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except (ValueError, yaml.YAMLError) as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
        raise DatasetFileError(f"{path}: not valid {suffix.lstrip('.').upper() or 'YAML'}: {exc}") from None
    if not docs:
        raise DatasetFileError(f"{path}: no dataset document in the file")
    return [parse_dataset(doc, f"{path}" + (f" (document {i + 1})" if len(docs) > 1 else ""))
            for i, doc in enumerate(docs)]


def _mapping(value: Any, where: str, keys: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DatasetFileError(f"{where}: expected a mapping, got {type(value).__name__}")
    unknown = sorted(str(k) for k in value if k not in keys)
    if unknown:
        raise DatasetFileError(f"{where}.{unknown[0]}: unknown key (expected one of: {', '.join(sorted(keys))})")
    return value


def _str(doc: dict[str, Any], key: str, where: str, required: bool = False) -> str:
    value = doc.get(key)
    if value is None:
        if required:
            raise DatasetFileError(f"{where}.{key}: is required")
        return ""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise DatasetFileError(f"{where}.{key}: expected a string, got {type(value).__name__}")
    return str(value)


def _int(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise DatasetFileError(f"{where}.{key}: expected a whole number, got {value!r}")
    return value


def _float(doc: dict[str, Any], key: str, where: str) -> float:
    value = doc.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DatasetFileError(f"{where}.{key}: expected a number, got {value!r}")
    return float(value)


def parse_bytes(doc: dict[str, Any], key: str, where: str) -> int:
    value = doc.get(key, 0)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value))
    if m is None or (m.group(2) or "").upper() not in _SIZE_UNITS:
        raise DatasetFileError(f"{where}.{key}: expected bytes (a number or a size like 16MiB), got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").upper()])


_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600}


def parse_duration(doc: dict[str, Any], key: str, where: str) -> timedelta | None:
    """``doc[key]`` as a duration: seconds, or a number with ``s``, ``m`` or ``h``; None when absent."""
    value = doc.get(key)
    if value is None:
        return None
    m = _DURATION.fullmatch(str(value)) if not isinstance(value, bool) else None
    if m is None:
        raise DatasetFileError(f"{where}.{key}: expected a duration (seconds, or like 90s, 10m, 1h), got {value!r}")
    return timedelta(seconds=float(m.group(1)) * _DURATION_UNITS[m.group(2)])


def _enum(value: Any, where: str, names: dict[str, Any]) -> Any:
    key = str(value).strip().upper().replace("-", "_")
    if key not in names:
        raise DatasetFileError(f"{where}: unknown value {value!r} (expected one of: {', '.join(names)})")
    return names[key]


def parse_time(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            raise DatasetFileError(f"{where}: expected an ISO 8601 time like 2026-11-01T00:00:00Z, got {value!r}")
    else:
        raise DatasetFileError(f"{where}: expected an ISO 8601 time, got {value!r}")
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


_COLUMN_TYPES = {t.name: t for t in cp.PartitionColumnType if t.name != "UNKNOWN"}
_SOURCE_GRANULARITY = {g.name.removeprefix("GRANULARITY_"): g for g in cp.PartitionColumnGranularity
                       if g.name != "GRANULARITY_UNSPECIFIED"}
_STRATEGY = {"DEFAULT": cp.PlacementStrategy.STRATEGY_DEFAULT,
             **{s.name: s for s in cp.PlacementStrategy if s.name != "STRATEGY_DEFAULT"}}
_TIME_UNITS = {u.name: u for u in cp.EpochGranularityTimeUnit}


def _granularity(value: Any, where: str) -> cp.EpochGranularity:
    if isinstance(value, dict):
        doc = _mapping(value, where, {"value", "unit"})
        n = doc.get("value", 1)
        unit = doc.get("unit")
        if unit is None:
            raise DatasetFileError(f"{where}.unit: is required")
    else:
        parts = str(value).split()
        if len(parts) == 1:
            n, unit = 1, parts[0]
        elif len(parts) == 2 and parts[0].isdigit():
            n, unit = int(parts[0]), parts[1]
        else:
            raise DatasetFileError(f"{where}: expected like '1 DAY' or {{value: 1, unit: DAY}}, got {value!r}")
    if isinstance(n, bool) or not isinstance(n, int):
        raise DatasetFileError(f"{where}.value: expected a whole number, got {n!r}")
    unit_name = str(unit).strip().upper()
    if unit_name.endswith("S") and unit_name[:-1] in _TIME_UNITS:  # "2 DAYS"
        unit_name = unit_name[:-1]
    return cp.EpochGranularity(value=n, unit=_enum(unit_name, f"{where}.unit", _TIME_UNITS))


def _dimensions(value: Any, where: str) -> list[cp.DimensionPartition]:
    if not isinstance(value, dict):
        raise DatasetFileError(f"{where}: expected a mapping of column -> values")
    out = []
    for name, spec in value.items():
        here = f"{where}.{name}"
        ctype = cp.PartitionColumnType.UNKNOWN
        if isinstance(spec, dict):
            spec_doc = _mapping(spec, here, {"type", "values"})
            if spec_doc.get("type") is not None:
                ctype = _enum(spec_doc["type"], f"{here}.type", _COLUMN_TYPES)
            spec = spec_doc.get("values")
        if not isinstance(spec, list) or not spec:
            raise DatasetFileError(f"{here}: expected a non-empty list of values")
        for v in spec:
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise DatasetFileError(f"{here}: values must be strings, got {v!r}")
        out.append(cp.DimensionPartition(column=cp.PartitionColumn(name=str(name), type=ctype),
                                         values=cp.PartitionValues(values=[str(v) for v in spec])))
    return out


def _source(value: Any, where: str) -> cp.DataSource:
    doc = _mapping(value, where, _SOURCE)
    catalogs = [k for k in _CATALOGS if k in doc]
    if len(catalogs) != 1:
        raise DatasetFileError(f"{where}: name exactly one catalog (iceberg, jdbc or starrocks), found "
                               f"{', '.join(catalogs) or 'none'}")
    kind = catalogs[0]
    keys, message = _CATALOGS[kind]
    cat_doc = _mapping(doc[kind], f"{where}.{kind}", keys)
    catalog = cp.Catalog(**{kind: message(**{k: _str(cat_doc, k, f"{where}.{kind}") for k in keys})})
    part = _mapping(doc.get("partition"), f"{where}.partition", {"time", "dimensions"})
    t = _mapping(part.get("time"), f"{where}.partition.time", _TIME)
    tw = f"{where}.partition.time"
    column = cp.PartitionColumn(name=_str(t, "column", tw, required=True))
    if t.get("type") is not None:
        column.type = _enum(t["type"], f"{tw}.type", _COLUMN_TYPES)
    if t.get("source_granularity") is not None:
        column.source_granularity = _enum(t["source_granularity"], f"{tw}.source_granularity", _SOURCE_GRANULARITY)
    for key in ("start", "end"):
        if t.get(key) is None:
            raise DatasetFileError(f"{tw}.{key}: is required")
    time_partition = cp.TimePartition(column=column, filter=cp.TimeRangeFilter(
        start_inclusive=parse_time(t["start"], f"{tw}.start"), end_exclusive=parse_time(t["end"], f"{tw}.end")))
    dims = _dimensions(part["dimensions"], f"{where}.partition.dimensions") if part.get("dimensions") else []
    version = doc.get("version")
    return cp.DataSource(
        catalog=catalog, database=_str(doc, "database", where), table=_str(doc, "table", where, required=True),
        partition=cp.Partition(time_partition=time_partition, dimension_partitions=dims),
        version=None if version is None else _str(doc, "version", where),
    )


def parse_dataset(doc: Any, where: str = "dataset") -> cp.AdmitDatasetRequest:
    """One document as an ``AdmitDatasetRequest``; ``DatasetFileError`` names the first bad key.

    Only the shape is checked here; the master validates the content (ids,
    ranges, limits) and answers INVALID_ARGUMENT naming the request field.
    """
    doc = _mapping(doc, where, _TOP)
    if doc.get("kind", "Dataset") != "Dataset":
        raise DatasetFileError(f"{where}.kind: expected Dataset, got {doc['kind']!r}")
    req = cp.AdmitDatasetRequest(
        tenant_id=_str(doc, "tenant", where, required=True),
        dataset_id=_str(doc, "dataset", where, required=True),
        source=_source(doc.get("source"), f"{where}.source"),
        request_id=_str(doc, "request_id", where),
        replication_factor=_int(doc, "replication", where),
        strategy=_enum(doc.get("strategy", "DEFAULT"), f"{where}.strategy", _STRATEGY),
        retention_epochs=_int(doc, "retention", where),
    )
    if (interval := parse_duration(doc, "refresh_interval", where)) is not None:
        req.refresh_interval = interval
    if doc.get("epoch_granularity") is not None:
        req.epoch_granularity = _granularity(doc["epoch_granularity"], f"{where}.epoch_granularity")
    if doc.get("hints"):
        h = _mapping(doc["hints"], f"{where}.hints", _HINTS)
        hw = f"{where}.hints"
        req.hints = cp.EstimateHints(bytes_per_epoch=parse_bytes(h, "bytes_per_epoch", hw),
                                     rows_per_epoch=_int(h, "rows_per_epoch", hw),
                                     cpu_cores_per_epoch=_float(h, "cpu_cores_per_epoch", hw),
                                     scan_cost=_float(h, "scan_cost", hw))
    return req


# ------------------------------------------------------------------ writing


def iso(dt: datetime) -> str:
    """A UTC timestamp as ``2026-11-01T00:00:00Z`` (milliseconds only when present)."""
    dt = dt.astimezone(timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    if dt.microsecond:
        text += f".{dt.microsecond // 1000:03d}"
    return text + "Z"


def infer_granularity(windows: Sequence[tuple[datetime, datetime]]) -> cp.EpochGranularity | None:
    """The epoch granularity whose aligned windows these are, preferring the largest unit; None if none fits."""
    spans = {(int(s.timestamp() * 1000), int(e.timestamp() * 1000)) for s, e in windows}
    if not spans:
        return None
    for unit in (_epochs.Unit.MONTH, _epochs.Unit.WEEK, _epochs.Unit.DAY, _epochs.Unit.HOUR):
        s0, e0 = min(spans)
        if unit is _epochs.Unit.MONTH:
            month = _epochs.Granularity(1, unit)
            value = _epochs.window_index(e0, month) - _epochs.window_index(s0, month)
        else:
            length = {_epochs.Unit.WEEK: _epochs.WEEK_MS, _epochs.Unit.DAY: _epochs.DAY_MS,
                      _epochs.Unit.HOUR: _epochs.HOUR_MS}[unit]
            value = (e0 - s0) // length if (e0 - s0) % length == 0 else 0
        if value < 1:
            continue
        g = _epochs.Granularity(value, unit)
        if all(_epochs.window_bounds(_epochs.window_index(s, g), g) == (s, e) for s, e in spans):
            return cp.EpochGranularity(value=value, unit=cp.EpochGranularityTimeUnit[unit.name])
    return None


def dataset_document(info: cp.DatasetInfo, granularity: cp.EpochGranularity | None = None) -> dict[str, Any]:
    """A dataset as a document :func:`parse_dataset` accepts, with its epoch counts under ``status``."""
    src = info.source
    which, catalog = _oneof(src.catalog)
    tp = src.partition.time_partition
    time: dict[str, Any] = {"column": tp.column.name}
    if tp.column.type:
        time["type"] = tp.column.type.name
    if tp.column.source_granularity is not None:
        time["source_granularity"] = tp.column.source_granularity.name.removeprefix("GRANULARITY_")
    time["start"] = iso(tp.filter.start_inclusive)
    time["end"] = iso(tp.filter.end_exclusive)
    partition: dict[str, Any] = {"time": time}
    dims: dict[str, Any] = {}
    for d in src.partition.dimension_partitions:
        values = list(d.values.values)
        dims[d.column.name] = {"type": d.column.type.name, "values": values} if d.column.type else values
    if dims:
        partition["dimensions"] = dims
    source: dict[str, Any] = {which: catalog, "database": src.database, "table": src.table}
    if src.version is not None:
        source["version"] = src.version
    source["partition"] = partition
    doc: dict[str, Any] = {"kind": "Dataset", "tenant": info.tenant_id, "dataset": info.dataset_id, "source": source}
    if granularity is not None:
        doc["epoch_granularity"] = {"value": granularity.value, "unit": granularity.unit.name}
    doc["strategy"] = "DEFAULT" if not info.strategy else info.strategy.name
    doc["replication"] = info.replication_factor
    doc["retention"] = info.retention_epochs
    if info.admitted is not None and info.admitted.refresh_interval:
        doc["refresh_interval"] = f"{int(info.admitted.refresh_interval.total_seconds())}s"
    doc["status"] = {"admitted_at": iso(info.admitted_at) if info.admitted_at else "",
                     "epochs_by_state": dict(sorted(info.epochs_by_state.items()))}
    return doc


def _oneof(catalog: cp.Catalog) -> tuple[str, dict[str, str]]:
    kind, msg = betterproto.which_one_of(catalog, "catalog_type")
    if kind not in _CATALOGS or msg is None:
        return "iceberg", {}
    return kind, {k: getattr(msg, k) for k in sorted(_CATALOGS[kind][0]) if getattr(msg, k)}


def dump_yaml(data: Any) -> str:
    """YAML in block style, keys in the order given, strings that look like other types quoted."""
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
