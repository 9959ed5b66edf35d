"""Per-process caches of the Iceberg connector: catalogs and the current metadata of each table.

Building a pyiceberg catalog (a SQL catalog creates an engine and checks its
tables) and parsing a table's metadata file are the same work for every
admission against the same table, so the connector keeps them here, shared by
every planning thread of the process:

Catalogs (:func:`catalog`)
    One pyiceberg catalog per *resolved* catalog: its name and its properties
    after ``${env:..}``/``${file:..}`` resolution, so a rotated credential gets
    a catalog of its own. At most :data:`MAX_CATALOGS`, the least recently
    used evicted (a SQL catalog's engine is disposed then; connections in use
    finish normally).

Tables (:func:`current_table`)
    Per (catalog, namespace, table): the last loaded ``Table`` and its metadata
    location. A SQL catalog is asked, for every request, only for the table's
    current metadata location (one indexed row of its ``iceberg_tables``): when
    that is unchanged the parsed metadata is reused, else the table is loaded
    again, so a committed snapshot is planned by the next request. Other
    catalogs (REST) answer only by loading the table, so their answer is reused
    without asking for :data:`METADATA_TTL_S` (1 s): a request naming no
    version may then be planned at the snapshot that was current up to that
    long ago. ``ttl_s`` overrides both defaults. A request naming a snapshot
    the kept metadata does not hold always asks again. At most :data:`MAX_TABLES`.

Schemas (:func:`schema`)
    Per (table uuid, schema id): the schema as the connector plans with it (in
    Arrow, with its fingerprint and IPC bytes), converted once. A schema id
    never changes its columns. At most :data:`MAX_SCHEMAS`.

All are :class:`leibrix.sources._lru.Lru` maps; :func:`clear` empties every
cache of the connector (snapshot indexes included).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from leibrix.sources._lru import Lru

__all__ = ["MAX_CATALOGS", "MAX_SCHEMAS", "MAX_TABLES", "METADATA_TTL_S", "catalog", "clear", "current_table", "schema"]

#: Catalogs kept (distinct resolved catalog URIs and properties).
MAX_CATALOGS = 16
#: Tables whose current metadata is kept.
MAX_TABLES = 256
#: Table schemas kept converted.
MAX_SCHEMAS = 256
#: Seconds a table's current metadata from a catalog other than SQL (a REST catalog) is reused without asking it.
METADATA_TTL_S = 1.0

def _dispose(cat) -> None:
    engine = getattr(cat, "engine", None)
    if engine is not None:
        engine.dispose()


_catalogs: Lru = Lru(MAX_CATALOGS, on_evict=_dispose)


@dataclass(frozen=True, slots=True)
class _Known:
    location: str | None
    table: object
    checked: float


_tables: Lru[_Known] = Lru(MAX_TABLES)
_schemas: Lru[tuple] = Lru(MAX_SCHEMAS)
#: Per SQL catalog object, its metadata-location statement (:func:`_location_query`); gone with the catalog.
_location_queries: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def catalog(name: str, resolved: dict[str, str]) -> tuple[Hashable, object]:
    """The catalog ``name`` with ``resolved`` properties (built by ``load_catalog`` once per process), with its key."""
    from pyiceberg.catalog import load_catalog

    key = (name, tuple(sorted(resolved.items())))
    return key, _catalogs.get_or_build(key, lambda: load_catalog(name, **resolved))


def _location_query(cat):
    """The statement reading one table's current metadata location from SQL catalog ``cat`` (built once per catalog).

    Building a SQLAlchemy ``select`` costs several times more than running it on an indexed row, so each
    catalog keeps one, its table named by bound parameters.
    """
    from pyiceberg.catalog.sql import IcebergTables
    from sqlalchemy import bindparam, select

    stmt = _location_queries.get(cat)
    if stmt is None:
        stmt = select(IcebergTables.metadata_location).where(
            IcebergTables.catalog_name == cat.name,
            IcebergTables.table_namespace == bindparam("namespace"),
            IcebergTables.table_name == bindparam("name"),
        )
        type_filter = getattr(cat, "_iceberg_type_filter", lambda: None)()
        if type_filter is not None:
            stmt = stmt.where(type_filter)
        _location_queries[cat] = stmt
    return stmt


def _metadata_location(cat, identifier: tuple[str, str]) -> str | None:
    """A SQL catalog's current metadata location of ``identifier`` (one row read); ``None`` for other catalogs or no row."""
    from pyiceberg.catalog.sql import SqlCatalog

    if not isinstance(cat, SqlCatalog):
        return None
    namespace, name = identifier
    with cat.engine.connect() as conn:
        return conn.execute(_location_query(cat), {"namespace": namespace, "name": name}).scalar()


def current_table(catalog_key: Hashable, cat, identifier: tuple[str, str], *, snapshot_id: int | None = None,
                  ttl_s: float | None = None):
    """The table ``identifier`` of ``cat`` at its current metadata (see the module docstring for when it is asked).

    ``snapshot_id``: the snapshot the request names, if any; kept metadata
    without it is never reused. ``ttl_s``: seconds an answer is reused without
    asking (``None``: 0 for a SQL catalog, :data:`METADATA_TTL_S` for others).
    Raises whatever ``cat.load_table`` raises.
    """
    from pyiceberg.catalog.sql import SqlCatalog

    if ttl_s is None:
        ttl_s = 0.0 if isinstance(cat, SqlCatalog) else METADATA_TTL_S
    key = (catalog_key, identifier)
    known = _tables.get(key)
    now = time.monotonic()
    if known is not None and snapshot_id is not None and known.table.snapshot_by_id(snapshot_id) is None:
        known = None
    if known is not None and now - known.checked < ttl_s:
        return known.table
    location = _metadata_location(cat, identifier)
    if known is not None and location is not None and location == known.location:
        _tables.put(key, _Known(location, known.table, now))
        return known.table
    table = cat.load_table(identifier)
    _tables.put(key, _Known(table.metadata_location, table, now))
    return table


def schema(table, schema_id: int, convert: Callable[[], tuple]) -> tuple:
    """The converted form of ``table``'s schema ``schema_id``: ``convert()``'s answer, kept per table and id."""
    return _schemas.get_or_build((str(table.metadata.table_uuid), schema_id), convert)


def clear() -> None:
    """Forget every kept catalog (and its query), table metadata and converted schema, and every snapshot index."""
    from leibrix.sources import _iceberg_index

    _tables.clear()
    _schemas.clear()
    _catalogs.clear()
    _location_queries.clear()
    _iceberg_index.clear()
