"""The asyncio side of the worker hub: one session per ``CoordinateWorker`` stream, start to end.

grpclib is asyncio-only, so each stream is served by asyncio coroutines
(under trio-asyncio) that cross into the Trio side, the
:class:`~leibrix.workers._protocols.Registry`, through
:func:`leibrix.wire._grpc.call_trio`. Only grpclib's public stream API is
used: ``recv_message``, ``send_message``, ``send_trailing_metadata``.

**Sessions.** A stream must open with ``register_event`` within
``register_timeout``; it is checked by
:func:`~leibrix.workers._member.member_from_registration`, a duplicate live id
is refused, and the registry admits it. On a connection with a verified
client certificate (mTLS: ``stream.peer.cert()``) the registration must also
match the certificate (:func:`~leibrix.workers._member.check_certificate`:
the id it names, the pools it allows), else PERMISSION_DENIED naming the
mismatch. Registrations run at most
``max_registering`` at once, so a reconnect storm queues here, not in the
event loop. Outside a leadership term every stream is answered
``registration_reject`` ("not the leader") and UNAVAILABLE with the leader's
address in ``leibrix-leader``.

Then three tasks serve the session: the **reader** (heartbeats and other
contact go to the registry at once, status reports into a queue), the
**status task** (hands queued reports to the coordinator in order, so a busy
coordinator never stops the stream from being read and a healthy worker's
heartbeats never wait behind its statuses), and the **sender** (the one
writer of the stream: a bounded queue that :meth:`_Session.offer` fills
without waiting, closing the session RESOURCE_EXHAUSTED when it is full).
A session that arrived on the Rust leibrix-worker's path gets every message
in that worker's layout (:func:`leibrix.wire._upstream.upstream_frame`: its
StarRocks and JDBC catalogs differ from ours); each path has its own
handler in :meth:`WorkerStreams.mapping`, so the session knows its path.
When the worker half-closes, every report already read is judged before the
stream ends, so a bad report sent just before the half-close still gets its
own status.

**Bad input** closes only the offending stream with a precise status:
garbage bytes → INVALID_ARGUMENT, a message over ``max_message_bytes`` →
RESOURCE_EXHAUSTED (grpclib has no receive limit of its own, so it is
checked once the message is read), a stream ending inside a frame or a
compressed frame → INVALID_ARGUMENT, unknown or master-to-worker payloads →
INVALID_ARGUMENT, an id over the limits of :mod:`leibrix.workers._member` →
INVALID_ARGUMENT naming the field, a status for an epoch never assigned →
FAILED_PRECONDITION, a second ``register_event`` → FAILED_PRECONDITION.
Client strings are quoted clipped (:func:`~leibrix.workers._messages.clip`).
A rejected registration gets a ``registration_reject`` ack, then the stream
is read until the worker half-closes (for at most a second: grpclib resets a
stream that ends non-OK while the client still sends, which would discard
the unread ack) and ends with the rejection's status.
"""

from __future__ import annotations

import asyncio
import functools
import logging

import grpclib.const
import grpclib.exceptions
import grpclib.server
import h2.exceptions
from google.protobuf.message import DecodeError
from grpclib.const import Status

from leibrix.domain._errors import ApiError, FailedPrecondition
from leibrix.wire._grpc import COORDINATE_WORKER, COORDINATE_WORKER_RUST, LEADER_METADATA, call_trio
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._upstream import upstream_frame
from leibrix.workers._config import HubConfig
from leibrix.workers._member import check_certificate, check_id, member_from_registration
from leibrix.workers._messages import MAX_STATUS_MESSAGE_CHARS, Frame, clip, common_ack
from leibrix.workers._protocols import Registry

__all__ = ["MAX_ERROR_MESSAGE_CHARS", "STATUS_BACKLOG", "WorkerStreams"]

log = logging.getLogger(__name__)

_PAYLOAD_FROM_MASTER = {"data_assignment", "common_ack"}
_STATUS_IDS = ("dataset_id", "epoch_id", "plan_id")
#: Status reports a session may have read ahead of the coordinator before its reader waits.
STATUS_BACKLOG = 10_000
#: Status reports handed to the coordinator in one crossing into Trio.
_STATUS_BATCH = 500
#: A status report's ``error_message`` is kept up to this many characters (clipped beyond).
MAX_ERROR_MESSAGE_CHARS = 1024
#: Seconds a rejected worker gets to read the reject ack and half-close.
_HALF_CLOSE_WAIT_S = 1.0
#: The worker is gone: nothing more can be read from or told to it.
_GONE = (h2.exceptions.StreamClosedError, ConnectionError, grpclib.exceptions.StreamTerminatedError,
         grpclib.exceptions.ProtocolError)


class _Close(Exception):
    """End this stream with ``status`` (after a ``registration_reject`` ack if ``reject``)."""

    def __init__(self, status: Status, message: str, *, reject: bool = False, leader: str = "") -> None:
        super().__init__(message)
        self.status, self.message, self.reject, self.leader = status, message, reject, leader


class _Session:
    """One registered worker's stream, as the registry sees it (implements ``Session``)."""

    def __init__(self, worker_id: str, peer: str, outbound: int, *, upstream: bool = False) -> None:
        self.worker_id = worker_id
        self.peer = peer
        #: the stream came on the Rust worker's path: frames are sent in its layout
        self.upstream = upstream
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(outbound)
        #: status reports read but not yet handed to the coordinator
        self.statuses: asyncio.Queue[pb.DataPullStatusUpdateEvent] = asyncio.Queue(STATUS_BACKLOG)
        self.closing = asyncio.Event()
        self.reason: _Close | None = None

    def offer(self, frame: bytes) -> bool:
        if self.closing.is_set():
            return False
        if self.upstream:
            try:
                frame = upstream_frame(frame)
            except ValueError as e:  # a DSN it cannot be given; the epoch's other replicas are unaffected
                log.error("worker %s: message not sent, no Rust-worker form: %s", self.worker_id, e)
                return False
        try:
            self.queue.put_nowait(Frame(frame))
        except asyncio.QueueFull:
            self.close(Status.RESOURCE_EXHAUSTED,
                       f"outbound queue full ({self.queue.maxsize} messages): worker too slow, reconnect")
            return False
        return True

    def close(self, status: Status, message: str, *, leader: str = "") -> None:
        if self.reason is None:
            self.reason = _Close(status, message, leader=leader)
        self.closing.set()


class WorkerStreams:
    """Serves ``CoordinateWorker`` streams for a :class:`~leibrix.workers._protocols.Registry`.

    Parameters
    ----------
    config:
        Worker-facing knobs (message size, queues, registration timeout and concurrency).
    registry:
        The Trio side the sessions report to.
    master_id:
        This master's id, sent as ``server_id`` of a ``registration_reject``.
    """

    def __init__(self, config: HubConfig, registry: Registry, *, master_id: str) -> None:
        self.config = config
        self._registry = registry
        self._master_id = master_id
        self._registering: asyncio.Semaphore | None = None  # made on the event loop, at the first stream

    def mapping(self) -> dict[str, grpclib.const.Handler]:
        """The grpclib mapping of both paths: ours, and the Rust worker's (its messages in its layout)."""
        return {
            path: grpclib.const.Handler(
                functools.partial(self.handle, upstream=path == COORDINATE_WORKER_RUST),
                grpclib.const.Cardinality.STREAM_STREAM, Frame, Frame,
            )
            for path in (COORDINATE_WORKER, COORDINATE_WORKER_RUST)
        }

    async def handle(self, stream: grpclib.server.Stream, *, upstream: bool = False) -> None:
        """One worker stream, start to end: register, serve, and close with a precise status.

        ``upstream``: the stream came on the Rust worker's path.
        """
        session: _Session | None = None
        try:
            try:
                first = await asyncio.wait_for(self._recv(stream), self.config.register_timeout)
            except TimeoutError:
                raise _Close(Status.DEADLINE_EXCEEDED,
                             f"no register_event within {self.config.register_timeout:g}s") from None
            if first is None:
                return
            if self._registering is None:
                self._registering = asyncio.Semaphore(self.config.max_registering)
            async with self._registering:
                session = await self._register(stream, first, upstream=upstream)
            close = await self._serve(stream, session)
        except _Close as c:
            close = c
        except ApiError as e:
            close = _Close(e.status, e.message, reject=session is None, leader=getattr(e, "leader", ""))
        except _GONE:
            return  # the worker has gone; nothing to tell it
        finally:
            if session is not None:
                self._registry.closed(session.worker_id, session)
        if close.status is not Status.OK:
            log.info("worker stream %s ended %s: %s", session.worker_id if session else "(unregistered)",
                     close.status.name, clip(close.message))
        await self._finish(stream, close)

    async def _recv(self, stream: grpclib.server.Stream) -> pb.EventStreamMessage | None:
        """The next message from the worker, None once it has half-closed; _Close for bad input."""
        try:
            frame = await stream.recv_message()
        except NotImplementedError:  # grpclib's answer to a compressed frame
            raise _Close(Status.INVALID_ARGUMENT,
                         "compressed frames are not supported (grpc-encoding identity)") from None
        except AssertionError:  # grpclib's answer to a stream that ends inside a frame
            raise _Close(Status.INVALID_ARGUMENT, "truncated message: the stream ended inside a gRPC frame") from None
        except grpclib.exceptions.GRPCError as e:  # the server's codec refused the message
            raise _Close(e.status, e.message or "") from None
        if frame is None:
            return None
        if len(frame) > self.config.max_message_bytes:
            raise _Close(Status.RESOURCE_EXHAUSTED,
                         f"message of {len(frame)} bytes exceeds max_message_bytes={self.config.max_message_bytes}")
        try:
            return pb.EventStreamMessage.FromString(frame)
        except DecodeError:
            raise _Close(Status.INVALID_ARGUMENT,
                         f"message of {len(frame)} bytes is not a leibrix_cp.EventStreamMessage") from None

    async def _register(self, stream: grpclib.server.Stream, msg: pb.EventStreamMessage, *,
                        upstream: bool) -> _Session:
        registry = self._registry
        if not registry.serving():
            leader = registry.leader_hint()
            raise _Close(Status.UNAVAILABLE, f"not the leader; leader is {leader or 'unknown'}",
                         reject=True, leader=leader)
        kind = msg.WhichOneof("payload")
        if kind != "register_event":
            raise _Close(Status.FAILED_PRECONDITION,
                         f"first message must be register_event, got {kind or 'no payload'}", reject=True)
        m = member_from_registration(msg, self.config, registry.pool_known)
        cert = stream.peer.cert() if stream.peer else None
        if cert:  # a verified client certificate (mTLS): the registration must be what it names
            check_certificate(m, cert)
        peer = stream.peer.addr() if stream.peer else None
        session = _Session(m.worker_id, f"{peer[0]}:{peer[1]}" if peer else "?", self.config.outbound_queue,
                           upstream=upstream)
        registry.open_session(m, session)
        # upb entries as they are: converting 10,000 of them to betterproto took seconds of the loop
        inventory = list(msg.register_event.inventory)
        try:
            await call_trio(registry.admit, m.worker_id, inventory)
        except BaseException:
            registry.closed(m.worker_id, session)
            raise
        return session

    async def _serve(self, stream: grpclib.server.Stream, session: _Session) -> _Close:
        """Run reader, status task and sender until one ends or the session is closed."""
        reader = asyncio.ensure_future(self._read_loop(stream, session))
        sender = asyncio.ensure_future(self._send_loop(stream, session))
        statuses = asyncio.ensure_future(self._status_loop(session))
        closing = asyncio.ensure_future(session.closing.wait())
        tasks = (reader, sender, statuses, closing)
        try:
            await asyncio.wait(set(tasks), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        if session.reason is not None:
            return session.reason
        for t in (reader, sender, statuses):
            if not t.cancelled() and t.exception() is not None:
                raise t.exception()
        return _Close(Status.OK, "")

    async def _send_loop(self, stream: grpclib.server.Stream, session: _Session) -> None:
        while True:
            await stream.send_message(await session.queue.get())

    async def _read_loop(self, stream: grpclib.server.Stream, session: _Session) -> None:
        wid = session.worker_id
        registry = self._registry
        while True:
            msg = await self._recv(stream)
            if msg is None:
                await session.statuses.join()  # every report read is judged before the stream ends
                return
            kind = msg.WhichOneof("payload")
            registry.seen(wid, msg.heartbeat_event if kind == "heartbeat_event" else None)
            if kind == "heartbeat_event":
                continue
            if kind == "data_pull_status_update":
                update = msg.data_pull_status_update
                for name in _STATUS_IDS:
                    check_id(f"data_pull_status_update.{name}", getattr(update, name))
                await session.statuses.put(update)
            elif kind == "register_event":
                session.close(Status.FAILED_PRECONDITION, f"worker {wid!r} is already registered on this stream")
                return
            elif kind in _PAYLOAD_FROM_MASTER:
                session.close(Status.INVALID_ARGUMENT, f"payload: {kind} is master-to-worker only")
                return
            else:
                session.close(Status.INVALID_ARGUMENT,
                              "payload: none of register_event, heartbeat_event, data_pull_status_update is set")
                return

    async def _status_loop(self, session: _Session) -> None:
        """Hand a session's status reports to the registry in order, apart from its reader.

        Whatever has queued up crosses into Trio in one call (each crossing
        costs a handful of reference cycles for the garbage collector).
        """
        queue = session.statuses
        while True:
            batch = [await queue.get()]
            while not queue.empty() and len(batch) < _STATUS_BATCH:
                batch.append(queue.get_nowait())
            try:
                updates = [cp.DataPullStatusUpdateEvent().parse(u.SerializeToString()) for u in batch]
                for u in updates:
                    u.error_message = clip(u.error_message, MAX_ERROR_MESSAGE_CHARS)
                await call_trio(self._registry.on_statuses, session.worker_id, updates)
            except FailedPrecondition as e:
                session.close(Status.FAILED_PRECONDITION, e.message)
                return
            finally:
                for _ in batch:
                    queue.task_done()

    async def _finish(self, stream: grpclib.server.Stream, close: _Close) -> None:
        """Send the reject ack if any, then the status (clipped) and the leader's address if known."""
        message = clip(close.message, MAX_STATUS_MESSAGE_CHARS)
        try:
            if close.reject:
                msg = common_ack(self._master_id, "", "registration_reject", {"reason": message, "leader": close.leader})
                await stream.send_message(Frame(msg.SerializeToString()))
                await self._await_half_close(stream)
            metadata = {LEADER_METADATA: close.leader} if close.leader else None
            await stream.send_trailing_metadata(status=close.status, status_message=message or None,
                                                metadata=metadata)
        except _GONE:
            pass  # the worker has gone; nothing to tell it

    @staticmethod
    async def _await_half_close(stream: grpclib.server.Stream) -> None:
        """Read and drop whatever the rejected worker still sends, until it half-closes (or a second passes)."""
        try:
            async with asyncio.timeout(_HALF_CLOSE_WAIT_S):
                while await stream.recv_message() is not None:
                    pass
        except (TimeoutError, AssertionError, NotImplementedError, grpclib.exceptions.GRPCError, *_GONE):
            pass  # out of patience, a broken frame, or gone: the status is sent (or not) all the same
