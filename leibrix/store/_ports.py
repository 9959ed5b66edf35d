"""Free loopback ports for servers started a moment later on this machine (tests, benchmarks, ``leibrix local``)."""

from __future__ import annotations

import random
import socket
from pathlib import Path

__all__ = ["free_hostport", "free_port", "free_port_url"]

#: Lowest port :func:`free_port` chooses from.
_FREE_PORTS_FROM = 10000


def _ephemeral_ports() -> tuple[int, int]:
    """The kernel's range for the local ports of outgoing connections (Linux; its default elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a server started a moment later (tests and single-host demos).

    Chosen below the kernel's ephemeral range when there is room, so no outgoing connection (whose
    local port comes from that range) can take it between this choice and the server's bind; a port
    the kernel hands out for ``bind(0)`` would be inside that range.
    """
    low, _ = _ephemeral_ports()
    if low - _FREE_PORTS_FROM >= 1000:
        rng = random.SystemRandom()
        for _ in range(200):
            port = rng.randrange(_FREE_PORTS_FROM, low)
            with socket.socket() as sock:
                try:
                    sock.bind((host, port))
                except OSError:
                    continue
                return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def free_port_url(host: str = "127.0.0.1") -> str:
    """``http://host:port`` for a currently free TCP port (:func:`free_port`)."""
    return f"http://{host}:{free_port(host)}"


def free_hostport() -> str:
    """A free loopback ``host:port`` (for masters, workers and benchmarks started on this machine)."""
    return free_port_url().removeprefix("http://")
