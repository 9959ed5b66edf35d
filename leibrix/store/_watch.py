"""etcd watches bridged into Trio: :class:`WatchStream` and :func:`open_watch`.

Each watch is a gRPC ``Watch`` stream of its own (``etcd3``'s generated
stubs), read by a thread of its own and bridged into Trio through a bounded
memory channel with :func:`trio.from_thread.run`, so a slow consumer applies
back-pressure to its own watch only, instead of growing an unbounded queue; the
stream is cancelled when the consumer leaves. (The ``etcd3`` library's
``Watcher`` multiplexes every watch of a client over one stream and one
callback thread, and creates and cancels watches under one lock while putting
requests into a bounded queue: one consumer that stops reading, or a request
queue that fills while the stream reconnects to another member, then stalls
every watch of the client for good.) :class:`EtcdClient`'s
``watch_prefix``/``watch_key`` are the way in.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import etcd3.etcdrpc as rpc
import etcd3.exceptions
import grpc
import trio

from leibrix.store._ops import Compacted, EtcdError, EtcdUnavailable, WatchEvent, _kv

__all__ = ["WatchClient", "WatchStream", "open_watch"]

#: Watch batches buffered between a watch's reader thread and the Trio consumer
#: before the thread waits (back-pressure).
_WATCH_BUFFER = 256


class WatchClient(Protocol):
    """What a watch uses of ``leibrix.store._etcd.EtcdClient``: its raw client, timeout, error mapping and close state."""

    #: the ``etcd3`` client (``endpoint_in_use``, ``endpoints``, ``call_credentials``, ``metadata``)
    _raw: Any
    timeout: float
    _closed: bool

    def _failed_quietly(self, exc: BaseException, *, bench: bool = True) -> EtcdError: ...


class WatchStream(trio.abc.ReceiveChannel[list[WatchEvent]]):
    """The Trio end of an etcd watch: batches of events in revision order.

    Iterate it with ``async for``. When the underlying watch breaks the stream
    first yields everything already buffered, then raises :class:`Compacted`
    (re-list and watch again) or :class:`EtcdUnavailable` (the connection
    dropped) instead of ending quietly, so a consumer can never mistake a lost
    watch for "no more changes".
    """

    def __init__(self, receive: trio.MemoryReceiveChannel[list[WatchEvent]]) -> None:
        self._receive = receive
        self._error: EtcdError | None = None

    async def receive(self) -> list[WatchEvent]:
        """Next batch of events (one etcd watch response); raises the watch's failure at the end."""
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            if self._error is not None:
                raise self._error from None
            raise

    async def aclose(self) -> None:
        """Stop receiving; a callback blocked on a full buffer is released at once."""
        await self._receive.aclose()


@asynccontextmanager
async def open_watch(
    client: WatchClient, key: str, range_end: bytes | None, start_revision: int
) -> AsyncIterator[WatchStream]:
    """Watch ``key`` (to ``range_end``) from ``start_revision`` through ``client``; the stream is cancelled on exit.

    Returns once etcd has created the watch (:class:`EtcdUnavailable` if it
    did not within the client's timeout). A start revision etcd has compacted
    surfaces as :class:`Compacted` from the stream's ``receive``.
    """
    if start_revision < 1:
        raise ValueError(f"start_revision must be >= 1, got {start_revision}")
    if client._closed:
        raise EtcdUnavailable("etcd client is closed")
    send, receive = trio.open_memory_channel[list[WatchEvent]](_WATCH_BUFFER)
    stream = WatchStream(receive)
    token = trio.lowlevel.current_trio_token()
    created = trio.Event()
    done = threading.Event()  # set once the consumer left: the thread drops what still arrives
    requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
    requests.put(rpc.WatchRequest(create_request=rpc.WatchCreateRequest(
        key=key.encode(), range_end=range_end or b"", start_revision=start_revision)))

    def outgoing() -> Iterator[Any]:
        while (request := requests.get()) is not None:
            yield request

    raw = client._raw
    try:
        channel = raw.channel  # the current endpoint, or the first one not benched after a failure
    except (etcd3.exceptions.Etcd3Exception, ValueError) as exc:
        raise EtcdUnavailable(f"no etcd endpoint to watch from: {exc!r}") from None
    endpoint = raw.endpoint_in_use
    call = rpc.WatchStub(channel).Watch(outgoing(), credentials=raw.call_credentials, metadata=raw.metadata)

    def fail(err: EtcdError) -> None:
        stream._error = err
        send.close()
        created.set()

    def to_trio(fn: Callable[..., Any], *args: Any, wait: bool = False) -> bool:
        """Run ``fn`` in Trio; False once the consumer or the run is gone."""
        if done.is_set():
            return False
        try:
            if wait:
                trio.from_thread.run(fn, *args, trio_token=token)
            else:
                trio.from_thread.run_sync(fn, *args, trio_token=token)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError):
            return False
        return True

    def read() -> None:
        try:
            for resp in call:
                if resp.compact_revision:
                    to_trio(fail, Compacted(resp.compact_revision))
                    return
                if resp.canceled:
                    to_trio(fail, EtcdUnavailable(f"etcd cancelled the watch: {resp.cancel_reason or 'no reason'}"))
                    return
                if resp.created:
                    to_trio(created.set)
                batch = [WatchEvent("delete" if ev.type == ev.DELETE else "put", _kv(ev.kv)) for ev in resp.events]
                if batch and not to_trio(send.send, batch, wait=True):
                    return
            to_trio(fail, EtcdUnavailable("etcd watch stream ended"))
        except grpc.RpcError as exc:
            if not done.is_set():
                # Bench this watch's endpoint only while it is still the one in use: the late error of a stream
                # on an endpoint already left behind must not bench the healthy one the client moved to.
                to_trio(fail, client._failed_quietly(exc, bench=raw.endpoint_in_use is endpoint))
        finally:
            requests.put(None)

    reader = threading.Thread(target=read, name=f"etcd-watch {key}", daemon=True)
    reader.start()
    try:
        with trio.move_on_after(client.timeout):
            await created.wait()
        if not created.is_set():
            raise EtcdUnavailable(f"etcd did not create the watch of {key!r} within {client.timeout:.1f}s")
        async with stream:
            yield stream
    finally:
        done.set()
        call.cancel()
        requests.put(None)
        send.close()
