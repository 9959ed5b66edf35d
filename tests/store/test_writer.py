"""Fenced commits on an etcd with etcd's own limits: cut to size, refusals are the request's error."""

from __future__ import annotations

import pytest

from leibrix.store._election import Election, Term
from leibrix.store._etcd import Compare, Delete, EtcdClient, EtcdRefused, Put
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Atomic, Conflict, Fenced, FencedWriter, Keys, Mirror, TxnLimits

KEYS = Keys("writer")


async def lead(client: EtcdClient) -> Term:
    """Win the election (a long lease: no keepalive runs in these tests)."""
    record = state_pb2.MasterRecord(id="m", grpc_addr="m:1").SerializeToString()
    return await Election(client, key=KEYS.leader, record=record, ttl=60).campaign()


async def revision(client: EtcdClient) -> int:
    return (await client.get_with_revision(KEYS.leader))[1]


async def test_ten_thousand_puts_commit_in_transactions_etcd_accepts(default_etcd: EtcdClient) -> None:
    term = await lead(default_etcd)
    mirror = Mirror(default_etcd, KEYS)
    epochs = mirror.table(Keys.EPOCHS, bytes)
    writer = FencedWriter(default_etcd, term, mirror)  # etcd's defaults: 128 ops, 1.5 MiB
    ops = [Put(KEYS.epoch("t", "d", f"e{i:05}"), b"r" * 100) for i in range(10_000)]
    before = await revision(default_etcd)
    last = await writer.commit(ops)
    txns = len(writer.plan(ops))
    assert txns == -(-10_000 // 127)  # the fence and 127 puts each
    assert last == before + txns  # one revision per transaction, all applied
    assert len((await default_etcd.get_prefix(KEYS.epochs_of("t", "d")))[0]) == 10_000
    assert len(epochs) == 10_000 and term.is_valid()


async def test_large_values_are_cut_by_the_request_size(default_etcd: EtcdClient) -> None:
    term = await lead(default_etcd)
    writer = FencedWriter(default_etcd, term)
    ops = [Put(KEYS.tenant(f"t{i}"), bytes([i]) * 200_000) for i in range(20)]  # ~4 MiB in all
    plan = writer.plan(ops)
    assert len(plan) >= 3 and all(sum(len(op.value) for op in txn) < 1536 * 1024 for _, txn in plan)
    await writer.commit(ops)
    assert (await default_etcd.get(KEYS.tenant("t19"))).value == bytes([19]) * 200_000  # type: ignore[union-attr]


async def test_a_refused_write_is_the_requests_error_not_the_terms(default_etcd: EtcdClient) -> None:
    term = await lead(default_etcd)
    writer = FencedWriter(default_etcd, term)
    before = await revision(default_etcd)
    with pytest.raises(EtcdRefused) as info:
        await writer.commit([Put(KEYS.tenant("big"), b"x" * (2 * 1024 * 1024))])  # over 1.5 MiB on its own
    assert info.value.reason == "request_too_large"
    assert not isinstance(info.value, Fenced)
    assert await revision(default_etcd) == before  # nothing applied
    assert term.is_valid() and not term.lost.is_set()
    assert await writer.commit([Put(KEYS.tenant("small"), b"ok")]) == before + 1


async def test_an_atomic_group_too_large_for_etcd_is_refused_whole(default_etcd: EtcdClient) -> None:
    term = await lead(default_etcd)
    writer = FencedWriter(default_etcd, term)
    before = await revision(default_etcd)
    group = Atomic([Put(KEYS.worker(f"w{i}"), b"") for i in range(200)])  # over etcd's 128 ops
    with pytest.raises(EtcdRefused) as info:
        await writer.commit([group])
    assert info.value.reason == "too_many_ops"
    assert await revision(default_etcd) == before and term.is_valid()


def test_atomic_groups_are_never_split_and_keep_their_compares() -> None:
    term = Term(token=7, lease_id=1, leader_key=KEYS.leader, ttl=5, deadline=0.0)
    writer = FencedWriter(None, term, limits=TxnLimits(max_ops=8))  # type: ignore[arg-type]
    groups = [
        Atomic([Delete(KEYS.epoch("t", "d", f"e{i}")), Delete(KEYS.heat("t", "d", f"e{i}"))],
               [Compare(KEYS.epoch("t", "d", f"e{i}"), "mod", "==", i + 1)])
        for i in range(5)
    ]
    plan = writer.plan(groups)
    # 3 per group, 7 after the fence: two groups per transaction.
    assert [len(ops) for _, ops in plan] == [4, 4, 2]
    assert [len(compares) for compares, _ in plan] == [2, 2, 1]
    assert plan[2] == (list(groups[4].compares), list(groups[4].ops))
    # Commit-wide compares make one group, whatever its size.
    many = [Put(KEYS.worker(f"w{i}"), b"") for i in range(20)]
    assert len(writer.plan(many)) == 3
    assert len(writer.plan(many, [Compare(KEYS.leader, "version", ">", 0)])) == 1


async def test_a_commit_of_several_transactions_is_not_atomic(default_etcd: EtcdClient) -> None:
    term = await lead(default_etcd)
    writer = FencedWriter(default_etcd, term, limits=TxnLimits(max_ops=3))
    stale = Compare(KEYS.worker("w2"), "version", "==", 5)  # w2 does not exist: fails
    with pytest.raises(Conflict):
        await writer.commit([Put(KEYS.worker("w0"), b""), Put(KEYS.worker("w1"), b""),
                             Atomic([Put(KEYS.worker("w2"), b"")], [stale])])
    present = [kv.key for kv in (await default_etcd.get_prefix(KEYS.root + Keys.WORKERS))[0]]
    assert present == [KEYS.worker("w0"), KEYS.worker("w1")]  # the first transaction stays applied
    assert term.is_valid()
