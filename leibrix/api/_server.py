"""The gRPC server: grpclib (asyncio-only) hosted inside Trio through trio-asyncio.

Three things every RPC of the master shares live here, so no service has to
repeat them:

* **Trio handlers.** grpclib calls handlers on the asyncio side of the bridge.
  RPC implementations are written as ordinary Trio code and decorated with
  :func:`trio_rpc`, which runs them (unary or server-streaming) as Trio tasks
  through trio-asyncio (unary ones via :func:`call_trio`, which leaves no
  garbage cycle per call); a cancelled client call cancels the Trio task.
  A server-streaming area inherits :class:`ClosingStreams`, so a client that
  leaves while a response is being sent closes the Trio generator at once
  (its ``finally`` runs) instead of leaving it suspended until collected.
* **One error mapping.** :func:`_guard` wraps every handler the server serves:
  a :class:`leibrix.domain._errors.ApiError` becomes the same gRPC status and message;
  :class:`~leibrix.domain._errors.Unavailable` also carries the leader's address as
  trailing metadata ``leibrix-leader`` (grpclib lets a handler send its own
  trailers with ``Stream.send_trailing_metadata``; once sent, grpclib's own
  exception-to-status step is skipped); an unreachable etcd is ``UNAVAILABLE``
  too, because a retry may succeed. An error that carries a ``retry_after_ms``
  hint (an admission shed as ``Overloaded``, ``RESOURCE_EXHAUSTED``) sends it
  as trailing metadata ``retry-after-ms``. Anything else stays grpclib's ``UNKNOWN``
  and is logged: it is a bug, never the caller's fault.
* **Hostile input.** Requests are decoded by :class:`leibrix.api._decode.RequestCodec`
  (bytes that do not parse get ``INVALID_ARGUMENT`` naming the field, never
  ``UNKNOWN``; a ManagementService request over 2 MiB, or over its budget of
  fields and embedded messages, gets ``RESOURCE_EXHAUSTED`` naming the sizes
  before it is parsed), and
  :func:`trio_rpc` checks the size of every string, list and map of a request
  (:func:`leibrix.domain._validation.check_request_bounds`) before the RPC
  runs. Status messages are bounded where errors are made
  (:class:`~leibrix.domain._errors.ApiError`).
* **Who may call.** With an :class:`leibrix.api._auth.Authorizer`, every
  ManagementService handler is wrapped by its rule (authenticate, then
  authorize against the request) inside the error mapping, before the
  handler reads anything; other services stay as they are.
* **TLS.** With a :class:`leibrix.api._tls.ServerTls`, the port speaks only
  TLS and its certificates are reloaded without a restart.
* **The standard services.** ``grpc.health.v1.Health`` (SERVING only while
  :class:`HealthFlag` says this member is healthy) and server reflection
  (v1 and v1alpha). Reflection reads descriptors from protobuf's default pool;
  importing the protoc-generated ``leibrix.wire._proto.records`` modules registers ours.

The worker stream is served at both ``/leibrix_cp.ControlPlaneService/...``
(the Go master's path) and ``/control_plane.ControlPlaneService/...`` (the
path the Rust worker dials).
"""

from __future__ import annotations

import functools
import inspect
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

import grpclib.const
import grpclib.server
import h2.exceptions
import trio
import trio_asyncio
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection

from leibrix.api._auth import Authorizer
from leibrix.api._decode import RequestCodec
from leibrix.api._tls import ServerTls
from leibrix.domain._errors import ApiError, ResourceExhausted, Unavailable
from leibrix.domain._validation import check_request_bounds
from leibrix.wire._grpc import CONTROL_PLANE_ALIASES, LEADER_METADATA, call_trio
from leibrix.store._etcd import EtcdRefused, EtcdUnavailable

# Imported for their side effect: registering our file descriptors in protobuf's
# default pool, which is what server reflection serves.
from leibrix.wire._proto.records import control_plane_pb2, management_pb2  # noqa: F401  # isort: skip

__all__ = ["ClosingStreams", "GrpcServer", "HealthFlag", "trio_rpc"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def trio_rpc(fn: F) -> F:
    """Mark an RPC method as Trio code, callable from grpclib's asyncio side.

    Use it on every method that overrides a generated ``*ServiceBase`` RPC::

        class TenantApi:
            @trio_rpc
            async def get_tenant(self, request: GetTenantRequest) -> TenantInfo:
                ...  # plain Trio: await trio.sleep(...), self.master.etcd..., raise NotFound(...)

    Unary methods return the response; server-streaming methods are async
    generators and ``yield`` responses. Raise :class:`leibrix.domain._errors.ApiError`
    subclasses for anything the caller did wrong. The request's bounds are
    checked before ``fn`` runs.
    """
    if inspect.isasyncgenfunction(fn):

        @functools.wraps(fn)
        def stream(self: Any, request: Any) -> Any:
            check_request_bounds(request)
            return _closing(fn(self, request))

        return stream  # type: ignore[return-value]

    @functools.wraps(fn)
    async def unary(self: Any, request: Any) -> Any:
        check_request_bounds(request)
        return await call_trio(fn, self, request)

    return unary  # type: ignore[return-value]


async def _closing(responses: Any) -> AsyncIterator[Any]:
    """The asyncio side of a Trio async generator: its items, and its ``aclose`` when this one is closed."""
    try:
        async for item in trio_asyncio.trio_as_aio(responses):
            yield item
    finally:
        try:
            await trio_asyncio.trio_as_aio(responses.aclose)()
        except RuntimeError:
            pass  # still running its cancelled step: it ends by itself with that cancellation


class ClosingStreams:
    """For ManagementService areas with server-streaming RPCs: the response iterator is closed when the call
    ends, however it ends.

    betterproto's driver iterates a handler's responses and sends each; when
    the client leaves, grpclib cancels it inside a send, and the iterator it
    drops is only finalised once collected, keeping a Trio generator (and
    what it subscribed to) suspended at its ``yield`` until then.
    """

    async def _call_rpc_handler_server_stream(self, handler: Callable[[Any], Any], stream: grpclib.server.Stream,
                                              request: Any) -> None:
        responses = handler(request)
        try:
            async for response in responses:
                await stream.send_message(response)
        finally:
            await responses.aclose()


def _as_api_error(exc: BaseException) -> ApiError | None:
    """The client-facing error ``exc`` stands for, or None if it is a bug."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, EtcdUnavailable):
        return Unavailable(f"the state store is unreachable, retry: {exc}")
    if isinstance(exc, EtcdRefused) and exc.exhausted:
        return ResourceExhausted(f"the state store refused the write ({exc.reason}): {exc.details}")
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _as_api_error(exc.exceptions[0])
    return None


#: Told of every answered call: ``(path, status name, seconds)`` (metrics; see ``leibrix.api._metrics``).
Observe = Callable[[str, str, float], None]


#: Trailing metadata of a shed call: milliseconds the caller should wait before retrying.
RETRY_AFTER_METADATA = "retry-after-ms"


def _guard(func: Callable[[grpclib.server.Stream], Any], path: str = "",
           observe: Observe | None = None) -> Callable[[grpclib.server.Stream], Any]:
    """Wrap one grpclib handler with the ApiError -> status (+ leader metadata) mapping (and ``observe``)."""

    @functools.wraps(func)
    async def handler(stream: grpclib.server.Stream) -> None:
        started, code = time.perf_counter(), "UNKNOWN"
        try:
            await func(stream)
            code = "OK"
        except Exception as exc:
            err = _as_api_error(exc)
            if err is None:
                raise
            code = err.status.name
            log.debug("%s answered %s: %s", func.__qualname__, err.status.name, err.message)
            metadata = {LEADER_METADATA: err.leader} if isinstance(err, Unavailable) and err.leader else None
            retry_after = getattr(err, "retry_after_ms", None)
            if isinstance(retry_after, int) and retry_after >= 0:
                metadata = {**(metadata or {}), RETRY_AFTER_METADATA: str(retry_after)}
            try:
                await stream.send_trailing_metadata(
                    status=err.status, status_message=err.message, metadata=metadata
                )
            except h2.exceptions.StreamClosedError:
                pass  # the client has gone; nothing to tell it
        finally:
            if observe is not None:
                observe(path, code, time.perf_counter() - started)

    return handler


class _Guarded:
    """A servable whose handlers are ``service``'s, guarded, optionally under other paths."""

    def __init__(self, mapping: Mapping[str, grpclib.const.Handler], authorizer: Authorizer | None = None,
                 observe: Observe | None = None) -> None:
        self._mapping = {
            path: grpclib.const.Handler(_guard(authorizer.wrap(path, h.func) if authorizer else h.func, path, observe),
                                        h.cardinality, h.request_type, h.reply_type)
            for path, h in mapping.items()
        }

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return dict(self._mapping)


class HealthFlag:
    """This member's health as ``grpc.health.v1`` reports it (for every service and overall).

    Set it from Trio with :meth:`set`; grpclib's ``Watch`` streams see changes.
    """

    def __init__(self) -> None:
        self._status = ServiceStatus()
        self._status.set(False)

    @property
    def serving(self) -> bool:
        """True when Health answers SERVING."""
        return bool(self._status.__status__())

    def set(self, healthy: bool) -> None:
        """Report this member healthy (SERVING) or not (NOT_SERVING)."""
        self._status.set(bool(healthy))


class GrpcServer:
    """The master's gRPC endpoint: the given services, Health and Reflection, all guarded.

    ``services`` are grpclib servables (e.g. betterproto ``ServiceBase``
    instances) whose RPC methods use :func:`trio_rpc`. A service that serves
    ``ControlPlaneService`` is also reachable under the Rust worker's path,
    unless it maps that path itself. ``authorizer`` (None: no authentication)
    guards the ManagementService; ``tls`` (None: plain text) secures the port;
    ``observe`` (None: nothing) is told of every answered call.
    """

    def __init__(self, services: Iterable[Any], health: HealthFlag, *, authorizer: Authorizer | None = None,
                 tls: ServerTls | None = None, observe: Observe | None = None) -> None:
        self.observe = observe
        self.health = health
        self._services = list(services)
        self.authorizer = authorizer
        self.tls = tls

    def _servables(self) -> list[Any]:
        guarded: list[Any] = []
        aliases: dict[str, grpclib.const.Handler] = {}
        for service in self._services:
            mapping = service.__mapping__()
            guarded.append(_Guarded(mapping, self.authorizer, self.observe))
            for path, handler in mapping.items():
                if path in CONTROL_PLANE_ALIASES and CONTROL_PLANE_ALIASES[path] not in mapping:
                    aliases[CONTROL_PLANE_ALIASES[path]] = handler
        health = Health({s: [self.health._status] for s in guarded})
        servables = ServerReflection.extend([*guarded, health])
        if aliases:
            # Not listed by reflection: the alias has no descriptor of its own.
            servables.append(_Guarded(aliases, observe=self.observe))
        return servables

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` until cancelled; ``started()`` once the port is bound.

        Binding errors (port in use) raise ``OSError`` before ``started()``. On
        cancellation the listener closes, in-flight calls are cancelled and
        given a second to finish, then the asyncio loop is closed.
        """
        async with trio_asyncio.open_loop():
            server = grpclib.server.Server(self._servables(), codec=RequestCodec())
            ssl_context = self.tls.context if self.tls is not None else None
            await trio_asyncio.aio_as_trio(server.start)(host, port, ssl=ssl_context)
            try:
                async with trio.open_nursery() as nursery:
                    if self.tls is not None:
                        await nursery.start(self.tls.run)  # reloads the certificates
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                with trio.CancelScope(shield=True), trio.move_on_after(1.0):
                    server.close()
                    await trio_asyncio.aio_as_trio(server.wait_closed)()
