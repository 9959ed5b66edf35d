"""The public consistent-hash ring over the compiled vnode ring."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fractions import Fraction

import numpy as np

from . import _check
from ._backend import core
from ._hashing import as_key_list
from ._specs import check_workers, zone_ids
from ._types import WorkerSpec

#: vnode ceiling per worker: beyond it a weight is refused rather than exhausting memory
MAX_VNODES_PER_WORKER = 1 << 20


class HashRing:
    """Weighted consistent-hash ring with virtual nodes, replicas and bounded loads.

    Each worker owns ``round(vnodes * weight / reference_weight)`` points
    (at least 1 for a positive weight, 0 for weight 0) on a 64-bit circle; a key
    belongs to the owner of the first point at or after ``hash64(key)``.
    Adding a worker moves only the keys that now fall on its points — about
    ``weight / total_weight`` of them — and removing one moves only its own.
    ``reference_weight`` is fixed for the ring's life (default: the mean
    weight of the initial workers, or the first positive weight added to a
    ring that had none), so membership changes never re-scale the other workers.

    Parameters
    ----------
    workers : iterable of WorkerSpec
        Initial workers; ``weight=None`` means ``weight = memory_bytes``.
    vnodes : int, default 160
        Points of a worker whose weight equals ``reference_weight``. More points
        spread load more evenly (relative spread ~ 1/sqrt(vnodes)) at the cost
        of memory (12 bytes each) and update time.
    reference_weight : float, optional
    backend : {"native", "twin"}

    Examples
    --------
    >>> ring = HashRing([WorkerSpec("w1", 64 << 30, 16), WorkerSpec("w2", 64 << 30, 16)])
    >>> ring.lookup("tenant/ds/2026-11-27") in {"w1", "w2"}
    True
    >>> len(set(ring.replicas("tenant/ds/2026-11-27", 2)))
    2

    References
    ----------
    Karger et al., "Consistent hashing and random trees", STOC 1997.
    Mirrokni, Thorup, Zadimoghaddam, "Consistent Hashing with Bounded Loads", SODA 2018.
    """

    def __init__(
        self,
        workers: Iterable[WorkerSpec] = (),
        *,
        vnodes: int = 160,
        reference_weight: float | None = None,
        backend: str = "native",
    ) -> None:
        self._core_ns = core(backend)
        self._vnodes = _check.integer("vnodes", vnodes, minimum=1, maximum=MAX_VNODES_PER_WORKER)
        specs = check_workers(list(workers))
        weights = [_weight_of(w) for w in specs]
        positive = [w for w in weights if w > 0]
        # With no explicit reference and no positive weight yet, the first
        # positive weight added later becomes the reference.
        self._ref_fixed = reference_weight is not None or bool(positive)
        if reference_weight is None:
            reference_weight = sum(positive) / len(positive) if positive else 1.0
        self._ref = _check.real("reference_weight", reference_weight)
        if self._ref <= 0:
            raise ValueError(f"reference_weight must be > 0, got {self._ref}")
        self._slot: dict[str, int] = {}
        self._ids: list[str | None] = []
        self._zones: list[str | None] = []
        self._weights: list[float] = []
        self._free: list[int] = []
        counts = []
        for w, weight in zip(specs, weights):
            counts.append(self._count("weight", weight))
            self._slot[w.id] = len(self._ids)
            self._ids.append(w.id)
            self._zones.append(w.zone)
            self._weights.append(weight)
        self._ring = self._core_ns.Ring()
        self._ring.build([i.encode() for i in self._ids], np.array(counts, dtype=np.int64))
        self._cache: dict[str, np.ndarray] = {}

    # -- membership --------------------------------------------------------------------------

    def _count(self, name: str, weight: float) -> int:
        if weight == 0:
            return 0
        if not self._ref_fixed:
            self._ref, self._ref_fixed = weight, True
        count = max(1, round(self._vnodes * weight / self._ref))
        if count > MAX_VNODES_PER_WORKER:
            raise ValueError(
                f"{name} {weight} would need {count} virtual nodes (limit {MAX_VNODES_PER_WORKER}); "
                f"lower the weight or the ring's vnodes"
            )
        return count

    def add(self, worker: WorkerSpec) -> None:
        """Add a worker; only keys that land on its new points move (to it)."""
        (spec,) = check_workers([worker])
        if spec.id in self._slot:
            raise ValueError(f"worker.id {spec.id!r} is already on the ring")
        weight = _weight_of(spec)
        count = self._count("worker.weight", weight)
        slot = self._free.pop() if self._free else len(self._ids)
        if slot == len(self._ids):
            self._ids.append(None)
            self._zones.append(None)
            self._weights.append(0.0)
        self._ring.set_vnodes(slot, spec.id.encode(), count)
        self._ids[slot], self._zones[slot], self._weights[slot] = spec.id, spec.zone, weight
        self._slot[spec.id] = slot
        self._cache.clear()

    def remove(self, worker_id: str) -> None:
        """Remove a worker; only its keys move (each to the next point clockwise)."""
        slot = self._slot_of(worker_id)
        self._ring.set_vnodes(slot, worker_id.encode(), 0)
        del self._slot[worker_id]
        self._ids[slot], self._zones[slot], self._weights[slot] = None, None, 0.0
        self._free.append(slot)
        self._cache.clear()

    def set_weight(self, worker_id: str, weight: float) -> None:
        """Change a worker's weight; keys move only to or from that worker."""
        slot = self._slot_of(worker_id)
        weight = _check.real("weight", weight)
        self._ring.set_vnodes(slot, worker_id.encode(), self._count("weight", weight))
        self._weights[slot] = weight
        self._cache.clear()

    def _slot_of(self, worker_id: str) -> int:
        _check.text("worker_id", worker_id)
        try:
            return self._slot[worker_id]
        except KeyError:
            raise ValueError(f"worker_id {worker_id!r} is not on the ring") from None

    def __len__(self) -> int:
        return len(self._slot)

    def __contains__(self, worker_id: object) -> bool:
        return worker_id in self._slot

    @property
    def workers(self) -> tuple[str, ...]:
        """Worker ids on the ring (including zero-weight ones), sorted."""
        return tuple(sorted(self._slot))

    def weight(self, worker_id: str) -> float:
        """The worker's ring weight."""
        return self._weights[self._slot_of(worker_id)]

    def vnodes(self, worker_id: str) -> int:
        """How many points the worker owns."""
        slot = self._slot_of(worker_id)
        vn = self._ring.vnodes
        return int(vn[slot]) if slot < len(vn) else 0

    def owned_fraction(self) -> dict[str, float]:
        """Fraction of the hash circle each worker owns (what it receives of uniform keys)."""
        pts = self._ring.points.astype(np.float64)
        if len(pts) == 0:
            return {w: 0.0 for w in self._slot}
        arcs = np.diff(pts, prepend=pts[-1] - 2.0**64) / 2.0**64  # arc ending at each point
        share = np.bincount(self._ring.owners, weights=arcs, minlength=len(self._ids))
        return {w: float(share[s]) for w, s in self._slot.items()}

    # -- lookups -----------------------------------------------------------------------------

    def _arrays(self) -> dict[str, np.ndarray]:
        if not self._cache:
            vn = np.zeros(len(self._ids), dtype=np.int64)
            got = self._ring.vnodes[: len(self._ids)]
            vn[: len(got)] = got
            self._cache.update(
                ids=np.array(self._ids, dtype=object),
                zone=zone_ids(self._zones),
                member=(vn > 0).astype(np.uint8),
                vnodes=vn,
                seq=np.ascontiguousarray(self._ring.owners, dtype=np.int32),
            )
        return self._cache

    @property
    def empty(self) -> bool:
        """True when no worker has a positive weight: every lookup would fail."""
        return len(self._ring.points) == 0

    def _nonempty(self) -> None:
        if self.empty:
            raise ValueError("the ring is empty (no worker with a positive weight)")

    def _hashes(self, keys: object) -> np.ndarray:
        if isinstance(keys, np.ndarray) and keys.dtype == np.uint64:
            if keys.ndim != 1:
                raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
            return np.ascontiguousarray(keys)
        return self._core_ns.hash_keys(as_key_list(keys), 0)

    def lookup(self, key: str | bytes) -> str:
        """The worker owning ``key``."""
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"key must be str or bytes, got {type(key).__name__}")
        self._nonempty()
        return self._ids[int(self._ring.lookup_keys([key], 0)[0])]  # type: ignore[return-value]

    def lookup_batch(self, keys: Sequence[str | bytes] | np.ndarray, *,
                     bounded_load_epsilon: float | None = None) -> np.ndarray:
        """The owner of every key, hashed and searched in C without the GIL.

        Parameters
        ----------
        keys : sequence of str/bytes, or uint64 ndarray from :func:`hash_keys`
        bounded_load_epsilon : float, optional
            Consistent hashing with bounded loads (Mirrokni–Thorup–Zadimoghaddam):
            keys are assigned in order and a worker takes at most
            ``ceil((1 + eps) * len(keys) * share)`` of them (``share`` = its
            fraction of the vnodes); a key whose owner is full goes to the next
            worker clockwise with room. ``eps > 0``.

        Returns
        -------
        numpy.ndarray of object (worker ids), shape (len(keys),)
        """
        prehashed = isinstance(keys, np.ndarray) and keys.dtype == np.uint64
        if bounded_load_epsilon is None and not prehashed:
            key_list = as_key_list(keys)
            self._nonempty()
            # fused: hashing and search in one blocked pass without the GIL
            return self._arrays()["ids"][self._ring.lookup_keys(key_list, 0)]
        hashes = self._hashes(keys)
        self._nonempty()
        a = self._arrays()
        if bounded_load_epsilon is None:
            return a["ids"][self._ring.lookup_hashes(hashes)]
        eps = _check.real("bounded_load_epsilon", bounded_load_epsilon)
        if eps <= 0:
            raise ValueError(f"bounded_load_epsilon must be > 0, got {eps}")
        load = np.zeros(len(self._ids), dtype=np.int64)
        out, *_ = self._walk(hashes, np.ones(len(hashes), dtype=np.int32),
                             load=load, cap=self.load_caps(eps, len(hashes)))
        return a["ids"][out]

    def load_caps(self, epsilon: float, total: int) -> np.ndarray:
        """Per-slot bounded-load caps ``ceil((1+eps) * total * vnode share)``.

        Computed in exact rationals with ``eps`` read as the decimal it was
        written as (0.1, not 0.1000000000000000055...), so that 10% of 100 keys
        caps at 110, not 111.
        """
        vn = self._arrays()["vnodes"]
        factor = 1 + Fraction(repr(float(epsilon)))
        den = factor.denominator * max(1, int(vn.sum()))
        num = factor.numerator * total
        return np.array([-(-(num * int(v)) // den) for v in vn], dtype=np.int64)

    def replicas(self, key: str | bytes, r: int) -> tuple[str, ...]:
        """``r`` distinct workers for ``key``, walking clockwise from its point.

        Workers in zones not used yet come first; a second worker of a zone
        is taken only when no other zone remains on the ring. The first is
        ``lookup(key)``.
        """
        if not isinstance(key, (str, bytes)):
            raise TypeError(f"key must be str or bytes, got {type(key).__name__}")
        return tuple(self.replicas_batch([key], r)[0])

    def replicas_batch(self, keys: Sequence[str | bytes] | np.ndarray, r: int) -> np.ndarray:
        """:meth:`replicas` for many keys: an object array of shape (len(keys), r)."""
        hashes = self._hashes(keys)
        self._nonempty()
        live = int(self._arrays()["member"].sum())
        r = _check.integer("r", r, minimum=1)
        if r > live:
            raise ValueError(f"r={r} exceeds the {live} worker(s) with a positive weight on the ring")
        out, *_ = self._walk(hashes, np.full(len(hashes), r, dtype=np.int32))
        return self._arrays()["ids"][out].reshape(len(hashes), r)

    def _walk(self, hashes: np.ndarray, need: np.ndarray, *, mem=None, cpu=None, free_mem=None,
              free_cpu=None, load=None, cap=None, excl_ptr=None, excl=None):
        """Run the compiled walk from each hash's successor (used by the hash strategy)."""
        a = self._arrays()
        m = len(need)
        return self._core_ns.place_walk(
            a["seq"], self._ring.start_positions(hashes), 0, a["zone"], a["member"],
            np.zeros(m, dtype=np.int64) if mem is None else mem,
            np.zeros(m, dtype=np.float64) if cpu is None else cpu,
            need,
            np.zeros(m + 1, dtype=np.int64) if excl_ptr is None else excl_ptr,
            np.zeros(0, dtype=np.int32) if excl is None else excl,
            free_mem, free_cpu, load, cap,
        )

    def slot_of(self, worker_id: str) -> int | None:
        """The worker's slot in the arrays the walk uses, or None if absent."""
        return self._slot.get(worker_id)

    @property
    def slots(self) -> int:
        """Number of slots (live and free) in the walk's per-slot arrays."""
        return len(self._ids)


def _weight_of(spec: WorkerSpec) -> float:
    return float(spec.memory_bytes) if spec.weight is None else float(spec.weight)
