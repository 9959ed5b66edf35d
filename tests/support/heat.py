"""Harness for the heat-checkpoint and janitor tests: masters with their housekeeping options set.

* :func:`start_master` runs an in-process master (real etcd, real gRPC) with
  any ``MasterConfig`` options; :func:`crashable_master` does the same inside a
  cancel scope the test can cancel (the whole task tree ends at once);
* :func:`master_process` runs ``python -m leibrix master`` as a child process,
  so a test can SIGKILL it (no ``finally`` of it runs: a real crash);
* :func:`heat_records` lists ``heat/`` straight from etcd.
"""

from __future__ import annotations

import sys
from typing import Any

import trio

from leibrix.master._config import MasterConfig
from leibrix.store._etcd import EtcdClient
from leibrix.cli._local import free_hostport
from leibrix.master._master import Master
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Keys
from tests.support.hub import run_process

CLUSTER = "hk"
KEYS = Keys(CLUSTER)


def config(endpoint: str, name: str, **options: Any) -> MasterConfig:
    """A master on free loopback ports against ``endpoint`` (lease 1 s), with ``options`` set."""
    return MasterConfig(name=name, cluster=CLUSTER, grpc_listen=free_hostport(), http_listen=free_hostport(),
                        etcd_endpoints=[endpoint], lease_ttl=1, **options).validate()


async def start_master(nursery: trio.Nursery, endpoint: str, name: str = "m1", **options: Any) -> Master:
    """An in-process master, serving once this returns."""
    master = Master(config(endpoint, name, **options))
    await nursery.start(master.run)
    return master


async def crashable_master(nursery: trio.Nursery, endpoint: str, name: str, **options: Any
                           ) -> tuple[Master, trio.CancelScope]:
    """An in-process master whose whole task tree ends when the returned scope is cancelled."""
    holder: dict[str, Any] = {}

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                holder["m"] = await start_master(inner, endpoint, name, **options)
                holder["scope"] = scope
                task_status.started()

    await nursery.start(run)
    return holder["m"], holder["scope"]


async def master_process(nursery: trio.Nursery, endpoint: str, name: str, **options: Any
                         ) -> tuple[trio.Process, str]:
    """``python -m leibrix master`` with ``options`` as flags; returns the process (reaped by ``nursery``)
    and its gRPC address."""
    cfg = config(endpoint, name, **options)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    cmd = [sys.executable, "-m", "leibrix", "master", f"--name={name}", f"--cluster={CLUSTER}",
           f"--grpc-listen={cfg.grpc_listen}", f"--http-listen={cfg.http_listen}", f"--etcd-endpoints={endpoint}",
           "--lease-ttl=1", "--log-level=warning", *flags]
    return await nursery.start(run_process, cmd), cfg.grpc_listen


async def leader_id(etcd: EtcdClient) -> str | None:
    """The id of the master holding the leader key (None: nobody)."""
    kv = await etcd.get(KEYS.leader)
    return state_pb2.MasterRecord.FromString(kv.value).id if kv is not None else None


async def heat_records(etcd: EtcdClient) -> dict[str, tuple[state_pb2.HeatRecord, int]]:
    """``"t/d/e"`` -> (stored ``HeatRecord``, mod revision), read from etcd."""
    prefix = KEYS.root + Keys.HEAT
    kvs, _ = await etcd.get_prefix(prefix)
    return {kv.key[len(prefix):]: (state_pb2.HeatRecord.FromString(kv.value), kv.mod_revision) for kv in kvs}


async def eventually(predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
    """Poll the async ``predicate`` until it returns something truthy; returns that."""
    with trio.move_on_after(timeout):
        while not (result := await predicate()):
            await trio.sleep(0.02)
        return result
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
