"""etcd watches bridged into Trio: :class:`WatchStream` and :func:`open_watch`.

Watches arrive on the ``etcd3`` library's callback thread and are bridged into
Trio through a bounded memory channel with :func:`trio.from_thread.run`, so a
slow consumer applies back-pressure instead of growing an unbounded queue; the
etcd watch is cancelled when the consumer leaves. :class:`EtcdClient`'s
``watch_prefix``/``watch_key`` are the way in.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

import etcd3.events
import trio

from leibrix.store._ops import EtcdError, EtcdUnavailable, WatchEvent, _kv

__all__ = ["WatchClient", "WatchStream", "open_watch"]

T = TypeVar("T")

#: Watch batches buffered between etcd's callback thread and the Trio consumer
#: before the callback thread waits (back-pressure).
_WATCH_BUFFER = 256


class WatchClient(Protocol):
    """What a watch uses of ``leibrix.store._etcd.EtcdClient``: its raw client, calls, error mapping and close state."""

    #: the ``etcd3`` client (``watcher``)
    _raw: Any
    timeout: float
    _closed: bool
    #: watch creations in flight, and the event set when the last one ends (``close`` waits for it)
    _creating: int
    _created: trio.Event

    async def _call(self, fn: Callable[[], T], *, abandon_on_cancel: bool = True, retry: str = "always",
                    op: str = "other") -> T: ...

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
    """Watch ``key`` (to ``range_end``) from ``start_revision`` through ``client``; the etcd watch is cancelled on exit."""
    if start_revision < 1:
        raise ValueError(f"start_revision must be >= 1, got {start_revision}")
    send, receive = trio.open_memory_channel[list[WatchEvent]](_WATCH_BUFFER)
    stream = WatchStream(receive)
    token = trio.lowlevel.current_trio_token()
    done = False  # set (under the GIL) once the stream has ended: later callbacks are dropped

    def fail(err: EtcdError) -> None:
        stream._error = err
        send.close()

    def callback(resp: Any) -> None:
        # Runs on the etcd3 watcher thread.
        nonlocal done
        if done:
            return
        try:
            if isinstance(resp, BaseException) or resp is None:
                done = True
                err = (
                    EtcdUnavailable("etcd watch stream ended")
                    if resp is None
                    else client._failed_quietly(resp)
                )
                trio.from_thread.run_sync(fail, err, trio_token=token)
                return
            batch = [
                WatchEvent(
                    "put" if isinstance(ev, etcd3.events.PutEvent) else "delete",
                    _kv(ev._event.kv),
                )
                for ev in resp.events
            ]
            if batch:
                trio.from_thread.run(send.send, batch, trio_token=token)
        except (trio.BrokenResourceError, trio.ClosedResourceError, trio.RunFinishedError):
            done = True

    if client._closed:
        raise EtcdUnavailable("etcd client is closed")
    # Not abandoned on cancel: a watch created after its caller left would
    # never be cancelled (bounded by the client timeout).
    client._creating += 1
    try:
        watch_id = await client._call(
            lambda: client._raw.watcher.add_callback(
                key.encode(), callback, range_end=range_end, start_revision=start_revision
            ),
            abandon_on_cancel=False,
            retry="never",
        )
    finally:
        client._creating -= 1
        if not client._creating:
            client._created.set()
            client._created = trio.Event()
    try:
        async with stream:
            yield stream
    finally:
        done = True
        with trio.CancelScope(shield=True), trio.move_on_after(client.timeout):
            try:
                await client._call(lambda: client._raw.watcher.cancel(watch_id), retry="never")
            except EtcdError:
                pass  # the stream is already gone: nothing left to cancel
        send.close()
