"""Worker-stream frames for the Rust leibrix-worker: our LoadPlan re-encoded where its layout differs.

The Rust worker speaks the same ``EventStreamMessage`` as we do, field for
field, with two exceptions, both inside the catalog of a LoadPlan's source:

* its ``StarRocksCatalog`` holds connection parts (``catalog_name`` 1,
  ``host`` 2, ``port`` 3 int32, ``database`` 4, ``username`` 5, ``password`` 6,
  ``max_concurrency`` 7 int32, ``pool_options`` 8) where ours, the Go
  master's, holds ``dsn`` 1 and ``internal_catalog_name`` 2. Sent unchanged,
  our DSN would arrive as its catalog name and our catalog name as its host;
* its ``JdbcCatalog`` adds ``pool_options`` 3 to ``uri`` 1 / ``driver`` 2.

Both ``pool_options`` are a ``ConnectionPoolOptions`` of optional scalars
(``max_connections`` 1, ``min_connections`` 2, ``batch_size`` 7 as uint32;
``acquire_timeout_ms`` 3, ``connect_timeout_ms`` 4, ``idle_timeout_ms`` 5,
``max_lifetime_ms`` 6 as uint64); the worker uses its own defaults for an
absent one. Our catalogs have no such fields, so they travel as query
parameters of the DSN or JDBC URI under the same names (plus
``max_concurrency`` for StarRocks).

Everything else (Iceberg catalogs, the partition, the resolved partition,
acks) is identical, and the fields Leibrix added under new numbers
(``expected_rows``, ``tenant_id``, ...) are skipped by its decoder as unknown.
So :func:`upstream_frame` serializes a message as it is unless it is a
``data_assignment`` whose catalog needs translating; then it writes that one
catalog in the worker's layout by hand and nests it back into the serialized
source, plan, assignment and envelope. Protobuf does not order the fields of
a message, so appending the re-encoded field to the rest is a valid encoding.

A DSN is read in any of the forms a StarRocks (MySQL protocol) address is
written in:

* a URL: ``mysql://user:pass@host:9030/db?max_concurrency=4`` (any scheme, a
  ``jdbc:`` prefix allowed; user and password percent-decoded);
* the Go MySQL driver's form: ``user:pass@tcp(host:9030)/db?param=value``;
* a bare address: ``host``, ``host:9030``, ``[::1]:9030``, ``user@host:9030/db``.

An absent port is StarRocks' MySQL-protocol port 9030, an absent database is
the source's ``database``, an absent ``internal_catalog_name`` is StarRocks'
own ``default_catalog``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, unquote_plus, urlsplit

from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = [
    "DEFAULT_CATALOG",
    "DEFAULT_PORT",
    "POOL_OPTIONS",
    "StarRocksConnection",
    "parse_starrocks_dsn",
    "split_pool_options",
    "upstream_frame",
]

#: StarRocks' internal catalog: the worker's ``catalog_name`` when ours names none.
DEFAULT_CATALOG = "default_catalog"
#: StarRocks' MySQL-protocol (FE query) port: the port of a DSN that names none.
DEFAULT_PORT = 9030

#: ``ConnectionPoolOptions`` of the Rust worker: query parameter name -> (field number, largest value).
POOL_OPTIONS: dict[str, tuple[int, int]] = {
    "max_connections": (1, (1 << 32) - 1),
    "min_connections": (2, (1 << 32) - 1),
    "acquire_timeout_ms": (3, (1 << 64) - 1),
    "connect_timeout_ms": (4, (1 << 64) - 1),
    "idle_timeout_ms": (5, (1 << 64) - 1),
    "max_lifetime_ms": (6, (1 << 64) - 1),
    "batch_size": (7, (1 << 32) - 1),
}
_INT32_MAX = (1 << 31) - 1

# user[:password]@net(address)/[db][?query]; the password may hold '@' (the last one before net( ends it).
_GO_DSN = re.compile(
    r"(?:(?P<user>[^:@/]*)(?::(?P<password>.*))?@)?(?P<net>[A-Za-z0-9_]+)\((?P<addr>[^)]*)\)"
    r"/(?P<db>[^?]*)(?:\?(?P<query>.*))?",
    re.S,
)
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass(frozen=True, slots=True)
class StarRocksConnection:
    """What a StarRocks DSN names, in the parts the Rust worker's ``StarRocksCatalog`` carries.

    ``database`` is '' when the DSN names none; ``max_concurrency`` 0 means
    "the worker's default"; ``pool`` holds the ``ConnectionPoolOptions`` the DSN
    sets (name -> value), empty when it sets none.
    """

    host: str
    port: int = DEFAULT_PORT
    database: str = ""
    username: str = ""
    password: str = ""
    max_concurrency: int = 0
    pool: dict[str, int] = field(default_factory=dict)


def parse_starrocks_dsn(dsn: str) -> StarRocksConnection:
    """Read a StarRocks DSN (URL, Go MySQL driver or bare ``host[:port]`` form; see module doc).

    Query parameters other than ``max_concurrency`` and the pool options are
    ignored (the worker's catalog has no place for them).

    Raises
    ------
    ValueError
        The DSN is empty, names no host, or has a port outside 1-65535 or a
        non-integer, negative or too large ``max_concurrency`` / pool option.

    Examples
    --------
    >>> parse_starrocks_dsn("mysql://etl:s%40fe@fe1:9030/sales?max_concurrency=4")
    StarRocksConnection(host='fe1', port=9030, database='sales', username='etl', password='s@fe', max_concurrency=4, pool={})
    >>> parse_starrocks_dsn("fe1").port
    9030
    """
    text = dsn.strip()
    if not text:
        raise ValueError("StarRocks DSN is empty")
    if text[:5].lower() == "jdbc:":
        text = text[5:]
    go = _GO_DSN.fullmatch(text)
    if go is not None:
        host, port = _host_port(go["addr"], dsn)
        user, password, database, query = go["user"] or "", go["password"] or "", go["db"], go["query"] or ""
    else:
        url = urlsplit(text if _SCHEME.match(text) else f"mysql://{text}")
        try:
            port = url.port or DEFAULT_PORT
        except ValueError:
            raise ValueError(f"StarRocks DSN {_redacted(dsn)!r}: the port is not a number in 1-65535") from None
        host = url.hostname or ""
        user, password = unquote(url.username or ""), unquote(url.password or "")
        database, query = unquote(url.path.lstrip("/")), url.query
    if not host:
        raise ValueError(f"StarRocks DSN {_redacted(dsn)!r} names no host")
    if not 1 <= port <= 65535:
        raise ValueError(f"StarRocks DSN {_redacted(dsn)!r}: port {port} is outside 1-65535")
    params = dict(_query_pairs(query))
    max_concurrency = _integer(params, "max_concurrency", _INT32_MAX) if "max_concurrency" in params else 0
    pool = {name: _integer(params, name, POOL_OPTIONS[name][1]) for name in POOL_OPTIONS if name in params}
    return StarRocksConnection(host=host, port=port, database=database, username=user, password=password,
                               max_concurrency=max_concurrency, pool=pool)


def split_pool_options(uri: str) -> tuple[str, dict[str, int]]:
    """Take the pool options out of a JDBC URI's query: ``(uri without them, options)``.

    The other query parameters stay as they were written (the worker's
    driver reads them); a URI without pool options comes back unchanged.
    Raises ``ValueError`` for a non-integer, negative or too large option.
    """
    base, sep, rest = uri.partition("?")
    if not sep:
        return uri, {}
    query, hash_, fragment = rest.partition("#")
    kept: list[str] = []
    found: dict[str, str] = {}
    for piece in query.split("&"):
        name, _, value = piece.partition("=")
        key = unquote_plus(name)
        if key in POOL_OPTIONS:
            found[key] = unquote_plus(value)
        else:
            kept.append(piece)
    if not found:
        return uri, {}
    pool = {name: _integer(found, name, POOL_OPTIONS[name][1]) for name in POOL_OPTIONS if name in found}
    cleaned = base + ("?" + "&".join(kept) if any(kept) else "") + (hash_ + fragment)
    return cleaned, pool


def upstream_frame(msg: Any) -> bytes:
    """``msg`` (a upb or betterproto ``EventStreamMessage``) serialized as the Rust worker must receive it.

    Only a ``data_assignment`` whose source catalog is StarRocks, or JDBC with
    pool options in its URI, changes (see module doc); any other message is
    its own serialization. Raises ``ValueError`` for a StarRocks DSN or JDBC
    pool option that cannot be read (:func:`parse_starrocks_dsn`).
    """
    if not isinstance(msg, pb.EventStreamMessage):
        msg = pb.EventStreamMessage.FromString(bytes(msg))
    if msg.WhichOneof("payload") != "data_assignment":
        return msg.SerializeToString()
    assignment = msg.data_assignment
    plan = assignment.load_plan
    source = plan.source
    kind = source.catalog.WhichOneof("catalog_type")
    if kind == "starrocks":
        catalog = _message_field(2, _starrocks(source.catalog.starrocks, source.database))
    elif kind == "jdbc":
        jdbc = _jdbc(source.catalog.jdbc)
        if jdbc is None:
            return msg.SerializeToString()
        catalog = _message_field(3, jdbc)
    else:
        return msg.SerializeToString()
    # Nest the re-encoded catalog back up: source (1), plan (2), assignment (3), envelope (7).
    source_bytes = _message_field(1, catalog) + _without(source, "catalog")
    plan_bytes = _without(plan, "source") + _message_field(2, source_bytes)
    assignment_bytes = _without(assignment, "load_plan") + _message_field(3, plan_bytes)
    return _without(msg, "payload") + _message_field(7, assignment_bytes)


# ---- the two catalogs in the worker's layout --------------------------------------------------------


def _starrocks(sr: Any, source_database: str) -> bytes:
    conn = parse_starrocks_dsn(sr.dsn)
    return b"".join((
        _string_field(1, sr.internal_catalog_name or DEFAULT_CATALOG),
        _string_field(2, conn.host),
        _varint_field(3, conn.port),
        _string_field(4, conn.database or source_database),
        _string_field(5, conn.username),
        _string_field(6, conn.password),
        _varint_field(7, conn.max_concurrency),
        _message_field(8, _pool(conn.pool)) if conn.pool else b"",
    ))


def _jdbc(jdbc: Any) -> bytes | None:
    """The worker's ``JdbcCatalog``, or None when ours already is one (no pool options in the URI)."""
    uri, pool = split_pool_options(jdbc.uri)
    if not pool:
        return None
    return _string_field(1, uri) + _string_field(2, jdbc.driver) + _message_field(3, _pool(pool))


def _pool(pool: dict[str, int]) -> bytes:
    # optional scalars: present means written, zero included
    return b"".join(_key(POOL_OPTIONS[name][0], 0) + _varint(value) for name, value in pool.items())


# ---- helpers -------------------------------------------------------------------------------------------


def _without(msg: Any, name: str) -> bytes:
    """``msg`` serialized without field (or oneof) ``name``; ``msg`` itself is untouched."""
    copy = type(msg)()
    copy.CopyFrom(msg)
    copy.ClearField(name)
    return copy.SerializeToString()


def _host_port(addr: str, dsn: str) -> tuple[str, int]:
    addr = addr.strip()
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif addr.count(":") == 1:
        host, _, port_text = addr.partition(":")
    else:
        host, port_text = addr, ""
    if not port_text:
        return host, DEFAULT_PORT
    if not port_text.isdigit():
        raise ValueError(f"StarRocks DSN {_redacted(dsn)!r}: the port is not a number in 1-65535")
    return host, int(port_text)


def _query_pairs(query: str) -> list[tuple[str, str]]:
    pairs = []
    for piece in query.split("&"):
        if piece:
            name, _, value = piece.partition("=")
            pairs.append((unquote_plus(name), unquote_plus(value)))
    return pairs


def _integer(params: dict[str, str], name: str, largest: int) -> int:
    text = params[name].strip()
    if not text.isdigit() or int(text) > largest:
        raise ValueError(f"{name}={params[name]!r} must be an integer in 0-{largest}")
    return int(text)


def _redacted(dsn: str) -> str:
    """The DSN with its password masked, for error messages."""
    head, at, tail = dsn.rpartition("@")
    if not at:
        return dsn
    if head[:5].lower() == "jdbc:":
        head = head[5:]
    scheme = _SCHEME.match(head)
    start = scheme.end() if scheme else 0
    user, colon, _ = head[start:].partition(":")
    return f"{head[:start]}{user}{':***' if colon else ''}@{tail}"


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # a negative int32/int64 is its 64-bit two's complement
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _key(number: int, wire_type: int) -> bytes:
    return _varint(number << 3 | wire_type)


def _varint_field(number: int, value: int) -> bytes:
    return _key(number, 0) + _varint(value) if value else b""


def _string_field(number: int, value: str) -> bytes:
    return _message_field(number, value.encode()) if value else b""


def _message_field(number: int, body: bytes) -> bytes:
    return _key(number, 2) + _varint(len(body)) + body
