"""Query cursors that already hold their views, kept for the next query needing the same ones.

Every query runs on a DuckDB cursor of its own whose temporary views map the
logical dataset names it reads onto the epoch tables chosen for it (see
:mod:`leibrix.worker._flight`). Making those views is a statement per view,
parsed and bound, which costs about as much as a selective query over a
compressed epoch; and the queries this path serves (dashboards, BI tools)
ask over the same epochs again and again. So a cursor whose query ended
cleanly goes back to a pool under its views' definitions, and the next query
with exactly the same definitions takes it instead of making the views again.

A definition names its tables by their in-memory database (``epoch_{n}``, a
new one per load, never reused), so a pooled cursor only ever serves a query
planned over the very same tables. Once one of them is evicted no query asks
for its definitions again, and the cursor ages out of the pool (least
recently returned first, at most ``capacity`` idle cursors). A cursor is
given back only when nothing can still interrupt it: the caller closes it
instead after an error, a cancel or a timeout that reached it. Temporary
views are visible to their own cursor only, and a definition names one
tenant's tables, so a pooled cursor never shows one tenant another's data.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import duckdb

from leibrix.sources._readers import quote

__all__ = ["ViewCursors", "Views", "make_views"]

#: ``((view name, SELECT it is defined as), ...)``: the views one query's cursor holds.
Views = tuple[tuple[str, str], ...]


def make_views(cursor: duckdb.DuckDBPyConnection, views: Views) -> None:
    """Make ``views`` on a new cursor (DuckDB's ``CatalogException`` when a table they read is gone)."""
    for name, select in views:
        cursor.execute(f"CREATE TEMP VIEW {quote(name)} AS {select}")


class ViewCursors:
    """A pool of idle cursors keyed by the views they hold; thread-safe.

    Parameters
    ----------
    open_cursor:
        Makes a new cursor on the worker's database.
    capacity:
        Idle cursors kept at most (the least recently returned is closed first).
    """

    def __init__(self, open_cursor: Callable[[], duckdb.DuckDBPyConnection], capacity: int = 64) -> None:
        self._open = open_cursor
        self.capacity = max(0, capacity)
        self._lock = threading.Lock()
        self._idle: OrderedDict[Views, list[duckdb.DuckDBPyConnection]] = OrderedDict()
        self._count = 0
        #: Cursors taken from the pool, and made anew (with their views), since start.
        self.reused = 0
        self.made = 0

    @property
    def idle(self) -> int:
        """Idle cursors held now."""
        with self._lock:
            return self._count

    def take(self, views: Views) -> tuple[duckdb.DuckDBPyConnection, bool]:
        """An idle cursor holding exactly ``views`` and True, else a new cursor and False: the caller then
        makes the views on it (:func:`make_views`), once it can interrupt that cursor."""
        with self._lock:
            idle = self._idle.get(views)
            if idle:
                cursor = idle.pop()
                self._count -= 1
                if not idle:
                    del self._idle[views]
                self.reused += 1
                return cursor, True
            self.made += 1
        return self._open(), False

    def give(self, views: Views, cursor: duckdb.DuckDBPyConnection) -> None:
        """Return a cursor whose query ended cleanly (nothing may interrupt it any more)."""
        surplus: list[duckdb.DuckDBPyConnection] = []
        with self._lock:
            self._idle.setdefault(views, []).append(cursor)
            self._idle.move_to_end(views)
            self._count += 1
            while self._count > self.capacity:
                oldest, cursors = next(iter(self._idle.items()))
                surplus.append(cursors.pop(0))
                self._count -= 1
                if not cursors:
                    del self._idle[oldest]
        for extra in surplus:
            extra.close()

    def close(self) -> None:
        """Close every idle cursor."""
        with self._lock:
            idle = [c for cursors in self._idle.values() for c in cursors]
            self._idle.clear()
            self._count = 0
        for cursor in idle:
            cursor.close()
