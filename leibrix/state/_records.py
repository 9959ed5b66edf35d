"""Tenants, datasets, epochs and replicas as the model holds them, and their codecs to the etcd records.

Records are decoded with the upb ``state_pb2`` classes (about 100× faster
than betterproto), once per change, never re-decoded. ``Epoch`` and
``Replica`` are ``__slots__`` objects with ints/floats/tuples, ids and labels
are interned (a tenant id is one string shared by all its epochs) and
dimension values are a tuple of pairs: a few hundred bytes per epoch instead
of a protobuf object graph. ``leibrix.state._model`` re-exports everything
here with the ``ClusterState`` that indexes them.

**Sealed credentials.** The dataset record keeps the admitted request whole,
and its catalog URI/DSN may carry an inline password. When a
:class:`~leibrix.domain._sealing.Keyring` is in use (:func:`use_keyring`,
called by the master's composition root), :func:`encode_dataset` seals those
passwords with the keyring's first key (``${sealed:<key id>:...}``, bound to
``tenant/dataset``) and :func:`decode_dataset` unseals them, so the model, the
API (which redacts) and the LoadPlans see the request as admitted while etcd,
its snapshots and its WAL hold only ciphertext. Every write seals with the
current first key, so after a rotation a record moves to the new key the next
time it is written (``Dataset.sealed_with`` says which keys a stored record
names). A record whose key this process lacks still decodes: its request keeps
the sealed references, ``Dataset.secrets_error`` says why, and an error is
logged; nothing that reads the model crashes, and a load of it fails at the
worker naming the missing key. Epoch records hold planned reads (file paths,
SQL and parameters), never a connection string, and are not sealed.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import NamedTuple

from leibrix.domain import _epochs
from leibrix.domain._lifecycle import State, Transition
from leibrix.domain._sealing import Keyring, SealedSecretError, seal_source, sealed_key_ids, unseal_source
from leibrix.domain._tenants import Quota, Usage
from leibrix.domain._validation import fingerprint
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2

__all__ = [
    "ASSIGNED", "EVICTING", "LOADED", "Dataset", "Epoch", "EpochKey", "Replica", "Tenant", "decode_dataset",
    "decode_epoch", "decode_tenant", "encode_dataset", "encode_epoch", "encode_tenant", "epoch_name", "now_ms",
    "parse_epoch_name", "secrets_keyring", "use_keyring",
]

log = logging.getLogger(__name__)

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
    """One epoch of one dataset: window, dimensions, lifecycle state, replicas, what to read and its sizes.

    ``memory_bytes``/``cpu_cores`` are what one replica is charged: the
    memory is ``planned_bytes`` (the admission's estimate) until a load is
    validated, then the bytes the worker measured. ``rows`` is the expected
    row count, exact when ``rows_exact``; ``read`` the serialized wire
    ``ReadPlan`` planned from the source (empty: none), ``source_bytes`` the
    epoch's bytes on the source and ``schema`` the fingerprint of the schema
    it loads with (empty: its dataset's). ``replaces`` names the epoch a
    refresh swaps out.
    ``admission`` is the generation of the admission that wrote it (see
    ``ClusterState``: the epoch belongs to its dataset once the dataset
    record's generation has reached it). ``heat`` and ``retry_at`` are
    leader-local (never persisted).
    """

    __slots__ = (
        "tenant_id", "dataset_id", "epoch_id", "start_ms", "end_ms", "dims", "state", "_history", "replicas",
        "memory_bytes", "cpu_cores", "scan_cost", "rows", "version", "attempts", "replaces", "plan_id",
        "admission", "read", "rows_exact", "source_bytes", "planned_bytes", "schema", "heat", "retry_at",
    )

    def __init__(
        self, tenant_id: str, dataset_id: str, epoch_id: str, start_ms: int, end_ms: int,
        dims: tuple[tuple[str, str], ...], state: State, history: tuple[Transition, ...],
        replicas: tuple[Replica, ...], memory_bytes: int, cpu_cores: float, scan_cost: float, rows: int,
        version: str, attempts: int = 0, replaces: str = "", plan_id: str = "", admission: int = 0,
        read: bytes = b"", rows_exact: bool = False, source_bytes: int = 0, planned_bytes: int | None = None,
        schema: str = "",
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
        self.read = read
        self.rows_exact = rows_exact
        self.source_bytes = source_bytes
        self.planned_bytes = memory_bytes if planned_bytes is None else planned_bytes
        self.schema = schema
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
    against the fingerprint. ``retained_schemas`` (fingerprint → IPC bytes)
    keeps the schemas of live epochs planned before the source's schema
    changed, so their reloads still carry their own. ``version`` is the
    source version the last admission resolved (an Iceberg snapshot id).

    ``admission`` is the generation of its last admission whose epochs are
    all stored (``leibrix.control._admission``): epochs of a newer generation
    are not part of it yet.
    """

    __slots__ = ("tenant_id", "dataset_id", "request", "replication_factor", "strategy", "retention",
                 "admitted_ms", "version", "granularity", "time_column", "arrow_schema", "schema_fingerprint",
                 "admission", "retained_schemas", "sealed_with", "secrets_error", "refresh_s")

    def __init__(self, tenant_id: str, dataset_id: str, request: state_pb2.AdmitDatasetRequest,
                 replication_factor: int, strategy: int, admitted_ms: int, version: str,
                 arrow_schema: bytes = b"", schema_fingerprint: str = "", admission: int = 0,
                 retained_schemas: Mapping[str, bytes] | None = None) -> None:
        self.tenant_id = tenant_id
        self.dataset_id = dataset_id
        self.request = request
        self.replication_factor = replication_factor
        self.strategy = strategy
        self.retention = request.retention_epochs
        #: Seconds between polls of its source (the request's ``refresh_interval``; 0: never polled).
        self.refresh_s = request.refresh_interval.seconds + request.refresh_interval.nanos / 1e9
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
        self.retained_schemas = dict(retained_schemas or {})
        #: Ids of the secrets keys that sealed the stored record's credentials (empty: none sealed).
        self.sealed_with: frozenset[str] = frozenset()
        #: Why the stored record's credentials could not be unsealed here ("" when they were, or none were sealed).
        self.secrets_error = ""

    def schema_ipc(self, fingerprint: str) -> bytes:
        """The IPC bytes of the schema ``fingerprint`` names (empty: the current one); b"" if unknown."""
        if not fingerprint or fingerprint == self.schema_fingerprint:
            return self.arrow_schema
        return self.retained_schemas.get(fingerprint, b"")

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
        r.replaces_epoch_id, r.plan_id, r.admission, r.read_plan, r.rows_exact, r.source_bytes,
        r.planned_memory_bytes or r.estimate.memory_bytes, _intern(r.schema_fingerprint),
    )


def encode_epoch(e: Epoch) -> bytes:
    """``Epoch`` → ``EpochRecord`` bytes (the value stored at ``epochs/<t>/<d>/<e>``)."""
    r = state_pb2.EpochRecord(
        tenant_id=e.tenant_id, dataset_id=e.dataset_id, state=int(e.state), scan_cost=e.scan_cost,
        expected_rows=e.rows, version=e.version, attempts=e.attempts, replaces_epoch_id=e.replaces,
        plan_id=e.plan_id, admission=e.admission, read_plan=e.read, rows_exact=e.rows_exact,
        source_bytes=e.source_bytes, planned_memory_bytes=e.planned_bytes, schema_fingerprint=e.schema,
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


#: The keyring this master seals dataset records with (see the module docstring). A context variable, so each
#: in-process master (tests run several) seals with its own: set in the master's task before it starts its
#: children, it is what every task of that master sees.
_KEYRING: ContextVar[Keyring | None] = ContextVar("leibrix_secrets_keyring", default=None)


def use_keyring(keyring: Keyring | None) -> None:
    """Seal and unseal dataset records with ``keyring`` (None: store credentials as given) in this task and
    the tasks it starts from now on."""
    _KEYRING.set(keyring)


def secrets_keyring() -> Keyring | None:
    """The keyring in use here (None: none)."""
    return _KEYRING.get()


#: Catalog kind -> the field holding its connection string.
_CATALOG_FIELDS = {"iceberg": "uri", "starrocks": "dsn", "jdbc": "uri"}


def _map_catalog(request: state_pb2.AdmitDatasetRequest, change: Callable[[str], str]) -> None:
    """Replace the request's catalog URI/DSN by ``change(it)`` (in place)."""
    catalog = request.source.catalog
    kind = catalog.WhichOneof("catalog_type")
    attr = _CATALOG_FIELDS.get(kind or "")
    if attr is not None:
        part = getattr(catalog, kind)
        old = getattr(part, attr)
        new = change(old)
        if new != old:
            setattr(part, attr, new)


def _context(request: state_pb2.AdmitDatasetRequest) -> bytes:
    return f"{request.tenant_id}/{request.dataset_id}".encode()


#: Arrow IPC schema bytes, interned: datasets of one shape share one bytes object (like interned ids).
_schemas: dict[bytes, bytes] = {}


def decode_dataset(raw: bytes) -> Dataset:
    """``DatasetRecord`` bytes → ``Dataset``."""
    r = state_pb2.DatasetRecord.FromString(raw)
    req = r.request
    sealed: set[str] = set()
    error = ""
    if b"${sealed:" in raw:
        _map_catalog(req, lambda text: sealed.update(sealed_key_ids(text)) or text)
        try:
            _map_catalog(req, lambda text: unseal_source(text, _KEYRING.get(), _context(req)))
        except SealedSecretError as exc:
            error = f"source credentials cannot be unsealed: {exc}"
            log.error("dataset %s/%s: %s; its loads fail until the key is configured", req.tenant_id,
                      req.dataset_id, error)
    schema = r.arrow_schema
    ds = Dataset(_intern(req.tenant_id), _intern(req.dataset_id), req, r.replication_factor, r.strategy,
                 _ts_ms(r.admitted_at), r.version, _schemas.setdefault(schema, schema),
                 _intern(r.schema_fingerprint), r.admission, dict(r.retained_schemas))
    if sealed:
        ds.sealed_with = frozenset(sealed)
        ds.secrets_error = error
    return ds


def encode_dataset(request: bytes, replication_factor: int, strategy: int, admitted_ms: int, version: str,
                   arrow_schema: bytes = b"", schema_fingerprint: str = "", admission: int = 0,
                   retained_schemas: Mapping[str, bytes] | None = None) -> bytes:
    """``DatasetRecord`` bytes for an admission; ``request`` is the serialized ``AdmitDatasetRequest``,
    kept whole because it is the LoadPlan's source; ``arrow_schema``/``schema_fingerprint`` are the
    source's table schema (Arrow IPC bytes and ``leibrix.domain._schema.fingerprint``), ``retained_schemas``
    those of live epochs planned under an earlier one; ``admission`` the generation whose epochs are all
    stored. With a keyring in use (:func:`use_keyring`) the catalog URI/DSN's inline secrets are stored
    sealed with its first key."""
    r = state_pb2.DatasetRecord(replication_factor=replication_factor, strategy=strategy, version=version,
                                arrow_schema=arrow_schema, schema_fingerprint=schema_fingerprint,
                                admission=admission)
    r.retained_schemas.update(retained_schemas or {})
    r.request.ParseFromString(request)
    keyring = _KEYRING.get()
    if keyring is not None:
        _map_catalog(r.request, lambda text: seal_source(text, keyring, _context(r.request)))
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
