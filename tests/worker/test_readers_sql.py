"""The loader reads SQL epochs (real PostgreSQL, real MariaDB, SQLite files) with timestamp, date and epoch-ms time columns."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa

from leibrix.domain import _schema
from leibrix.sources import Dimension, SourceRequest, SqlConnector
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.worker._loader import Loader, SourceError
from tests.support import databases
from tests.support.sources import BASE_MS, DAY_MS, day_windows
from tests.worker.test_readers_iceberg import assignment

DAYS = 3
BASE = datetime(2024, 1, 1)
#: (id, hour offset, region, value, amount, note, n): 4 rows an hour for 3 days, both regions
ROWS = [(i, i // 4, ("eu", "us")[i % 2], i * 0.5, Decimal(i) / 4, None if i % 5 == 0 else f"note-{i}", i % 1000 - 500)
        for i in range(DAYS * 24 * 4)]


@pytest.fixture(scope="module")
def postgres() -> Iterator[databases.Server]:
    with databases.running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def mariadb() -> Iterator[databases.Server]:
    with databases.running_mariadb() as server:
        yield server


def _time_value(kind: str, hours: int):
    t = BASE + timedelta(hours=hours)
    if kind == "timestamp":
        return t
    if kind == "date":
        return t.date()
    return int(t.replace(tzinfo=timezone.utc).timestamp() * 1000)


def fill(url: str, kind: str, table: str = "ev", rows=ROWS) -> None:
    """``table`` with the rows of ``ROWS``, its ``t`` column a timestamp, a date or epoch milliseconds."""
    time_type = {"timestamp": sa.DateTime, "date": sa.Date, "int": sa.BigInteger}[kind]
    eng = sa.create_engine(url)
    md = sa.MetaData()
    t = sa.Table(table, md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                 sa.Column("t", time_type, nullable=False), sa.Column("region", sa.String(8), nullable=False),
                 sa.Column("value", sa.Double), sa.Column("amount", sa.Numeric(12, 2)), sa.Column("note", sa.Text),
                 sa.Column("n", sa.Integer))
    with eng.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(t.insert(), [dict(id=i, t=_time_value(kind, h), region=r, value=v, amount=a, note=note, n=n)
                                  for i, h, r, v, a, note, n in rows])
    eng.dispose()


def expected(kind: str, start_ms: int, region: str) -> list[tuple]:
    """The source rows of one day epoch, computed from ``ROWS`` (not from the database)."""
    day = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc).replace(tzinfo=None)
    return [(i, _time_value(kind, h), r, v, a, note, n) for i, h, r, v, a, note, n in ROWS
            if r == region and day <= BASE + timedelta(hours=h) < day + timedelta(days=1)]


def _database(server, name: str) -> str:
    eng = sa.create_engine(server.sqlalchemy_url("postgres" if server.kind == "postgresql" else "mysql"),
                           isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return name


def _source(request, db: str, tmp_path: Path) -> tuple[str, str, str]:
    """(JDBC URI, SQLAlchemy URL, schema) of a fresh database on the server ``db`` names."""
    if db == "sqlite":
        path = tmp_path / "src.db"
        return f"jdbc:sqlite:{path}", f"sqlite:///{path}", ""
    server = request.getfixturevalue(db)
    name = _database(server, f"ld_{db}")
    return server.jdbc(name), server.sqlalchemy_url(name), "public" if db == "postgres" else name


def _check_epochs(loader: Loader, plan, jdbc: str, kind: str) -> None:
    catalog = cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=jdbc))
    total = 0
    for epoch in plan:
        got = loader.load(assignment(plan, epoch, catalog=catalog, time_column="t"), tenant_id="t1")
        rows = loader.query(f"SELECT * FROM {got.qualified} ORDER BY id")
        want = expected(kind, epoch.start_ms, epoch.dims[0][1])
        assert len(want) == 48 and got.rows == epoch.rows == len(want)
        assert rows == want  # row for row: ids, times, strings, doubles, decimals, nulls
        assert got.schema_fingerprint == plan.fingerprint and got.bytes > 0
        total += got.rows
    assert total == len(ROWS)


@pytest.mark.parametrize("kind", ["timestamp", "date", "int"])
@pytest.mark.parametrize("db", ["postgres", "mariadb", "sqlite"])
def test_sql_epochs_load_exactly_the_source_rows(request, tmp_path: Path, db: str, kind: str) -> None:
    jdbc, url, schema = _source(request, db, tmp_path)
    fill(url, kind)
    plan = SqlConnector().plan(SourceRequest(jdbc, schema, "ev", "t", day_windows(DAYS),
                                             (Dimension("region", ("eu", "us")),)))
    assert [f.name for f in plan.schema] == ["id", "t", "region", "value", "amount", "note", "n"]
    loader = Loader(memory_limit_bytes=256 << 20, threads=2, batch_rows=20)
    try:
        _check_epochs(loader, plan, jdbc, kind)
        # the loaded table's Arrow types are the planned ones (int32 n, decimal128(12, 2) amount, ...)
        (first,) = [t for t in loader.inventory() if t.epoch_id.startswith(f"{BASE_MS}_eu")]
        assert first.schema_fingerprint == _schema.fingerprint(plan.schema)
    finally:
        loader.close()


def test_sql_progress_counts_rows_batch_by_batch(tmp_path: Path) -> None:
    path = tmp_path / "src.db"
    fill(f"sqlite:///{path}", "timestamp")
    plan = SqlConnector().plan(SourceRequest(f"jdbc:sqlite:{path}", "", "ev", "t", day_windows(1)))
    (epoch,) = plan
    seen: list[int] = []
    loader = Loader(memory_limit_bytes=64 << 20, batch_rows=25)
    try:
        got = loader.load(assignment(plan, epoch, catalog=cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=f"jdbc:sqlite:{path}")),
                                     time_column="t"), tenant_id="t1", progress=seen.append)
        assert got.rows == 96
        assert seen == [25, 50, 75, 96, 96]  # after each batch, then the measured count
    finally:
        loader.close()


def test_sql_source_error_fails_with_the_drivers_message_and_no_secret(postgres, tmp_path: Path, monkeypatch) -> None:
    name = _database(postgres, "ld_err")
    fill(postgres.sqlalchemy_url(name), "timestamp")
    jdbc = postgres.jdbc(name)
    plan = SqlConnector().plan(SourceRequest(jdbc, "public", "ev", "t", day_windows(1)))
    (epoch,) = plan
    monkeypatch.setenv("LEIBRIX_TEST_PG_PW", postgres.password)
    by_reference = jdbc.replace(f"password={postgres.password}", "password=${env:LEIBRIX_TEST_PG_PW}")
    assert by_reference != jdbc
    loader = Loader(memory_limit_bytes=64 << 20)
    try:
        ok = loader.load(assignment(plan, epoch, catalog=cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=by_reference)),
                                    time_column="t"), tenant_id="t1")
        assert ok.rows == 96
        eng = sa.create_engine(postgres.sqlalchemy_url(name))
        with eng.begin() as conn:
            conn.execute(sa.text("DROP TABLE ev"))
        eng.dispose()
        for uri in (jdbc, by_reference):
            a = assignment(plan, epoch, catalog=cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=uri)), time_column="t",
                           dataset="gone")
            with pytest.raises(SourceError, match=r'relation "public\.ev" does not exist') as info:
                loader.load(a, tenant_id="t1")
            assert postgres.password not in str(info.value) and "password=***" in str(info.value)
        wrong = jdbc.replace(f"password={postgres.password}", "password=not-the-pw")
        with pytest.raises(SourceError, match="password authentication failed") as info:
            loader.load(assignment(plan, epoch, catalog=cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=wrong)),
                                   time_column="t", dataset="gone"), tenant_id="t1")
        assert "not-the-pw" not in str(info.value)
        assert [t.dataset_id for t in loader.inventory()] == ["ds"]  # failed loads leave nothing behind
    finally:
        loader.close()


def test_sql_dimension_and_empty_epoch(tmp_path: Path) -> None:
    path = tmp_path / "src.db"
    fill(f"sqlite:///{path}", "date")
    later = (BASE_MS + 30 * DAY_MS, BASE_MS + 31 * DAY_MS)
    plan = SqlConnector().plan(SourceRequest(f"jdbc:sqlite:{path}", "", "ev", "t", (later,),
                                             (Dimension("region", ("eu",)),)))
    (epoch,) = plan
    loader = Loader(memory_limit_bytes=64 << 20)
    try:
        got = loader.load(assignment(plan, epoch, catalog=cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=f"jdbc:sqlite:{path}")),
                                     time_column="t"), tenant_id="t1")
        assert (got.rows, got.schema_fingerprint) == (0, plan.fingerprint)
        assert loader.query(f"SELECT count(*) FROM {got.qualified}") == [(0,)]
        assert date(2024, 1, 31) == datetime.fromtimestamp(later[0] / 1000, tz=timezone.utc).date()
    finally:
        loader.close()


def test_sql_error_in_a_later_batch_fails_the_load_with_its_message(tmp_path: Path) -> None:
    """A value that does not fit its planned column, in the 4th batch, after DuckDB has taken three: FAILED, no table."""
    path = tmp_path / "src.db"
    fill(f"sqlite:///{path}", "timestamp")
    plan = SqlConnector().plan(SourceRequest(f"jdbc:sqlite:{path}", "", "ev", "t", day_windows(1)))
    (epoch,) = plan
    eng = sa.create_engine(f"sqlite:///{path}")
    with eng.begin() as conn:  # SQLite keeps whatever it is given, even text in an INTEGER column
        conn.execute(sa.text("UPDATE ev SET n = 'oops' WHERE id = 90"))
    eng.dispose()
    seen: list[int] = []
    loader = Loader(memory_limit_bytes=64 << 20, batch_rows=25)
    try:
        a = assignment(plan, epoch, catalog=cpb.Catalog(jdbc=cpb.JdbcCatalog(uri=f"jdbc:sqlite:{path}")), time_column="t")
        with pytest.raises(SourceError, match=r"^source\.catalog\.jdbc\.uri: jdbc:sqlite:.*src\.db: .*oops"):
            loader.load(a, tenant_id="t1", progress=seen.append)
        assert seen == [25, 50, 75] and loader.inventory() == []
        assert loader.query("SELECT count(*) FROM duckdb_tables()") == [(0,)]
    finally:
        loader.close()


def test_starrocks_catalog_reads_over_the_mysql_protocol(mariadb, monkeypatch) -> None:
    """A StarRocks DSN (Go driver form, password by reference) served by a MySQL-protocol server: MariaDB here."""
    name = _database(mariadb, "ld_sr")
    fill(mariadb.sqlalchemy_url(name), "timestamp")
    plan = SqlConnector().plan(SourceRequest(mariadb.jdbc(name), name, "ev", "t", day_windows(1, first=2),
                                             (Dimension("region", ("us",)),)))
    (epoch,) = plan
    monkeypatch.setenv("LEIBRIX_TEST_SR_PW", mariadb.password)
    dsn = f"{mariadb.user}:${{env:LEIBRIX_TEST_SR_PW}}@tcp({mariadb.host}:{mariadb.port})/{name}"
    catalog = cpb.Catalog(starrocks=cpb.StarRocksCatalog(dsn=dsn, internal_catalog_name="default_catalog"))
    loader = Loader(memory_limit_bytes=64 << 20)
    try:
        got = loader.load(assignment(plan, epoch, catalog=catalog, time_column="t"), tenant_id="t1")
        assert loader.query(f"SELECT * FROM {got.qualified} ORDER BY id") == expected("timestamp", epoch.start_ms, "us")
        assert got.rows == 48 and got.schema_fingerprint == plan.fingerprint
        monkeypatch.setenv("LEIBRIX_TEST_SR_PW", "wrong-password")
        with pytest.raises(SourceError, match=r"source\.catalog\.starrocks\.dsn: .*Access denied") as info:
            loader.load(assignment(plan, epoch, catalog=catalog, time_column="t", dataset="x"), tenant_id="t1")
        assert "wrong-password" not in str(info.value) and mariadb.password not in str(info.value)
    finally:
        loader.close()


def test_sql_parameters_travel_the_wire_with_their_types() -> None:
    from leibrix.sources._types import EpochPlan, SqlRead
    from leibrix.sources._wire import read_plan
    from leibrix.sources._readers import sql_params

    values = {"b": True, "i": -5, "r": 2.5, "ts": datetime(2024, 1, 2, 3, 4, 5, 678901), "d": date(2024, 1, 2),
              "s": "it's"}
    rp = read_plan(EpochPlan(0, 1, (), SqlRead('"t"', ('"a"',), '"a" = :i', values), 1, False, 0, 0, 0))
    assert rp.sql.query == 'SELECT "a" FROM "t" WHERE "a" = :i' and not rp.rows_exact
    assert [p.WhichOneof("value") for p in rp.sql.params] == ["boolean", "integer", "real", "timestamp", "date", "text"]
    assert sql_params(rp.sql) == values
    assert sql_params(rp.sql, aware=True)["ts"] == values["ts"].replace(tzinfo=timezone.utc)
