"""A client that behaves as the Rust leibrix-worker's control-plane session does, with the worker's own types.

The messages are compiled at test time (``grpc_tools.protoc`` into a temporary
directory) from ``tests/support/rust_proto/``: the worker's packages
``common`` and ``control_plane``, field names and numbers as the worker has
them, so everything the master sends is decoded as the worker decodes it, not
with Leibrix's own classes. The packages and file names differ from ours
(``leibrix_cp``), so both sets of descriptors live in one process.

:class:`RustWorker` follows the worker's session loop on its defaults:

* it dials ONE master address on the worker's path
  ``/control_plane.ControlPlaneService/CoordinateWorker``;
* registers with ``node_id``, ``addr`` = the master's address (the worker
  sends that, not its own), labels ``{"tenant_id": <its tenant>}`` and no
  capacity, and stamps ``tenant_id``/``worker_id`` on every envelope;
* waits at most ``registration_timeout`` for the first message: a
  ``common_ack`` ``registration_ack`` is the ack, one whose type contains
  ``reject`` fails the start, anything else is taken as an ack;
* heartbeats (empty ``HeartbeatEvent``) every ``heartbeat_s`` on its own
  clock, the first one a full period after registering, whatever interval the
  ack offers (10 s on the worker's defaults; tests shrink it);
* decodes each ``data_assignment`` into the fields the worker reads (a plan
  without ``load_plan``, ``source`` or catalog is skipped as the worker skips
  it), decodes its Arrow schema, and answers IN_PROGRESS then COMPLETED
  (FAILED with a message when the schema does not decode) — with dataset and
  epoch ids only, as the worker does;
* honours ``evict_epoch`` (drops the table) and records ``drain_command``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import subprocess
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import trio
import trio_asyncio
from google.protobuf import json_format
from grpclib.client import Channel
from grpclib.const import Cardinality

from leibrix.wire._grpc import COORDINATE_WORKER_RUST
from tests.support.poll import eventually

PROTO_DIR = Path(__file__).resolve().parent / "rust_proto"


@functools.cache
def rust_types() -> SimpleNamespace:
    """The worker's message modules, ``.common`` and ``.control_plane`` (compiled once per process)."""
    with tempfile.TemporaryDirectory(prefix="rust-proto-") as out:
        subprocess.run(
            [sys.executable, "-m", "grpc_tools.protoc", "-I", str(PROTO_DIR), f"--python_out={out}",
             "common.proto", "control_plane.proto"],
            check=True, cwd=PROTO_DIR,
        )
        sys.path.insert(0, out)
        try:
            common = importlib.import_module("common_pb2")
            control_plane = importlib.import_module("control_plane_pb2")
        finally:
            sys.path.remove(out)
    return SimpleNamespace(common=common, control_plane=control_plane)


def decode(frame: bytes) -> Any:
    """One ``EventStreamMessage`` as the worker decodes it."""
    return rust_types().control_plane.EventStreamMessage.FromString(frame)


@dataclasses.dataclass(frozen=True)
class Assignment:
    """The fields of a ``data_assignment`` the worker reads (its conversion to a load assignment)."""

    dataset_id: str
    epoch_id: str
    plan_id: str
    destination_table_name: str
    #: ``iceberg``, ``starrocks`` or ``jdbc``.
    catalog_kind: str
    #: The catalog's fields by the worker's names (``pool_options`` a dict of the options present, or None).
    catalog: dict[str, Any]
    database: str
    table: str
    version: str | None
    arrow_schema: bytes
    #: ``(start_inclusive_ns, end_exclusive_ns)``, or None without a resolved partition's time range.
    time_range_ns: tuple[int, int] | None
    time_column_name: str
    time_partition_value: str
    dimension_values: dict[str, str]


def assignment_from(event: Any) -> Assignment:
    """Convert a decoded ``DataAssignmentEvent`` as the worker does; ``ValueError`` names a missing part."""
    if not event.HasField("load_plan"):
        raise ValueError("missing required field `load_plan` in `DataAssignmentEvent`")
    plan = event.load_plan
    if not plan.HasField("source"):
        raise ValueError("missing required field `source` in `LoadPlan`")
    source = plan.source
    kind = source.catalog.WhichOneof("catalog_type") if source.HasField("catalog") else None
    if kind is None:
        raise ValueError("missing required field `catalog` in `DataSource`")
    raw = getattr(source.catalog, kind)
    catalog: dict[str, Any] = {f.name: getattr(raw, f.name) for f in raw.DESCRIPTOR.fields
                               if f.name != "pool_options"}
    if kind != "iceberg":
        catalog["pool_options"] = (
            {f.name: v for f, v in raw.pool_options.ListFields()} if raw.HasField("pool_options") else None)
    rp = plan.resolved_partition if plan.HasField("resolved_partition") else None
    time_range = None
    if rp is not None and rp.HasField("time_range"):
        tr = rp.time_range
        if not (tr.HasField("start_inclusive") and tr.HasField("end_exclusive")):
            raise ValueError("missing required field `start_inclusive`/`end_exclusive` in `TimeRange`")
        time_range = (tr.start_inclusive.ToNanoseconds(), tr.end_exclusive.ToNanoseconds())
    return Assignment(
        dataset_id=event.dataset_id, epoch_id=event.epoch_id, plan_id=plan.plan_id,
        destination_table_name=plan.destination_table_name, catalog_kind=kind, catalog=catalog,
        database=source.database, table=source.table,
        version=source.version if source.HasField("version") else None,
        arrow_schema=plan.arrow_schema, time_range_ns=time_range,
        time_column_name=rp.time_column_name if rp else "",
        time_partition_value=rp.time_partition_value if rp else "",
        dimension_values=dict(rp.dimension_values) if rp else {},
    )


class RegistrationRejected(Exception):
    """The master answered the registration with a ``*reject*`` ack (the worker's start fails)."""


@dataclasses.dataclass
class RustWorker:
    """One session of the Rust worker (see module doc); the lists record what it saw, in order."""

    worker_id: str
    tenant_id: str
    heartbeat_s: float = 10.0
    registration_timeout: float = 10.0
    registered: bool = False
    #: The ``registration_ack`` payload as plain Python values.
    ack: dict[str, Any] = dataclasses.field(default_factory=dict)
    assignments: list[Assignment] = dataclasses.field(default_factory=list)
    #: Assignments the worker could not convert (the error), skipped as the worker skips them.
    skipped: list[str] = dataclasses.field(default_factory=list)
    #: ``(dataset_id, epoch_id)`` of the tables it holds.
    tables: set[tuple[str, str]] = dataclasses.field(default_factory=set)
    #: ``(dataset_id, epoch_id, reason)`` of every ``evict_epoch``.
    evicts: list[tuple[str, str, str]] = dataclasses.field(default_factory=list)
    drained: bool = False
    #: Send times (the event loop's clock) of its heartbeats.
    heartbeats: list[float] = dataclasses.field(default_factory=list)

    async def run(self, master_addr: str, stop: asyncio.Event) -> None:
        """The session (asyncio, under trio-asyncio) until ``stop`` is set or the master ends the stream."""
        cpr = rust_types().control_plane
        host, port = master_addr.rsplit(":", 1)
        channel = Channel(host, int(port))
        stream = channel.request(COORDINATE_WORKER_RUST, Cardinality.STREAM_STREAM,
                                 cpr.EventStreamMessage, cpr.EventStreamMessage)
        lock = asyncio.Lock()
        tasks: list[asyncio.Future] = []

        def envelope() -> Any:
            return cpr.EventStreamMessage(event_id=str(uuid.uuid4()), tenant_id=self.tenant_id,
                                          worker_id=self.worker_id)

        async def send(msg: Any) -> None:
            async with lock:
                await stream.send_message(msg)

        async def heartbeat() -> None:
            loop = asyncio.get_running_loop()
            due = loop.time() + self.heartbeat_s  # the first beat one full period after registering
            while True:
                await asyncio.sleep(max(0.0, due - loop.time()))
                msg = envelope()
                msg.heartbeat_event.SetInParent()
                await send(msg)
                self.heartbeats.append(loop.time())
                due = max(due + self.heartbeat_s, loop.time())  # a missed tick is skipped, never burst

        async def report(dataset_id: str, epoch_id: str, status: int, error: str = "") -> None:
            msg = envelope()
            u = msg.data_pull_status_update
            u.dataset_id, u.epoch_id, u.status, u.error_message = dataset_id, epoch_id, status, error
            await send(msg)

        async def receive() -> None:
            status = cpr.DataPullStatusUpdateEvent
            while (msg := await stream.recv_message()) is not None:
                kind = msg.WhichOneof("payload")
                if kind == "data_assignment":
                    try:
                        a = assignment_from(msg.data_assignment)
                    except ValueError as exc:
                        self.skipped.append(str(exc))
                        continue
                    self.assignments.append(a)
                    await report(a.dataset_id, a.epoch_id, status.IN_PROGRESS)
                    try:
                        if a.arrow_schema:
                            pa.ipc.read_schema(pa.py_buffer(a.arrow_schema))
                    except (pa.ArrowInvalid, OSError) as exc:
                        await report(a.dataset_id, a.epoch_id, status.FAILED, f"bad arrow schema: {exc}")
                        continue
                    self.tables.add((a.dataset_id, a.epoch_id))
                    await report(a.dataset_id, a.epoch_id, status.COMPLETED)
                elif kind == "common_ack":
                    fields = {k: v.string_value for k, v in msg.common_ack.payload.fields.items()
                              if v.WhichOneof("kind") == "string_value"}
                    if msg.common_ack.event_type == "evict_epoch":
                        d, e = fields.get("dataset_id", ""), fields.get("epoch_id", "")
                        self.evicts.append((d, e, fields.get("reason", "")))
                        self.tables.discard((d, e))
                    elif msg.common_ack.event_type == "drain_command":
                        self.drained = True

        try:
            async with stream:
                reg = envelope()
                worker = reg.register_event.worker
                worker.node_id, worker.addr = self.worker_id, master_addr
                worker.labels["tenant_id"] = self.tenant_id
                await stream.send_message(reg)
                first = await asyncio.wait_for(stream.recv_message(), self.registration_timeout)
                if first is None:
                    raise ConnectionError("the master closed the stream during registration")
                ack = first.common_ack if first.WhichOneof("payload") == "common_ack" else None
                if ack is not None and ack.event_type != "registration_ack" and "reject" in ack.event_type:
                    raise RegistrationRejected(ack.event_type)
                if ack is not None:
                    self.ack = json_format.MessageToDict(ack.payload)
                self.registered = True
                tasks = [asyncio.ensure_future(heartbeat()), asyncio.ensure_future(receive())]
                stopped = asyncio.ensure_future(stop.wait())
                await asyncio.wait([*tasks, stopped], return_when=asyncio.FIRST_COMPLETED)
                stopped.cancel()
                for t in tasks:
                    if t.done() and t.exception() is not None:
                        raise t.exception()
                await stream.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            channel.close()


@asynccontextmanager
async def joined(master_addr: str, worker: RustWorker) -> AsyncIterator[RustWorker]:
    """Run ``worker``'s session against ``master_addr`` for the body: registered on entry, ended on exit."""
    async with trio_asyncio.open_loop():
        stop = asyncio.Event()
        async with trio.open_nursery() as inner:
            inner.start_soon(trio_asyncio.aio_as_trio(worker.run), master_addr, stop)
            try:
                await eventually(lambda: worker.registered, what=f"{worker.worker_id} registered")
                yield worker
            finally:
                stop.set()
