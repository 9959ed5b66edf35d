"""Network addresses as operators write them: ``host:port`` and ``[v6]:port``."""

from __future__ import annotations

import re

__all__ = ["split_hostport"]

_HOSTPORT = re.compile(r"\[([0-9a-fA-F:.]+)\]:(\d+)|([^:\[\]\s]+):(\d+)")


def split_hostport(text: str, *, what: str = "address") -> tuple[str, int]:
    """Split ``host:port`` (``[v6]:port`` allowed) into ``(host, port)``.

    Raises ``ValueError`` naming ``what`` (an option or field) when the text
    is not ``host:port`` or the port is outside 1-65535.
    """
    match = _HOSTPORT.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{what}: {text!r} is not host:port")
    host = match.group(1) or match.group(3)
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError(f"{what}: port {port} is outside 1-65535")
    return host, port
