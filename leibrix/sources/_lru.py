"""A bounded, thread-safe LRU map: what the connectors' per-process caches are kept in."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Lru"]

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
            except Exception:  # an eviction's clean-up (disposing an engine) must not fail the caller
                pass
