"""Master configuration: one table of options, four sources, one validated result.

Every option is declared once in :data:`OPTIONS`; from that single table come
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

from leibrix.control._admission import AdmissionConfig
from leibrix.control._coordinator import CoordinatorConfig
from leibrix.domain._sealing import Keyring, parse_key
from leibrix.domain._validation import AdmissionLimits
from leibrix.workers._hub import HubConfig
from leibrix.wire._address import split_hostport
from leibrix.store._etcd import EtcdTls
from leibrix.store._member import EMBEDDED_TXN_LIMITS, MEMBER_HEADROOM, PRODUCTION_TIMINGS, MemberConfig
from leibrix.store._writer import TxnLimits

__all__ = ["ConfigError", "MasterConfig", "OPTIONS", "add_arguments", "load_config"]

#: Production master lease TTL (seconds). With etcd's PRODUCTION_TIMINGS
#: (50 ms heartbeat, 300 ms election) a kill -9 of the leader is noticed after
#: at most TTL + etcd's 0.5 s expiry tick (+ one Raft re-election when the dead
#: master's member was the Raft leader): ~1.5-2.4 s, inside the 3 s goal. The
#: keepalive runs every TTL/3, so a master must stall for > 0.66 s before it
#: loses a term it still deserves; see bench/failover.py for the measured numbers.
DEFAULT_LEASE_TTL = 1


_HUB, _LIMITS, _COORD, _ADMISSION = HubConfig(), AdmissionLimits(), CoordinatorConfig(), AdmissionConfig()

#: Seconds the embedded member gets between SIGTERM and SIGKILL when the master stops.
_MEMBER_STOP_GRACE = 1.0


class ConfigError(ValueError):
    """The configuration is unusable; the message says which option, from where, and why."""


@dataclass(frozen=True, slots=True)
class Option:
    """One configuration option: its flag, environment variable, TOML key, type and help.

    ``kind`` is the value's Python type (``str``, ``int``, ``float``, ``bool``,
    ``list`` of strings or ``Path``); environment values are parsed from
    strings with it (lists are comma-separated, booleans 1/0/true/false/yes/no).
    """

    name: str
    kind: type
    default: Any
    help: str
    metavar: str | None = None

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--grpc-listen``."""
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``LEIBRIX_GRPC_LISTEN``."""
        return "LEIBRIX_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("name", str, "default",
           "this master's id; also its etcd member name (letters, digits, '.', '_', '-')", "ID"),
    Option("cluster", str, "default",
           "cluster name: every key lives under /leibrix/<cluster>/ in etcd", "NAME"),
    Option("grpc_listen", str, "127.0.0.1:50051",
           "gRPC listen address (Management, ControlPlane, Health, Reflection)", "HOST:PORT"),
    Option("grpc_advertise", str, "",
           "gRPC address other masters send clients to (default: --grpc-listen)", "HOST:PORT"),
    Option("http_listen", str, "127.0.0.1:8081",
           "HTTP listen address for /healthz and /metrics", "HOST:PORT"),
    Option("data_dir", Path, Path("data"),
           "directory for this master's state (the embedded etcd member lives in DIR/etcd)", "DIR"),
    Option("etcd_endpoints", list, [],
           "use this external etcd cluster (comma-separated host:port or http(s)://host:port) and start no member",
           "URLS"),
    Option("etcd_ca", str, "", "dial etcd over TLS trusting this PEM CA (default with member TLS: "
           "--etcd-member-ca)", "FILE"),
    Option("etcd_cert", str, "", "client certificate (PEM) presented to etcd (its --client-cert-auth)", "FILE"),
    Option("etcd_key", str, "", "the PEM private key of --etcd-cert", "FILE"),
    Option("etcd_binary", str, "",
           "etcd executable for the embedded member (default: etcd from PATH)", "PATH"),
    Option("etcd_client_url", str, "http://127.0.0.1:2379",
           "client URL the embedded member listens on", "URL"),
    Option("etcd_peer_url", str, "http://127.0.0.1:2380",
           "peer URL the embedded member listens on", "URL"),
    Option("etcd_member_cert", str, "", "embedded member: serve clients and peers over TLS with this PEM "
           "certificate (URLs then https://; with --etcd-member-key and --etcd-member-ca)", "FILE"),
    Option("etcd_member_key", str, "", "the PEM private key of --etcd-member-cert", "FILE"),
    Option("etcd_member_ca", str, "", "embedded member: require client and peer certificates signed by this "
           "PEM CA", "FILE"),
    Option("initial_cluster", str, "",
           "bootstrap a multi-member quorum: name=peerURL,... naming every master (default: just this one)",
           "LIST"),
    Option("etcd_heartbeat_ms", int, PRODUCTION_TIMINGS.heartbeat_ms,
           "Raft heartbeat of the embedded member (ms)", "MS"),
    Option("etcd_election_ms", int, PRODUCTION_TIMINGS.election_ms,
           "Raft election timeout of the embedded member (ms, >= 5 x heartbeat)", "MS"),
    Option("etcd_max_txn_ops", int, 0,
           "most compares and ops the master puts in one etcd transaction (larger writes are split); "
           f"0: etcd's default {TxnLimits().max_ops} with --etcd-endpoints (match the cluster's --max-txn-ops), "
           f"{EMBEDDED_TXN_LIMITS.max_ops} with the embedded member, which is started with "
           f"--max-txn-ops of {MEMBER_HEADROOM} x this", "N"),
    Option("etcd_max_request_bytes", int, 0,
           "largest etcd request the master sends (larger writes are split); "
           f"0: etcd's default {TxnLimits().max_request_bytes} with --etcd-endpoints (match the cluster's "
           f"--max-request-bytes), {EMBEDDED_TXN_LIMITS.max_request_bytes} with the embedded member, which is "
           f"started with --max-request-bytes of {MEMBER_HEADROOM} x this", "BYTES"),
    Option("etcd_max_restarts", int, 5,
           "restart a crashed etcd member this many times in a row before exiting non-zero", "N"),
    Option("allow_unsafe_etcd", bool, False,
           "start even on an etcd release known to lose data (3.5.0-3.5.5, 3.4.20-3.4.21)"),
    Option("lease_ttl", int, DEFAULT_LEASE_TTL,
           "leader lease TTL in whole seconds: a dead leader is replaced after about this long", "S"),
    Option("shutdown_timeout", float, 2.5,
           "seconds a SIGTERM/SIGINT shutdown may take before the rest is cancelled (the etcd member "
           "then gets 1 s more before SIGKILL)", "S"),
    Option("log_level", str, "info", "log level: debug, info, warning or error", "LEVEL"),
    Option("log_format", str, "text", "log lines as human 'text' or one JSON object per line ('json')", "FORMAT"),
    # Security (see docs/security.md).
    Option("auth_tokens", bool, False,
           "require a bearer token on every ManagementService RPC (implied by an admin token)"),
    Option("admin_token_file", str, "",
           "file holding the admin token, stored (as a hash) while no admin token exists; implies "
           "--auth-tokens (the token itself may come from env LEIBRIX_ADMIN_TOKEN instead)", "FILE"),
    Option("tls_cert", str, "", "serve gRPC over TLS with this PEM certificate chain (reloaded on change)", "FILE"),
    Option("tls_key", str, "", "the PEM private key of --tls-cert", "FILE"),
    Option("tls_client_ca", str, "", "require client certificates signed by this PEM CA (mTLS)", "FILE"),
    Option("secrets_key_file", list, [],
           "store source credentials (passwords inside catalog URIs/DSNs) in etcd sealed with AES-256-GCM under "
           "these 256-bit key files (comma-separated; the first seals, every one unseals: rotate by putting a "
           "new key first); see docs/security.md", "FILES"),
    Option("insecure", bool, False,
           "allow listening beyond loopback without TLS and tokens (anyone reaching the port is admin)"),
    # Worker-facing knobs: the fields of leibrix.workers.HubConfig (defaults from there).
    Option("worker_heartbeat_interval", float, _HUB.heartbeat_interval,
           "seconds between worker heartbeats (sent to each worker in its registration ack)", "S"),
    Option("worker_missed_heartbeats", int, _HUB.missed_heartbeats,
           "heartbeats a worker may miss before it is SUSPECT and gets no new placements", "N"),
    Option("worker_dead_timeout", float, _HUB.dead_timeout,
           "seconds without a heartbeat before a worker is DEAD and its replicas are re-placed", "S"),
    Option("worker_default_memory_bytes", int, _HUB.default_memory_bytes,
           "memory capacity assumed for a worker that registers without one", "BYTES"),
    Option("worker_default_cpu_cores", float, _HUB.default_cpu_cores,
           "CPU cores assumed for a worker that registers without a capacity", "N"),
    Option("worker_max_message_bytes", int, _HUB.max_message_bytes,
           "largest message a worker may send on its stream (bigger: RESOURCE_EXHAUSTED)", "BYTES"),
    Option("worker_outbound_queue", int, _HUB.outbound_queue,
           "messages queued to one worker's stream; a worker that lets it fill is shed RESOURCE_EXHAUSTED", "N"),
    Option("worker_register_timeout", float, _HUB.register_timeout,
           "seconds a new worker stream has to send its register_event", "S"),
    Option("worker_max_registering", int, _HUB.max_registering,
           "registrations processed at once; the rest of a reconnect storm waits its turn", "N"),
    Option("worker_rebalance_interval", float, _HUB.rebalance_interval,
           "seconds between rebalancing passes that move replicas from the most to the least loaded workers", "S"),
    Option("worker_rebalance_max_moves", int, _HUB.rebalance_max_moves,
           "most replicas one rebalancing pass moves (make-before-break)", "N"),
    Option("worker_rebalance_tolerance", float, _HUB.rebalance_tolerance,
           "rebalance a pool once a worker's load is 2x this fraction off the mean, until all are within it",
           "FRACTION"),
    # Admission and residency knobs (defaults from leibrix.control's AdmissionConfig and CoordinatorConfig).
    Option("max_epochs_per_request", int, _LIMITS.max_epochs_per_request,
           "most epochs one AdmitDataset request may expand to (more: RESOURCE_EXHAUSTED)", "N"),
    Option("heat_half_life_s", float, _COORD.heat.half_life_s,
           "half-life of an epoch's access heat in seconds (how fast popularity fades)", "S"),
    Option("residency_hysteresis", float, _COORD.hysteresis,
           "a new epoch evicts a resident only if its benefit is at least this many times higher (>= 1)", "X"),
    Option("default_replication", int, _COORD.default_replication,
           "replicas per epoch when neither the request nor the tenant quota sets one", "N"),
    Option("schedule_max_candidates", int, _COORD.max_candidates,
           "most PENDING epochs one scheduling pass places (the pass re-runs while more wait)", "N"),
    # Housekeeping of etcd (see leibrix.control._heat_checkpoint and _janitor).
    Option("heat_checkpoint_interval_s", float, _COORD.heat_checkpoint_interval_s,
           "seconds between heat checkpoints: a failover loses at most this much access heat", "S"),
    Option("request_ttl_s", float, _ADMISSION.request_ttl_s,
           "seconds an idempotency record (requests/<id>) is kept; a later retry is a new request", "S"),
    Option("retired_ttl_s", float, _COORD.retired_ttl_s,
           "seconds a RETIRED epoch's record is kept (for GetDataset/ListEpochs) before it is deleted", "S"),
    Option("prune_interval_s", float, _COORD.prune_interval_s,
           "seconds between pruning passes over expired requests and RETIRED epochs", "S"),
)

_BY_NAME = {o.name: o for o in OPTIONS}


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

    name: str = _BY_NAME["name"].default
    cluster: str = _BY_NAME["cluster"].default
    grpc_listen: str = _BY_NAME["grpc_listen"].default
    grpc_advertise: str = _BY_NAME["grpc_advertise"].default
    http_listen: str = _BY_NAME["http_listen"].default
    data_dir: Path = _BY_NAME["data_dir"].default
    etcd_endpoints: list[str] = field(default_factory=list)
    etcd_ca: str = _BY_NAME["etcd_ca"].default
    etcd_cert: str = _BY_NAME["etcd_cert"].default
    etcd_key: str = _BY_NAME["etcd_key"].default
    etcd_binary: str = _BY_NAME["etcd_binary"].default
    etcd_client_url: str = _BY_NAME["etcd_client_url"].default
    etcd_peer_url: str = _BY_NAME["etcd_peer_url"].default
    etcd_member_cert: str = _BY_NAME["etcd_member_cert"].default
    etcd_member_key: str = _BY_NAME["etcd_member_key"].default
    etcd_member_ca: str = _BY_NAME["etcd_member_ca"].default
    initial_cluster: str = _BY_NAME["initial_cluster"].default
    etcd_heartbeat_ms: int = _BY_NAME["etcd_heartbeat_ms"].default
    etcd_election_ms: int = _BY_NAME["etcd_election_ms"].default
    etcd_max_txn_ops: int = _BY_NAME["etcd_max_txn_ops"].default
    etcd_max_request_bytes: int = _BY_NAME["etcd_max_request_bytes"].default
    etcd_max_restarts: int = _BY_NAME["etcd_max_restarts"].default
    allow_unsafe_etcd: bool = _BY_NAME["allow_unsafe_etcd"].default
    lease_ttl: int = _BY_NAME["lease_ttl"].default
    shutdown_timeout: float = _BY_NAME["shutdown_timeout"].default
    log_level: str = _BY_NAME["log_level"].default
    log_format: str = _BY_NAME["log_format"].default
    auth_tokens: bool = _BY_NAME["auth_tokens"].default
    admin_token_file: str = _BY_NAME["admin_token_file"].default
    tls_cert: str = _BY_NAME["tls_cert"].default
    tls_key: str = _BY_NAME["tls_key"].default
    tls_client_ca: str = _BY_NAME["tls_client_ca"].default
    secrets_key_file: list[str] = field(default_factory=list)
    insecure: bool = _BY_NAME["insecure"].default
    #: The admin token from env ``LEIBRIX_ADMIN_TOKEN`` (never a flag: flags show in ``ps``).
    admin_token: str = field(default="", repr=False, compare=False)
    worker_heartbeat_interval: float = _BY_NAME["worker_heartbeat_interval"].default
    worker_missed_heartbeats: int = _BY_NAME["worker_missed_heartbeats"].default
    worker_dead_timeout: float = _BY_NAME["worker_dead_timeout"].default
    worker_default_memory_bytes: int = _BY_NAME["worker_default_memory_bytes"].default
    worker_default_cpu_cores: float = _BY_NAME["worker_default_cpu_cores"].default
    worker_max_message_bytes: int = _BY_NAME["worker_max_message_bytes"].default
    worker_outbound_queue: int = _BY_NAME["worker_outbound_queue"].default
    worker_register_timeout: float = _BY_NAME["worker_register_timeout"].default
    worker_max_registering: int = _BY_NAME["worker_max_registering"].default
    worker_rebalance_interval: float = _BY_NAME["worker_rebalance_interval"].default
    worker_rebalance_max_moves: int = _BY_NAME["worker_rebalance_max_moves"].default
    worker_rebalance_tolerance: float = _BY_NAME["worker_rebalance_tolerance"].default
    max_epochs_per_request: int = _BY_NAME["max_epochs_per_request"].default
    heat_half_life_s: float = _BY_NAME["heat_half_life_s"].default
    residency_hysteresis: float = _BY_NAME["residency_hysteresis"].default
    default_replication: int = _BY_NAME["default_replication"].default
    schedule_max_candidates: int = _BY_NAME["schedule_max_candidates"].default
    heat_checkpoint_interval_s: float = _BY_NAME["heat_checkpoint_interval_s"].default
    request_ttl_s: float = _BY_NAME["request_ttl_s"].default
    retired_ttl_s: float = _BY_NAME["retired_ttl_s"].default
    prune_interval_s: float = _BY_NAME["prune_interval_s"].default
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
        from leibrix.master._security import read_admin_token  # here: it raises this module's ConfigError

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
        return f"{_BY_NAME[name].flag} ({self.sources.get(name, 'default')})"

    @property
    def etcd_tls(self) -> EtcdTls | None:
        """How the master's client dials etcd (None: plain text); see :mod:`leibrix.master._etcd_options`."""
        from leibrix.master._etcd_options import etcd_tls

        return etcd_tls(self)

    def member_config(self) -> MemberConfig:
        """The embedded etcd member's configuration (raises :class:`ConfigError` if inconsistent)."""
        from leibrix.master._etcd_options import member_config  # here: it raises this module's ConfigError

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
        if name not in _BY_NAME:
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
            values[name] = _coerce(_BY_NAME[name], raw, what=f"{_BY_NAME[name].flag} (file {path})")
            sources[name] = f"file {path}"
    for opt in OPTIONS:
        if opt.env in env:
            values[opt.name] = _from_text(opt, env[opt.env], what=f"{opt.flag} (env {opt.env})")
            sources[opt.name] = f"env {opt.env}"
    for name, raw in given.items():
        opt = _BY_NAME.get(name)
        if opt is None:
            continue
        what = f"{opt.flag} (flag)"
        values[name] = raw if opt.kind is bool else _from_text(opt, str(raw), what=what)
        sources[name] = "flag"
    return MasterConfig(**values, admin_token=env.get("LEIBRIX_ADMIN_TOKEN", ""), sources=sources).validate()
