"""One page of a List RPC: bounded in entries and in bytes, resumable by an opaque token.

A List reply holding everything grows with the cluster until a client refuses
it (gRPC clients accept 4 MiB by default). Every List RPC therefore answers one
page: the objects ordered by a key that identifies each one (its id, or
``(window start, id)`` for epochs), at most ``page_size`` of them
(:data:`DEFAULT_PAGE_SIZE` when 0, capped at :data:`MAX_PAGE_SIZE`), ending
early before the reply passes :data:`MAX_PAGE_BYTES`. ``next_page_token``
is the key of the page's last object, JSON in URL-safe base64: the next page
starts after it, so objects added or removed between pages never shift the
others. The token is opaque to clients; one that does not decode is
``INVALID_ARGUMENT`` naming ``page_token``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import betterproto
import trio

from leibrix.domain._errors import InvalidArgument

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_BYTES", "MAX_PAGE_SIZE", "page"]

DEFAULT_PAGE_SIZE = 500
MAX_PAGE_SIZE = 5_000
#: A page ends before its entries' serialized size passes this (a reply stays under 4 MiB).
MAX_PAGE_BYTES = 3 << 20
#: Entries built between two yields to the Trio loop.
_YIELD_EVERY = 100

M = TypeVar("M", bound=betterproto.Message)
Key = tuple[Any, ...]


def _size(request: Any) -> int:
    size = request.page_size
    if size < 0:
        raise InvalidArgument("page_size", f"must be >= 0 (0 = default {DEFAULT_PAGE_SIZE}), got {size}")
    return min(size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)


def _token(key: Key) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(key), separators=(",", ":")).encode()).decode()


def _after(token: str) -> Key | None:
    if not token:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(token.encode("ascii")))
    except (ValueError, UnicodeError, binascii.Error):
        key = None
    if not isinstance(key, list):
        raise InvalidArgument("page_token", "is not a token this service issued; pass next_page_token unchanged")
    return tuple(key)


async def page(request: Any, keyed: Iterable[tuple[Key, Any]], build: Callable[[Any], M | None]) -> tuple[list[M], str]:
    """The page ``request`` asks for, and the token of the next one ("" when this is the last).

    ``keyed`` holds ``(key, object)`` pairs (any order, distinct keys of one
    shape); ``build`` makes an object's reply entry, or returns None for an
    object that vanished meanwhile. Yields to the loop every 100 entries.
    """
    size = _size(request)
    after = _after(request.page_token)
    items = sorted(keyed, key=lambda kv: kv[0])
    start = 0
    if after is not None:
        try:
            start = bisect.bisect_right(items, after, key=lambda kv: kv[0])
        except TypeError:
            raise InvalidArgument("page_token", "does not belong to this listing") from None
    out: list[M] = []
    used = 0
    i = start
    while i < len(items) and len(out) < size:
        entry = build(items[i][1])
        if entry is not None:
            used += len(bytes(entry))
            if out and used > MAX_PAGE_BYTES:
                break
            out.append(entry)
        i += 1
        if (i - start) % _YIELD_EVERY == 0:
            await trio.sleep(0)
    return out, (_token(items[i - 1][0]) if i < len(items) else "")
