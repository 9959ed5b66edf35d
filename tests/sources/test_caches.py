"""The connectors' per-process caches against real tables: fresh snapshots, bounds, and planning from many threads."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from leibrix.sources import Dimension, IcebergConnector, SourceRequest, SqlConnector
from leibrix.sources import _iceberg_cache, _iceberg_index
from leibrix.sources._lru import Lru
from tests.support.sources import BASE_MS, batch, day_windows, make_events_table


@pytest.fixture(autouse=True)
def _fresh_caches():
    _iceberg_cache.clear()
    yield
    _iceberg_cache.clear()


def _request(fx, days: int = 2, **kw) -> SourceRequest:
    return SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(days), (Dimension("region", ("eu",)),), **kw)


def _append_day(fx, root: Path, day: int, rows: int) -> None:
    path = root / f"extra-{day}-{rows}-{len(list(root.glob('extra-*')))}.parquet"
    pq.write_table(batch(day, "eu", 0, rows), path)
    fx.table.refresh().add_files([f"file://{path}"])


def test_a_new_snapshot_is_planned_by_the_next_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiceberg.manifest import ManifestFile

    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=5, batches=2)
    read: list[str] = []
    real_fetch = ManifestFile.fetch_manifest_entry

    def fetch(self, io, discard_deleted=True):
        read.append(self.manifest_path)
        return real_fetch(self, io, discard_deleted=discard_deleted)

    monkeypatch.setattr(ManifestFile, "fetch_manifest_entry", fetch)
    connector = IcebergConnector()
    first = connector.plan(_request(fx))
    assert [e.rows for e in first] == [5, 5] and len(read) == 2  # two appends: two manifests
    assert connector.plan(_request(fx)).version == first.version  # unchanged table: the same snapshot, kept
    assert len(read) == 2

    _append_day(fx, tmp_path, 1, 7)  # a new snapshot, committed through another catalog object
    known = set(read)
    del read[:]  # (the append itself read the table's manifests)
    second = connector.plan(_request(fx))
    assert second.version != first.version
    assert second.version == str(fx.table.refresh().current_snapshot().snapshot_id)
    assert [e.rows for e in second] == [5, 12]
    assert len(read) == 1 and read[0] not in known  # only the manifest the new commit wrote was read
    # the older snapshot is still planned by id, from its own (kept) index
    assert [e.rows for e in connector.plan(_request(fx, version=first.version))] == [5, 5]


def test_a_kept_answer_is_reused_within_its_ttl_but_a_named_new_snapshot_is_found(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=5)
    lazy = IcebergConnector(metadata_ttl_s=60.0)
    old = lazy.plan(_request(fx)).version
    _append_day(fx, tmp_path, 0, 3)
    new = str(fx.table.refresh().current_snapshot().snapshot_id)
    assert lazy.plan(_request(fx)).version == old  # within the TTL: the kept answer
    named = lazy.plan(_request(fx, version=new))  # a snapshot the kept metadata lacks: the catalog is asked
    assert named.version == new and [e.rows for e in named] == [8, 5]
    assert lazy.plan(_request(fx)).version == new  # and that answer is now the kept one
    assert IcebergConnector(metadata_ttl_s=0.0).plan(_request(fx)).version == new


def test_snapshot_indexes_are_bounded_by_entries_and_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=5)
    bounded = Lru(2, max_bytes=10**9)
    monkeypatch.setattr(_iceberg_index, "_indexes", bounded)
    connector = IcebergConnector()
    versions = []
    for day in range(4):
        versions.append(connector.plan(_request(fx)).version)
        assert len(bounded) <= 2
        _append_day(fx, tmp_path, day % 2, 1)
    assert len(set(versions)) == 4 and len(bounded) == 2
    kept = {key[1] for key in bounded._items}
    assert kept == {int(v) for v in versions[-2:]}  # the least recently used went first
    one = next(iter(bounded._items.values()))[1]
    assert one > 0 and bounded.bytes <= 10**9

    tiny = Lru(8, max_bytes=one - 1)  # smaller than one index: planned, never kept
    monkeypatch.setattr(_iceberg_index, "_indexes", tiny)
    assert [e.rows for e in connector.plan(_request(fx))] == [7, 7]  # 5 rows a day, and 2 appended to each
    assert len(tiny) == 0 and tiny.bytes == 0


def test_lru_evicts_by_bytes_and_reports_evictions() -> None:
    gone = []
    lru = Lru(10, max_bytes=100, on_evict=gone.append)
    for i in range(5):
        assert lru.put(i, f"v{i}", 30)
    assert len(lru) == 3 and lru.bytes == 90 and gone == ["v0", "v1"]
    assert lru.get(2) == "v2"  # now the most recently used
    lru.put(5, "v5", 30)
    assert lru.get(3) is None and lru.get(2) == "v2" and gone == ["v0", "v1", "v3"]
    assert not lru.put(6, "big", 101) and lru.get(6) is None


def test_concurrent_planning_of_one_table_reads_its_manifests_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fx = make_events_table(tmp_path, days=6, regions=("eu", "us"), parts=2, rows_per_file=4, batches=3)
    reads = []
    real_read = _iceberg_index.SnapshotIndex.read

    def counted(table, snapshot):
        reads.append(snapshot.snapshot_id)
        time.sleep(0.05)  # let the other threads arrive while the manifests are read
        return real_read(table, snapshot)

    monkeypatch.setattr(_iceberg_index.SnapshotIndex, "read", staticmethod(counted))
    expected = IcebergConnector(load_table=lambda _: fx.table).plan(_request(fx, days=6))  # the reference, then cleared
    _iceberg_cache.clear()
    reads.clear()
    start = threading.Barrier(8)
    results, errors = [], []

    def plan() -> None:
        try:
            start.wait()
            for _ in range(5):
                results.append(IcebergConnector().plan(_request(fx, days=6)))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=plan) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(results) == 40 and len(reads) == 1
    want = [(e.rows, e.rows_exact, sorted(f.path for f in e.read.files)) for e in expected]
    assert all([(e.rows, e.rows_exact, sorted(f.path for f in e.read.files)) for e in p] == want for p in results)
    assert all(p.version == expected.version for p in results)
    assert sum(e.rows for e in expected) == 6 * 2 * 4


def test_sql_reflection_follows_a_schema_change(tmp_path: Path) -> None:
    path = tmp_path / "src.db"
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE ev (t INTEGER, region TEXT)"))
        conn.execute(sa.text("INSERT INTO ev VALUES (:t, 'eu')"), [{"t": BASE_MS + i * 3_600_000} for i in range(30)])
    request = SourceRequest(f"jdbc:sqlite:{path}", "", "ev", "t", day_windows(2))
    plan = SqlConnector().plan(request)
    assert plan.schema.names == ["t", "region"] and [e.rows for e in plan] == [24, 6]
    with eng.begin() as conn:
        conn.execute(sa.text("ALTER TABLE ev ADD COLUMN note TEXT"))
        conn.execute(sa.text("INSERT INTO ev VALUES (:t, 'eu', 'x')"), [{"t": BASE_MS + 25 * 3_600_000}])
    eng.dispose()
    again = SqlConnector().plan(request)  # the kept reflection is not used: the schema version changed
    assert again.schema.names == ["t", "region", "note"] and [e.rows for e in again] == [24, 7]
    assert next(iter(again)).read.columns == ("t", "region", "note")


def test_identity_partition_values_are_looked_up_before_pyiceberg_prunes(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiceberg.expressions import visitors

    fx = make_events_table(tmp_path, days=3, regions=("eu", "us", "ap", "sa"), rows_per_file=4)
    partitions: list[str] = []
    real = visitors._ExpressionEvaluator.eval

    def counted(self, struct):
        partitions.append(struct[1])  # the partition record: (ts_day, region)
        return real(self, struct)

    monkeypatch.setattr(visitors._ExpressionEvaluator, "eval", counted)
    request = SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(2),
                            (Dimension("region", ("us", "sa", "nowhere")),))
    plan = IcebergConnector().plan(request)
    # 2 days x 4 regions in the window: only the files of admitted regions reach pyiceberg's partition pruning
    assert sorted(partitions) == ["sa", "sa", "us", "us"]
    assert {(e.start_ms, dict(e.dims)["region"]): e.rows for e in plan} == {
        (s, r): (4 if r != "nowhere" else 0) for s, _ in day_windows(2) for r in ("us", "sa", "nowhere")}


def test_a_table_schema_is_converted_once_and_a_new_schema_again(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from pyiceberg.io import pyarrow as pyiceberg_arrow
    from pyiceberg.types import StringType

    from leibrix.domain import _schema

    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=5)
    converted = []
    real = pyiceberg_arrow.schema_to_pyarrow

    def counted(schema, *args, **kwargs):
        converted.append(schema.schema_id)
        return real(schema, *args, **kwargs)

    monkeypatch.setattr(pyiceberg_arrow, "schema_to_pyarrow", counted)
    connector = IcebergConnector()
    first, again = connector.plan(_request(fx)), connector.plan(_request(fx, days=1))
    assert converted == [0] and again.schema is first.schema
    assert first.fingerprint == _schema.fingerprint(first.schema) and first.ipc == _schema.to_ipc(first.schema)

    with fx.table.refresh().update_schema() as update:
        update.add_column("extra", StringType())
    _append_day(fx, tmp_path, 1, 2)  # a snapshot written with the new schema
    evolved = connector.plan(_request(fx))
    assert converted == [0, 1] and evolved.schema.names[-1] == "extra"
    assert evolved.fingerprint == _schema.fingerprint(evolved.schema) != first.fingerprint
    assert _schema.canonical(_schema.from_ipc(evolved.ipc)) == _schema.canonical(evolved.schema)


def test_a_sql_catalog_builds_its_metadata_location_query_once(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",), rows_per_file=5)
    connector = IcebergConnector()
    first = connector.plan(_request(fx))
    queries = list(_iceberg_cache._location_queries.values())
    _append_day(fx, tmp_path, 0, 3)
    second = connector.plan(_request(fx))
    assert second.version != first.version  # the query, with its table bound per call, still sees the new snapshot
    assert len(queries) == 1 and next(iter(_iceberg_cache._location_queries.values())) is queries[0]
