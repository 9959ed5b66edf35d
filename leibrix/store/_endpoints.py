"""Where and how the etcd client dials: endpoint URLs and :class:`EtcdTls`.

An endpoint is ``host:port``, ``http://host:port`` or ``https://host:port``.
``https://`` is dialled over TLS; a bare ``host:port`` is dialled over TLS
exactly when TLS options are given; ``http://`` together with TLS options is
refused, so a configuration never silently falls back to plain text.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

__all__ = ["EtcdTls", "parse_endpoint"]


@dataclass(frozen=True, slots=True)
class EtcdTls:
    """TLS to etcd: trust ``ca`` (None: the system's CAs); present ``cert``/``key`` when given (both or neither)."""

    ca: str | None = None
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise ValueError("etcd TLS: give the client certificate and its key together")

    def credentials(self) -> grpc.ChannelCredentials:
        """gRPC channel credentials from the files (read now; ``OSError`` if one cannot be read)."""

        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def parse_endpoint(endpoint: str, tls: EtcdTls | None = None) -> tuple[str, int, bool]:
    """``(host, port, secure)`` of ``host:port``, ``http://host:port`` or ``https://host:port``."""
    text = endpoint if "://" in endpoint else f"{'https' if tls else 'http'}://{endpoint}"
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"etcd endpoint {endpoint!r}: only http:// and https:// endpoints are supported")
    if parts.scheme == "http" and tls is not None:
        raise ValueError(f"etcd endpoint {endpoint!r}: an http:// endpoint with TLS options (use https://)")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"etcd endpoint {endpoint!r}: port must be a number in 0-65535") from None
    if not parts.hostname or port is None:
        raise ValueError(f"etcd endpoint {endpoint!r}: expected host:port or http(s)://host:port")
    return parts.hostname, port, parts.scheme == "https"
