"""The reference worker's Arrow Flight contract, with plain ``pyarrow.flight`` calls shaped like the
upstream worker's Python example: ticket JSON, ListFlights, DoAction, and its status mapping.

The first test runs against a real ``leibrix worker`` process loaded by a real
master; the others use the same query service in-process over a loader, to
look at pruning, timeouts and cancellation directly.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pyarrow as pa
import pyarrow.flight as fl
import pytest
import trio

from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._cursors import ViewCursors, make_views
from leibrix.worker._flight import QueryService
from leibrix.worker._loader import Loader
from tests.support.admission import admission, all_ready, quota, rpc
from tests.support.cluster import leading, start_master, workers
from tests.support.sample_source import ROWS_PER_DAY

DAY_S = 86_400
T0_S = 1_793_491_200  # 2026-11-01T00:00:00Z


def _ticket(sql: str, tenant: str = "acme", **extra: Any) -> fl.Ticket:
    return fl.Ticket(json.dumps({"sql": sql, "tenant_id": tenant, **extra}).encode())


async def test_flight_contract_against_a_worker_process(etcd_server: Any, nursery: trio.Nursery) -> None:
    master = await leading(await start_master(nursery, etcd_server.endpoint))
    await workers(nursery, master, "w1")
    await rpc(master, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc(master, "upsert_tenant_quota", quota("other", admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc(master, "admit_dataset", admission(days=2, regions=("eu", "us"), rows=500))
    await rpc(master, "admit_dataset", admission("other", "secrets", days=1, rows=10))
    await all_ready(master, n=4)
    await all_ready(master, "other", "secrets", n=1)
    listed = await rpc(master, "list_workers", cp.ListWorkersRequest())
    addr = listed.workers[0].labels["flight_addr"]
    assert listed.workers[0].addr == addr  # routes name the query address

    def contract() -> None:
        client = fl.FlightClient(f"grpc://{addr}")
        try:
            flights = {tuple(p.decode() for p in f.descriptor.path): f.total_records for f in client.list_flights()}
            # the sample Iceberg table: two rows per day and region
            assert flights == {("orders",): 4 * ROWS_PER_DAY, ("secrets",): ROWS_PER_DAY}
            only = [f.descriptor.path for f in client.list_flights(json.dumps({"tenant_id": "acme"}).encode())]
            assert only == [[b"orders"]]

            sql = "SELECT region, count(*) AS n FROM orders WHERE ts >= '2026-11-02' GROUP BY region ORDER BY region"
            info = client.get_flight_info(fl.FlightDescriptor.for_command(sql.encode()))
            assert info.schema.names == ["region", "n"] and len(info.endpoints) == 1
            ticket = json.loads(info.endpoints[0].ticket.ticket)
            assert ticket == {"sql": sql, "tenant_id": "acme"}
            table = client.do_get(info.endpoints[0].ticket).read_all()
            # day 2 only: pruned + filtered
            assert table.to_pydict() == {"region": ["eu", "us"], "n": [ROWS_PER_DAY, ROWS_PER_DAY]}
            scanned = json.loads(table.schema.metadata[b"leibrix.scanned"])
            assert len(scanned["orders"]) == 2  # the day-1 epochs were left out of the view

            assert next(client.do_action(fl.Action("health_check", b""))).body.to_pybytes() == b"OK"
            with pytest.raises(fl.FlightUnauthorizedError, match="not a dataset of tenant 'acme'"):
                client.do_get(_ticket("SELECT * FROM secrets")).read_all()
            with pytest.raises(fl.FlightUnauthorizedError):
                client.do_get(_ticket("SELECT count(*) FROM orders", tenant="other")).read_all()
            with pytest.raises(pa.ArrowInvalid, match="syntax error"):
                client.do_get(_ticket("SELEC count(*) FROM orders")).read_all()
            with pytest.raises(pa.ArrowInvalid, match="(?i)binder|column"):
                client.do_get(_ticket("SELECT no_such_column FROM orders")).read_all()
            with pytest.raises(pa.ArrowKeyError, match="Table not found: customers"):
                client.do_get(_ticket("SELECT * FROM customers")).read_all()
            with pytest.raises(fl.FlightUnauthorizedError, match="may not be a table's name"):
                client.do_get(_ticket("SELECT * FROM (WITH secrets AS (SELECT 1) SELECT * FROM secrets) a, "
                                      "secrets")).read_all()
            with pytest.raises(fl.FlightUnauthorizedError, match="read_csv"):
                client.do_get(_ticket("SELECT * FROM read_csv('/etc/passwd')")).read_all()
            with pytest.raises(pa.ArrowInvalid, match="invalid ticket"):
                client.do_get(fl.Ticket(b"not json")).read_all()
            with pytest.raises(pa.ArrowInvalid, match="Unknown action type"):
                list(client.do_action(fl.Action("drop_everything", b"")))
        finally:
            client.close()

    await trio.to_thread.run_sync(contract)


def _loader(days: int = 3, rows: int = 1000) -> Loader:
    loader = Loader(memory_limit_bytes=256 << 20)
    for d in range(days):
        a = pb.DataAssignmentEvent(dataset_id="orders", epoch_id=f"d{d}", load_plan=pb.LoadPlan(
            plan_id=f"p{d}", destination_table_name=f"orders__d{d}", expected_rows=rows, tenant_id="acme"))
        part = a.load_plan.resolved_partition
        part.time_column_name = "ts"
        part.time_range.start_inclusive.FromSeconds(T0_S + d * DAY_S)
        part.time_range.end_exclusive.FromSeconds(T0_S + (d + 1) * DAY_S)
        loader.load(a, tenant_id="acme")
    return loader


@pytest.fixture
def service():
    loader = _loader()
    svc = QueryService(loader, "grpc://127.0.0.1:0", max_queries=2)
    client = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
    try:
        yield svc, client
    finally:
        client.close()
        svc.shutdown()
        loader.close()


def _epochs_read(table: pa.Table) -> list[str]:
    return sorted(json.loads(table.schema.metadata[b"leibrix.scanned"])["orders"])


@pytest.mark.parametrize(("where", "epochs"), [
    ("", ["d0", "d1", "d2"]),
    ("WHERE ts >= '2026-11-02' AND ts < '2026-11-03'", ["d1"]),
    ("WHERE ts < TIMESTAMP '2026-11-02 00:00:00'", ["d0"]),
    ("WHERE ts <= '2026-11-02'", ["d0", "d1"]),  # the first instant of day 2 is included
    ("WHERE ts BETWEEN '2026-11-02 12:00' AND '2026-11-03 01:00'", ["d1", "d2"]),
    ("WHERE '2026-11-03' <= ts", ["d2"]),
    ("WHERE ts >= '2026-11-02' OR value > 1", ["d0", "d1", "d2"]),  # OR: no pruning
    ("WHERE ts >= '2027-01-01'", []),
])
def test_time_predicates_prune_epochs_and_never_change_the_answer(service, where: str, epochs: list[str]) -> None:
    svc, client = service
    sql = f"SELECT count(*) AS n, sum(value) AS s FROM orders {where}"
    got = client.do_get(_ticket(sql)).read_all()
    assert _epochs_read(got) == epochs
    cursor = svc.loader.cursor()
    try:  # the same predicate over every epoch, unpruned
        union = " UNION ALL ".join(f"SELECT * FROM {svc.loader.holds('orders', f'd{d}').qualified}" for d in range(3))
        want = cursor.sql(f"SELECT count(*) AS n, sum(value) AS s FROM ({union}) orders {where}").fetchall()
    finally:
        cursor.close()
    assert got.column("n").to_pylist() == [want[0][0]]


def test_a_self_join_is_not_pruned_by_one_sides_predicate(service) -> None:
    _, client = service
    sql = ("SELECT count(*) FROM orders a JOIN (SELECT * FROM orders WHERE ts < '2026-11-02') b USING (id) "
           "WHERE a.ts >= '2026-11-03'")
    got = client.do_get(_ticket(sql)).read_all()
    assert _epochs_read(got) == ["d0", "d1", "d2"]


def test_ticket_epochs_and_window_restrict_the_view(service) -> None:
    _, client = service
    got = client.do_get(_ticket("SELECT count(*) AS n FROM orders", epochs={"orders": ["d0", "d2"]},
                                window={"orders": [None, (T0_S + DAY_S // 2) * 1_000_000]})).read_all()
    assert _epochs_read(got) == ["d0"]  # d2 lies outside the window
    assert 0 < got.column("n")[0].as_py() < 1000
    with pytest.raises(pa.ArrowKeyError, match="d9"):
        client.do_get(_ticket("SELECT 1 FROM orders", epochs={"orders": ["d0", "d9"]})).read_all()


def test_an_epoch_evicted_while_its_query_starts_is_not_found(service, monkeypatch) -> None:
    """Eviction races a query that already chose its epochs: the caller hears NOT_FOUND (another replica may
    answer), never INVALID_ARGUMENT as if its SQL were wrong."""
    svc, client = service
    planned = svc._views

    def plan_then_evict(ticket):
        views = planned(ticket)
        svc.loader.evict("orders", "d1", "acme")
        return views

    monkeypatch.setattr(svc, "_views", plan_then_evict)
    with pytest.raises(pa.ArrowKeyError, match="d1 of orders are not held here any more"):
        client.do_get(_ticket("SELECT count(*) FROM orders", epochs={"orders": ["d0", "d1"]})).read_all()


def test_parses_are_remembered_for_the_most_recent_statements(service) -> None:
    svc, client = service
    svc.statements.capacity = 2
    a, b, c = (f"SELECT count(*) + {i} AS n FROM orders" for i in range(3))
    first = svc.statements.parse(a)
    assert svc.statements.parse(a) is first  # remembered: DuckDB's parser is not asked again
    assert svc.statements.statement(a) is first.statement  # what a cursor runs, parsed already
    svc.statements.parse(b)
    svc.statements.parse(c)  # a is the least recently used of three: forgotten
    assert svc.statements.remembered() == [b, c]
    assert svc.statements.statement(a) == a  # forgotten: run from its text
    again = svc.statements.parse(a)
    assert again.tree == first.tree and again is not first
    assert client.do_get(_ticket(a)).read_all().column("n").to_pylist() == [3000]
    assert svc.statements.parse("SELEC 1").statement is None  # does not parse: its tree says why
    assert svc.statements.parse("SELECT 1; SELECT 2").statement is None


def test_a_cursor_keeps_its_views_for_the_next_query_over_the_same_tables(service) -> None:
    svc, client = service
    count = "SELECT count(*) AS n FROM orders"
    day1 = f"{count} WHERE ts >= '2026-11-02' AND ts < '2026-11-03'"
    assert client.do_get(_ticket(count)).read_all().column("n").to_pylist() == [3000]
    made = svc.cursors.made
    for _ in range(3):  # the same three epochs, whatever the statement: the idle cursor's views serve
        assert client.do_get(_ticket(count)).read_all().column("n").to_pylist() == [3000]
        assert client.do_get(_ticket(f"SELECT max(id) AS m FROM orders")).read_all().num_rows == 1
    assert svc.cursors.made == made and svc.cursors.idle == 1
    assert client.do_get(_ticket(day1)).read_all().column("n").to_pylist() == [1000]  # one epoch: other views
    assert svc.cursors.made == made + 1 and svc.cursors.idle == 2
    # an evicted epoch: its memory is freed though idle cursors hold views over it; those cursors are never
    # asked for again, and the answer is the new one
    def memory() -> int:
        cursor = svc.loader.cursor()
        try:
            return cursor.sql("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()[0][0]
        finally:
            cursor.close()

    held = memory()
    svc.loader.evict("orders", "d2", "acme")
    assert memory() < held
    assert client.do_get(_ticket(count)).read_all().column("n").to_pylist() == [2000]
    assert _epochs_read(client.do_get(_ticket(count)).read_all()) == ["d0", "d1"]
    assert svc.cursors.made == made + 2


def test_a_cursor_is_not_kept_after_an_error_or_a_timeout(service) -> None:
    svc, client = service
    client.do_get(_ticket("SELECT count(*) FROM orders")).read_all()
    assert svc.cursors.idle == 1
    with pytest.raises(pa.ArrowInvalid):  # takes the idle cursor (same views) and closes it
        client.do_get(_ticket("SELECT no_such_column FROM orders")).read_all()
    assert svc.cursors.idle == 0
    with pytest.raises(fl.FlightTimedOutError):  # its interrupt may still be on its way: closed too
        client.do_get(_ticket(SLOW, timeout_secs=0.3)).read_all()
    assert svc.cursors.idle == 0
    assert client.do_get(_ticket("SELECT count(*) AS n FROM orders")).read_all().column("n").to_pylist() == [3000]
    assert svc.cursors.idle == 1


def test_idle_cursors_are_bounded() -> None:
    loader = _loader(days=1, rows=10)
    cursors = ViewCursors(loader.cursor, capacity=2)
    try:
        table = loader.holds("orders", "d0").qualified
        views = [(("orders", f"SELECT * FROM {table} WHERE id > {i}"),) for i in range(3)]
        taken = []
        for v in views:
            cursor, ready = cursors.take(v)
            assert not ready
            make_views(cursor, v)
            taken.append(cursor)
        for v, c in zip(views, taken):
            cursors.give(v, c)
        assert cursors.idle == 2  # the least recently returned was closed
        with pytest.raises(Exception, match="(?i)closed"):
            taken[0].execute("SELECT 1")
        again, ready = cursors.take(views[2])
        assert ready and again is taken[2] and again.sql("SELECT count(*) FROM orders").fetchall() == [(7,)]
        cursors.give(views[2], again)
    finally:
        cursors.close()
        loader.close()


SLOW = "SELECT count(*) FROM orders, range(200000) r WHERE value * r > 1"


def test_timeout_is_deadline_exceeded(service) -> None:
    svc, client = service
    began = time.monotonic()
    with pytest.raises(fl.FlightTimedOutError, match="timeout"):
        client.do_get(_ticket(SLOW, timeout_secs=0.3)).read_all()
    assert time.monotonic() - began < 5
    # the deadlines of queries that end in time are disarmed: none is left to interrupt a later query
    for _ in range(3):
        assert client.do_get(_ticket("SELECT count(*) AS n FROM orders", timeout_secs=0.3)).read_all().num_rows == 1
    time.sleep(0.4)
    assert client.do_get(_ticket("SELECT count(*) AS n FROM orders")).read_all().num_rows == 1
    assert svc.deadlines.armed == 0


def test_cancel_query_interrupts_a_running_query(service, monkeypatch) -> None:
    svc, client = service
    errors: list[BaseException] = []
    # The service's query connections track DuckDB's progress (not printed), so the test cancels only once the
    # slow query itself is executing: a query is registered before its views are made, and an interrupt that
    # lands between two statements is not the one this test is about.
    cursor = svc.loader.cursor

    def tracked() -> Any:
        c = cursor()
        c.execute("SET enable_progress_bar = true")
        c.execute("SET enable_progress_bar_print = false")
        return c

    monkeypatch.setattr(svc, "cursors", ViewCursors(tracked))

    def run() -> None:
        try:
            client.do_get(_ticket(SLOW, query_id="q-1")).read_all()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            errors.append(exc)

    def progress() -> float:
        running = svc._running.get("q-1")
        return running.query_progress() if running is not None else -1.0

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60  # generous: the machine may be loaded
    while progress() <= 0 and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert progress() > 0, "the slow query was never seen executing"
    reply = next(client.do_action(fl.Action("cancel_query", json.dumps({"query_id": "q-1"}).encode())))
    assert reply.body.to_pybytes() == b"Query q-1 cancelled"
    thread.join(60)
    assert not thread.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], fl.FlightCancelledError), errors
    assert svc.cursors.idle == 0  # a cancelled query's cursor is closed, never pooled
    reply = next(client.do_action(fl.Action("cancel_query", json.dumps({"query_id": "q-1"}).encode())))
    assert reply.body.to_pybytes() == b"Query q-1 not running"


def test_result_over_the_memory_limit_is_refused(service) -> None:
    _, client = service
    with pytest.raises(fl.FlightServerError, match="resource exhausted"):
        client.do_get(_ticket("SELECT * FROM orders, range(500) r", memory_limit_mb=1)).read_all()


def test_a_cancel_before_the_statement_starts_is_not_lost() -> None:
    """A query waiting for the only query slot is cancelled: it never executes its statement, and a cancel of
    the running query ends that query too, whatever point of its execution the cancel lands on."""
    loader = _loader()
    svc = QueryService(loader, "grpc://127.0.0.1:0", max_queries=1)
    client = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
    outcomes: dict[str, BaseException | pa.Table] = {}

    def run(qid: str, sql: str) -> None:
        c = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
        try:
            outcomes[qid] = c.do_get(_ticket(sql, query_id=qid)).read_all()
        except BaseException as exc:  # noqa: BLE001 - inspected below
            outcomes[qid] = exc
        finally:
            c.close()

    def budgets() -> dict[str, float]:
        return json.loads(next(client.do_action(fl.Action("budgets", b""))).body.to_pybytes()).get("acme", {})

    def until(probe, what: str) -> None:
        deadline = time.monotonic() + 60  # generous: the machine may be loaded
        while not probe():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            time.sleep(0.005)

    def cancel(qid: str) -> bytes:
        return next(client.do_action(fl.Action("cancel_query", json.dumps({"query_id": qid}).encode()))).body.to_pybytes()

    holder = threading.Thread(target=run, args=("holder", SLOW))
    waiter = threading.Thread(target=run, args=("waiter", "SELECT count(*) AS n FROM orders"))
    try:
        holder.start()
        until(lambda: budgets().get("running") == 1, "the slow query to hold the slot")
        waiter.start()
        until(lambda: budgets().get("waiting") == 1, "the second query to wait for the slot")
        # the waiter's ticket is accepted, its statement has not started: the cancel must stick
        assert cancel("waiter") == b"Query waiter cancelled"
        assert cancel("holder") == b"Query holder cancelled"
        holder.join(120)
        waiter.join(60)
        assert not holder.is_alive() and not waiter.is_alive()
        assert isinstance(outcomes["holder"], fl.FlightCancelledError), outcomes
        # the waiter got the slot after the cancel and still ended CANCELLED, without running its statement
        assert isinstance(outcomes["waiter"], fl.FlightCancelledError), outcomes
        assert budgets()["served"] == 2 and svc.queries == 0
        assert cancel("waiter") == b"Query waiter not running"
        # the service is not left blocked: the next query with the same id answers
        assert client.do_get(_ticket("SELECT count(*) AS n FROM orders", query_id="waiter")).read_all() \
            .column("n").to_pylist() == [3000]
    finally:
        for qid in ("holder", "waiter"):
            svc.cancel(qid)
        client.close()
        svc.shutdown()
        loader.close()


def test_a_window_still_filters_an_epoch_holding_rows_outside_its_own_window(tmp_path) -> None:
    """An epoch whose rows all lie in its window is read unfiltered when the ticket's window covers it; one
    holding rows outside its window (a source query that ignored it) is always filtered."""
    from leibrix.sources import SourceRequest, SqlConnector
    from leibrix.wire._proto.records import common_pb2 as cpb
    from tests.support.sources import BASE_MS, DAY_MS, day_windows
    from tests.worker.test_readers_iceberg import assignment
    from tests.worker.test_readers_sql import ROWS, fill

    path = tmp_path / "src.db"
    fill(f"sqlite:///{path}", "timestamp")  # 4 rows an hour for 3 days
    plan = SqlConnector().plan(SourceRequest(f"jdbc:sqlite:{path}", "", "ev", "t", day_windows(3)))
    catalog = cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=f"jdbc:sqlite:{path}"))
    loader = Loader(memory_limit_bytes=256 << 20)
    plans = [assignment(plan, e, catalog=catalog, time_column="t", dataset="ev") for e in plan]
    read = plans[0].load_plan.read.sql
    read.query = read.query.replace("t >= :t_start AND t < :t_end", ":t_start IS NOT NULL AND :t_end IS NOT NULL")
    held = [loader.load(a, tenant_id="t1") for a in plans]
    assert [t.rows for t in held] == [len(ROWS), len(ROWS) // 3, len(ROWS) // 3]
    assert [t.in_window for t in held] == [False, True, True]
    day = [(BASE_MS + d * DAY_MS) * 1000 for d in range(4)]
    assert held[1].holds_only(day[1], day[2]) and held[1].holds_only(None, None)
    assert not held[1].holds_only(day[1] + 1, day[2]) and not held[0].holds_only(day[0], day[1])
    svc = QueryService(loader, "grpc://127.0.0.1:0")
    client = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
    try:
        def count(epochs: list[int], lo: int | None, hi: int | None) -> int:
            ticket = _ticket("SELECT count(*) AS n FROM ev", "t1", epochs={"ev": [held[e].epoch_id for e in epochs]},
                             window={"ev": [lo, hi]})
            return client.do_get(ticket).read_all().column("n")[0].as_py()

        assert count([0], day[0], day[1]) == len(ROWS) // 3  # the rows of days 2 and 3 it holds are left out
        assert count([1, 2], day[1], day[3]) == 2 * len(ROWS) // 3
        assert count([1], day[1] + 3_600_000_000, day[2]) == len(ROWS) // 3 - 4  # cut through: filtered
    finally:
        client.close()
        svc.shutdown()
        loader.close()
