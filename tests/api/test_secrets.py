"""Source credentials at rest: with ``--secrets-key-file`` a password inlined in a catalog URI reaches
neither etcd nor the master's log, GetDataset stays redacted, and the worker still connects with it.

End to end on a real PostgreSQL (a role with a password of its own, so a scan
for it cannot be confused with anything else), a real master on real etcd and
a real worker process that loads the epochs from PostgreSQL.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import trio

from leibrix.domain._sealing import key_id, parse_key
from leibrix.wire._proto import leibrix_cp as cp
from tests.support import databases
from tests.support.admission import all_ready, quota, rpc
from tests.support.cluster import KEYS, master_with_workers

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture(scope="module")
def postgres() -> Iterator[databases.Server]:
    with databases.running_postgres() as server:
        yield server


def _role_and_table(server: databases.Server, password: str) -> str:
    """A database ``sealed`` with table ``public.ev`` (2 days × 24 rows), readable by role ``sealer``; its JDBC URI
    with the role's password inline."""
    admin = sa.create_engine(server.sqlalchemy_url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text("DROP DATABASE IF EXISTS sealed"))
        conn.execute(sa.text("DROP ROLE IF EXISTS sealer"))
        conn.execute(sa.text(f"CREATE ROLE sealer LOGIN PASSWORD '{password}'"))
        conn.execute(sa.text("CREATE DATABASE sealed OWNER sealer"))
    admin.dispose()
    eng = sa.create_engine(f"postgresql+psycopg://sealer:{password}@{server.host}:{server.port}/sealed")
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ev (id bigint PRIMARY KEY, t timestamp NOT NULL, v double precision)"))
        conn.execute(sa.text("INSERT INTO ev SELECT i, :t0 + i * interval '1 hour', i * 1.5 FROM generate_series(0, 47) i"),
                     {"t0": T0.replace(tzinfo=None)})
    eng.dispose()
    return f"jdbc:postgresql://{server.host}:{server.port}/sealed?user=sealer&password={password}"


def _key(kv: Any) -> bytes:
    return kv.key if isinstance(kv.key, bytes) else kv.key.encode()


def _admission(uri: str) -> cp.AdmitDatasetRequest:
    return cp.AdmitDatasetRequest(
        tenant_id="acme", dataset_id="ev",
        source=cp.DataSource(
            catalog=cp.Catalog(jdbc=cp.JdbcCatalog(uri=uri)), database="public", table="ev",
            partition=cp.Partition(time_partition=cp.TimePartition(
                column=cp.PartitionColumn(name="t", type=cp.PartitionColumnType.TIMESTAMP,
                                          source_granularity=cp.PartitionColumnGranularity.GRANULARITY_DAY),
                filter=cp.TimeRangeFilter(start_inclusive=T0, end_exclusive=T0 + timedelta(days=2))))),
    )


async def test_an_inline_password_is_sealed_in_etcd_and_absent_from_logs(
        postgres: databases.Server, etcd: Any, etcd_server: Any, nursery: trio.Nursery, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    password = "Sealed-" + secrets.token_hex(12)
    uri = _role_and_table(postgres, password)
    old_key, new_key = os.urandom(32), os.urandom(32)
    (tmp_path / "new.key").write_text(new_key.hex() + "\n")
    (tmp_path / "old.key").write_bytes(old_key)
    caplog.set_level(logging.DEBUG)
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1",
                                  secrets_key_file=[str(tmp_path / "new.key"), str(tmp_path / "old.key")])
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc(m, "admit_dataset", _admission(uri))
    # The worker received the password (a wrong one is PERMISSION_DENIED at PostgreSQL): every epoch loaded.
    await all_ready(m, "acme", "ev", n=2)
    state = m.parts.admission.state
    assert sum(e.rows for e in state.dataset_epochs("acme", "ev")) == 48
    # The model holds the request as admitted; the record names the sealing key (the first file's).
    ds = state.datasets[("acme", "ev")]
    assert ds.request.source.catalog.jdbc.uri == uri
    assert ds.sealed_with == {key_id(parse_key((tmp_path / "new.key").read_bytes()))} and not ds.secrets_error

    # Nowhere in etcd: scan every key and value of the keyspace.
    kvs, _ = await etcd.get_prefix("/")
    assert len(kvs) > 5, "the scan saw the keyspace"
    assert not [kv.key for kv in kvs if password.encode() in bytes(kv.value) or password.encode() in _key(kv)]
    record = next(bytes(kv.value) for kv in kvs if _key(kv) == KEYS.dataset("acme", "ev").encode())
    assert b"password=${sealed:" in record and b"user=sealer" in record

    # GetDataset stays redacted (and says nothing of the sealing).
    info = await rpc(m, "get_dataset", cp.GetDatasetRequest(tenant_id="acme", dataset_id="ev"))
    assert info.source.catalog.jdbc.uri.endswith("password=***") and password not in str(info)

    # Nor in anything the master (or any library in this process) logged.
    assert caplog.records and not [r for r in caplog.records if password in r.getMessage()]
