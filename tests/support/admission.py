"""Harness for the admission tests: requests, RPCs and views of a master's admission state.

* :func:`rpc` calls a ManagementService RPC over real gRPC (following
  ``leibrix-leader`` redirects) and returns the reply, or raises ``GRPCError``.
* :func:`admission` builds an ``AdmitDatasetRequest`` (days × regions) whose
  source is the real Iceberg table of :mod:`tests.support.sample_source`
  (registered under the dataset's name), unless ``catalog_uri`` is given;
  :func:`quota` a ``TenantQuota``.
* :func:`states`, :func:`routed`, :func:`watch_routes` read what a master decided;
  :func:`all_ready` waits until a dataset's epochs are all READY.

Masters and workers are launched by :mod:`tests.support.cluster`, waits are
:func:`tests.support.poll.eventually`. ``start_master``, ``leading``,
``workers``, ``wait_for`` and ``_addr`` are re-exported here under their old
names for modules not yet migrated; new code imports them from there.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from grpclib.exceptions import GRPCError

from leibrix.store._ports import free_hostport
from leibrix.client._call import call
from leibrix.domain._validation import ID_PATTERN
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.client._requests import time_partitioned_admission
from tests.support.cluster import leading, start_master, workers
from tests.support.poll import eventually
from tests.support.sample_source import sample_source

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
MiB = 1 << 20


#: Old names, kept for modules not yet migrated (plain aliases of the helpers in cluster/poll).
_addr = free_hostport
wait_for = eventually
# Built now, while no event loop runs: writing the table blocks for about a second.
sample_source()
__all__ = ["MiB", "T0", "_addr", "admission", "all_ready", "leading", "quota", "routed", "rpc", "start_master", "states",
           "wait_for", "watch_routes", "workers"]


async def rpc(master: Master | str, name: str, request: Any, timeout: float = 10.0) -> Any:
    addr = master if isinstance(master, str) else master.config.grpc_listen
    try:
        reply, _ = await call(addr, lambda stub: getattr(stub, name)(request), timeout=timeout)
    except BaseExceptionGroup as group:  # trio-asyncio's loop nursery wraps the client's error
        leaves = _leaves(group)
        if len(leaves) == 1 and isinstance(leaves[0], GRPCError):
            raise leaves[0] from None
        raise
    return reply


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


def quota(tenant: str = "acme", **kw: Any) -> cp.TenantQuota:
    return cp.TenantQuota(tenant_id=tenant, **kw)


def admission(tenant: str = "acme", dataset: str = "orders", *, days: int = 1, regions: tuple[str, ...] = ("eu",),
              start: datetime = T0, version: str | None = None, bytes_per_epoch: int = 16 * MiB, rows: int = 100,
              hints: cp.EstimateHints | None = None, **kw: Any) -> cp.AdmitDatasetRequest:
    """AdmitDataset for ``days`` daily epochs from ``start`` × ``regions``.

    Without ``catalog_uri``/``database`` in ``kw`` the source is the test
    session's Iceberg table (:func:`tests.support.sample_source.sample_source`),
    registered under the dataset's name when that is a well-formed id, so
    ``source.table`` stays the dataset id.
    """
    named = "catalog_uri" in kw or "database" in kw
    if not named:
        source = sample_source()
        kw.update(catalog_uri=source.uri, database=source.database)
        if ID_PATTERN.fullmatch(dataset):
            source.table_for(dataset)
    return time_partitioned_admission(
        tenant, dataset, start=start, end=start + timedelta(days=days),
        dimensions={"region": regions} if regions else None, version=version,
        hints=hints or cp.EstimateHints(bytes_per_epoch=bytes_per_epoch, rows_per_epoch=rows), **kw,
    )


def states(master: Master, tenant: str = "acme", dataset: str = "orders") -> dict[str, str]:
    return {e.epoch_id: e.state.name for e in master.parts.admission.state.dataset_epochs(tenant, dataset)}


async def watch_routes(master: Master | str, tenant: str, until: Callable[[list[cp.RouteUpdate]], bool],
                       timeout: float = 30.0) -> list[cp.RouteUpdate]:
    """Stream ``WatchRoutes`` until ``until(updates)`` holds; returns every update received.

    The stream is consumed inside one asyncio coroutine that ends by itself:
    an ``aio_as_trio`` iterator must never be cancelled from Trio.
    """
    updates: list[cp.RouteUpdate] = []

    async def consume(stub: cp.ManagementServiceStub) -> list[cp.RouteUpdate]:
        async for update in stub.watch_routes(cp.WatchRoutesRequest(tenant_id=tenant), timeout=timeout):
            updates.append(update)
            if until(updates):
                break
        return updates

    addr = master if isinstance(master, str) else master.config.grpc_listen
    reply, _ = await call(addr, consume, timeout=timeout)
    return reply


def routed(master: Master, tenant: str = "acme", dataset: str = "orders") -> set[str]:
    """Epoch ids the master's route table serves for one dataset right now."""
    return {e for (d, e) in master.parts.admission.routes.routes(tenant) if d == dataset}


async def all_ready(master: Master, tenant: str = "acme", dataset: str = "orders", n: int | None = None,
                    timeout: float = 30.0) -> dict[str, str]:
    """Wait until the dataset has epochs (``n`` of them if given), every one READY; returns their states."""

    def done(s: dict[str, str]) -> bool:
        return bool(s) and (n is None or len(s) == n) and set(s.values()) == {"READY"}

    return await eventually(lambda: states(master, tenant, dataset), until=done, timeout=timeout,
                            what=f"{n if n is not None else 'all'} epoch(s) of {tenant}/{dataset} READY")
