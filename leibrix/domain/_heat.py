"""Access heat with exponential decay: how hot an epoch is *now*, from the gateway's access reports.

Benefit is ``scan_cost × heat ÷ memory``: heat is the factor
that changes with time. A plain counter would keep yesterday's burst resident
forever, so heat halves every ``half_life_s`` seconds without accesses::

    heat(t) = heat(t0) × 2^(−(t − t0) / half_life) + accesses since t0

Decay is applied lazily: an epoch stores only ``(value, scanned, at)`` and is
brought up to date when it is read or fed, so the master never walks every
epoch on a timer. New epochs start with ``prior`` heat so that a just-admitted epoch has
a non-zero benefit and can become resident before the first query arrives.

``ReportAccess`` also carries the bytes a query scanned; the decayed
bytes/queries ratio is the *observed* scan cost per access, which replaces the
estimator's guess once queries have been seen (see ``Heat.scan_cost``).

Heat is fed on the leader, in memory, per access report; it reaches etcd only
as periodic *checkpoints* (``heat/<t>/<d>/<e>``, written by
``leibrix.control._heat_checkpoint``), so a new leader resumes from the last one
instead of the prior. ``Heat.at`` is the process's monotonic clock, which means
nothing in another process: a checkpoint stores the heat decayed to the moment
it was written, stamped with the wall clock (:meth:`Heat.checkpoint`), and the
reader decays it by the wall-clock time since (:meth:`Heat.restore`).

**Fairness between tenants.** Heat is reported by the tenants themselves,
so a tenant could try to buy residency by spamming ``ReportAccess``. Each
tenant's *total* heat weight is therefore bounded: the leader keeps, per
tenant, the decayed sum of the heat reported for it (and of the checkpoints
it restored), and ranks the tenant's epochs with their heat multiplied by
:func:`fair_share` — 1 while that total is within ``HeatModel.tenant_budget``,
``tenant_budget / total`` above it. A tenant within the budget is ranked by
its raw heat; a tenant above it keeps the *relative* ranking of its own
epochs (all are scaled alike) while its epochs together never weigh more
than ``tenant_budget`` against other tenants', however much it reports.
Reporting more therefore moves heat among a tenant's own epochs, never
past the bound against others; and memory a tenant is guaranteed
(``leibrix.domain._tenants``) is never displaced by benefit at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from leibrix.wire._proto.records import state_pb2

DEFAULT_HALF_LIFE_S = 3600.0
DEFAULT_PRIOR = 1.0
#: Total heat weight of one tenant's epochs before they are scaled down (see the module docstring).
DEFAULT_TENANT_BUDGET = 100_000.0


@dataclass(frozen=True, slots=True)
class HeatModel:
    """Decay parameters shared by every epoch: the half-life and the heat of a never-queried epoch."""

    half_life_s: float = DEFAULT_HALF_LIFE_S
    prior: float = DEFAULT_PRIOR
    #: A tenant's total reported heat beyond which its epochs' heat is scaled down (0: unbounded).
    tenant_budget: float = DEFAULT_TENANT_BUDGET

    def __post_init__(self) -> None:
        if not (math.isfinite(self.half_life_s) and self.half_life_s > 0):
            raise ValueError(f"half_life_s must be a finite number > 0, got {self.half_life_s}")
        if not (math.isfinite(self.prior) and self.prior >= 0):
            raise ValueError(f"prior must be a finite number >= 0, got {self.prior}")
        if not (math.isfinite(self.tenant_budget) and self.tenant_budget >= 0):
            raise ValueError(f"tenant_budget must be a finite number >= 0, got {self.tenant_budget}")

    def factor(self, dt_s: float) -> float:
        """Multiplier after ``dt_s`` seconds (1.0 for no or negative elapsed time)."""
        return 1.0 if dt_s <= 0 else 2.0 ** (-dt_s / self.half_life_s)


class Heat(NamedTuple):
    """Decayed access count and scanned bytes of one epoch, as of ``at`` (immutable).

    A tuple of three floats: the cyclic garbage collector does not track it,
    so heat for 100,000 epochs adds nothing to collection pauses.
    """

    value: float
    scanned: float
    at: float

    @classmethod
    def new(cls, model: HeatModel, now: float) -> Heat:
        """A never-queried epoch: the model's prior heat."""
        return cls(model.prior, 0.0, now)

    def fed(self, model: HeatModel, now: float, count: float, scanned_bytes: float = 0) -> Heat:
        """The heat after ``count`` accesses at ``now`` that scanned ``scanned_bytes`` in total."""
        f = model.factor(now - self.at)
        return Heat(self.value * f + count, self.scanned * f + scanned_bytes, max(self.at, now))

    def get(self, model: HeatModel, now: float) -> float:
        """Heat at ``now`` (never more than now-decayed: reading in the past does not grow it)."""
        return self.value * model.factor(now - self.at)

    def scan_cost(self, estimate: float) -> float:
        """Observed bytes scanned per access once reported, else the estimator's ``estimate``."""
        if self.scanned > 0 and self.value > 0:
            return self.scanned / self.value
        return estimate

    def checkpoint(self, model: HeatModel, now: float, wall_now: float) -> bytes:
        """The ``HeatRecord`` bytes of this heat decayed to ``now``, stamped with ``wall_now`` (Unix seconds).

        Decaying before writing makes the record self-contained: the reader
        needs only the wall-clock time since ``at``, not this process's clock.
        """
        f = model.factor(now - self.at)
        r = state_pb2.HeatRecord(value=self.value * f, scanned=self.scanned * f)
        r.at.FromNanoseconds(int(wall_now * 1e9))
        return r.SerializeToString()

    @classmethod
    def restore(cls, raw: bytes, model: HeatModel, now: float, wall_now: float) -> Heat:
        """The heat of a stored checkpoint, decayed by the wall-clock time since it was written, as of ``now``.

        A reader whose wall clock is behind the writer's sees no elapsed time
        (no decay) rather than growth: the factor is 1 for negative intervals.
        """
        r = state_pb2.HeatRecord.FromString(raw)
        f = model.factor(wall_now - (r.at.seconds + r.at.nanos / 1e9))
        return cls(r.value * f, r.scanned * f, now)


def fair_share(model: HeatModel, tenant_total: float) -> float:
    """The factor on a tenant's epochs' heat: 1 while its total reported heat ``tenant_total`` is within
    ``model.tenant_budget`` (or there is none), else ``tenant_budget / tenant_total``."""
    budget = model.tenant_budget
    if not budget or tenant_total <= budget:
        return 1.0
    return budget / tenant_total

