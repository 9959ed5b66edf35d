"""The master's options: every one declared once, with its flag, environment variable, TOML key and default.

:data:`OPTIONS` is the single table that :mod:`leibrix.master._config` builds the
command line, the environment and TOML readers and :class:`MasterConfig` from,
and that ``docs/operations.md``'s configuration reference is generated from
(:mod:`leibrix.master._reference`). Defaults of the parts' own knobs are taken
from those parts' configuration classes, so each default has one home.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leibrix.control._admission import AdmissionConfig
from leibrix.control._settings import CoordinatorConfig
from leibrix.domain._validation import AdmissionLimits
from leibrix.store._member import EMBEDDED_TXN_LIMITS, MEMBER_HEADROOM, PRODUCTION_TIMINGS
from leibrix.store._writer import TxnLimits
from leibrix.workers._hub import HubConfig

__all__ = ["BY_NAME", "DEFAULT_LEASE_TTL", "OPTIONS", "Option"]

#: Production master lease TTL (seconds). A kill -9 of the leader is noticed after at most the
#: TTL plus etcd's lease-expiry tick (plus one Raft re-election when the dead master's member led
#: Raft); ``python -m bench.failover`` measures it. Keep-alives go out several times per TTL, so a
#: healthy master loses its term only after a stall of most of a TTL.
DEFAULT_LEASE_TTL = 1


_HUB, _LIMITS, _COORD, _ADMISSION = HubConfig(), AdmissionLimits(), CoordinatorConfig(), AdmissionConfig()


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

#: Every option by its name.
BY_NAME: dict[str, Option] = {o.name: o for o in OPTIONS}
