"""Routes for the gateway: which workers serve which READY epoch, resolved and streamed.

A route exists for an epoch only while it is READY *and* has at least one
LOADED replica: nothing that is PENDING, LOADING, VALIDATING, RETIRING or
FAILED is ever routed, so a partial load or an epoch being retired can never
answer a query. Because only READY is routed, retiring an epoch (READY →
RETIRING) withdraws its route in the same fenced write that starts the
retirement; evictions are sent only afterwards.

Refresh is make-before-break: the new version's epoch loads beside the old
one and becomes READY in the same transaction that moves the old one to
RETIRING, so ``WatchRoutes`` subscribers see ``UPSERT new`` before ``REMOVE
old`` and a resolve never finds the slot empty. While both are routable (a
READY new epoch whose ``replaces`` names a still-READY old one), the old one is
hidden from ``resolve``: clients never read two versions of one slice.

The table is fed by ``ClusterState`` listeners (so it works the same on the
leader and on followers). Every update carries ``ClusterState.revision``: the
etcd revision of the change, which means the same on every master, so a
subscriber that reconnects to another master can tell whether that master is
behind it. The table keeps per-tenant subscriber channels for ``WatchRoutes``.
A subscriber that cannot keep up (its bounded buffer is full) is dropped and
must re-subscribe: the table never blocks state updates on a slow gateway.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from typing import NamedTuple

import trio

from leibrix.domain._errors import InvalidArgument, NotFound
from leibrix.domain._lifecycle import State
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.state._model import LOADED, ClusterState, Epoch, epoch_info
from leibrix.domain._validation import check_id

#: Updates buffered per WatchRoutes subscriber before it is dropped as too slow.
WATCH_BUFFER = 10_000


class Route(NamedTuple):
    """A routable epoch: its LOADED workers and a token that changes with that set.

    A tuple of strings (untracked by the cyclic garbage collector).
    """

    tenant_id: str
    dataset_id: str
    epoch_id: str
    workers: tuple[str, ...]
    token: str
    replaces: str


def route_of(e: Epoch | None) -> Route | None:
    """The route of an epoch, or None when it must not be routed (not READY, or no LOADED replica)."""
    if e is None or e.state is not State.READY:
        return None
    workers = tuple(sorted(r.worker_id for r in e.replicas if r.state == LOADED))
    if not workers:
        return None
    token = hashlib.sha256(f"{e.epoch_id}|{e.plan_id}|{','.join(workers)}".encode()).hexdigest()[:16]
    return Route(e.tenant_id, e.dataset_id, e.epoch_id, workers, token, e.replaces)


class RouteTable:
    """READY epochs' routes by tenant, kept current from ``ClusterState`` changes."""

    def __init__(self, state: ClusterState, addr: Callable[[str], str | None] = lambda w: None) -> None:
        self.state = state
        self.addr = addr
        self._routes: dict[str, dict[tuple[str, str], Route]] = {}
        self._subscribers: dict[str, set[trio.MemorySendChannel[cp.RouteUpdate]]] = {}
        for e in state.epochs.values():
            self._changed(None, e)
        state.listeners.append(self._changed)

    def routes(self, tenant_id: str) -> Mapping[tuple[str, str], Route]:
        """Every current route of a tenant, keyed by ``(dataset, epoch)``."""
        return self._routes.get(tenant_id, {})

    # -- changes
    def _changed(self, old: Epoch | None, new: Epoch | None) -> None:
        e = new or old
        assert e is not None
        before = self._routes.get(e.tenant_id, {}).get((e.dataset_id, e.epoch_id))
        after = route_of(new)
        if before == after:
            return
        per = self._routes.setdefault(e.tenant_id, {})
        if after is None:
            per.pop((e.dataset_id, e.epoch_id), None)
            if not per:
                del self._routes[e.tenant_id]
        else:
            per[(e.dataset_id, e.epoch_id)] = after
        subs = self._subscribers.get(e.tenant_id)
        if subs:
            if after is None:
                update = cp.RouteUpdate(kind=cp.RouteUpdateKind.REMOVE, route=self._wire_removed(old or e),
                                        revision=self.state.revision)
            else:
                update = cp.RouteUpdate(kind=cp.RouteUpdateKind.UPSERT, route=self.to_wire(after, new),
                                        revision=self.state.revision)
            for ch in list(subs):
                try:
                    ch.send_nowait(update)
                except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                    subs.discard(ch)
                    ch.close()

    # -- wire
    def to_wire(self, r: Route, e: Epoch) -> cp.EpochRoute:
        """``EpochRoute`` for a route (worker addresses looked up now)."""
        return cp.EpochRoute(
            dataset_id=r.dataset_id,
            epoch=epoch_info(e.epoch_id, e.start_ms, e.end_ms, e.dims),
            table_name=f"{r.dataset_id}__{r.epoch_id}",
            worker_ids=list(r.workers),
            worker_addrs=[self.addr(w) or "" for w in r.workers],
            token=r.token,
        )

    @staticmethod
    def _wire_removed(e: Epoch) -> cp.EpochRoute:
        return cp.EpochRoute(dataset_id=e.dataset_id, epoch=cp.EpochInfo(epoch_id=e.epoch_id),
                             table_name=f"{e.dataset_id}__{e.epoch_id}")

    # -- ResolveRoute
    def resolve(self, req: cp.ResolveRouteRequest) -> cp.ResolveRouteResponse:
        """READY epochs of one dataset overlapping the time range and matching the dimension filter.

        An unset time range means all time. Filter keys must be dimensions of
        the dataset (INVALID_ARGUMENT naming ``dimension_filter.<key>``
        otherwise); an epoch matches when its value for every filtered key is
        equal. Epochs replaced by a READY refresh are hidden.
        """
        tenant = check_id("tenant_id", req.tenant_id)
        dataset = check_id("dataset_id", req.dataset_id)
        ds = self.state.datasets.get((tenant, dataset))
        if ds is None:
            raise NotFound(f"dataset {tenant}/{dataset} not found")
        start, end = -math.inf, math.inf
        tr = req.time_range
        if tr.start_inclusive.timestamp() != 0 or tr.end_exclusive.timestamp() != 0:
            start = tr.start_inclusive.timestamp() * 1000
            end = tr.end_exclusive.timestamp() * 1000 if tr.end_exclusive.timestamp() != 0 else math.inf
            if end <= start:
                raise InvalidArgument("time_range.end_exclusive", "must be after start_inclusive")
        dims = {dp.column.name for dp in ds.request.source.partition.dimension_partitions}
        for key in req.dimension_filter:
            if key not in dims:
                raise InvalidArgument(f"dimension_filter.{key}", f"is not a dimension of {tenant}/{dataset} "
                                      f"(dimensions: {', '.join(sorted(dims)) or 'none'})")
        wanted = dict(req.dimension_filter)
        per = self._routes.get(tenant, {})
        matches: list[tuple[Route, Epoch]] = []
        for e in self.state.dataset_epochs(tenant, dataset):
            r = per.get((dataset, e.epoch_id))
            if r is None or e.end_ms <= start or e.start_ms >= end:
                continue
            if wanted and any(dict(e.dims).get(k) != v for k, v in wanted.items()):
                continue
            matches.append((r, e))
        replaced = {r.replaces for r, _ in matches if r.replaces}
        matches.sort(key=lambda m: (m[1].start_ms, m[1].dims))
        return cp.ResolveRouteResponse(routes=[self.to_wire(r, e) for r, e in matches if r.epoch_id not in replaced])

    # -- WatchRoutes
    def subscriber_count(self, tenant_id: str | None = None) -> int:
        """Open ``WatchRoutes`` subscriptions (whose receiving side is still open) of a tenant, or of all."""
        groups = self._subscribers.values() if tenant_id is None else [self._subscribers.get(tenant_id, set())]
        return sum(1 for subs in groups for ch in list(subs) if ch.statistics().open_receive_channels > 0)

    def subscribe(self, tenant_id: str) -> trio.MemoryReceiveChannel[cp.RouteUpdate]:
        """A channel that gets the tenant's current routes, ``SNAPSHOT_DONE``, then every change."""
        current = sorted(self._routes.get(tenant_id, {}).items())
        send, recv = trio.open_memory_channel[cp.RouteUpdate](len(current) + 1 + WATCH_BUFFER)
        for _, r in current:
            e = self.state.epochs[(r.tenant_id, r.dataset_id, r.epoch_id)]
            send.send_nowait(cp.RouteUpdate(kind=cp.RouteUpdateKind.UPSERT, route=self.to_wire(r, e),
                                            revision=self.state.revision))
        send.send_nowait(cp.RouteUpdate(kind=cp.RouteUpdateKind.SNAPSHOT_DONE, revision=self.state.revision))
        self._subscribers.setdefault(tenant_id, set()).add(send)
        return recv
