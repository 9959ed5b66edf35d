"""The worker hub over real gRPC with real etcd and real ``leibrix worker`` processes."""

from __future__ import annotations

import trio

from leibrix.domain._liveness import WState
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Keys
from leibrix.workers._hub import WorkerHub
from tests.support.hub import (
    TableCoordinator,
    fast_config,
    serve,
    spawn_worker,
    start_leader,
    wait_beating,
    wait_state,
)

EPOCHS = [("t1", "ds", f"e{i}") for i in range(4)]


async def _cluster(etcd, nursery, epochs=EPOCHS, replicas=1, **cfg):
    keys = Keys("hub")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(**cfg), master_id="m1", keys=keys)
    coord = TableCoordinator(hub, list(epochs), replicas=replicas)
    hub.attach(coord)
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


async def test_kill_9_worker_dead_within_timeout_and_replicas_restored(etcd, nursery) -> None:
    keys, hub, coord, addr = await _cluster(etcd, nursery, replicas=2)
    procs = {w: await spawn_worker(nursery, addr, w) for w in ("w1", "w2", "w3")}
    for w in procs:
        await wait_state(hub, w, WState.ACTIVE)
    await coord.wait(lambda: all(len(coord.ready.get(k, ())) == 2 for k in EPOCHS))
    victim = max(procs, key=lambda w: len(coord.replicas_on(w)))
    lost = coord.replicas_on(victim)
    assert lost
    killed_at = trio.current_time()
    procs[victim].kill()  # SIGKILL
    await wait_state(hub, victim, WState.SUSPECT, timeout=2)  # closed stream: SUSPECT at once
    await wait_state(hub, victim, WState.DEAD, timeout=hub.config.dead_timeout + 1)
    assert trio.current_time() - killed_at <= hub.config.dead_timeout + 0.5
    # the DEAD record is written right after the in-memory transition (not atomically with it)
    with trio.fail_after(2):
        while (await _record(etcd, keys, victim)).state != WState.DEAD:
            await trio.sleep(0.02)
    # every replica the victim held is loaded again on a survivor: 2 READY replicas each
    await coord.wait(lambda: all(len(coord.ready.get(k, ())) == 2 and victim not in coord.ready[k]
                                 for k in EPOCHS))
    assert hub.last_replace_s is not None and hub.last_replace_s < 1.0


async def test_stream_cut_and_reconnect_within_grace_moves_nothing(etcd, nursery) -> None:
    keys, hub, coord, addr = await _cluster(etcd, nursery, rebalance_interval=60)
    await spawn_worker(nursery, addr, "w1")
    await spawn_worker(nursery, addr, "w2")
    for w in ("w1", "w2"):
        await wait_state(hub, w, WState.ACTIVE)
    await coord.wait(lambda: all(coord.ready.get(k) for k in EPOCHS))
    sent, evicted = len(coord.sent), len(coord.evicted)
    rev = (await etcd.get(keys.worker("w1"))).mod_revision
    hub.members["w1"].session.close(trio_status_unavailable(), "test cut")
    await wait_state(hub, "w1", WState.SUSPECT, timeout=2)
    await wait_state(hub, "w1", WState.ACTIVE, timeout=hub.config.dead_timeout)  # reconnected in time
    await trio.sleep(0.5)
    assert (len(coord.sent), len(coord.evicted)) == (sent, evicted)  # nothing moved or reloaded
    assert (await etcd.get(keys.worker("w1"))).mod_revision == rev  # a blip is no state change


async def test_frozen_worker_suspect_then_revives_without_moves(etcd, nursery) -> None:
    import signal

    keys, hub, coord, addr = await _cluster(etcd, nursery, dead_timeout=3.0, rebalance_interval=60)
    p1 = await spawn_worker(nursery, addr, "w1")
    await spawn_worker(nursery, addr, "w2")
    for w in ("w1", "w2"):
        await wait_state(hub, w, WState.ACTIVE)
    await coord.wait(lambda: all(coord.ready.get(k) for k in EPOCHS))
    sent = len(coord.sent)
    await wait_beating(hub, "w1")
    p1.send_signal(signal.SIGSTOP)  # missed heartbeats, stream still open
    try:
        await wait_state(hub, "w1", WState.SUSPECT, timeout=2)
        assert "w1" not in [m.worker_id for m in hub.members.values()
                            if hub.liveness.get(m.worker_id).placeable]
    finally:
        p1.send_signal(signal.SIGCONT)
    await wait_state(hub, "w1", WState.ACTIVE, timeout=2)
    assert len(coord.sent) == sent


def trio_status_unavailable():
    from grpclib.const import Status

    return Status.UNAVAILABLE


async def test_join_rebalancing_is_throttled_and_make_before_break(etcd, nursery) -> None:
    epochs = [("t1", "ds", f"e{i}") for i in range(9)]
    keys, hub, coord, addr = await _cluster(etcd, nursery, epochs=epochs, rebalance_interval=0.5,
                                            rebalance_max_moves=2)
    await spawn_worker(nursery, addr, "w1")
    await coord.wait(lambda: all(coord.ready.get(k) == {"w1"} for k in epochs))
    await spawn_worker(nursery, addr, "w2")
    await spawn_worker(nursery, addr, "w3")
    await coord.wait(lambda: sorted(len(coord.replicas_on(w)) for w in ("w1", "w2", "w3")) == [3, 3, 3]
                     and sum(hub.rebalance_moves) == 6, timeout=30)
    await trio.sleep(1.2)  # two more intervals: balanced, so nothing else moves
    moves = [n for n in hub.rebalance_moves if n]
    assert sum(moves) == 6 and max(moves) <= 2  # never more than the throttle per interval
    # make-before-break: every epoch was READY somewhere at every status we saw, and is READY now
    assert all(len(coord.ready.get(k, ())) == 1 for k in epochs)
    assert len(coord.evicted) == 6


async def test_eligible_is_active_workers_of_the_pool_with_reservations(etcd, nursery) -> None:
    keys, hub, coord, addr = await _cluster(etcd, nursery, epochs=[], rebalance_interval=60)
    await spawn_worker(nursery, addr, "w1", "--zone", "z1")
    await spawn_worker(nursery, addr, "w2", "--pool", "acme")
    for w in ("w1", "w2"):
        await wait_state(hub, w, WState.ACTIVE)
    coord.reservations["w1"] = (100 << 20, 0.5)
    [shared] = hub.eligible(None)
    assert (shared.id, shared.zone, shared.memory_bytes, shared.cpu_cores) == ("w1", "z1", 256 << 20, 1.0)
    assert (shared.used_memory_bytes, shared.used_cpu_cores) == (100 << 20, 0.5)
    assert [w.id for w in hub.eligible("acme")] == ["w2"]
    assert hub.addr("w2") and hub.state("w2").name == "ACTIVE" and hub.state("nope") is None
    await hub.set_drain("w1", WState.DRAINING)
    assert hub.eligible(None) == []  # DRAINING: no new placements
    assert hub.info("w1").reserved.memory_bytes == 100 << 20
    await hub.set_drain("w1", None)  # cancelled drain: placeable again
    assert [w.id for w in hub.eligible("")] == ["w1"]
