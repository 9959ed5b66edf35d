"""The composition root: every part of a master is built and wired here, and only here.

:func:`compose` runs once per master process, after the etcd client and the
Mirror exist and before anything serves. It reads the configuration, builds
each part with what it needs passed to its constructor, registers the
watched tables on the Mirror, and returns :class:`Parts`: the gRPC services
to serve and the leader services to run in every term, in their start order.

Who owns what:

* the **worker hub** (:mod:`leibrix.workers`) serves ``CoordinateWorker`` for
  the master's whole life and works only while leading;
* the **admission service** (:mod:`leibrix.control`) owns the state model,
  the route table and, per term, the coordinator, admission queue, heat
  checkpointer and janitor; it hands the term's coordinator to the hub;
* the **ManagementService** (:mod:`leibrix.api`) is one object per area
  (cluster, tenants, datasets, workers, tokens), each answering its own RPCs;
  with authentication on, the :class:`~leibrix.api._auth.Authorizer` guards
  it, over the token table every master watches.
"""

from __future__ import annotations

import dataclasses
import ssl
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from leibrix.api._auth import AdminBootstrap, Authorizer, TokenRegistry
from leibrix.api._cluster import ClusterApi, ClusterView, ManagementService
from leibrix.api._datasets import DatasetApi
from leibrix.api._http import Metrics
from leibrix.api._metrics import ClusterCollector, EpochEvents
from leibrix.api._status_page import StatusSource
from leibrix.api._tenants import TenantApi
from leibrix.api._tls import ServerTls
from leibrix.api._tokens import TokenApi
from leibrix.api._workers import WorkerApi
from leibrix.control._service import AdmissionService
from leibrix.control._admission import AdmissionConfig
from leibrix.control._settings import CoordinatorConfig
from leibrix.domain._heat import HeatModel
from leibrix.master._config import ConfigError
from leibrix.domain._validation import AdmissionLimits
from leibrix.state._records import use_keyring
from leibrix.store._term import Leadership, LeaderService
from leibrix.workers._hub import HubConfig, WorkerHub

if TYPE_CHECKING:
    from leibrix.master._config import MasterConfig
    from leibrix.store._store import Mirror

__all__ = ["ComposedMaster", "Parts", "admission_configs", "compose", "hub_config"]


class ComposedMaster(Leadership, ClusterView, Protocol):
    """What :func:`compose` uses of the master (``leibrix.master._master.Master``).

    It is handed on whole as the services' :class:`~leibrix.store._term.Leadership`
    and the cluster RPCs' :class:`~leibrix.api._cluster.ClusterView`; compose
    itself reads its configuration, etcd keys, Mirror and ``masters/`` table
    (both set before it runs), metrics registry, leader, and health.
    """

    config: MasterConfig
    mirror: Mirror | None
    metrics: Metrics

    def leader_hint(self) -> str:
        """The leader's gRPC address when another master leads, else ``""``."""
        ...

    def health_report(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, details)`` for /healthz."""
        ...


@dataclass(slots=True)
class Parts:
    """What a master serves and runs, as built by :func:`compose`.

    ``leader_services`` start in this order at the beginning of every term
    (each ``run_term`` is started before the next) and are cancelled together
    when it ends.
    """

    management: Any
    leader_services: list[LeaderService] = field(default_factory=list)
    grpc_services: list[Any] = field(default_factory=list)
    hub: WorkerHub | None = None
    admission: AdmissionService | None = None
    #: Guards the ManagementService (None: authentication is off).
    authorizer: Authorizer | None = None
    #: The gRPC port's TLS (None: plain text).
    tls: ServerTls | None = None
    #: The status page's ``/status.json`` source (None: no status page).
    status: StatusSource | None = None


def hub_config(config: MasterConfig) -> HubConfig:
    """The hub's knobs: each field ``f`` of :class:`HubConfig` is the master option ``worker_<f>``."""
    values = {f.name: getattr(config, "worker_" + f.name) for f in fields(HubConfig)
              if hasattr(config, "worker_" + f.name)}
    return HubConfig(**values)


def admission_configs(config: MasterConfig) -> tuple[AdmissionConfig, CoordinatorConfig]:
    """Admission and coordinator tunables from the master's options of the same names."""
    base = CoordinatorConfig()
    coordinator = dataclasses.replace(
        base,
        hysteresis=config.residency_hysteresis,
        default_replication=config.default_replication,
        max_candidates=config.schedule_max_candidates,
        heat=HeatModel(half_life_s=config.heat_half_life_s),
        heat_checkpoint_interval_s=config.heat_checkpoint_interval_s,
        retired_ttl_s=config.retired_ttl_s,
        prune_interval_s=config.prune_interval_s,
    )
    admission = AdmissionConfig(limits=AdmissionLimits(max_epochs_per_request=config.max_epochs_per_request),
                                request_ttl_s=config.request_ttl_s)
    return admission, coordinator


def compose(master: ComposedMaster) -> Parts:
    """Build and wire every part of ``master`` (its etcd client and Mirror exist; nothing serves yet)."""
    assert master.mirror is not None
    config = master.config
    # Dataset records are sealed/unsealed with this master's keyring: set here, in the master's own task, before
    # the Mirror and every service start, so all of this master's tasks (and only they) see it.
    use_keyring(config.secrets_keyring())
    hub = WorkerHub(hub_config(config), master_id=config.name, keys=master.keys, leader_hint=master.leader_hint)
    assert master.masters is not None
    hub.register_tables(master.mirror, master.masters)
    admission_config, coordinator_config = admission_configs(config)
    admission = AdmissionService(leadership=master, hub=hub, admission=admission_config,
                                 coordinator=coordinator_config, registry=master.metrics.registry)
    admission.attach(master.mirror)
    status = _observe(master, hub, admission)
    tokens = TokenRegistry(master.mirror)
    management = ManagementService([
        ClusterApi(master),
        TenantApi(master, admission, tokens),
        DatasetApi(master, admission, master.mirror),
        WorkerApi(master, hub),
        TokenApi(master, tokens),
    ])
    try:
        tls = ServerTls(config.tls_cert, config.tls_key, config.tls_client_ca or None) if config.tls_cert else None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"--tls-cert/--tls-key/--tls-client-ca: cannot be loaded: {exc}") from None
    return Parts(management=management, leader_services=[admission, hub, AdminBootstrap(tokens, config.read_admin_token())],
                 grpc_services=[hub], hub=hub, admission=admission,
                 authorizer=Authorizer(tokens) if config.auth_enabled else None, tls=tls, status=status)


def _observe(master: ComposedMaster, hub: WorkerHub, admission: AdmissionService) -> StatusSource:
    """Register the cluster metrics on the master's registry; returns the status page's source."""
    leading = lambda: master.is_leader  # noqa: E731
    registry = master.metrics.registry
    EpochEvents(registry, admission.state, leading=leading)
    registry.register(ClusterCollector(hub=hub, admission=admission, leading=leading,
                                       leader=lambda: master.leader.id if master.leader is not None else None,
                                       masters=lambda: len(master.masters or ())))
    return StatusSource(cluster=master.config.cluster, health=master.health_report,
                        masters=lambda: list((master.masters or {}).values()), leading=leading, hub=hub,
                        admission=admission)
