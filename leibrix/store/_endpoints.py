"""etcd URLs and how the client dials them: endpoints, :class:`EtcdTls`, members' URLs.

An endpoint is ``host:port``, ``http://host:port`` or ``https://host:port``.
``https://`` is dialled over TLS; a bare ``host:port`` is dialled over TLS
exactly when TLS options are given; ``http://`` together with TLS options is
refused, so a configuration never silently falls back to plain text.
Members' URLs (``--initial-cluster``, client and peer URLs) are checked by
:func:`parse_initial_cluster` and :func:`validate_url`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import grpc

__all__ = ["EtcdTls", "parse_endpoint", "parse_initial_cluster", "validate_url"]


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


def parse_initial_cluster(text: str) -> dict[str, str]:
    """Parse ``name=http://host:port,name2=...`` into ``{name: peer_url}`` (in order).

    Raises ``ValueError`` naming the offending entry: empty string, an entry
    without ``=``, an empty or duplicate name, a URL that is not
    ``http(s)://host:port``, or two members sharing a peer URL.
    """
    if not text or not text.strip():
        raise ValueError("initial-cluster is empty; expected name=http://host:port[,name=...]")
    members: dict[str, str] = {}
    seen_urls: dict[str, str] = {}
    for position, entry in enumerate(text.split(","), start=1):
        entry = entry.strip()
        if not entry:
            raise ValueError(f"initial-cluster entry {position} is empty (stray comma?)")
        name, sep, url = entry.partition("=")
        name, url = name.strip(), url.strip()
        if not sep:
            raise ValueError(f"initial-cluster entry {position} {entry!r}: expected name=peerURL")
        if not name:
            raise ValueError(f"initial-cluster entry {position} {entry!r}: member name is empty")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", name):
            raise ValueError(
                f"initial-cluster entry {position} {entry!r}: member name may only use letters, "
                "digits, '.', '_' and '-'"
            )
        if name in members:
            raise ValueError(f"initial-cluster entry {position}: member name {name!r} appears twice")
        validate_url(url, what=f"initial-cluster entry {position} ({name}) peer URL")
        if url in seen_urls:
            raise ValueError(
                f"initial-cluster entry {position}: peer URL {url} is also used by {seen_urls[url]!r}"
            )
        members[name] = url
        seen_urls[url] = name
    return members


def validate_url(url: str, *, what: str) -> str:
    """Check ``url`` is ``http(s)://host:port`` with nothing else; return it unchanged."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{what} {url!r}: port is not a number in 1-65535") from None
    if parts.scheme not in ("http", "https") or not parts.hostname or port is None:
        raise ValueError(f"{what} {url!r}: expected http://host:port")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{what} {url!r}: must not have a path, query or fragment")
    return url
