"""The security options' rules: admin token, TLS files, and who may listen beyond loopback.

A master reachable from a network must not hand out admin rights to whoever
connects: listening on anything but loopback needs both TLS (``--tls-cert``/
``--tls-key``) and tokens (``--auth-tokens`` or an admin token), or an
explicit ``--insecure``. The admin token must be long enough not to be
guessed; it is read from ``--admin-token-file`` or ``LEIBRIX_ADMIN_TOKEN``,
never from a flag (flags show in ``ps``).
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Protocol

from leibrix.domain._tokens import ADMIN_TOKEN_MIN_CHARS
from leibrix.master._config_error import ConfigError
from leibrix.wire._address import split_hostport

__all__ = ["SecurityOptions", "check_security", "is_loopback", "read_admin_token"]


class SecurityOptions(Protocol):
    """What these rules read of a ``leibrix.master._config.MasterConfig``."""

    admin_token: str
    admin_token_file: str
    tls_cert: str
    tls_key: str
    tls_client_ca: str
    grpc_listen: str
    insecure: bool

    @property
    def auth_enabled(self) -> bool: ...

    def _where(self, name: str) -> str:
        """The option's flag and where its value came from, for messages."""
        ...


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_admin_token(config: SecurityOptions) -> str:
    """The configured admin token ("" for none); :class:`ConfigError` if unreadable or too short."""
    token, where = config.admin_token, "env LEIBRIX_ADMIN_TOKEN"
    if config.admin_token_file:
        where = config._where("admin_token_file")
        try:
            token = Path(config.admin_token_file).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}: cannot read {config.admin_token_file}: {exc}") from None
    if token and (len(token) < ADMIN_TOKEN_MIN_CHARS or any(c.isspace() for c in token)):
        raise ConfigError(f"{where}: the admin token must be at least {ADMIN_TOKEN_MIN_CHARS} characters "
                          "without spaces (e.g. `openssl rand -base64 32`)")
    return token


def check_security(config: SecurityOptions) -> None:
    """Raise :class:`ConfigError` naming the option when the security options cannot work together."""
    where = config._where
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError(f"{where('tls_cert')} and {where('tls_key')}: give both or neither")
    if config.tls_client_ca and not config.tls_cert:
        raise ConfigError(f"{where('tls_client_ca')}: needs --tls-cert and --tls-key")
    for name in ("tls_cert", "tls_key", "tls_client_ca"):
        path = getattr(config, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{where(name)}: {path} is not a readable file")
    read_admin_token(config)
    host = split_hostport(config.grpc_listen, what="--grpc-listen")[0]
    if not is_loopback(host) and not (config.tls_cert and config.auth_enabled) and not config.insecure:
        raise ConfigError(
            f"{where('grpc_listen')}: {config.grpc_listen} is reachable beyond loopback without TLS and tokens; "
            "set --tls-cert/--tls-key and --auth-tokens or --admin-token-file, or pass --insecure")
