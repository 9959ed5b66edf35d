"""Where an operator's commands find the masters: flags, environment, then a small config file.

Daily use should need no flags, so each setting is taken from the first of:

1. the command-line flag (``--master``, ``--timeout``, ``--tenant``, ``--tls-ca``);
2. the environment: ``LEIBRIX_MASTER`` (and ``LEIBRIX_TOKEN``, ``LEIBRIX_TLS_CA``);
3. the config file, ``$LEIBRIX_CONFIG`` when set, else
   ``$XDG_CONFIG_HOME/leibrix/config.yaml`` (``~/.config/leibrix/config.yaml``);
4. the built-in default (``127.0.0.1:50051``, 5 seconds, no tenant).

The file is YAML (a JSON document is YAML too)::

    master: 10.0.0.1:50051,10.0.0.2:50051   # or a list of addresses
    timeout: 5                               # seconds per call
    tenant: acme                             # default --tenant
    token: ...                               # sent as "authorization: Bearer ..."
    tls_ca: /etc/leibrix/ca.pem              # speak TLS, trusting this CA
    tls_cert: ~/.leibrix/me.pem              # client certificate and key, when the masters require mTLS
    tls_key: ~/.leibrix/me.key

A missing file is no error (the defaults apply); an unreadable or malformed
one is, naming the file and the key, because silently ignoring it would send
commands to the wrong cluster.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from leibrix.client._call import tls_context

__all__ = ["DEFAULT_MASTER", "ClientConfig", "ConfigError", "config_path", "load_config"]

DEFAULT_MASTER = "127.0.0.1:50051"
DEFAULT_TIMEOUT = 5.0
_KEYS = {"master", "timeout", "tenant", "token", "tls_ca", "tls_cert", "tls_key"}


class ConfigError(ValueError):
    """The config file cannot be used (unreadable, not a mapping, unknown key, bad value)."""


@dataclass(frozen=True)
class ClientConfig:
    """The resolved settings of one command, and where the master address came from."""

    master: str = DEFAULT_MASTER
    timeout: float = DEFAULT_TIMEOUT
    tenant: str = ""
    token: str = ""
    master_from: str = "default"
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""

    def metadata(self) -> dict[str, str]:
        """gRPC request metadata carrying the token, if any."""
        return {"authorization": f"Bearer {self.token}"} if self.token else {}

    def ssl(self) -> ssl.SSLContext | None:
        """The TLS context for the masters (None: plain text); ConfigError if the files cannot be used."""
        if not (self.tls_ca or self.tls_cert):
            return None
        try:
            return tls_context(self.tls_ca or None, self.tls_cert or None, self.tls_key or None)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"tls_ca/tls_cert/tls_key: cannot be loaded: {exc}") from None


def config_path(env: dict[str, str] | None = None) -> Path:
    """The config file this environment points at (it may not exist)."""
    env = os.environ if env is None else env
    if env.get("LEIBRIX_CONFIG"):
        return Path(env["LEIBRIX_CONFIG"]).expanduser()
    base = env.get("XDG_CONFIG_HOME") or str(Path(env.get("HOME", "~")).expanduser() / ".config")
    return Path(base) / "leibrix" / "config.yaml"


def _read(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"config file {path} must be a mapping of settings, not {type(doc).__name__}")
    unknown = sorted(set(map(str, doc)) - _KEYS)
    if unknown:
        raise ConfigError(f"config file {path}: unknown key {unknown[0]!r} (known: {', '.join(sorted(_KEYS))})")
    return doc


def _master(value: Any, path: Path) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)
    if isinstance(value, str):
        return value
    raise ConfigError(f"config file {path}: 'master' must be HOST:PORT[,HOST:PORT...] or a list of them")


def load_config(
    *, master: str | None = None, timeout: float | None = None, tenant: str | None = None,
    tls_ca: str | None = None, env: dict[str, str] | None = None,
) -> ClientConfig:
    """Resolve the settings: the given flag values (None = not given) over the environment over the file."""
    env = dict(os.environ) if env is None else env
    path = config_path(env)
    doc = _read(path)
    if master:
        master_from = "--master"
    elif env.get("LEIBRIX_MASTER"):
        master, master_from = env["LEIBRIX_MASTER"], "LEIBRIX_MASTER"
    elif "master" in doc:
        master, master_from = _master(doc["master"], path), str(path)
    else:
        master, master_from = DEFAULT_MASTER, "default"
    if timeout is None:
        raw = doc.get("timeout", DEFAULT_TIMEOUT)
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or raw <= 0:
            raise ConfigError(f"config file {path}: 'timeout' must be a number of seconds > 0, got {raw!r}")
        timeout = float(raw)
    if tenant is None:
        tenant = str(doc.get("tenant") or "")
    token = env.get("LEIBRIX_TOKEN") or str(doc.get("token") or "")
    tls = {k: str(Path(str(doc.get(k) or "")).expanduser()) if doc.get(k) else "" for k in ("tls_ca", "tls_cert", "tls_key")}
    tls["tls_ca"] = tls_ca or env.get("LEIBRIX_TLS_CA") or tls["tls_ca"]
    return ClientConfig(master=master, timeout=timeout, tenant=tenant, token=token, master_from=master_from, **tls)
