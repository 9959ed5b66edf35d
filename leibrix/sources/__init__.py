"""Source connectors: what a table holds, read from its metadata only (never its data).

An admission asks one question of its source: *for these epochs, what is
there, what is it called, and what will it cost?* Each connector answers it
behind one small protocol, :class:`Connector` (``plan(SourceRequest) ->
SourcePlan``), so admission never names a concrete source:

* ``_iceberg``: Iceberg tables (pyiceberg SQL and REST catalogs), every epoch
  planned in one pass over the manifests;
* ``_sql`` (with ``_jdbc``): JDBC catalogs — PostgreSQL, MySQL/MariaDB, SQLite —
  through SQLAlchemy: reflection, statistics, one grouped ``COUNT``;
* ``_starrocks``: StarRocks over the MySQL protocol, with its partition metadata;
* ``_types``: the request/plan values and the protocol; ``_sizes``: the
  in-memory size model; ``_secrets``: ``${env:..}``/``${file:..}`` credentials.

Everything here is synchronous (network and file I/O): call it from a worker
thread (``trio.to_thread.run_sync(plan_admission, spec)``).

Example::

    plan = plan_admission(spec)                 # spec: a validated AdmissionSpec
    for s in spec.generate():
        epoch = plan.epochs[(s.start_ms, s.end_ms, s.dims)]
        epoch.rows, epoch.memory_bytes, epoch.scan_cost_bytes, epoch.read
"""

from __future__ import annotations

import betterproto

from leibrix.domain import _epochs
from leibrix.domain._errors import InvalidArgument
from leibrix.domain._validation import AdmissionSpec
from leibrix.sources._iceberg import IcebergConnector
from leibrix.sources._sql import SqlConnector
from leibrix.sources._starrocks import StarRocksConnector
from leibrix.sources._types import (
    Connector,
    Dimension,
    EpochKey,
    EpochPlan,
    IcebergDeleteFile,
    IcebergFile,
    IcebergRead,
    SourcePlan,
    SourceRequest,
    SqlRead,
)
from leibrix.wire._proto import leibrix_cp as cp

__all__ = [
    "Connector",
    "Dimension",
    "EpochKey",
    "EpochPlan",
    "IcebergConnector",
    "IcebergDeleteFile",
    "IcebergFile",
    "IcebergRead",
    "SourcePlan",
    "SourceRequest",
    "SqlConnector",
    "SqlRead",
    "StarRocksConnector",
    "connector_for",
    "plan_admission",
    "request_for",
]


def connector_for(catalog: cp.Catalog) -> Connector:
    """The connector for a wire ``Catalog`` (its ``catalog_type`` oneof).

    Raises
    ------
    InvalidArgument
        Naming ``source.catalog`` when no catalog type is set.
    """
    kind, _ = betterproto.which_one_of(catalog, "catalog_type")
    if kind == "iceberg":
        return IcebergConnector()
    if kind == "jdbc":
        return SqlConnector()
    if kind == "starrocks":
        return StarRocksConnector()
    raise InvalidArgument("source.catalog", "unknown source type: expected one of iceberg, starrocks, jdbc")


def request_for(spec: AdmissionSpec) -> SourceRequest:
    """The ``SourceRequest`` of a validated admission: its source, epoch windows and dimension values."""
    source = spec.request.source
    kind, catalog = betterproto.which_one_of(source.catalog, "catalog_type")
    uri = {"iceberg": lambda: catalog.uri, "jdbc": lambda: catalog.uri, "starrocks": lambda: catalog.dsn}.get(
        kind, lambda: "")()
    column_type = source.partition.time_partition.column.type
    time_type = "" if column_type == cp.PartitionColumnType.UNKNOWN else cp.PartitionColumnType(column_type).name
    return SourceRequest(
        uri=uri,
        database=source.database,
        table=source.table,
        time_column=spec.time_column,
        windows=tuple(_epochs.iter_windows(spec.start_ms, spec.end_ms, spec.granularity)),
        dimensions=tuple(Dimension(name, tuple(values)) for name, values in spec.dimensions),
        time_type=time_type,
        driver=catalog.driver if kind == "jdbc" else "",
        catalog_name=catalog.internal_catalog_name if kind == "starrocks" else "",
        version=spec.version,
    )


def plan_admission(spec: AdmissionSpec) -> SourcePlan:
    """Plan every epoch of a validated admission from its source's metadata (blocking: run it in a thread)."""
    return connector_for(spec.request.source.catalog).plan(request_for(spec))
