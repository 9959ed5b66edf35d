"""What a connector is given and what it answers: ``SourceRequest`` in, ``SourcePlan`` out.

A connector reads a source's *metadata* (catalog, manifests, statistics, one
bounded ``COUNT`` for SQL) and never its rows. Admission gives it one
``SourceRequest`` for a whole admission (every epoch window and dimension
value at once, so a connector can answer in one pass) and gets back one
``SourcePlan``: the resolved version, the real Arrow schema and, for every
epoch, what a loader must read and what it will cost.

An epoch is keyed exactly like ``leibrix.domain._epochs.EpochSlice``:
``(start_ms, end_ms, dims)`` with ``dims`` the ``(column, value)`` pairs
sorted by column, so ``plan.epochs[(s.start_ms, s.end_ms, s.dims)]`` finds
the plan of a generated slice.

Sizes
    ``rows``            rows the epoch holds; ``rows_exact`` says whether the
                        source knows the number or it is apportioned/estimated;
    ``source_bytes``    bytes of the epoch on the source (apportioned by rows
                        when a file or table holds more than the epoch);
    ``memory_bytes``    estimated in-memory (Arrow) bytes, ``rows`` times the
                        per-row width of :mod:`leibrix.sources._sizes`;
    ``scan_cost_bytes`` bytes a query engine would scan to answer a query on
                        this epoch without Leibrix: whole files / partitions it
                        cannot prune (not apportioned), or the whole table when
                        nothing lets it skip rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import pyarrow as pa

from leibrix.domain import _schema

__all__ = [
    "Connector",
    "Dimension",
    "EpochKey",
    "EpochPlan",
    "IcebergDeleteFile",
    "IcebergFile",
    "IcebergRead",
    "SourcePlan",
    "SourceRequest",
    "SqlRead",
    "TIME_FIELD",
    "dimension_field",
]

#: The request field that names the time column (errors about it name this field).
TIME_FIELD = "source.partition.time_partition.column.name"

#: ``(start_ms, end_ms, dims)``: one epoch, keyed like ``EpochSlice``.
EpochKey = tuple[int, int, tuple[tuple[str, str], ...]]


def dimension_field(index: int, leaf: str = "column.name") -> str:
    """The request field of the ``index``-th dimension partition, e.g. ``...dimension_partitions[1].column.name``."""
    return f"source.partition.dimension_partitions[{index}].{leaf}"


@dataclass(frozen=True, slots=True)
class Dimension:
    """One dimension column and the values admitted for it, in request order."""

    column: str
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SourceRequest:
    """Everything a connector needs for one admission.

    ``uri`` is the catalog URI (Iceberg), the JDBC URI or the StarRocks DSN;
    it may hold ``${env:NAME}`` / ``${file:/path}`` references instead of a
    credential (resolved only where the connection is made). ``windows`` are
    the epoch windows ``[start_ms, end_ms)``, sorted and non-overlapping.
    ``time_type`` is the declared ``PartitionColumnType`` name (``TIMESTAMP``,
    ``DATE``, ``STRING``, ``INT64``) or ``""`` when the request leaves it
    unspecified; a declared type the column does not have is rejected.
    ``driver`` is the JDBC driver class name, ``catalog_name`` StarRocks'
    ``internal_catalog_name``; ``version`` is the requested source version
    (an Iceberg snapshot id) or ``""`` for the current one.
    """

    uri: str
    database: str
    table: str
    time_column: str
    windows: tuple[tuple[int, int], ...]
    dimensions: tuple[Dimension, ...] = ()
    time_type: str = ""
    driver: str = ""
    catalog_name: str = ""
    version: str = ""

    def __post_init__(self) -> None:
        last_end = None
        for start, end in self.windows:
            if end <= start or (last_end is not None and start < last_end):
                raise ValueError("windows must be sorted, non-empty and non-overlapping [start_ms, end_ms) pairs")
            last_end = end

    def __repr__(self) -> str:  # the URI may embed a credential: never print it
        return f"SourceRequest(table={self.database}.{self.table}, windows={len(self.windows)})"

    def epoch_keys(self) -> list[EpochKey]:
        """Every epoch of the request: each window × each combination of dimension values."""
        dims = sorted(self.dimensions, key=lambda d: d.column)
        combos: list[tuple[tuple[str, str], ...]] = [()]
        for d in dims:
            combos = [c + ((d.column, v),) for c in combos for v in d.values]
        return [(s, e, c) for s, e in self.windows for c in combos]


@dataclass(frozen=True, slots=True)
class IcebergDeleteFile:
    """A delete file a loader must apply to its data file (``kind`` is ``position`` or ``equality``)."""

    path: str
    kind: str
    record_count: int
    file_size_in_bytes: int
    equality_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class IcebergFile:
    """One data file of an epoch, with the delete files that apply to it."""

    path: str
    file_format: str
    record_count: int
    file_size_in_bytes: int
    delete_files: tuple[IcebergDeleteFile, ...] = ()


@dataclass(frozen=True, slots=True)
class IcebergRead:
    """What to read for an Iceberg epoch: these files, filtered to the epoch's window and dimension values."""

    snapshot_id: int | None
    files: tuple[IcebergFile, ...]


@dataclass(frozen=True, slots=True)
class SqlRead:
    """What to read for a SQL epoch: ``SELECT columns FROM table WHERE predicate`` with ``params`` bound.

    ``table`` and ``columns`` are already quoted for the source's dialect;
    ``predicate`` uses ``:name`` placeholders (``sqlalchemy.text`` style).
    """

    table: str
    columns: tuple[str, ...]
    predicate: str
    params: Mapping[str, object] = field(default_factory=dict)

    def sql(self) -> str:
        """The whole ``SELECT`` text (placeholders unbound)."""
        return f"SELECT {', '.join(self.columns)} FROM {self.table} WHERE {self.predicate}"


@dataclass(frozen=True, slots=True)
class EpochPlan:
    """One epoch: what to read and what it costs (see the module docstring for each size)."""

    start_ms: int
    end_ms: int
    dims: tuple[tuple[str, str], ...]
    read: IcebergRead | SqlRead
    rows: int
    rows_exact: bool
    source_bytes: int
    memory_bytes: int
    scan_cost_bytes: int

    @property
    def key(self) -> EpochKey:
        """``(start_ms, end_ms, dims)``, the key of this epoch in ``SourcePlan.epochs``."""
        return (self.start_ms, self.end_ms, self.dims)


@dataclass(frozen=True, slots=True)
class SourcePlan:
    """A connector's answer for one admission.

    ``version`` is the resolved source version: the Iceberg snapshot id as a
    string, a SQL source's version string, or ``None`` when the source has no
    notion of one. ``fingerprint`` is ``leibrix.domain._schema.fingerprint`` of
    ``schema`` (the same function the workers use) and ``ipc`` its Arrow IPC
    stream (``leibrix.domain._schema.to_ipc``); a connector that converts a
    table's schema once and keeps it passes both as ``known_fingerprint`` and
    ``known_ipc``, else they are computed from ``schema`` when asked.
    """

    version: str | None
    schema: pa.Schema
    epochs: Mapping[EpochKey, EpochPlan]
    notes: tuple[str, ...] = ()
    known_fingerprint: str = ""
    known_ipc: bytes = b""

    @property
    def fingerprint(self) -> str:
        """The schema's fingerprint (16 hex digits)."""
        return self.known_fingerprint or _schema.fingerprint(self.schema)

    @property
    def ipc(self) -> bytes:
        """The schema as an Arrow IPC stream."""
        return self.known_ipc or _schema.to_ipc(self.schema)

    def __iter__(self):
        return iter(self.epochs.values())

    def __len__(self) -> int:
        return len(self.epochs)


@runtime_checkable
class Connector(Protocol):
    """A source connector: one method, metadata only, synchronous (call it from a worker thread).

    Implementations raise ``leibrix.domain._errors`` exceptions naming the
    request field at fault (see each module for the mapping).
    """

    def plan(self, request: SourceRequest) -> SourcePlan:
        """Resolve the source's version and schema and plan every epoch of ``request``."""
        ...

