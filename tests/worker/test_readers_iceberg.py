"""The loader reads Iceberg epochs from their Parquet files: windows, dimensions, deletes, the planned schema."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from leibrix.domain import _schema
from leibrix.sources import Dimension, IcebergConnector, SourceRequest
from leibrix.sources._wire import read_plan
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._loader import Loader, SchemaMismatch
from leibrix.sources._readers import SourceError
from tests.support.sources import BASE_MS, DAY_MS, add_delete_file, day_windows, make_events_table


def assignment(plan, epoch, *, catalog: cpb.Catalog, time_column: str, schema: pa.Schema | None = None,
               dataset: str = "ds") -> pb.DataAssignmentEvent:
    """The data_assignment of one planned epoch, as the master sends it."""
    dims = "_".join(v for _, v in epoch.dims)
    a = pb.DataAssignmentEvent(dataset_id=dataset, epoch_id=f"{epoch.start_ms}_{dims}", load_plan=pb.LoadPlan(
        plan_id=f"p{epoch.start_ms}{dims}", expected_rows=epoch.rows, tenant_id="t1",
        arrow_schema=_schema.to_ipc(schema if schema is not None else plan.schema), read=read_plan(epoch)))
    a.load_plan.source.catalog.CopyFrom(catalog)
    part = a.load_plan.resolved_partition
    part.time_column_name = time_column
    part.time_range.start_inclusive.FromMilliseconds(epoch.start_ms)
    part.time_range.end_exclusive.FromMilliseconds(epoch.end_ms)
    part.dimension_values.update(dict(epoch.dims))
    return a


def loaded_table(loader: Loader, table: str, order: str = "id") -> pa.Table:
    cur = loader.cursor()
    try:
        return cur.sql(f"SELECT * FROM {table} ORDER BY {order}").to_arrow_table()
    finally:
        cur.close()


def _source_rows(paths: list[str], start_ms: int, end_ms: int, region: str,
                 deleted: set[tuple[str, int]], deleted_ids: dict[str, set[int]]) -> pa.Table:
    """The epoch's rows computed from the Parquet files directly (pyarrow), deletes applied by hand.

    ``deleted_ids``: per data file, the ids its equality delete removes (it applies to that file's partition only:
    the same ids exist in the other region's files).
    """
    parts = []
    for p in paths:
        t = pq.read_table(p).append_column("pos", pa.array(range(pq.read_metadata(p).num_rows), pa.int64()))
        keep = [(p, pos) not in deleted and i not in deleted_ids.get(p, ())
                for pos, i in zip(t.column("pos").to_pylist(), t.column("id").to_pylist())]
        parts.append(t.filter(pa.array(keep)).drop_columns(["pos"]))
    t = pa.concat_tables(parts)
    lo = pa.scalar(datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc).replace(tzinfo=None), pa.timestamp("us"))
    hi = pa.scalar(datetime.fromtimestamp(end_ms / 1000, tz=timezone.utc).replace(tzinfo=None), pa.timestamp("us"))
    mask = pc.and_(pc.and_(pc.greater_equal(t["ts"], lo), pc.less(t["ts"], hi)), pc.equal(t["region"], region))
    return t.filter(mask).sort_by("id")


@pytest.fixture
def events(tmp_path: Path):
    """3 days × 2 regions × 2 files of 40 rows, a positional delete on one file and an equality delete on another."""
    fx = make_events_table(tmp_path, days=3, parts=2, rows_per_file=40)
    pos_file = next(p for p in fx.files if "d0001-eu-001" in p)
    eq_file = next(p for p in fx.files if "d0002-us-000" in p)
    add_delete_file(fx, pos_file, [0, 7, 39])
    add_delete_file(fx, eq_file, [3, 4])
    eq_ids = {pq.read_table(eq_file).column("id")[i].as_py() for i in (3, 4)}
    add_delete_file(fx, eq_file, [3, 4], kind="equality")
    return fx, {(pos_file, 0), (pos_file, 7), (pos_file, 39)}, {eq_file: eq_ids}


@pytest.mark.parametrize("hours", [24, 12])
def test_iceberg_epochs_load_exactly_the_source_rows(events, hours: int) -> None:
    fx, deleted, eq_ids = events
    windows = tuple((BASE_MS + i * hours * 3_600_000, BASE_MS + (i + 1) * hours * 3_600_000)
                    for i in range(3 * 24 // hours))
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", windows,
                                                 (Dimension("region", ("eu", "us")),)))
    catalog = cpb.Catalog(iceberg=cpb.IcebergCatalog(uri=fx.uri))
    loader = Loader(memory_limit_bytes=256 << 20, threads=2)
    try:
        total = 0
        for epoch in plan:
            got = loader.load(assignment(plan, epoch, catalog=catalog, time_column="ts"), tenant_id="t1")
            want = _source_rows(fx.files, epoch.start_ms, epoch.end_ms, epoch.dims[0][1], deleted, eq_ids)
            table = loaded_table(loader, got.qualified)
            assert table.equals(want.cast(table.schema)), (epoch.key, table.num_rows, want.num_rows)
            assert table.schema.names == ["id", "ts", "region", "value", "note"]
            assert got.rows == want.num_rows and got.bytes > 0
            assert got.schema_fingerprint == plan.fingerprint
            if epoch.rows_exact:
                assert got.rows == epoch.rows
            total += got.rows
        # every source row of the 3 days lands in exactly one epoch: 12 files × 40, minus 3 + 2 deleted
        assert total == 12 * 40 - 5
        assert len(loader.inventory()) == len(plan) == (3 * 24 // hours) * 2
    finally:
        loader.close()


def test_positional_deletes_agree_with_pyiceberg(events) -> None:
    """An independent reader (pyiceberg's scan, which applies positional deletes) sees the same epoch."""
    from pyiceberg.expressions import And, EqualTo, GreaterThanOrEqual, LessThan

    fx, _, _ = events
    day = (BASE_MS + DAY_MS, BASE_MS + 2 * DAY_MS)
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", (day,),
                                                 (Dimension("region", ("eu",)),)))
    (epoch,) = plan
    assert [d.kind for f in epoch.read.files for d in f.delete_files] == ["position"]
    loader = Loader(memory_limit_bytes=256 << 20)
    try:
        got = loader.load(assignment(plan, epoch, catalog=cpb.Catalog(), time_column="ts"), tenant_id="t1")
        scan = fx.table.scan(row_filter=And(And(GreaterThanOrEqual("ts", day[0] * 1000), LessThan("ts", day[1] * 1000)),
                                            EqualTo("region", "eu"))).to_arrow().sort_by("id")
        table = loaded_table(loader, got.qualified)
        assert got.rows == scan.num_rows == 77
        assert table.equals(scan.cast(table.schema))
        # the same comparison as an order-independent checksum computed by DuckDB on both sides
        cur = loader.cursor()
        cur.register("expected", scan)
        (a,), (b,) = (cur.execute(f"SELECT bit_xor(hash(id, ts, region, value, note)) FROM {t}").fetchall()
                      for t in (got.qualified, "expected"))
        cur.close()
        assert a == b
    finally:
        loader.close()


def test_planned_schema_casts_representation_and_checks_the_fingerprint(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, regions=("eu",), rows_per_file=20)
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(1)))
    (epoch,) = plan
    catalog = cpb.Catalog(iceberg=cpb.IcebergCatalog(uri=fx.uri))
    # the plan says int32 ids, float32 values and the columns in another order: the loader casts and reorders
    other = pa.schema([("note", pa.string()), ("id", pa.int32()), ("ts", pa.timestamp("us")),
                       ("region", pa.string()), ("value", pa.float32())])
    loader = Loader(memory_limit_bytes=256 << 20)
    try:
        got = loader.load(assignment(plan, epoch, catalog=catalog, time_column="ts", schema=other), tenant_id="t1")
        assert got.schema_fingerprint == _schema.fingerprint(other) != plan.fingerprint
        table = loaded_table(loader, got.qualified)
        assert table.schema.names == other.names and got.rows == 20
        assert table.column("id").to_pylist() == list(range(20)) and table.column("value").type == pa.float32()
        # a planned type the data cannot be cast to: FAILED, naming the column, nothing kept
        bad = other.set(4, pa.field("value", pa.duration("us")))
        with pytest.raises(SchemaMismatch, match=r"cannot be cast to the plan's schema: .*DOUBLE -> INTERVAL.*value"):
            loader.load(assignment(plan, epoch, catalog=catalog, time_column="ts", schema=bad), tenant_id="t1")
        # a planned type DuckDB holds in another Arrow type (large_string is exported as string): fingerprints differ
        large = other.set(0, pa.field("note", pa.large_string()))
        with pytest.raises(SchemaMismatch, match=rf"differs from the plan's {_schema.fingerprint(large)}"):
            loader.load(assignment(plan, epoch, catalog=catalog, time_column="ts", schema=large), tenant_id="t1")
        assert loader.inventory() == []
        # a planned column the files do not have
        missing = other.append(pa.field("amount", pa.int64()))
        with pytest.raises(SourceError, match=r"columns \['amount'\] of the plan's schema are not in the source"):
            loader.load(assignment(plan, epoch, catalog=catalog, time_column="ts", schema=missing), tenant_id="t1")
    finally:
        loader.close()


def test_missing_data_file_fails_with_the_readers_message(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, regions=("eu",), rows_per_file=5)
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(1)))
    (epoch,) = plan
    Path(fx.files[0]).unlink()
    loader = Loader(memory_limit_bytes=64 << 20)
    try:
        with pytest.raises(SourceError, match=r"reading the epoch's data files: .*d0000-eu-000\.parquet"):
            loader.load(assignment(plan, epoch, catalog=cpb.Catalog(), time_column="ts"), tenant_id="t1")
        assert loader.inventory() == []
    finally:
        loader.close()


def test_epoch_without_files_is_an_empty_table_of_the_planned_schema(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, regions=("eu",), rows_per_file=5)
    later = (BASE_MS + 10 * DAY_MS, BASE_MS + 11 * DAY_MS)
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", (later,)))
    (epoch,) = plan
    assert epoch.read.files == ()
    loader = Loader(memory_limit_bytes=64 << 20)
    try:
        got = loader.load(assignment(plan, epoch, catalog=cpb.Catalog(), time_column="ts"), tenant_id="t1")
        assert (got.rows, got.schema_fingerprint) == (0, plan.fingerprint)
    finally:
        loader.close()


def test_iceberg_load_respects_the_workers_memory_and_threads(tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, regions=("eu",), parts=2, rows_per_file=150_000)
    plan = IcebergConnector().plan(SourceRequest(fx.uri, fx.namespace, fx.name, "ts", day_windows(1)))
    (epoch,) = plan
    small = Loader(memory_limit_bytes=8 << 20, threads=3)
    try:
        assert small.query("SELECT current_setting('threads'), current_setting('memory_limit')") == [(3, "8.0 MiB")]
        with pytest.raises(Exception, match="(?i)out of memory|memory limit"):
            small.load(assignment(plan, epoch, catalog=cpb.Catalog(), time_column="ts"), tenant_id="t1")
        assert small.inventory() == []
    finally:
        small.close()
    big = Loader(memory_limit_bytes=512 << 20)
    try:
        got = big.load(assignment(plan, epoch, catalog=cpb.Catalog(), time_column="ts"), tenant_id="t1")
        # building the table needs more than 8 MiB (the small loader failed); it is held compressed, in less
        assert got.rows == 300_000 and 0 < got.bytes < 8 << 20
    finally:
        big.close()
