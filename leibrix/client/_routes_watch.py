"""Keeping a tenant's routes fresh by subscription: ``WatchRoutes``, resumed by revision, in a thread of its own.

A client that queries a tenant subscribes to that tenant's routes once
(:meth:`RouteWatcher.watch`). The master answers with every current route
(UPSERTs), ``SNAPSHOT_DONE``, then each change as it happens, every update
carrying the etcd revision it reflects. The watcher keeps the tenant's table
``(dataset, epoch) -> EpochRoute``:

* updates before ``SNAPSHOT_DONE`` build a new table, which replaces the old
  one at ``SNAPSHOT_DONE`` (a reconnect never mixes two snapshots);
* later updates change the table in place;
* when the stream ends or fails, the tenant is *not synced* (callers fall back
  to ``ResolveRoute``) and the watcher reconnects, with backoff, to the next
  master, asking ``since_revision`` = the last revision it applied, so a
  master that is behind answers UNAVAILABLE instead of sending the client
  back in time, and the next master is tried.

grpclib is asyncio-native, so the watcher runs one asyncio event loop in a
daemon thread owned by the client: one task per watched tenant.
:meth:`RouteWatcher.close` cancels the tasks from that loop (never from
another thread), closes their channels and joins the thread.
"""

from __future__ import annotations

import asyncio
import logging
import ssl as _ssl
import threading
from collections.abc import Mapping

from grpclib.client import Channel

from leibrix.wire._address import split_hostport
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["RouteWatcher"]

log = logging.getLogger("leibrix.client.routes")

_KIND = cp.RouteUpdateKind


class RouteWatcher:
    """Subscriptions to ``WatchRoutes``, one per tenant, kept by a background asyncio loop (thread-safe).

    Parameters
    ----------
    masters:
        Comma-separated ``HOST:PORT`` list; any master (leader or follower) serves routes.
    ssl:
        TLS to the masters (:func:`leibrix.client._call.tls_context`); plain text when None.
    backoff_initial, backoff_max:
        Seconds before reconnecting after a failed or ended stream, doubling up to the maximum.
    """

    def __init__(self, masters: str, *, metadata: Mapping[str, str] | None = None, ssl: _ssl.SSLContext | None = None,
                 backoff_initial: float = 0.2,
                 backoff_max: float = 5.0) -> None:
        self.addresses = [a.strip() for a in masters.split(",") if a.strip()]
        for a in self.addresses:
            split_hostport(a, what="masters")
        self.metadata = dict(metadata or {})
        self.ssl = ssl
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self._lock = threading.Lock()
        self._tables: dict[str, dict[tuple[str, str], cp.EpochRoute]] = {}
        self._synced: set[str] = set()
        #: The last revision applied per tenant (what a reconnect resumes from).
        self.revision: dict[str, int] = {}
        #: Snapshots applied per tenant (1 after the first subscription, +1 per resumed one).
        self.snapshots: dict[str, int] = {}
        #: ``since_revision`` of each subscription opened, per tenant, in order.
        self.subscriptions: dict[str, list[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._closed = False
        self._started = threading.Event()

    # ---- caller side (any thread) -----------------------------------------------------------------

    def watch(self, tenant: str) -> None:
        """Subscribe to ``tenant``'s routes (once; later calls do nothing)."""
        with self._lock:
            if self._closed or tenant in self._tasks:
                return
            self._tasks[tenant] = None  # type: ignore[assignment]  # reserved; the loop creates the task
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="leibrix-route-watch", daemon=True)
                self._thread.start()
        self._started.wait()
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._spawn, tenant)

    def routes(self, tenant: str) -> dict[tuple[str, str], cp.EpochRoute] | None:
        """A copy of the tenant's route table, or None while it is not synced (use ``ResolveRoute``)."""
        with self._lock:
            if tenant not in self._synced:
                return None
            return dict(self._tables.get(tenant, {}))

    def synced(self, tenant: str) -> bool:
        with self._lock:
            return tenant in self._synced

    def close(self) -> None:
        """Cancel every subscription, close their channels and stop the thread (idempotent)."""
        with self._lock:
            self._closed = True
            thread, loop = self._thread, self._loop
        if thread is None or loop is None:
            return
        loop.call_soon_threadsafe(self._stop.set)
        thread.join(timeout=10)

    # ---- the loop's thread --------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            tasks = [t for t in self._tasks.values() if t is not None]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            with self._lock:
                self._synced.clear()

    def _spawn(self, tenant: str) -> None:
        if self._stop.is_set() or self._tasks.get(tenant) is not None:
            return
        self._tasks[tenant] = asyncio.ensure_future(self._follow(tenant))

    async def _follow(self, tenant: str) -> None:
        index, delay = 0, self.backoff_initial
        while True:
            addr = self.addresses[index % len(self.addresses)]
            host, port = split_hostport(addr, what="masters")
            channel = Channel(host, port, ssl=self.ssl)
            try:
                if await self._subscribe(channel, tenant):
                    delay = self.backoff_initial
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # unreachable, UNAVAILABLE (behind), reset ...: next master
                log.info("route watch of %s on %s ended: %s: %s", tenant, addr, type(exc).__name__, exc)
            finally:
                channel.close()
                with self._lock:
                    self._synced.discard(tenant)
            index += 1
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max)

    async def _subscribe(self, channel: Channel, tenant: str) -> bool:
        """One subscription until the stream ends; True when it reached ``SNAPSHOT_DONE``."""
        stub = cp.ManagementServiceStub(channel, metadata=self.metadata or None)
        since = self.revision.get(tenant, 0)
        self.subscriptions.setdefault(tenant, []).append(since)
        fresh: dict[tuple[str, str], cp.EpochRoute] | None = {}
        async for update in stub.watch_routes(cp.WatchRoutesRequest(tenant_id=tenant, since_revision=since)):
            with self._lock:
                if fresh is not None:  # still in the snapshot
                    if update.kind == _KIND.SNAPSHOT_DONE:
                        self._tables[tenant] = fresh
                        self._synced.add(tenant)
                        self.snapshots[tenant] = self.snapshots.get(tenant, 0) + 1
                        fresh = None
                    else:
                        _apply(fresh, update)
                else:
                    _apply(self._tables.setdefault(tenant, {}), update)
                if update.revision:
                    self.revision[tenant] = max(self.revision.get(tenant, 0), update.revision)
        return fresh is None


def _apply(table: dict[tuple[str, str], cp.EpochRoute], update: cp.RouteUpdate) -> None:
    key = (update.route.dataset_id, update.route.epoch.epoch_id)
    if update.kind == _KIND.UPSERT:
        table[key] = update.route
    elif update.kind == _KIND.REMOVE:
        table.pop(key, None)
