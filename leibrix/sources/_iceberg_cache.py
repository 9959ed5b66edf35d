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

:class:`Lru` is the bounded, thread-safe map both use (and the snapshot
indexes of :mod:`leibrix.sources._iceberg_index`); :func:`clear` empties every
cache of the connector.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["MAX_CATALOGS", "MAX_TABLES", "METADATA_TTL_S", "Lru", "catalog", "clear", "current_table"]

#: Catalogs kept (distinct resolved catalog URIs and properties).
MAX_CATALOGS = 16
#: Tables whose current metadata is kept.
MAX_TABLES = 256
#: Seconds a table's current metadata from a catalog other than SQL (a REST catalog) is reused without asking it.
METADATA_TTL_S = 1.0

V = TypeVar("V")


class Lru(Generic[V]):
    """A thread-safe LRU map bounded by entries and, optionally, by the sizes its entries were put with.

    ``on_evict(value)`` is called, outside the lock, for each value pushed
    out. :meth:`get_or_build` builds a missing value once however many threads
    ask for it at the same time (the others wait for that build).
    """

    def __init__(self, max_entries: int, max_bytes: int | None = None,
                 on_evict: Callable[[V], None] | None = None) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._on_evict = on_evict
        self._lock = threading.Lock()
        self._items: OrderedDict[Hashable, tuple[V, int]] = OrderedDict()
        self._building: dict[Hashable, threading.Lock] = {}
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key: Hashable) -> V | None:
        """The value under ``key`` (now the most recently used), or ``None``."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            self._items.move_to_end(key)
            return item[0]

    def put(self, key: Hashable, value: V, size: int = 0) -> bool:
        """Keep ``value`` under ``key``, evicting the least recently used beyond the bounds.

        Returns ``False`` (keeping nothing) when ``size`` alone exceeds ``max_bytes``.
        """
        evicted: list[V] = []
        with self._lock:
            if self.max_bytes is not None and size > self.max_bytes:
                return False
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old[1]
                if old[0] is not value:
                    evicted.append(old[0])
            self._items[key] = (value, size)
            self.bytes += size
            while len(self._items) > self.max_entries or (self.max_bytes is not None and self.bytes > self.max_bytes):
                _, (gone, gone_size) = self._items.popitem(last=False)
                self.bytes -= gone_size
                evicted.append(gone)
        self._evicted(evicted)
        return True

    def get_or_build(self, key: Hashable, build: Callable[[], V], size_of: Callable[[V], int] = lambda _: 0) -> V:
        """The value under ``key``, built by ``build()`` (by one thread at a time per key) when missing."""
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            gate = self._building.setdefault(key, threading.Lock())
        try:
            with gate:
                value = self.get(key)
                if value is None:
                    value = build()
                    self.put(key, value, size_of(value))
                return value
        finally:
            with self._lock:
                if self._building.get(key) is gate:
                    del self._building[key]

    def clear(self) -> None:
        """Forget every entry (each passed to ``on_evict``)."""
        with self._lock:
            evicted = [v for v, _ in self._items.values()]
            self._items.clear()
            self.bytes = 0
        self._evicted(evicted)

    def _evicted(self, values: list[V]) -> None:
        if self._on_evict is None:
            return
        for v in values:
            try:
                self._on_evict(v)
            except Exception:  # disposing a catalog's engine must not fail a plan
                pass


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


def catalog(name: str, resolved: dict[str, str]) -> tuple[Hashable, object]:
    """The catalog ``name`` with ``resolved`` properties (built by ``load_catalog`` once per process), with its key."""
    from pyiceberg.catalog import load_catalog

    key = (name, tuple(sorted(resolved.items())))
    return key, _catalogs.get_or_build(key, lambda: load_catalog(name, **resolved))


def _metadata_location(cat, identifier: tuple[str, str]) -> str | None:
    """A SQL catalog's current metadata location of ``identifier`` (one row read); ``None`` for other catalogs or no row."""
    from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
    from sqlalchemy import select

    if not isinstance(cat, SqlCatalog):
        return None
    namespace, name = identifier
    stmt = select(IcebergTables.metadata_location).where(
        IcebergTables.catalog_name == cat.name,
        IcebergTables.table_namespace == namespace,
        IcebergTables.table_name == name,
    )
    type_filter = getattr(cat, "_iceberg_type_filter", lambda: None)()
    if type_filter is not None:
        stmt = stmt.where(type_filter)
    with cat.engine.connect() as conn:
        return conn.execute(stmt).scalar()


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


def clear() -> None:
    """Forget every kept catalog and table metadata, and every snapshot index."""
    from leibrix.sources import _iceberg_index

    _tables.clear()
    _catalogs.clear()
    _iceberg_index.clear()
