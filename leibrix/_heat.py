"""Access heat with exponential decay: how hot an epoch is *now*, from the gateway's access reports.

Benefit (DESIGN.md §8) is ``scan_cost × heat ÷ memory``: heat is the factor
that changes with time. A plain counter would keep yesterday's burst resident
forever, so heat halves every ``half_life_s`` seconds without accesses::

    heat(t) = heat(t0) × 2^(−(t − t0) / half_life) + accesses since t0

Decay is applied lazily: an epoch stores only ``(value, at)`` and is brought
up to date when it is read or fed, so the master never walks every epoch on a
timer. New epochs start with ``prior`` heat so that a just-admitted epoch has
a non-zero benefit and can become resident before the first query arrives.

``ReportAccess`` also carries the bytes a query scanned; the decayed
bytes/queries ratio is the *observed* scan cost per access, which replaces the
estimator's guess once queries have been seen (see ``Heat.scan_cost``).

Heat lives only in the leader's memory (it is per-access data, which DESIGN.md
§6 keeps out of etcd); a new leader starts every epoch again from the prior.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_HALF_LIFE_S = 3600.0
DEFAULT_PRIOR = 1.0


@dataclass(frozen=True, slots=True)
class HeatModel:
    """Decay parameters shared by every epoch: the half-life and the heat of a never-queried epoch."""

    half_life_s: float = DEFAULT_HALF_LIFE_S
    prior: float = DEFAULT_PRIOR

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0):
            raise ValueError(f"half_life_s must be a finite number > 0, got {self.half_life_s}")
        if not (math.isfinite(self.prior) and self.prior >= 0):
            raise ValueError(f"prior must be a finite number >= 0, got {self.prior}")

    def factor(self, dt_s: float) -> float:
        """Multiplier after ``dt_s`` seconds (1.0 for no or negative elapsed time)."""
        return 1.0 if dt_s <= 0 else 2.0 ** (-dt_s / self.half_life_s)


class Heat:
    """Decayed access count and scanned bytes of one epoch (lazy: updated when read or fed)."""

    __slots__ = ("value", "scanned", "at")

    def __init__(self, model: HeatModel, now: float) -> None:
        self.value = model.prior
        self.scanned = 0.0
        self.at = now

    def _decay(self, model: HeatModel, now: float) -> None:
        f = model.factor(now - self.at)
        self.value *= f
        self.scanned *= f
        self.at = max(self.at, now)

    def feed(self, model: HeatModel, now: float, count: int, scanned_bytes: int = 0) -> float:
        """Add ``count`` accesses that scanned ``scanned_bytes`` in total; returns the new heat."""
        self._decay(model, now)
        self.value += count
        self.scanned += scanned_bytes
        return self.value

    def get(self, model: HeatModel, now: float) -> float:
        """Heat at ``now``."""
        self._decay(model, now)
        return self.value

    def scan_cost(self, estimate: float) -> float:
        """Observed bytes scanned per access once reported, else the estimator's ``estimate``."""
        accesses = self.value
        if self.scanned > 0 and accesses > 0:
            return self.scanned / accesses
        return estimate
