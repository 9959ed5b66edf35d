"""Per-tenant CPU budgets on the worker: a tenant's queries beyond its slots wait for its own slots, while
another tenant's run; the share rule (dedicated pool, explicit share, default half the worker)."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import pyarrow.flight as fl
import pytest

from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._budget import Budgets, parse_tenant_cpu
from leibrix.worker._flight import QueryService
from leibrix.worker._loader import Loader

T0_S = 1_793_491_200
SLOW = "SELECT count(*) FROM orders, range(2000000000) r WHERE value * r > 1"


def _load(loader: Loader, tenant: str, rows: int) -> None:
    a = pb.DataAssignmentEvent(dataset_id="orders", epoch_id="d0", load_plan=pb.LoadPlan(
        plan_id=f"{tenant}-d0", destination_table_name="orders__d0", expected_rows=rows, tenant_id=tenant))
    part = a.load_plan.resolved_partition
    part.time_column_name = "ts"
    part.time_range.start_inclusive.FromSeconds(T0_S)
    part.time_range.end_exclusive.FromSeconds(T0_S + 86_400)
    loader.load(a, tenant_id=tenant)


def _ticket(sql: str, tenant: str, **extra: Any) -> fl.Ticket:
    return fl.Ticket(json.dumps({"sql": sql, "tenant_id": tenant, **extra}).encode())


def _budgets(client: fl.FlightClient) -> dict[str, dict[str, float]]:
    return json.loads(next(client.do_action(fl.Action("budgets", b""))).body.to_pybytes())


def _until(probe, what: str, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def _stop(svc: QueryService, qid: str, outcomes: dict[str, str]) -> None:
    """Interrupt query ``qid`` until its client saw it end (an interrupt that lands before DuckDB starts
    executing is lost, so it is repeated)."""
    while qid not in outcomes:
        svc.cancel(qid)
        time.sleep(0.01)


def test_a_tenants_queries_beyond_its_slots_wait_while_another_tenant_runs() -> None:
    loader = Loader(memory_limit_bytes=256 << 20, threads=2)
    _load(loader, "acme", 1000)
    _load(loader, "globex", 100)
    budgets = Budgets(2, parse_tenant_cpu("acme=1"), default_share=2)
    svc = QueryService(loader, "grpc://127.0.0.1:0", max_queries=4, budgets=budgets)
    client = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
    outcomes: dict[str, str] = {}

    def run(qid: str) -> None:
        c = fl.FlightClient(f"grpc://127.0.0.1:{svc.port}")
        try:
            # the timeout only bounds a failed test: every query is cancelled long before it
            c.do_get(_ticket(SLOW, "acme", query_id=qid, timeout_secs=60)).read_all()
            outcomes[qid] = "done"
        except fl.FlightCancelledError:
            outcomes[qid] = "cancelled"
        except Exception as exc:  # noqa: BLE001 - recorded, asserted below
            outcomes[qid] = repr(exc)
        finally:
            c.close()

    threads = [threading.Thread(target=run, args=(f"a{i}",)) for i in range(3)]
    try:
        for t in threads:
            t.start()
        # acme has 1 slot (share 1 core): one query executes, two wait for *acme's* slot
        snap = _until(lambda: (s := _budgets(client)).get("acme", {}).get("waiting") == 2 and s, "two acme waiters")
        assert snap["acme"]["running"] == 1 and snap["acme"]["slots"] == 1 and len(svc._running) == 1
        # globex (default share 2) is not held up by acme's backlog: its query runs and answers now
        got = client.do_get(_ticket("SELECT count(*) AS n FROM orders", "globex")).read_all()
        assert got.column("n").to_pylist() == [100]
        after = _budgets(client)
        assert after["acme"]["waiting"] == 2 and after["globex"]["served"] == 1 and after["globex"]["slots"] == 2
        # release acme's queries one by one: each ended query lets exactly the next waiter in
        for left in (1, 0):
            (running,) = list(svc._running)
            _stop(svc, running, outcomes)
            _until(lambda: _budgets(client)["acme"]["waiting"] == left and len(svc._running) == 1,
                   f"{left} acme waiters and one running")
        _stop(svc, next(iter(svc._running)), outcomes)
        for t in threads:
            t.join(20)
        final = _budgets(client)["acme"]
        assert outcomes == {"a0": "cancelled", "a1": "cancelled", "a2": "cancelled"}
        assert final["peak"] == 1 and final["served"] == 3 and final["running"] == 0 and final["waiting"] == 0
    finally:
        for qid in list(svc._running):
            svc.cancel(qid)
        client.close()
        svc.shutdown()
        loader.close()


def test_a_tenant_waiting_past_its_timeout_is_unavailable() -> None:
    budgets = Budgets(1, {"acme": 1})
    with budgets.slot("acme") as held:
        assert held
        with budgets.slot("acme", timeout=0.05) as second:
            assert not second
        assert budgets.snapshot()["acme"]["waiting"] == 0 and budgets.snapshot()["acme"]["running"] == 1


@pytest.mark.parametrize(("cpu", "shares", "pool", "tenant", "slots", "threads"), [
    (8, {}, "", "acme", 4, 4),              # shared worker: a tenant not named gets half the worker
    (8, {"acme": 2.5}, "", "acme", 2, 2),   # an explicit share: floor for slots, rounded for threads
    (8, {"acme": 20}, "", "acme", 8, 8),    # capped at the worker's cores
    (8, {}, "acme", "acme", 8, 8),          # a worker dedicated to the tenant's pool: all of it
    (1, {}, "", "acme", 1, 1),              # never less than one
    (4, {"acme": 0.5}, "", "acme", 1, 1),
])
def test_the_share_rule(cpu: float, shares: dict[str, float], pool: str, tenant: str, slots: int, threads: int) -> None:
    b = Budgets(cpu, shares, pool=pool)
    assert (b.slots(tenant), b.threads(tenant)) == (slots, threads)
    assert Budgets(cpu, shares, pool=pool, cap=2).slots(tenant) == min(slots, 2)


def test_tenant_cpu_flag_is_parsed_or_refused_naming_the_entry() -> None:
    assert parse_tenant_cpu("acme=2, globex=0.5") == {"acme": 2.0, "globex": 0.5}
    for bad in ("acme", "acme=0", "=2", "acme=x"):
        with pytest.raises(ValueError, match="TENANT=CORES"):
            parse_tenant_cpu(bad)
