"""The leader-only service hook: one run per term, cancelled the moment the term ends."""

from __future__ import annotations

from typing import Any

import trio

from leibrix.store._etcd import EtcdClient, Put
from leibrix.api._cluster import ClusterApi, ManagementService
from leibrix.master._compose import Parts
from leibrix.master._master import Master
from leibrix.store._term import TermContext
from leibrix.store._store import Fenced, Mirror
from tests.support.cluster import sole_leader, start_master
from tests.support.poll import eventually


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
    return await start_master(nursery, endpoint, name, cluster="hooks",
                              compose=lambda m: Parts(management=ManagementService([ClusterApi(m)]),
                                                      leader_services=[service]))


def starts(rec: Recorder) -> int:
    return len([e for e in rec.events if e[0] == "start"])


async def test_service_runs_once_per_term_and_is_cancelled_when_the_term_ends(
    etcd_server: Any, nursery: trio.Nursery
) -> None:
    rec_a, rec_b = Recorder(), Recorder()
    a = await start_with(nursery, etcd_server.endpoint, "a", rec_a)
    b = await start_with(nursery, etcd_server.endpoint, "b", rec_b)
    leader, (follower,) = await sole_leader(a, b)
    lead_rec, follow_rec = (rec_a, rec_b) if leader is a else (rec_b, rec_a)
    await eventually(lambda: lead_rec.events, timeout=10, what="the leader's service started")
    token = lead_rec.events[0][1]
    assert lead_rec.events == [("start", token)] and follow_rec.events == []
    ctx = lead_rec.contexts[0]
    assert ctx.keys is leader.keys and ctx.mirror is leader.mirror and ctx.writer.term is ctx.term

    await leader.shutdown()
    await eventually(lambda: follow_rec.events, timeout=10, what="the new leader's service started")
    assert lead_rec.events == [("start", token), ("cancelled", token)]
    new_token = follow_rec.events[0][1]
    assert follow_rec.events == [("start", new_token)] and new_token > token


async def test_losing_the_leader_key_ends_the_term_unwritten_and_the_master_campaigns_again(
    etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    rec = Recorder()
    master = await start_with(nursery, etcd_server.endpoint, "solo", rec)
    await sole_leader(master)
    await eventually(lambda: rec.events, timeout=10, what="the service started")
    token = rec.events[0][1]
    # Someone else takes the leader key over (as if our lease had expired unnoticed).
    await etcd.delete(master.keys.leader)
    await etcd.put(master.keys.leader, b"")
    rec.write_now.set()
    await eventually(lambda: rec.events, until=lambda ev: ("cancelled", token) in ev or ("fenced", token) in ev,
                     timeout=10, what="the term ended (cancelled or fenced)")
    assert await etcd.get(master.keys.tenant("probe")) is None, "the fenced write must not apply"
    await etcd.delete(master.keys.leader)
    await eventually(lambda: starts(rec) == 2, timeout=10, what="a second term started")
    assert rec.events[-1][0] == "start" and rec.events[-1][1] > token
    rec.write_now.set()
    await eventually(lambda: etcd.get(master.keys.tenant("probe")), until=lambda kv: kv is not None, timeout=5, what="the new term's write")


async def test_a_crashing_service_ends_the_term_which_is_resigned_and_won_again(
    etcd_server: Any, nursery: trio.Nursery
) -> None:
    rec = Recorder(crash_first=True)
    master = await start_with(nursery, etcd_server.endpoint, "solo", rec)
    await eventually(lambda: starts(rec) == 2, timeout=10, what="a second term started")
    first, second = (e[1] for e in rec.events if e[0] == "start")
    assert second > first
    assert master.is_leader


async def test_services_start_once_the_mirror_holds_everything_written_before_the_election(
    etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery, monkeypatch: Any
) -> None:
    """A watch still delivering the last term's writes holds the new term's services back: they would act on
    an older picture (and overwrite what the last leader wrote)."""
    released = trio.Event()
    apply_events = Mirror._apply_events

    async def held(self: Mirror, batch: Any) -> None:
        await released.wait()
        await apply_events(self, batch)

    monkeypatch.setattr(Mirror, "_apply_events", held)
    rec = Recorder()
    master = await start_with(nursery, etcd_server.endpoint, "solo", rec)
    won = await eventually(lambda: etcd.get(master.keys.leader), until=lambda kv: kv is not None, timeout=10,
                           what="the election won")
    await trio.sleep(1.0)  # a term's services start within milliseconds of the election when nothing holds them
    assert rec.events == [] and master.mirror is not None and master.mirror.revision < won.create_revision
    released.set()
    await eventually(lambda: rec.events, timeout=10, what="the service started once the mirror caught up")
    assert rec.events[0][1] == won.create_revision and master.mirror.revision >= won.create_revision
