"""The master quiets the cyclic GC once its Mirror is loaded (full collections at 100k epochs outlast the lease)."""

from __future__ import annotations

import gc
from typing import Any

import trio

from leibrix._master import _GC_THRESHOLDS, _freeze_survivors
from tests.test_admission_support import start_master


async def test_master_freezes_the_loaded_heap_and_raises_the_gc_thresholds(etcd_server: Any, nursery: trio.Nursery) -> None:
    before = gc.get_threshold()
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, as a fresh `leibrix master` has them
    try:
        master = await start_master(nursery, etcd_server.endpoint)
        assert master.health_report()[1]["mirror_loaded"]
        assert gc.get_threshold() == _GC_THRESHOLDS
        assert gc.get_freeze_count() > 0  # the start-up heap sits in the permanent generation
        assert _freeze_survivors in gc.callbacks
        # State built later (admissions) is frozen once it survives a generation-1 collection ...
        kept = [[i] for i in range(10_000)]
        frozen = gc.get_freeze_count()
        gc.collect(1)
        assert gc.get_freeze_count() >= frozen + len(kept)
        # ... while young cycles are still collected as before
        cycle: list[Any] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect(0) >= 1
    finally:
        if _freeze_survivors in gc.callbacks:
            gc.callbacks.remove(_freeze_survivors)
        gc.unfreeze()
        gc.set_threshold(*before)
