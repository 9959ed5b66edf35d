"""Heat drives residency end to end: queries through the client, nothing else, make a hot dataset resident.

The tenant's epoch budget holds one of two datasets, not both (a memory quota
cannot: an epoch is charged its estimate, the room its load needs, until it
is loaded, then what its worker holds compressed, several times less, so room
for loading one dataset's epochs holds both datasets once they are loaded).
``cold`` is admitted first and loaded; ``hot`` is admitted next and waits
PENDING. A workload then
queries only ``hot`` through :class:`~leibrix.client._query.Client`: its epochs
are read from the source (never a partial answer) and the client's access
reports, its only feed of heat, raise their benefit until the control loop
displaces ``cold`` for them. Residency is observed through the routes the
client itself receives (``WatchRoutes``); the test never calls ReportAccess.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import trio

from leibrix.client._query import Client
from leibrix.client._requests import time_partitioned_admission
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import quota, rpc, states
from tests.support.cluster import leading, start_master, workers
from tests.support.sources import BASE_MS, make_events_table

BASE = datetime.fromtimestamp(BASE_MS / 1000, tz=timezone.utc)
DAYS = 2
ROWS = 150_000  # per day


def _admit(uri: str, dataset: str) -> cp.AdmitDatasetRequest:
    return time_partitioned_admission("acme", dataset, start=BASE, end=BASE + timedelta(days=DAYS), catalog_uri=uri,
                                      database="db", dimensions={"region": ["eu"]},
                                      hints=cp.EstimateHints(cpu_cores_per_epoch=0.01))


async def test_a_hot_dataset_displaces_a_cold_one_by_queries_alone(etcd_server: Any, nursery: trio.Nursery,
                                                                   tmp_path: Path) -> None:
    hot = make_events_table(tmp_path, days=DAYS, regions=("eu",), rows_per_file=ROWS, name="hot")
    make_events_table(tmp_path, days=DAYS, regions=("eu",), rows_per_file=ROWS, name="cold")
    master = await leading(await start_master(nursery, etcd_server.endpoint))
    await workers(nursery, master, "w1", memory="64MiB")
    await rpc(master, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE, max_epochs=DAYS))
    await rpc(master, "admit_dataset", _admit(hot.uri, "cold"))
    with trio.fail_after(60):
        while set(states(master, "acme", "cold").values()) != {"READY"}:
            await trio.sleep(0.1)
    await rpc(master, "admit_dataset", _admit(hot.uri, "hot"))
    await trio.sleep(2)
    assert "READY" not in states(master, "acme", "hot").values(), "both datasets fit: the test needs them not to"

    client = Client(masters=[master.config.grpc_listen], report_interval=0.2)
    sql = "SELECT count(*) AS n FROM hot"

    def resident(dataset: str) -> bool:
        routes = client.routes.watcher.routes("acme") if client.routes.watcher else None
        return bool(routes) and sum(1 for (d, _) in routes if d == dataset) == DAYS and all(
            r.worker_ids for (d, _), r in routes.items() if d == dataset)

    def workload(seconds: float) -> tuple[list[int], float | None]:
        began, counts, converged = time.monotonic(), [], None
        while time.monotonic() - began < seconds:
            counts.append(client.query("acme", "hot", sql).column("n")[0].as_py())
            if converged is None and resident("hot") and not resident("cold"):
                converged = time.monotonic() - began
                seconds = min(seconds, converged + 3)  # then keep querying a little: it must stay resident
        return counts, converged

    try:
        counts, converged = await trio.to_thread.run_sync(workload, 60.0)
        assert set(counts) == {DAYS * ROWS}, "every answer whole, resident or read from the source"
        assert converged is not None, (f"hot never became resident: hot {states(master, 'acme', 'hot')}, "
                                       f"cold {states(master, 'acme', 'cold')}")
        assert resident("hot") and not resident("cold")
        assert client.last.from_source == [] and client.last.workers == ["w1"]
        assert client.routes.watcher.synced("acme") and client.last.routes == "watch"
    finally:
        await trio.to_thread.run_sync(client.close)
