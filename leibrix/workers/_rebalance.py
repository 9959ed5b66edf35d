"""Rebalancing: make-before-break moves from the most to the least loaded workers of each pool.

Every pass is planned from what the term's coordinator holds *now* (each
ACTIVE worker's reservations and replica count), never from a memory of
which workers joined: a worker that restarted empty, a leader that took over
from one that was rebalancing, or a skew left by re-placing a dead worker's
replicas are all seen by the next pass.

**Load** of a worker is the capacity strategy's objective: the dominant share
``max(memory reserved / memory capacity, cpu reserved / cpu cores)`` of what
the coordinator has reserved on it. A pool whose workers hold replicas but
reserve nothing (every estimate zero) is compared by replica share instead.

**Hysteresis**: a pool starts rebalancing when some worker's load is more
than ``2 × tolerance`` of the pool's mean away from the mean, and keeps going
pass after pass until every worker is within ``tolerance`` of the mean (or no
single move would narrow the gap between the fullest and the emptiest
worker). Within the band nothing moves, so passes converge and then stop.

**Bound**: a pass moves at most ``budget`` replicas over all pools; an epoch
moves at most once per pass (two moves of one epoch at once would race over
which of its copies is the spare one). It reads counts and reservations in
constant time and only the donors' first few movable replicas, so a pass
costs the same at 100,000 replicas as at 10.

**Steering**: ``move_replica`` would let the epoch's strategy choose the new
worker, and the capacity strategy fills workers already in use before an
empty one, so left alone a replica moved off the fullest worker would land
on the next fullest. Each move therefore names its planned receiver
(``move_replica(..., to_worker=receiver)``): the coordinator excludes every
other eligible worker from that one placement, and a receiver the replica
does not fit makes the move give up (the next pass plans again). Nothing
else is narrowed: scheduling passes that run meanwhile place as usual. The
moves of a pass run together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from leibrix.workers._protocols import EpochCoordinator

__all__ = ["PoolWorker", "Rebalancer", "loads", "rebalance_pass"]

log = logging.getLogger(__name__)

Key = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class PoolWorker:
    """One ACTIVE worker of a pool as a pass sees it: its capacity."""

    id: str
    memory_bytes: int
    cpu_cores: float


def loads(workers: Sequence[PoolWorker], coordinator: EpochCoordinator) -> tuple[dict[str, float], dict[str, int]]:
    """(load, replica count) of every worker of one pool (see the module docstring for the load)."""
    counts = {w.id: coordinator.replica_count(w.id) for w in workers}
    out: dict[str, float] = {}
    for w in workers:
        mem, cpu = coordinator.reserved(w.id)
        out[w.id] = max(mem / max(1, w.memory_bytes), cpu / w.cpu_cores if w.cpu_cores > 0 else 0.0)
    if not any(out.values()) and any(counts.values()):
        total = sum(counts.values())
        out = {wid: n / total for wid, n in counts.items()}
    return out, counts


def _spread(load: dict[str, float]) -> float:
    """The largest distance of a worker's load from the pool's mean, relative to the mean (0 for an idle pool)."""
    mean = sum(load.values()) / len(load)
    if mean <= 0:
        return 0.0
    return max(abs(v - mean) for v in load.values()) / mean


@dataclass(slots=True)
class _Move:
    key: Key
    donor: str
    receiver: str
    pool: str


@dataclass
class Rebalancer:
    """The hysteresis state of every pool (see the module docstring)."""

    tolerance: float = 0.1
    #: pools between "more than 2 × tolerance off" and "all within tolerance"
    active: set[str] = field(default_factory=set)

    def reset(self) -> None:
        """A new term: no pool is rebalancing."""
        self.active.clear()

    # ---- passes --------------------------------------------------------------------

    def plan(self, pools: dict[str, list[PoolWorker]], coordinator: EpochCoordinator, budget: int) -> list[_Move]:
        """At most ``budget`` moves, most to least loaded, in the pools outside (or still closing) their band."""
        plan: list[_Move] = []
        planned: set[Key] = set()
        for pool, workers in pools.items():
            if len(workers) < 2:
                self.active.discard(pool)
                continue
            load, counts = loads(workers, coordinator)
            spread = _spread(load)
            if pool not in self.active and spread <= 2 * self.tolerance:
                continue
            self.active.add(pool)
            cap = {w.id: w for w in workers}
            movable: dict[str, list[Key]] = {}
            before = len(plan)
            while len(plan) < budget:
                if _spread(load) <= self.tolerance:
                    self.active.discard(pool)
                    break
                donor = max(load, key=load.__getitem__)
                receiver = min(load, key=load.__getitem__)
                if counts[donor] <= 0:
                    break
                unit = load[donor] / counts[donor]  # the load one of the donor's replicas carries, on average
                gain = unit * max(1, cap[donor].memory_bytes) / max(1, cap[receiver].memory_bytes)
                if load[donor] - load[receiver] <= max(unit, gain):
                    self.active.discard(pool)  # a move would only swap which of the two is fuller
                    break
                if donor not in movable:
                    movable[donor] = coordinator.movable_replicas(donor, budget + len(planned))
                candidates = movable[donor]
                while candidates and candidates[-1] in planned:
                    candidates.pop()
                if not candidates:
                    break
                key = candidates.pop()
                planned.add(key)
                plan.append(_Move(key, donor, receiver, pool))
                load[donor] -= unit
                load[receiver] += gain
                counts[donor] -= 1
                counts[receiver] += 1
            if len(plan) > before:
                log.info("rebalancing pool %r: %d moves planned (spread %.0f%% of the mean)",
                         pool, len(plan) - before, 100 * spread)
        return plan

    async def run_pass(self, pools: dict[str, list[PoolWorker]], coordinator: EpochCoordinator, budget: int) -> int:
        """Plan (see :meth:`plan`) and make the moves; returns how many moved (new replica LOADED, old dropped)."""
        plan = self.plan(pools, coordinator, budget)
        moved = 0

        async def move(m: _Move) -> None:
            nonlocal moved
            if await coordinator.move_replica(*m.key, m.donor, make_before_break=True, to_worker=m.receiver):
                moved += 1

        async with trio.open_nursery() as nursery:
            for m in plan:
                nursery.start_soon(move, m)
        return moved


async def rebalance_pass(pools: list[list[PoolWorker]], coordinator: EpochCoordinator, budget: int, *,
                         tolerance: float = 0.1) -> int:
    """One pass of a fresh :class:`Rebalancer` over unnamed pools (one starts beyond ``2 × tolerance``)."""
    r = Rebalancer(tolerance=tolerance)
    return await r.run_pass({str(i): ws for i, ws in enumerate(pools)}, coordinator, budget)
