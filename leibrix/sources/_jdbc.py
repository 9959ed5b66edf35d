"""JDBC catalogs as SQLAlchemy URLs, and the SQL connection errors as request errors.

The upstream ``JdbcCatalog{uri, driver}`` names a Java driver; here each
supported one maps to a SQLAlchemy dialect and a Python driver:

=================================  ===================================================  ========================
JDBC URI                           driver class                                         SQLAlchemy URL
=================================  ===================================================  ========================
``jdbc:postgresql://h:p/db``       ``org.postgresql.Driver``                            ``postgresql+psycopg://h:p/db``
``jdbc:mysql://h:p/db``            ``com.mysql.cj.jdbc.Driver`` (``com.mysql.jdbc.Driver``)  ``mysql+pymysql://h:p/db``
``jdbc:mariadb://h:p/db``          ``org.mariadb.jdbc.Driver``                          ``mysql+pymysql://h:p/db``
``jdbc:sqlite:/path/file.db``      ``org.sqlite.JDBC``                                  ``sqlite:////path/file.db``
=================================  ===================================================  ========================

Credentials may be in the authority (``jdbc:postgresql://user:pw@h/db``) or,
as JDBC drivers take them, in the ``user``/``password`` parameters; either may
be a ``${env:NAME}``/``${file:/path}`` reference, resolved only in
:func:`engine`. The driver may be empty (taken from the URI's subprotocol);
a driver that does not match the URI is an ``INVALID_ARGUMENT`` naming
``source.catalog.jdbc.driver``.

Connection errors (:func:`connection_error`), decided from the driver's own
error codes where it has them:

* host unreachable, refused, timed out → ``UNAVAILABLE`` (the request may be
  right and the database down: retry later);
* password or user rejected → ``PERMISSION_DENIED`` naming the URI field;
* database named in the URI missing → ``NOT_FOUND`` naming the URI field;
* anything else → ``FAILED_PRECONDITION``.

Messages show the URI redacted and never a resolved secret.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit

from leibrix.domain._errors import ApiError, FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable
from leibrix.sources import _secrets
from leibrix.sources._lru import Lru

__all__ = ["DRIVERS", "JdbcTarget", "connection_error", "engine", "parse_jdbc", "shared_engine"]

#: JDBC driver class → SQLAlchemy ``dialect+driver``.
DRIVERS = {
    "org.postgresql.Driver": "postgresql+psycopg",
    "com.mysql.cj.jdbc.Driver": "mysql+pymysql",
    "com.mysql.jdbc.Driver": "mysql+pymysql",
    "org.mariadb.jdbc.Driver": "mysql+pymysql",
    "org.sqlite.JDBC": "sqlite",
}
_SUBPROTOCOLS = {"postgresql": "postgresql+psycopg", "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql",
                 "sqlite": "sqlite"}
_DEFAULT_PORTS = {"postgresql+psycopg": 5432, "mysql+pymysql": 3306}
#: Seconds a connection attempt may take before the source counts as unreachable.
CONNECT_TIMEOUT_S = 5


@dataclass(frozen=True, slots=True)
class JdbcTarget:
    """A parsed JDBC URI: still holding secret *references*, never resolved values."""

    drivername: str
    host: str | None
    port: int | None
    database: str | None
    username: str | None
    password: str | None
    query: tuple[tuple[str, str], ...]
    field: str
    shown: str

    def __repr__(self) -> str:
        return f"JdbcTarget({self.shown})"


def parse_jdbc(uri: str, driver: str = "", *, field: str = "source.catalog.jdbc.uri") -> JdbcTarget:
    """Parse a JDBC URI (see the table in the module docstring).

    Parameters
    ----------
    uri:
        ``jdbc:<subprotocol>:...``; secret references are kept as written.
    driver:
        The JDBC driver class name, or ``""`` to infer it from the URI.
    field:
        The request field ``uri`` came from, named in errors.

    Raises
    ------
    InvalidArgument
        Not a JDBC URI, an unsupported subprotocol or driver, or a driver that
        does not match the URI.
    """
    shown = _secrets.redact(uri)
    if not uri.startswith("jdbc:"):
        raise InvalidArgument(field, f"{shown!r} is not a JDBC URI (jdbc:<subprotocol>:...)")
    rest = uri[len("jdbc:"):]
    sub, _, body = rest.partition(":")
    dialect = _SUBPROTOCOLS.get(sub)
    if dialect is None:
        raise InvalidArgument(field, f"unsupported JDBC subprotocol {sub!r}: use one of {sorted(_SUBPROTOCOLS)}")
    if driver:
        by_driver = DRIVERS.get(driver)
        if by_driver is None:
            raise InvalidArgument("source.catalog.jdbc.driver", f"unsupported driver class {driver!r}: use one of {sorted(DRIVERS)}")
        if by_driver != dialect:
            raise InvalidArgument("source.catalog.jdbc.driver", f"driver {driver!r} does not serve {sub!r} URIs")
    if dialect == "sqlite":
        path, _, query = body.partition("?")
        return JdbcTarget("sqlite", None, None, path or ":memory:", None, None, tuple(parse_qsl(query)), field, shown)
    if not body.startswith("//"):
        raise InvalidArgument(field, f"{shown!r}: expected jdbc:{sub}://host[:port]/database")
    parts = urlsplit(body)
    params = parse_qsl(parts.query, keep_blank_values=True)
    query = []
    user, password = (unquote(parts.username) if parts.username else None), (unquote(parts.password) if parts.password else None)
    for k, v in params:
        if k == "user":
            user = v
        elif k == "password":
            password = v
        else:
            query.append((k, v))
    try:
        port = parts.port
    except ValueError:
        raise InvalidArgument(field, f"{shown!r}: the port is not a number") from None
    database = parts.path.lstrip("/") or None
    return JdbcTarget(dialect, parts.hostname, port or _DEFAULT_PORTS.get(dialect), database, user, password,
                      tuple(query), field, shown)


def _url_and_args(target: JdbcTarget):
    import sqlalchemy as sa

    resolve = lambda v: _secrets.resolve(v, target.field) if v else v  # noqa: E731
    connect_args: dict = {}
    # Driver-specific options ride in the query string except the ones JDBC-only drivers would not understand.
    query = {k: resolve(v) for k, v in target.query if k not in ("ssl", "sslmode", "useSSL", "serverTimezone")}
    if target.drivername.startswith("postgresql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    elif target.drivername.startswith("mysql"):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        query = {}
    url = sa.engine.URL.create(target.drivername, username=resolve(target.username), password=resolve(target.password),
                               host=target.host, port=target.port, database=resolve(target.database), query=query)
    return url, connect_args


def engine(target: JdbcTarget):
    """A SQLAlchemy engine for ``target``, secrets resolved here and only here (no pooling: one use, one connection)."""
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url, connect_args = _url_and_args(target)
    return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)


def _dispose(eng) -> None:
    eng.dispose()


#: Engines kept per resolved URL (:func:`shared_engine`).
MAX_ENGINES = 16
_engines = Lru(MAX_ENGINES, on_evict=_dispose)


def shared_engine(target: JdbcTarget) -> tuple[str, object]:
    """The process's engine for ``target``'s *resolved* URL (a rotated credential gets its own), with its key.

    At most :data:`MAX_ENGINES` are kept, the least recently used disposed.
    The engine (its dialect, initialized on its first connection) is reused;
    connections are not pooled (each use connects and closes), so no idle
    connection is left open on the source between plans.
    """
    import sqlalchemy as sa
    from sqlalchemy.pool import NullPool

    url, connect_args = _url_and_args(target)
    key = url.render_as_string(hide_password=False)
    return key, _engines.get_or_build(key, lambda: sa.create_engine(url, poolclass=NullPool, connect_args=connect_args))


def secrets_of(target: JdbcTarget) -> list[str]:
    """Resolved values of the target's secret references (scrubbed from any driver message)."""
    out = []
    for v in (target.username, target.password, target.database, *(v for _, v in target.query)):
        if v:
            out.extend(_secrets.secrets_in(v))
    return out


_AUTH_MYSQL = {1044, 1045, 1698, 1142, 1143}
_UNREACHABLE_MYSQL = {2002, 2003, 2005, 2006, 2013}


def connection_error(exc: BaseException, target: JdbcTarget, *, what: str = "") -> ApiError:
    """The request error for a driver exception raised while connecting or reading metadata."""
    if isinstance(exc, ApiError):
        return exc
    orig = getattr(exc, "orig", None) or exc
    text = _secrets.scrub(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__,
                          *secrets_of(target))
    where = f"{target.field}: {target.shown}"
    code = orig.args[0] if getattr(orig, "args", None) and isinstance(orig.args[0], int) else None
    sqlstate = getattr(orig, "sqlstate", None)
    low = text.lower()
    if code in _AUTH_MYSQL or sqlstate in ("28P01", "28000", "42501") or "authentication failed" in low \
            or "access denied" in low:
        return PermissionDenied(f"{where}: the database rejected the credentials or the access: {text}")
    if code == 1049 or sqlstate == "3D000" or ("database" in low and "does not exist" in low):
        return NotFound(f"{where}: database not found: {text}")
    if code in _UNREACHABLE_MYSQL or any(w in low for w in ("connection refused", "could not connect", "timeout",
                                                              "timed out", "could not translate host", "unreachable",
                                                              "name or service not known", "can't connect",
                                                              "unable to open database")):
        return Unavailable(f"{where}: the database is unreachable: {text}")
    return FailedPrecondition(f"{where}: {what or 'cannot read the table metadata'}: {text}")
