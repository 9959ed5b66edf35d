"""Cluster state in etcd: the key layout, fenced writes, and the watched in-memory mirror.

Three pieces, one rule each:

* :class:`Keys` is the only place that spells a key (``/leibrix/<cluster>/...``).
* :class:`FencedWriter` (defined in :mod:`leibrix.store._writer`, re-exported
  here) is the only way the leader writes state: every transaction first
  compares the leader key's ``create_revision`` with the term's token, and
  commits are cut into transactions the etcd in use accepts (:class:`TxnLimits`).
* :class:`Mirror` is the in-memory copy of the whole cluster prefix that the
  leader *and* every follower keep: one consistent listing, then a watch from
  the next revision. Followers therefore start a term warm, and the leader
  applies its own commits at once (:meth:`Mirror.apply_local`) without waiting
  for the watch echo, which is recognised by ``mod_revision`` and dropped.
  Values are decoded once, with the fast upb ``_pb2`` classes, when they change.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Generic, TypeVar

import trio

from leibrix.store._etcd import (
    Compacted,
    Delete,
    EtcdClient,
    EtcdUnavailable,
    KeyValue,
    Put,
    WatchEvent,
)
from leibrix.store._writer import Atomic, Conflict, Fenced, FencedWriter, TxnLimits

__all__ = ["Atomic", "Conflict", "Fenced", "FencedWriter", "Keys", "Mirror", "Table", "TxnLimits"]

log = logging.getLogger(__name__)

T = TypeVar("T")

_PART = re.compile(r"[^/\x00]+")
#: Decodes between checkpoints while (re)loading or catching up, so one big
#: batch never holds the Trio loop (and the lease keepalive) for long.
_YIELD_EVERY = 2000
#: Pause before re-watching after etcd became unreachable.
_RETRY = 0.1


def _part(what: str, value: str) -> str:
    if not isinstance(value, str) or not _PART.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be a non-empty string without '/' or NUL")
    return value


class Keys:
    """The key layout of one cluster: ``/leibrix/<cluster>/<kind>/...``.

    The relative prefixes (``Keys.EPOCHS`` ...) are what :meth:`Mirror.table`
    takes; the methods build absolute keys. Every name part is checked (no
    ``/``, not empty) because a ``/`` inside a tenant id would silently alias
    another tenant's keys.
    """

    MASTERS = "masters/"
    TENANTS = "tenants/"
    DATASETS = "datasets/"
    EPOCHS = "epochs/"
    WORKERS = "workers/"
    REQUESTS = "requests/"
    HEAT = "heat/"

    def __init__(self, cluster: str) -> None:
        self.cluster = _part("cluster name", cluster)
        self.root = f"/leibrix/{cluster}/"

    @property
    def leader(self) -> str:
        """The election key; its create revision is the fencing token."""
        return self.root + "leader"

    def master(self, master_id: str) -> str:
        """``masters/<id>``: a master's record, attached to its lease (present while it lives)."""
        return self.root + self.MASTERS + _part("master id", master_id)

    def tenant(self, tenant_id: str) -> str:
        """``tenants/<t>``: the tenant's quota record."""
        return self.root + self.TENANTS + _part("tenant_id", tenant_id)

    def dataset(self, tenant_id: str, dataset_id: str) -> str:
        """``datasets/<t>/<d>``: an admitted dataset."""
        return self.datasets_of(tenant_id) + _part("dataset_id", dataset_id)

    def datasets_of(self, tenant_id: str) -> str:
        """Prefix of every dataset of one tenant."""
        return self.root + self.DATASETS + _part("tenant_id", tenant_id) + "/"

    def epoch(self, tenant_id: str, dataset_id: str, epoch_id: str) -> str:
        """``epochs/<t>/<d>/<e>``: one epoch's record."""
        return self.epochs_of(tenant_id, dataset_id) + _part("epoch_id", epoch_id)

    def epochs_of(self, tenant_id: str, dataset_id: str) -> str:
        """Prefix of every epoch of one dataset (a prefix delete drops them all)."""
        return (
            self.root
            + self.EPOCHS
            + _part("tenant_id", tenant_id)
            + "/"
            + _part("dataset_id", dataset_id)
            + "/"
        )

    def worker(self, worker_id: str) -> str:
        """``workers/<w>``: worker membership and drain state (never liveness ticks)."""
        return self.root + self.WORKERS + _part("worker_id", worker_id)

    def request(self, request_id: str) -> str:
        """``requests/<id>``: the answer given to a request, for idempotent retries."""
        return self.root + self.REQUESTS + _part("request_id", request_id)

    def heat(self, tenant_id: str, dataset_id: str, epoch_id: str) -> str:
        """``heat/<t>/<d>/<e>``: the last checkpoint of an epoch's access heat (a ``HeatRecord``).

        A separate prefix rather than a field of the epoch record: heat changes
        with every access report while the epoch record changes only on state
        transitions, so checkpoints never rewrite (or race with) the lifecycle
        record, and only epochs that were ever accessed have one.
        """
        return (self.root + self.HEAT + _part("tenant_id", tenant_id) + "/" + _part("dataset_id", dataset_id) + "/"
                + _part("epoch_id", epoch_id))


class Table(Mapping[str, T], Generic[T]):
    """A read-only, always-current view of one key prefix, decoded.

    Keys are the part after the prefix (``"t1/d1/e1"`` for an epoch). Register
    ``on_change(callback)`` to be told ``(key, old, new)`` synchronously on every
    change (``old`` None: created; ``new`` None: deleted), e.g. to maintain an
    index. Callbacks run inside the mirror's task: keep them quick and non-blocking.
    Inside a callback, :attr:`changed_at` is the etcd revision of the change
    (the same on every master that applies it).
    """

    def __init__(self, prefix: str, decode: Callable[[bytes], T]) -> None:
        self.prefix = prefix
        self._decode = decode
        self._values: dict[str, T] = {}
        self._revisions: dict[str, int] = {}
        self._callbacks: list[Callable[[str, T | None, T | None], None]] = []
        #: etcd revision of the change being reported to the callbacks (0 before the first).
        self.changed_at = 0

    def __getitem__(self, key: str) -> T:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __contains__(self, key: object) -> bool:
        return key in self._values

    def mod_revision(self, key: str) -> int | None:
        """Revision of the last write of ``key`` the mirror has applied (None: absent)."""
        return self._revisions.get(key)

    def on_change(self, callback: Callable[[str, T | None, T | None], None]) -> None:
        """Call ``callback(key, old, new)`` after each change of this table."""
        self._callbacks.append(callback)

    # -- mutation, by the Mirror only -------------------------------------------

    def _put(self, key: str, raw: bytes, revision: int) -> bool:
        if self._revisions.get(key, 0) >= revision:
            return False
        try:
            value = self._decode(raw)
        except Exception:
            log.exception(
                "cannot decode %s%s at revision %d; keeping the previous value", self.prefix, key, revision
            )
            return False
        old = self._values.get(key)
        self._values[key] = value
        self._revisions[key] = revision
        self.changed_at = revision
        for callback in self._callbacks:
            callback(key, old, value)
        return True

    def _delete(self, key: str, revision: int) -> None:
        current = self._revisions.get(key)
        if current is None or current >= revision:
            return
        old = self._values.pop(key)
        del self._revisions[key]
        self.changed_at = revision
        for callback in self._callbacks:
            callback(key, old, None)


class Mirror:
    """The watched in-memory copy of ``/leibrix/<cluster>/`` (leader and followers alike).

    Register tables with :meth:`table` before :meth:`run`. ``run`` lists the
    prefix once at one revision, reports started, then applies the watch from
    the next revision; if etcd compacted the history it needs, it re-lists and
    applies only the difference (unchanged keys are not decoded again). Every
    change is applied at most once, ordered by ``mod_revision``: the leader's
    own :meth:`apply_local` and the later watch echo of the same write meet
    idempotently, and deletes leave a short-lived tombstone so a lagging watch
    cannot resurrect a key the leader already removed.

    :attr:`revision` is the etcd revision the watch has delivered up to;
    :meth:`wait_for` blocks until it reaches a given revision (e.g. one returned
    by a write made through the leader).
    """

    def __init__(self, client: EtcdClient, keys: Keys) -> None:
        self._client = client
        self.keys = keys
        self._tables: list[tuple[str, Table[object]]] = []
        self._deleted: dict[str, int] = {}
        self._deleted_prefixes: list[tuple[str, int]] = []
        self.revision = 0
        #: The newest revision whose change the tables hold from the listing or the watch (ahead of
        #: :attr:`revision` while a batch is being applied).
        self._applied = 0
        self._advanced = trio.Event()
        self._running = False

    def table(self, prefix: str, decode: Callable[[bytes], T]) -> Table[T]:
        """A table over ``keys.root + prefix`` (e.g. ``Keys.EPOCHS``) decoding values with ``decode``."""
        if self._running:
            raise RuntimeError("register tables before Mirror.run() starts")
        absolute = self.keys.root + prefix
        for other, _ in self._tables:
            if absolute.startswith(other) or other.startswith(absolute):
                raise ValueError(f"table prefix {prefix!r} overlaps {other[len(self.keys.root):]!r}")
        table: Table[T] = Table(prefix, decode)
        self._tables.append((absolute, table))  # type: ignore[arg-type]
        return table

    def _route(self, key: str) -> tuple[Table[object], str] | None:
        for prefix, table in self._tables:
            if key.startswith(prefix):
                return table, key[len(prefix) :]
        return None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """List, report started, then follow the watch forever (until cancelled).

        etcd being unreachable is ridden out by retrying; a compacted history
        triggers a re-list. Callers that need the mirror current start it with
        ``await nursery.start(mirror.run)``.
        """
        self._running = True
        await self._relist()
        task_status.started()
        while True:
            try:
                async with self._client.watch_prefix(
                    self.keys.root, start_revision=self.revision + 1
                ) as stream:
                    async for batch in stream:
                        await self._apply_events(batch)
            except Compacted:
                log.info("mirror: watch history compacted at revision %d; re-listing", self.revision)
                await self._relist()
            except EtcdUnavailable as exc:
                log.info("mirror: etcd unavailable (%s); re-watching from %d", exc, self.revision + 1)
                await trio.sleep(_RETRY)

    async def _relist(self) -> None:
        while True:
            try:
                kvs, revision = await self._client.get_prefix(self.keys.root)
                break
            except EtcdUnavailable as exc:
                log.info("mirror: cannot list (%s); retrying", exc)
                await trio.sleep(_RETRY)
        await self._load(kvs, revision)

    async def _load(self, kvs: list[KeyValue], revision: int) -> None:
        """Make the tables equal the listing at ``revision``, touching only what differs."""
        relist = any(table._revisions for _, table in self._tables)
        for done, kv in enumerate(kvs, 1):
            routed = self._route(kv.key)
            if routed is not None:
                table, rest = routed
                if not self._is_tombstoned(kv.key, kv.mod_revision):
                    table._put(rest, kv.value, kv.mod_revision)
            if done % _YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
        if relist:
            present = {kv.key for kv in kvs}
            for prefix, table in self._tables:
                for rest in [r for r, rev in table._revisions.items() if rev <= revision]:
                    if prefix + rest not in present:
                        # Gone from the snapshot and not written by us after it.
                        table._delete(rest, revision)
        self._applied = max(self._applied, revision)
        self._advance(revision)

    def _is_tombstoned(self, key: str, revision: int) -> bool:
        if not self._deleted and not self._deleted_prefixes:
            return False
        if self._deleted.get(key, 0) >= revision:
            return True
        return any(key.startswith(p) and rev >= revision for p, rev in self._deleted_prefixes)

    async def _apply_events(self, batch: list[WatchEvent]) -> None:
        for done, ev in enumerate(batch, 1):
            self._applied = max(self._applied, ev.kv.mod_revision)
            routed = self._route(ev.kv.key)
            if routed is not None:
                table, rest = routed
                if ev.kind == "put":
                    if not self._is_tombstoned(ev.kv.key, ev.kv.mod_revision):
                        table._put(rest, ev.kv.value, ev.kv.mod_revision)
                else:
                    table._delete(rest, ev.kv.mod_revision)
            if done % _YIELD_EVERY == 0:
                await trio.lowlevel.checkpoint()
        self._advance(max(ev.kv.mod_revision for ev in batch))

    def _advance(self, revision: int) -> None:
        if revision <= self.revision:
            return
        self.revision = revision
        if self._deleted:
            self._deleted = {k: r for k, r in self._deleted.items() if r > revision}
        if self._deleted_prefixes:
            self._deleted_prefixes = [(p, r) for p, r in self._deleted_prefixes if r > revision]
        self._advanced.set()
        self._advanced = trio.Event()

    async def wait_for(self, revision: int) -> None:
        """Return once the watch has delivered everything up to ``revision``."""
        while self.revision < revision:
            await self._advanced.wait()

    def apply_local(self, ops: Sequence[Put | Delete], revision: int) -> None:
        """Apply the leader's own committed ``ops`` (written at ``revision``) right away.

        Idempotent with the watch: the echo of these writes carries the same
        ``mod_revision`` and is skipped; older events that arrive later are
        skipped too. A commit whose answer comes after the watch has already
        delivered its revision changes nothing: the tables hold that write and
        whatever followed it (a later delete of the same key included, which
        the late answer must not undo). Does not move :attr:`revision` (the
        watch has not necessarily delivered other writers' changes up to here).
        """
        if revision <= self._applied:
            return
        for op in ops:
            if isinstance(op, Put):
                routed = self._route(op.key)
                if routed is not None:
                    routed[0]._put(routed[1], op.value, revision)
            elif op.prefix:
                if revision > self.revision:
                    self._deleted_prefixes.append((op.key, revision))
                for prefix, table in self._tables:
                    if prefix.startswith(op.key):
                        doomed = list(table._revisions)
                    elif op.key.startswith(prefix):
                        rest = op.key[len(prefix) :]
                        doomed = [r for r in table._revisions if r.startswith(rest)]
                    else:
                        continue
                    for r in doomed:
                        table._delete(r, revision)
            else:
                if revision > self.revision:
                    self._deleted[op.key] = revision
                routed = self._route(op.key)
                if routed is not None:
                    routed[0]._delete(routed[1], revision)
