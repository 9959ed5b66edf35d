"""StarRocks: DSN forms and SHOW PARTITIONS parsing on rows shaped as StarRocks documents them; the generic
fallback path against the real MariaDB (no StarRocks server can run here)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from leibrix.domain._errors import InvalidArgument
from leibrix.sources import Dimension, SourceRequest, SqlConnector, StarRocksConnector
from leibrix.sources._sql import _window_sizes
from leibrix.sources._starrocks import parse_data_size, parse_dsn, parse_partitions, parse_range
from tests.support.sources import BASE_MS, day_windows

DAY = 86_400_000

#: Rows of ``SHOW PARTITIONS FROM test.site_access`` as StarRocks documents them (shared-nothing columns).
DOCUMENTED = [
    {"PartitionId": 20990, "PartitionName": "p20240101", "VisibleVersion": 3, "VisibleVersionTime": "2024-01-02 01:00:00",
     "VisibleVersionHash": 0, "State": "NORMAL", "PartitionKey": "ts",
     "Range": "[types: [DATETIME]; keys: [2024-01-01 00:00:00]; ..types: [DATETIME]; keys: [2024-01-02 00:00:00]; )",
     "DistributionKey": "site_id", "Buckets": 6, "ReplicationNum": 3, "StorageMedium": "HDD",
     "CooldownTime": "9999-12-31 23:59:59", "LastConsistencyCheckTime": None, "DataSize": "4KB",
     "IsInMemory": "false", "RowCount": 100},
    {"PartitionId": 20991, "PartitionName": "p20240102", "VisibleVersion": 2, "State": "NORMAL",
     "Range": "[types: [DATE]; keys: [2024-01-02]; ..types: [DATE]; keys: [2024-01-04]; )",
     "DataSize": "1.500 MB", "RowCount": 300},
    {"PartitionId": 20992, "PartitionName": "pmax", "VisibleVersion": 1, "State": "NORMAL",
     "Range": "[types: [DATE]; keys: [2024-01-04]; ..types: [DATE]; keys: [MAXVALUE]; )", "DataSize": "0B",
     "RowCount": 0},
]


def test_parse_documented_show_partitions_rows() -> None:
    assert parse_data_size("4KB") == 4096 and parse_data_size("1.500 MB") == 1_572_864 and parse_data_size("0B") == 0
    assert parse_data_size("12") == 12 and parse_data_size("2 GB") == 2 << 30
    assert parse_range(DOCUMENTED[1]["Range"]) == (BASE_MS + DAY, BASE_MS + 3 * DAY)
    parts = parse_partitions(DOCUMENTED)
    assert [(p.name, p.start_ms, p.end_ms, p.data_bytes, p.rows) for p in parts] == [
        ("p20240101", BASE_MS, BASE_MS + DAY, 4096, 100),
        ("p20240102", BASE_MS + DAY, BASE_MS + 3 * DAY, 1_572_864, 300),
    ]  # the open-ended partition has no time range to apportion
    sizes = _window_sizes(list(day_windows(3)), parts)
    assert sizes[0] == (4096, 100, 4096)
    assert sizes[1] == (1_572_864 / 2, 150, 1_572_864) == sizes[2]  # half of a two-day partition; scans all of it
    v1 = StarRocksConnector().version(parts)
    bumped = parse_partitions([{**DOCUMENTED[0], "VisibleVersion": 4}, DOCUMENTED[1]])
    assert v1.startswith("v") and len(v1) == 17 and StarRocksConnector().version(bumped) != v1


def test_dsn_forms() -> None:
    go = parse_dsn("app:${env:SR_PW}@tcp(fe.example:9030)/sales")
    assert (go.host, go.port, go.database, go.username, go.password) == ("fe.example", 9030, "sales", "app", "${env:SR_PW}")
    assert "${env" not in go.shown and "***" in go.shown
    url = parse_dsn("mysql://app:pw@fe:9031/sales")
    assert (url.host, url.port, url.database, url.password) == ("fe", 9031, "sales", "pw")
    assert parse_dsn("jdbc:mysql://fe:9030/sales?user=app").username == "app"
    with pytest.raises(InvalidArgument) as e:
        parse_dsn("fe:9030")
    assert e.value.field == "source.catalog.starrocks.dsn"


def test_generic_fallback_against_mariadb(mariadb, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.sources.test_sql import HOURS, _check_counts, _database, _fill

    db = _database(mariadb, "src_sr")
    _fill(mariadb.sqlalchemy_url(db))
    monkeypatch.setenv("LEIBRIX_TEST_SR_PW", mariadb.password)
    dsn = f"{mariadb.user}:${{env:LEIBRIX_TEST_SR_PW}}@tcp(127.0.0.1:{mariadb.port})/{db}"
    request = SourceRequest(dsn, db, "events", "ts", day_windows(3, first=1), (Dimension("region", ("eu", "us")),))
    plan = StarRocksConnector().plan(request)  # MariaDB refuses SHOW PARTITIONS: the generic path answers
    _check_counts(plan)
    generic = SqlConnector().plan(SourceRequest(mariadb.jdbc(db), db, "events", "ts", day_windows(3, first=1),
                                                (Dimension("region", ("eu", "us")),)))
    assert [(e.key, e.rows, e.source_bytes, e.scan_cost_bytes) for e in plan] == \
        [(e.key, e.rows, e.source_bytes, e.scan_cost_bytes) for e in generic]
    assert all(e.rows == HOURS for e in plan)
    eng = sa.create_engine(mariadb.sqlalchemy_url(db))
    with eng.connect() as conn, pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.text(f"SHOW PARTITIONS FROM {db}.events"))  # what the fallback relies on
    eng.dispose()
