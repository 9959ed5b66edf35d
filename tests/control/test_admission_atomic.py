"""An admission larger than one etcd transaction is all or nothing, an etcd refusal is the request's error, and
deciding a 10,000-epoch admission never blocks the Trio loop for long."""

from __future__ import annotations

import time
from typing import Any

import pytest
import trio

from leibrix.control._janitor import Janitor
from leibrix.domain._errors import ResourceExhausted, Unavailable
from leibrix.store._etcd import EtcdClient, EtcdRefused, EtcdUnavailable
from leibrix.store._store import TxnLimits
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, quota, rpc, states
from tests.support.cluster import KEYS as E2E_KEYS
from tests.support.cluster import leading, start_master
from tests.support.control import KEYS, ControlLoop
from tests.support.sample_source import SECOND_APPEND, sample_source

QUEUE = cp.AdmissionPolicy.QUEUE
SMALL = TxnLimits(max_ops=16)


def stored_epochs(loop: ControlLoop, dataset: str = "orders") -> set[str]:
    """Epoch ids whose records the store holds, visible or not."""
    prefix = KEYS.epochs_of("acme", dataset)
    return {k[len(prefix):] for k in loop.store.kv if k.startswith(prefix)}


def janitor(loop: ControlLoop) -> Janitor:
    return Janitor(loop.coord, None, commit=loop.store.commit, request_ttl_s=3600.0, retired_ttl_s=3600.0,
                   interval_s=3600.0, orphan_ttl_s=0.0, writing=loop.admissions.writing)


async def test_an_admission_cut_short_between_transactions_shows_nothing_and_its_epochs_are_pruned(
        nursery: trio.Nursery) -> None:
    loop = await ControlLoop(limits=SMALL).start(nursery)
    await loop.tenant()
    loop.store.fail_after(1, EtcdUnavailable("etcd went away"))
    with pytest.raises(Unavailable):
        await loop.admit(admission(days=10, regions=("eu", "us", "ap")))
    written = stored_epochs(loop)
    assert len(written) == 15  # one 16-op transaction of epochs landed, the dataset record never did
    assert ("acme", "orders") not in loop.state.datasets and not loop.keys()
    assert loop.state.usage("acme").pending == 0 and not loop.coord.pending
    assert {e.epoch_id for e in loop.state.uncommitted("acme", "orders")} == written
    loop.store.fail_after(0, None)
    assert await janitor(loop).prune() == (0, 0, len(written))
    assert stored_epochs(loop) == set() and not list(loop.state.uncommitted("acme", "orders"))


async def test_a_retry_after_a_cut_short_admission_converges_to_all_of_it(nursery: trio.Nursery) -> None:
    loop = await ControlLoop(limits=SMALL).start(nursery)
    await loop.tenant()
    request = admission(days=10, regions=("eu", "us", "ap"), request_id="r-1")
    loop.store.fail_after(2, EtcdUnavailable("etcd went away"))
    with pytest.raises(Unavailable):
        await loop.admit(request)
    loop.store.fail_after(0, None)
    resp = await loop.admit(request)
    assert len(resp.epochs.epochs) == 30 and set(loop.states()) == {"PENDING"} and len(loop.keys()) == 30
    assert stored_epochs(loop) == {e.epoch_id for e in resp.epochs.epochs}
    assert not list(loop.state.uncommitted("acme", "orders"))
    assert (await loop.admit(request)).epochs == resp.epochs  # the stored first answer


async def test_a_refresh_cut_short_keeps_serving_the_old_version_alone(nursery: trio.Nursery) -> None:
    v1, v2 = (str(v) for v in sample_source().versions[:2])  # the second snapshot adds the files from 2028 on
    loop = await ControlLoop(limits=SMALL).start(nursery)
    await loop.tenant()
    await loop.admit(admission(days=20, start=SECOND_APPEND, version=v1))
    before = set(loop.keys())
    loop.store.fail_after(1, EtcdUnavailable("etcd went away"))
    with pytest.raises(Unavailable):
        await loop.admit(admission(days=20, start=SECOND_APPEND, version=v2))
    assert set(loop.keys()) == before and loop.state.datasets[("acme", "orders")].version == v1
    assert {e.version for e in loop.state.uncommitted("acme", "orders")} == {v2}
    loop.store.fail_after(0, None)
    resp = await loop.admit(admission(days=20, start=SECOND_APPEND, version=v2))
    assert resp.refresh and loop.state.datasets[("acme", "orders")].version == v2
    assert {loop.epoch(k).version for k in set(loop.keys()) - before} == {v2} and len(loop.keys()) == 40


async def test_an_etcd_refusal_is_resource_exhausted_for_that_batch_and_the_queue_carries_on(
        nursery: trio.Nursery) -> None:
    loop = await ControlLoop(limits=SMALL).start(nursery)
    await loop.tenant()
    loop.store.fail_after(0, EtcdRefused("INVALID_ARGUMENT", "etcdserver: too many operations in txn request"))
    with pytest.raises(ResourceExhausted, match="too many operations"):
        await loop.admit(admission(days=3))
    assert not loop.keys()
    loop.store.fail_after(0, None)
    resp = await loop.admit(admission(days=3))
    assert len(resp.epochs.epochs) == 3 and set(loop.states()) == {"PENDING"}


async def test_deciding_ten_thousand_epochs_never_stalls_the_loop_for_long(nursery: trio.Nursery) -> None:
    loop = await ControlLoop().start(nursery)
    await loop.tenant()
    worst = 0.0

    async def ticker() -> None:
        # CPU time of the loop's thread between two of its turns: what the other tasks ran without yielding
        # (wall time would also count the turns a loaded machine gives to other processes)
        nonlocal worst
        last = time.thread_time()
        while True:
            await trio.sleep(0)
            now = time.thread_time()
            worst, last = max(worst, now - last), now

    nursery.start_soon(ticker)
    resp = await loop.admit(admission(days=416, regions=tuple(f"r{i:02d}" for i in range(24))))
    assert len(resp.epochs.epochs) == 9984 and len(loop.keys()) == 9984
    # Without yields the decide alone blocks the loop for about a second; the lease TTL is 1 s.
    assert worst < 0.33, f"the loop stalled for {worst:.3f}s"


async def test_a_two_thousand_epoch_admission_over_sixteen_op_transactions_is_stored_whole(
        etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint, etcd_max_txn_ops=16))
    writer = m.leader_context().writer
    assert writer.limits.max_ops == 16
    coord = m.parts.admission.coordinator
    real_commit, txns = coord._commit, []

    async def counting(items: Any, **kw: Any) -> int:
        txns.append(len(writer.plan(items, kw.get("compares", ()))))
        return await real_commit(items, **kw)

    coord._commit = counting
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=250, regions=tuple(f"r{i}" for i in range(8))))
    assert len(resp.epochs.epochs) == 2000 and max(txns) > 100
    assert len(states(m)) == 2000 and set(states(m).values()) <= {"PENDING", "LOADING"}
    kvs, _ = await etcd.get_prefix(E2E_KEYS.epochs_of("acme", "orders"))
    assert len(kvs) == 2000
