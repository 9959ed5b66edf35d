"""What the source connector tells admission: per-epoch resource estimates and the table's schema.

Two estimators that need no source access answer, and admission calls only
their one method each:

* ``HintEstimator.estimate(hints)`` — memory, CPU, scan cost and rows per epoch;
* ``SyntheticSource.schema(spec)`` — the Arrow schema of every epoch's table,
  stored once per admission in the ``DatasetRecord`` (IPC bytes and
  fingerprint) and carried by every LoadPlan; a worker's load is validated
  against it.

The master must know, before loading, how much memory and CPU an epoch replica
will take (for budgets and packing) and what scanning it costs (for benefit).
This estimator uses the ``EstimateHints`` of the request, else conservative
defaults:

* ``memory_bytes`` = ``hints.bytes_per_epoch`` if set, else ``default_bytes``
  (64 MiB) — the in-memory size of one epoch replica;
* ``cpu_cores`` = ``hints.cpu_cores_per_epoch`` if set, else
  ``default_cpu_cores`` (0.05) — the share of a core a resident epoch needs for
  its query load, used by capacity packing and CPU budgets;
* ``scan_cost`` = ``hints.scan_cost`` if set, else ``memory_bytes`` — what one
  query would read from the lakehouse if the epoch were not resident (a full
  scan of the epoch's bytes);
* ``rows`` = ``hints.rows_per_epoch`` (0 = unknown: load validation then checks
  bytes and schema but not the row count).
"""

from __future__ import annotations

from dataclasses import dataclass

from leibrix.domain import _schema
from leibrix.domain._errors import InvalidArgument
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.domain._validation import AdmissionSpec

DEFAULT_BYTES = 64 << 20
DEFAULT_CPU_CORES = 0.05


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one replica of one epoch is expected to cost."""

    memory_bytes: int
    cpu_cores: float
    scan_cost: float
    rows: int


@dataclass(frozen=True, slots=True)
class HintEstimator:
    """The documented stand-in estimator: request hints first, then the defaults above."""

    default_bytes: int = DEFAULT_BYTES
    default_cpu_cores: float = DEFAULT_CPU_CORES

    def estimate(self, hints: cp.EstimateHints) -> Estimate:
        """The estimate shared by every epoch of an admission with these hints."""
        memory = hints.bytes_per_epoch or self.default_bytes
        return Estimate(
            memory_bytes=memory,
            cpu_cores=hints.cpu_cores_per_epoch or self.default_cpu_cores,
            scan_cost=hints.scan_cost or float(memory),
            rows=hints.rows_per_epoch,
        )


@dataclass(frozen=True, slots=True)
class SyntheticSource:
    """The source-connector stand-in for schemas: every epoch's table is the synthetic table the
    reference workers generate (``leibrix.domain._schema.synthetic``: id, the time column, key, value, one
    VARCHAR per dimension column).

    The time column is always ``TIMESTAMP`` (microseconds), whatever the
    request's ``PartitionColumn.type`` says: the synthetic generator makes
    timestamps. A real connector will read the catalog's schema instead.
    """

    def schema(self, spec: AdmissionSpec) -> _schema.TableSchema:
        """The table schema of ``spec``'s epochs (cached per shape: microseconds per admission).

        Raises ``InvalidArgument`` naming the request field whose column name
        collides with another column of the table (names are compared ignoring
        case, as DuckDB does), since such a table could never be loaded.
        """
        dims = [name for name, _ in spec.dimensions]
        try:
            return _schema.synthetic(spec.time_column, dims)
        except _schema.ColumnConflict as exc:
            if exc.column == spec.time_column:
                field = "source.partition.time_partition.column.name"
            else:
                field = f"source.partition.dimension_partitions[{dims.index(exc.column)}].column.name"
            raise InvalidArgument(field, str(exc)) from None
