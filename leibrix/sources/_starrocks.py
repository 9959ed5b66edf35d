"""StarRocks over its MySQL protocol (PyMySQL): the SQL connector plus StarRocks' own partition metadata.

DSN (``StarRocksCatalog.dsn``), any of:

* the Go MySQL driver's form the upstream master used: ``user:password@tcp(host:9030)/db``;
* a URL: ``mysql://user:password@host:9030/db`` (``starrocks://`` is accepted too);
* a JDBC URI: ``jdbc:mysql://host:9030/db?user=..&password=..``.

The password may be a ``${env:NAME}``/``${file:/path}`` reference.
``internal_catalog_name`` other than ``default_catalog`` is selected with
``SET CATALOG`` before anything else.

What StarRocks adds to the generic path (:class:`leibrix.sources._sql.SqlConnector`):
``SHOW PARTITIONS FROM db.tbl`` (documented for OLAP tables: ``PartitionId``,
``PartitionName``, ``VisibleVersion``, ``Range`` as
``[types: [DATE]; keys: [2019-01-01]; ..types: [DATE]; keys: [2020-01-01]; )``,
``DataSize`` as ``4KB``/``1.5 GB``/``0B``, ``RowCount``) gives each range
partition's time range, size and row count. Then:

* ``source_bytes`` of an epoch = its counted rows × the bytes per row of the
  partitions overlapping its window (their share inside the window);
* ``scan_cost_bytes`` = the whole size of those partitions (StarRocks prunes
  partitions, not rows);
* ``version`` = ``v`` + the first 16 hex digits of the sha256 of the sorted
  ``PartitionName:VisibleVersion`` pairs: it changes with every load into any
  partition and with partitions added or dropped.

Rows are still counted by the generic grouped ``COUNT`` (exact; StarRocks
answers it from its columnar storage). When ``SHOW PARTITIONS`` fails
(not StarRocks, a non-OLAP table, no privilege) or shows no range partitions,
the connector falls back to the generic ``information_schema.tables`` + ``COUNT``
path unchanged.

Not run against a real StarRocks (none can be installed where this was
written): ``SHOW PARTITIONS`` itself, ``SET CATALOG``, and StarRocks'
``information_schema.tables`` sizes. The parsing of ``SHOW PARTITIONS`` rows is
tested on rows shaped as StarRocks documents them; the generic path (what the
connector falls back to) is tested against a real MariaDB.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from urllib.parse import parse_qsl, unquote, urlsplit

from leibrix.domain._errors import InvalidArgument
from leibrix.sources import _jdbc, _secrets
from leibrix.sources._sql import Partition, SqlConnector
from leibrix.sources._types import SourceRequest

__all__ = ["StarRocksConnector", "parse_data_size", "parse_dsn", "parse_partitions", "parse_range"]

_FIELD = "source.catalog.starrocks.dsn"
_GO_DSN = re.compile(r"^(?:(?P<user>[^:@]*)(?::(?P<pw>.*))?@)?(?:tcp)?\((?P<addr>[^)]*)\)/(?P<db>[^?]*)(?:\?(?P<q>.*))?$")
_SIZE = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([KMGTP]?I?B?)\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40, "P": 1 << 50}
_KEYS = re.compile(r"keys:\s*\[([^\]]*)\]")


def parse_dsn(dsn: str) -> _jdbc.JdbcTarget:
    """A StarRocks DSN (any form in the module docstring) as a ``mysql+pymysql`` target, secrets unresolved.

    Raises
    ------
    InvalidArgument
        Naming ``source.catalog.starrocks.dsn`` when the DSN has none of the forms.
    """
    shown = _secrets.redact(dsn)
    if dsn.startswith("jdbc:"):
        t = _jdbc.parse_jdbc(dsn, field=_FIELD)
        if t.drivername != "mysql+pymysql":
            raise InvalidArgument(_FIELD, f"{shown!r}: StarRocks speaks the MySQL protocol (jdbc:mysql://...)")
        return t
    m = _GO_DSN.match(dsn)
    if m and "://" not in dsn:
        host, _, port = m.group("addr").rpartition(":") if ":" in m.group("addr") else (m.group("addr"), "", "")
        return _jdbc.JdbcTarget("mysql+pymysql", host or "127.0.0.1", int(port) if port.isdigit() else 9030,
                                m.group("db") or None, m.group("user") or None, m.group("pw"),
                                tuple(parse_qsl(m.group("q") or "")), _FIELD, shown)
    if dsn.startswith(("mysql://", "starrocks://", "mysql+pymysql://")):
        parts = urlsplit(dsn)
        return _jdbc.JdbcTarget("mysql+pymysql", parts.hostname, parts.port or 9030, parts.path.lstrip("/") or None,
                                unquote(parts.username) if parts.username else None,
                                unquote(parts.password) if parts.password else None,
                                tuple(parse_qsl(parts.query)), _FIELD, shown)
    raise InvalidArgument(_FIELD, f"{shown!r} is not a StarRocks DSN: use user:password@tcp(host:port)/db, "
                                  "mysql://user:password@host:port/db or jdbc:mysql://host:port/db")


def parse_data_size(text: str) -> int:
    """``DataSize`` of ``SHOW PARTITIONS`` (``4KB``, ``1.500 GB``, ``0B``, ``123``) in bytes (binary units)."""
    m = _SIZE.match(str(text))
    if not m:
        raise ValueError(f"unrecognised DataSize {text!r}")
    unit = m.group(2).upper().rstrip("B").rstrip("I")
    return int(float(m.group(1)) * _UNITS[unit])


def _key_ms(text: str) -> int | None:
    first = text.split(",")[0].strip().strip("'\"")
    for fmt in ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d"):
        try:
            dt = datetime.strptime(first, fmt)
        except ValueError:
            continue
        if dt.year <= 1 or dt.year >= 9999:  # StarRocks' MIN/MAX sentinels
            return None
        return int(dt.replace(tzinfo=timezone.utc).timestamp() * 1000)
    return None


def parse_range(text: str) -> tuple[int | None, int | None]:
    """A ``Range`` cell as ``(start_ms, end_ms)`` of its first key column (``None``: unbounded or not a time)."""
    keys = _KEYS.findall(text or "")
    if len(keys) != 2:
        return None, None
    return _key_ms(keys[0]), _key_ms(keys[1])


def parse_partitions(rows: list[dict]) -> list[Partition]:
    """``SHOW PARTITIONS`` rows (dicts keyed by the documented column names) as partitions with a time range.

    Rows whose ``Range`` is not a time range (list partitions, unpartitioned
    tables' single partition) are left out.
    """
    out = []
    for r in rows:
        start, end = parse_range(str(r.get("Range") or ""))
        if start is None or end is None or end <= start:
            continue
        out.append(Partition(str(r.get("PartitionName")), start, end, parse_data_size(str(r.get("DataSize") or "0")),
                             int(r.get("RowCount") or 0), int(r.get("VisibleVersion") or 0)))
    return out


class StarRocksConnector(SqlConnector):
    """The SQL connector reading sizes and a version from ``SHOW PARTITIONS`` (see the module docstring)."""

    uri_field = _FIELD
    #: ``SET CATALOG`` is session state: a connection of its own per plan, never one from a shared pool.
    pooled = False

    def target(self, request: SourceRequest) -> _jdbc.JdbcTarget:
        """The DSN of ``request`` as a PyMySQL target."""
        return parse_dsn(request.uri)

    def schema_name(self, conn, request: SourceRequest) -> str | None:
        """The request's database; ``SET CATALOG`` first when an internal catalog other than the default is named."""
        import sqlalchemy as sa

        name = request.catalog_name
        if name and name != "default_catalog":
            conn.execute(sa.text(f"SET CATALOG {conn.dialect.identifier_preparer.quote(name)}"))
        return request.database or None

    def partition_sizes(self, conn, schema: str | None, table_name: str) -> list[Partition] | None:
        """``SHOW PARTITIONS`` parsed; ``None`` when the server refuses it or shows no time-range partitions."""
        import sqlalchemy as sa

        prep = conn.dialect.identifier_preparer
        name = f"{prep.quote(schema)}.{prep.quote(table_name)}" if schema else prep.quote(table_name)
        try:
            result = conn.execute(sa.text(f"SHOW PARTITIONS FROM {name}"))
            rows = [dict(r._mapping) for r in result]
        except sa.exc.DBAPIError:
            return None
        return parse_partitions(rows) or None

    def version(self, parts: list[Partition]) -> str | None:
        """``v`` + 16 hex digits of the sha256 of the sorted ``PartitionName:VisibleVersion`` pairs."""
        pairs = sorted((p.name, p.version) for p in parts)
        return "v" + hashlib.sha256(";".join(f"{i}:{v}" for i, v in pairs).encode()).hexdigest()[:16]
