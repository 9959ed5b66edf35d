"""Liveness follows each worker's own cadence over real gRPC: a worker slower than the ack asks stays ACTIVE.

The raw workers here ignore the ack's interval as the Rust worker does (it
beats every 10 s, the first time 10 s after registering, against our 3 s and
a 10 s dead timeout), scaled down: the hub asks for 0.2 s with a 1.5 s dead
timeout, the workers beat every 0.8 s.
"""

from __future__ import annotations

import asyncio

import trio
import trio_asyncio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.domain._liveness import WState
from leibrix.store._store import Keys
from leibrix.workers._hub import WorkerHub
from tests.support.hub import TableCoordinator, fast_config, serve, start_leader
from tests.support.raw_worker import RawWorker

BEAT_S = 0.8


async def test_a_worker_beating_slower_than_asked_stays_active_and_one_gone_silent_dies(etcd, nursery) -> None:
    keys = Keys("cadence")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(heartbeat_interval=0.2, dead_timeout=1.5, rebalance_interval=60),
                    master_id="m1", keys=keys)
    hub.attach(TableCoordinator(hub, []))
    await nursery.start(hub.run_term, ctx)
    addr = await serve(nursery, hub)
    steady = RawWorker("steady", lambda a: None, beat_s=BEAT_S)
    quiet = RawWorker("quiet", lambda a: None, beat_s=BEAT_S, max_beats=3)
    live = hub.liveness
    async with trio_asyncio.open_loop():
        stop = asyncio.Event()
        async with trio.open_nursery() as inner:
            ended: list[GRPCError] = []

            async def run_quiet() -> None:
                try:
                    await quiet.run(addr, stop)
                except GRPCError as e:  # the master ends a DEAD worker's stream
                    ended.append(e)

            inner.start_soon(trio_asyncio.aio_as_trio(steady.run), addr, stop)
            inner.start_soon(trio_asyncio.aio_as_trio(run_quiet))
            steady_states: set[WState | None] = set()
            quiet_states: list[WState | None] = []
            with trio.fail_after(20):
                while not (steady.registered and quiet.registered):
                    await trio.sleep(0.01)
                # eight of the steady one's periods (each four of the intervals the ack asks for), sampled all
                # along; the quiet one stops after 3 beats with its stream open
                while steady.beats < 8 or live.state("quiet") is not WState.DEAD:
                    steady_states.add(live.state("steady"))
                    if not quiet_states or quiet_states[-1] is not live.state("quiet"):
                        quiet_states.append(live.state("quiet"))
                    await trio.sleep(0.02)
            assert steady_states == {WState.ACTIVE}, steady_states
            assert live.get("steady").cadence >= BEAT_S * 0.9
            # quiet: SUSPECT after 2 of its own intervals, DEAD after 3, which is longer than dead_timeout
            assert quiet.beats == 3
            assert quiet_states == [WState.ACTIVE, WState.SUSPECT, WState.DEAD], quiet_states
            assert hub._clock() - live.get("quiet").last_seen >= 3 * BEAT_S * 0.9 > hub.config.dead_timeout
            assert live.state("steady") is WState.ACTIVE
            stop.set()
    # the master ended the DEAD worker's stream, and only that one
    assert [(e.status, e.message) for e in ended] == [(Status.UNAVAILABLE, "declared DEAD")]
