"""The three placement strategies behind the one ``Strategy`` protocol, and ``make_strategy``.

kube-scheduler style: admission calls ``strategy.place(items, workers)`` and
never names a class; configuration picks the implementation by name. All
three share the same rules (validated in ``_specs``): an item never lands on a
worker without room for its memory and cpu, replicas of one item go to
distinct workers and, as far as room allows, distinct zones; an item gets all
its missing replicas or none, and unplaceable items come back with a reason.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import _check
from ._backend import core
from ._ring import HashRing, _weight_of
from ._specs import Problem, problem, too_few_reason, zone_ids
from ._types import ItemSpec, Placement, Strategy, WorkerSpec


def _fmt_bytes(n: int) -> str:
    return f"{n} B"


def _remap(out: np.ndarray, table: np.ndarray) -> np.ndarray:
    """``table[out]`` where ``out >= 0`` (unplaced entries stay -1)."""
    mapped = np.full(len(out), -1, dtype=np.int64)
    ok = out >= 0
    mapped[ok] = table[out[ok]]
    return mapped


def _collect(p: Problem, b, out, out_ptr, status, reason_of) -> Placement:
    """Turn the core's arrays into a ``Placement`` (ids, not indices)."""
    assignments: dict[str, tuple[str, ...]] = {}
    unplaceable: dict[str, str] = {}
    ids = np.array([w.id for w in p.workers] + [""], dtype=object)
    new_ids = ids[out].tolist() if out is not None and len(out) else []  # -1 -> ""
    bounds = out_ptr.tolist() if out_ptr is not None else [0] * (len(p.items) + 1)
    need = p.need.tolist()
    ok = (status == b.OK).tolist()
    if all(ok) and all(need) and not any(p.holders):  # the common case, in bulk
        rows = [tuple(new_ids[a:z]) for a, z in zip(bounds, bounds[1:])]
        return Placement(assignments=dict(zip([it.key for it in p.items], rows)), unplaceable={})
    for i, item in enumerate(p.items):
        holders = p.holders[i]
        if need[i] == 0:
            assignments[item.key] = tuple(holders[: item.replicas])
        elif ok[i]:
            new = new_ids[bounds[i]: bounds[i + 1]]
            assignments[item.key] = tuple(holders + new) if holders else tuple(new)
        else:
            unplaceable[item.key] = reason_of(i)
    return Placement(assignments=assignments, unplaceable=unplaceable)


def _too_big_reason(item: ItemSpec, max_mem: int, max_cpu: float) -> str | None:
    """The reason when one replica exceeds the free memory or cpu of every worker, else None."""
    if max_mem < item.memory_bytes:
        return (f"memory: needs {_fmt_bytes(item.memory_bytes)} per replica, "
                f"the most free on any worker is {_fmt_bytes(max(int(max_mem), 0))}")
    if max_cpu < item.cpu_cores:
        return (f"cpu: needs {item.cpu_cores} cores per replica, "
                f"the most free on any worker is {max(float(max_cpu), 0.0)}")
    return None


def _screen(p: Problem, eligible: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, float]:
    """Items no eligible worker can ever hold (one replica is larger than any free space).

    Free space only shrinks during a call, so such items are reported up front
    instead of walking the whole ring (or worker list) for each of them: with
    a full cluster that is the difference between O(items) and O(items x vnodes).
    Returns ``(need for the core, hopeless mask, max free memory, max free cpu)``.
    """
    max_mem = int(p.free_mem[eligible].max()) if eligible.any() else -1
    max_cpu = float(p.free_cpu[eligible].max()) if eligible.any() else -1.0
    item_of = np.repeat(np.arange(len(p.items)), np.diff(p.excl_ptr))
    held = np.bincount(item_of, weights=eligible[p.excl], minlength=len(p.items)) if len(p.excl) else 0
    too_few = p.need > int(eligible.sum()) - held
    hopeless = (p.need > 0) & ~too_few & ((p.mem > max_mem) | (p.cpu > max_cpu))
    return np.where(hopeless, 0, p.need).astype(np.int32), hopeless, max_mem, max_cpu


def _walk_reason(p: Problem, b, status, counts, screened, *, capped: bool):
    """Reasons for the walk-based strategies (round-robin, hash)."""
    _, hopeless, max_mem, max_cpu = screened

    def reason(i: int) -> str:
        item, need = p.items[i], int(p.need[i])
        if hopeless[i]:
            return _too_big_reason(item, max_mem, max_cpu)  # type: ignore[return-value]
        if status[i] == b.TOO_FEW_WORKERS:
            return too_few_reason(item, len(p.holders[i]), need, int(counts[i, 0]))
        found, n_mem, n_cpu, n_cap = (int(x) for x in counts[i])
        blockers = [f"{n_mem} lack memory", f"{n_cpu} lack cpu"]
        if capped:
            blockers.append(f"{n_cap} are at the bounded-load cap")
        resource = "+".join(
            name for name, n in (("memory", n_mem), ("cpu", n_cpu), ("bounded-load", n_cap)) if n
        ) or "zone"
        return (
            f"{resource}: needs {_fmt_bytes(item.memory_bytes)} memory and {item.cpu_cores} cpu cores "
            f"on {need} distinct worker(s), only {found} have room; of the other workers "
            + ", ".join(blockers)
        )

    return reason


class RoundRobinStrategy:
    """Deterministic round-robin over the workers sorted by id, resumable from ``cursor``.

    Each replica goes to the next worker from the cursor that has room and
    is not already used by the item (a new zone preferred); the cursor then
    moves past the last worker taken. Persist ``cursor`` to resume the rotation.
    """

    name = "round_robin"

    def __init__(self, *, cursor: int = 0, backend: str = "native") -> None:
        self.cursor = _check.integer("cursor", cursor)
        self._b = core(backend)

    def place(self, items: Sequence[ItemSpec], workers: Sequence[WorkerSpec], *,
              existing: Mapping[str, Sequence[str]] | None = None) -> Placement:
        """Place the items' missing replicas in rotation (see the class docstring)."""
        p = problem(items, workers, existing)
        n = len(p.workers)
        screened = _screen(p, np.ones(n, dtype=bool))
        out, out_ptr, status, counts, cursor = self._b.place_walk(
            np.arange(n, dtype=np.int32), np.zeros(0, dtype=np.int64), self.cursor % n if n else 0,
            zone_ids([w.zone for w in p.workers]), np.zeros(0, dtype=np.uint8),
            p.mem, p.cpu, screened[0], p.excl_ptr, p.excl, p.free_mem, p.free_cpu, None, None,
        )
        self.cursor = int(cursor)
        status[screened[1]] = self._b.NO_ROOM
        return _collect(p, self._b, out, out_ptr, status,
                        _walk_reason(p, self._b, status, counts, screened, capped=False))


class HashStrategy:
    """Consistent hashing: an item's replicas are the first workers with room clockwise from its key.

    The ring is kept between calls and updated incrementally (add / remove /
    set_weight), so a changed worker set moves only the items it must. With
    ``bounded_load_epsilon`` a worker also takes at most
    ``ceil((1+eps) * replicas * vnode share)`` of the replicas in the call
    (existing holdings of these items included).
    """

    name = "hash"

    def __init__(self, *, vnodes: int = 160, bounded_load_epsilon: float | None = None,
                 backend: str = "native") -> None:
        self._vnodes = _check.integer("vnodes", vnodes, minimum=1)
        if bounded_load_epsilon is not None:
            bounded_load_epsilon = _check.real("bounded_load_epsilon", bounded_load_epsilon)
            if bounded_load_epsilon <= 0:
                raise ValueError(f"bounded_load_epsilon must be > 0, got {bounded_load_epsilon}")
        self.bounded_load_epsilon = bounded_load_epsilon
        self._backend = backend
        core(backend)
        self._ring: HashRing | None = None
        self._known: dict[str, WorkerSpec] = {}

    def _sync(self, workers: list[WorkerSpec]) -> HashRing:
        """Bring the ring in line with ``workers`` by incremental updates."""
        if self._ring is None:
            self._ring = HashRing(workers, vnodes=self._vnodes, backend=self._backend)
        else:
            now = {w.id: w for w in workers}
            for wid in [w for w in self._known if w not in now]:
                self._ring.remove(wid)
            for w in workers:
                old = self._known.get(w.id)
                if old is None:
                    self._ring.add(w)
                elif old.zone != w.zone:
                    self._ring.remove(w.id)
                    self._ring.add(w)
                elif _weight_of(old) != _weight_of(w):
                    self._ring.set_weight(w.id, _weight_of(w))
        self._known = {w.id: w for w in workers}
        return self._ring

    def place(self, items: Sequence[ItemSpec], workers: Sequence[WorkerSpec], *,
              existing: Mapping[str, Sequence[str]] | None = None) -> Placement:
        """Place the items' missing replicas on the ring (see the class docstring)."""
        p = problem(items, workers, existing)
        b = core(self._backend)
        ring = self._sync(p.workers)
        screened = _screen(p, np.array([ring.vnodes(w.id) > 0 for w in p.workers], dtype=bool))
        if ring.empty:
            # no worker with a positive weight: nothing is eligible
            counts = np.zeros((len(p.items), 4), dtype=np.int32)
            status = np.where(p.need > 0, b.TOO_FEW_WORKERS, b.OK).astype(np.int8)
            return _collect(p, b, None, None, status, _walk_reason(p, b, status, counts, screened, capped=False))
        # per-worker arrays re-indexed by ring slot
        slot = np.array([ring.slot_of(w.id) for w in p.workers], dtype=np.int64)
        free_mem = np.zeros(ring.slots, dtype=np.int64)
        free_cpu = np.zeros(ring.slots, dtype=np.float64)
        free_mem[slot], free_cpu[slot] = p.free_mem, p.free_cpu
        excl = slot[p.excl].astype(np.int32) if len(p.excl) else p.excl
        load = cap = None
        if self.bounded_load_epsilon is not None:
            load = np.bincount(excl, minlength=ring.slots).astype(np.int64)
            cap = ring.load_caps(self.bounded_load_epsilon, int(load.sum() + screened[0].sum()))
        hashes = b.hash_keys([it.key for it in p.items], 0)
        out, out_ptr, status, counts, _ = ring._walk(
            hashes, screened[0], mem=p.mem, cpu=p.cpu, free_mem=free_mem, free_cpu=free_cpu,
            load=load, cap=cap, excl_ptr=p.excl_ptr, excl=excl,
        )
        index_of_slot = np.full(ring.slots, -1, dtype=np.int64)
        index_of_slot[slot] = np.arange(len(p.workers))
        out = _remap(out, index_of_slot)
        status[screened[1]] = b.NO_ROOM
        return _collect(p, b, out, out_ptr, status,
                        _walk_reason(p, b, status, counts, screened, capped=load is not None))


class CapacityStrategy:
    """Capacity-aware vector packing: best-fit decreasing in (memory, cpu).

    Shares are relative to the largest worker capacities ``M`` and ``C``: an
    item is ``(mem / M, cpu / C)``, its size the larger of the two (its
    dominant share), and it is cpu-heavy when the cpu share is the larger.
    Items go largest first, memory- and cpu-heavy ones interleaved. Workers
    already in use are filled before an idle one is opened (as bins in bin
    packing). Among them a cpu-heavy replica goes to the worker with the
    least memory left that fits it, a memory-heavy one to the worker with the
    least cpu left (complementary best fit, on a 64 x 64 square-root grid whose
    cells are guaranteed to fit); when the item is within one grid step of
    what is left, the first worker (by zone, then id) with both resources free
    takes it. Memory and cpu fill together, whole workers stay free for big
    items. O(zones x 64 + log workers) per replica, independent of the number
    of items.
    """

    name = "capacity"

    def __init__(self, *, backend: str = "native") -> None:
        self._b = core(backend)

    def place(self, items: Sequence[ItemSpec], workers: Sequence[WorkerSpec], *,
              existing: Mapping[str, Sequence[str]] | None = None) -> Placement:
        """Pack the items' missing replicas (see the class docstring)."""
        p = problem(items, workers, existing)
        # order workers by group: named zones (sorted), then the zoneless group
        zones = sorted({w.zone for w in p.workers if w.zone is not None})
        gidx = {z: g for g, z in enumerate(zones)}
        zoneless = len(zones) if any(w.zone is None for w in p.workers) else -1
        group = np.array([gidx[w.zone] if w.zone is not None else zoneless for w in p.workers],
                         dtype=np.int32)
        order = np.argsort(group, kind="stable")  # workers are id-sorted already
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        n_groups = len(zones) + (zoneless >= 0)
        group_ptr = np.searchsorted(group[order], np.arange(n_groups + 1)).astype(np.int64)
        mhat = float(max((w.memory_bytes for w in p.workers), default=0)) or 1.0
        chat = float(max((w.cpu_cores for w in p.workers), default=0.0)) or 1.0
        free_mem = p.free_mem[order].copy()
        free_cpu = p.free_cpu[order].copy()
        in_use = np.array([w.used_memory_bytes > 0 or w.used_cpu_cores > 0 for w in p.workers],
                          dtype=np.uint8)[order]
        out, out_ptr, status, found, max_mem, max_cpu = self._b.pack(
            free_mem, free_cpu, in_use, np.ascontiguousarray(group[order]), group_ptr, zoneless, mhat, chat,
            p.mem, p.cpu, p.need, p.excl_ptr, inv[p.excl].astype(np.int32) if len(p.excl) else p.excl,
        )
        out = _remap(out, order)

        def reason(i: int) -> str:
            item, need = p.items[i], int(p.need[i])
            if status[i] == self._b.TOO_FEW_WORKERS:
                return too_few_reason(item, len(p.holders[i]), need, int(found[i]))
            too_big = _too_big_reason(item, int(max_mem[i]), float(max_cpu[i]))
            if too_big:
                return too_big
            return (f"memory+cpu: needs {_fmt_bytes(item.memory_bytes)} and {item.cpu_cores} cores on "
                    f"{need} distinct worker(s), only {int(found[i])} have both free")

        return _collect(p, self._b, out, out_ptr, status, reason)


_STRATEGIES = {"round_robin": RoundRobinStrategy, "hash": HashStrategy, "capacity": CapacityStrategy}
STRATEGY_NAMES = tuple(_STRATEGIES)


def make_strategy(name: str, **options) -> Strategy:
    """The strategy called ``name``, configured by ``options``.

    Parameters
    ----------
    name : {"round_robin", "hash", "capacity"}
    **options
        round_robin: ``cursor`` (int, resume point; read ``.cursor`` after
        ``place`` to persist it). hash: ``vnodes`` (int), ``bounded_load_epsilon``
        (float > 0). All: ``backend`` ("native" or "twin").

    Raises
    ------
    ValueError
        Unknown ``name``.
    TypeError
        An option the strategy does not take (the message names it).

    Examples
    --------
    >>> s = make_strategy("capacity")
    >>> s.place([ItemSpec("t/d/e1", 1 << 30, 1.0, replicas=2)],
    ...         [WorkerSpec("w1", 8 << 30, 4), WorkerSpec("w2", 8 << 30, 4)]).assignments
    {'t/d/e1': ('w1', 'w2')}
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    try:
        cls = _STRATEGIES[name]
    except KeyError:
        raise ValueError(f"name must be one of {STRATEGY_NAMES}, got {name!r}") from None
    try:
        return cls(**options)
    except TypeError as exc:
        raise TypeError(f"make_strategy({name!r}): {exc}") from None
