"""Where a dataset's epochs can be read: routes from the masters, checked for gaps, cached briefly.

:func:`fetch_coverage` asks any master (one channel, leader redirects followed
by :func:`leibrix.client._call.call`) for three things about one dataset and a
time range ``[start, end)``:

* ``GetDataset``: the time column and the dimension columns;
* ``ResolveRoute``: the READY epochs overlapping the range, each with the
  query addresses of the workers holding it;
* ``ListEpochs``: every epoch of the dataset, to find the ones the range needs
  that have **no** route (PENDING, LOADING, VALIDATING, FAILED, or READY with no
  reachable replica). An epoch being retired (RETIRING, RETIRED) is no longer
  part of the dataset and is not a gap; neither is an epoch whose window and
  dimension values a routed epoch (its READY refresh) already covers.

A query must never be answered from part of the data without saying so, so
:class:`Coverage` carries the gaps (their windows and dimension values, and
the dataset's source): the caller reads them from the source, or refuses to
run (:class:`EpochsUnavailable`) when it may use resident data only.

:class:`RouteCache` keeps each answer for ``ttl`` seconds, so a burst of
queries costs the masters one round of calls; a worker failure drops the entry
(:meth:`RouteCache.invalidate`) so the next attempt sees the current routes.
Once the tenant's ``WatchRoutes`` subscription (:mod:`._routes_watch`) is
synced, the routes come from it, pushed by the masters as they change, and
only ``GetDataset``/``ListEpochs`` are cached; while it is not,
``ResolveRoute`` is asked. The coverage built from the watched routes is kept
per dataset and reused while the range, the cached description and every
route are the same objects (the watcher replaces a route it updates, never
changes it), so a query re-reads the routes only after they changed.
"""

from __future__ import annotations

import ssl as _ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone

import trio

from leibrix.client._call import call
from leibrix.client._routes_watch import RouteWatcher
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["Coverage", "EpochPlace", "EpochsUnavailable", "RouteCache", "fetch_coverage", "to_ms"]

_GONE = {cp.EpochState.RETIRING, cp.EpochState.RETIRED}


class EpochsUnavailable(RuntimeError):
    """Epochs a query needs are not READY on any reachable worker; the message names each one."""

    def __init__(self, tenant: str, dataset: str, missing: list[tuple[str, str]]) -> None:
        self.missing = missing
        listed = ", ".join(f"{epoch} ({why})" for epoch, why in missing)
        super().__init__(f"{tenant}/{dataset}: {len(missing)} epoch(s) needed by the query are not READY on any "
                         f"reachable worker: {listed}")


@dataclass(frozen=True)
class EpochPlace:
    """One READY epoch and the workers (id, Flight address) holding it."""

    epoch_id: str
    start_ms: int
    end_ms: int
    dims: tuple[tuple[str, str], ...]
    workers: tuple[tuple[str, str], ...]


@dataclass
class Coverage:
    """The routed epochs of a dataset in a range, the gaps, and the dataset's time column."""

    tenant: str
    dataset: str
    time_column: str
    routed: list[EpochPlace] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    fetched_at: float = 0.0
    #: The missing epochs themselves (no workers): what a query reads from the source instead.
    gaps: list[EpochPlace] = field(default_factory=list)
    #: The dataset's source, as ``GetDataset`` shows it.
    source: cp.DataSource | None = None
    #: Where the routes came from: ``"watch"`` or ``"resolve"``.
    via: str = "resolve"

    def check(self) -> None:
        """Raise :class:`EpochsUnavailable` when any needed epoch has no route."""
        if self.missing:
            raise EpochsUnavailable(self.tenant, self.dataset, self.missing)


def to_ms(moment: datetime | None) -> int | None:
    """Milliseconds since the Unix epoch (a naive datetime is UTC)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return round(moment.timestamp() * 1000)


def _ms(ts: datetime | None) -> int:
    return to_ms(ts) or 0 if ts is not None else 0


@dataclass
class _Catalog:
    """What ``GetDataset`` and ``ListEpochs`` said about a dataset, and when."""

    info: cp.DatasetInfo
    epochs: list[cp.EpochStatus]
    fetched_at: float


async def _catalog(stub: cp.ManagementServiceStub, tenant: str, dataset: str) -> _Catalog:
    info = await stub.get_dataset(cp.GetDatasetRequest(tenant_id=tenant, dataset_id=dataset))
    epochs: list[cp.EpochStatus] = []
    token = ""
    while True:
        page = await stub.list_epochs(cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset,
                                                           page_size=1000, page_token=token))
        epochs.extend(page.epochs)
        token = page.next_page_token
        if not token:
            break
    return _Catalog(info, epochs, time.monotonic())


def _overlaps(tr: cp.TimeRange, lo: int | None, hi: int | None) -> bool:
    s, t = _ms(tr.start_inclusive), _ms(tr.end_exclusive)
    return not ((hi is not None and s >= hi) or (lo is not None and t <= lo))


def build_coverage(tenant: str, dataset: str, catalog: _Catalog, routes: list[cp.EpochRoute],
                   lo: int | None, hi: int | None, via: str) -> Coverage:
    """Routed epochs and gaps of ``[lo, hi)`` (ms, None: unbounded) from a dataset's epochs and routes."""
    info = catalog.info
    column = info.source.partition.time_partition.column.name or "ts"
    routed = []
    for r in routes:
        if not _overlaps(r.epoch.time_range, lo, hi):
            continue
        workers = tuple((w, a) for w, a in zip(r.worker_ids, r.worker_addrs) if a)
        tr = r.epoch.time_range
        routed.append(EpochPlace(r.epoch.epoch_id, _ms(tr.start_inclusive), _ms(tr.end_exclusive),
                                 tuple(sorted(r.epoch.dimension_values.items())), workers))
    covered = {(p.start_ms, p.end_ms, p.dims) for p in routed if p.workers}
    missing = [(p.epoch_id, "READY but no replica with a query address") for p in routed if not p.workers]
    gaps = [p for p in routed if not p.workers]
    for e in catalog.epochs:
        tr = e.info.time_range
        s, t = _ms(tr.start_inclusive), _ms(tr.end_exclusive)
        dims = tuple(sorted(e.info.dimension_values.items()))
        if e.state in _GONE or not _overlaps(tr, lo, hi) or (s, t, dims) in covered:
            continue
        if any(p.epoch_id == e.info.epoch_id for p in routed):
            continue
        missing.append((e.info.epoch_id, e.state.name))
        gaps.append(EpochPlace(e.info.epoch_id, s, t, dims, ()))
    return Coverage(tenant, dataset, column, [p for p in routed if p.workers], missing, time.monotonic(),
                    gaps, info.source, via)


async def fetch_coverage(masters: str, tenant: str, dataset: str, start: datetime | None, end: datetime | None,
                         *, timeout: float = 10.0, metadata: Mapping[str, str] | None = None,
                         ssl: _ssl.SSLContext | None = None) -> Coverage:
    """Ask a master for a dataset's routes and epochs in ``[start, end)`` (None: unbounded); TLS with ``ssl``."""
    lo, hi = to_ms(start), to_ms(end)

    async def rpc(stub: cp.ManagementServiceStub) -> Coverage:
        catalog = await _catalog(stub, tenant, dataset)
        time_range = None
        if start is not None or end is not None:
            time_range = cp.TimeRange(start_inclusive=start or datetime(1970, 1, 1, tzinfo=timezone.utc),
                                      end_exclusive=end or datetime(9999, 1, 1, tzinfo=timezone.utc))
        routes = await stub.resolve_route(cp.ResolveRouteRequest(tenant_id=tenant, dataset_id=dataset,
                                                                 time_range=time_range))
        return build_coverage(tenant, dataset, catalog, list(routes.routes), lo, hi, "resolve")

    reply, _ = await call(masters, rpc, timeout=timeout, metadata=metadata, ssl=ssl)
    return reply


class RouteCache:
    """Coverage per ``(tenant, dataset, start, end)``, reused for ``ttl`` seconds; thread-safe.

    With ``watch`` (the default) each tenant queried is subscribed to
    (:class:`RouteWatcher`); while its subscription is synced, routes come from
    it and only the dataset's description and epoch list are fetched (and
    cached for ``ttl``). :meth:`close` ends the subscriptions. Every master call
    and subscription speaks TLS with ``ssl`` (:func:`leibrix.client._call.tls_context`).
    """

    def __init__(self, masters: str, *, ttl: float = 2.0, timeout: float = 10.0,
                 metadata: Mapping[str, str] | None = None, watch: bool = True,
                 ssl: _ssl.SSLContext | None = None) -> None:
        self.masters = masters
        self.ssl = ssl
        self.ttl = ttl
        self.timeout = timeout
        self.metadata = dict(metadata or {})
        self._entries: dict[tuple, Coverage] = {}
        self._catalogs: dict[tuple[str, str], _Catalog] = {}
        #: (tenant, dataset) -> the last coverage built from watched routes, with its range, catalog and routes.
        self._built: dict[tuple[str, str], tuple[tuple[int | None, int | None], _Catalog, tuple, Coverage]] = {}
        self._lock = threading.Lock()
        #: ``ResolveRoute`` rounds (the fallback) and ``GetDataset``+``ListEpochs`` rounds made.
        self.fetches = 0
        self.catalog_fetches = 0
        self.watcher = RouteWatcher(masters, metadata=metadata, ssl=ssl) if watch else None

    def get(self, tenant: str, dataset: str, start: datetime | None, end: datetime | None) -> Coverage:
        lo, hi = to_ms(start), to_ms(end)
        if self.watcher is not None:
            self.watcher.watch(tenant)
            routes = self.watcher.routes(tenant)
            if routes is not None:
                return self._watched(tenant, dataset, tuple(r for (d, _), r in sorted(routes.items()) if d == dataset),
                                     lo, hi)
        key = (tenant, dataset, lo, hi)
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None and time.monotonic() - hit.fetched_at < self.ttl:
            return hit
        coverage = trio.run(lambda: fetch_coverage(self.masters, tenant, dataset, start, end,
                                                   timeout=self.timeout, metadata=self.metadata, ssl=self.ssl))
        with self._lock:
            self._entries[key] = coverage
            self.fetches += 1
        return coverage

    def _watched(self, tenant: str, dataset: str, routes: tuple[cp.EpochRoute, ...], lo: int | None,
                 hi: int | None) -> Coverage:
        """The coverage of ``[lo, hi)`` from watched routes: the last one built, if nothing it was built from
        changed."""
        catalog = self._catalog(tenant, dataset)
        with self._lock:
            hit = self._built.get((tenant, dataset))
        if hit is not None:
            span, built_from, built_routes, coverage = hit
            if (span == (lo, hi) and built_from is catalog and len(built_routes) == len(routes)
                    and all(a is b for a, b in zip(built_routes, routes))):
                return coverage
        coverage = build_coverage(tenant, dataset, catalog, list(routes), lo, hi, "watch")
        with self._lock:
            self._built[(tenant, dataset)] = ((lo, hi), catalog, routes, coverage)
        return coverage

    def _catalog(self, tenant: str, dataset: str) -> _Catalog:
        with self._lock:
            hit = self._catalogs.get((tenant, dataset))
        if hit is not None and time.monotonic() - hit.fetched_at < self.ttl:
            return hit

        async def fetch() -> _Catalog:
            reply, _ = await call(self.masters, lambda stub: _catalog(stub, tenant, dataset), timeout=self.timeout,
                                  metadata=self.metadata, ssl=self.ssl)
            return reply

        catalog = trio.run(fetch)
        with self._lock:
            self._catalogs[(tenant, dataset)] = catalog
            self.catalog_fetches += 1
        return catalog

    def invalidate(self, tenant: str, dataset: str) -> None:
        """Forget every cached answer for a dataset (a worker failed or lost an epoch)."""
        with self._lock:
            for key in [k for k in self._entries if k[:2] == (tenant, dataset)]:
                del self._entries[key]
            self._catalogs.pop((tenant, dataset), None)

    def close(self) -> None:
        """End the route subscriptions."""
        if self.watcher is not None:
            self.watcher.close()
