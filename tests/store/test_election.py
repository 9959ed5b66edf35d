"""Leader election on a real etcd: campaign, handover, resign, observe, loss detection."""

from __future__ import annotations

import time

import pytest
import trio

from leibrix.store._election import Election, LeaderInfo, Term
from leibrix.store._etcd import EtcdClient, LeaseLost
from leibrix.wire._proto.records import state_pb2

KEY = "/leibrix/test/leader"


def record(name: str) -> bytes:
    return state_pb2.MasterRecord(
        id=name, grpc_addr=f"{name}.grpc:1", http_addr=f"{name}.http:2"
    ).SerializeToString()


def election(client: EtcdClient, name: str, ttl: float = 1) -> Election:
    return Election(client, key=KEY, record=record(name), ttl=ttl)


async def test_first_campaign_wins_and_token_is_the_create_revision(etcd: EtcdClient) -> None:
    a = election(etcd, "a")
    assert await a.leader() is None
    with trio.fail_after(5):
        term = await a.campaign()
    kv = await etcd.get(KEY)
    assert kv is not None and kv.create_revision == term.token and kv.lease == term.lease_id
    assert await a.leader() == LeaderInfo("a", "a.grpc:1", "a.http:2", term.token)
    assert term.is_valid() and term.leader_key == KEY


def test_ttl_below_one_second_is_refused() -> None:
    with pytest.raises(ValueError, match="ttl must be >= 1"):
        Election(None, key=KEY, record=b"", ttl=0.5)  # type: ignore[arg-type]


async def test_second_candidate_waits_then_takes_over_on_resign(
    etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    a, b = election(etcd, "a", ttl=5), election(etcd, "b", ttl=5)
    term_a = await a.campaign()
    await nursery.start(a.keep_alive, term_a)
    won: list[Term] = []

    async def run_b() -> None:
        won.append(await b.campaign())

    nursery.start_soon(run_b)
    await trio.sleep(0.5)
    assert not won, "b must not win while a holds the key"
    resigned_at = trio.current_time()
    await a.resign(term_a)
    assert term_a.lost.is_set()
    with trio.fail_after(2):
        while not won:
            await trio.sleep(0.005)
    handover = trio.current_time() - resigned_at
    assert handover < 0.5, f"resign handover took {handover:.3f}s"
    (term_b,) = won
    assert term_b.token > term_a.token
    assert (await b.leader()).id == "b"  # type: ignore[union-attr]
    with pytest.raises(LeaseLost):
        await etcd.lease_keepalive(term_a.lease_id)


async def test_resign_of_a_stale_term_leaves_the_new_leader_alone(etcd: EtcdClient) -> None:
    a, b = election(etcd, "a"), election(etcd, "b")
    term_a = await a.campaign()
    await etcd.lease_revoke(term_a.lease_id)  # a's term ends behind its back
    term_b = await b.campaign()
    await a.resign(term_a)
    info = await b.leader()
    assert info is not None and (info.id, info.token) == ("b", term_b.token)


async def test_keep_alive_holds_the_term_across_many_ttls(etcd: EtcdClient, nursery: trio.Nursery) -> None:
    a, b = election(etcd, "a"), election(etcd, "b")
    term = await a.campaign()
    await nursery.start(a.keep_alive, term)
    with trio.move_on_after(3.5):  # 3.5 TTLs
        await b.campaign()
        pytest.fail("b won while a kept its lease alive")
    assert term.is_valid()
    assert (await a.leader()).token == term.token  # type: ignore[union-attr]
    await a.resign(term)


async def test_a_busy_event_loop_does_not_cost_the_term(etcd: EtcdClient, nursery: trio.Nursery) -> None:
    """The keepalives come from threads of their own: a loop blocked for longer than the lease (here 1.6 s
    of a 1 s lease) finds its term still valid, and nobody else took the key meanwhile."""
    a, b = election(etcd, "a"), election(etcd, "b")
    term = await a.campaign()
    await nursery.start(a.keep_alive, term)
    contender = trio.CancelScope()

    async def contend() -> None:
        with contender:
            await b.campaign()
            pytest.fail("b won while a's loop was busy")

    nursery.start_soon(contend)
    await trio.sleep(0.3)
    time.sleep(1.6)  # the loop does nothing else meanwhile
    assert term.is_valid()
    await trio.sleep(1.0)
    assert term.is_valid() and (await a.leader()).token == term.token  # type: ignore[union-attr]
    contender.cancel()
    await a.resign(term)


async def test_without_keepalive_the_lease_expires_and_the_clock_says_so(etcd: EtcdClient) -> None:
    a, b = election(etcd, "a"), election(etcd, "b")
    term_a = await a.campaign()
    with trio.fail_after(5):
        term_b = await b.campaign()
    # etcd expired a's lease; a's own clock agrees without asking etcd.
    assert not term_a.is_valid() and term_a.lost.is_set()
    assert term_b.token > term_a.token


async def test_keep_alive_notices_a_revoked_lease(etcd: EtcdClient) -> None:
    a = election(etcd, "a", ttl=3)
    term = await a.campaign()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.keep_alive, term)
        await etcd.lease_revoke(term.lease_id)
        with trio.fail_after(2):
            await term.lost.wait()
    # keep_alive returned by itself once the term was lost (the nursery closed).


async def test_keep_alive_notices_its_key_deleted(etcd: EtcdClient) -> None:
    a = election(etcd, "a", ttl=30)
    term = await a.campaign()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.keep_alive, term)
        await etcd.delete(KEY)
        with trio.fail_after(2):
            await term.lost.wait()


async def test_keep_alive_gives_up_by_its_own_clock_when_etcd_is_gone(etcd: EtcdClient, etcd_server) -> None:
    a = election(etcd, "a", ttl=1)
    term = await a.campaign()
    async with trio.open_nursery() as nursery:
        await nursery.start(a.keep_alive, term)
        await trio.sleep(0.5)
        await etcd_server.stop()
        stopped = trio.current_time()
        with trio.fail_after(3):
            await term.lost.wait()
        # Never later than the deadline (plus scheduling slack).
        assert trio.current_time() <= term.deadline + 0.3
        assert trio.current_time() - stopped <= 1.3


async def test_observe_reports_every_leadership_change(etcd: EtcdClient) -> None:
    a, b = election(etcd, "a", ttl=5), election(etcd, "b", ttl=5)
    seen: list[LeaderInfo | None] = []
    async with b.observe() as changes:
        with trio.fail_after(5):
            seen.append(await changes.receive())
            term_a = await a.campaign()
            seen.append(await changes.receive())
            await a.proclaim(term_a, record("a2"))
            seen.append(await changes.receive())
            await a.resign(term_a)
            seen.append(await changes.receive())
            term_b = await b.campaign()
            seen.append(await changes.receive())
    assert seen == [
        None,
        LeaderInfo("a", "a.grpc:1", "a.http:2", term_a.token),
        LeaderInfo("a2", "a2.grpc:1", "a2.http:2", term_a.token),
        None,
        LeaderInfo("b", "b.grpc:1", "b.http:2", term_b.token),
    ]


async def test_proclaim_fails_for_a_lost_term(etcd: EtcdClient) -> None:
    a = election(etcd, "a")
    term = await a.campaign()
    await etcd.delete(KEY)
    assert await a.proclaim(term, record("a2")) is False
    assert term.lost.is_set()
    assert await etcd.get(KEY) is None


async def test_campaign_rides_out_an_etcd_restart(
    etcd: EtcdClient, etcd_server, nursery: trio.Nursery
) -> None:
    a, b = election(etcd, "a"), election(etcd, "b")
    await a.campaign()  # a never keeps alive: its lease lapses
    won: list[Term] = []

    async def run_b() -> None:
        won.append(await b.campaign())

    nursery.start_soon(run_b)
    await trio.sleep(0.1)
    etcd_server.kill()  # the supervisor restarts it on the same data
    with trio.fail_after(15):
        while not won:
            await trio.sleep(0.05)
    assert (await b.leader()).id == "b"  # type: ignore[union-attr]


async def test_campaign_waits_correctly_behind_a_long_held_key(
    etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    """The leader key's last write is older than etcd's compacted history: waiting must still work."""
    a, b = election(etcd, "a", ttl=5), election(etcd, "b", ttl=5)
    term_a = await a.campaign()
    await nursery.start(a.keep_alive, term_a)
    for i in range(5):
        latest = await etcd.put(f"/noise/{i}", b"")
    await etcd.compact(latest)
    won: list[Term] = []

    async def run_b() -> None:
        won.append(await b.campaign())

    nursery.start_soon(run_b)
    await trio.sleep(0.3)
    assert not won
    await a.resign(term_a)
    with trio.fail_after(2):
        while not won:
            await trio.sleep(0.005)
    assert won[0].token > latest


async def test_resign_never_fails_when_etcd_is_gone(etcd: EtcdClient, etcd_server) -> None:
    a = election(etcd, "a")
    term = await a.campaign()
    await etcd_server.stop()
    with trio.fail_after(3 * etcd.timeout):
        await a.resign(term)
    assert term.lost.is_set()
