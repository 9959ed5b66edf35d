"""Rebalancing converges from what the coordinator holds: a worker that returns empty after its replicas were
re-placed is filled again within a few passes, by the leader that saw it leave or by a new one.

Three raw protocol workers, 300 single-replica epochs (one real master, real etcd, the real coordinator and
capacity strategy). Convergence: every worker within ``WITHIN`` of the mean replica count (CPU is every
epoch's dominant share and all reserve the same, so replica counts track the load) in at most ``PASSES``
passes of at most ``MOVES`` moves.
"""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from typing import Any

import trio

from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import MiB, admission, all_ready, quota, rpc
from tests.support.cluster import crashable_master, leading, start_master
from tests.support.poll import eventually
from tests.support.raw_worker import RawWorker, connected, planned

EPOCHS = 300  # 100 days x 3 regions
WORKERS = ("w1", "w2", "w3")
WITHIN = 0.10
MOVES = 32
#: moves needed to bring the returning worker within WITHIN of the mean, plus one pass that only starts
PASSES = math.ceil(EPOCHS / len(WORKERS) * (1 - WITHIN) / MOVES) + 2
FAST = dict(worker_heartbeat_interval=0.2, worker_dead_timeout=1.5, worker_rebalance_max_moves=MOVES)


def counts(m: Master) -> dict[str, int]:
    coord = m.parts.admission.coordinator
    return {w: coord.replica_count(w) for w in WORKERS}


def reserved_mib(m: Master) -> dict[str, float]:
    coord = m.parts.admission.coordinator
    return {w: round(coord.reserved(w)[0] / MiB, 1) for w in WORKERS}


def balanced(c: dict[str, int]) -> bool:
    mean = sum(c.values()) / len(c)
    return sum(c.values()) == EPOCHS and all(abs(n - mean) <= WITHIN * mean for n in c.values())


async def _admit(m: Master) -> None:
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    # CPU is every replica's dominant share (the measured bytes of the sample's epochs differ), so the
    # rebalancer's load is the replica share and replica counts can be compared directly
    hints = cp.EstimateHints(bytes_per_epoch=MiB, rows_per_epoch=100, cpu_cores_per_epoch=0.02)
    await rpc(m, "admit_dataset", admission(days=EPOCHS // 3, regions=("eu", "us", "ap"), hints=hints))
    await all_ready(m, n=EPOCHS, timeout=60)


async def _empty_return(m: Master, stack: AsyncExitStack, w3: AsyncExitStack) -> tuple[int, float]:
    """w3's stream ends; once DEAD its replicas live on w1 and w2; then w3 registers again holding nothing."""
    await w3.aclose()
    await eventually(lambda: counts(m), until=lambda c: c["w3"] == 0 and c["w1"] + c["w2"] == EPOCHS,
                     timeout=30, what="w3 DEAD and its replicas re-placed on w1 and w2")
    await all_ready(m, n=EPOCHS, timeout=30)
    mark = m.parts.hub.rebalance_passes, trio.current_time()
    await stack.enter_async_context(connected(m, RawWorker("w3", planned)))
    return mark


async def _converges(m: Master, first: int = 0, t0: float | None = None) -> tuple[int, float]:
    """Passes and seconds from (``first`` passes, time ``t0``; default now) until every worker is within WITHIN
    of the mean."""
    hub = m.parts.hub
    if t0 is None:
        first, t0 = hub.rebalance_passes, trio.current_time()
    await eventually(lambda: (counts(m), reserved_mib(m)), until=lambda v: balanced(v[0]), timeout=60,
                     what=f"every worker within {WITHIN:.0%} (replicas, reserved MiB)")
    return hub.rebalance_passes - first, trio.current_time() - t0


async def test_a_worker_returning_empty_is_filled_within_a_few_passes(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint, worker_rebalance_interval=0.3, **FAST))
    async with AsyncExitStack() as stack:
        for w in WORKERS[:2]:
            await stack.enter_async_context(connected(m, RawWorker(w, planned)))
        w3 = AsyncExitStack()
        stack.push_async_callback(w3.aclose)  # a no-op once w3 left
        await w3.enter_async_context(connected(m, RawWorker("w3", planned)))
        await _admit(m)
        # the capacity strategy packs in-use workers first: the passes spread its packing out too
        await eventually(lambda: counts(m), until=balanced, timeout=60, what="the admitted epochs spread out")
        first, t0 = await _empty_return(m, stack, w3)
        passes, seconds = await _converges(m, first, t0)
        print(f"\nreturned empty: balanced after {passes} passes, {seconds:.2f} s: {counts(m)}")
        assert passes <= PASSES, (passes, counts(m))
        await all_ready(m, n=EPOCHS)  # make-before-break: every epoch stayed READY
        # within the band: once a pass finds nothing to move (moves decided before the counts looked balanced
        # may still be finishing on a loaded machine), later passes move nothing either: no flapping
        hub = m.parts.hub
        with trio.fail_after(60):
            while True:
                p0, n0 = hub.rebalance_passes, len(hub.rebalance_moves)
                await eventually(lambda: hub.rebalance_passes, until=lambda n, p0=p0: n > p0, what="a pass")
                if sum(hub.rebalance_moves[n0:]) == 0:
                    break
        moved, passes_before = len(m.parts.hub.rebalance_moves), m.parts.hub.rebalance_passes
        await eventually(lambda: m.parts.hub.rebalance_passes, until=lambda n: n >= passes_before + 3,
                         what="three more passes")
        assert sum(m.parts.hub.rebalance_moves[moved:]) == 0 and balanced(counts(m))


async def test_a_new_leader_rebalances_a_skew_it_never_saw_form(etcd_server: Any, nursery: trio.Nursery) -> None:
    # the first leader never rebalances within the test; the skew it leaves is all the second one has
    a, a_scope = await crashable_master(nursery, etcd_server.endpoint, "m1", worker_rebalance_interval=3600, **FAST)
    await leading(a)
    b = await start_master(nursery, etcd_server.endpoint, "m2", worker_rebalance_interval=0.3, **FAST)
    async with AsyncExitStack() as stack:
        for w in WORKERS[:2]:
            await stack.enter_async_context(connected(a, RawWorker(w, planned)))
        w3 = AsyncExitStack()
        stack.push_async_callback(w3.aclose)
        await w3.enter_async_context(connected(a, RawWorker("w3", planned)))
        await _admit(a)
        await _empty_return(a, stack, w3)
        before = counts(a)
        assert not balanced(before), before
        a_scope.cancel()
        await stack.aclose()
    await leading(b)
    async with AsyncExitStack() as stack:
        for w in WORKERS:
            await stack.enter_async_context(connected(b, RawWorker(w, planned)))
        await all_ready(b, n=EPOCHS, timeout=60)
        passes, seconds = await _converges(b)
        print(f"\nafter failover from {before}: balanced after {passes} passes, {seconds:.2f} s: {counts(b)}")
        assert passes <= PASSES, (passes, counts(b))
