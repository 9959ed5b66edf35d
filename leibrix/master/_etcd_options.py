"""The etcd options' rules: the embedded member's configuration, TLS to etcd, and where the member listens.

* ``--etcd-ca/--etcd-cert/--etcd-key``: the master's client dials etcd over
  TLS, trusting ``--etcd-ca`` and presenting the certificate (etcd's
  ``--client-cert-auth``). A bare ``host:port`` in ``--etcd-endpoints`` is then
  dialled over TLS; an ``http://`` one is refused.
* ``--etcd-member-cert/--etcd-member-key/--etcd-member-ca`` (all three or
  none): the embedded member serves clients and peers over TLS and requires
  certificates signed by the CA from both; its URLs must be ``https://``. The
  master's own client then dials it with ``--etcd-ca/--etcd-cert/--etcd-key``
  where given, else with the member's CA, certificate and key.
* An embedded member listens on loopback unless its URLs say otherwise; a
  client or peer URL beyond loopback needs member TLS, or ``--insecure``
  (anyone reaching an open etcd can rewrite the cluster's state).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from leibrix.master._config_error import ConfigError
from leibrix.store._etcd import EtcdTls
from leibrix.store._member import MemberConfig, MemberTls, Timings, parse_initial_cluster, validate_url
from leibrix.store._writer import TxnLimits

__all__ = ["EtcdOptions", "check_etcd", "etcd_tls", "member_config"]

_MEMBER_TLS = ("etcd_member_cert", "etcd_member_key", "etcd_member_ca")
_CLIENT_TLS = ("etcd_ca", "etcd_cert", "etcd_key")


def _is_loopback(url: str) -> bool:
    from leibrix.master._security import is_loopback

    return is_loopback(urlsplit(url).hostname or "")


class EtcdOptions(Protocol):
    """What these rules read of a ``leibrix.master._config.MasterConfig``."""

    name: str
    data_dir: Path
    etcd_endpoints: list[str]
    etcd_ca: str
    etcd_cert: str
    etcd_key: str
    etcd_binary: str
    etcd_client_url: str
    etcd_peer_url: str
    etcd_member_cert: str
    etcd_member_key: str
    etcd_member_ca: str
    initial_cluster: str
    etcd_heartbeat_ms: int
    etcd_election_ms: int
    etcd_max_restarts: int
    allow_unsafe_etcd: bool
    insecure: bool

    @property
    def embedded(self) -> bool: ...

    @property
    def txn_limits(self) -> TxnLimits: ...

    def member_config(self) -> MemberConfig:
        """The embedded member's configuration (``member_config`` below, with the master's stop grace)."""
        ...

    def _where(self, name: str) -> str:
        """The option's flag and where its value came from, for messages."""
        ...


def member_tls(config: EtcdOptions) -> MemberTls | None:
    """The embedded member's TLS files (None: plain text)."""
    if not config.etcd_member_cert:
        return None
    return MemberTls(config.etcd_member_cert, config.etcd_member_key, config.etcd_member_ca)


def etcd_tls(config: EtcdOptions) -> EtcdTls | None:
    """How the master's client dials etcd: the ``--etcd-*`` files, else the embedded member's (None: plain)."""
    own = member_tls(config) if config.embedded else None
    if not any(getattr(config, name) for name in _CLIENT_TLS):
        return own.client() if own is not None else None
    return EtcdTls(config.etcd_ca or (own.ca if own else None),
                   config.etcd_cert or (own.cert if own and not config.etcd_key else None),
                   config.etcd_key or (own.key if own and not config.etcd_cert else None))


def member_config(config: EtcdOptions, stop_grace: float) -> MemberConfig:
    """The embedded etcd member's configuration (raises :class:`ConfigError` if inconsistent)."""
    try:
        cluster = parse_initial_cluster(config.initial_cluster) if config.initial_cluster else {}
        return MemberConfig(
            name=config.name,
            data_dir=config.data_dir / "etcd",
            client_url=config.etcd_client_url,
            peer_url=config.etcd_peer_url,
            initial_cluster=cluster,
            timings=Timings(config.etcd_heartbeat_ms, config.etcd_election_ms),
            binary=config.etcd_binary or None,
            allow_unsafe=config.allow_unsafe_etcd,
            max_restarts=config.etcd_max_restarts,
            txn_limits=config.txn_limits,
            stop_grace=stop_grace,
            tls=member_tls(config),
        )
    except ValueError as exc:
        raise ConfigError(f"embedded etcd: {exc}") from None


def check_etcd(config: EtcdOptions) -> None:
    """Raise :class:`ConfigError` naming the option when the etcd options cannot work together."""
    where = config._where
    for name in (*_CLIENT_TLS, *_MEMBER_TLS):
        path = getattr(config, name)
        if path and not os.access(path, os.R_OK):
            raise ConfigError(f"{where(name)}: {path} is not a readable file")
    if bool(config.etcd_cert) != bool(config.etcd_key):
        raise ConfigError(f"{where('etcd_cert')} and {where('etcd_key')}: give both or neither")
    given = [name for name in _MEMBER_TLS if getattr(config, name)]
    if given and len(given) != len(_MEMBER_TLS):
        raise ConfigError(", ".join(where(n) for n in _MEMBER_TLS) + ": give all three or none")
    if given and not config.embedded:
        raise ConfigError(f"{where(given[0])}: no embedded member runs with {where('etcd_endpoints')}")
    client_tls = any(getattr(config, name) for name in _CLIENT_TLS)
    for endpoint in config.etcd_endpoints:
        url = endpoint if "://" in endpoint else f"{'https' if client_tls else 'http'}://{endpoint}"
        try:
            validate_url(url, what=f"{where('etcd_endpoints')} entry")
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
        if client_tls and url.startswith("http://"):
            raise ConfigError(f"{where('etcd_endpoints')}: {endpoint} is plain http:// but {where('etcd_ca')} "
                              "and the other etcd TLS options are set: use https://")
    if not config.embedded:
        return
    member = config.member_config()
    if member.tls is None and not config.insecure:
        for name in ("etcd_client_url", "etcd_peer_url"):
            url = getattr(config, name)
            if not _is_loopback(url):
                raise ConfigError(
                    f"{where(name)}: {url} is reachable beyond loopback without TLS; set --etcd-member-cert/"
                    "--etcd-member-key/--etcd-member-ca (and https:// URLs), or pass --insecure")
