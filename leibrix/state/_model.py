"""The in-memory model of tenants, datasets and epochs, and its codecs to the etcd records.

etcd holds the truth (``tenants/<t>``, ``datasets/<t>/<d>``,
``epochs/<t>/<d>/<e>``, ``requests/<id>``: ``state_pb2`` records); every
master keeps this model of it, fed by the watch, so that a new leader starts
warm and reads never touch etcd. The model is built for 100,000+ epochs:

* records are decoded with the upb ``state_pb2`` classes (about 100× faster
  than betterproto), once per change, never re-decoded;
* ``Epoch`` and ``Replica`` are ``__slots__`` objects with ints/floats/tuples,
  ids and labels are interned (a tenant id is one string shared by all its
  epochs), dimension values are a tuple of pairs — a few hundred bytes per
  epoch instead of a protobuf object graph;
* indices (epochs by dataset, replicas by worker) and per-tenant ``Usage``
  are maintained incrementally on every put/delete, so quota checks and
  ``replicas_on(worker)`` are O(1)/O(replicas).

Objects are treated as immutable once stored: the leader builds a changed
copy with ``Epoch.evolve``, encodes it, commits it through the fence and then
stores it (``ClusterState.put_epoch``); listeners (routes) see ``(old, new)``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import NamedTuple

from leibrix.domain import _epochs
from leibrix.domain._lifecycle import CHARGED, State, Transition
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Keys, Mirror, Table
from leibrix.domain._tenants import Quota, Usage
from leibrix.domain._validation import fingerprint
from leibrix.state._wire import epoch_info, epoch_to_wire, fill_epoch_info

__all__ = [
    "ASSIGNED", "EVICTING", "LOADED", "ClusterState", "Dataset", "Epoch", "EpochKey", "EpochListener", "Replica",
    "Tenant", "decode_dataset", "decode_epoch", "decode_tenant", "encode_dataset", "encode_epoch",
    "encode_tenant", "epoch_info", "epoch_name", "epoch_to_wire", "fill_epoch_info", "now_ms", "parse_epoch_name",
]

_intern = sys.intern

#: Replica states (wire values of ``ReplicaInfo.State``).
ASSIGNED, LOADED, EVICTING = 1, 2, 3


def now_ms() -> int:
    """Wall-clock UTC milliseconds: transition timestamps are for humans, so wall time."""
    return int(datetime.now(timezone.utc).timestamp() * 1000)


class Replica(NamedTuple):
    """One copy of an epoch on one worker: ASSIGNED (plan sent), LOADED (validated) or EVICTING.

    A tuple of a string, an int and a string: the cyclic garbage collector
    stops tracking such tuples, so 100,000 epochs' replicas cost it nothing.
    """

    worker_id: str
    state: int
    plan_id: str


class Epoch:
    """One epoch of one dataset: window, dimensions, lifecycle state, replicas and estimates.

    ``memory_bytes``/``cpu_cores`` are per replica; ``rows`` is the expected
    row count (0 = unknown). ``replaces`` names the epoch a refresh swaps out.
    ``admission`` is the generation of the admission that wrote it (see
    ``ClusterState``: the epoch belongs to its dataset once the dataset
    record's generation has reached it). ``heat`` and ``retry_at`` are
    leader-local (never persisted).
    """

    __slots__ = (
        "tenant_id", "dataset_id", "epoch_id", "start_ms", "end_ms", "dims", "state", "_history", "replicas",
        "memory_bytes", "cpu_cores", "scan_cost", "rows", "version", "attempts", "replaces", "plan_id",
        "admission", "heat", "retry_at",
    )

    def __init__(
        self, tenant_id: str, dataset_id: str, epoch_id: str, start_ms: int, end_ms: int,
        dims: tuple[tuple[str, str], ...], state: State, history: tuple[Transition, ...],
        replicas: tuple[Replica, ...], memory_bytes: int, cpu_cores: float, scan_cost: float, rows: int,
        version: str, attempts: int = 0, replaces: str = "", plan_id: str = "", admission: int = 0,
    ) -> None:
        self.tenant_id = tenant_id
        self.dataset_id = dataset_id
        self.epoch_id = epoch_id
        self.start_ms = start_ms
        self.end_ms = end_ms
        self.dims = dims
        self.state = state
        self._history: tuple[Transition, ...] | bytes = history
        self.replicas = replicas
        self.memory_bytes = memory_bytes
        self.cpu_cores = cpu_cores
        self.scan_cost = scan_cost
        self.rows = rows
        self.version = version
        self.attempts = attempts
        self.replaces = replaces
        self.plan_id = plan_id
        self.admission = admission
        self.heat = None
        self.retry_at = 0.0

    @property
    def history(self) -> tuple[Transition, ...]:
        """Transitions, oldest first. Decoded lazily: a new leader loading 100,000 epochs
        keeps each history as the raw record bytes until someone looks at it."""
        h = self._history
        if isinstance(h, bytes):
            h = self._history = _decode_history(state_pb2.EpochRecord.FromString(h).history)
        return h

    @property
    def key(self) -> EpochKey:
        """``(tenant, dataset, epoch)``: the epoch's identity across the cluster."""
        return (self.tenant_id, self.dataset_id, self.epoch_id)

    def evolve(self, **changes: object) -> Epoch:
        """A copy with ``changes`` applied (leader-local heat and retry time carried over)."""
        new = Epoch.__new__(Epoch)
        for name in Epoch.__slots__:
            setattr(new, name, getattr(self, name))
        if "history" in changes:
            new._history = changes.pop("history")
        for name, value in changes.items():
            setattr(new, name, value)
        return new

    def worker_ids(self, *states: int) -> list[str]:
        """Workers holding a replica in one of ``states`` (all replicas when none given)."""
        return [r.worker_id for r in self.replicas if not states or r.state in states]

    def __repr__(self) -> str:
        return f"Epoch({epoch_name(self.key)}, {self.state.name}, replicas={list(self.replicas)})"


class Dataset:
    """An admitted dataset: the request it came from (source, partitioning) and its placement options.

    ``arrow_schema`` (Arrow IPC bytes) and ``schema_fingerprint`` are the
    table schema the source connector gave at admission (``leibrix.domain._schema``):
    every LoadPlan carries the bytes and every COMPLETED report is checked
    against the fingerprint. Both are empty for a dataset admitted before
    schemas were recorded: its loads are not schema-checked.

    ``admission`` is the generation of its last admission whose epochs are
    all stored (``leibrix.control._admission``): epochs of a newer generation
    are not part of it yet.
    """

    __slots__ = ("tenant_id", "dataset_id", "request", "replication_factor", "strategy", "retention",
                 "admitted_ms", "version", "granularity", "time_column", "arrow_schema", "schema_fingerprint",
                 "admission")

    def __init__(self, tenant_id: str, dataset_id: str, request: state_pb2.AdmitDatasetRequest,
                 replication_factor: int, strategy: int, admitted_ms: int, version: str,
                 arrow_schema: bytes = b"", schema_fingerprint: str = "", admission: int = 0) -> None:
        self.tenant_id = tenant_id
        self.dataset_id = dataset_id
        self.request = request
        self.replication_factor = replication_factor
        self.strategy = strategy
        self.retention = request.retention_epochs
        self.admitted_ms = admitted_ms
        self.version = version
        tp = request.source.partition.time_partition
        self.time_column = tp.column.name
        g = request.epoch_granularity if request.HasField("epoch_granularity") else None
        if g is not None:
            self.granularity = _epochs.Granularity(g.value, _epochs.Unit(g.unit + 1))
        else:
            self.granularity = _epochs.Granularity(1, _epochs.Unit(max(1, tp.column.source_granularity)))
        self.arrow_schema = arrow_schema
        self.schema_fingerprint = schema_fingerprint
        self.admission = admission

    def fingerprint(self) -> str:
        """sha256 of the admission request without its request id (see ``_validation.fingerprint``)."""
        return fingerprint(self.request.SerializeToString())


class Tenant:
    """A tenant's quota and its incrementally maintained usage."""

    __slots__ = ("quota", "usage", "updated_ms")

    def __init__(self, quota: Quota, updated_ms: int) -> None:
        self.quota = quota
        self.usage = Usage()
        self.updated_ms = updated_ms


# ---------------------------------------------------------------- codecs

def _ts_ms(ts) -> int:
    return ts.seconds * 1000 + ts.nanos // 1_000_000


def _set_ts(ts, ms: int) -> None:
    ts.seconds, rem = divmod(ms, 1000)
    ts.nanos = rem * 1_000_000


_reasons: dict[str, str] = {}
#: int -> State without the Enum call overhead (hot in ``decode_epoch``).
_STATES = {int(s): s for s in State}


def _decode_history(entries) -> tuple[Transition, ...]:
    return tuple(
        Transition(_STATES.get(h.from_state, State.PENDING), _STATES[h.to_state], _ts_ms(h.at),
                   _reasons.setdefault(h.reason, h.reason))
        for h in entries
    )


def decode_epoch(raw: bytes) -> Epoch:
    """``EpochRecord`` bytes → ``Epoch`` (upb parse, interned strings, history left raw until read)."""
    r = state_pb2.EpochRecord.FromString(raw)
    info = r.info
    tr = info.time_range
    dims = tuple(sorted((_intern(k), _intern(v)) for k, v in info.dimension_values.items()))
    replicas = tuple(Replica(_intern(x.worker_id), x.state, x.plan_id) for x in r.replicas)
    return Epoch(
        _intern(r.tenant_id), _intern(r.dataset_id), info.epoch_id, _ts_ms(tr.start_inclusive),
        _ts_ms(tr.end_exclusive), dims, _STATES[r.state], raw if r.history else (), replicas, r.estimate.memory_bytes,
        r.estimate.cpu_cores, r.scan_cost, r.expected_rows, _intern(r.version), r.attempts,
        r.replaces_epoch_id, r.plan_id, r.admission,
    )


def encode_epoch(e: Epoch) -> bytes:
    """``Epoch`` → ``EpochRecord`` bytes (the value stored at ``epochs/<t>/<d>/<e>``)."""
    r = state_pb2.EpochRecord(
        tenant_id=e.tenant_id, dataset_id=e.dataset_id, state=int(e.state), scan_cost=e.scan_cost,
        expected_rows=e.rows, version=e.version, attempts=e.attempts, replaces_epoch_id=e.replaces,
        plan_id=e.plan_id, admission=e.admission,
    )
    r.info.epoch_id = e.epoch_id
    _set_ts(r.info.time_range.start_inclusive, e.start_ms)
    _set_ts(r.info.time_range.end_exclusive, e.end_ms)
    for k, v in e.dims:
        r.info.dimension_values[k] = v
    for t in e.history:
        h = r.history.add(from_state=int(t.from_state), to_state=int(t.to_state), reason=t.reason)
        _set_ts(h.at, t.at_ms)
    for x in e.replicas:
        r.replicas.add(worker_id=x.worker_id, state=x.state, plan_id=x.plan_id)
    r.estimate.memory_bytes = e.memory_bytes
    r.estimate.cpu_cores = e.cpu_cores
    return r.SerializeToString()


#: Arrow IPC schema bytes, interned: datasets of one shape share one bytes object (like interned ids).
_schemas: dict[bytes, bytes] = {}


def decode_dataset(raw: bytes) -> Dataset:
    """``DatasetRecord`` bytes → ``Dataset``."""
    r = state_pb2.DatasetRecord.FromString(raw)
    req = r.request
    schema = r.arrow_schema
    return Dataset(_intern(req.tenant_id), _intern(req.dataset_id), req, r.replication_factor, r.strategy,
                   _ts_ms(r.admitted_at), r.version, _schemas.setdefault(schema, schema),
                   _intern(r.schema_fingerprint), r.admission)


def encode_dataset(request: bytes, replication_factor: int, strategy: int, admitted_ms: int, version: str,
                   arrow_schema: bytes = b"", schema_fingerprint: str = "", admission: int = 0) -> bytes:
    """``DatasetRecord`` bytes for an admission; ``request`` is the serialized ``AdmitDatasetRequest``,
    kept whole because it is the LoadPlan's source; ``arrow_schema``/``schema_fingerprint`` are the
    source's table schema (``leibrix.domain._schema.TableSchema.ipc``/``.fingerprint``); ``admission``
    the generation whose epochs are all stored."""
    r = state_pb2.DatasetRecord(replication_factor=replication_factor, strategy=strategy, version=version,
                                arrow_schema=arrow_schema, schema_fingerprint=schema_fingerprint,
                                admission=admission)
    r.request.ParseFromString(request)
    _set_ts(r.admitted_at, admitted_ms)
    return r.SerializeToString()


def decode_tenant(raw: bytes) -> Tenant:
    """``TenantRecord`` bytes → ``Tenant`` (usage starts empty; ``ClusterState`` fills it)."""
    r = state_pb2.TenantRecord.FromString(raw)
    return Tenant(Quota.from_wire(r.quota), _ts_ms(r.updated_at))


def encode_tenant(quota: cp.TenantQuota, updated_ms: int) -> bytes:
    """``TenantRecord`` bytes for an upserted quota."""
    r = state_pb2.TenantRecord()
    r.quota.ParseFromString(bytes(quota))
    _set_ts(r.updated_at, updated_ms)
    return r.SerializeToString()


# ---------------------------------------------------------------- the model

#: ``(tenant, dataset, epoch)``: an epoch's identity (``Epoch.key``).
EpochKey = tuple[str, str, str]


def epoch_name(key: EpochKey) -> str:
    """The key as one string, ``"t/d/e"``: its etcd key below ``epochs/`` and ``heat/``, and its name in
    placement calls (ids never contain ``/``)."""
    return "/".join(key)


def parse_epoch_name(name: str) -> EpochKey:
    """The key named by ``epoch_name``."""
    t, d, e = name.split("/", 2)
    return (t, d, e)

EpochListener = Callable[["Epoch | None", "Epoch | None"], None]


class ClusterState:
    """Tenants, datasets and epochs with their indices and per-tenant usage, kept incrementally.

    Every mutation goes through ``put_*``/``delete_*`` (called for the leader's
    own committed writes and for every watched change), so the indices and
    the usage can never drift from the stored objects.

    **Uncommitted epochs.** An epoch whose ``admission`` generation is newer
    than its dataset record's (or whose dataset has no record) was written by
    an admission that has not stored its dataset record yet, or never will
    (its leader died between the transactions). Such an epoch is kept aside
    (:meth:`uncommitted`): not in ``epochs``, not indexed, not charged, not
    routed, and listeners never see it. The dataset record that reaches its
    generation brings every such epoch of the dataset in at once.
    """

    def __init__(self) -> None:
        self.tenants: dict[str, Tenant] = {}
        self.datasets: dict[tuple[str, str], Dataset] = {}
        self.epochs: dict[EpochKey, Epoch] = {}
        self.by_dataset: dict[tuple[str, str], dict[str, Epoch]] = {}
        self.by_worker: dict[str, set[EpochKey]] = {}
        self._usage: dict[str, Usage] = {}
        #: worker id -> [memory bytes, CPU cores] reserved by replicas of charged epochs
        self.reserved: dict[str, list[float]] = {}
        self.listeners: list[EpochListener] = []
        #: Revision of the last epoch change: the etcd revision when the change came through the Mirror
        #: (the same on every master), else one more than the previous.
        self.revision = 0
        #: ``"t/d/e"`` -> raw ``HeatRecord`` (the last heat checkpoint), kept warm by the Mirror on every master
        #: so a new leader seeds an epoch's heat from it on first use (decoded lazily, one epoch at a time).
        self.heat_records: Mapping[str, bytes] = {}
        self._epoch_table: Table[Epoch] | None = None
        #: (tenant, dataset) -> epoch id -> epoch of a generation its dataset has not committed.
        self._aside: dict[tuple[str, str], dict[str, Epoch]] = {}
        #: When each uncommitted epoch was last written, as ``time.monotonic()`` on this master.
        self._aside_at: dict[EpochKey, float] = {}

    # -- usage
    def usage(self, tenant_id: str) -> Usage:
        """The tenant's usage (kept even before its quota record arrives: budgets stay exact)."""
        u = self._usage.get(tenant_id)
        if u is None:
            u = self._usage[tenant_id] = Usage()
            t = self.tenants.get(tenant_id)
            if t is not None:
                t.usage = u
        return u

    def tenant_ids(self) -> Iterable[str]:
        """Every tenant that has a quota record or any dataset/epoch."""
        return self._usage.keys() | self.tenants.keys()

    def replication(self, e: Epoch) -> int:
        """Target replica count of an epoch: its dataset's replication factor (at least 1)."""
        ds = self.datasets.get((e.tenant_id, e.dataset_id))
        return max(1, ds.replication_factor) if ds is not None else max(1, len(e.replicas))

    def charge_of(self, e: Epoch) -> tuple[int, float]:
        """(memory bytes, CPU cores) an epoch charges to its tenant: per replica × target replicas."""
        n = self.replication(e)
        return e.memory_bytes * n, e.cpu_cores * n

    def _account(self, e: Epoch, sign: int) -> None:
        u = self.usage(e.tenant_id)
        if e.state in CHARGED:
            mem, cpu = self.charge_of(e)
            u.charge(sign * mem, sign * cpu, sign)
        elif e.state is State.PENDING:
            mem, cpu = self.charge_of(e)
            u.pending += sign
            u.pending_memory_bytes += sign * mem
            u.pending_cpu_cores += sign * cpu

    # -- tenants
    def put_tenant(self, t: Tenant) -> None:
        """Store a tenant (its usage object is kept across quota updates)."""
        t.usage = self.usage(t.quota.tenant_id)
        self.tenants[t.quota.tenant_id] = t

    def delete_tenant(self, tenant_id: str) -> None:
        """Forget a tenant's quota record (its datasets are deleted separately)."""
        self.tenants.pop(tenant_id, None)

    # -- datasets
    def put_dataset(self, d: Dataset, revision: int | None = None) -> None:
        """Store a dataset; a changed replication factor re-charges its epochs, and its uncommitted epochs
        of a generation the record has reached become part of it."""
        key = (d.tenant_id, d.dataset_id)
        old = self.datasets.get(key)
        epochs = list(self.by_dataset.get(key, {}).values())
        for e in epochs:
            self._account(e, -1)
        self.datasets[key] = d
        for e in epochs:
            self._account(e, +1)
        if old is None:
            self.usage(d.tenant_id).datasets += 1
        aside = self._aside.get(key)
        if aside:
            for e in [e for e in aside.values() if e.admission <= d.admission]:
                self.put_epoch(e, revision)

    def delete_dataset(self, tenant_id: str, dataset_id: str) -> None:
        """Forget a dataset record (its epochs are deleted separately)."""
        if self.datasets.pop((tenant_id, dataset_id), None) is not None:
            self.usage(tenant_id).datasets -= 1

    # -- epochs
    def _advance(self, revision: int | None) -> None:
        self.revision = self.revision + 1 if revision is None else max(self.revision, revision)

    def put_epoch(self, e: Epoch, revision: int | None = None) -> None:
        """Store (insert or replace) an epoch, updating indices, usage and listeners.

        ``revision`` is the etcd revision of the change, when it has one. An
        epoch of a generation its dataset has not committed is kept aside
        instead (see the class docstring); it replaces the stored epoch of the
        same key, which etcd no longer holds.
        """
        key = e.key
        ds = self.datasets.get(key[:2])
        if e.admission > (ds.admission if ds is not None else 0):
            self.delete_epoch(key, revision)
            self._aside.setdefault(key[:2], {})[key[2]] = e
            self._aside_at[key] = time.monotonic()
            return
        self._unaside(key)
        self._advance(revision)
        old = self.epochs.get(key)
        if old is not None:
            self._unindex(old)
            if e.heat is None:  # leader-local fields survive a re-decoded record
                e.heat = old.heat
                e.retry_at = old.retry_at
        self.epochs[key] = e
        self.by_dataset.setdefault((e.tenant_id, e.dataset_id), {})[e.epoch_id] = e
        charged = e.state in CHARGED
        for r in e.replicas:
            self.by_worker.setdefault(r.worker_id, set()).add(key)
            if charged and r.state != EVICTING:
                res = self.reserved.setdefault(r.worker_id, [0, 0.0])
                res[0] += e.memory_bytes
                res[1] += e.cpu_cores
        self._account(e, +1)
        for listener in self.listeners:
            listener(old, e)

    def _unaside(self, key: EpochKey) -> None:
        if self._aside_at.pop(key, None) is not None:
            aside = self._aside[key[:2]]
            del aside[key[2]]
            if not aside:
                del self._aside[key[:2]]

    def uncommitted(self, tenant_id: str, dataset_id: str) -> Iterable[Epoch]:
        """The dataset's epochs kept aside: written by an admission that has not committed (or never will)."""
        return self._aside.get((tenant_id, dataset_id), {}).values()

    def uncommitted_since(self, before: float) -> list[EpochKey]:
        """Keys of the uncommitted epochs last written before ``before`` (``time.monotonic()``)."""
        return [key for key, at in self._aside_at.items() if at < before]

    def delete_epoch(self, key: EpochKey, revision: int | None = None) -> None:
        """Remove an epoch (RETIRED epochs are deleted once their evictions are sent), or an uncommitted one."""
        self._unaside(key)
        old = self.epochs.pop(key, None)
        if old is None:
            return
        self._advance(revision)
        self._unindex(old)
        per = self.by_dataset.get(key[:2])
        if per is not None:
            per.pop(key[2], None)
            if not per:
                del self.by_dataset[key[:2]]
        for listener in self.listeners:
            listener(old, None)

    def _unindex(self, e: Epoch) -> None:
        self._account(e, -1)
        charged = e.state in CHARGED
        for r in e.replicas:
            if charged and r.state != EVICTING:
                res = self.reserved[r.worker_id]
                res[0] -= e.memory_bytes
                res[1] -= e.cpu_cores
            keys = self.by_worker.get(r.worker_id)
            if keys is not None:
                keys.discard(e.key)
                if not keys:
                    del self.by_worker[r.worker_id]

    def epoch_revision(self, key: EpochKey) -> int | None:
        """The etcd ``mod_revision`` of the epoch record as this model holds it (None: unknown or absent).

        A delete guarded by ``mod_revision == this`` cannot remove a record that
        was rewritten after the model read it (see ``leibrix.control._janitor``).
        """
        return self._epoch_table.mod_revision(epoch_name(key)) if self._epoch_table is not None else None

    def dataset_epochs(self, tenant_id: str, dataset_id: str) -> Iterable[Epoch]:
        """The epochs of one dataset (any state)."""
        return self.by_dataset.get((tenant_id, dataset_id), {}).values()

    # -- feeding from etcd
    def attach(self, mirror: Mirror) -> Table[state_pb2.RequestRecord]:
        """Register this model's tables on the ``Mirror`` (before it runs); returns the requests table.

        From then on every listed, watched or locally committed change of
        ``tenants/``, ``datasets/`` and ``epochs/`` reaches ``put_*``/``delete_*``;
        ``heat/`` checkpoints are kept raw in :attr:`heat_records`.
        """
        tenants = mirror.table(Keys.TENANTS, decode_tenant)
        tenants.on_change(lambda k, old, new: self.put_tenant(new) if new is not None else self.delete_tenant(k))
        datasets = mirror.table(Keys.DATASETS, decode_dataset)
        datasets.on_change(
            lambda k, old, new: self.put_dataset(new, datasets.changed_at) if new is not None
            else self.delete_dataset(*k.split("/", 1)))
        epochs = mirror.table(Keys.EPOCHS, decode_epoch)
        epochs.on_change(
            lambda k, old, new: self.put_epoch(new, epochs.changed_at) if new is not None
            else self.delete_epoch(parse_epoch_name(k), epochs.changed_at))
        self._epoch_table = epochs
        self.heat_records = mirror.table(Keys.HEAT, bytes)
        return mirror.table(Keys.REQUESTS, state_pb2.RequestRecord.FromString)
