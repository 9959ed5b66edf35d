"""Waiting in tests: one polling helper, and counters that show a periodic pass has run.

* :func:`eventually` polls a condition until it holds; on timeout it raises an
  ``AssertionError`` that names what was awaited and the last value seen.
  Use it for every "wait until ..." (never a bare ``trio.fail_after`` loop).
* :class:`Passes` counts the runs of one async method (a scheduling pass, a
  janitor pass, a heat checkpoint). A test that asserts that something did
  *not* happen waits for :meth:`Passes.after` — a pass that started after the
  event has finished — instead of sleeping for a guessed time.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio

#: How long :func:`eventually` waits unless told otherwise (seconds).
TIMEOUT = 20.0


async def eventually(predicate: Callable[[], Any], *, timeout: float = TIMEOUT, what: str,
                     until: Callable[[Any], Any] | None = None, interval: float = 0.02) -> Any:
    """Poll ``predicate`` (sync or async) until it holds; returns its last value.

    Without ``until`` the predicate's value must be truthy; with it, the
    predicate is a probe and ``until(value)`` must be truthy — the probe's
    value then appears in the timeout message, e.g.::

        await eventually(lambda: states(m), until=lambda s: set(s.values()) == {"READY"}, what="READY")

    Raises ``AssertionError("timed out after 20 s waiting for READY; last value: {...}")``.
    Exceptions raised by the predicate propagate at once.
    """
    last: Any = None
    with trio.move_on_after(timeout):
        while True:
            last = predicate()
            if inspect.isawaitable(last):
                last = await last
            if (until(last) if until is not None else last):
                return last
            await trio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}; last value: {last!r}")


class Passes:
    """Counts the calls of one async method: ``started`` on entry, ``finished`` on exit (even by an error)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.started = 0
        self.finished = 0

    def wrap(self, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        @functools.wraps(method)
        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.started += 1
            try:
                return await method(*args, **kwargs)
            finally:
                self.finished += 1

        return counted

    @classmethod
    def of(cls, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str) -> Passes:
        """Count ``owner.name`` (a class: every instance; an instance: that one), restored at teardown."""
        passes = cls(f"{getattr(owner, '__name__', type(owner).__name__)}.{name}")
        monkeypatch.setattr(owner, name, passes.wrap(getattr(owner, name)))
        return passes

    def mark(self) -> int:
        """The number of passes started so far: :meth:`after` waits for passes started later."""
        return self.started

    async def after(self, mark: int | None = None, *, count: int = 1, timeout: float = TIMEOUT) -> None:
        """Wait until ``count`` passes started after ``mark`` (default: now) have finished.

        Passes run one at a time, so ``finished >= mark + count`` means the
        ``count``-th pass begun after the mark is done.
        """
        start = self.started if mark is None else mark
        await eventually(lambda: self.finished, until=lambda done: done >= start + count, timeout=timeout,
                         what=f"{count} {self.what} pass(es) started after pass {start} to finish")
