"""The worker hub over real gRPC with real etcd and real ``leibrix worker`` processes."""

from __future__ import annotations

import trio

from leibrix._liveness import WState
from leibrix._proto.records import state_pb2
from leibrix._store import Keys
from leibrix._worker_hub import WorkerHub
from tests.test_hub_support import (
    TableCoordinator,
    fast_config,
    serve,
    spawn_worker,
    start_leader,
    wait_state,
)

EPOCHS = [("t1", "ds", f"e{i}") for i in range(4)]


async def _cluster(etcd, nursery, epochs=EPOCHS, replicas=1, **cfg):
    keys = Keys("hub")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(**cfg), master_id="m1", keys=keys)
    coord = TableCoordinator(hub, list(epochs), replicas=replicas)
    ctx.coordinator = coord
    await nursery.start(hub.run_term, ctx)
    addr = await serve(nursery, hub)
    return keys, hub, coord, addr


async def _record(etcd, keys: Keys, wid: str) -> state_pb2.WorkerRecord:
    kv = await etcd.get(keys.worker(wid))
    assert kv is not None
    return state_pb2.WorkerRecord.FromString(kv.value)


async def test_register_heartbeat_assign_evict_round_trip(etcd, nursery) -> None:
    keys, hub, coord, addr = await _cluster(etcd, nursery)
    await spawn_worker(nursery, addr, "w1", "--zone", "z1")
    await wait_state(hub, "w1", WState.ACTIVE)
    m = hub.members["w1"]
    assert (m.memory_bytes, m.cpu_cores, m.zone) == (256 << 20, 1.0, "z1")
    assert m.software_version.startswith("leibrix-worker/")
    rec = await _record(etcd, keys, "w1")
    assert rec.state == WState.ACTIVE and rec.capacity.memory_bytes == 256 << 20
    # every epoch assigned, loaded and reported with measured rows
    await coord.wait(lambda: all(coord.ready.get(k) == {"w1"} for k in EPOCHS))
    # heartbeats carry real memory use (DuckDB's accounting of the loaded tables)
    with trio.fail_after(5):
        while hub.members["w1"].memory_used_bytes <= 0:
            await trio.sleep(0.05)
    rev_before = (await etcd.get(keys.worker("w1"))).mod_revision
    await trio.sleep(1.0)  # ~5 heartbeats: none of them writes etcd
    assert (await etcd.get(keys.worker("w1"))).mod_revision == rev_before
    assert hub.liveness.state("w1") is WState.ACTIVE
    # evict: the worker drops the table; its heartbeat reports the memory freed
    used = hub.members["w1"].memory_used_bytes
    for k in EPOCHS:
        assert await hub.evict("w1", *k, "test")
    with trio.fail_after(5):
        while hub.members["w1"].memory_used_bytes >= used:
            await trio.sleep(0.05)
    assert hub.members["w1"].memory_used_bytes == 0
    info = hub.info("w1")
    assert info.state.name == "ACTIVE" and info.capacity.memory_bytes == 256 << 20
