"""Harness for the admission tests: real masters (in-process, real etcd, real gRPC) and real workers.

* :func:`start_master` runs a :class:`leibrix.master._master.Master` on free loopback
  ports against the ``etcd_server`` fixture (its composition root wires the
  admission service, the ManagementService areas and the worker hub).
* :func:`rpc` calls a ManagementService RPC over real gRPC (following
  ``leibrix-leader`` redirects) and returns the reply, or raises ``GRPCError``.
* :func:`admission` builds an ``AdmitDatasetRequest`` (days × regions).
* ``spawn_worker`` (from the hub harness) runs ``python -m leibrix worker``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import trio
from grpclib.exceptions import GRPCError

from leibrix.master._config import MasterConfig
from leibrix.client._call import call
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.client._requests import time_partitioned_admission

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
MiB = 1 << 20


def _addr() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def start_master(nursery: trio.Nursery, endpoint: str, name: str = "m1", cluster: str = "adm") -> Master:
    config = MasterConfig(name=name, cluster=cluster, grpc_listen=_addr(), http_listen=_addr(),
                          etcd_endpoints=[endpoint], lease_ttl=1).validate()
    master = Master(config)
    await nursery.start(master.run)
    return master


async def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.02)


async def leading(master: Master) -> None:
    """Wait until ``master`` leads and its admission service runs."""
    await wait_for(lambda: master.is_leader and master.parts.admission.admissions is not None, what="leadership")


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


async def workers(nursery: trio.Nursery, master: Master, *ids: str, memory: str = "256MiB",
                  pool: str = "") -> dict[str, trio.Process]:
    """Start real worker processes (reaped by ``nursery``) and wait until the leader sees them ACTIVE."""
    from tests.support.hub import run_process, worker_cmd

    extra = ("--pool", pool) if pool else ()
    procs = {wid: await nursery.start(run_process, worker_cmd(master.config.grpc_listen, wid, *extra, memory=memory))
             for wid in ids}
    hub = master.parts.hub
    await wait_for(lambda: len(hub.eligible(pool or None)) >= len(ids), timeout=30, what="workers")
    return procs
