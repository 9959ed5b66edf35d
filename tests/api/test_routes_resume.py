"""Routes from any master: a follower that never led answers like the leader, and WatchRoutes resumes by revision."""

from __future__ import annotations

import asyncio
import gc

import grpclib.server
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.api import _datasets
from leibrix.client._call import call
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, all_ready, quota, rpc
from tests.support.cluster import leader_and_follower, leading, start_master, workers
from tests.support.poll import eventually


async def _snapshot(addr: str, tenant: str, since: int = 0) -> list[cp.RouteUpdate]:
    """Every update up to and including SNAPSHOT_DONE."""

    async def consume(stub: cp.ManagementServiceStub) -> list[cp.RouteUpdate]:
        got = []
        async for update in stub.watch_routes(cp.WatchRoutesRequest(tenant_id=tenant, since_revision=since)):
            got.append(update)
            if update.kind == cp.RouteUpdateKind.SNAPSHOT_DONE:
                break
        return got

    updates, _ = await call(addr, consume, timeout=10)
    return updates


async def _caught_up(addr: str, tenant: str, since: int) -> list[cp.RouteUpdate] | None:
    """``_snapshot`` from ``since``, or None while that master is still behind it (UNAVAILABLE: retry)."""
    try:
        return await _snapshot(addr, tenant, since)
    except GRPCError as exc:
        if exc.status is Status.UNAVAILABLE and "behind" in (exc.message or ""):
            return None
        raise


def _routes(updates: list[cp.RouteUpdate]) -> dict[str, tuple[list[str], list[str]]]:
    return {u.route.epoch.epoch_id: (list(u.route.worker_ids), list(u.route.worker_addrs))
            for u in updates if u.kind == cp.RouteUpdateKind.UPSERT}


async def test_a_follower_that_never_led_resolves_routes_like_the_leader(etcd_server, nursery, monkeypatch) -> None:
    leader, follower = await leader_and_follower(nursery, etcd_server.endpoint)
    await workers(nursery, leader, "w1", "w2")
    await rpc(leader, "upsert_tenant_quota", quota())
    await rpc(leader, "admit_dataset", admission(days=3))
    await all_ready(leader, n=3, timeout=90)  # generous: the machine may be loaded
    on_leader = await _snapshot(leader.config.grpc_listen, "acme")
    revision = on_leader[-1].revision
    assert revision > 0 and len(_routes(on_leader)) == 3
    assert all(addrs and all(addrs) for _, addrs in _routes(on_leader).values()), "worker addresses are known"
    # The follower has never led: it answers from its mirror, with the same routes, addresses and revision.
    # It answers a resuming subscriber once its mirror reaches the revision (or refuses after RESUME_WAIT_S,
    # which a loaded machine can outlast: then ask again, as a client does).
    on_follower = await eventually(lambda: _caught_up(follower.config.grpc_listen, "acme", revision),
                                   until=lambda got: got is not None, timeout=60, interval=0.2,
                                   what=f"the follower's snapshot from revision {revision}")
    assert _routes(on_follower) == _routes(on_leader)
    assert on_follower[-1].revision == revision
    resolved = await rpc(follower, "resolve_route", cp.ResolveRouteRequest(tenant_id="acme", dataset_id="orders"))
    assert all(r.worker_addrs and all(r.worker_addrs) for r in resolved.routes)
    # A subscriber that has seen a revision this master has not reached is refused, not sent back in time.
    monkeypatch.setattr(_datasets, "RESUME_WAIT_S", 0.2)
    with pytest.raises(GRPCError) as info:
        await _snapshot(follower.config.grpc_listen, "acme", since=revision + 1_000_000)
    assert info.value.status is Status.UNAVAILABLE and "behind" in info.value.message


async def test_a_subscriber_that_leaves_in_the_middle_of_a_send_is_forgotten_at_once(
        etcd_server, nursery, monkeypatch) -> None:
    leader = await leading(await start_master(nursery, etcd_server.endpoint))
    await workers(nursery, leader, "w1")
    await rpc(leader, "upsert_tenant_quota", quota())
    await rpc(leader, "admit_dataset", admission(days=2))
    await all_ready(leader, n=2, timeout=90)
    # The master is in the middle of sending the snapshot's second update when the client leaves (a send held
    # back here, as by a slow network): grpclib cancels the handler inside that send.
    real_send = grpclib.server.Stream.send_message
    sent = 0

    async def send_message(self, message, **kwargs):
        nonlocal sent
        if isinstance(message, cp.RouteUpdate):
            sent += 1
            if sent == 2:
                await asyncio.Event().wait()
        return await real_send(self, message, **kwargs)

    monkeypatch.setattr(grpclib.server.Stream, "send_message", send_message)

    async def consume(stub: cp.ManagementServiceStub) -> int:
        async for _ in stub.watch_routes(cp.WatchRoutesRequest(tenant_id="acme")):
            return 1  # leaves after the first update
        return 0

    routes = leader.parts.admission.routes
    gc.disable()  # only an explicit close counts: a collection would also finalise a forgotten generator
    try:
        got, _ = await call(leader.config.grpc_listen, consume, timeout=10)
        assert got == 1 and sent == 2
        await eventually(lambda: routes.subscriber_count("acme") == 0, timeout=5, what="the subscription closed")
    finally:
        gc.enable()
