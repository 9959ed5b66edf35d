"""``leibrix.domain._schema``: canonical text, fingerprint, IPC bytes, and the synthetic source's table."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import duckdb
import nanoarrow as na
import pytest

from leibrix.domain import _schema
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._loader import Loader


def _duckdb_schema(con: duckdb.DuckDBPyConnection, table: str) -> na.Schema:
    with na.ArrayStream(con.sql(f"SELECT * FROM {table} LIMIT 0")) as stream:
        return stream.schema


def test_canonical_text_of_a_real_duckdb_table_spells_every_type_exactly() -> None:
    con = duckdb.connect()
    try:
        con.execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        con.execute("""CREATE TABLE t (a BOOLEAN, b UTINYINT, c BIGINT, d DOUBLE, e DECIMAL(18, 3), f VARCHAR,
            g BLOB, h DATE, i TIME, j TIMESTAMP, k TIMESTAMP_NS, l TIMESTAMPTZ, m INTEGER[],
            n STRUCT(p INTEGER, "q r" VARCHAR), o MAP(VARCHAR, DOUBLE), p mood, q INTEGER[3],
            "we, ird: name" HUGEINT)""")
        text = _schema.canonical(_duckdb_schema(con, "t"))
    finally:
        con.close()
    assert text == (
        '"a": bool, "b": uint8, "c": int64, "d": double, "e": decimal128(18, 3), "f": string, "g": binary, '
        '"h": date32[day], "i": time64[us], "j": timestamp[us], "k": timestamp[ns], '
        '"l": timestamp[us, tz="Etc/UTC"], "m": list<int32>, "n": struct<"p": int32, "q r": string>, '
        '"o": map<string, double>, "p": dictionary<values=string, indices=uint8>, "q": fixed_size_list<int32>[3], '
        '"we, ird: name": decimal128(38, 0)')


def test_canonical_text_ignores_nullability_and_metadata_but_not_names_types_or_order() -> None:
    base = na.struct({"id": na.int64(), "ts": na.timestamp("us")})
    same = [
        na.struct({"id": na.int64(nullable=False), "ts": na.timestamp("us", nullable=False)}, nullable=False),
        na.Schema(base, metadata={"origin": "catalog"}),
    ]
    different = [
        na.struct({"ts": na.timestamp("us"), "id": na.int64()}),  # order
        na.struct({"ID": na.int64(), "ts": na.timestamp("us")}),  # name (case counts in the text)
        na.struct({"id": na.int32(), "ts": na.timestamp("us")}),  # width
        na.struct({"id": na.int64(), "ts": na.timestamp("ms")}),  # unit
        na.struct({"id": na.int64(), "ts": na.timestamp("us", "UTC")}),  # timezone
        na.struct({"id": na.int64(), "ts": na.timestamp("us"), "x": na.string()}),  # extra column
        na.struct({"id": na.int64(), "ts": na.Schema(na.timestamp("us"),
                                                     metadata={"ARROW:extension:name": "my.ts"})}),  # extension
    ]
    fp = _schema.fingerprint(base)
    assert all(_schema.fingerprint(s) == fp for s in same)
    assert len({_schema.fingerprint(s) for s in different} | {fp}) == len(different) + 1


def test_quoted_names_keep_the_text_unambiguous() -> None:
    # nanoarrow's own repr prints both as "x: int64, y: string"; the canonical texts differ
    one = na.struct({"x: int64, y": na.string()})
    two = na.struct({"x": na.int64(), "y": na.string()})
    assert _schema.canonical(one) == '"x: int64, y": string'
    assert _schema.fingerprint(one) != _schema.fingerprint(two)


def test_canonical_rejects_a_schema_that_is_not_a_table() -> None:
    with pytest.raises(ValueError, match="struct of columns, got Arrow format 'l'"):
        _schema.canonical(na.int64())


def test_fingerprint_is_the_short_sha256_of_the_text_and_stable_across_processes() -> None:
    table = _schema.synthetic("ts", ["region"])
    assert table.fingerprint == hashlib.sha256(table.text.encode()).hexdigest()[:16]
    assert _schema.fingerprint(na.struct({c.name: c.arrow for c in table.columns})) \
        == table.fingerprint
    code = "from leibrix.domain import _schema; print(_schema.synthetic('ts', ['region']).fingerprint)"
    other = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert other == table.fingerprint
    # stored DatasetRecords and workers of other versions (or languages) must agree on the value: pin the
    # text it hashes, so a change of the canonical rules cannot pass unnoticed
    pinned = '"id": int64, "ts": timestamp[us], "key": string, "value": double, "region": string'
    assert table.fingerprint == hashlib.sha256(pinned.encode()).hexdigest()[:16]
    assert _schema.known(table.fingerprint) == table.text
    assert _schema.known("0000000000000000") is None


def test_ipc_round_trip_is_a_schema_only_arrow_stream() -> None:
    schema = na.struct({"id": na.int64(), "ts": na.timestamp("ns", "UTC"), "d": na.decimal128(10, 2),
                        "l": na.list_(na.string())})
    data = _schema.to_ipc(schema)
    # IPC stream: continuation marker + schema message ... end-of-stream marker (0xFFFFFFFF, length 0)
    assert data[:4] == b"\xff\xff\xff\xff" and data[-8:] == b"\xff\xff\xff\xff\x00\x00\x00\x00"
    back = _schema.from_ipc(data)
    assert _schema.canonical(back) == _schema.canonical(schema)
    with na.ArrayStream.from_readable(data) as stream:
        assert len(stream.read_all()) == 0  # no record batches


@pytest.mark.parametrize("data", [b"", b"not arrow", b"\xff\xff\xff\xff\x10\x00\x00\x00garbage-garbage!"])
def test_from_ipc_rejects_bytes_that_are_not_an_arrow_stream(data: bytes) -> None:
    with pytest.raises(ValueError, match=f"not an Arrow IPC stream with a schema \\({len(data)} bytes\\)"):
        _schema.from_ipc(data)


def test_synthetic_table_shape_and_order() -> None:
    table = _schema.synthetic("event_time", ["region", "device"])
    assert [(c.name, c.role, c.sql_type) for c in table.columns] == [
        ("id", "id", "BIGINT"), ("event_time", "time", "TIMESTAMP"), ("key", "key", "VARCHAR"),
        ("value", "value", "DOUBLE"), ("device", "dimension", "VARCHAR"), ("region", "dimension", "VARCHAR")]
    assert table.text == ('"id": int64, "event_time": timestamp[us], "key": string, "value": double, '
                          '"device": string, "region": string')
    # the request's dimension order does not matter; the cache hands back the same object
    assert _schema.synthetic("event_time", ("device", "region")) is table
    assert _schema.synthetic("", []).columns[1].name == _schema.DEFAULT_TIME_COLUMN
    assert _schema.canonical(_schema.from_ipc(table.ipc)) == table.text


@pytest.mark.parametrize(("time_column", "dims", "column", "taken_by"), [
    ("ID", [], "ID", "id"), ("ts", ["Key"], "Key", "key"), ("ts", ["TS"], "TS", "ts"),
    ("ts", ["Region", "region"], "region", "Region"),
])
def test_synthetic_column_names_must_differ_ignoring_case(time_column: str, dims: list[str], column: str,
                                                          taken_by: str) -> None:
    with pytest.raises(_schema.ColumnConflict, match="case-insensitive") as info:
        _schema.synthetic(time_column, dims)
    assert (info.value.column, info.value.taken_by) == (column, taken_by)


def test_duckdb_table_built_by_the_loader_has_the_synthetic_schema() -> None:
    loader = Loader(memory_limit_bytes=256 << 20)
    try:
        a = pb.DataAssignmentEvent(dataset_id="ds", epoch_id="e1", load_plan=pb.LoadPlan(
            plan_id="p1", destination_table_name="ds__e1", expected_rows=10))
        part = a.load_plan.resolved_partition
        part.time_column_name = "event_time"
        part.dimension_values.update({"region": "eu", "device": "phone"})
        loaded = loader.load(a, tenant_id="t1")
        table = _schema.synthetic("event_time", ["region", "device"])
        assert loaded.schema_fingerprint == table.fingerprint
        # the measured schema, independently of the loader's own measurement
        assert [(r[0], r[1]) for r in loader.query("DESCRIBE ds__e1")] == [
            (c.name, c.sql_type) for c in table.columns]
    finally:
        loader.close()
