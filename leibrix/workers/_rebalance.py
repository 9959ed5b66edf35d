"""Join rebalancing: a few make-before-break moves from the fullest to the emptiest workers of each pool.

When workers join, the hub runs one pass every ``rebalance_interval``, each
moving at most ``rebalance_max_moves`` replicas, so a growing cluster gets
used without a thundering herd; passes stop once every pool is balanced.
"""

from __future__ import annotations

import trio

from leibrix.workers._protocols import EpochCoordinator

__all__ = ["rebalance_pass"]


async def rebalance_pass(pools: list[list[str]], coordinator: EpochCoordinator, budget: int) -> int:
    """Plan at most ``budget`` moves over ``pools`` (ids of ACTIVE workers each) and run them; returns moves made.

    The plan assumes each moved replica lands on the emptiest worker (the
    coordinator picks the destination with the epoch's strategy) and stops
    when the replica counts of a pool differ by at most one. An epoch moves
    at most once per pass: two moves of one epoch at once would race over
    which of its copies is the spare one. It reads counts in constant time and only the donors' first
    few movable replicas, so a pass costs the same at 100,000 replicas as at 10.
    """
    plan: list[tuple[str, str, str, str]] = []
    planned: set[tuple[str, str, str]] = set()
    for wids in pools:
        counts = {wid: coordinator.replica_count(wid) for wid in wids}
        movable: dict[str, list[tuple[str, str, str]]] = {}
        while len(plan) < budget and len(counts) > 1:
            donor = max(counts, key=counts.__getitem__)
            receiver = min(counts, key=counts.__getitem__)
            if donor not in movable:
                movable[donor] = coordinator.movable_replicas(donor, budget)
            candidates = movable[donor]
            while candidates and candidates[-1] in planned:
                candidates.pop()
            if counts[donor] - counts[receiver] <= 1 or not candidates:
                break
            t, d, e = candidates.pop()
            planned.add((t, d, e))
            plan.append((t, d, e, donor))
            counts[donor] -= 1
            counts[receiver] += 1
    moved = 0

    async def move(t: str, d: str, e: str, wid: str) -> None:
        nonlocal moved
        if await coordinator.move_replica(t, d, e, wid, make_before_break=True):
            moved += 1

    async with trio.open_nursery() as n:
        for p in plan:
            n.start_soon(move, *p)
    return moved
