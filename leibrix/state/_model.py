"""The in-memory model of tenants, datasets and epochs (objects and codecs: ``leibrix.state._records``).

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

import time
from collections.abc import Callable, Iterable, Mapping

from leibrix.domain._lifecycle import CHARGED, State
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import Keys, Mirror, Table
from leibrix.domain._tenants import Usage
from leibrix.state._records import (
    ASSIGNED,
    EVICTING,
    LOADED,
    Dataset,
    Epoch,
    EpochKey,
    Replica,
    Tenant,
    decode_dataset,
    decode_epoch,
    decode_tenant,
    encode_dataset,
    encode_epoch,
    encode_tenant,
    epoch_name,
    now_ms,
    parse_epoch_name,
)
from leibrix.state._wire import epoch_info, epoch_to_wire, fill_epoch_info

__all__ = [
    "ASSIGNED", "EVICTING", "LOADED", "ClusterState", "Dataset", "Epoch", "EpochKey", "EpochListener", "Replica",
    "Tenant", "decode_dataset", "decode_epoch", "decode_tenant", "encode_dataset", "encode_epoch",
    "encode_tenant", "epoch_info", "epoch_name", "epoch_to_wire", "fill_epoch_info", "now_ms", "parse_epoch_name",
]


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
        #: The datasets whose source is polled (a ``refresh_interval``): the leader's refresher walks only these.
        self.refreshing: set[tuple[str, str]] = set()
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
        if d.refresh_s:
            self.refreshing.add(key)
        else:
            self.refreshing.discard(key)
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
        self.refreshing.discard((tenant_id, dataset_id))

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
