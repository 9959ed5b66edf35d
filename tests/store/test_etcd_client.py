"""The async etcd client against a real etcd: KV, transactions, leases, watches, errors."""

from __future__ import annotations

import signal
import urllib.request

import pytest
import trio

from leibrix.store import _etcd, _watch
from leibrix.store._etcd import (
    Compacted,
    Compare,
    Delete,
    EtcdClient,
    EtcdRefused,
    EtcdUnavailable,
    LeaseLost,
    Put,
    WatchEvent,
)
from leibrix.store._ports import free_port_url
from leibrix.store._writer import TxnLimits


async def test_put_get_delete_roundtrip(etcd: EtcdClient) -> None:
    rev = await etcd.put("/t/a", b"one")
    kv = await etcd.get("/t/a")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.version) == (
        "/t/a",
        b"one",
        rev,
        rev,
        1,
    )
    rev2 = await etcd.put("/t/a", b"two")
    kv2 = await etcd.get("/t/a")
    assert kv2 is not None and (kv2.value, kv2.create_revision, kv2.mod_revision, kv2.version) == (
        b"two",
        rev,
        rev2,
        2,
    )
    assert await etcd.delete("/t/a") is True
    assert await etcd.delete("/t/a") is False
    assert await etcd.get("/t/a") is None
    kv3, header = await etcd.get_with_revision("/t/a")
    assert kv3 is None and header > rev2


async def test_get_prefix_is_sorted_consistent_and_paged(
    etcd: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_etcd, "_PAGE", 7)  # force many pages over 50 keys
    names = [f"/p/{i:03d}" for i in range(50)]
    await etcd.txn([], [Put(k, k.encode()) for k in reversed(names)])
    await etcd.put("/q/outside", b"x")
    await etcd.put("/p", b"not under /p/")
    kvs, revision = await etcd.get_prefix("/p/")
    assert [kv.key for kv in kvs] == names
    assert all(kv.value == kv.key.encode() for kv in kvs)
    assert revision == (await etcd.get_with_revision("/p"))[1]


async def test_txn_compares_select_branch(etcd: EtcdClient) -> None:
    rev = await etcd.put("/x", b"v1")
    ok = await etcd.txn(
        [
            Compare("/x", "create", "==", rev),
            Compare("/x", "mod", "==", rev),
            Compare("/x", "version", ">", 0),
            Compare("/x", "value", "==", b"v1"),
            Compare("/missing", "version", "==", 0),
        ],
        [Put("/x", b"v2"), Put("/y", b"new")],
        [Put("/failed", b"1")],
    )
    assert ok.succeeded and ok.revision == rev + 1
    assert (await etcd.get("/y")) is not None
    bad = await etcd.txn([Compare("/x", "value", "!=", b"v2")], [Put("/z", b"no")], [Delete("/y")])
    assert not bad.succeeded
    assert await etcd.get("/z") is None and await etcd.get("/y") is None
    await etcd.txn([], [Put("/d/1", b""), Put("/d/2", b""), Put("/dx", b"")])
    await etcd.txn([], [Delete("/d/", prefix=True)])
    assert [kv.key for kv in (await etcd.get_prefix("/d"))[0]] == ["/dx"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("/k", "bogus", "==", 1), "Compare.target"),
        (("/k", "create", "=", 1), "Compare.op"),
        (("/k", "create", "==", b"1"), "must be int"),
        (("/k", "value", "==", 1), "must be bytes"),
        (("/k", "version", "==", True), "must be int"),
    ],
)
def test_compare_rejects_bad_arguments(args: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Compare(*args)


async def test_txn_over_max_ops_is_refused_whole(default_etcd: EtcdClient) -> None:
    limit = TxnLimits().max_ops  # etcd's default --max-txn-ops
    ops = [Put(f"/many/{i}", b"") for i in range(limit + 1)]
    with pytest.raises(EtcdRefused) as info:
        await default_etcd.txn([], ops)
    assert info.value.code == "INVALID_ARGUMENT" and "too many operations" in info.value.details
    assert info.value.reason == "too_many_ops" and info.value.exhausted
    assert (await default_etcd.get_prefix("/many/"))[0] == []
    assert (await default_etcd.txn([], ops[:limit])).succeeded


@pytest.mark.parametrize("size", [1600 * 1024, 3 * 1024 * 1024])
async def test_request_over_max_bytes_is_refused(default_etcd: EtcdClient, size: int) -> None:
    """Over etcd's 1.5 MiB etcd itself refuses; over its gRPC message limit gRPC does: both are too large."""
    with pytest.raises(EtcdRefused) as info:
        await default_etcd.txn([], [Put("/big", b"x" * size)])
    assert info.value.reason == "request_too_large" and info.value.exhausted
    assert await default_etcd.get("/big") is None


def test_refusal_reasons_are_classified() -> None:
    assert EtcdRefused("RESOURCE_EXHAUSTED", "etcdserver: mvcc: database space exceeded").reason == "no_space"
    other = EtcdRefused("PERMISSION_DENIED", "etcdserver: permission denied")
    assert other.reason == "other" and not other.exhausted


async def test_lease_keepalive_revoke_and_loss(etcd: EtcdClient) -> None:
    lease = await etcd.lease_grant(5)
    await etcd.put("/leased", b"v", lease=lease)
    kv = await etcd.get("/leased")
    assert kv is not None and kv.lease == lease
    assert await etcd.lease_keepalive(lease) == 5
    await etcd.lease_revoke(lease)
    assert await etcd.get("/leased") is None
    with pytest.raises(LeaseLost):
        await etcd.lease_keepalive(lease)
    await etcd.lease_revoke(lease)  # revoking a gone lease is not an error
    with pytest.raises(ValueError, match="whole number"):
        await etcd.lease_grant(0)


async def test_lease_expiry_deletes_attached_keys(etcd: EtcdClient) -> None:
    lease = await etcd.lease_grant(1)
    await etcd.put("/short", b"v", lease=lease)
    with trio.fail_after(5):
        while await etcd.get("/short") is not None:
            await trio.sleep(0.1)
    with pytest.raises(LeaseLost):
        await etcd.lease_keepalive(lease)


def _watchers(client_url: str) -> int:
    with urllib.request.urlopen(client_url + "/metrics", timeout=5) as resp:
        for line in resp.read().decode().splitlines():
            if line.startswith("etcd_debugging_mvcc_watcher_total"):
                return int(float(line.split()[-1]))
    raise AssertionError("watcher gauge missing from /metrics")


async def test_watch_delivers_history_and_live_events_then_cancels(etcd: EtcdClient, etcd_server) -> None:
    first = await etcd.put("/w/a", b"1")
    await etcd.put("/elsewhere", b"ignored")
    async with etcd.watch_prefix("/w/", start_revision=first) as stream:
        assert await trio.to_thread.run_sync(_watchers, etcd_server.client_url) == 1
        await etcd.txn([], [Put("/w/b", b"2"), Delete("/w/a")])
        seen: list[WatchEvent] = []
        with trio.fail_after(5):
            async for batch in stream:
                seen.extend(batch)
                if len(seen) >= 3:
                    break
    assert [(e.kind, e.kv.key) for e in seen] == [("put", "/w/a"), ("put", "/w/b"), ("delete", "/w/a")]
    assert seen[0].kv.value == b"1" and seen[1].kv.mod_revision == seen[2].kv.mod_revision
    with trio.fail_after(5):
        while await trio.to_thread.run_sync(_watchers, etcd_server.client_url) != 0:
            await trio.sleep(0.05)


async def test_watch_key_is_exact(etcd: EtcdClient) -> None:
    start = await etcd.put("/k", b"0")
    async with etcd.watch_key("/k", start_revision=start + 1) as stream:
        await etcd.put("/k2", b"not me")
        await etcd.put("/k", b"me")
        with trio.fail_after(5):
            batch = await stream.receive()
    assert [(e.kv.key, e.kv.value) for e in batch] == [("/k", b"me")]


async def test_cancelled_consumer_releases_the_watch(etcd: EtcdClient, etcd_server) -> None:
    start = await etcd.put("/c/0", b"")
    with trio.move_on_after(0.3):
        async with etcd.watch_prefix("/c/", start_revision=start + 1) as stream:
            async for _ in stream:
                pass
    # The consumer was cancelled while waiting; the etcd watch must be gone and
    # later writes must not wedge the client's watch thread.
    with trio.fail_after(5):
        while await trio.to_thread.run_sync(_watchers, etcd_server.client_url) != 0:
            await trio.sleep(0.05)
    for i in range(300):
        await etcd.put(f"/c/{i}", b"x")
    async with etcd.watch_prefix("/c/", start_revision=start) as stream:
        with trio.fail_after(5):
            assert (await stream.receive())[0].kv.key == "/c/0"


async def test_slow_consumer_gets_every_event_in_order(
    etcd: EtcdClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_watch, "_WATCH_BUFFER", 2)  # back-pressure after two batches
    start = await etcd.put("/s/start", b"")
    async with etcd.watch_prefix("/s/n", start_revision=start) as stream:
        for i in range(40):
            await etcd.put(f"/s/n{i:02d}", b"")
        got: list[str] = []
        with trio.fail_after(10):
            async for batch in stream:
                await trio.sleep(0.01)
                got.extend(e.kv.key for e in batch)
                if len(got) == 40:
                    break
    assert got == [f"/s/n{i:02d}" for i in range(40)]


async def test_a_watch_whose_consumer_stops_reading_never_holds_up_another(
        etcd: EtcdClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each watch has a stream and a reader thread of its own: back-pressure stays with the watch that applies it."""
    import leibrix.store._watch as watch

    monkeypatch.setattr(watch, "_WATCH_BUFFER", 2)
    start = await etcd.put("/stuck/0", b"")
    async with etcd.watch_prefix("/stuck/", start_revision=start + 1), \
            etcd.watch_prefix("/live/", start_revision=start + 1) as live:
        for i in range(1, 8):  # more batches than the stuck watch buffers: its reader waits for room
            await etcd.put(f"/stuck/{i}", b"")
        await etcd.put("/live/k", b"")
        with trio.fail_after(5):
            batch = await live.receive()
        assert [ev.kv.key for ev in batch] == ["/live/k"]


async def test_watch_from_compacted_revision_raises_compacted(etcd: EtcdClient) -> None:
    old = await etcd.put("/h", b"1")
    now = await etcd.put("/h", b"2")
    await etcd.compact(now)
    with pytest.raises(Compacted) as info, trio.fail_after(5):
        async with etcd.watch_prefix("/h", start_revision=old) as stream:
            await stream.receive()
    assert info.value.compact_revision == now


async def test_watch_reports_a_dead_server(etcd: EtcdClient, etcd_server) -> None:
    start = await etcd.put("/d", b"")
    with trio.fail_after(10):
        async with etcd.watch_prefix("/d", start_revision=start + 1) as stream:
            await etcd_server.stop()
            with pytest.raises(EtcdUnavailable):
                async for _ in stream:
                    pass


async def test_unreachable_endpoint_is_unavailable_fast() -> None:
    with trio.fail_after(5):
        with pytest.raises(EtcdUnavailable):
            await EtcdClient.connect([free_port_url()], timeout=1.0)


@pytest.mark.parametrize(
    ("endpoints", "error"),
    [([], "at least one"), (["unix://h:1"], "only http:// and https://"), (["http://h"], "host:port"), (["h:x"], "port")],
)
async def test_connect_validates_endpoints(endpoints: list[str], error: str) -> None:
    with pytest.raises(ValueError, match=error):
        await EtcdClient.connect(endpoints)


async def test_calls_on_a_dead_server_raise_unavailable(etcd: EtcdClient, etcd_server) -> None:
    await etcd_server.stop()
    with trio.fail_after(10):
        for call in (
            etcd.get("/x"),
            etcd.put("/x", b""),
            etcd.txn([], [Put("/x", b"")]),
            etcd.lease_grant(5),
        ):
            with pytest.raises(EtcdUnavailable):
                await call


async def test_status_and_members(etcd: EtcdClient, etcd_server) -> None:
    status = await etcd.status()
    assert status.version == "3.4.23" or status.version.startswith("3.")
    assert status.leader_id == status.member_id != 0 and status.raft_term >= 1 and status.db_size > 0
    (member,) = await etcd.members()
    assert member.id == status.member_id and member.name == etcd_server.cfg.name
    assert member.client_urls == (etcd_server.client_url,)
    assert member.peer_urls == (etcd_server.cfg.peer_url,)


async def test_multi_endpoint_client_fails_over(etcd_cluster) -> None:
    servers = await etcd_cluster(3)
    client = await EtcdClient.connect([s.endpoint for s in servers], timeout=2.0)
    try:
        assert len(await client.members()) == 3
        await servers[0].stop()
        await servers[1].stop()
        # Quorum is gone, reads that need it fail; the client must not hang or crash.
        with trio.fail_after(15):
            with pytest.raises(EtcdUnavailable):
                await client.put("/q", b"")
        await servers[0].start()
        with trio.fail_after(20):
            while True:
                try:
                    await client.put("/q", b"back")
                    break
                except EtcdUnavailable:
                    await trio.sleep(0.1)
        assert (await client.get("/q")).value == b"back"
    finally:
        await client.aclose()


async def test_connect_skips_a_dead_endpoint(etcd_server) -> None:
    dead = free_port_url()
    for order in ([dead, etcd_server.endpoint], [etcd_server.endpoint, dead]):
        client = await EtcdClient.connect(order, timeout=1.0)
        try:
            assert (await client.put("/alive", b"")) > 0
        finally:
            await client.aclose()


async def test_hung_server_hits_the_deadline_and_cancellation_is_prompt(etcd_server) -> None:
    client = await EtcdClient.connect([etcd_server.endpoint], timeout=0.5)
    etcd_server.kill(signal.SIGSTOP)  # accepts TCP, answers nothing
    try:
        start = trio.current_time()
        with pytest.raises(EtcdUnavailable, match="DEADLINE_EXCEEDED"):
            await client.get("/x")
        assert 0.4 <= trio.current_time() - start < 2.0
        start = trio.current_time()
        with trio.move_on_after(0.1):
            await client.txn([], [Put("/x", b"")])
        assert trio.current_time() - start < 0.3  # the caller is not held by the thread
    finally:
        etcd_server.kill(signal.SIGCONT)
        await client.aclose()


@pytest.mark.slow
async def test_idle_watch_on_a_frozen_server_ends_by_keepalive(etcd: EtcdClient, etcd_server) -> None:
    """No RST ever arrives from a frozen (or partitioned) member: gRPC keepalive must end the watch."""
    start = await etcd.put("/frozen", b"")
    try:
        with trio.fail_after(25):
            async with etcd.watch_prefix("/frozen", start_revision=start + 1) as stream:
                etcd_server.kill(signal.SIGSTOP)
                with pytest.raises(EtcdUnavailable):
                    async for _ in stream:
                        pass
    finally:
        etcd_server.kill(signal.SIGCONT)
