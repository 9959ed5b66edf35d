"""The master's admission and residency service: the state model and routes for the master's life, and the
leader's per-term services (coordinator, admission queue, source refresher, heat checkpointer, janitor) for
each term it leads.

Admissions are queued, batched and written by ``leibrix.control._admission``
and decided by ``leibrix.control._decide``; placing and loading epochs is
``leibrix.control._coordinator``.
"""

from __future__ import annotations

import trio
from prometheus_client import CollectorRegistry

from leibrix.control._admission import AdmissionConfig, Admissions
from leibrix.control._coordinator import Coordinator
from leibrix.control._settings import CoordinatorConfig
from leibrix.control._settings import ControlHooks
from leibrix.control._heat_checkpoint import HeatCheckpointer, checkpoint_counter
from leibrix.control._janitor import Janitor, JanitorCounters
from leibrix.control._refresh import Refresher
from leibrix.domain._errors import Unavailable
from leibrix.domain._lifecycle import State
from leibrix.domain._tenants import Quota, guarantee_shortfall
from leibrix.state._model import ClusterState
from leibrix.state._routes import RouteTable
from leibrix.store._etcd import EtcdRefused, EtcdUnavailable
from leibrix.store._store import Fenced, Mirror, Table
from leibrix.store._term import Leadership, TermContext
from leibrix.wire._labels import pool_of
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from leibrix.workers._hub import WorkerHub

__all__ = ["AdmissionService"]

#: Worker states whose memory counts as a pool's capacity for guarantees (they hold, or soon again hold, epochs).
_CAPACITY_STATES = frozenset({cp.WorkerState.ACTIVE, cp.WorkerState.SUSPECT})


class AdmissionService:
    """The master's admission and residency: the state model, routes, and the per-term leader services.

    Built once per master by the composition root; the state and the route
    table live for the master's whole life (fed by the Mirror, so followers
    are warm and answer reads); ``coordinator`` and ``admissions`` exist only
    while this master leads.
    """

    def __init__(self, *, leadership: Leadership, hub: WorkerHub, admission: AdmissionConfig = AdmissionConfig(),
                 coordinator: CoordinatorConfig = CoordinatorConfig(),
                 registry: CollectorRegistry | None = None) -> None:
        self.leadership = leadership
        self.hub = hub
        self.admission_config = admission
        self.coordinator_config = coordinator
        self.state = ClusterState()
        self.requests: Table[state_pb2.RequestRecord] | None = None
        self.routes = RouteTable(self.state, addr=self.worker_addr)
        self.coordinator: Coordinator | None = None
        self.admissions: Admissions | None = None
        self._checkpointer: HeatCheckpointer | None = None
        self.heat_checkpoints = checkpoint_counter(registry)
        self.janitor_counters = JanitorCounters(registry)
        #: The control loop's observation hooks, shared by every term's coordinator (the metrics set them).
        self.hooks = ControlHooks()

    def attach(self, mirror: Mirror) -> None:
        """Register the state's tables on the master's Mirror (before it runs)."""
        self.requests = self.state.attach(mirror)

    def worker_addr(self, worker_id: str) -> str | None:
        """A worker's address for routes (known on the leader, where workers are connected)."""
        return self.hub.addr(worker_id)

    def pool_known(self, pool: str) -> bool:
        """Whether a worker's pool label names a tenant's ``worker_pool`` (or, as the Rust worker's
        ``tenant_id`` label does, a tenant): the hub refuses workers of unknown pools."""
        return pool in self.state.tenants or any(t.quota.pool == pool for t in self.state.tenants.values())

    async def guarantee_shortfall(self, quota: Quota) -> str | None:
        """None if ``quota``'s ``guaranteed_memory_bytes`` can be promised, else why not, with the numbers.

        The guarantees of the tenants sharing ``quota``'s pool (the same
        ``worker_pool``; the shared pool for tenants without one), this one
        included, must fit the memory of that pool's workers known now
        (ACTIVE or SUSPECT; for the shared pool, also the workers dedicated to
        one of its tenants). Checked only when the upsert raises the tenant's
        guarantee or moves it to another pool: capacity that shrinks later
        (a worker drains or dies) never makes an unrelated quota edit fail.
        While the pool is smaller than its guarantees, each guarantee still
        protects what the tenant holds (nothing is displaced below it) and a
        tenant below its guarantee still claims room from memory others hold
        above theirs; it is honoured in full again once capacity returns.
        """
        g = quota.guaranteed_memory_bytes
        old = self.state.tenants.get(quota.tenant_id)
        if not g or (old is not None and old.quota.pool == quota.pool and g <= old.quota.guaranteed_memory_bytes):
            return None
        group = {t: ten.quota.guaranteed_memory_bytes for t, ten in self.state.tenants.items()
                 if ten.quota.pool == quota.pool and t != quota.tenant_id}
        group[quota.tenant_id] = g
        pools = {quota.pool} if quota.pool else {"", *group}
        capacity = sum(w.capacity.memory_bytes for w in await self.hub.infos()
                       if w.state in _CAPACITY_STATES and pool_of(w.labels) in pools)
        return guarantee_shortfall(quota.pool, group, capacity)

    def leading(self) -> tuple[Coordinator, Admissions]:
        """The term's coordinator and admission queue, or UNAVAILABLE naming the leader."""
        self.leadership.leader_context()  # raises Unavailable (+ leibrix-leader) on a follower
        if self.coordinator is None or self.admissions is None:
            raise Unavailable("the leader is starting its term; retry shortly")
        return self.coordinator, self.admissions

    async def before_resign(self, ctx: TermContext) -> None:
        """Graceful shutdown, term still valid: write the heat fed since the last checkpoint, so a SIGTERM'd
        leader hands its successor everything (a crash still loses at most one checkpoint interval)."""
        checkpointer = self._checkpointer
        if checkpointer is not None:
            try:
                await checkpointer.flush()
            except (Fenced, EtcdUnavailable, EtcdRefused):
                pass  # the term ended meanwhile, or etcd is gone: the successor starts from the last checkpoint

    async def run_term(self, ctx: TermContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One leadership term: coordinator, admission batcher, refresher, heat checkpointer and janitor; finishes
        retirements the last term began."""
        hub = self.hub
        keys = ctx.keys
        coord = Coordinator(state=self.state, commit=ctx.writer.commit, keys=keys, hub=hub,
                            config=self.coordinator_config, clock=trio.current_time, hooks=self.hooks)
        admissions = Admissions(state=self.state, coordinator=coord, keys=keys, requests=self.requests,
                                config=self.admission_config)
        hub.attach(coord, pool_known=self.pool_known)
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(coord.run)
                await nursery.start(admissions.run)
                await nursery.start(Refresher(self.state, admissions, limits=self.admission_config.limits).run)
                cfg = self.coordinator_config
                checkpointer = HeatCheckpointer(coord, interval_s=cfg.heat_checkpoint_interval_s,
                                                counter=self.heat_checkpoints)
                await nursery.start(checkpointer.run)
                self._checkpointer = checkpointer
                await nursery.start(Janitor(coord, self.requests, commit=ctx.writer.commit,
                                            request_ttl_s=self.admission_config.request_ttl_s,
                                            retired_ttl_s=cfg.retired_ttl_s, interval_s=cfg.prune_interval_s,
                                            counters=self.janitor_counters, orphan_ttl_s=cfg.orphan_ttl_s,
                                            writing=admissions.writing).run)
                self.coordinator, self.admissions = coord, admissions
                retiring = [e.key for e in self.state.epochs.values() if e.state is State.RETIRING]
                if retiring:
                    nursery.start_soon(coord.finish_retirements, retiring,
                                       "finishing a retirement begun by the last leader")
                coord.kick()
                task_status.started()
                await trio.sleep_forever()
        finally:
            self.coordinator = self.admissions = self._checkpointer = None
            hub.detach(coord)
            coord.close()
