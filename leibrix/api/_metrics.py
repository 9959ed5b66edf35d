"""The master's cluster metrics: state read at scrape time, and counters fed by epoch state changes.

Two kinds of series join the core ones of :class:`leibrix.api._http.Metrics`:

* :class:`ClusterCollector` reads the master's in-memory state *when
  Prometheus scrapes*: workers by state and pool, open worker streams,
  heartbeat ages, epochs by state, tenant usage against quota, route
  subscribers and query heat. Nothing is counted on the hot paths, so a
  heartbeat costs no metric update, and the numbers can never drift from the
  state they describe. Worker series and heat are **leader-only** (workers
  connect to the leader, heat is fed there): a follower does not export them.
  Epoch, tenant and route series are exported by every master (each has the
  watched state; a follower may lag by the watch delay).
* :class:`EpochEvents` is a :class:`~leibrix.state._model.ClusterState`
  listener. Every master sees every committed epoch change through its watch,
  so every master counts the same transitions: loads finished (by source
  type and outcome), their duration (the ``LOADING`` transition to the
  ``READY`` one, from the epoch's own timestamped history) and bytes,
  evictions by reason and replica moves. A master that starts counts from
  then on (loading the state at start-up is not a transition). It also logs
  one line per epoch state transition (INFO on the leader, DEBUG elsewhere),
  with ``tenant``, ``dataset`` and ``epoch`` as fields.

:class:`ClusterCollector` also installs the hooks of the modules that count
on their own paths, and exports what they observed (leader-only where the
leader does the work):

* ``leibrix_placement_pass_seconds`` (histogram): scheduling passes
  (``Coordinator.schedule``, through ``AdmissionService.hooks``);
* ``leibrix_evict_commands_total{reason}``: ``evict_epoch`` commands sent by
  ``Ledger.send_evict``, by kind (``leibrix.control._settings.evict_kind``);
* ``leibrix_worker_heartbeat_lag_seconds`` (histogram): each heartbeat's gap
  since the worker's previous one (``Membership.on_heartbeat``);
* ``leibrix_etcd_request_seconds{op}`` (histogram) and
  ``leibrix_etcd_request_errors_total{op,error}``: every etcd request of this
  master, by operation (``EtcdClient.observe``; every master).

Route subscribers (``leibrix_route_subscribers``) are read from
``RouteTable.subscriber_count``.

:class:`RpcMetrics` counts ManagementService calls by method and gRPC
status, with a latency histogram of ``AdmitDataset`` (observed by the gRPC
server's guard, at the API boundary).
"""

from __future__ import annotations

import logging
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeHistogramMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from leibrix.domain._lifecycle import State

if TYPE_CHECKING:
    from leibrix.control._service import AdmissionService
    from leibrix.state._model import ClusterState, Epoch
    from leibrix.workers._hub import WorkerHub

__all__ = ["ClusterCollector", "EpochEvents", "RpcMetrics", "eviction_reason", "source_type"]

log = logging.getLogger("leibrix.epochs")

#: Upper bounds (seconds) of the heartbeat-age buckets: the workers' distribution at scrape time.
HEARTBEAT_AGE_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
#: Upper bounds (seconds) of load durations.
LOAD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0)
#: Upper bounds (seconds) of scheduling passes.
PASS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Upper bounds (seconds) of heartbeat lags.
LAG_BUCKETS = (0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 20.0, 30.0)
#: Upper bounds (seconds) of etcd requests.
ETCD_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Upper bounds (seconds) of AdmitDataset latencies.
ADMIT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: States an epoch is (being) resident in: leaving them for RETIRING or PENDING withdraws it.
_RESIDENT = frozenset({State.LOADING, State.VALIDATING, State.READY})
_LOADING = frozenset({State.LOADING, State.VALIDATING})
#: The one AdmitDataset method name (upstream and ours share it).
ADMIT_METHOD = "AdmitDataset"


def source_type(state: ClusterState, tenant_id: str, dataset_id: str) -> str:
    """The catalog kind of a dataset's source: ``iceberg``, ``starrocks``, ``jdbc`` (``unknown`` without a record)."""
    ds = state.datasets.get((tenant_id, dataset_id))
    if ds is None:
        return "unknown"
    return ds.request.source.catalog.WhichOneof("catalog_type") or "unknown"


def eviction_reason(reason: str) -> str:
    """The bounded ``reason`` label of a free-text transition reason that withdraws a resident epoch.

    ``refresh`` (a newer version replaced it), ``benefit`` (displaced by a
    higher-benefit epoch), ``retention``, ``drop`` (dataset dropped),
    ``worker_lost`` (the workers holding it died or lost it), ``load_failed``
    (a partial load is thrown away) and ``retire`` for everything else
    (an operator's RetireEpoch, a drain).
    """
    text = reason.lower()
    for needle, label in (("replaced by", "refresh"), ("benefit", "benefit"), ("retention", "retention"),
                          ("drop", "drop"), ("died", "worker_lost"), ("lost", "worker_lost"),
                          ("fail", "load_failed"), ("retrying", "load_failed"), ("valid", "load_failed")):
        if needle in text:
            return label
    return "retire"


class EpochEvents:
    """Counters and one log line per epoch state transition, fed by a ``ClusterState`` listener.

    ``leading`` says whether this master leads (transitions are logged at
    INFO on the leader only).
    """

    def __init__(self, registry: CollectorRegistry, state: ClusterState, *, leading: Callable[[], bool]) -> None:
        self.state = state
        self._leading = leading
        self.transitions = Counter("leibrix_epoch_transitions", "epoch state transitions",
                                   ["from_state", "to_state"], registry=registry)
        self.loads = Counter("leibrix_loads", "loads that ended: ready, retried (failed, attempts left) or failed "
                             "(gave up)", ["source_type", "outcome"], registry=registry)
        self.load_duration = Histogram("leibrix_load_duration_seconds", "time from LOADING to READY of an epoch",
                                       ["source_type"], buckets=LOAD_BUCKETS, registry=registry)
        self.load_bytes = Counter("leibrix_load_bytes", "bytes of memory that READY epochs occupy, per replica loaded",
                                  ["source_type"], registry=registry)
        self.evictions = Counter("leibrix_evictions", "resident (loading or READY) epochs withdrawn, by reason",
                                 ["reason"], registry=registry)
        self.replica_moves = Counter("leibrix_replica_moves", "replicas placed on a new worker for an epoch that "
                                     "already had replicas (re-placement, rebalancing, drain)", registry=registry)
        state.listeners.append(self.on_change)

    def on_change(self, old: Epoch | None, new: Epoch | None) -> None:
        """The listener: count what changed between ``old`` and ``new`` (both present only)."""
        if old is None or new is None:
            return
        if old.replicas:
            before = {r.worker_id for r in old.replicas}
            moved = sum(1 for r in new.replicas if r.worker_id not in before)
            if moved:
                self.replica_moves.inc(moved)
        if old.state is new.state:
            return
        self.transitions.labels(old.state.name, new.state.name).inc()
        history = new.history
        last = history[-1] if history else None
        reason = last.reason if last is not None else ""
        kind = source_type(self.state, new.tenant_id, new.dataset_id)
        if old.state in _LOADING:
            if new.state is State.READY:
                self.loads.labels(kind, "ready").inc()
                self.load_bytes.labels(kind).inc(new.memory_bytes * max(1, len(new.replicas)))
                started = next((t.at_ms for t in reversed(history) if t.to_state is State.LOADING), None)
                if started is not None and last is not None:
                    self.load_duration.labels(kind).observe(max(0.0, (last.at_ms - started) / 1000))
            elif new.state is State.FAILED:
                self.loads.labels(kind, "failed").inc()
            elif new.attempts > old.attempts:
                self.loads.labels(kind, "retried").inc()
        if old.state in _RESIDENT and new.state in (State.RETIRING, State.PENDING):
            self.evictions.labels(eviction_reason(reason)).inc()
        level = logging.INFO if self._leading() else logging.DEBUG
        log.log(level, "epoch %s/%s/%s: %s -> %s (%s)", new.tenant_id, new.dataset_id, new.epoch_id,
                old.state.name, new.state.name, reason,
                extra={"tenant": new.tenant_id, "dataset": new.dataset_id, "epoch": new.epoch_id,
                       "from_state": old.state.name, "to_state": new.state.name})


class RpcMetrics:
    """``leibrix_rpc_requests_total{method,code}``, ``leibrix_admissions_total{code}`` and the AdmitDataset
    latency histogram; :meth:`observe` is the gRPC server's per-call hook."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter("leibrix_rpc_requests", "gRPC calls answered, by method and status",
                                ["method", "code"], registry=registry)
        self.admissions = Counter("leibrix_admissions", "AdmitDataset calls answered, by gRPC status",
                                  ["code"], registry=registry)
        self.admit_latency = Histogram("leibrix_admission_duration_seconds", "AdmitDataset latency, any outcome",
                                       buckets=ADMIT_BUCKETS, registry=registry)

    def observe(self, path: str, code: str, seconds: float) -> None:
        """One answered call of ``path`` (``/package.Service/Method``) with status ``code`` after ``seconds``."""
        method = path.rsplit("/", 1)[-1]
        self.requests.labels(method, code).inc()
        if method == ADMIT_METHOD:
            self.admissions.labels(code).inc()
            self.admit_latency.observe(seconds)


def _pool(labels_pool: str) -> str:
    return labels_pool or "shared"


class ClusterCollector(Collector):
    """Scrape-time series over the worker hub and the admission service's state (see the module doc)."""

    def __init__(self, *, hub: WorkerHub, admission: AdmissionService, leading: Callable[[], bool],
                 leader: Callable[[], str | None], masters: Callable[[], int]) -> None:
        self.hub = hub
        self.admission = admission
        self._leading = leading
        self._leader = leader
        self._masters = masters
        # counted on their own paths through the modules' hooks (unregistered: collect() yields them)
        self.pass_seconds = Histogram("leibrix_placement_pass_seconds", "duration of scheduling passes",
                                      buckets=PASS_BUCKETS, registry=None)
        self.evict_commands = Counter("leibrix_evict_commands", "evict_epoch commands sent to workers, by reason",
                                      ["reason"], registry=None)
        self.heartbeat_lag = Histogram("leibrix_worker_heartbeat_lag_seconds",
                                       "gap between a worker's consecutive heartbeats, per heartbeat",
                                       buckets=LAG_BUCKETS, registry=None)
        self.etcd_seconds = Histogram("leibrix_etcd_request_seconds", "etcd request latency (every endpoint "
                                      "tried), by operation", ["op"], buckets=ETCD_BUCKETS, registry=None)
        self.etcd_errors = Counter("leibrix_etcd_request_errors", "etcd requests that failed, by operation and "
                                   "error", ["op", "error"], registry=None)
        hooks = getattr(admission, "hooks", None)
        if hooks is not None:
            hooks.pass_seconds = self.pass_seconds.observe
            hooks.evict = lambda reason: self.evict_commands.labels(reason).inc()
        hub.on_heartbeat = self.heartbeat_lag.observe
        etcd = getattr(getattr(admission, "leadership", None), "etcd", None)
        if etcd is not None:
            etcd.observe = self._etcd

    def _etcd(self, op: str, seconds: float, error: str | None) -> None:
        self.etcd_seconds.labels(op).observe(seconds)
        if error is not None:
            self.etcd_errors.labels(op, error).inc()

    def collect(self) -> Iterator[Metric]:
        """Every series, read now."""
        leader = GaugeMetricFamily("leibrix_leader", "1 for the master this one sees leading", labels=["leader"])
        name = self._leader()
        if name:
            leader.add_metric([name], 1)
        yield leader
        yield GaugeMetricFamily("leibrix_masters", "masters registered in the cluster", value=self._masters())
        if self._leading():
            yield from self._workers()
            yield self._heat()
            yield from self.pass_seconds.collect()
            yield from self.evict_commands.collect()
            yield from self.heartbeat_lag.collect()
        yield from self.etcd_seconds.collect()
        yield from self.etcd_errors.collect()
        yield from self._epochs()
        yield from self._tenants()
        yield self._subscribers()

    # ---- leader-only ------------------------------------------------------------------

    def _workers(self) -> Iterable[Metric]:
        hub = self.hub
        now = trio.current_time()
        by_state: Tally[tuple[str, str]] = Tally()
        ages: dict[str, list[float]] = {}
        streams = 0
        for wid, member in list(hub.members.items()):
            live = hub.liveness.get(wid)
            if live is None:
                continue
            pool = _pool(member.pool)
            by_state[(live.state.name, pool)] += 1
            if member.session is not None:
                streams += 1
                ages.setdefault(pool, []).append(max(0.0, now - live.last_beat))
        workers = GaugeMetricFamily("leibrix_workers", "workers known to the leader, by state and pool",
                                    labels=["state", "pool"])
        for (state, pool), n in sorted(by_state.items()):
            workers.add_metric([state, pool], n)
        yield workers
        yield GaugeMetricFamily("leibrix_worker_streams_open", "CoordinateWorker streams open on the leader",
                                value=streams)
        hist = GaugeHistogramMetricFamily(
            "leibrix_worker_heartbeat_age_seconds",
            "connected workers by seconds since their last heartbeat (or registration), now", labels=["pool"])
        worst = GaugeMetricFamily("leibrix_worker_heartbeat_age_max_seconds",
                                  "longest time since a connected worker's last heartbeat", labels=["pool"])
        for pool, values in sorted(ages.items()):
            buckets = [(str(b), sum(1 for v in values if v <= b)) for b in HEARTBEAT_AGE_BUCKETS]
            buckets.append(("+Inf", len(values)))
            hist.add_metric([pool], buckets, sum(values))
            worst.add_metric([pool], max(values))
        yield hist
        yield worst
        moves = list(getattr(hub, "rebalance_moves", ()))
        yield CounterMetricFamily("leibrix_rebalance_passes", "join-rebalancing passes run by this master",
                                  value=len(moves))
        yield CounterMetricFamily("leibrix_rebalance_moves", "replica moves started by join rebalancing",
                                  value=sum(moves))
        replaced = getattr(hub, "last_replace_s", None)
        if replaced is not None:
            yield GaugeMetricFamily("leibrix_dead_worker_replace_last_seconds",
                                    "time from the last worker's DEAD to all its replicas' assignments sent",
                                    value=replaced)

    def _heat(self) -> Metric:
        model = self.admission.coordinator_config.heat
        now = trio.current_time()
        sums: dict[tuple[str, str], float] = {}
        for e in list(self.admission.state.epochs.values()):
            if e.state in (State.RETIRED, State.FAILED):
                continue
            value = e.heat.get(model, now) if e.heat is not None else model.prior
            key = (e.tenant_id, e.dataset_id)
            sums[key] = sums.get(key, 0.0) + value
        heat = GaugeMetricFamily("leibrix_query_heat", "decayed query heat summed over a dataset's live epochs "
                                 "(never-queried epochs count their prior)", labels=["tenant", "dataset"])
        for (t, d), value in sorted(sums.items()):
            heat.add_metric([t, d], value)
        return heat

    # ---- every master -----------------------------------------------------------------

    def _epochs(self) -> Iterable[Metric]:
        counts: Tally[tuple[str, str, str]] = Tally()
        for e in list(self.admission.state.epochs.values()):
            counts[(e.tenant_id, e.dataset_id, e.state.name)] += 1
        epochs = GaugeMetricFamily("leibrix_epochs", "epochs by tenant, dataset and state",
                                   labels=["tenant", "dataset", "state"])
        for (t, d, s), n in sorted(counts.items()):
            epochs.add_metric([t, d, s], n)
        yield epochs
        yield GaugeMetricFamily("leibrix_datasets", "datasets admitted", value=len(self.admission.state.datasets))

    def _tenants(self) -> Iterable[Metric]:
        state = self.admission.state
        names = ("memory_bytes", "memory_limit_bytes", "cpu_cores", "cpu_limit_cores", "epochs", "epochs_limit",
                 "datasets", "datasets_limit", "pending_epochs")
        helps = ("memory charged (every replica of LOADING..RETIRING epochs)", "memory budget (absent: unlimited)",
                 "CPU cores charged", "CPU budget (absent: unlimited)", "charged epochs",
                 "epoch budget (absent: unlimited)", "datasets", "dataset budget (absent: unlimited)",
                 "PENDING epochs (queued, not charged)")
        families = {n: GaugeMetricFamily(f"leibrix_tenant_{n}", f"per tenant: {h}", labels=["tenant"])
                    for n, h in zip(names, helps)}
        for tid in sorted(state.tenant_ids()):
            u = state.usage(tid)
            t = state.tenants.get(tid)
            values: dict[str, float] = {"memory_bytes": u.memory_bytes, "cpu_cores": u.cpu_cores,
                                        "epochs": u.epochs, "datasets": u.datasets, "pending_epochs": u.pending}
            if t is not None:
                q = t.quota
                for name, limit in (("memory_limit_bytes", q.max_memory_bytes), ("cpu_limit_cores", q.max_cpu_cores),
                                    ("epochs_limit", q.max_epochs), ("datasets_limit", q.max_datasets)):
                    if limit:
                        values[name] = limit
            for name, value in values.items():
                families[name].add_metric([tid], value)
        yield from families.values()

    def _subscribers(self) -> Metric:
        fam = GaugeMetricFamily("leibrix_route_subscribers", "WatchRoutes streams open on this master, by tenant",
                                labels=["tenant"])
        routes = self.admission.routes
        for tenant in sorted(self.admission.state.tenant_ids()):
            fam.add_metric([tenant], routes.subscriber_count(tenant))
        return fam
