"""LoadPlan frames for the Rust leibrix-worker, decoded with the worker's own message layout.

The decoding side is ``tests/support/rust_proto`` compiled at test time, and
each check reads the fields the worker reads (its conversion of a
``data_assignment``), so a field number or type the translation gets wrong
fails here.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._upstream import (
    DEFAULT_CATALOG,
    StarRocksConnection,
    parse_starrocks_dsn,
    split_pool_options,
    upstream_frame,
)
from tests.support.rust_worker import assignment_from, decode

SCHEMA = pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("region", pa.string()), ("amount", pa.float64())])
START_MS, END_MS = 1_793_491_200_000, 1_793_577_600_000


def assignment(**catalog: str) -> pb.EventStreamMessage:
    """Our ``data_assignment`` with every field the worker reads set, its catalog from ``catalog``."""
    (kind, fields), = catalog.items()
    msg = pb.EventStreamMessage(event_id="ev-1", tenant_id="acme", worker_id="w1")
    a = msg.data_assignment
    a.dataset_id, a.epoch_id = "orders", f"{START_MS}_a1b2c3"
    plan = a.load_plan
    plan.plan_id, plan.destination_table_name = "plan-7", f"orders__{START_MS}_a1b2c3"
    plan.arrow_schema = SCHEMA.serialize().to_pybytes()
    plan.expected_rows, plan.expected_bytes, plan.tenant_id = 100, 4096, "acme"  # ours only: skipped by it
    src = plan.source
    getattr(src.catalog, kind).ParseFromString(fields)
    src.database, src.table, src.version = "sales", "orders", "snap-42"
    src.partition.time_partition.column.name = "ts"
    rp = plan.resolved_partition
    rp.time_range.start_inclusive.FromMilliseconds(START_MS)
    rp.time_range.end_exclusive.FromMilliseconds(END_MS)
    rp.time_column_name, rp.time_partition_value = "ts", "2026-11-01"
    rp.dimension_values["region"] = "eu"
    return msg


def starrocks(dsn: str, name: str = "") -> pb.EventStreamMessage:
    return pb.EventStreamMessage(data_assignment=pb.DataAssignmentEvent(load_plan=pb.LoadPlan(source=cpb.DataSource(
        catalog=cpb.Catalog(starrocks=cpb.StarRocksCatalog(dsn=dsn, internal_catalog_name=name))))))


def catalog_bytes(kind: str, **fields: str) -> bytes:
    return getattr(cpb, kind)(**fields).SerializeToString()


def check_plan(a) -> None:
    """Everything but the catalog arrives as the worker reads it."""
    assert (a.dataset_id, a.epoch_id, a.plan_id) == ("orders", f"{START_MS}_a1b2c3", "plan-7")
    assert a.destination_table_name == f"orders__{START_MS}_a1b2c3"
    assert (a.database, a.table, a.version) == ("sales", "orders", "snap-42")
    assert pa.ipc.read_schema(pa.py_buffer(a.arrow_schema)) == SCHEMA
    assert a.time_range_ns == (START_MS * 1_000_000, END_MS * 1_000_000)
    assert (a.time_column_name, a.time_partition_value, a.dimension_values) == ("ts", "2026-11-01", {"region": "eu"})


def test_starrocks_dsn_url_becomes_the_workers_connection_parts() -> None:
    msg = assignment(starrocks=catalog_bytes("StarRocksCatalog", dsn="mysql://etl:p%40ss@fe1.example:9031/mart",
                                             internal_catalog_name="hive_cat"))
    a = assignment_from(decode(upstream_frame(msg)).data_assignment)
    assert a.catalog_kind == "starrocks"
    assert a.catalog == {"catalog_name": "hive_cat", "host": "fe1.example", "port": 9031, "database": "mart",
                         "username": "etl", "password": "p@ss", "max_concurrency": 0, "pool_options": None}
    check_plan(a)
    # the envelope is kept
    rust = decode(upstream_frame(msg))
    assert (rust.event_id, rust.tenant_id, rust.worker_id) == ("ev-1", "acme", "w1")


def test_unchanged_our_starrocks_catalog_would_be_misread_by_the_worker() -> None:
    """Why the translation exists: the same field numbers mean other things in the worker's layout."""
    msg = assignment(starrocks=catalog_bytes("StarRocksCatalog", dsn="fe1:9030", internal_catalog_name="cat"))
    raw = assignment_from(decode(msg.SerializeToString()).data_assignment)
    assert (raw.catalog["catalog_name"], raw.catalog["host"], raw.catalog["port"]) == ("fe1:9030", "cat", 0)
    fixed = assignment_from(decode(upstream_frame(msg)).data_assignment)
    assert (fixed.catalog["catalog_name"], fixed.catalog["host"], fixed.catalog["port"]) == ("cat", "fe1", 9030)


def test_go_driver_dsn_with_pool_options_and_defaults() -> None:
    dsn = "root:s3cr@t@tcp(10.0.0.7:9030)/?max_concurrency=8&max_connections=4&connect_timeout_ms=0&charset=utf8"
    msg = assignment(starrocks=catalog_bytes("StarRocksCatalog", dsn=dsn))
    a = assignment_from(decode(upstream_frame(msg)).data_assignment)
    assert a.catalog == {
        "catalog_name": DEFAULT_CATALOG, "host": "10.0.0.7", "port": 9030,
        "database": "sales",  # the DSN names none: the source's database
        "username": "root", "password": "s3cr@t", "max_concurrency": 8,
        # optional fields: a zero that was set is present
        "pool_options": {"max_connections": 4, "connect_timeout_ms": 0},
    }
    check_plan(a)


def test_iceberg_is_sent_as_it_is() -> None:
    msg = assignment(iceberg=catalog_bytes("IcebergCatalog", uri="http://rest:8181"))
    frame = upstream_frame(msg)
    assert frame == msg.SerializeToString()
    a = assignment_from(decode(frame).data_assignment)
    assert (a.catalog_kind, a.catalog) == ("iceberg", {"uri": "http://rest:8181"})
    check_plan(a)


def test_jdbc_without_pool_options_is_sent_as_it_is() -> None:
    msg = assignment(jdbc=catalog_bytes("JdbcCatalog", uri="postgresql://u@db:5432/app?sslmode=disable",
                                        driver="postgresql"))
    frame = upstream_frame(msg)
    assert frame == msg.SerializeToString()
    a = assignment_from(decode(frame).data_assignment)
    assert a.catalog == {"uri": "postgresql://u@db:5432/app?sslmode=disable", "driver": "postgresql",
                         "pool_options": None}
    check_plan(a)


def test_jdbc_pool_options_move_from_the_uri_into_the_workers_field() -> None:
    uri = "jdbc:mysql://db:3306/app?useSSL=false&max_connections=12&min_connections=2&idle_timeout_ms=60000&batch_size=500"
    msg = assignment(jdbc=catalog_bytes("JdbcCatalog", uri=uri, driver="mysql"))
    a = assignment_from(decode(upstream_frame(msg)).data_assignment)
    assert a.catalog == {
        "uri": "jdbc:mysql://db:3306/app?useSSL=false", "driver": "mysql",
        "pool_options": {"max_connections": 12, "min_connections": 2, "idle_timeout_ms": 60000, "batch_size": 500},
    }
    check_plan(a)


def test_other_messages_and_betterproto_input_pass_through() -> None:
    ack = pb.EventStreamMessage(event_id="e")
    ack.common_ack.event_type = "registration_ack"
    ack.common_ack.payload.update({"heartbeat_interval_s": 3.0})
    assert upstream_frame(ack) == ack.SerializeToString()
    assert decode(upstream_frame(ack)).common_ack.event_type == "registration_ack"
    ours = cp.EventStreamMessage(data_assignment=cp.DataAssignmentEvent(
        dataset_id="d", epoch_id="e", load_plan=cp.LoadPlan(plan_id="p", source=cp.DataSource(
            catalog=cp.Catalog(starrocks=cp.StarRocksCatalog(dsn="fe:9030", internal_catalog_name="c"))))))
    a = assignment_from(decode(upstream_frame(ours)).data_assignment)
    assert (a.plan_id, a.catalog["catalog_name"], a.catalog["host"], a.catalog["port"]) == ("p", "c", "fe", 9030)


@pytest.mark.parametrize(("dsn", "parsed"), [
    ("fe1", StarRocksConnection("fe1")),
    ("fe1:9031", StarRocksConnection("fe1", 9031)),
    ("[::1]:9030", StarRocksConnection("::1", 9030)),
    ("etl@fe1:9030/mart", StarRocksConnection("fe1", 9030, "mart", "etl")),
    ("mysql://etl:pw@fe1/mart", StarRocksConnection("fe1", 9030, "mart", "etl", "pw")),
    ("jdbc:mysql://etl:pw@fe1:9030/mart", StarRocksConnection("fe1", 9030, "mart", "etl", "pw")),
    ("starrocks://fe1:9030?max_concurrency=3", StarRocksConnection("fe1", 9030, max_concurrency=3)),
    ("etl:pw@tcp([fd00::1]:9031)/mart", StarRocksConnection("fd00::1", 9031, "mart", "etl", "pw")),
    ("etl@tcp(fe1)/mart?min_connections=1", StarRocksConnection("fe1", 9030, "mart", "etl",
                                                                 pool={"min_connections": 1})),
])
def test_dsn_forms(dsn: str, parsed: StarRocksConnection) -> None:
    assert parse_starrocks_dsn(dsn) == parsed


@pytest.mark.parametrize(("dsn", "error"), [
    ("", "empty"),
    ("  ", "empty"),
    ("mysql://etl:topsecret@fe1:70000/mart", "port"),
    ("mysql://etl:topsecret@fe1:http/mart", "port"),
    ("mysql://etl:topsecret@:9030/mart", "no host"),
    ("etl:topsecret@tcp(fe1:x)/mart", "port"),
    ("fe1?max_concurrency=-1", "max_concurrency"),
    ("fe1?max_concurrency=3000000000", "max_concurrency"),
    ("fe1?max_connections=many", "max_connections"),
])
def test_bad_dsns_are_refused_without_showing_the_password(dsn: str, error: str) -> None:
    with pytest.raises(ValueError, match=error) as info:
        parse_starrocks_dsn(dsn)
    assert "topsecret" not in str(info.value)
    with pytest.raises(ValueError):
        upstream_frame(starrocks(dsn))


def test_split_pool_options_keeps_the_rest_of_the_uri_as_written() -> None:
    assert split_pool_options("pg://h/db?a=%20x&max_lifetime_ms=5#frag") == ("pg://h/db?a=%20x#frag",
                                                                              {"max_lifetime_ms": 5})
    assert split_pool_options("pg://h/db?max_connections=2") == ("pg://h/db", {"max_connections": 2})
    assert split_pool_options("pg://h/db?a=b") == ("pg://h/db?a=b", {})
    with pytest.raises(ValueError, match="batch_size"):
        split_pool_options("pg://h/db?batch_size=-3")
