"""Key layout, fenced writes and the watched mirror, against a real etcd."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import pytest
import trio

from leibrix.store._election import Election, Term
from leibrix.store._etcd import Compare, Delete, EtcdClient, EtcdUnavailable, KeyValue, Put, WatchEvent
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Conflict, Fenced, FencedWriter, Keys, Mirror

KEYS = Keys("test")


def master(name: str) -> bytes:
    return state_pb2.MasterRecord(id=name, grpc_addr=f"{name}:1").SerializeToString()


def epoch(state: int, rows: int = 0) -> bytes:
    return state_pb2.EpochRecord(tenant_id="t", state=state, expected_rows=rows).SerializeToString()


async def lead(client: EtcdClient, name: str = "a", ttl: float = 5) -> tuple[Election, Term]:
    election = Election(client, key=KEYS.leader, record=master(name), ttl=ttl)
    return election, await election.campaign()


# -- Keys -------------------------------------------------------------------------------


def test_key_layout() -> None:
    assert KEYS.leader == "/leibrix/test/leader"
    assert KEYS.master("m1") == "/leibrix/test/masters/m1"
    assert KEYS.tenant("t") == "/leibrix/test/tenants/t"
    assert KEYS.dataset("t", "d") == "/leibrix/test/datasets/t/d"
    assert KEYS.epoch("t", "d", "e") == "/leibrix/test/epochs/t/d/e"
    assert KEYS.epochs_of("t", "d") == "/leibrix/test/epochs/t/d/"
    assert KEYS.worker("w") == "/leibrix/test/workers/w"
    assert KEYS.request("r") == "/leibrix/test/requests/r"


@pytest.mark.parametrize(
    ("build", "name"),
    [
        (lambda: Keys("a/b"), "cluster name"),
        (lambda: KEYS.tenant(""), "tenant_id"),
        (lambda: KEYS.dataset("t", "x/y"), "dataset_id"),
        (lambda: KEYS.epoch("t", "d", "e\x00"), "epoch_id"),
        (lambda: KEYS.worker("a/../b"), "worker_id"),
    ],
)
def test_key_parts_with_slashes_or_empty_are_refused(build, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        build()


# -- FencedWriter -----------------------------------------------------------------------


async def test_commit_applies_ops_and_returns_the_revision(etcd: EtcdClient) -> None:
    _, term = await lead(etcd)
    writer = FencedWriter(etcd, term)
    revision = await writer.commit([Put(KEYS.tenant("t1"), b"q"), Put(KEYS.tenant("t2"), b"r")])
    kv = await etcd.get(KEYS.tenant("t2"))
    assert kv is not None and kv.mod_revision == revision
    assert await writer.commit([Delete(KEYS.tenant("t1"))]) == revision + 1


async def test_stale_token_is_rejected_and_ends_the_term(etcd: EtcdClient) -> None:
    old_election, old = await lead(etcd, "old", ttl=1)
    await etcd.lease_revoke(old.lease_id)
    _, new = await lead(etcd, "new")
    before = (await etcd.get_with_revision(KEYS.tenant("t")))[1]
    stale = FencedWriter(etcd, old)
    with pytest.raises(Fenced):
        await stale.commit([Put(KEYS.tenant("t"), b"stale")])
    assert old.lost.is_set()
    assert await etcd.get(KEYS.tenant("t")) is None
    assert (await etcd.get_with_revision(KEYS.tenant("t")))[1] == before
    # Later attempts are refused locally without reaching etcd.
    with pytest.raises(Fenced):
        await stale.commit([Put(KEYS.tenant("t"), b"stale")])
    assert await FencedWriter(etcd, new).commit([Put(KEYS.tenant("t"), b"fresh")]) > new.token


async def test_failed_extra_compare_is_a_conflict_not_a_lost_term(etcd: EtcdClient) -> None:
    _, term = await lead(etcd)
    writer = FencedWriter(etcd, term)
    created = await writer.commit([Put(KEYS.dataset("t", "d"), b"v1")])
    guard = Compare(KEYS.dataset("t", "d"), "mod", "==", created)
    await writer.commit([Put(KEYS.dataset("t", "d"), b"v2")], compares=[guard])
    with pytest.raises(Conflict):
        await writer.commit([Put(KEYS.dataset("t", "d"), b"v3")], compares=[guard])
    assert not term.lost.is_set() and term.is_valid()
    assert (await etcd.get(KEYS.dataset("t", "d"))).value == b"v2"  # type: ignore[union-attr]


async def test_extra_compare_and_lost_term_reports_fenced(etcd: EtcdClient) -> None:
    _, term = await lead(etcd)
    await etcd.delete(KEYS.leader)
    with pytest.raises(Fenced):
        await FencedWriter(etcd, term).commit(
            [Put(KEYS.tenant("t"), b"")], compares=[Compare(KEYS.tenant("t"), "version", "==", 0)]
        )
    assert term.lost.is_set()


async def test_past_the_local_deadline_nothing_is_sent(etcd: EtcdClient) -> None:
    _, term = await lead(etcd, ttl=30)
    term.deadline = trio.current_time() - 0.001  # as if we were frozen past the TTL
    with pytest.raises(Fenced):
        await FencedWriter(etcd, term).commit([Put(KEYS.tenant("t"), b"")])
    assert term.lost.is_set()
    assert await etcd.get(KEYS.tenant("t")) is None
    assert (await etcd.get(KEYS.leader)).create_revision == term.token  # type: ignore[union-attr]


_FROZEN_LEADER = textwrap.dedent("""\
    import sys, trio
    from leibrix.store._etcd import EtcdClient, EtcdUnavailable, Put
    from leibrix.store._election import Election
    from leibrix.wire._proto.records import state_pb2
    from leibrix.store._store import Fenced, FencedWriter, Keys

    async def main(endpoint):
        keys = Keys("test")
        client = await EtcdClient.connect([endpoint])
        election = Election(client, key=keys.leader, ttl=1,
                            record=state_pb2.MasterRecord(id="frozen").SerializeToString())
        term = await election.campaign()
        print("leader", term.token, flush=True)
        writer = FencedWriter(client, term)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(election.keep_alive, term)
            n = 0
            while True:
                n += 1
                try:
                    await writer.commit([Put(keys.request(f"{term.token}-{n:06d}"), b"")])
                except Fenced:
                    break
                except EtcdUnavailable:
                    pass
                await trio.sleep(0.005)
            await term.lost.wait()
            print("stepped down", flush=True)
        await client.aclose()

    trio.run(main, sys.argv[1])
    """)


@pytest.mark.parametrize("successor", [True, False], ids=["with-successor", "alone"])
async def test_leader_frozen_past_its_lease_gets_no_write_accepted(
    etcd: EtcdClient, etcd_server, successor: bool
) -> None:
    """SIGSTOP the leader past its TTL, SIGCONT it: zero writes accepted, and it steps down.

    With a successor the fence (the key changed hands) rejects the writes;
    alone, etcd may not even have expired the lease yet, and the leader's own
    clock must stop it. Asserted on etcd's data, not on logs.
    """
    child = await trio.lowlevel.open_process(
        [sys.executable, "-c", _FROZEN_LEADER, etcd_server.endpoint],
        stdout=subprocess.PIPE,
    )
    lines: list[str] = []
    buffer = b""

    async def read_line() -> str:
        nonlocal buffer
        while b"\n" not in buffer:
            chunk = await child.stdout.receive_some()
            assert chunk, f"child exited early after {lines}"
            buffer += chunk
        line, buffer = buffer.split(b"\n", 1)
        lines.append(line.decode())
        return lines[-1]

    try:
        with trio.fail_after(15):
            old_token = int((await read_line()).split()[1])
            await trio.sleep(0.3)  # let it write for a while
            child.send_signal(signal.SIGSTOP)
            if successor:
                _, new = await lead(etcd, "successor")
                cutoff = new.token
            else:
                await trio.sleep(1.3)  # past the 1 s TTL (etcd may still hold the lease)
            # a write already on the wire when the signal landed may still be applied: what counts is
            # that nothing is accepted once the leader wakes up past its lease
            woke_at = (await etcd.get_with_revision(KEYS.leader))[1]
            child.send_signal(signal.SIGCONT)
            assert await read_line() == "stepped down"
            await child.wait()
        kvs, _ = await etcd.get_prefix(KEYS.root + Keys.REQUESTS)
        mine = [kv for kv in kvs if kv.key.rsplit("/", 1)[1].startswith(f"{old_token}-")]
        assert mine, "the leader wrote nothing before it was frozen"
        assert all(kv.mod_revision <= woke_at for kv in mine), "a write was accepted after the leader woke"
        if successor:
            assert all(kv.mod_revision < cutoff for kv in mine), "a write passed the fence of the new term"
    finally:
        child.send_signal(signal.SIGCONT)
        child.kill()
        with trio.CancelScope(shield=True):
            await child.wait()
        await child.stdout.aclose()


# -- Mirror -----------------------------------------------------------------------------


async def test_mirror_loads_then_follows_with_callbacks(etcd: EtcdClient, nursery: trio.Nursery) -> None:
    await etcd.put(KEYS.epoch("t", "d", "e1"), epoch(1))
    await etcd.put(KEYS.master("m1"), master("m1"))
    await etcd.put("/leibrix/other/epochs/t/d/e9", epoch(1))  # another cluster: ignored
    mirror = Mirror(etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
    masters = mirror.table(Keys.MASTERS, state_pb2.MasterRecord.FromString)
    changes: list[tuple[str, int | None, int | None]] = []
    epochs.on_change(
        lambda k, old, new: changes.append((k, old and old.state, new and new.state))  # type: ignore[arg-type]
    )
    await nursery.start(mirror.run)
    assert set(epochs) == {"t/d/e1"} and epochs["t/d/e1"].state == 1
    assert masters["m1"].id == "m1" and len(masters) == 1
    assert changes == [("t/d/e1", None, 1)]

    await etcd.put(KEYS.epoch("t", "d", "e1"), epoch(2))
    await etcd.put(KEYS.epoch("t", "d", "e2"), epoch(1))
    last = await etcd.txn([], [Delete(KEYS.epoch("t", "d", "e1")), Delete(KEYS.master("m1"))])
    with trio.fail_after(5):
        await mirror.wait_for(last.revision)
    assert set(epochs) == {"t/d/e2"} and len(masters) == 0
    assert changes[1:] == [("t/d/e1", 1, 2), ("t/d/e2", None, 1), ("t/d/e1", 2, None)]
    assert epochs.mod_revision("t/d/e2") == last.revision - 1


async def test_leader_applies_its_writes_at_once_and_the_echo_is_ignored(
    etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    mirror = Mirror(etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
    calls: list[str] = []
    epochs.on_change(lambda k, old, new: calls.append(k))
    await nursery.start(mirror.run)
    _, term = await lead(etcd)
    writer = FencedWriter(etcd, term, mirror)
    revision = await writer.commit([Put(KEYS.epoch("t", "d", f"e{i}"), epoch(1, i)) for i in range(3)])
    assert len(epochs) == 3 and epochs["t/d/e2"].expected_rows == 2  # before any watch echo
    with trio.fail_after(5):
        await mirror.wait_for(revision)
    assert calls == ["t/d/e0", "t/d/e1", "t/d/e2"]  # the echo changed nothing
    revision = await writer.commit([Delete(KEYS.epochs_of("t", "d"), prefix=True)])
    assert len(epochs) == 0
    with trio.fail_after(5):
        await mirror.wait_for(revision)
    assert len(epochs) == 0 and len(calls) == 6


async def test_lagging_watch_cannot_resurrect_a_locally_deleted_key(etcd: EtcdClient) -> None:
    mirror = Mirror(etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
    key = KEYS.epoch("t", "d", "e")
    stale_put = WatchEvent("put", KeyValue(key, epoch(1), 10, 10, 1, 0))
    mirror.apply_local([Put(key, epoch(1))], 10)
    mirror.apply_local([Delete(key)], 12)
    await mirror._apply_events([stale_put])  # the watch is still delivering revision 10
    assert key.rsplit("epochs/", 1)[1] not in epochs
    mirror.apply_local([Delete(KEYS.epochs_of("t", "d"), prefix=True)], 20)
    other = KEYS.epoch("t", "d", "other")
    await mirror._apply_events([WatchEvent("put", KeyValue(other, epoch(1), 15, 15, 1, 0))])
    assert len(epochs) == 0
    await mirror._apply_events([WatchEvent("put", KeyValue(other, epoch(3), 25, 25, 1, 0))])
    assert epochs["t/d/other"].state == 3  # newer than the delete: applied


async def test_a_late_commit_answer_cannot_resurrect_a_key_the_watch_deleted(
    etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    """A leader stopped with a commit in flight gets its answer after the watch has delivered a successor's
    delete of the same key: applying the old write then would bring the key back in this master's state."""
    mirror = Mirror(etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
    await nursery.start(mirror.run)
    key = KEYS.epoch("t", "d", "e")
    written = await etcd.put(key, epoch(3))  # the stopped leader's commit, applied by etcd
    assert await etcd.delete(key)  # the successor drops it
    _, at = await etcd.get_with_revision(KEYS.leader)
    with trio.fail_after(5):
        await mirror.wait_for(at)
    assert "t/d/e" not in epochs
    mirror.apply_local([Put(key, epoch(3))], written)  # the late answer
    assert "t/d/e" not in epochs
    newer = await etcd.put(KEYS.epoch("t", "d", "f"), epoch(1))
    mirror.apply_local([Put(KEYS.epoch("t", "d", "f"), epoch(1))], newer)  # ahead of the watch: applied at once
    assert epochs["t/d/f"].state == 1


async def test_undecodable_value_is_skipped_not_fatal(etcd: EtcdClient, nursery: trio.Nursery) -> None:
    await etcd.put(KEYS.epoch("t", "d", "bad"), b"\xff\xff\xff")
    await etcd.put(KEYS.epoch("t", "d", "good"), epoch(1))
    mirror = Mirror(etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
    await nursery.start(mirror.run)
    assert set(epochs) == {"t/d/good"}
    with pytest.raises(RuntimeError, match="before Mirror.run"):
        mirror.table(Keys.WORKERS, bytes)


def test_table_registration_rules() -> None:
    mirror = Mirror(None, KEYS)  # type: ignore[arg-type]
    mirror.table(Keys.EPOCHS, bytes)
    with pytest.raises(ValueError, match="overlaps"):
        mirror.table("epochs/t/", bytes)


async def test_mirror_catches_up_with_a_burst(etcd: EtcdClient, nursery: trio.Nursery) -> None:
    mirror = Mirror(etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
    await nursery.start(mirror.run)
    value = epoch(1, 123)
    revision = 0
    for batch in range(10):
        ops = [Put(KEYS.epoch("t", f"d{batch}", f"e{i:04d}"), value) for i in range(2000)]
        revision = (await etcd.txn([], ops)).revision
    with trio.fail_after(20):
        await mirror.wait_for(revision)
    assert len(epochs) == 20_000 and epochs["t/d9/e1999"].expected_rows == 123


async def test_mirror_rides_out_an_etcd_crash(etcd: EtcdClient, etcd_server, nursery: trio.Nursery) -> None:
    mirror = Mirror(etcd, KEYS)
    tenants = mirror.table(Keys.TENANTS, state_pb2.TenantRecord.FromString)
    await nursery.start(mirror.run)
    etcd_server.kill()
    with trio.fail_after(15):
        while True:
            try:
                revision = await etcd.put(KEYS.tenant("after"), b"")
                break
            except EtcdUnavailable:
                await trio.sleep(0.05)
        await mirror.wait_for(revision)
    assert "after" in tenants


async def test_mirror_relists_after_compaction_and_decodes_only_changes(
    etcd_cluster, nursery: trio.Nursery
) -> None:
    servers = await etcd_cluster(3)
    follower_client = await EtcdClient.connect([servers[0].endpoint])
    writer = await EtcdClient.connect([servers[1].endpoint])
    try:
        for i in range(5):
            await writer.put(KEYS.epoch("t", "d", f"e{i}"), epoch(1))
        decoded: list[bytes] = []

        def decode(raw: bytes) -> state_pb2.EpochRecord:
            decoded.append(raw)
            return state_pb2.EpochRecord.FromString(raw)

        mirror = Mirror(follower_client, KEYS)
        epochs = mirror.table(Keys.EPOCHS, decode)
        await nursery.start(mirror.run)
        assert len(decoded) == 5
        # The mirror's member goes away; meanwhile history it needs is compacted.
        await servers[0].stop()
        await writer.put(KEYS.epoch("t", "d", "e0"), epoch(2))
        await writer.delete(KEYS.epoch("t", "d", "e1"))
        last = await writer.put(KEYS.epoch("t", "d", "e9"), epoch(1))
        await writer.compact(last)
        await servers[0].start()
        with trio.fail_after(15):
            await mirror.wait_for(last)
        assert sorted(epochs) == ["t/d/e0", "t/d/e2", "t/d/e3", "t/d/e4", "t/d/e9"]
        assert epochs["t/d/e0"].state == 2
        assert len(decoded) == 7, "only the two changed keys may be decoded again"
    finally:
        await follower_client.aclose()
        await writer.aclose()


async def test_mirror_follows_across_endpoint_failover(etcd_cluster, nursery: trio.Nursery) -> None:
    """A mirror on a multi-endpoint client keeps up while each member in turn goes away."""
    servers = await etcd_cluster(3)
    client = await EtcdClient.connect([s.endpoint for s in servers], timeout=1.0)
    writer = await EtcdClient.connect([s.endpoint for s in servers], timeout=1.0)
    try:
        mirror = Mirror(client, KEYS)
        tenants = mirror.table(Keys.TENANTS, state_pb2.TenantRecord.FromString)
        await nursery.start(mirror.run)
        for i, server in enumerate(servers):
            await server.stop()
            with trio.fail_after(20):
                while True:
                    try:
                        revision = await writer.put(KEYS.tenant(f"t{i}"), b"")
                        break
                    except EtcdUnavailable:
                        await trio.sleep(0.05)
                await mirror.wait_for(revision)
            await server.start()
        assert sorted(tenants) == ["t0", "t1", "t2"]
    finally:
        await client.aclose()
        await writer.aclose()
