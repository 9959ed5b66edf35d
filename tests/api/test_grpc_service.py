"""The gRPC surface of in-process masters on a real etcd: errors, redirects, Health, Reflection, both stream paths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpclib.const
import pytest
import trio
import trio_asyncio
from google.protobuf import descriptor_pb2
from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.v1.reflection_grpc import ServerReflectionStub
from grpclib.reflection.v1.reflection_pb2 import ServerReflectionRequest

from leibrix.api._cluster import ClusterApi, ManagementService
from leibrix.api._server import GrpcServer, HealthFlag, trio_rpc
from leibrix.client._call import call
from leibrix.domain._errors import InvalidArgument
from leibrix.master._compose import Parts
from leibrix.master._config import MasterConfig
from leibrix.master._master import Master
from leibrix.store._etcd import EtcdClient, EtcdUnavailable, Put
from leibrix.store._ports import free_port_url
from leibrix.wire._grpc import LEADER_METADATA
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import management_pb2
from tests.support.raw_grpc import raw_unary


def _addr() -> str:
    return free_port_url().removeprefix("http://")


class Area(cp.ManagementServiceBase):
    """A ManagementService area of these tests: it acts on the master it is given."""

    def __init__(self, master: Master) -> None:
        self.master = master


class QuotaWriteApi(Area):
    """A minimal fenced write for these tests: store the quota under tenants/<id>."""

    @trio_rpc
    async def upsert_tenant_quota(self, request: cp.TenantQuota) -> cp.CommonResponse:
        if not request.tenant_id:
            raise InvalidArgument("tenant_id", "must not be empty")
        if request.tenant_id == "etcd-down":
            raise EtcdUnavailable("simulated: no endpoint answered")
        ctx = self.master.leader_context()
        value = management_pb2.TenantQuota(tenant_id=request.tenant_id, max_datasets=request.max_datasets)
        await ctx.writer.commit([Put(ctx.keys.tenant(request.tenant_id), value.SerializeToString())])
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS, message=self.master.config.name)


class EchoControlPlane(cp.ControlPlaneServiceBase):
    """Echoes every worker message back (proves the stream is routed, on either path).

    Runs on grpclib's asyncio side: a bidi handler consumes grpclib's request iterator.
    """

    async def coordinate_worker(self, messages: Any) -> AsyncIterator[cp.EventStreamMessage]:
        async for message in messages:
            yield cp.EventStreamMessage(event_id="echo:" + message.event_id)


async def start_master(
    nursery: trio.Nursery, etcd_endpoint: str, name: str, *, areas: tuple[type[Area], ...] = ()
) -> Master:
    """A bare master (no extension modules: this file tests the shell) on an external etcd."""
    config = MasterConfig(
        name=name,
        cluster="grpc-test",
        grpc_listen=_addr(),
        http_listen=_addr(),
        etcd_endpoints=[etcd_endpoint],
        lease_ttl=1,
    ).validate()

    def compose(m: Master) -> Parts:
        return Parts(management=ManagementService([ClusterApi(m), *(area(m) for area in areas)]))

    master = Master(config, compose=compose)
    await nursery.start(master.run)
    return master


async def wait_leader(*masters: Master) -> tuple[Master, list[Master]]:
    with trio.fail_after(10):
        while True:
            leaders = [m for m in masters if m.is_leader]
            if len(leaders) == 1 and all(m.leader is not None and m.leader.id == leaders[0].config.name for m in masters):
                return leaders[0], [m for m in masters if m is not leaders[0]]
            await trio.sleep(0.02)


async def test_follower_write_is_unavailable_with_leader_metadata_and_ctl_follows_it(
    etcd_server: Any, etcd: EtcdClient, nursery: trio.Nursery
) -> None:
    a = await start_master(nursery, etcd_server.endpoint, "a", areas=(QuotaWriteApi,))
    b = await start_master(nursery, etcd_server.endpoint, "b", areas=(QuotaWriteApi,))
    leader, (follower,) = await wait_leader(a, b)

    _, error, trailers = await raw_unary(
        follower.config.grpc_listen,
        "/leibrix_cp.ManagementService/UpsertTenantQuota",
        cp.TenantQuota(tenant_id="t1", max_datasets=3),
        cp.CommonResponse,
    )
    assert error is not None and error.status is grpclib.const.Status.UNAVAILABLE
    assert trailers.get(LEADER_METADATA) == leader.config.grpc_listen
    assert await etcd.get(follower.keys.tenant("t1")) is None, "a follower must not write"

    response, answered = await call(
        follower.config.grpc_listen, lambda stub: stub.upsert_tenant_quota(cp.TenantQuota(tenant_id="t1", max_datasets=3))
    )
    assert answered == leader.config.grpc_listen
    assert response.status == cp.ResponseStatus.SUCCESS and response.message == leader.config.name
    kv = await etcd.get(leader.keys.tenant("t1"))
    assert kv is not None and management_pb2.TenantQuota.FromString(kv.value).max_datasets == 3


async def test_api_errors_keep_their_status_and_etcd_outage_is_unavailable(etcd_server: Any, nursery: trio.Nursery) -> None:
    master = await start_master(nursery, etcd_server.endpoint, "solo", areas=(QuotaWriteApi,))
    await wait_leader(master)
    path = "/leibrix_cp.ManagementService/UpsertTenantQuota"
    _, error, _ = await raw_unary(master.config.grpc_listen, path, cp.TenantQuota(), cp.CommonResponse)
    assert error is not None and error.status is grpclib.const.Status.INVALID_ARGUMENT
    assert error.message == "tenant_id: must not be empty"
    _, error, trailers = await raw_unary(master.config.grpc_listen, path, cp.TenantQuota(tenant_id="etcd-down"), cp.CommonResponse)
    assert error is not None and error.status is grpclib.const.Status.UNAVAILABLE
    assert "state store is unreachable" in (error.message or "")
    assert LEADER_METADATA not in trailers


async def test_cluster_status_health_and_reflection(etcd_server: Any, nursery: trio.Nursery) -> None:
    master = await start_master(nursery, etcd_server.endpoint, "solo")
    await wait_leader(master)
    status, answered = await call(master.config.grpc_listen, lambda stub: stub.get_cluster_status(cp.GetClusterStatusRequest()))
    assert answered == master.config.grpc_listen
    assert status.self_id == "solo" and status.cluster == "grpc-test" and status.healthy
    assert status.leader.id == "solo" and status.leader.grpc_addr == master.config.grpc_listen
    assert status.term == master.leader.token > 0
    assert [(m.id, m.is_leader) for m in status.masters] == [("solo", True)]
    assert len(status.etcd_members) == 1 and status.etcd_members[0].is_leader
    assert status.etcd_version.startswith("3.")

    host, port = master.config.grpc_listen.rsplit(":", 1)

    async def probe() -> tuple[int, list[str], list[str]]:
        channel = Channel(host, int(port))
        try:
            health = await HealthStub(channel).Check(HealthCheckRequest(service="leibrix_cp.ManagementService"))
            async with ServerReflectionStub(channel).ServerReflectionInfo.open() as stream:
                await stream.send_message(ServerReflectionRequest(list_services=""))
                listed = await stream.recv_message()
                await stream.send_message(ServerReflectionRequest(file_containing_symbol="leibrix_cp.ManagementService"))
                files = await stream.recv_message()
                await stream.end()
            services = [s.name for s in listed.list_services_response.service]
            methods = []
            for raw in files.file_descriptor_response.file_descriptor_proto:
                proto = descriptor_pb2.FileDescriptorProto.FromString(raw)
                methods += [m.name for s in proto.service if s.name == "ManagementService" for m in s.method]
            return health.status, services, methods
        finally:
            channel.close()

    async with trio_asyncio.open_loop():
        health, services, methods = await trio_asyncio.aio_as_trio(probe)()
    assert health == HealthCheckResponse.SERVING
    assert "leibrix_cp.ManagementService" in services and "grpc.health.v1.Health" in services
    assert {"AdmitDataset", "UpsertTenantQuota", "GetClusterStatus"} <= set(methods)


async def test_health_is_not_serving_while_shutting_down(etcd_server: Any, nursery: trio.Nursery) -> None:
    master = await start_master(nursery, etcd_server.endpoint, "solo")
    await wait_leader(master)
    with trio.fail_after(5):
        while not master.health.serving:
            await trio.sleep(0.02)
    await master.shutdown()
    assert not master.health.serving
    assert master.health_report()[0] is False


async def test_control_plane_is_served_on_both_paths(nursery: trio.Nursery) -> None:
    health = HealthFlag()
    addr = _addr()
    host, port = addr.rsplit(":", 1)
    await nursery.start(GrpcServer([EchoControlPlane()], health).serve, host, int(port))

    async def exchange(path: str) -> str:
        channel = Channel(host, int(port))
        try:
            async with channel.request(
                path, grpclib.const.Cardinality.STREAM_STREAM, cp.EventStreamMessage, cp.EventStreamMessage
            ) as stream:
                await stream.send_message(cp.EventStreamMessage(event_id="e1"))
                reply = await stream.recv_message()
                await stream.end()
                return reply.event_id
        finally:
            channel.close()

    async with trio_asyncio.open_loop():
        for path in ("/leibrix_cp.ControlPlaneService/CoordinateWorker", "/control_plane.ControlPlaneService/CoordinateWorker"):
            assert await trio_asyncio.aio_as_trio(exchange)(path) == "echo:e1"


def test_two_areas_implementing_one_rpc_is_an_error() -> None:
    class Again(Area):
        async def get_cluster_status(self, request: Any) -> Any:
            raise AssertionError

    with pytest.raises(TypeError, match="get_cluster_status is implemented by both"):
        ManagementService([ClusterApi(None), Again(None)])  # type: ignore[arg-type]
    service = ManagementService([ClusterApi(None), QuotaWriteApi(None)])  # type: ignore[arg-type]
    mapping = service.__mapping__()
    assert mapping["/leibrix_cp.ManagementService/UpsertTenantQuota"].func.__self__.__class__ is QuotaWriteApi
    assert mapping["/leibrix_cp.ManagementService/GetClusterStatus"].func.__self__.__class__ is ClusterApi
    assert mapping["/leibrix_cp.ManagementService/GetTenant"].func.__self__.__class__ is cp.ManagementServiceBase


class StreamingApi(Area):
    """A Trio async-generator RPC: three updates, then waits until the client leaves."""

    closed = trio.Event()

    @trio_rpc
    async def watch_routes(self, request: cp.WatchRoutesRequest) -> AsyncIterator[cp.RouteUpdate]:
        if not request.tenant_id:
            raise InvalidArgument("tenant_id", "must not be empty")
        try:
            for revision in range(1, 4):
                await trio.sleep(0.01)
                yield cp.RouteUpdate(kind=cp.RouteUpdateKind.UPSERT, revision=revision)
            await trio.sleep_forever()
        finally:
            StreamingApi.closed.set()


async def test_trio_server_streaming_rpc_streams_maps_errors_and_is_cancelled_when_the_client_leaves(
    etcd_server: Any, nursery: trio.Nursery
) -> None:
    StreamingApi.closed = trio.Event()
    master = await start_master(nursery, etcd_server.endpoint, "solo", areas=(StreamingApi,))
    host, port = master.config.grpc_listen.rsplit(":", 1)

    async def watch(tenant: str) -> list[int] | GRPCError:
        channel = Channel(host, int(port))
        try:
            async with cp.ManagementServiceStub(channel).channel.request(
                "/leibrix_cp.ManagementService/WatchRoutes",
                grpclib.const.Cardinality.UNARY_STREAM,
                cp.WatchRoutesRequest,
                cp.RouteUpdate,
            ) as stream:
                await stream.send_message(cp.WatchRoutesRequest(tenant_id=tenant), end=True)
                revisions = []
                try:
                    while len(revisions) < 3:
                        update = await stream.recv_message()
                        assert update is not None
                        revisions.append(update.revision)
                except GRPCError as exc:
                    return exc
                await stream.cancel()
                return revisions
        finally:
            channel.close()

    async with trio_asyncio.open_loop():
        assert await trio_asyncio.aio_as_trio(watch)("t1") == [1, 2, 3]
        error = await trio_asyncio.aio_as_trio(watch)("")
    assert isinstance(error, GRPCError) and error.status is grpclib.const.Status.INVALID_ARGUMENT
    with trio.fail_after(5):
        await StreamingApi.closed.wait()
