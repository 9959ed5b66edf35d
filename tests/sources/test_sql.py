"""The SQL connector against a real PostgreSQL, a real MariaDB and SQLite files."""

from __future__ import annotations

import socket
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from leibrix.domain._errors import InvalidArgument, NotFound, PermissionDenied, Unavailable
from leibrix.sources import Dimension, SourceRequest, SqlConnector
from leibrix.sources._jdbc import parse_jdbc
from leibrix.sources._types import TIME_FIELD
from tests.support.sources import BASE_MS, day_windows

DAYS, HOURS = 5, 24
BASE = datetime(2024, 1, 1)
ROWS = [(i, BASE + timedelta(hours=i // 2), ("eu", "us")[i % 2], float(i), f"note-{i:05d}") for i in range(DAYS * HOURS * 2)]


def _fill(url: str, *, schema: str | None = None, ts_index: bool = False) -> None:
    eng = sa.create_engine(url)
    md = sa.MetaData(schema=schema)
    t = sa.Table("events", md, sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
                 sa.Column("ts", sa.DateTime, nullable=False), sa.Column("region", sa.String(8), nullable=False),
                 sa.Column("value", sa.Double), sa.Column("note", sa.Text))
    with eng.begin() as conn:
        md.drop_all(conn)
        md.create_all(conn)
        conn.execute(t.insert(), [dict(zip(("id", "ts", "region", "value", "note"), r)) for r in ROWS])
        if ts_index:
            conn.execute(sa.text(f"CREATE INDEX events_ts ON {'' if not schema else schema + '.'}events (ts)"))
        if url.startswith("postgresql"):
            conn.execute(sa.text("ANALYZE " + (f"{schema}." if schema else "") + "events"))
        elif url.startswith("mysql"):
            conn.execute(sa.text("ANALYZE TABLE events"))
    eng.dispose()


def _database(server, name: str) -> str:
    eng = sa.create_engine(server.sqlalchemy_url("postgres" if server.kind == "postgresql" else "mysql"),
                           isolation_level="AUTOCOMMIT")
    with eng.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    eng.dispose()
    return name


def _request(uri: str, database: str, **kw) -> SourceRequest:
    kw.setdefault("dimensions", (Dimension("region", ("eu", "us")),))
    return SourceRequest(uri, database, kw.pop("table", "events"), kw.pop("time_column", "ts"),
                         kw.pop("windows", day_windows(3, first=1)), **kw)


def _check_counts(plan) -> None:
    assert len(plan) == 3 * 2
    for epoch in plan:
        assert epoch.rows == HOURS and epoch.rows_exact
    assert [f.name for f in plan.schema] == ["id", "ts", "region", "value", "note"]
    assert plan.schema.field("ts").type == pa.timestamp("us") and plan.schema.field("id").type == pa.int64()
    assert plan.schema.field("region").type == pa.string() and plan.schema.field("value").type == pa.float64()


def test_postgres_plan(postgres) -> None:
    db = _database(postgres, "src_pg")
    _fill(postgres.sqlalchemy_url(db))
    plan = SqlConnector().plan(_request(postgres.jdbc(db), "public"))
    _check_counts(plan)
    assert plan.version is None
    eng = sa.create_engine(postgres.sqlalchemy_url(db))
    with eng.connect() as conn:
        total = conn.execute(sa.text("SELECT pg_total_relation_size('public.events')")).scalar()
        eu = conn.execute(sa.text(plan.epochs[(BASE_MS + 86_400_000, BASE_MS + 2 * 86_400_000, (("region", "eu"),))]
                                  .read.sql()), dict(next(iter(plan)).read.params)).fetchall()
    eng.dispose()
    epoch = next(iter(plan))
    assert epoch.source_bytes == round(total * HOURS / len(ROWS))
    assert epoch.scan_cost_bytes == total  # no index on ts: a query scans the whole table
    assert len(eu) == HOURS and all(r[2] == "eu" for r in eu)  # the planned read selects exactly the epoch
    # avg widths from pg_stats: region 3 bytes, note 11: a row is about 8+8+(4+3)+(8)+(4+11) + bitmaps
    assert 40 * HOURS < epoch.memory_bytes < 52 * HOURS

    _fill(postgres.sqlalchemy_url(db), ts_index=True)
    # recreated with an index on ts: its schema token changed, so the kept reflection is not used
    indexed = SqlConnector().plan(_request(postgres.jdbc(db), "public"))
    assert all(e.scan_cost_bytes == e.source_bytes for e in indexed)


def test_mariadb_plan_and_secret_reference(mariadb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = _database(mariadb, "src_maria")
    _fill(mariadb.sqlalchemy_url(db))
    secret = tmp_path / "pw"
    secret.write_text(mariadb.password + "\n")
    uri = f"jdbc:mariadb://127.0.0.1:{mariadb.port}/{db}?user={mariadb.user}&password=${{file:{secret}}}"
    plan = SqlConnector().plan(_request(uri, db, driver="org.mariadb.jdbc.Driver"))
    _check_counts(plan)
    eng = sa.create_engine(mariadb.sqlalchemy_url(db))
    with eng.connect() as conn:
        data_length = conn.execute(sa.text("SELECT data_length FROM information_schema.tables "
                                           "WHERE table_schema = :s AND table_name = 'events'"), {"s": db}).scalar()
    eng.dispose()
    epoch = next(iter(plan))
    assert 0 < epoch.source_bytes <= data_length and epoch.scan_cost_bytes == data_length
    assert epoch.read.table == f"{db}.events" and "ts >= :t_start" in epoch.read.predicate  # quoted when needed

    monkeypatch.setenv("LEIBRIX_TEST_MARIA_PW", mariadb.password)
    uri = f"jdbc:mysql://{mariadb.user}:${{env:LEIBRIX_TEST_MARIA_PW}}@127.0.0.1:{mariadb.port}/{db}"
    assert [e.rows for e in SqlConnector().plan(_request(uri, db, driver="com.mysql.cj.jdbc.Driver"))] == [HOURS] * 6


def test_sqlite_plan_hourly_windows_and_gaps(tmp_path: Path) -> None:
    path = tmp_path / "src.db"
    _fill(f"sqlite:///{path}")
    windows = ((BASE_MS, BASE_MS + 3_600_000), (BASE_MS + 5 * 3_600_000, BASE_MS + 7 * 3_600_000))
    plan = SqlConnector().plan(_request(f"jdbc:sqlite:{path}", "", windows=windows, dimensions=()))
    assert [e.rows for e in plan] == [2, 4]  # two rows an hour; the gap between windows is not counted
    assert plan.schema.field("id").type == pa.int64()


def test_field_errors_against_real_servers(postgres, mariadb) -> None:
    pg_db = _database(postgres, "src_err")
    _fill(postgres.sqlalchemy_url(pg_db))
    my_db = _database(mariadb, "src_err")
    _fill(mariadb.sqlalchemy_url(my_db))
    for server, database, schema in ((postgres, pg_db, "public"), (mariadb, my_db, my_db)):
        uri = server.jdbc(database)
        plan = SqlConnector().plan
        with pytest.raises(NotFound, match=rf"^source\.table: table {schema}\.nope not found"):
            plan(_request(uri, schema, table="nope"))
        with pytest.raises(InvalidArgument) as e:
            plan(_request(uri, schema, time_column="tss"))
        assert e.value.field == TIME_FIELD and "no column 'tss'" in e.value.message
        with pytest.raises(InvalidArgument) as e:
            plan(_request(uri, schema, time_column="value"))
        assert e.value.field == TIME_FIELD
        with pytest.raises(InvalidArgument) as e:
            plan(_request(uri, schema, time_type="DATE"))
        assert e.value.field == TIME_FIELD
        with pytest.raises(InvalidArgument) as e:
            plan(_request(uri, schema, dimensions=(Dimension("region", ("eu",)), Dimension("country", ("fr",)))))
        assert e.value.field == "source.partition.dimension_partitions[1].column.name"
        with pytest.raises(PermissionDenied) as e:
            plan(_request(server.jdbc(database, password="not-the-password"), schema))
        assert e.value.message.startswith("source.catalog.jdbc.uri:") and "not-the-password" not in e.value.message
        with pytest.raises(NotFound, match=r"^source\.catalog\.jdbc\.uri: .*database not found"):
            plan(_request(server.jdbc("no_such_db"), schema))


def test_unreachable_host_is_unavailable() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for sub in ("postgresql", "mysql"):
        with pytest.raises(Unavailable, match=r"^source\.catalog\.jdbc\.uri: .*unreachable"):
            SqlConnector().plan(_request(f"jdbc:{sub}://127.0.0.1:{port}/db?user=u&password=p", "db"))


def test_jdbc_uri_and_driver_parsing() -> None:
    t = parse_jdbc("jdbc:postgresql://db.example:6432/sales?user=app&password=${env:PW}&sslmode=require",
                   "org.postgresql.Driver")
    assert (t.drivername, t.host, t.port, t.database, t.username, t.password) == \
        ("postgresql+psycopg", "db.example", 6432, "sales", "app", "${env:PW}")
    assert parse_jdbc("jdbc:mysql://h/x").port == 3306 and parse_jdbc("jdbc:mariadb://h:1/x").drivername == "mysql+pymysql"
    assert parse_jdbc("jdbc:sqlite:/data/a.db", "org.sqlite.JDBC").database == "/data/a.db"
    assert "secret" not in repr(parse_jdbc("jdbc:postgresql://u:secret@h/x"))
    with pytest.raises(InvalidArgument) as e:
        parse_jdbc("jdbc:postgresql://h/x", "com.mysql.cj.jdbc.Driver")
    assert e.value.field == "source.catalog.jdbc.driver"
    with pytest.raises(InvalidArgument) as e:
        parse_jdbc("jdbc:oracle:thin:@h:1521:x")
    assert e.value.field == "source.catalog.jdbc.uri"


def test_timestamptz_and_date_time_columns(postgres) -> None:
    db = _database(postgres, "src_tz")
    eng = sa.create_engine(postgres.sqlalchemy_url(db))
    with eng.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (ts timestamptz NOT NULL, d date NOT NULL, n int)"))
        start = datetime(2024, 1, 1, tzinfo=timezone.utc)
        conn.execute(sa.text("INSERT INTO t VALUES (:ts, :d, 1)"),
                     [{"ts": start + timedelta(hours=h), "d": (start + timedelta(hours=h)).date()} for h in range(72)])
    eng.dispose()
    tz = SqlConnector().plan(_request(postgres.jdbc(db), "public", table="t", dimensions=(), windows=day_windows(2)))
    assert tz.schema.field("ts").type == pa.timestamp("us", tz="UTC") and [e.rows for e in tz] == [24, 24]
    d = SqlConnector().plan(_request(postgres.jdbc(db), "public", table="t", time_column="d", dimensions=(),
                                     windows=day_windows(3), time_type="DATE"))
    assert [e.rows for e in d] == [24, 24, 24]


def test_sqlite_missing_table(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    with pytest.raises(NotFound, match=r"^source\.table: table events not found"):
        SqlConnector().plan(_request(f"jdbc:sqlite:{path}", ""))
