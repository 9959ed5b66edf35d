"""A worker that stops reading its stream is shed: once its bounded outbound queue is full the master ends the
stream (RESOURCE_EXHAUSTED, "outbound queue full"), marks the worker SUSPECT and keeps none of its messages."""

from __future__ import annotations

from typing import Any

import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Cardinality
from grpclib.exceptions import GRPCError, StreamTerminatedError

from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._grpc import COORDINATE_WORKER
from tests.support.admission import MiB, admission, quota, rpc
from tests.support.cluster import leading, start_master
from tests.support.poll import eventually

QUEUE = 8


async def test_a_worker_that_stops_reading_is_shed_resource_exhausted(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint, worker_outbound_queue=QUEUE))
    registered = trio.Event()
    shed = trio.Event()
    outcome: dict[str, Any] = {}

    async def stalled_worker() -> None:
        """Registers, reads the ack, then reads nothing until the master has given up on it."""
        host, port = m.config.grpc_listen.rsplit(":", 1)
        channel = Channel(host, int(port))
        received = 0
        try:
            async with channel.request(COORDINATE_WORKER, Cardinality.STREAM_STREAM, pb.EventStreamMessage,
                                       pb.EventStreamMessage) as stream:
                reg = pb.EventStreamMessage(worker_id="slow")
                reg.register_event.worker.node_id = "slow"
                reg.register_event.worker.addr = "127.0.0.1:1"
                reg.register_event.capacity.memory_bytes = 64 << 30
                reg.register_event.capacity.cpu_cores = 64
                await stream.send_message(reg)
                ack = await stream.recv_message()
                assert ack is not None and ack.common_ack.event_type == "registration_ack"
                registered.set()
                await trio_asyncio.trio_as_aio(shed.wait)()
                try:
                    while await stream.recv_message() is not None:
                        received += 1
                except (GRPCError, StreamTerminatedError):
                    pass  # the stream the master ended
                await stream.cancel()
        except GRPCError as e:
            outcome.update(status=e.status, message=e.message)
        finally:
            outcome["received"] = received
            channel.close()

    async with trio_asyncio.open_loop():
        async with trio.open_nursery() as inner:
            inner.start_soon(trio_asyncio.aio_as_trio(stalled_worker))
            await registered.wait()
            await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
            hints = cp.EstimateHints(bytes_per_epoch=MiB, rows_per_epoch=100, cpu_cores_per_epoch=0.001)
            await rpc(m, "admit_dataset", admission(days=400, hints=hints))  # 400 assignments, none read
            hub = m.parts.hub
            await eventually(lambda: hub.state("slow"), until=lambda s: s == cp.WorkerState.SUSPECT, timeout=30,
                             what="the stalled worker shed (SUSPECT)")
            assert hub.members["slow"].session is None  # nothing more is queued for it
            shed.set()
    # what it could still read: what flow control had let through, plus at most the queue
    assert outcome["received"] < 400, outcome
