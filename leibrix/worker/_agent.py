"""The worker's side of ``CoordinateWorker``: one stream to the leader, kept alive forever.

Life of a connection (a *session*):

1. dial the next master address (the last ``leibrix-leader`` redirect first,
   then the configured list round-robin);
2. send ``register_event`` with id, address, labels, capacity, software
   version and the **inventory** of tables already loaded, so a reconnect (or a
   new leader) reconciles instead of reloading;
3. wait for ``common_ack``: ``registration_ack`` carries the heartbeat
   interval; a type containing ``reject`` ends the session (the trailing status
   says whether to retry, follow a redirect or give up);
4. heartbeat every interval with memory used and loads in flight, execute
   ``data_assignment`` (bounded parallel loads), ``evict_epoch`` and
   ``drain_command``, and report ``data_pull_status_update``.

When a session ends the agent retries with exponential backoff and jitter
(reset after a successful registration); an UNAVAILABLE with ``leibrix-leader``
metadata is followed at once. Only ``drain_command`` (exit 0) or a rejection the
worker cannot fix by retrying (INVALID_ARGUMENT, PERMISSION_DENIED: exit 2)
stops it.

grpclib is asyncio-only: each session is one asyncio coroutine run through
:func:`trio_asyncio.aio_as_trio`, so the Trio side cancels exactly one coroutine
Inside it every outbound message goes through one queue and one
sender task, because concurrent ``send_message`` calls could interleave HTTP/2
frames. Wire messages are the upb ``*_pb2`` classes: ~100x cheaper to parse
than betterproto, and the Rust worker speaks the same bytes.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from dataclasses import dataclass, field

import trio
import trio_asyncio
from google.protobuf import json_format
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

import leibrix
from leibrix.wire._address import split_hostport
from leibrix.wire._grpc import COORDINATE_WORKER, LEADER_METADATA, call_trio
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker._budget import Budgets
from leibrix.worker._loader import Loaded, Loader
from leibrix.worker._tls import WorkerTls

__all__ = ["Agent", "SessionEnd", "WorkerConfig"]

log = logging.getLogger("leibrix.worker")

#: The Go master's path; the master serves the Rust worker's path too.
#: Statuses a retry cannot fix: the worker's own configuration is wrong.
_FATAL = {Status.INVALID_ARGUMENT, Status.PERMISSION_DENIED, Status.UNIMPLEMENTED}


@dataclass
class WorkerConfig:
    """Everything a worker needs to know about itself and where its masters are."""

    masters: list[str]
    worker_id: str
    memory_bytes: int
    cpu_cores: float
    zone: str = ""
    pool: str = ""
    addr: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_interval: float = 3.0
    #: Seconds between IN_PROGRESS reports (with the rows loaded so far) while a load runs.
    progress_interval: float = 2.0
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    max_parallel_loads: int = 2
    #: Per-tenant CPU shares (:mod:`leibrix.worker._budget`): a tenant's loads in progress at once are at most its
    #: slots (and ``max_parallel_loads``). None: every tenant may use every load slot.
    budgets: Budgets | None = None
    connect_timeout: float = 5.0
    #: TLS to the masters (None: plain text); see :mod:`leibrix.worker._tls`.
    tls: WorkerTls | None = None


@dataclass
class SessionEnd:
    """How one session ended, which decides what the agent does next."""

    registered: bool = False
    redirect: str = ""
    status: Status | None = None
    message: str = ""
    drained: bool = False


async def _finish(stream) -> None:
    """After the master's last message: half-close our side and read the trailing status.

    A non-OK status raises :class:`GRPCError` (with ``stream.trailing_metadata``
    set, where ``leibrix-leader`` lives).
    """
    try:
        await stream.end()
    except (ProtocolError, StreamTerminatedError, OSError):
        pass  # already reset by the master after a non-OK status
    await stream.recv_trailing_metadata()


class Agent:
    """A reference worker: runs sessions against the leader until drained or fatally rejected."""

    def __init__(self, config: WorkerConfig, loader: Loader) -> None:
        if not config.masters:
            raise ValueError("masters: at least one HOST:PORT is required")
        for m in config.masters:
            split_hostport(m, what="masters")
        self.config = config
        self.loader = loader
        self._loads_in_flight = 0
        #: tenant -> its load slots (see ``WorkerConfig.budgets``)
        self._tenant_loads: dict[str, asyncio.Semaphore] = {}

    async def run(self) -> int:
        """Keep a session with the leader open until drained (0) or fatally rejected (2).

        Must run inside :func:`trio_asyncio.open_loop`.
        """
        cfg = self.config
        rng = random.Random()
        backoff = cfg.backoff_initial
        index = 0
        redirect = ""
        while True:
            addr = redirect or cfg.masters[index % len(cfg.masters)]
            redirect = ""
            end = await trio_asyncio.aio_as_trio(self._session)(addr)
            if end.drained:
                log.info("drained: exiting")
                return 0
            if end.status in _FATAL:
                log.error("registration refused for good: %s %s", end.status, end.message)
                return 2
            if end.registered:
                backoff = cfg.backoff_initial
            if end.redirect and end.redirect != addr:
                log.info("redirected to leader %s", end.redirect)
                redirect = end.redirect
                await trio.sleep(0)  # follow at once
                continue
            index += 1
            delay = backoff * (0.5 + rng.random())
            log.info("session with %s ended (%s %s); retry in %.2fs", addr, end.status, end.message, delay)
            await trio.sleep(delay)
            backoff = min(backoff * 2, cfg.backoff_max)

    # ---- one session (asyncio) ----------------------------------------

    def _envelope(self) -> pb.EventStreamMessage:
        return pb.EventStreamMessage(
            event_id=uuid.uuid4().hex, worker_id=self.config.worker_id, tenant_id=self.config.pool
        )

    def _register_message(self) -> pb.EventStreamMessage:
        cfg = self.config
        msg = self._envelope()
        reg = msg.register_event
        reg.worker.node_id = cfg.worker_id
        reg.worker.addr = cfg.addr
        labels = dict(cfg.labels)
        if cfg.zone:
            labels["zone"] = cfg.zone
        if cfg.pool:
            labels["pool"] = cfg.pool
        reg.worker.labels.update(labels)
        reg.capacity.memory_bytes = cfg.memory_bytes
        reg.capacity.cpu_cores = cfg.cpu_cores
        reg.software_version = f"leibrix-worker/{leibrix.__version__}"
        reg.inventory.extend(t.inventory_entry() for t in self.loader.inventory())
        return msg

    async def _session(self, addr: str) -> SessionEnd:
        end = SessionEnd()
        host, port = split_hostport(addr, what="masters")
        tls = self.config.tls
        channel = Channel(host, port, ssl=tls.client_context() if tls else None,
                          config=Configuration(ssl_target_name_override=tls.server_name or None) if tls else None)
        stream = channel.request(COORDINATE_WORKER, Cardinality.STREAM_STREAM,
                                 pb.EventStreamMessage, pb.EventStreamMessage)
        tasks: list[asyncio.Task] = []
        try:
            async with stream:
                await asyncio.wait_for(stream.send_message(self._register_message()),
                                       self.config.connect_timeout)
                first = await stream.recv_message()
                if first is None or first.WhichOneof("payload") != "common_ack":
                    end.message = "stream ended before registration_ack"
                    await _finish(stream)
                    return end
                ack = first.common_ack
                payload = json_format.MessageToDict(ack.payload)
                if "reject" in ack.event_type:
                    end.message = str(payload.get("reason", ack.event_type))
                    end.redirect = str(payload.get("leader", ""))
                    await _finish(stream)  # raises GRPCError with the status and leader
                    return end
                end.registered = True
                interval = float(payload.get("heartbeat_interval_s") or self.config.heartbeat_interval)
                outbox: asyncio.Queue[pb.EventStreamMessage] = asyncio.Queue()
                loads = asyncio.Semaphore(self.config.max_parallel_loads)
                tasks.append(asyncio.ensure_future(self._sender(stream, outbox)))
                tasks.append(asyncio.ensure_future(self._heartbeats(outbox, interval)))
                log.info("registered with %s as %s", addr, self.config.worker_id)
                while True:
                    if tasks[0].done():  # the sender failed: the stream is broken
                        tasks[0].result()
                    msg = await stream.recv_message()
                    if msg is None:
                        end.message = "master closed the stream"
                        await _finish(stream)
                        return end
                    kind = msg.WhichOneof("payload")
                    if kind == "data_assignment":
                        tasks.append(asyncio.ensure_future(
                            self._load(msg.data_assignment, msg.tenant_id, outbox, loads)))
                        tasks[2:] = [t for t in tasks[2:] if not t.done()]
                    elif kind == "common_ack":
                        if await self._command(msg.common_ack, end):
                            return end
                    else:
                        log.warning("ignoring unexpected %s from master", kind)
        except GRPCError as e:
            end.status, end.message = e.status, e.message or ""
            meta = stream.trailing_metadata or {}
            end.redirect = str(meta.get(LEADER_METADATA, "")) or end.redirect
            return end
        except (OSError, StreamTerminatedError, ProtocolError, asyncio.TimeoutError) as e:
            end.message = f"{type(e).__name__}: {e}"
            return end
        finally:
            for t in tasks:
                t.cancel()
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
            channel.close()

    async def _command(self, ack: pb.CommonAckEvent, end: SessionEnd) -> bool:
        """Execute a ``common_ack`` command; True when the session should end."""
        payload = json_format.MessageToDict(ack.payload)
        if ack.event_type == "evict_epoch":
            ds, ep = str(payload.get("dataset_id", "")), str(payload.get("epoch_id", ""))
            # the tenant's table only; a master that names no tenant evicts the epoch of whichever holds it
            tenant = str(payload.get("tenant_id", "")) or None
            # in a thread: the DuckDB lock may be held by a running load
            dropped = await call_trio(trio.to_thread.run_sync, self.loader.evict, ds, ep, tenant)
            log.info("evicted %s/%s (%s): %s", payload.get("dataset_id"), payload.get("epoch_id"),
                     payload.get("reason", ""), "dropped" if dropped else "not held")
            return False
        if ack.event_type == "drain_command":
            end.drained = True
            end.message = "drain_command"
            return True
        if ack.event_type == "reconnect":
            end.message = "master asked to reconnect"
            end.redirect = str(payload.get("leader", ""))
            return True
        log.warning("ignoring unknown command %s", ack.event_type)
        return False

    async def _sender(self, stream, outbox: asyncio.Queue) -> None:
        while True:
            await stream.send_message(await outbox.get())

    async def _heartbeats(self, outbox: asyncio.Queue, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            msg = self._envelope()
            msg.heartbeat_event.memory_used_bytes = self.loader.memory_used_bytes
            msg.heartbeat_event.loads_in_flight = self._loads_in_flight
            outbox.put_nowait(msg)

    def _status(self, a: pb.DataAssignmentEvent, status: int, *, loaded: Loaded | None = None,
                error: str = "", rows: int = 0) -> pb.EventStreamMessage:
        msg = self._envelope()
        st = msg.data_pull_status_update
        st.dataset_id, st.epoch_id, st.status = a.dataset_id, a.epoch_id, status
        st.plan_id = a.load_plan.plan_id
        st.error_message = error
        st.rows = rows
        if loaded is not None:
            st.rows, st.bytes, st.schema_fingerprint = loaded.rows, loaded.bytes, loaded.schema_fingerprint
        return msg

    async def _load(self, a: pb.DataAssignmentEvent, tenant: str, outbox: asyncio.Queue,
                    loads: asyncio.Semaphore) -> None:
        """Run one load in a thread, reporting IN_PROGRESS (rows so far) every ``progress_interval`` s.

        The loader calls ``progress`` from its thread (or DuckDB's) with the
        rows read so far; it only stores the number. A small task of this
        session reads it on a timer and queues an IN_PROGRESS update when it
        changed (the first one at once, with 0 rows); it is cancelled when
        the load ends, before COMPLETED or FAILED is queued, so no progress
        report ever follows the final one.
        """
        S = pb.DataPullStatusUpdateEvent.Status
        budgets = self.config.budgets
        owner = a.load_plan.tenant_id or tenant or self.config.pool
        mine = self._tenant_loads.get(owner)
        if mine is None:
            n = budgets.slots(owner) if budgets is not None else self.config.max_parallel_loads
            mine = self._tenant_loads[owner] = asyncio.Semaphore(max(1, min(n, self.config.max_parallel_loads)))
        async with mine, loads:  # the tenant's own slot first: its backlog never holds the worker's slots
            self._loads_in_flight += 1
            latest = [0]

            def progress(rows: int) -> None:
                latest[0] = rows  # one store: safe from any thread

            async def report() -> None:
                sent = -1
                while True:
                    if latest[0] != sent:
                        sent = latest[0]
                        outbox.put_nowait(self._status(a, S.IN_PROGRESS, rows=sent))
                    await asyncio.sleep(self.config.progress_interval)

            reporter = asyncio.ensure_future(report())
            try:
                loaded = await call_trio(trio.to_thread.run_sync, lambda: self.loader.load(
                    a, tenant_id=tenant or self.config.pool, progress=progress))
            except Exception as e:  # a failed load is reported, never fatal to the worker
                log.warning("load of %s/%s failed: %s", a.dataset_id, a.epoch_id, e)
                final = self._status(a, S.FAILED, error=f"{type(e).__name__}: {e}")
            else:
                final = self._status(a, S.COMPLETED, loaded=loaded)
            finally:
                reporter.cancel()  # no IN_PROGRESS after the final status
                await asyncio.gather(reporter, return_exceptions=True)
                self._loads_in_flight -= 1
            outbox.put_nowait(final)
