"""``leibrix.client.Client.query`` against a real master on real etcd and real worker processes.

Every answer is compared with the same SQL run by DuckDB directly over the
same rows (read from the sample Iceberg table's files, see ``tests.client._data``).
"""

from __future__ import annotations

import json
import math
import sys
import threading
from datetime import timedelta
from typing import Any

import pytest
import trio

from leibrix.client._query import Client
from leibrix.client._routes import EpochsUnavailable
from leibrix.wire._proto import leibrix_cp as cp
from tests.client._data import direct, expected_rows
from tests.support.admission import T0, admission, all_ready, quota, rpc
from tests.support.cluster import leading, start_master, workers
from tests.support.sample_source import ROWS_PER_DAY

QUEUE = cp.AdmissionPolicy.QUEUE
ROWS = ROWS_PER_DAY  # rows per epoch (day × region) of the sample table
SQLS = [
    "SELECT region, count(*) AS n, sum(value) AS total, min(ts) AS first FROM orders GROUP BY region ORDER BY region",
    "SELECT count(DISTINCT key) AS keys, avg(value) AS mean FROM orders",
    "SELECT id, ts, key, value, region FROM orders ORDER BY value DESC, id, region LIMIT 7",
    "SELECT date_trunc('day', ts) AS day, count(*) AS n FROM orders WHERE value > 500 GROUP BY 1 ORDER BY 1",
]


async def _cluster(etcd_server: Any, nursery: trio.Nursery, ids: tuple[str, ...], *, days: int, replication: int,
                   strategy: cp.PlacementStrategy = cp.PlacementStrategy.ROUND_ROBIN):
    master = await leading(await start_master(nursery, etcd_server.endpoint))
    procs = await workers(nursery, master, *ids)
    await rpc(master, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    await rpc(master, "admit_dataset", admission(days=days, regions=("eu", "us"), rows=ROWS,
                                                 replication_factor=replication, strategy=strategy))
    await all_ready(master, n=days * 2)
    return master, procs


def _equal(got, want) -> None:
    """Same columns, same rows in the same order; doubles equal up to summation order (1e-9 relative)."""
    assert got.column_names == want.column_names
    g, w = got.to_pylist(), want.to_pylist()
    assert len(g) == len(w), (len(g), len(w))
    for i, (a, b) in enumerate(zip(g, w)):
        for k in a:
            x, y = a[k], b[k]
            same = math.isclose(x, y, rel_tol=1e-9) if isinstance(x, float) and isinstance(y, float) else x == y
            assert same, f"row {i} column {k}: got {x!r}, expected {y!r}"


async def test_query_on_one_worker_equals_duckdb_over_the_same_rows(etcd_server: Any, nursery: trio.Nursery) -> None:
    master, _ = await _cluster(etcd_server, nursery, ("w1",), days=3, replication=1)
    rows = await expected_rows(master, "acme", "orders")
    assert rows.num_rows == 3 * 2 * ROWS
    client = Client(masters=[master.config.grpc_listen])
    try:
        for sql in SQLS:
            got = await trio.to_thread.run_sync(client.query, "acme", "orders", sql)
            _equal(got, direct(rows, "orders", sql))
            assert client.last.workers == ["w1"] and not client.last.combined and client.last.epochs == 6
        # a range: only the second day, rows outside it never counted
        start, end = T0 + timedelta(days=1), T0 + timedelta(days=2)
        got = await trio.to_thread.run_sync(lambda: client.query("acme", "orders", SQLS[0], start, end))
        _equal(got, direct(rows, "orders", SQLS[0], start, end))
        assert client.last.epochs == 2 and sum(got.column("n").to_pylist()) == 2 * ROWS
        # a range cutting through an epoch: rows filtered to [start, end) exactly
        start, end = T0 + timedelta(hours=30), T0 + timedelta(hours=40)
        got = await trio.to_thread.run_sync(lambda: client.query("acme", "orders", SQLS[1], start, end))
        _equal(got, direct(rows, "orders", SQLS[1], start, end))
        assert client.routes.fetches <= 4  # routes cached, not asked per query
    finally:
        await trio.to_thread.run_sync(client.close)
    # the command line: the same answer as JSON lines, and a table naming the worker and the time
    base = [sys.executable, "-m", "leibrix", "query", "--master", master.config.grpc_listen, "--tenant", "acme",
            "--dataset", "orders", SQLS[0], "--start", "2026-11-02", "--end", "2026-11-03T00:00:00Z"]
    done = await trio.run_process([*base, "-o", "json"], capture_stdout=True, capture_stderr=True)
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    want = direct(rows, "orders", SQLS[0], T0 + timedelta(days=1), T0 + timedelta(days=2))
    assert [(r["region"], r["n"]) for r in lines] == list(zip(*(want.column(c).to_pylist() for c in ("region", "n"))))
    assert "from w1 (2 epoch(s))" in done.stderr.decode()
    done = await trio.run_process(base, capture_stdout=True)
    out = done.stdout.decode()
    assert "region" in out and "eu" in out and " ms from w1 " in out
    failed = await trio.run_process([*base[:10], "SELECT nope FROM orders"], capture_stderr=True, check=False)
    assert failed.returncode == 1 and "ArrowInvalid" in failed.stderr.decode()


async def test_query_spread_over_two_workers_is_combined_correctly(etcd_server: Any, nursery: trio.Nursery) -> None:
    master, _ = await _cluster(etcd_server, nursery, ("w1", "w2"), days=4, replication=1)
    listed = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
    holders = {e.replicas[0].worker_id for e in listed.epochs}
    assert holders == {"w1", "w2"}, "placement should spread 8 epochs over both workers"
    rows = await expected_rows(master, "acme", "orders")
    client = Client(masters=[master.config.grpc_listen])
    try:
        for sql in [*SQLS, "SELECT key, sum(value) AS s, row_number() OVER (ORDER BY sum(value) DESC, key) AS r "
                           "FROM orders GROUP BY key ORDER BY r LIMIT 5"]:
            got = await trio.to_thread.run_sync(client.query, "acme", "orders", sql)
            _equal(got, direct(rows, "orders", sql))
            assert client.last.combined and client.last.workers == ["w1", "w2"]
        start, end = T0 + timedelta(hours=12), T0 + timedelta(days=3, hours=6)
        got = await trio.to_thread.run_sync(lambda: client.query("acme", "orders", SQLS[0], start, end))
        _equal(got, direct(rows, "orders", SQLS[0], start, end))
    finally:
        await trio.to_thread.run_sync(client.close)


async def test_worker_killed_mid_query_is_retried_on_the_other_replica(etcd_server: Any,
                                                                       nursery: trio.Nursery) -> None:
    master, procs = await _cluster(etcd_server, nursery, ("w1", "w2"), days=2, replication=2)
    rows = await expected_rows(master, "acme", "orders")
    # slow enough (seconds) that the worker can be killed while it runs; its answer is known from the rows
    repeat = 2_000_000
    # md5 of every (row, r) pair: seconds of work that no optimiser can skip, and always true
    sql = (f"SELECT region, count(*) AS n, sum(value) AS s FROM orders, range({repeat}) r "
           "WHERE length(md5(r.range::VARCHAR || id::VARCHAR)) = 32 GROUP BY region ORDER BY region")
    base = direct(rows, "orders", "SELECT region, count(*) AS n, sum(value) AS s FROM orders GROUP BY region "
                                  "ORDER BY region").to_pylist()
    client = Client(masters=[master.config.grpc_listen])
    asked: list[str] = []
    dispatched = threading.Event()

    def dispatch(worker: str) -> None:
        asked.append(worker)
        dispatched.set()

    client.on_dispatch = dispatch
    try:
        async with trio.open_nursery() as n:
            result: list[Any] = []
            n.start_soon(lambda: _run(client, sql, result))
            await trio.to_thread.run_sync(dispatched.wait)
            await trio.sleep(0.3)
            assert not result, "the query finished before the worker could be killed"
            victim = asked[0]
            procs[victim].kill()
        got = result[0].to_pylist()
        assert [(r["region"], r["n"]) for r in got] == [(b["region"], b["n"] * repeat) for b in base]
        assert all(math.isclose(r["s"], b["s"] * repeat, rel_tol=1e-9) for r, b in zip(got, base))
        assert client.last.failed_workers == [victim]
        assert client.last.workers == [w for w in ("w1", "w2") if w != victim]
        assert client.last.attempts == 2
    finally:
        await trio.to_thread.run_sync(client.close)


async def _run(client: Client, sql: str, out: list[Any]) -> None:
    out.append(await trio.to_thread.run_sync(client.query, "acme", "orders", sql))


async def test_epochs_not_ready_are_read_from_the_source_or_named(etcd_server: Any, nursery: trio.Nursery) -> None:
    master = await leading(await start_master(nursery, etcd_server.endpoint))
    await rpc(master, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    resp = await rpc(master, "admit_dataset", admission(days=2, regions=("eu",), rows=ROWS))  # no worker: PENDING
    ids = sorted(e.epoch_id for e in resp.epochs.epochs)
    rows = await expected_rows(master, "acme", "orders", states=("PENDING",))
    assert rows.num_rows == 2 * ROWS
    client = Client(masters=[master.config.grpc_listen])
    try:
        with pytest.raises(EpochsUnavailable) as info:
            await trio.to_thread.run_sync(lambda: client.query("acme", "orders", "SELECT count(*) FROM orders",
                                                               resident_only=True))
        assert sorted(e for e, _ in info.value.missing) == ids
        assert {why for _, why in info.value.missing} == {"PENDING"}
        assert all(i in str(info.value) for i in ids)
        # by default the same query reads those epochs from the source: the whole answer, never a part
        for sql in SQLS:
            got = await trio.to_thread.run_sync(client.query, "acme", "orders", sql)
            _equal(got, direct(rows, "orders", sql))
            assert sorted(client.last.from_source) == ids and client.last.workers == []
        start, end = T0 + timedelta(hours=12), T0 + timedelta(days=1, hours=7)
        got = await trio.to_thread.run_sync(lambda: client.query("acme", "orders", SQLS[0], start, end))
        _equal(got, direct(rows, "orders", SQLS[0], start, end))
        assert got.column("n").to_pylist() == [2]  # 18:00 of day 1 and 06:00 of day 2
    finally:
        await trio.to_thread.run_sync(client.close)


async def test_queries_make_the_epochs_heat_rise(etcd_server: Any, nursery: trio.Nursery) -> None:
    master, _ = await _cluster(etcd_server, nursery, ("w1",), days=3, replication=1)

    async def heat() -> dict[str, float]:
        listed = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
        return {e.info.epoch_id: e.heat for e in listed.epochs}

    before = await heat()
    client = Client(masters=[master.config.grpc_listen], report_interval=0.2)
    start, end = T0 + timedelta(days=1), T0 + timedelta(days=2)
    try:
        for _ in range(3):
            await trio.to_thread.run_sync(lambda: client.query("acme", "orders", SQLS[1], start, end))
        with trio.fail_after(10):
            while not any(h > before[e] for e, h in (await heat()).items()):
                await trio.sleep(0.1)
    finally:
        await trio.to_thread.run_sync(client.close)
    after = await heat()
    listed = await rpc(master, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="orders"))
    queried = {e.info.epoch_id for e in listed.epochs if e.info.time_range.start_inclusive == start}
    assert len(queried) == 2
    assert all(after[e] > before[e] for e in queried), (before, after)
    assert all(after[e] <= before[e] for e in after if e not in queried), (before, after)  # decayed, never fed
    assert client.reporter.totals["accesses"] == 3 * 2 and client.reporter.sent_batches >= 1


async def test_watched_routes_are_rebuilt_into_coverage_only_when_they_change(etcd_server: Any,
                                                                               nursery: trio.Nursery) -> None:
    master, _ = await _cluster(etcd_server, nursery, ("w1",), days=2, replication=1)
    client = Client(masters=[master.config.grpc_listen], route_ttl=3600)
    start, end = T0, T0 + timedelta(days=1)

    def coverage():
        return client.routes.get("acme", "orders", start, end)

    try:
        with trio.fail_after(10):
            while client.routes.watcher is None or not client.routes.watcher.synced("acme"):
                await trio.to_thread.run_sync(lambda: client.query("acme", "orders", SQLS[1], start, end))
        first = await trio.to_thread.run_sync(coverage)
        assert first.via == "watch" and len(first.routed) == 2  # day 1 × two regions
        assert await trio.to_thread.run_sync(coverage) is first  # nothing changed: the same coverage
        # another range is built anew
        other = await trio.to_thread.run_sync(lambda: client.routes.get("acme", "orders", end, end + timedelta(days=1)))
        assert other is not first and {p.epoch_id for p in other.routed}.isdisjoint(p.epoch_id for p in first.routed)
        assert await trio.to_thread.run_sync(coverage) is not first  # the range changed back: rebuilt, same epochs
        # a route that changes (its epoch retired: the master removes it) is seen at once, not after the ttl
        gone = first.routed[0].epoch_id
        await rpc(master, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="orders", epoch_id=gone))
        with trio.fail_after(10):
            while gone in {p.epoch_id for p in (await trio.to_thread.run_sync(coverage)).routed}:
                await trio.sleep(0.05)
        assert [p.epoch_id for p in (await trio.to_thread.run_sync(coverage)).routed] == [first.routed[1].epoch_id]
    finally:
        await trio.to_thread.run_sync(client.close)
