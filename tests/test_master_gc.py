"""The master quiets the cyclic GC once its Mirror is loaded (full collections at 100k epochs outlast the lease)."""

from __future__ import annotations

import gc
from typing import Any

import trio

from leibrix._master import _GC_THRESHOLDS
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
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
