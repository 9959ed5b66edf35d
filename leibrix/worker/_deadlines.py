"""Deadlines for every query of a worker, kept by one thread.

A query's timeout interrupts its DuckDB cursor when it expires. Rather than a
timer thread per query (a thread started and joined for every query, however
short), :class:`Deadlines` keeps every armed deadline in one heap watched by
one thread, started with the first deadline and stopped by :meth:`close`.
Arming a deadline that is not the earliest does not wake the thread; a
disarmed deadline is dropped from the heap lazily (the heap is rebuilt when
dropped entries outnumber the armed ones).

An action runs on the deadlines' thread, so it must be quick (an
``interrupt()``). Disarming does not wait for an action already running, so
an action may race with the end of what it guards; :meth:`Deadlines.disarm`
says whether it was in time, so a caller can keep what the action touches
out of further use when it was not. An action's exception is logged and does not stop the
thread.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable

__all__ = ["Deadlines"]

log = logging.getLogger("leibrix.worker.deadlines")


class Deadlines:
    """Call actions at their deadlines, from one thread."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        #: (deadline, token) of armed and of disarmed deadlines (dropped lazily)
        self._heap: list[tuple[float, int]] = []
        #: token -> action, for the armed deadlines only
        self._armed: dict[int, Callable[[], object]] = {}
        self._tokens = itertools.count()
        self._thread: threading.Thread | None = None
        self._closed = False

    def arm(self, seconds: float, action: Callable[[], object]) -> int:
        """Call ``action`` in ``seconds`` unless :meth:`disarm` is called first; returns the token to disarm with."""
        when = time.monotonic() + seconds
        with self._wake:
            if self._closed:
                raise RuntimeError("deadlines closed")
            token = next(self._tokens)
            self._armed[token] = action
            earliest = not self._heap or when < self._heap[0][0]
            heapq.heappush(self._heap, (when, token))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="leibrix-deadlines", daemon=True)
                self._thread.start()
            elif earliest:
                self._wake.notify()
        return token

    def disarm(self, token: int) -> bool:
        """Cancel a deadline; False when it was too late (its action was called, or is being called)."""
        with self._wake:
            disarmed = self._armed.pop(token, None) is not None
            if disarmed and len(self._heap) > 2 * len(self._armed) + 64:
                self._heap = [entry for entry in self._heap if entry[1] in self._armed]
                heapq.heapify(self._heap)
            return disarmed

    @property
    def armed(self) -> int:
        """Deadlines armed and not yet due."""
        with self._wake:
            return len(self._armed)

    def close(self) -> None:
        """Stop the thread; pending deadlines are dropped and :meth:`arm` refuses new ones."""
        with self._wake:
            self._closed = True
            self._armed.clear()
            self._heap.clear()
            self._wake.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()

    def _run(self) -> None:
        while True:
            with self._wake:
                while True:
                    if self._closed:
                        return
                    while self._heap and self._heap[0][1] not in self._armed:
                        heapq.heappop(self._heap)
                    if not self._heap:
                        self._wake.wait()
                        continue
                    wait = self._heap[0][0] - time.monotonic()
                    if wait <= 0:
                        _, token = heapq.heappop(self._heap)
                        action = self._armed.pop(token)
                        break
                    self._wake.wait(wait)
            try:
                action()
            except Exception:
                log.exception("a deadline's action failed")
