"""Tenants sharing one worker, epoch-millisecond time columns, and load progress reports.

* Two tenants each hold a dataset called ``orders`` on the same worker: the
  tables keep the upstream name ``orders__{epoch}`` inside a schema per tenant,
  every Flight call resolves names within the ticket's tenant only, and
  evicting one tenant's epoch leaves the other's.
* A dataset whose time column is epoch milliseconds (``BIGINT``) is filtered
  by the ticket's window in its own unit.
* While a load runs the agent reports IN_PROGRESS with the rows read so far,
  and nothing after its final COMPLETED.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
import pytest
import trio
import trio_asyncio

from leibrix.sources import SourceRequest, SqlConnector
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._agent import Agent, WorkerConfig
from leibrix.worker._flight import QueryService
from leibrix.worker._loader import Loader
from tests.support.sources import BASE_MS, DAY_MS, day_windows
from tests.worker.test_readers_iceberg import assignment
from tests.worker.test_readers_sql import ROWS, fill

T0_S = 1_793_491_200  # 2026-11-01T00:00:00Z


def _ticket(sql: str, tenant: str, **extra: Any) -> fl.Ticket:
    return fl.Ticket(json.dumps({"sql": sql, "tenant_id": tenant, **extra}).encode())


def _synthetic(loader: Loader, tenant: str, epoch: str, rows: int, day: int = 0) -> None:
    a = pb.DataAssignmentEvent(dataset_id="orders", epoch_id=epoch, load_plan=pb.LoadPlan(
        plan_id=f"{tenant}-{epoch}", destination_table_name=f"orders__{epoch}", expected_rows=rows, tenant_id=tenant))
    part = a.load_plan.resolved_partition
    part.time_column_name = "ts"
    part.time_range.start_inclusive.FromSeconds(T0_S + day * 86_400)
    part.time_range.end_exclusive.FromSeconds(T0_S + (day + 1) * 86_400)
    loader.load(a, tenant_id=tenant)


def test_two_tenants_with_a_dataset_of_the_same_name_never_share_a_table() -> None:
    loader = Loader(memory_limit_bytes=256 << 20)
    # the same epoch id too: only the tenant tells the two tables apart
    _synthetic(loader, "acme", "d0", 300)
    _synthetic(loader, "acme", "d1", 300, day=1)
    _synthetic(loader, "zeta", "d0", 7)
    svc = QueryService(loader, "grpc://127.0.0.1:0")
    client = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
    try:
        assert sorted((t.tenant_id, t.table, t.rows) for t in loader.inventory()) == [
            ("acme", "orders__d0", 300), ("acme", "orders__d1", 300), ("zeta", "orders__d0", 7)]
        count = "SELECT count(*) AS n FROM orders"
        assert client.do_get(_ticket(count, "acme")).read_all().to_pydict() == {"n": [600]}
        assert client.do_get(_ticket(count, "zeta")).read_all().to_pydict() == {"n": [7]}
        # each tenant's epoch d0 is its own: the ticket's "epochs" resolve within the tenant
        got = client.do_get(_ticket(count, "zeta", epochs={"orders": ["d0"]})).read_all()
        assert got.to_pydict() == {"n": [7]}
        with pytest.raises(pa.ArrowKeyError, match="d1 of orders are not held"):
            client.do_get(_ticket(count, "zeta", epochs={"orders": ["d1"]})).read_all()
        listed = {json.loads(c)["tenant_id"]: [(f.descriptor.path, f.total_records) for f in client.list_flights(c)]
                  for c in (b'{"tenant_id": "acme"}', b'{"tenant_id": "zeta"}')}
        assert listed == {"acme": [([b"orders"], 600)], "zeta": [([b"orders"], 7)]}
        # tables are reachable through the tenant's dataset only, never by name, qualified or not
        for name in ("orders__d0", '"tenant_zeta"."orders__d0"', '"tenant_acme"."orders__d1"',
                     loader.holds("orders", "d0", "zeta").qualified, loader.holds("orders", "d1", "acme").qualified):
            with pytest.raises(fl.FlightUnauthorizedError):
                client.do_get(_ticket(f"SELECT count(*) FROM {name}", "acme")).read_all()
        # evicting one tenant's epoch leaves the other tenant's table of the same name
        assert loader.evict("orders", "d0", "zeta")
        assert loader.holds("orders", "d0", "acme") is not None and loader.holds("orders", "d0", "zeta") is None
        assert client.do_get(_ticket(count, "acme")).read_all().to_pydict() == {"n": [600]}
        # another tenant's dataset of that name is still held: routed here for its epochs, zeta is told they
        # are gone (a client retries elsewhere); naming it without epochs is the contract's tenant mismatch
        with pytest.raises(pa.ArrowKeyError, match="d0 of orders are not held here"):
            client.do_get(_ticket(count, "zeta", epochs={"orders": ["d0"]})).read_all()
        with pytest.raises(fl.FlightUnauthorizedError, match="not a dataset of tenant 'zeta'"):
            client.do_get(_ticket(count, "zeta")).read_all()
    finally:
        client.close()
        svc.shutdown()
        loader.close()


def _int_time_loader(tmp_path: Path, batch_rows: int = 20) -> tuple[Loader, list[pb.DataAssignmentEvent]]:
    path = tmp_path / "src.db"
    fill(f"sqlite:///{path}", "int")
    plan = SqlConnector().plan(SourceRequest(f"jdbc:sqlite:{path}", "", "ev", "t", day_windows(3)))
    catalog = cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=f"jdbc:sqlite:{path}"))
    return (Loader(memory_limit_bytes=256 << 20, batch_rows=batch_rows),
            [assignment(plan, e, catalog=catalog, time_column="t", dataset="ev") for e in plan])


def test_an_epoch_ms_time_column_is_filtered_in_milliseconds(tmp_path: Path) -> None:
    loader, plans = _int_time_loader(tmp_path)
    for a in plans:
        loader.load(a, tenant_id="t1")
    assert {t.time_type for t in loader.inventory()} == {"BIGINT"}
    svc = QueryService(loader, "grpc://127.0.0.1:0")
    client = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
    try:
        sql = "SELECT count(*) AS n, min(t) AS lo, max(t) AS hi FROM ev"
        assert client.do_get(_ticket(sql, "t1")).read_all().column("n").to_pylist() == [len(ROWS)]
        # [day 1 06:00, day 2 00:00): 18 hours of 4 rows an hour, bounds in µs on the wire, ms in the table
        lo_ms, hi_ms = BASE_MS + DAY_MS + 6 * 3_600_000, BASE_MS + 2 * DAY_MS
        got = client.do_get(_ticket(sql, "t1", window={"ev": [lo_ms * 1000, hi_ms * 1000]})).read_all().to_pylist()
        assert got == [{"n": 18 * 4, "lo": lo_ms, "hi": hi_ms - 3_600_000}]
        assert len(json.loads(client.do_get(_ticket(sql, "t1", window={"ev": [lo_ms * 1000, hi_ms * 1000]}))
                              .read_all().schema.metadata[b"leibrix.scanned"])["ev"]) == 1  # epochs pruned too
    finally:
        client.close()
        svc.shutdown()
        loader.close()


async def test_a_running_load_reports_in_progress_with_rows_so_far(tmp_path: Path) -> None:
    loader, plans = _int_time_loader(tmp_path, batch_rows=1)  # one row per batch: a load of ~100 steps
    agent = Agent(WorkerConfig(masters=["127.0.0.1:1"], worker_id="w1", memory_bytes=256 << 20, cpu_cores=1,
                               progress_interval=0.01), loader)
    slow: list[int] = []
    original = loader.load

    def load(a, *, tenant_id, progress=None):
        def paced(rows: int) -> None:  # a slow source: each batch takes a moment
            slow.append(rows)
            time.sleep(0.002)
            progress(rows)
        return original(a, tenant_id=tenant_id, progress=paced)

    loader.load = load  # type: ignore[method-assign]
    outbox: asyncio.Queue = asyncio.Queue()
    try:
        async with trio_asyncio.open_loop():
            await trio_asyncio.aio_as_trio(agent._load)(plans[0], "t1", outbox, asyncio.Semaphore(1))
            await trio.sleep(0.05)  # a progress report after the end would have been queued by now
    finally:
        loader.close()
    S = pb.DataPullStatusUpdateEvent.Status
    updates = []
    while not outbox.empty():
        updates.append(outbox.get_nowait().data_pull_status_update)
    kinds = [u.status for u in updates]
    assert kinds[-1] == S.COMPLETED and kinds.count(S.COMPLETED) == 1, kinds
    progress = [u.rows for u in updates[:-1]]
    assert all(k == S.IN_PROGRESS for k in kinds[:-1])
    assert progress[0] == 0 and len(progress) >= 3, progress  # the first at once, then several with rows
    assert progress == sorted(progress) and len(set(progress)) == len(progress)  # only when the count moved
    assert 0 < progress[-1] <= updates[-1].rows == slow[-1] == 4 * 24
    assert all(u.epoch_id == plans[0].epoch_id and u.plan_id == plans[0].load_plan.plan_id for u in updates)
