"""Draining a worker over real gRPC, real etcd and real ``leibrix worker`` processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import trio

from leibrix.control._drain import cancel_drain, start_drain
from leibrix.domain._errors import InvalidArgument, NotFound
from leibrix.domain._liveness import WState
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Keys
from leibrix.workers._hub import WorkerHub
from tests.support.hub import TableCoordinator, fast_config, serve, spawn_worker, start_leader, wait_state

EPOCHS = [("t1", "ds", f"e{i}") for i in range(4)]


@dataclass
class DrainingCoordinator(TableCoordinator):
    """The table coordinator as a drain's host (``leibrix.control._drain.DrainHost``): drains run in ``nursery``."""

    nursery: Any = None
    drains: dict[str, Any] = field(default_factory=dict)

    def spawn(self, fn, *args) -> None:
        self.nursery.start_soon(fn, *args)


async def _cluster(etcd, nursery, *, rows: int = 1000):
    keys = Keys("drain")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(rebalance_interval=600), master_id="m1", keys=keys)
    coord = DrainingCoordinator(hub, EPOCHS, rows=rows, nursery=nursery)
    hub.attach(coord)
    await nursery.start(hub.run_term, ctx)
    addr = await serve(nursery, hub)
    return keys, hub, coord, addr


async def test_drain_make_before_break_one_at_a_time(etcd, nursery) -> None:
    keys, hub, coord, addr = await _cluster(etcd, nursery)
    proc = await spawn_worker(nursery, addr, "w1")
    await coord.wait(lambda: all(coord.ready.get(k) == {"w1"} for k in EPOCHS))
    await spawn_worker(nursery, addr, "w2")
    await wait_state(hub, "w2", WState.ACTIVE)
    # watch the invariant while the drain runs: every epoch always has a READY replica,
    # and w1 never has more than max_parallel=1 moves in flight
    worst = {"ready": 10, "in_flight": 0}

    async def watch() -> None:
        while True:
            worst["ready"] = min(worst["ready"], min(len(coord.ready.get(k, ())) for k in EPOCHS))
            loading = sum(1 for k in EPOCHS if "w2" in coord.assigned.get(k, ()) and "w2" not in coord.ready.get(k, ()))
            worst["in_flight"] = max(worst["in_flight"], loading)
            await trio.sleep(0)

    async with trio.open_nursery() as n:
        n.start_soon(watch)
        drain = await start_drain(hub, "w1", deadline_s=30, max_parallel=1)
        assert hub.liveness.state("w1") is WState.DRAINING
        assert state_pb2.WorkerRecord.FromString((await etcd.get(keys.worker("w1"))).value).state == WState.DRAINING
        assert "w1" not in [w for w in hub.members if hub.liveness.get(w).placeable]
        with trio.fail_after(20):
            await drain.done.wait()
        n.cancel_scope.cancel()
    assert (drain.moved_make_before_break, drain.moved_break_before_make, drain.remaining) == (4, 0, 0)
    assert not drain.deadline_exceeded and drain.message == "drained"
    assert worst == {"ready": 1, "in_flight": 1}
    assert all(coord.ready[k] == {"w2"} for k in EPOCHS)
    # the worker got drain_command and exited by itself with status 0
    with trio.fail_after(10):
        assert await proc.wait() == 0
    assert state_pb2.WorkerRecord.FromString((await etcd.get(keys.worker("w1"))).value).state == WState.DRAINED
    # asking again answers with the finished drain
    assert await start_drain(hub, "w1") is drain


async def test_drain_past_deadline_moves_break_before_make(etcd, nursery) -> None:
    # large tables so that a make-before-break load outlasts a tiny deadline
    keys, hub, coord, addr = await _cluster(etcd, nursery, rows=3_000_000)
    await spawn_worker(nursery, addr, "w1", "--memory", "2GiB")
    await coord.wait(lambda: all(coord.ready.get(k) == {"w1"} for k in EPOCHS), timeout=60)
    await spawn_worker(nursery, addr, "w2", "--memory", "2GiB")
    await wait_state(hub, "w2", WState.ACTIVE)
    drain = await start_drain(hub, "w1", deadline_s=0.05, max_parallel=1)
    with trio.fail_after(60):
        await drain.done.wait()
    assert drain.deadline_exceeded
    assert drain.moved_break_before_make >= 1
    assert drain.moved_make_before_break + drain.moved_break_before_make == 4 and drain.remaining == 0
    assert "deadline exceeded" in drain.message
    assert all(coord.ready[k] == {"w2"} for k in EPOCHS)


async def test_drain_bad_requests(etcd, nursery) -> None:
    keys, hub, coord, addr = await _cluster(etcd, nursery)
    with pytest.raises(InvalidArgument, match="deadline_s"):
        await start_drain(hub, "w1", deadline_s=-1)
    with pytest.raises(InvalidArgument, match="max_parallel"):
        await start_drain(hub, "w1", max_parallel=-2)
    with pytest.raises(InvalidArgument, match="worker_id"):
        await start_drain(hub, "")
    with pytest.raises(NotFound, match="nope"):
        await start_drain(hub, "nope")


async def test_undrain_stops_a_running_drain_and_makes_the_worker_placeable(etcd, nursery) -> None:
    # large tables so that the drain is still moving when it is cancelled
    keys, hub, coord, addr = await _cluster(etcd, nursery, rows=3_000_000)
    await spawn_worker(nursery, addr, "w1", "--memory", "2GiB")
    await coord.wait(lambda: all(coord.ready.get(k) == {"w1"} for k in EPOCHS), timeout=60)
    await spawn_worker(nursery, addr, "w2", "--memory", "2GiB")
    await wait_state(hub, "w2", WState.ACTIVE)
    await cancel_drain(hub, "w2")  # not draining: answered as it is
    assert hub.liveness.state("w2") is WState.ACTIVE
    drain = await start_drain(hub, "w1", deadline_s=600, max_parallel=1)
    await coord.wait(lambda: any("w2" in coord.assigned.get(k, ()) for k in EPOCHS), timeout=30)
    await cancel_drain(hub, "w1")
    assert drain.done.is_set() and drain.message == "cancelled" and not drain.deadline_exceeded
    assert hub.liveness.state("w1") is WState.ACTIVE and hub.liveness.get("w1").placeable
    assert state_pb2.WorkerRecord.FromString((await etcd.get(keys.worker("w1"))).value).state == WState.ACTIVE
    assert any("w1" in coord.ready.get(k, ()) for k in EPOCHS), "what was not moved stays on w1"
    with pytest.raises(NotFound, match="nope"):
        await cancel_drain(hub, "nope")
