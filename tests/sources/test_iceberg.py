"""The Iceberg connector against real tables (pyiceberg SQL catalogs on SQLite, and on the real PostgreSQL)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pyarrow as pa
import pytest

from leibrix.domain import _schema
from leibrix.domain._errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from leibrix.sources import Dimension, IcebergConnector, SourceRequest
from leibrix.sources._iceberg import _time_column, epoch_filter
from leibrix.sources._types import TIME_FIELD
from tests.support.sources import ARROW_SCHEMA, BASE_MS, add_delete_file, day_windows, make_events_table

HOUR_MS = 3_600_000


def _request(fx, windows, dims=(("region", ("eu", "us")),), **kw) -> SourceRequest:
    return SourceRequest(fx.uri, fx.namespace, fx.name, "ts", windows,
                         tuple(Dimension(c, v) for c, v in dims), **kw)


def test_one_pass_plan_matches_pyiceberg_per_epoch(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=6, parts=2, rows_per_file=7, batches=3)
    request = _request(fx, day_windows(4, first=1))
    plan = IcebergConnector().plan(request)

    assert plan.version == str(fx.table.current_snapshot().snapshot_id)
    assert plan.schema.equals(ARROW_SCHEMA)  # large_string narrowed: what the Parquet files hold
    assert plan.fingerprint == _schema.fingerprint(ARROW_SCHEMA)
    assert len(plan) == 4 * 2
    time = _time_column(fx.table.schema(), request)
    for epoch in plan:
        expected = {t.file.file_path for t in fx.table.scan(
            row_filter=epoch_filter(request, time, epoch.start_ms, epoch.end_ms, epoch.dims)).plan_files()}
        got = [f.path for f in epoch.read.files]
        assert sorted(got) == sorted(expected) and len(got) == 2
        assert epoch.rows == 14 and epoch.rows_exact
        sizes = sum(os.path.getsize(p.removeprefix("file://")) for p in got)
        assert epoch.source_bytes == sizes == epoch.scan_cost_bytes
        # 14 rows x (id 8 + ts 8 + region 4+2 + value 8+1/8 + note 4+~12 + 1/8): between 40 and 60 bytes a row
        assert 14 * 40 < epoch.memory_bytes < 14 * 60


def test_unpartitioned_files_are_apportioned_to_hourly_windows(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=48, partitioned=False)
    windows = tuple((BASE_MS + h * HOUR_MS, BASE_MS + (h + 1) * HOUR_MS) for h in range(24))
    plan = IcebergConnector().plan(_request(fx, windows, dims=(("region", ("eu",)),)))
    rows = [e.rows for e in plan]
    # the first file spans day 0 (bounds from column stats); the second is pruned by its bounds
    assert all(len(e.read.files) == 1 for e in plan)
    assert abs(sum(rows) - 48) <= 1 and all(1 <= r <= 3 for r in rows)
    assert not any(e.rows_exact for e in plan)
    size = os.path.getsize(fx.files[0])
    assert all(e.scan_cost_bytes == size for e in plan)
    assert abs(sum(e.source_bytes for e in plan) - size) <= 24


def test_delete_files_travel_with_their_data_files(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, rows_per_file=10)
    pos = add_delete_file(fx, fx.files[0], [0, 3, 5])  # day 0, eu
    eq = add_delete_file(fx, fx.files[1], [1], kind="equality")  # day 0, us
    plan = IcebergConnector().plan(_request(fx, day_windows(2)))
    eu0 = plan.epochs[(BASE_MS, BASE_MS + 86_400_000, (("region", "eu"),))]
    us0 = plan.epochs[(BASE_MS, BASE_MS + 86_400_000, (("region", "us"),))]
    (f,) = eu0.read.files
    assert [(d.kind, d.path) for d in f.delete_files] == [("position", f"file://{pos}")]
    assert eu0.rows == 7 and eu0.rows_exact  # one data file targeted: exact subtraction
    (g,) = us0.read.files
    assert [(d.kind, d.equality_ids) for d in g.delete_files] == [("equality", (1,))] and eq in g.delete_files[0].path
    assert us0.rows == 10 and not us0.rows_exact  # which rows an equality delete removes is unknowable
    assert us0.scan_cost_bytes == os.path.getsize(fx.files[1]) + os.path.getsize(eq)
    later = [e for e in plan if e.start_ms > BASE_MS]
    assert all(e.rows == 10 and e.rows_exact and not e.read.files[0].delete_files for e in later)


def test_positional_delete_spanning_files_is_inexact(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, regions=("eu",), rows_per_file=10)
    add_delete_file(fx, fx.files[0], [1, 2], single_file=False)
    (epoch,) = IcebergConnector().plan(_request(fx, day_windows(1), dims=(("region", ("eu",)),)))
    assert epoch.rows == 8 and not epoch.rows_exact


def test_older_snapshot_and_unknown_snapshot(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=5, batches=2)
    first = fx.table.snapshots()[0].snapshot_id
    plan = IcebergConnector().plan(_request(fx, day_windows(2), dims=(), version=str(first)))
    assert plan.version == str(first)
    assert [e.rows for e in plan] == [5, 0]  # the second day's file came with the second snapshot
    with pytest.raises(NotFound, match=r"^source\.version: snapshot 12345 not found"):
        IcebergConnector().plan(_request(fx, day_windows(2), dims=(), version="12345"))


def test_field_errors(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, rows_per_file=3)
    plan = IcebergConnector().plan
    with pytest.raises(NotFound, match=r"^source\.table: table db\.nope not found"):
        plan(SourceRequest(fx.uri, "db", "nope", "ts", day_windows(1)))
    with pytest.raises(NotFound, match=r"^source\.database: namespace 'nodb' not found"):
        plan(SourceRequest(fx.uri, "nodb", "events", "ts", day_windows(1)))
    with pytest.raises(InvalidArgument) as e:
        plan(SourceRequest(fx.uri, "db", "events", "tss", day_windows(1)))
    assert e.value.field == TIME_FIELD and "no column 'tss'" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        plan(SourceRequest(fx.uri, "db", "events", "value", day_windows(1)))
    assert e.value.field == TIME_FIELD and "double" in e.value.message
    with pytest.raises(InvalidArgument) as e:
        plan(SourceRequest(fx.uri, "db", "events", "ts", day_windows(1), time_type="DATE"))
    assert e.value.field == TIME_FIELD
    with pytest.raises(InvalidArgument) as e:
        plan(_request(fx, day_windows(1), dims=(("region", ("eu",)), ("country", ("fr",)))))
    assert e.value.field == "source.partition.dimension_partitions[1].column.name"
    with pytest.raises(InvalidArgument) as e:
        plan(_request(fx, day_windows(1), dims=(("id", ("7", "x")),)))
    assert e.value.field == "source.partition.dimension_partitions[0].values[1]"


def test_unreachable_rest_catalog(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(Unavailable, match=r"^source\.catalog\.iceberg\.uri: Iceberg catalog http://127\.0\.0\.1"):
        IcebergConnector().plan(SourceRequest(f"http://127.0.0.1:{port}/api", "db", "t", "ts", day_windows(1)))


def test_secret_reference_in_catalog_uri(tmp_path: Path, postgres, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiceberg.catalog.sql import SqlCatalog

    url = f"postgresql+psycopg://postgres:{postgres.password}@127.0.0.1:{postgres.port}/postgres"
    cat = SqlCatalog("pgcat", uri=url, warehouse=f"file://{tmp_path}")
    cat.create_namespace("ns")
    table = cat.create_table("ns.empty", schema=pa.schema([pa.field("ts", pa.timestamp("us"))]))
    assert table.current_snapshot() is None
    monkeypatch.setenv("LEIBRIX_TEST_PG_PW", postgres.password)
    uri = f"postgresql+psycopg://postgres:${{env:LEIBRIX_TEST_PG_PW}}@127.0.0.1:{postgres.port}/postgres#name=pgcat"
    plan = IcebergConnector().plan(SourceRequest(uri, "ns", "empty", "ts", day_windows(2)))
    assert plan.version is None and [e.rows for e in plan] == [0, 0]
    assert postgres.password not in repr(SourceRequest(uri, "ns", "empty", "ts", day_windows(2)))

    monkeypatch.setenv("LEIBRIX_TEST_PG_PW", "wrong-password-value")
    with pytest.raises(PermissionDenied) as e:
        IcebergConnector().plan(SourceRequest(uri, "ns", "empty", "ts", day_windows(2)))
    assert e.value.message.startswith("source.catalog.iceberg.uri:")
    assert "wrong-password-value" not in e.value.message and "***" in e.value.message
