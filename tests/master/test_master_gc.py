"""The master keeps the cyclic GC's pauses short: the loaded heap is frozen, young collections run on a clock
and freeze their survivors, and answering a request leaves no reference cycle behind."""

from __future__ import annotations

import gc
from collections import Counter
from typing import Any

import trio

from leibrix.master._gc import GC_PACE_S, GC_THRESHOLDS
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, quota, rpc
from tests.support.cluster import leading, start_master
from tests.support.poll import eventually


class _Restored:
    """Undo what a master did to this (shared) test process's collector."""

    def __enter__(self) -> None:
        self.before = gc.get_threshold()
        gc.unfreeze()
        gc.set_threshold(700, 10, 10)  # CPython's defaults, as a fresh `leibrix master` has them

    def __exit__(self, *exc: object) -> None:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.unfreeze()
        gc.set_threshold(*self.before)


async def test_master_freezes_the_loaded_heap_then_paces_young_collections(etcd_server: Any,
                                                                          nursery: trio.Nursery) -> None:
    with _Restored():
        master = await start_master(nursery, etcd_server.endpoint)
        assert master.health_report()[1]["mirror_loaded"]
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # the start-up heap sits in the permanent generation
        # state built later is frozen by the next paced collection, without any threshold being reached
        kept = [[i] for i in range(10_000)]
        frozen = gc.get_freeze_count()
        await eventually(gc.get_freeze_count, until=lambda n: n >= frozen + len(kept), timeout=GC_PACE_S * 2.5,
                         what="a paced collection freezing the new state")
        # ... while cycles that die young are still collected
        gc.set_debug(gc.DEBUG_SAVEALL)
        cycle: list[Any] = []
        cycle.append(cycle)
        del cycle
        await eventually(lambda: any(type(o) is list and len(o) == 1 and o[0] is o for o in gc.garbage),
                         timeout=GC_PACE_S * 2.5, what="a paced collection finding the dead cycle")


async def test_answering_admissions_leaves_no_garbage_cycle_on_the_master(etcd_server: Any,
                                                                         nursery: trio.Nursery) -> None:
    """Before ``call_trio``, every RPC left trio-asyncio's Future/handle cycle holding its request (about 30
    objects); with early freezing such a cycle would never be reclaimed."""
    with _Restored():
        master = await start_master(nursery, etcd_server.endpoint)
        await leading(master)
        await rpc(master, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)  # every unreachable object found lands in gc.garbage
        for i in range(20):
            await rpc(master, "admit_dataset", admission(dataset=f"d{i}"))
        gc.collect()
        kinds = Counter(type(o).__name__ for o in gc.garbage)
        # the test's own client opens a channel per call (its transports are cyclic); the master's side is not
        assert kinds["AdmitDatasetRequest"] == kinds["AsyncHandle"] == kinds["Future"] == 0, kinds
