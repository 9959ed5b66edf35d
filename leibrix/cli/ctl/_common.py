"""What every ``leibrix ctl`` command shares: settings, calls, pages, output and exit codes.

A command is a plain function ``(ctx, args) -> int`` that runs inside one
``trio.run``; it calls the masters through :meth:`Ctx.rpc` (one unary call,
leader redirects followed, the configured masters tried in order) or
:meth:`Ctx.pages` (every page of a List RPC), and prints with :meth:`Ctx.show`.
Failures are exceptions; :func:`exit_code` turns them into the documented
exit status in one place, so every command maps gRPC statuses the same way.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import betterproto
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from rich import box
from rich.console import Console
from rich.table import Table

from leibrix.client._call import call
from leibrix.client._config import ClientConfig, ConfigError
from leibrix.client._datasets import DatasetFileError, dump_yaml

__all__ = ["Column", "Ctx", "CtlError", "EXIT_HELP", "exit_code", "human_bytes", "split_ref"]

OK, SERVER, USAGE, NOT_FOUND, UNAVAILABLE = 0, 1, 2, 3, 4

#: The exit codes, as printed at the end of every ``leibrix ctl`` help.
EXIT_HELP = """exit status:
  0  success
  1  the master refused or failed the request (FAILED_PRECONDITION, RESOURCE_EXHAUSTED,
     INTERNAL, ...), a FAILED epoch or a drain that left replicas behind (--wait),
     an unhealthy cluster (status)
  2  usage: bad arguments, an unreadable or invalid file or config, INVALID_ARGUMENT
  3  not found: the tenant, dataset, epoch or worker does not exist (NOT_FOUND)
  4  unavailable: no master reachable or leading, a call timed out (UNAVAILABLE,
     DEADLINE_EXCEEDED), or --wait ran out of time

settings: --master, else $LEIBRIX_MASTER, else the config file ($LEIBRIX_CONFIG or
~/.config/leibrix/config.yaml: master, timeout, tenant, token, tls_ca, tls_cert, tls_key)."""

_BY_STATUS = {
    Status.NOT_FOUND: NOT_FOUND,
    Status.INVALID_ARGUMENT: USAGE,
    Status.OUT_OF_RANGE: USAGE,
    Status.UNAVAILABLE: UNAVAILABLE,
    Status.DEADLINE_EXCEEDED: UNAVAILABLE,
}


class CtlError(Exception):
    """A failure the command explains itself: the message and the exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


def exit_code(exc: BaseException) -> tuple[int, str]:
    """The exit status and one-line explanation for a failure of a ctl command."""
    if isinstance(exc, CtlError):
        return exc.code, str(exc)
    if isinstance(exc, GRPCError):
        return _BY_STATUS.get(exc.status, SERVER), f"{exc.status.name}: {exc.message or ''}".rstrip(": ")
    if isinstance(exc, (ConfigError, DatasetFileError, ValueError)):
        return USAGE, str(exc)
    if isinstance(exc, OSError):
        return UNAVAILABLE, f"no master reachable: {exc.strerror or exc}"
    raise exc


def split_ref(ref: str, tenant: str, what: str = "DATASET") -> tuple[str, str]:
    """``tenant/name`` or ``name`` with ``--tenant`` (or the config's tenant) -> (tenant, name)."""
    if "/" in ref:
        t, _, name = ref.partition("/")
        if t and name and "/" not in name:
            return t, name
        raise CtlError(USAGE, f"{what} must be NAME or TENANT/NAME, got {ref!r}")
    if not tenant:
        raise CtlError(USAGE, f"{what} {ref!r} needs a tenant: write TENANT/{ref} or pass --tenant")
    return tenant, ref


def human_bytes(n: int | float) -> str:
    """1536 -> ``1.5Ki``: binary units, short enough for a table cell."""
    value = float(n)
    for unit in ("", "Ki", "Mi", "Gi", "Ti"):
        if abs(value) < 1024 or unit == "Ti":
            return f"{value:.0f}{unit}" if unit == "" or value >= 100 else f"{value:.1f}{unit}".replace(".0", "")
        value /= 1024
    return str(n)


def ago(ts: datetime | None) -> str:
    """Time since ``ts``, kubectl style (``12s``, ``5m``, ``3h``, ``2d``); ``-`` when unset."""
    if ts is None or ts.timestamp() <= 0:
        return "-"
    s = max(0, int((datetime.now(timezone.utc) - ts).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= size:
            return f"{s // size}{unit}"
    return f"{s}s"


def minute(ts: datetime) -> str:
    """A UTC time to the minute: ``2026-11-01T00:00Z``."""
    return ts.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%MZ")


def dims_text(values: dict[str, str]) -> str:
    """Dimension values as ``region=eu,shop=1`` (``-`` when none)."""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items())) or "-"


@dataclass(frozen=True)
class Column:
    """One table column: its header, how to read the value from an item, how to print it.

    ``key`` (default: ``get``) gives the value ``--sort-by`` orders by, when
    the printed cell is not it (``3/10`` sorts by 3).
    """

    name: str
    get: Callable[[Any], Any]
    fmt: Callable[[Any], str] = str
    wide: bool = False
    key: Callable[[Any], Any] | None = None


@dataclass
class Ctx:
    """One command's settings (resolved config, output format, sort key) and its console."""

    config: ClientConfig
    output: str
    sort_by: str
    console: Console

    @classmethod
    def from_args(cls, args: argparse.Namespace, config: ClientConfig) -> Ctx:
        return cls(config=config, output=args.output, sort_by=args.sort_by or "",
                   console=Console(highlight=False, soft_wrap=False))

    # ------------------------------------------------------------ calls

    async def rpc(self, name: str, request: betterproto.Message, timeout: float | None = None) -> Any:
        """One ManagementService call; raises ``GRPCError`` / ``OSError`` as :func:`exit_code` expects."""
        reply, _ = await call(self.config.master, lambda stub: getattr(stub, name)(request),
                              timeout=timeout or self.config.timeout, metadata=self.config.metadata(),
                              ssl=self.config.ssl())
        return reply

    async def pages(self, name: str, request: Any, field: str) -> list[Any]:
        """Every entry of a List RPC, following ``next_page_token`` until the last page."""
        out: list[Any] = []
        token = ""
        while True:
            request.page_token = token
            reply = await self.rpc(name, request)
            out.extend(getattr(reply, field))
            token = reply.next_page_token
            if not token:
                return out

    # ------------------------------------------------------------ output

    def print(self, text: str) -> None:
        """One plain line on stdout (never styled, never wrapped)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def dump(self, data: Any) -> None:
        """``data`` as JSON or YAML, whichever ``-o`` chose."""
        if self.output == "yaml":
            sys.stdout.write(dump_yaml(data))
        else:
            sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
        sys.stdout.flush()

    def sort(self, items: Sequence[Any], columns: Sequence[Column]) -> list[Any]:
        """``items`` ordered by the ``--sort-by`` column (any column, wide ones included)."""
        if not self.sort_by:
            return list(items)
        wanted = self.sort_by.strip().lstrip(".").upper().replace("-", "_")
        for col in columns:
            if col.name.upper().replace("-", "_") == wanted:
                key = col.key or col.get
                return sorted(items, key=lambda item: _sort_key(key(item)))
        names = ", ".join(c.name for c in columns)
        raise CtlError(USAGE, f"--sort-by {self.sort_by!r}: no such column (one of: {names})")

    def show(self, items: Iterable[Any], columns: Sequence[Column], as_data: Callable[[Any], Any],
             single: bool = False) -> None:
        """Print items as a table (``table``/``wide``) or as data (``json``/``yaml``).

        ``as_data`` turns one item into plain data; a single item (``get``)
        is printed as itself, several as a list.
        """
        rows = self.sort(list(items), columns)
        if self.output in ("json", "yaml"):
            data = [as_data(r) for r in rows]
            self.dump(data[0] if single and data else data)
            return
        cols = [c for c in columns if self.output == "wide" or not c.wide]
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 2, 0, 0))
        for c in cols:
            table.add_column(c.name.upper(), no_wrap=c is cols[0], overflow="fold", min_width=len(c.name))
        for r in rows:
            table.add_row(*(c.fmt(c.get(r)) for c in cols))
        if not rows:
            self.console.print("No resources found.", markup=False, highlight=False)
            return
        # wide lines are as long as they need to be (like kubectl -o wide); tables fold to the terminal
        self.console.print(table, width=100_000 if self.output == "wide" else None, crop=False)


def _sort_key(value: Any) -> tuple[int, Any]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (0, value)
    if isinstance(value, datetime):
        return (0, value.timestamp())
    return (1, str(value))


def message_data(message: betterproto.Message) -> dict[str, Any]:
    """A wire message as proto3 JSON data with snake_case keys and defaults included."""
    return message.to_dict(casing=betterproto.Casing.SNAKE, include_default_values=True)
