"""The leader-only service hook: one run per term, cancelled the moment the term ends."""

from __future__ import annotations

from typing import Any

import trio

from leibrix.store._etcd import EtcdClient, Put
from leibrix.api._cluster import ClusterApi, ManagementService
from leibrix.master._compose import Parts
from leibrix.master._master import Master
from leibrix.store._term import TermContext
from leibrix.store._store import Fenced
from leibrix.master._config import MasterConfig
from tests.api.test_grpc_service import _addr, wait_leader


class Recorder:
    """A leader service that logs its life per term and can be told to write or crash."""

    def __init__(self, *, crash_first: bool = False) -> None:
        self.events: list[tuple[str, int]] = []
        self.contexts: list[TermContext] = []
        self.crash_first = crash_first
        self.write_now = trio.Event()

    async def before_resign(self, ctx: TermContext) -> None:
        """Nothing held in memory to save."""

    async def run_term(self, ctx: TermContext, *, task_status: trio.TaskStatus[None]) -> None:
        self.contexts.append(ctx)
        self.events.append(("start", ctx.token))
        task_status.started()
        try:
            if self.crash_first and len(self.contexts) == 1:
                raise RuntimeError("leader service bug")
            await self.write_now.wait()
            self.write_now = trio.Event()
            try:
                await ctx.writer.commit([Put(ctx.keys.tenant("probe"), b"x")])
            except Fenced:
                self.events.append(("fenced", ctx.token))
                raise
            await trio.sleep_forever()
        except trio.Cancelled:
            self.events.append(("cancelled", ctx.token))
            raise


async def start_with(nursery: trio.Nursery, endpoint: str, name: str, service: Recorder) -> Master:
    """A bare master on ``endpoint`` with ``service`` as its only leader service."""
    config = MasterConfig(
        name=name, cluster="hooks", grpc_listen=_addr(), http_listen=_addr(), etcd_endpoints=[endpoint], lease_ttl=1
    ).validate()
    master = Master(config, compose=lambda m: Parts(management=ManagementService([ClusterApi(m)]),
                                                   leader_services=[service]))
    await nursery.start(master.run)
    return master


async def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def test_service_runs_once_per_term_and_is_cancelled_when_the_term_ends(
    etcd_server: Any, nursery: trio.Nursery
) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    a = await start_with(nursery, etcd_server.endpoint, "a", rec_a)
    b = await start_with(nursery, etcd_server.endpoint, "b", rec_b)
    leader, (follower,) = await wait_leader(a, b)
    lead_rec, follow_rec = (rec_a, rec_b) if leader is a else (rec_b, rec_a)
    await wait_for(lambda: lead_rec.events)
    token = lead_rec.events[0][1]
    assert lead_rec.events == [("start", token)] and follow_rec.events == []
    ctx = lead_rec.contexts[0]
    assert ctx.keys is leader.keys and ctx.mirror is leader.mirror and ctx.writer.term is ctx.term

    await leader.shutdown()
    await wait_for(lambda: follow_rec.events)
    assert lead_rec.events == [("start", token), ("cancelled", token)]
    new_token = follow_rec.events[0][1]
    assert follow_rec.events == [("start", new_token)] and new_token > token


async def test_losing_the_leader_key_ends_the_term_unwritten_and_the_master_campaigns_again(
    etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    rec = Recorder()
    master = await start_with(nursery, etcd_server.endpoint, "solo", rec)
    await wait_leader(master)
    await wait_for(lambda: rec.events)
    token = rec.events[0][1]
    # Someone else takes the leader key over (as if our lease had expired unnoticed).
    await etcd.delete(master.keys.leader)
    await etcd.put(master.keys.leader, b"")
    rec.write_now.set()
    await wait_for(lambda: ("cancelled", token) in rec.events or ("fenced", token) in rec.events)
    assert await etcd.get(master.keys.tenant("probe")) is None, "the fenced write must not apply"
    await etcd.delete(master.keys.leader)
    await wait_for(lambda: len([e for e in rec.events if e[0] == "start"]) == 2)
    assert rec.events[-1][0] == "start" and rec.events[-1][1] > token
    rec.write_now.set()
    with trio.fail_after(5):
        while await etcd.get(master.keys.tenant("probe")) is None:
            await trio.sleep(0.02)


async def test_a_crashing_service_ends_the_term_which_is_resigned_and_won_again(
    etcd_server: Any, nursery: trio.Nursery
) -> None:
    rec = Recorder(crash_first=True)
    master = await start_with(nursery, etcd_server.endpoint, "solo", rec)
    await wait_for(lambda: len([e for e in rec.events if e[0] == "start"]) == 2)
    first, second = (e[1] for e in rec.events if e[0] == "start")
    assert second > first
    assert master.is_leader
