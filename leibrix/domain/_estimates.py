"""Per-epoch estimates: what the source connector planned, overridden by the request's hints.

The master must know, before loading, how much memory and CPU an epoch
replica will take (for budgets and packing), what scanning it costs (for
benefit) and how many rows it holds (to validate the load). Admission plans
every epoch from its source's metadata (``leibrix.sources``) and turns each
planned epoch into a ``planned`` :class:`Estimate`; ``HintEstimator.estimate``
then applies the request's ``EstimateHints``, each field only when given:

* ``memory_bytes`` = ``hints.bytes_per_epoch``, else the planned in-memory
  bytes — what one replica is charged until a load measures the truth;
* ``cpu_cores`` = ``hints.cpu_cores_per_epoch``, else ``default_cpu_cores``
  (0.05): the share of a core a resident epoch needs for its query load (a
  source cannot tell);
* ``scan_cost`` = ``hints.scan_cost``, else the planned scan cost (bytes a
  query engine would scan for the epoch without Leibrix);
* ``rows`` = ``hints.rows_per_epoch``, else the planned rows; ``rows_exact``
  stays true only while the rows are the source's exact count (a hint that
  differs is an estimate, and loads are then not held to it).

Without a plan (``planned=None``) the defaults stand in: ``default_bytes``
(64 MiB) for memory and scan cost, 0 rows (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["DEFAULT_BYTES", "DEFAULT_CPU_CORES", "Estimate", "HintEstimator"]

DEFAULT_BYTES = 64 << 20
DEFAULT_CPU_CORES = 0.05


@dataclass(frozen=True, slots=True)
class Estimate:
    """What one replica of one epoch is expected to cost, and the rows it holds."""

    memory_bytes: int
    cpu_cores: float
    scan_cost: float
    rows: int
    rows_exact: bool = False


@dataclass(frozen=True, slots=True)
class HintEstimator:
    """Planned estimates with the request's hints applied (see the module docstring)."""

    default_bytes: int = DEFAULT_BYTES
    default_cpu_cores: float = DEFAULT_CPU_CORES

    def estimate(self, hints: cp.EstimateHints, planned: Estimate | None = None) -> Estimate:
        """One epoch's estimate: ``planned`` (or the defaults) with each hint that is set in its place."""
        if planned is None:
            planned = Estimate(self.default_bytes, self.default_cpu_cores, 0.0, 0)
        memory = hints.bytes_per_epoch or planned.memory_bytes
        rows = hints.rows_per_epoch or planned.rows
        return Estimate(
            memory_bytes=memory,
            cpu_cores=hints.cpu_cores_per_epoch or planned.cpu_cores or self.default_cpu_cores,
            scan_cost=hints.scan_cost or (planned.scan_cost if planned.scan_cost else float(memory)),
            rows=rows,
            rows_exact=planned.rows_exact and rows == planned.rows,
        )
