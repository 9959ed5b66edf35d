"""A raw protocol worker for end-to-end tests: it speaks ``CoordinateWorker`` itself, so a test decides
exactly what it reports (and when), which the reference worker never gets wrong."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import trio
import trio_asyncio
from google.protobuf import json_format
from grpclib.client import Channel
from grpclib.const import Cardinality

from leibrix.domain import _schema
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._grpc import COORDINATE_WORKER
from tests.support.admission import wait_for

ACTIVE = cp.WorkerState.ACTIVE


@dataclasses.dataclass
class RawWorker:
    """A worker speaking ``CoordinateWorker`` directly: it answers every ``data_assignment`` with a
    COMPLETED report whose rows and bytes match the plan and whose schema fingerprint ``answer`` picks
    (``None``: it stays silent, as a worker that is still loading). It registers with ``inventory``."""

    worker_id: str
    answer: Callable[[pb.DataAssignmentEvent], str | None]
    plans: list[pb.DataAssignmentEvent] = dataclasses.field(default_factory=list)
    registered: bool = False
    #: ``(dataset_id, epoch_id)`` of every ``evict_epoch`` the master sent, in order.
    evicts: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    inventory: list[pb.InventoryEntry] = dataclasses.field(default_factory=list)
    #: Seconds between receiving an assignment and reporting it (heartbeats go on meanwhile).
    delay_s: float = 0.0
    #: Seconds between heartbeats, the first one this long after the ack (None: the ack's interval).
    beat_s: float | None = None
    #: Heartbeats sent before it falls silent with its stream open (None: it never does).
    max_beats: int | None = None
    #: Heartbeats sent so far.
    beats: int = 0

    async def run(self, addr: str, stop: asyncio.Event) -> None:
        """One session (asyncio, under trio-asyncio) until ``stop`` is set; ends by itself."""
        host, port = addr.rsplit(":", 1)
        channel = Channel(host, int(port))
        stream = channel.request(COORDINATE_WORKER, Cardinality.STREAM_STREAM, pb.EventStreamMessage,
                                 pb.EventStreamMessage)
        lock = asyncio.Lock()
        tasks: list[asyncio.Task] = []

        async def send(msg: pb.EventStreamMessage) -> None:
            async with lock:
                await stream.send_message(msg)

        async def beat(interval: float) -> None:
            while self.max_beats is None or self.beats < self.max_beats:
                await asyncio.sleep(interval)
                hb = pb.EventStreamMessage(worker_id=self.worker_id)
                hb.heartbeat_event.memory_used_bytes = 0
                await send(hb)
                self.beats += 1

        async def serve() -> None:
            while (msg := await stream.recv_message()) is not None:
                if msg.WhichOneof("payload") == "common_ack" and msg.common_ack.event_type == "evict_epoch":
                    f = msg.common_ack.payload.fields
                    self.evicts.append((f["dataset_id"].string_value, f["epoch_id"].string_value))
                if msg.WhichOneof("payload") != "data_assignment":
                    continue
                a = msg.data_assignment
                self.plans.append(a)
                fingerprint = self.answer(a)
                if fingerprint is None:
                    continue
                await asyncio.sleep(self.delay_s)
                st = pb.EventStreamMessage(worker_id=self.worker_id)
                u = st.data_pull_status_update
                u.dataset_id, u.epoch_id, u.plan_id = a.dataset_id, a.epoch_id, a.load_plan.plan_id
                u.status = pb.DataPullStatusUpdateEvent.COMPLETED
                u.rows, u.bytes = a.load_plan.expected_rows, a.load_plan.expected_bytes // 2
                u.schema_fingerprint = fingerprint
                await send(st)

        try:
            async with stream:
                reg = pb.EventStreamMessage(worker_id=self.worker_id)
                reg.register_event.worker.node_id = self.worker_id
                reg.register_event.worker.addr = "127.0.0.1:1"
                reg.register_event.capacity.memory_bytes = 1 << 30
                reg.register_event.capacity.cpu_cores = 4
                reg.register_event.inventory.extend(self.inventory)
                await stream.send_message(reg)
                ack = await stream.recv_message()
                assert ack is not None and ack.common_ack.event_type == "registration_ack", ack
                payload = json_format.MessageToDict(ack.common_ack.payload)
                self.registered = True
                tasks = [asyncio.ensure_future(beat(self.beat_s or float(payload["heartbeat_interval_s"]))),
                         asyncio.ensure_future(serve())]
                await stop.wait()
                await stream.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            channel.close()


def planned(a: pb.DataAssignmentEvent) -> str:
    """The fingerprint of the schema an assignment's plan carries (what an honest worker reports)."""
    return _schema.fingerprint(_schema.from_ipc(a.load_plan.arrow_schema))


@asynccontextmanager
async def connected(master: Any, raw: RawWorker) -> AsyncIterator[RawWorker]:
    """Run one session of ``raw`` against ``master`` for the body of the ``async with``: it is registered
    and ACTIVE on entry; the session ends (its stream cancelled, its tasks reaped) on exit."""
    async with trio_asyncio.open_loop():
        stop = asyncio.Event()
        async with trio.open_nursery() as inner:
            inner.start_soon(trio_asyncio.aio_as_trio(raw.run), master.config.grpc_listen, stop)
            try:
                await wait_for(lambda: raw.registered and master.parts.hub.state(raw.worker_id) == ACTIVE,
                               what=f"{raw.worker_id} registered and ACTIVE")
                yield raw
            finally:
                stop.set()
