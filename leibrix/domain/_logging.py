"""Log lines for every leibrix process: ``text`` or ``json`` format, and context fields on each line.

This module sits at the bottom of the package (beside the domain rules) so
that every layer, the reference worker included, can :func:`bind` fields and
the commands can :func:`setup_logging`; the command-line options are added by
``leibrix.cli._logging``.

One line per event on stderr. ``text`` is for people
(``2026-11-27 10:00:00,123 INFO leibrix.workers._membership: worker w1 registered ... worker=w1``);
``json`` is one object per line for log shippers, with ``ts``, ``level``,
``logger``, ``msg`` (and ``exc`` for a traceback) plus the **context fields**
below whenever the line is about one of them.

Context fields — ``tenant``, ``dataset``, ``epoch``, ``worker`` (and ``term``,
``from_state``, ``to_state``) — reach a line in three ways, the first that
sets a field wins:

1. ``extra=`` on the call: ``log.info("...", extra={"worker": wid})``;
2. :func:`bind` for everything logged in a block (a Trio task and the tasks
   it starts inherit it, as context variables are copied into new tasks)::

       with bind(tenant="acme", dataset="orders"):
           ...

3. the message itself: a ``%s`` placeholder right after the word ``worker``,
   ``tenant``, ``dataset`` or ``epoch`` (``"worker %s registered"``) gives
   that field its argument, and ``epoch %s/%s/%s`` (also ``dataset %s/%s``)
   gives tenant, dataset and epoch (``term %d`` gives ``term``). The wording the modules already use is
   thus enough for most lines; an explicit field is still better.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Iterator
from typing import Any

__all__ = ["FIELDS", "FORMATS", "LEVELS", "ContextFilter", "JsonFormatter", "TextFormatter", "bind", "setup_logging"]

#: The context fields a line may carry, in the order text lines show them.
FIELDS = ("tenant", "dataset", "epoch", "worker", "term", "from_state", "to_state")
LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("text", "json")

_bound: contextvars.ContextVar[dict[str, str]] = contextvars.ContextVar("leibrix_log_fields", default={})

#: ``<word> %s`` (or ``%s/%s[/%s]`` after epoch/dataset) in a format string, and any placeholder.
_NAMED = re.compile(r"\b(tenant|dataset|epoch|worker|term)s? (?:of )?((?:%[sdr])(?:/%[sdr]){0,2})")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*[\d*]*(?:\.[\d*]+)?[sdrifgexXoac%]")


@contextlib.contextmanager
def bind(**fields: object) -> Iterator[None]:
    """Attach ``fields`` to every line logged inside the block (and by tasks started inside it)."""
    token = _bound.set({**_bound.get(), **{k: str(v) for k, v in fields.items() if v is not None and v != ""}})
    try:
        yield
    finally:
        _bound.reset(token)


def _from_message(record: logging.LogRecord) -> dict[str, str]:
    """Fields named by the wording of ``record``'s format string (see the module doc)."""
    fmt, args = record.msg, record.args
    if not isinstance(fmt, str) or not isinstance(args, tuple) or not args:
        return {}
    found: dict[str, str] = {}
    for match in _NAMED.finditer(fmt):
        index = sum(1 for p in _PLACEHOLDER.findall(fmt[:match.start(2)]) if p != "%%")
        n = match.group(2).count("%")
        values = [str(a) for a in args[index:index + n]]
        if len(values) != n:
            continue
        word = match.group(1)
        if n == 1:
            names: tuple[str, ...] = (word,)
        elif word == "epoch":
            names = ("tenant", "dataset", "epoch")[-n:] if n == 3 else ("dataset", "epoch")
        else:
            names = ("tenant", "dataset") if n == 2 else ("tenant", "dataset", "epoch")
        for name, v in zip(names, values):
            found.setdefault(name, v)
    return found


class ContextFilter(logging.Filter):
    """Sets the context fields on each record (``extra`` first, then :func:`bind`, then the message)."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Always passes the record, with its fields set as attributes."""
        for source in (_bound.get(), _from_message(record)):
            for name, v in source.items():
                if getattr(record, name, None) in (None, ""):
                    setattr(record, name, v)
        return True


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    return {name: v for name in FIELDS if (v := getattr(record, name, None)) not in (None, "")}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC), ``level``, ``logger``, ``msg``, ``exc`` and the context fields."""

    converter = time.gmtime

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as a JSON line."""
        entry: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_fields(record))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message key=value ...`` (the context fields the message does not already show)."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        """Render ``record`` as one text line (plus a traceback, if any)."""
        line = super().format(record)
        message = record.getMessage()
        extra = " ".join(f"{k}={v}" for k, v in _fields(record).items() if str(v) not in message)
        if not extra:
            return line
        head, sep, tail = line.partition("\n")
        return f"{head} {extra}{sep}{tail}"


def setup_logging(level: str, fmt: str) -> None:
    """Send every log line to stderr in ``fmt`` (``text`` or ``json``) from ``level`` up; replaces earlier setup."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler], force=True)
