"""The Rust leibrix-worker on its defaults works with Leibrix: it joins, stays ACTIVE on its own cadence, loads.

Real etcd, a real master, real gRPC on loopback. The worker is
:class:`tests.support.rust_worker.RustWorker`: the worker's session loop with
the worker's own message layout. It dials the worker's path, registers with
only labels (``tenant_id`` naming its tenant, no capacity) and the master's
address as its own, heartbeats on its fixed cadence whatever the ack offers,
and answers every LoadPlan IN_PROGRESS then COMPLETED without rows, bytes or
schema fingerprint. Its cadence (10 s on its defaults) is scaled down with the
master's: the hub's own interval is 0.2 s, the worker beats every 0.5 s.

The master plans each admission through its source, so the three datasets
name real tables: the session's Iceberg table, ``db.sales`` in a real MariaDB
through the StarRocks connector (the same MySQL protocol; without StarRocks'
partition metadata it takes the generic path) and ``db.users`` in a real
PostgreSQL over JDBC.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pyarrow as pa
import pytest
import trio

from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support import databases
from tests.support.admission import T0, admission, quota, rpc, states
from tests.support.cluster import leading, start_master
from tests.support.poll import eventually
from tests.support.rust_worker import RustWorker, joined
from tests.support.sample_source import sample_source

ACTIVE = cp.WorkerState.ACTIVE
HUB_INTERVAL, WORKER_INTERVAL = 0.2, 0.5
#: Rows of ``db.sales`` (MariaDB) and ``db.users`` (PostgreSQL): every 2 hours of T0's day and the next, eu and us.
ROWS = [(i, T0.replace(tzinfo=None) + timedelta(hours=2 * (i // 2)), ("eu", "us")[i % 2]) for i in range(48)]


def _mariadb_sales(server: databases.Server) -> None:
    """``db.sales`` and a reader ``etl`` whose password needs escaping in a URL (``p@ss``)."""
    import pymysql

    conn = pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute("CREATE DATABASE db")
        cur.execute("CREATE TABLE db.sales (id INT PRIMARY KEY, ts DATETIME NOT NULL, region VARCHAR(8) NOT NULL, "
                    "amount DOUBLE NOT NULL)")
        cur.executemany("INSERT INTO db.sales VALUES (%s, %s, %s, %s)", [(i, ts, r, i * 1.5) for i, ts, r in ROWS])
        cur.execute("CREATE USER 'etl'@'%%' IDENTIFIED BY %s", ("p@ss",))
        cur.execute("GRANT SELECT ON db.* TO 'etl'@'%'")
    conn.close()


def _postgres_users(server: databases.Server) -> None:
    """Database ``crm`` owned by ``app`` (password ``app-pw``), holding ``db.users``."""
    import psycopg

    with psycopg.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                         dbname="postgres", autocommit=True) as conn:
        conn.execute("CREATE ROLE app LOGIN PASSWORD 'app-pw'")
        conn.execute("CREATE DATABASE crm OWNER app")
    with psycopg.connect(host=server.host, port=server.port, user="app", password="app-pw", dbname="crm",
                         autocommit=True) as conn:
        conn.execute("CREATE SCHEMA db")
        conn.execute("CREATE TABLE db.users (id BIGINT PRIMARY KEY, ts TIMESTAMP NOT NULL, region TEXT NOT NULL, "
                     "name TEXT)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO db.users VALUES (%s, %s, %s, %s)", [(i, ts, r, f"user-{i}") for i, ts, r in ROWS])


@pytest.fixture(scope="module")
def catalogs() -> Iterator[tuple[dict[str, cp.Catalog], dict[str, tuple[str, dict[str, Any]]]]]:
    """Each dataset's real catalog (the session's Iceberg table, a MariaDB behind the StarRocks connector's
    generic path, a PostgreSQL over JDBC), and that catalog as the worker reads it from a LoadPlan."""
    with databases.running_mariadb() as maria, databases.running_postgres() as pg:
        _mariadb_sales(maria)
        _postgres_users(pg)
        iceberg = sample_source().uri
        users = f"jdbc:postgresql://app:app-pw@{pg.host}:{pg.port}/crm?sslmode=disable"
        given = {
            "events": cp.Catalog(iceberg=cp.IcebergCatalog(uri=iceberg)),
            "sales": cp.Catalog(starrocks=cp.StarRocksCatalog(
                dsn=f"mysql://etl:p%40ss@{maria.host}:{maria.port}/db?max_concurrency=4",
                internal_catalog_name="default_catalog")),
            "users": cp.Catalog(jdbc=cp.JdbcCatalog(uri=users, driver="org.postgresql.Driver")),
        }
        expected = {
            "events": ("iceberg", {"uri": iceberg}),
            "sales": ("starrocks", {"catalog_name": "default_catalog", "host": maria.host, "port": maria.port,
                                    "database": "db", "username": "etl", "password": "p@ss", "max_concurrency": 4,
                                    "pool_options": None}),
            "users": ("jdbc", {"uri": users, "driver": "org.postgresql.Driver", "pool_options": None}),
        }
        yield given, expected


async def start(etcd_endpoint: str, nursery: trio.Nursery) -> Master:
    master = await start_master(nursery, etcd_endpoint, cluster="rust", worker_heartbeat_interval=HUB_INTERVAL,
                                worker_missed_heartbeats=2, worker_dead_timeout=2.0)
    return await leading(master)


def request(dataset: str, catalog: cp.Catalog) -> cp.AdmitDatasetRequest:
    """One daily epoch (T0, region eu) of ``db.<dataset>`` in ``catalog``."""
    req = admission("acme", dataset, regions=("eu",))
    req.source.catalog = catalog
    return req


async def worker_state(m: Master, worker_id: str) -> tuple[int, int]:
    """The worker's state as the API reports it: (GetWorker, ListWorkers)."""
    one = await rpc(m, "get_worker", cp.GetWorkerRequest(worker_id=worker_id))
    listed = {w.worker_id: w.state for w in (await rpc(m, "list_workers", cp.ListWorkersRequest())).workers}
    return one.state, listed.get(worker_id, cp.WorkerState(0))


async def test_rust_worker_joins_loads_three_catalogs_and_stays_active_on_its_own_cadence(
        etcd_server: Any, nursery: trio.Nursery, catalogs) -> None:
    CATALOGS, EXPECTED = catalogs
    m = await start(etcd_server.endpoint, nursery)
    # the worker's tenant_id label puts it in pool "acme"; the tenant places its epochs in that pool
    await rpc(m, "upsert_tenant_quota", quota("acme", worker_pool="acme", admission_policy=cp.AdmissionPolicy.QUEUE))
    rust = RustWorker("rust-1", "acme", heartbeat_s=WORKER_INTERVAL)
    async with joined(m.config.grpc_listen, rust):
        assert rust.ack.get("master_id") == "m1"  # a registration_ack, not a reject
        info = await rpc(m, "get_worker", cp.GetWorkerRequest(worker_id="rust-1"))
        assert (info.state, info.labels) == (ACTIVE, {"tenant_id": "acme"})
        assert info.capacity.memory_bytes > 0 and info.capacity.cpu_cores > 0  # a default for no capacity

        for dataset, catalog in CATALOGS.items():
            await rpc(m, "admit_dataset", request(dataset, catalog))
        await eventually(lambda: all(set(states(m, "acme", d).values()) == {"READY"} for d in CATALOGS),
                       timeout=30, what="the three datasets' epochs READY")

        # every LoadPlan decoded with the worker's types and reads as the worker needs it
        assert rust.skipped == []
        by_dataset = {a.dataset_id: a for a in rust.assignments}
        assert set(by_dataset) == set(CATALOGS)
        for dataset, (kind, catalog) in EXPECTED.items():
            a = by_dataset[dataset]
            (epoch,) = states(m, "acme", dataset)
            assert (a.epoch_id, a.destination_table_name) == (epoch, f"{dataset}__{epoch}")
            assert (a.catalog_kind, a.catalog) == (kind, catalog), dataset
            assert (a.database, a.table, a.time_column_name) == ("db", dataset, "ts")
            assert a.dimension_values == {"region": "eu"} and a.time_range_ns is not None
            assert a.time_range_ns[1] - a.time_range_ns[0] == 86_400 * 10**9
            assert a.plan_id
            if a.arrow_schema:  # the dataset's schema as Arrow IPC, which the worker decodes before loading
                assert "ts" in pa.ipc.read_schema(pa.py_buffer(a.arrow_schema)).names
        assert rust.tables == {(d, next(iter(states(m, "acme", d)))) for d in CATALOGS}

        # liveness: over many of its own periods (each longer than the hub's interval) it stays ACTIVE
        beats = len(rust.heartbeats)
        seen: set[tuple[int, int]] = set()
        hub_seen: set[int] = set()
        with trio.move_on_after(8 * WORKER_INTERVAL):
            while True:
                seen.add(await worker_state(m, "rust-1"))
                hub_seen.add(m.parts.hub.state("rust-1"))
                await trio.sleep(HUB_INTERVAL / 4)
        assert len(rust.heartbeats) - beats >= 6, "the worker kept beating on its cadence"
        assert seen == {(ACTIVE, ACTIVE)} and hub_seen == {ACTIVE}, \
            f"GetWorker/ListWorkers saw {seen}, the hub {hub_seen}, for a worker beating every {WORKER_INTERVAL}s"
        assert all(set(states(m, "acme", d).values()) == {"READY"} for d in CATALOGS)

        # a retired epoch is evicted with the payload the worker reads (dataset_id, epoch_id, reason)
        (sales_epoch,) = states(m, "acme", "sales")
        await rpc(m, "retire_epoch", cp.RetireEpochRequest(tenant_id="acme", dataset_id="sales", epoch_id=sales_epoch))
        await eventually(lambda: ("sales", sales_epoch) not in rust.tables, what="the evict_epoch")
        ((dataset, epoch, reason),) = rust.evicts
        assert (dataset, epoch) == ("sales", sales_epoch) and reason
