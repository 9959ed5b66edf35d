"""Workers follow leadership: real ``leibrix master`` processes (3, one etcd quorum) and real workers."""

from __future__ import annotations

import json
import signal
from datetime import datetime, timedelta, timezone

import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.store._member import TEST_TIMINGS
from leibrix.cli._local import LocalCluster
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.client._requests import time_partitioned_admission
from tests.support.hub import spawn_worker


async def mgmt(addr: str, method: str, request) -> tuple[object | None, GRPCError | None, dict]:
    """Call one ManagementService RPC; returns (reply, error, trailing metadata of the error)."""
    host, port = addr.rsplit(":", 1)

    async def call():
        channel = Channel(host, int(port))
        try:
            return await getattr(cp.ManagementServiceStub(channel), method)(request, timeout=10), None, {}
        except GRPCError as e:
            return None, e, {}
        finally:
            channel.close()

    async with trio_asyncio.open_loop():
        return await trio_asyncio.aio_as_trio(call)()


def leader_of(cluster: LocalCluster) -> str | None:
    for name in cluster.names:
        answer = cluster.healthz(name)
        if answer and answer[0] == 200 and json.loads(answer[1]).get("is_leader"):
            return name
    return None


async def wait_leader(cluster: LocalCluster, *, not_: str = "", timeout: float = 20) -> str:
    with trio.fail_after(timeout):
        while True:
            name = await trio.to_thread.run_sync(leader_of, cluster)
            if name and name != not_:
                return name
            await trio.sleep(0.1)


async def active_workers(addr: str) -> set[str]:
    reply, err, _ = await mgmt(addr, "list_workers", cp.ListWorkersRequest())
    if err is not None:
        return set()
    return {w.worker_id for w in reply.workers if w.state == cp.WorkerState.ACTIVE}


def admit_request() -> cp.AdmitDatasetRequest:
    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return time_partitioned_admission(
        "acme", "events", start=start, end=start + timedelta(days=6), catalog_uri="file:///warehouse",
        hints=cp.EstimateHints(bytes_per_epoch=4 << 20, rows_per_epoch=20_000, cpu_cores_per_epoch=0.1),
    )


async def ready_replicas(addr: str) -> dict[str, set[str]]:
    """epoch id -> workers holding it, for READY epochs only."""
    reply, err, _ = await mgmt(addr, "list_epochs", cp.ListEpochsRequest(tenant_id="acme", dataset_id="events"))
    if err is not None:
        return {}
    return {e.info.epoch_id: {r.worker_id for r in e.replicas} for e in reply.epochs
            if e.state == cp.EpochState.READY}


async def run_failover(tmp_path, nursery, n_masters: int, n_workers: int) -> None:
    async with LocalCluster(tmp_path, size=n_masters, timings=TEST_TIMINGS, lease_ttl=1) as cluster:
        await cluster.start_all()
        leader = await wait_leader(cluster)
        addrs = {n: cluster.specs[n].grpc for n in cluster.names}
        masters = ",".join(addrs.values())
        async with trio.open_nursery() as workers:
            procs = [await spawn_worker(workers, masters, f"w{i}") for i in range(n_workers)]
            ids = {f"w{i}" for i in range(n_workers)}
            with trio.fail_after(20):
                while await active_workers(addrs[leader]) != ids:
                    await trio.sleep(0.2)
            # real admission: 6 daily epochs, 2 replicas each, loaded by the real workers
            _, err, _ = await mgmt(addrs[leader], "upsert_tenant_quota", cp.TenantQuota(
                tenant_id="acme", max_datasets=5, max_epochs=100, default_replication=2))
            assert err is None, err
            reply, err, _ = await mgmt(addrs[leader], "admit_dataset", admit_request())
            assert err is None and reply.status == cp.AdmitDatasetResponseStatus.ACCEPTED, (err, reply)
            with trio.fail_after(30):
                while len(before := await ready_replicas(addrs[leader])) < 6 or any(
                        len(w) < 2 for w in before.values()):
                    await trio.sleep(0.2)
            # a follower does not answer worker RPCs: it redirects to the leader
            follower = next(n for n in cluster.names if n != leader)
            _, err, _ = await mgmt(addrs[follower], "list_workers", cp.ListWorkersRequest())
            assert err is not None and err.status is Status.UNAVAILABLE
            # kill -9 the leader: every worker re-registers with the new one
            cluster.signal(leader, signal.SIGKILL)
            new = await wait_leader(cluster, not_=leader)
            with trio.fail_after(30):
                while await active_workers(addrs[new]) != ids:
                    await trio.sleep(0.2)
            # the new leader reconciled the inventories: every epoch is still READY on the same workers
            await trio.sleep(1.0)
            assert await ready_replicas(addrs[new]) == before
            reply, err, _ = await mgmt(addrs[new], "get_worker", cp.GetWorkerRequest(worker_id="w0"))
            assert err is None and reply.state == cp.WorkerState.ACTIVE
            _, err, _ = await mgmt(addrs[new], "get_worker", cp.GetWorkerRequest(worker_id="nope"))
            assert err is not None and err.status is Status.NOT_FOUND
            # DrainWorker through the API: its replicas move make-before-break, then it may exit
            _, err, _ = await mgmt(addrs[new], "drain_worker", cp.DrainWorkerRequest(worker_id="w0", max_parallel=-1))
            assert err is not None and err.status is Status.INVALID_ARGUMENT and "max_parallel" in err.message
            reply, err, _ = await mgmt(addrs[new], "drain_worker",
                                       cp.DrainWorkerRequest(worker_id="w0", deadline_s=5, max_parallel=1))
            assert err is None, err
            assert reply.state == cp.WorkerState.DRAINED and reply.remaining == 0 and not reply.deadline_exceeded, reply
            assert reply.moved_make_before_break == len([e for e, ws in before.items() if "w0" in ws])
            after = await ready_replicas(addrs[new])
            assert set(after) == set(before) and all(len(ws) == 2 and "w0" not in ws for ws in after.values())
            with trio.fail_after(10):
                assert await procs[0].wait() == 0  # drain_command: the worker exits cleanly
            workers.cancel_scope.cancel()


async def test_workers_follow_the_new_leader(tmp_path, nursery) -> None:
    await run_failover(tmp_path, nursery, n_masters=3, n_workers=3)


@pytest.mark.slow
async def test_workers_follow_the_new_leader_3_masters_5_workers(tmp_path, nursery) -> None:
    await run_failover(tmp_path, nursery, n_masters=3, n_workers=5)
