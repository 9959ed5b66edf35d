"""The control loop's settings: its tunables, the hooks its observers attach, and the names it reports.

One instance of each lives as long as the master; the coordinator of every
term reads them. The names (strategy names, eviction kinds) are bounded sets,
fit for metric labels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from leibrix.domain._heat import HeatModel
from leibrix.domain._lifecycle import RetryPolicy
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["ControlHooks", "CoordinatorConfig", "evict_kind", "strategy_name"]

#: The strategy of an epoch whose dataset, tenant and cluster name none the wire knows.
_FALLBACK_STRATEGY = cp.PlacementStrategy.CAPACITY


@dataclass(frozen=True, slots=True)
class CoordinatorConfig:
    """Tunables of placement and residency (defaults suit a small cluster)."""

    default_strategy: int = cp.PlacementStrategy.CAPACITY
    default_replication: int = 1
    hysteresis: float = 1.5
    #: Sanity bound of a load's measured bytes: at most this many times the planned bytes
    #: (``leibrix.control._worker_events.validate``).
    bytes_tolerance: float = 4.0
    retry: RetryPolicy = RetryPolicy()
    heat: HeatModel = HeatModel()
    #: Most PENDING epochs placed per scheduling pass (the rest wait for the next).
    max_candidates: int = 5000
    #: Candidates per pass that may try to displace residents when their pool is full.
    max_displacements: int = 16
    move_timeout_s: float = 60.0
    #: Shortest time between two scheduling passes (s): kicks arriving meanwhile are served by one pass, so a
    #: stream of admissions is placed in a few larger fenced writes instead of one write (and pass) each.
    min_pass_interval_s: float = 0.02
    #: Shortest time between two group commits of staged status reports (s), for the same reason.
    min_flush_interval_s: float = 0.01
    #: Seconds between heat checkpoints to etcd (``leibrix.control._heat_checkpoint``).
    heat_checkpoint_interval_s: float = 10.0
    #: Seconds a RETIRED epoch's record is kept before the janitor deletes it (``leibrix.control._janitor``).
    retired_ttl_s: float = 3600.0
    #: Seconds between the janitor's pruning passes.
    prune_interval_s: float = 60.0
    #: Seconds an uncommitted epoch (of an admission that never stored its dataset record) is left alone
    #: before the janitor deletes it (``leibrix.control._janitor``).
    orphan_ttl_s: float = 600.0


def _ignore(*_: object) -> None:
    return None


@dataclass(slots=True)
class ControlHooks:
    """What the control loop reports to its observers (the metrics); every hook is a no-op by default.

    One instance lives as long as the master (``AdmissionService.hooks``),
    shared by the coordinators of its terms.
    """

    #: Seconds one scheduling pass took (``Coordinator.schedule``, waiting for the lock excluded).
    pass_seconds: Callable[[float], None] = field(default=_ignore)
    #: One ``evict_epoch`` command sent, by kind (:func:`evict_kind`).
    evict: Callable[[str], None] = field(default=_ignore)


#: (needle in the reason, kind) in the order :func:`evict_kind` tries them.
_EVICT_KINDS = (("displaced", "displaced"), ("moved", "moved"), ("withdrawn", "withdrawn"),
                ("not assigned", "unassigned"), ("reloading", "reloading"), ("replaced by", "retired"),
                ("retir", "retired"), ("retention", "retired"), ("drop", "retired"), ("fail", "load_failed"),
                ("retrying", "load_failed"))


def evict_kind(reason: str) -> str:
    """The bounded kind of an ``evict_epoch`` reason: ``displaced`` (a higher-benefit epoch or a guarantee
    claim took its room), ``moved`` (rebalance, drain), ``withdrawn`` (a late status of a withdrawn
    assignment), ``unassigned`` (a worker's inventory holds it unasked), ``reloading``, ``retired``
    (refresh, retention, drop, RetireEpoch), ``load_failed``, else ``other``."""
    text = reason.lower()
    return next((kind for needle, kind in _EVICT_KINDS if needle in text), "other")


def strategy_name(code: int) -> str:
    """The ``leibrix.placement`` name of a ``PlacementStrategy`` wire value (``"round_robin"``, ...)."""
    try:
        strategy = cp.PlacementStrategy(code)
    except ValueError:
        strategy = _FALLBACK_STRATEGY
    if strategy is cp.PlacementStrategy.STRATEGY_DEFAULT:
        strategy = _FALLBACK_STRATEGY
    return strategy.name.lower()
