"""The reference worker's pieces that need no network: sizes and the DuckDB loader."""

from __future__ import annotations

import nanoarrow as na
import pytest

from leibrix.domain import _schema
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._loader import Loader, SchemaMismatch, table_name
from leibrix.worker._sizes import format_size, parse_size


@pytest.mark.parametrize(("text", "value"), [
    ("8GiB", 8 * 2**30), ("512MiB", 512 * 2**20), ("1.5GiB", 3 * 2**29), ("1.5k", 1500), ("10", 10),
    ("2 TB", 2 * 10**12), ("64kib", 65536), ("0.5KiB", 512),
])
def test_parse_size_exact(text: str, value: int) -> None:
    assert parse_size(text) == value


@pytest.mark.parametrize(("text", "problem"), [
    ("8XB", "unknown unit 'XB'"), ("-1GiB", "expected a number"), ("", "expected a number"),
    ("0.3B", "not a whole number of bytes"), ("GiB", "expected a number"),
])
def test_parse_size_errors_name_the_problem(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        parse_size(text)


def test_format_size() -> None:
    assert (format_size(8 * 2**30), format_size(1536), format_size(12)) == ("8GiB", "1.5KiB", "12B")


def _assignment(rows: int, plan: str = "p1") -> pb.DataAssignmentEvent:
    a = pb.DataAssignmentEvent(dataset_id="ds", epoch_id="e1", load_plan=pb.LoadPlan(
        plan_id=plan, destination_table_name="ds__e1", expected_rows=rows, tenant_id="t1"))
    part = a.load_plan.resolved_partition
    part.time_column_name = "event_time"
    part.dimension_values["region"] = "eu"
    part.time_range.start_inclusive.FromSeconds(1_700_000_000)
    part.time_range.end_exclusive.FromSeconds(1_700_003_600)
    return a


def test_load_is_measured_deterministic_and_evictable() -> None:
    loader = Loader(memory_limit_bytes=1 << 30)
    try:
        got = loader.load(_assignment(50_000), tenant_id="ignored")
        assert (got.tenant_id, got.rows, got.plan_id) == ("t1", 50_000, "p1")
        assert got.bytes > 50_000  # DuckDB's own accounting, not an echo of the plan
        lo, hi, regions, total = loader.query(
            f"SELECT min(event_time), max(event_time), count(DISTINCT region), sum(value) FROM {table_name('ds', 'e1')}")[0]
        assert lo.timestamp() >= 1_700_000_000 - 86400 and (hi - lo).total_seconds() < 3600 and regions == 1
        # same plan, same rows: a re-sent assignment is idempotent
        again = loader.load(_assignment(50_000), tenant_id="t1")
        assert loader.query("SELECT sum(value) FROM ds__e1")[0][0] == total
        assert again.schema_fingerprint == got.schema_fingerprint
        assert [e.inventory_entry().epoch_id for e in loader.inventory()] == ["e1"]
        assert loader.memory_used_bytes == again.bytes
        assert loader.evict("ds", "e1") and not loader.evict("ds", "e1")
        assert loader.memory_used_bytes == 0 and loader.inventory() == []
    finally:
        loader.close()


def test_load_over_the_memory_limit_fails() -> None:
    loader = Loader(memory_limit_bytes=8 << 20, max_rows=5_000_000)
    try:
        with pytest.raises(Exception, match="(?i)memory"):
            loader.load(_assignment(5_000_000), tenant_id="t1")
        assert loader.inventory() == []
    finally:
        loader.close()


def test_load_checks_the_table_against_the_plans_schema() -> None:
    loader = Loader(memory_limit_bytes=256 << 20)
    try:
        planned = _schema.synthetic("event_time", ["region"])
        a = _assignment(100)
        a.load_plan.arrow_schema = planned.ipc
        assert loader.load(a, tenant_id="t1").schema_fingerprint == planned.fingerprint
        # a plan whose schema the synthetic table cannot match (a real source's, say): FAILED, table dropped
        other = na.struct({"id": na.int64(), "event_time": na.timestamp("ms"), "amount": na.decimal128(12, 2)})
        a.load_plan.arrow_schema = _schema.to_ipc(other)
        with pytest.raises(SchemaMismatch) as info:
            loader.load(a, tenant_id="t1")
        message = str(info.value)
        assert f"loaded schema {planned.fingerprint} ({planned.text})" in message
        assert f"differs from the plan's {_schema.fingerprint(other)} ({_schema.canonical(other)})" in message
        assert loader.inventory() == [] and loader.holds("ds", "e1") is None
        assert loader.query("SELECT count(*) FROM duckdb_tables() WHERE table_name = 'ds__e1'") == [(0,)]
        # bytes that are not an Arrow IPC stream name the plan's field, and nothing is created
        a.load_plan.arrow_schema = b"not arrow"
        with pytest.raises(ValueError, match="^load_plan.arrow_schema: not an Arrow IPC stream"):
            loader.load(a, tenant_id="t1")
        assert loader.query("SELECT count(*) FROM duckdb_tables()") == [(0,)]
    finally:
        loader.close()


def _duckdb_memory(loader: Loader) -> int:
    return int(loader.query("SELECT sum(memory_usage_bytes) FROM duckdb_memory()")[0][0] or 0)


def test_epochs_are_held_compressed_and_measured_as_held() -> None:
    loader = Loader(memory_limit_bytes=1 << 30)
    try:
        empty = _duckdb_memory(loader)
        got = loader.load(_assignment(200_000), tenant_id="t1")
        # every column's segments are compressed (dictionary/FSST strings, bit-packed integers, ALP doubles ...)
        methods = loader.query(f"SELECT DISTINCT segment_type, compression FROM pragma_storage_info('{got.qualified}') "
                               "WHERE segment_type <> 'VALIDITY'")
        assert len(methods) >= 4 and all(method != "Uncompressed" for _, method in methods), methods
        # the bytes reported are what the table holds: DuckDB's memory grew by exactly that much
        held = _duckdb_memory(loader)
        assert got.bytes == held - empty > 0
        # the same rows in an uncompressed in-memory table take several times more
        loader.query(f"CREATE TABLE main.plain AS SELECT * FROM {got.qualified}")
        assert _duckdb_memory(loader) - held > 3 * got.bytes
        loader.query("DROP TABLE main.plain")
        # a reload replaces the table in a database of its own: the old one's memory is released
        again = loader.load(_assignment(200_000), tenant_id="t1")
        assert again.database != got.database and loader.memory_used_bytes == again.bytes
        assert _duckdb_memory(loader) - empty == again.bytes
        assert loader.query(f"SELECT count(*) FROM {again.qualified}") == [(200_000,)]
        # eviction frees the table's memory
        assert loader.evict("ds", "e1")
        assert _duckdb_memory(loader) == empty
    finally:
        loader.close()


def test_a_load_is_compressed_while_queries_read_other_epochs() -> None:
    """A query whose transaction began before the load (and is still open) does not keep it uncompressed."""
    loader = Loader(memory_limit_bytes=1 << 30)
    try:
        first = loader.load(_assignment(1_000, plan="p0"), tenant_id="t1")
        reader = loader.cursor()
        try:
            reader.execute("BEGIN").fetchall()
            assert reader.execute(f"SELECT count(*) FROM {first.qualified}").fetchall() == [(1_000,)]
            second = _assignment(100_000)
            second.epoch_id, second.load_plan.destination_table_name = "e2", "ds__e2"
            got = loader.load(second, tenant_id="t1")
            methods = loader.query(f"SELECT DISTINCT compression FROM pragma_storage_info('{got.qualified}')")
            assert ("Uncompressed",) not in methods
            reader.execute("COMMIT").fetchall()
        finally:
            reader.close()
    finally:
        loader.close()
