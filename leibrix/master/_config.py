"""Master configuration: one table of options, four sources, one validated result.

Every option is declared once in :data:`leibrix.master._options.OPTIONS`; from that single table come
the ``leibrix master`` flags (with their ``--help`` text), the ``LEIBRIX_*``
environment variable names, the keys accepted in the TOML file and the
defaults. Precedence, highest first: command-line flag > ``LEIBRIX_<NAME>``
environment variable > the TOML file (``--config``/``LEIBRIX_CONFIG``) >
default. Defaults listen on loopback only, so an unconfigured master never
exposes itself on a network.

:func:`load_config` returns a frozen :class:`MasterConfig` or raises
:class:`ConfigError` whose message names the option and where its value came
from (flag, environment or file), so an operator can fix it without reading
code.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from leibrix.domain._sealing import Keyring, parse_key
from leibrix.wire._address import split_hostport
from leibrix.store._etcd import EtcdTls
from leibrix.store._member import EMBEDDED_TXN_LIMITS, MemberConfig
from leibrix.store._writer import TxnLimits
from leibrix.master._config_error import ConfigError
from leibrix.master._options import BY_NAME, OPTIONS, Option

__all__ = ["ConfigError", "MasterConfig", "add_arguments", "load_config"]

#: Seconds the embedded member gets between SIGTERM and SIGKILL when the master stops.
_MEMBER_STOP_GRACE = 1.0

_LOG_LEVELS = ("debug", "info", "warning", "error")
#: Options that must be strictly positive numbers.
_POSITIVE = tuple(o.name for o in OPTIONS if o.name.startswith("worker_")) + (
    "max_epochs_per_request", "heat_half_life_s", "schedule_max_candidates", "heat_checkpoint_interval_s",
    "request_ttl_s", "retired_ttl_s", "prune_interval_s")


@dataclass(frozen=True, slots=True)
class MasterConfig:
    """The validated configuration of one master (see :data:`OPTIONS` for each field's meaning).

    Build it with :func:`load_config` (or directly in tests, then call
    :meth:`validate`). ``sources`` records where each non-default value came
    from, for error messages and ``leibrix master --print-config``.
    """

    name: str = BY_NAME["name"].default
    cluster: str = BY_NAME["cluster"].default
    grpc_listen: str = BY_NAME["grpc_listen"].default
    grpc_advertise: str = BY_NAME["grpc_advertise"].default
    http_listen: str = BY_NAME["http_listen"].default
    data_dir: Path = BY_NAME["data_dir"].default
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd_ca: str = BY_NAME["etcd_ca"].default
    etcd_cert: str = BY_NAME["etcd_cert"].default
    etcd_key: str = BY_NAME["etcd_key"].default
    etcd_binary: str = BY_NAME["etcd_binary"].default
    etcd_client_url: str = BY_NAME["etcd_client_url"].default
    etcd_peer_url: str = BY_NAME["etcd_peer_url"].default
    etcd_member_cert: str = BY_NAME["etcd_member_cert"].default
    etcd_member_key: str = BY_NAME["etcd_member_key"].default
    etcd_member_ca: str = BY_NAME["etcd_member_ca"].default
    initial_cluster: str = BY_NAME["initial_cluster"].default
    etcd_heartbeat_ms: int = BY_NAME["etcd_heartbeat_ms"].default
    etcd_election_ms: int = BY_NAME["etcd_election_ms"].default
    etcd_max_txn_ops: int = BY_NAME["etcd_max_txn_ops"].default
    etcd_max_request_bytes: int = BY_NAME["etcd_max_request_bytes"].default
    etcd_max_restarts: int = BY_NAME["etcd_max_restarts"].default
    allow_unsafe_etcd: bool = BY_NAME["allow_unsafe_etcd"].default
    lease_ttl: int = BY_NAME["lease_ttl"].default
    shutdown_timeout: float = BY_NAME["shutdown_timeout"].default
    log_level: str = BY_NAME["log_level"].default
    log_format: str = BY_NAME["log_format"].default
    auth_tokens: bool = BY_NAME["auth_tokens"].default
    admin_token_file: str = BY_NAME["admin_token_file"].default
    tls_cert: str = BY_NAME["tls_cert"].default
    tls_key: str = BY_NAME["tls_key"].default
    tls_client_ca: str = BY_NAME["tls_client_ca"].default
    secrets_key_file: list[str] = field(default_factory=list)
    insecure: bool = BY_NAME["insecure"].default
    #: The admin token from env ``LEIBRIX_ADMIN_TOKEN`` (never a flag: flags show in ``ps``).
    admin_token: str = field(default="", repr=False, compare=False)
    worker_heartbeat_interval: float = BY_NAME["worker_heartbeat_interval"].default
    worker_missed_heartbeats: int = BY_NAME["worker_missed_heartbeats"].default
    worker_dead_timeout: float = BY_NAME["worker_dead_timeout"].default
    worker_default_memory_bytes: int = BY_NAME["worker_default_memory_bytes"].default
    worker_default_cpu_cores: float = BY_NAME["worker_default_cpu_cores"].default
    worker_max_message_bytes: int = BY_NAME["worker_max_message_bytes"].default
    worker_outbound_queue: int = BY_NAME["worker_outbound_queue"].default
    worker_register_timeout: float = BY_NAME["worker_register_timeout"].default
    worker_max_registering: int = BY_NAME["worker_max_registering"].default
    worker_rebalance_interval: float = BY_NAME["worker_rebalance_interval"].default
    worker_rebalance_max_moves: int = BY_NAME["worker_rebalance_max_moves"].default
    worker_rebalance_tolerance: float = BY_NAME["worker_rebalance_tolerance"].default
    max_epochs_per_request: int = BY_NAME["max_epochs_per_request"].default
    heat_half_life_s: float = BY_NAME["heat_half_life_s"].default
    residency_hysteresis: float = BY_NAME["residency_hysteresis"].default
    default_replication: int = BY_NAME["default_replication"].default
    schedule_max_candidates: int = BY_NAME["schedule_max_candidates"].default
    heat_checkpoint_interval_s: float = BY_NAME["heat_checkpoint_interval_s"].default
    request_ttl_s: float = BY_NAME["request_ttl_s"].default
    retired_ttl_s: float = BY_NAME["retired_ttl_s"].default
    prune_interval_s: float = BY_NAME["prune_interval_s"].default
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def embedded(self) -> bool:
        """True when this master runs its own etcd member (no ``--etcd-endpoints``)."""
        return not self.etcd_endpoints

    @property
    def advertise(self) -> str:
        """The gRPC address clients are redirected to (``leibrix-leader``)."""
        return self.grpc_advertise or self.grpc_listen

    @property
    def prefix(self) -> str:
        """The etcd key prefix of this cluster, ending in ``/``."""
        return f"/leibrix/{self.cluster}/"

    @property
    def endpoints(self) -> list[str]:
        """The etcd endpoints the client dials: the external ones, or the embedded member."""
        return list(self.etcd_endpoints) or [self.etcd_client_url]

    @property
    def txn_limits(self) -> TxnLimits:
        """How large the master's etcd transactions may be (0 in an option: the default for the etcd in use)."""
        base = EMBEDDED_TXN_LIMITS if self.embedded else TxnLimits()
        return TxnLimits(self.etcd_max_txn_ops or base.max_ops,
                         self.etcd_max_request_bytes or base.max_request_bytes)

    @property
    def auth_enabled(self) -> bool:
        """True when ManagementService callers must present a token."""
        return self.auth_tokens or bool(self.admin_token or self.admin_token_file)

    def read_admin_token(self) -> str:
        """The configured admin token ("" for none): ``--admin-token-file``'s content, else the environment's."""
        from leibrix.master._security import read_admin_token

        return read_admin_token(self)

    def secrets_keyring(self) -> Keyring | None:
        """The keyring of ``--secrets-key-file`` (None when no file is given); :class:`ConfigError` naming the
        file when one cannot be read or holds no 256-bit key."""
        if not self.secrets_key_file:
            return None
        keys = []
        for path in self.secrets_key_file:
            what = f"{self._where('secrets_key_file')}: {path}"
            try:
                keys.append(parse_key(Path(path).read_bytes(), what=what))
            except OSError as exc:
                raise ConfigError(f"{what}: cannot be read: {exc.strerror}") from None
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        try:
            return Keyring(keys)
        except ValueError as exc:
            raise ConfigError(f"{self._where('secrets_key_file')}: {exc}") from None

    def _where(self, name: str) -> str:
        return f"{BY_NAME[name].flag} ({self.sources.get(name, 'default')})"

    @property
    def etcd_tls(self) -> EtcdTls | None:
        """How the master's client dials etcd (None: plain text); see :mod:`leibrix.master._etcd_options`."""
        from leibrix.master._etcd_options import etcd_tls

        return etcd_tls(self)

    def member_config(self) -> MemberConfig:
        """The embedded etcd member's configuration (raises :class:`ConfigError` if inconsistent)."""
        from leibrix.master._etcd_options import member_config

        # shutdown_timeout + the member's stop grace stays under the 5 s a supervisor waits
        return member_config(self, _MEMBER_STOP_GRACE)

    def validate(self) -> MasterConfig:
        """Check every option; returns ``self`` or raises :class:`ConfigError` naming the option."""
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.name):
            raise ConfigError(f"{self._where('name')}: {self.name!r} may only use letters, digits, '.', '_', '-'")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", self.cluster):
            raise ConfigError(
                f"{self._where('cluster')}: {self.cluster!r} may only use letters, digits, '.', '_', '-'"
            )
        for name in ("grpc_listen", "http_listen", "grpc_advertise"):
            if name != "grpc_advertise" or self.grpc_advertise:
                try:
                    split_hostport(getattr(self, name), what=self._where(name))
                except ValueError as exc:
                    raise ConfigError(str(exc)) from None
        if not 1 <= self.lease_ttl <= 60:
            raise ConfigError(f"{self._where('lease_ttl')}: {self.lease_ttl} is outside 1-60 seconds")
        if not 0 < self.shutdown_timeout <= 60:
            raise ConfigError(
                f"{self._where('shutdown_timeout')}: {self.shutdown_timeout} is outside (0, 60] seconds"
            )
        if self.log_level not in _LOG_LEVELS:
            raise ConfigError(f"{self._where('log_level')}: {self.log_level!r} is not one of {', '.join(_LOG_LEVELS)}")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"{self._where('log_format')}: {self.log_format!r} is not one of text, json")
        for name in _POSITIVE:
            if not getattr(self, name) > 0:
                raise ConfigError(f"{self._where(name)}: {getattr(self, name)} must be > 0")
        if self.worker_dead_timeout <= self.worker_heartbeat_interval:
            raise ConfigError(
                f"{self._where('worker_dead_timeout')}: {self.worker_dead_timeout} must exceed "
                f"{self._where('worker_heartbeat_interval')} ({self.worker_heartbeat_interval})"
            )
        if self.residency_hysteresis < 1:
            raise ConfigError(f"{self._where('residency_hysteresis')}: {self.residency_hysteresis} must be >= 1")
        from leibrix.domain._validation import MAX_REPLICATION  # here: _validation takes its defaults from this module

        if not 1 <= self.default_replication <= MAX_REPLICATION:
            raise ConfigError(
                f"{self._where('default_replication')}: {self.default_replication} is outside 1-{MAX_REPLICATION}"
            )
        for name in ("etcd_max_txn_ops", "etcd_max_request_bytes"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{self._where(name)}: {getattr(self, name)} must be >= 0 (0: the default)")
        try:
            self.txn_limits
        except ValueError as exc:
            where = self._where("etcd_max_txn_ops" if "max_ops" in str(exc) else "etcd_max_request_bytes")
            raise ConfigError(f"{where}: {exc}") from None
        from leibrix.master._etcd_options import check_etcd
        from leibrix.master._security import check_security

        check_security(self)
        check_etcd(self)
        return self


def _parse_bool(text: str, *, what: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ConfigError(f"{what}: {text!r} is not a boolean (use true/false)")


def _from_text(opt: Option, text: str, *, what: str) -> Any:
    """Parse a string (flag or environment variable) into the option's type."""
    if opt.kind is bool:
        return _parse_bool(text, what=what)
    if opt.kind is list:
        return [part.strip() for part in text.split(",") if part.strip()]
    try:
        return opt.kind(text)
    except ValueError:
        raise ConfigError(f"{what}: {text!r} is not a valid {opt.kind.__name__}") from None


def _coerce(opt: Option, value: Any, *, what: str) -> Any:
    """Check a TOML value's type strictly (``"3"`` is not an int) and convert it."""
    if opt.kind is list and isinstance(value, str):
        return _from_text(opt, value, what=what)
    accepted: dict[type, tuple[type, ...]] = {
        bool: (bool,), int: (int,), float: (int, float), str: (str,), Path: (str,), list: (list,)
    }
    ok = isinstance(value, accepted[opt.kind]) and (opt.kind is bool or not isinstance(value, bool))
    if opt.kind is list:
        ok = ok and all(isinstance(v, str) for v in value)
    if not ok:
        raise ConfigError(f"{what}: {value!r} is not a valid {opt.kind.__name__}")
    return list(value) if opt.kind is list else opt.kind(value)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option (plus ``--config``) to ``parser``; defaults are shown in the help."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=argparse.SUPPRESS,
        help="TOML file with any of the options below (keys as in the flags, with _ or -); env LEIBRIX_CONFIG",
    )
    for opt in OPTIONS:
        default = ",".join(opt.default) if opt.kind is list else opt.default
        text = f"{opt.help} [env {opt.env}; default: {default!s}]" if opt.kind is not bool else (
            f"{opt.help} [env {opt.env}]"
        )
        if opt.kind is bool:
            parser.add_argument(opt.flag, action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            parser.add_argument(opt.flag, metavar=opt.metavar, default=argparse.SUPPRESS, help=text)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"--config: cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"--config: {path} is not valid TOML: {exc}") from None
    section = data.get("master", data)
    if not isinstance(section, dict):
        raise ConfigError(f"--config: {path}: [master] must be a table")
    out: dict[str, Any] = {}
    for key, value in section.items():
        name = key.replace("-", "_")
        if name not in BY_NAME:
            raise ConfigError(f"--config: {path}: unknown option {key!r}")
        out[name] = value
    return out


def load_config(
    args: argparse.Namespace | Mapping[str, Any] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
) -> MasterConfig:
    """Merge defaults < TOML file < ``LEIBRIX_*`` environment < flags and validate the result.

    ``args`` holds only the flags actually given (the parser uses
    ``SUPPRESS`` defaults); a mapping works too, which is handy in tests.
    ``environ`` defaults to ``os.environ``. Raises :class:`ConfigError`.
    """
    given = dict(vars(args) if isinstance(args, argparse.Namespace) else (args or {}))
    given.pop("command", None)
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}

    config_path = given.pop("config", None) or env.get("LEIBRIX_CONFIG")
    if config_path:
        path = Path(config_path)
        for name, raw in _read_toml(path).items():
            values[name] = _coerce(BY_NAME[name], raw, what=f"{BY_NAME[name].flag} (file {path})")
            sources[name] = f"file {path}"
    for opt in OPTIONS:
        if opt.env in env:
            values[opt.name] = _from_text(opt, env[opt.env], what=f"{opt.flag} (env {opt.env})")
            sources[opt.name] = f"env {opt.env}"
    for name, raw in given.items():
        opt = BY_NAME.get(name)
        if opt is None:
            continue
        what = f"{opt.flag} (flag)"
        values[name] = raw if opt.kind is bool else _from_text(opt, str(raw), what=what)
        sources[name] = "flag"
    return MasterConfig(**values, admin_token=env.get("LEIBRIX_ADMIN_TOKEN", ""), sources=sources).validate()
