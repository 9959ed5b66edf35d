"""Bad input on a worker stream gets a precise status; other streams and stored state are untouched."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
import trio_asyncio
from google.protobuf import json_format
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from leibrix.wire._grpc import COORDINATE_WORKER, COORDINATE_WORKER_RUST, LEADER_METADATA
from leibrix.domain._liveness import WState
from leibrix.wire._proto.records import common_pb2 as cpb
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._upstream import upstream_frame
from leibrix.store._store import Keys
from leibrix.workers._hub import WorkerHub
from leibrix.workers._member import MAX_ADDR_CHARS, MAX_LABELS
from leibrix.workers._messages import CLIP_CHARS
from leibrix.workers._messages import Frame as _Frame
from tests.support.hub import TableCoordinator, fast_config, serve, spawn_worker, start_leader, wait_state

RUST_PATH = COORDINATE_WORKER_RUST


@dataclass
class Outcome:
    status: Status | None = None
    message: str = ""
    metadata: dict = field(default_factory=dict)
    acks: list[pb.CommonAckEvent] = field(default_factory=list)


def register(wid: str, *, capacity: tuple[int, float] | None = (1 << 30, 2.0), **labels: str) -> bytes:
    msg = pb.EventStreamMessage(worker_id=wid)
    msg.register_event.worker.node_id = wid
    msg.register_event.worker.addr = "10.0.0.1:9000"
    msg.register_event.worker.labels.update(labels)
    if capacity is not None:
        msg.register_event.capacity.memory_bytes, msg.register_event.capacity.cpu_cores = capacity
    return msg.SerializeToString()


def heartbeat() -> bytes:
    msg = pb.EventStreamMessage()
    msg.heartbeat_event.SetInParent()
    return msg.SerializeToString()


async def call(addr: str, frames: list[bytes], *, path: str = COORDINATE_WORKER, hold: trio.Event | None = None,
               registered: trio.Event | None = None, half_close: bool = False) -> Outcome:
    """Send raw frames on one stream; collect acks and the final status (optionally stay open until ``hold``).

    With ``half_close`` the stream is half-closed right after the frames, before anything is read.
    """
    host, port = addr.rsplit(":", 1)

    async def run() -> Outcome:
        out = Outcome()
        channel = Channel(host, int(port))
        stream = channel.request(path, Cardinality.STREAM_STREAM, _Frame, _Frame)
        try:
            async with stream:
                for f in frames:
                    await stream.send_message(_Frame(f))
                ended = half_close
                if half_close:
                    await stream.end()
                while True:
                    raw = await stream.recv_message()
                    if raw is None:
                        if not ended:
                            await stream.end()
                        await stream.recv_trailing_metadata()
                        out.status = Status.OK
                        return out
                    msg = pb.EventStreamMessage.FromString(raw)
                    if msg.WhichOneof("payload") != "common_ack":
                        continue
                    out.acks.append(msg.common_ack)
                    if "reject" in msg.common_ack.event_type and not ended:
                        await stream.end()  # as workers do: then read the status
                        ended = True
                    if msg.common_ack.event_type == "registration_ack":
                        if registered is not None:
                            registered.set()  # sync: fine from asyncio code inside trio-asyncio
                        if hold is not None:
                            await trio_asyncio.trio_as_aio(hold.wait)()
                            await stream.cancel()
                            return out
        except GRPCError as e:
            out.status, out.message = e.status, e.message or ""
            out.metadata = dict(stream.trailing_metadata or {})
            return out
        finally:
            channel.close()

    async with trio_asyncio.open_loop():
        with trio.fail_after(10):
            return await trio_asyncio.aio_as_trio(run)()


@pytest.fixture
async def cluster(etcd, nursery):
    keys = Keys("bad")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(max_message_bytes=64 << 10, rebalance_interval=60), master_id="m1", keys=keys)
    coord = TableCoordinator(hub, [("t1", "ds", "e0")])
    hub.attach(coord, pool_known=lambda t: t == "acme")
    await nursery.start(hub.run_term, ctx)
    addr = await serve(nursery, hub)
    await spawn_worker(nursery, addr, "good")
    await coord.wait(lambda: coord.ready.get(("t1", "ds", "e0")) == {"good"})
    return keys, hub, coord, addr


async def _snapshot(etcd, keys: Keys):
    kvs, _ = await etcd.get_prefix(keys.root + Keys.WORKERS)
    return {kv.key: kv.mod_revision for kv in kvs}


async def test_bad_input_closes_only_that_stream(cluster, etcd) -> None:
    keys, hub, coord, addr = cluster
    good_session = hub.members["good"].session
    before = await _snapshot(etcd, keys)
    reg = register("x1")

    cases = [
        # garbage bytes as the first message
        ([b"\xff\xff\xff\xff"], Status.INVALID_ARGUMENT, "not a leibrix_cp.EventStreamMessage"),
        # garbage after a valid registration
        ([reg, b"\x0a\xff\xff"], Status.INVALID_ARGUMENT, "not a leibrix_cp.EventStreamMessage"),
        # oversized: rejected from the frame prefix
        ([reg, b"\x0a" + b"x" * (100 << 10)], Status.RESOURCE_EXHAUSTED, "exceeds max_message_bytes=65536"),
        # unknown payload (a field number this master does not know)
        ([reg, b"\xa0\x06\x01"], Status.INVALID_ARGUMENT, "payload: none of"),
        # master-to-worker payload sent by a worker
        ([reg, pb.EventStreamMessage(data_assignment=pb.DataAssignmentEvent(dataset_id="d")).SerializeToString()],
         Status.INVALID_ARGUMENT, "data_assignment is master-to-worker only"),
        # anything before registering
        ([heartbeat()], Status.FAILED_PRECONDITION, "first message must be register_event, got heartbeat_event"),
        # registering twice on one stream
        ([reg, reg], Status.FAILED_PRECONDITION, "already registered on this stream"),
        # a status for an epoch never assigned to this worker
        ([reg, pb.EventStreamMessage(data_pull_status_update=pb.DataPullStatusUpdateEvent(
            dataset_id="ds", epoch_id="e0", status=2)).SerializeToString()],
         Status.FAILED_PRECONDITION, "never assigned to worker x1"),
        # bad capacity, named precisely
        ([register("x2", capacity=(0, 2.0))], Status.INVALID_ARGUMENT, "register_event.capacity.memory_bytes"),
        ([register("x3", capacity=(1 << 30, float("nan")))], Status.INVALID_ARGUMENT,
         "register_event.capacity.cpu_cores"),
        ([register("bad/id")], Status.INVALID_ARGUMENT, "register_event.worker.node_id"),
        # unknown tenant pool
        ([register("x4", pool="nobody")], Status.NOT_FOUND, "pool 'nobody' names no known tenant"),
        # the live id of another worker
        ([register("good")], Status.ALREADY_EXISTS, "worker 'good' already has a live stream"),
    ]
    for frames, status, text in cases:
        out = await call(addr, frames)
        assert out.status is status, (frames[-1][:20], out)
        assert text in out.message, (text, out.message)
        if status in (Status.NOT_FOUND, Status.ALREADY_EXISTS) or "capacity" in text or "node_id" in text \
                or "first message" in text:
            assert [a.event_type for a in out.acks] == ["registration_reject"], (text, out)
            assert text in json_format.MessageToDict(out.acks[0].payload)["reason"]
    # the good worker never noticed; stored state only gained the short-lived x1 record
    assert hub.members["good"].session is good_session
    assert hub.liveness.state("good") is WState.ACTIVE
    after = await _snapshot(etcd, keys)
    assert {k: v for k, v in after.items() if k in before} == before
    assert set(after) - set(before) == {keys.worker("x1")}
    assert coord.ready[("t1", "ds", "e0")] == {"good"}


async def test_rust_worker_registration_gets_default_capacity_on_its_path(cluster, etcd) -> None:
    keys, hub, coord, addr = cluster
    hold, registered = trio.Event(), trio.Event()
    msg = pb.EventStreamMessage()
    msg.register_event.worker.node_id = "rust-1"
    msg.register_event.worker.addr = "10.0.0.9:50052"
    msg.register_event.worker.labels["tenant_id"] = "acme"
    async with trio.open_nursery() as n:
        result: list[Outcome] = []

        async def go() -> None:
            result.append(await call(addr, [msg.SerializeToString(), heartbeat()], path=RUST_PATH,
                                     hold=hold, registered=registered))

        n.start_soon(go)
        with trio.fail_after(10):
            await registered.wait()
        m = hub.members["rust-1"]
        assert (m.memory_bytes, m.cpu_cores) == (hub.config.default_memory_bytes, hub.config.default_cpu_cores)
        assert m.pool == "acme"
        assert hub.liveness.state("rust-1") is WState.ACTIVE
        hold.set()
    ack = result[0].acks[0]
    assert ack.event_type == "registration_ack"
    payload = json_format.MessageToDict(ack.payload)
    assert payload["heartbeat_interval_s"] == hub.config.heartbeat_interval and payload["master_id"] == "m1"
    await wait_state(hub, "rust-1", WState.SUSPECT, timeout=2)  # its stream closed


async def test_follower_rejects_with_leader_redirect(etcd, nursery) -> None:
    keys = Keys("follower")
    hub = WorkerHub(fast_config(), master_id="m2", keys=keys, leader_hint=lambda: "10.1.2.3:50051")
    addr = await serve(nursery, hub)  # no term: a follower
    out = await call(addr, [register("w9")])
    assert out.status is Status.UNAVAILABLE
    assert out.metadata.get(LEADER_METADATA) == "10.1.2.3:50051"
    assert [a.event_type for a in out.acks] == ["registration_reject"]
    assert "not the leader" in json_format.MessageToDict(out.acks[0].payload)["reason"]


async def test_register_timeout_is_deadline_exceeded(etcd, nursery) -> None:
    keys = Keys("slowreg")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(register_timeout=0.3), master_id="m1", keys=keys)
    await nursery.start(hub.run_term, ctx)
    addr = await serve(nursery, hub)
    # open a stream and send nothing
    host, port = addr.rsplit(":", 1)

    async def silent() -> Status:
        channel = Channel(host, int(port))
        try:
            async with channel.request(COORDINATE_WORKER, Cardinality.STREAM_STREAM, _Frame, _Frame) as stream:
                await stream.send_request()
                await stream.recv_message()
        except GRPCError as e:
            return e.status
        finally:
            channel.close()
        return Status.OK

    async with trio_asyncio.open_loop():
        with trio.fail_after(5):
            assert await trio_asyncio.aio_as_trio(silent)() is Status.DEADLINE_EXCEEDED


async def test_a_rejected_registration_ends_with_its_own_status_whatever_follows_before_the_half_close(
        cluster, etcd) -> None:
    keys, hub, coord, addr = cluster
    for frames, status, text in [
        ([register("good"), heartbeat(), heartbeat()], Status.ALREADY_EXISTS, "already has a live stream"),
        ([register("bad/id"), heartbeat(), b"\x0a" + b"x" * 1000], Status.INVALID_ARGUMENT,
         "register_event.worker.node_id"),
        ([register("x9", pool="nobody"), heartbeat()], Status.NOT_FOUND, "names no known tenant"),
    ]:
        out = await call(addr, frames, half_close=True)
        assert (out.status, [a.event_type for a in out.acks]) == (status, ["registration_reject"]), out
        assert text in out.message
    assert hub.members["good"].session is not None and hub.liveness.state("good") is WState.ACTIVE


async def test_a_status_sent_just_before_the_half_close_is_judged(cluster) -> None:
    keys, hub, coord, addr = cluster
    never = pb.EventStreamMessage(data_pull_status_update=pb.DataPullStatusUpdateEvent(
        dataset_id="ds", epoch_id="e0", status=2)).SerializeToString()
    out = await call(addr, [register("x5"), never], half_close=True)
    assert (out.status, [a.event_type for a in out.acks]) == (Status.FAILED_PRECONDITION, ["registration_ack"])
    assert "never assigned to worker x5" in out.message
    # a heartbeat before the half-close is just contact: the stream ends OK
    out = await call(addr, [register("x6"), heartbeat()], half_close=True)
    assert (out.status, [a.event_type for a in out.acks]) == (Status.OK, ["registration_ack"])
    await wait_state(hub, "x6", WState.SUSPECT, timeout=2)


@pytest.fixture
async def roomy(etcd, nursery):
    """A leader whose workers may send messages of the default size (4 MiB)."""
    keys = Keys("roomy")
    ctx = await start_leader(etcd, nursery, keys)
    hub = WorkerHub(fast_config(rebalance_interval=60), master_id="m1", keys=keys)
    coord = TableCoordinator(hub, [])
    hub.attach(coord, pool_known=lambda t: t == "acme")
    await nursery.start(hub.run_term, ctx)
    return hub, await serve(nursery, hub)


async def test_long_client_strings_are_refused_at_their_limits_and_quoted_clipped(roomy) -> None:
    hub, addr = roomy
    huge = "w" * (1 << 20)
    inventory = pb.EventStreamMessage()
    inventory.MergeFromString(register("x1"))
    inventory.register_event.inventory.add(tenant_id="t1", dataset_id="ds", epoch_id="e" * 300)
    status = pb.EventStreamMessage(data_pull_status_update=pb.DataPullStatusUpdateEvent(
        dataset_id="ds", epoch_id=huge, status=2)).SerializeToString()
    cases = [
        ([register(huge)], "register_event.worker.node_id", True),
        ([register("x1", zone=huge)], "register_event.worker.labels['zone']: ", True),
        ([register("x1", **{"k" * 200: "v"})], "register_event.worker.labels: ", True),
        ([register("x1", **{f"l{i}": "v" for i in range(MAX_LABELS + 1)})],
         f"{MAX_LABELS + 1} labels, more than {MAX_LABELS}", False),
        ([register("x1", pool="p" * 200)], "pool 'ppp", True),
        ([inventory.SerializeToString()], "register_event.inventory[0].epoch_id", True),
        ([register("x1"), status], "data_pull_status_update.epoch_id", True),
    ]
    for frames, text, clipped in cases:
        with trio.fail_after(5):
            out = await call(addr, frames, half_close=True)
        assert text in out.message, (text, out)
        assert len(out.message) < 2 * CLIP_CHARS + 200, (text, len(out.message))
        assert ("chars)" in out.message) is clipped, out.message
        assert out.status is (Status.NOT_FOUND if "pool" in text else Status.INVALID_ARGUMENT), out
        for ack in out.acks:  # the reject's reason is the same short message
            reason = json_format.MessageToDict(ack.payload).get("reason")
            assert reason is None or reason == out.message
    long_addr = pb.EventStreamMessage()
    long_addr.MergeFromString(register("x2"))
    long_addr.register_event.worker.addr = "h" * (MAX_ADDR_CHARS + 1)
    out = await call(addr, [long_addr.SerializeToString()], half_close=True)
    assert out.status is Status.INVALID_ARGUMENT and "register_event.worker.addr" in out.message
    assert set(hub.members) == {"x1"}  # only the registration whose status report was refused got in


async def test_each_path_gets_messages_in_its_workers_layout(cluster) -> None:
    """The Rust worker's path gets LoadPlans in that worker's layout (its StarRocks catalog differs)."""
    keys, hub, coord, addr = cluster
    msg = pb.EventStreamMessage(data_assignment=pb.DataAssignmentEvent(dataset_id="d", load_plan=pb.LoadPlan(
        source=cpb.DataSource(catalog=cpb.Catalog(starrocks=cpb.StarRocksCatalog(
            dsn="mysql://etl:pw@fe1.example:9031/mart"))))))
    assert upstream_frame(msg) != msg.SerializeToString()
    host, port = addr.rsplit(":", 1)

    async def first_after_ack(wid: str, path: str, registered: trio.Event) -> bytes:
        channel = Channel(host, int(port))
        try:
            async with channel.request(path, Cardinality.STREAM_STREAM, _Frame, _Frame) as stream:
                await stream.send_message(_Frame(register(wid)))
                ack = pb.EventStreamMessage.FromString(await stream.recv_message())
                assert ack.common_ack.event_type == "registration_ack"
                registered.set()
                frame = await stream.recv_message()
                await stream.cancel()
                return bytes(frame)
        finally:
            channel.close()

    for wid, path, expect in (("ours-1", COORDINATE_WORKER, msg.SerializeToString()),
                              ("rust-1", RUST_PATH, upstream_frame(msg))):
        registered, got = trio.Event(), []
        async with trio_asyncio.open_loop():
            async with trio.open_nursery() as n:
                async def run() -> None:
                    got.append(await trio_asyncio.aio_as_trio(first_after_ack)(wid, path, registered))

                n.start_soon(run)
                with trio.fail_after(10):
                    await registered.wait()
                    assert await hub.send(wid, msg)
        assert got == [expect], path
