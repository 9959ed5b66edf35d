"""Validation of the small objects and their conversion to the core's arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from . import _check
from ._types import ItemSpec, WorkerSpec


#: replicas per item above this are refused (a typo, not a placement request)
MAX_REPLICAS = 1 << 20


def zone_ids(zones: Sequence[str | None]) -> np.ndarray:
    """Dense zone ids: named zones get ``0..Z-1`` (sorted by name); each zoneless entry its own id.

    A worker without a zone conflicts with nobody, which is what a unique id
    expresses in the walk's "zone already used" test.
    """
    named = sorted({z for z in zones if z is not None})
    index = {z: i for i, z in enumerate(named)}
    out = np.empty(len(zones), dtype=np.int32)
    extra = len(named)
    for i, z in enumerate(zones):
        if z is None:
            out[i] = extra
            extra += 1
        else:
            out[i] = index[z]
    return out


def _sequence(name: str, value: object, cls: type) -> list:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise TypeError(f"{name} must be a sequence of {cls.__name__}, got {type(value).__name__}")
    return list(value)


def _plain(values: list, types: tuple[type, ...]) -> bool:
    return set(map(type, values)).issubset(types)


def _columns_ok(ids: list, ints: list[list], reals: list[list]) -> bool:
    """Vectorised fast path: True when every value is already valid (the common case)."""
    if not (_plain(ids, (str,)) and all(ids) and len(set(ids)) == len(ids)):
        return False
    try:
        "".join(ids).encode("utf-8")
    except UnicodeEncodeError:
        return False
    for col in ints:
        if not _plain(col, (int,)) or (col and (min(col) < 0 or max(col) > _check.INT64_MAX)):
            return False
    for col in reals:
        if not _plain(col, (int, float)):
            return False
        arr = np.array(col, dtype=np.float64)
        if arr.size and not (np.isfinite(arr).all() and arr.min() >= 0):
            return False
    return True


def check_workers(workers: Sequence[WorkerSpec]) -> list[WorkerSpec]:
    """Validated workers sorted by id (so results do not depend on the caller's order).

    A vectorised pass accepts valid input quickly; only when it objects does
    the per-worker pass run, to raise the precise error naming the field.
    """
    ws = _sequence("workers", workers, WorkerSpec)
    fast = _plain(ws, (WorkerSpec,)) and _plain([w.zone for w in ws], (str, type(None))) and all(
        w.zone != "" for w in ws) and _plain([w.weight for w in ws], (int, float, type(None)))
    if not (fast and _columns_ok([w.id for w in ws], [[w.memory_bytes for w in ws], [w.used_memory_bytes for w in ws]],
                                 [[w.cpu_cores for w in ws], [w.used_cpu_cores for w in ws],
                                  [w.weight for w in ws if w.weight is not None]])):
        for i, w in enumerate(ws):
            _check.instance(f"workers[{i}]", w, WorkerSpec)
            _check.text(f"workers[{i}].id", w.id)
            _check.integer(f"workers[{i}].memory_bytes", w.memory_bytes)
            _check.real(f"workers[{i}].cpu_cores", w.cpu_cores)
            _check.integer(f"workers[{i}].used_memory_bytes", w.used_memory_bytes)
            _check.real(f"workers[{i}].used_cpu_cores", w.used_cpu_cores)
            if w.zone is not None:
                _check.text(f"workers[{i}].zone", w.zone)
            if w.weight is not None:
                _check.real(f"workers[{i}].weight", w.weight)
        _check.unique("workers", [w.id for w in ws])
    return sorted(ws, key=lambda w: w.id)


def check_items(items: Sequence[ItemSpec]) -> list[ItemSpec]:
    """Validated items, in the caller's order (vectorised fast path, precise slow path)."""
    its = _sequence("items", items, ItemSpec)
    reps = [it.replicas for it in its] if _plain(its, (ItemSpec,)) else None
    if reps is None or not (_columns_ok([it.key for it in its], [[it.memory_bytes for it in its], reps],
                                        [[it.cpu_cores for it in its]])
                            and (not reps or (min(reps) >= 1 and max(reps) <= MAX_REPLICAS))):
        for i, it in enumerate(its):
            _check.instance(f"items[{i}]", it, ItemSpec)
            _check.text(f"items[{i}].key", it.key)
            _check.integer(f"items[{i}].memory_bytes", it.memory_bytes)
            _check.real(f"items[{i}].cpu_cores", it.cpu_cores)
            _check.integer(f"items[{i}].replicas", it.replicas, minimum=1, maximum=MAX_REPLICAS)
        _check.unique("items", [it.key for it in its])
    return its


def check_existing(existing: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    """Validated holders per item key (duplicates refused)."""
    if existing is None:
        return {}
    if not isinstance(existing, Mapping):
        raise TypeError(f"existing must be a mapping of item key -> worker ids, got {type(existing).__name__}")
    out: dict[str, list[str]] = {}
    for key, holders in existing.items():
        if isinstance(holders, (str, bytes)) or not isinstance(holders, Sequence):
            raise TypeError(f"existing[{key!r}] must be a sequence of worker ids")
        ids = [_check.text(f"existing[{key!r}][{j}]", h) for j, h in enumerate(holders)]
        _check.unique(f"existing[{key!r}]", ids)
        out[key] = ids
    return out


@dataclass(slots=True)
class Problem:
    """A placement request as arrays indexed by worker (sorted by id) and by item."""

    workers: list[WorkerSpec]
    items: list[ItemSpec]
    holders: list[list[str]]        # per item: current holders (known or not)
    free_mem: np.ndarray            # int64 per worker
    free_cpu: np.ndarray            # float64 per worker
    mem: np.ndarray                 # int64 per item
    cpu: np.ndarray                 # float64 per item
    need: np.ndarray                # int32 per item: missing replicas
    excl_ptr: np.ndarray            # int64, CSR over items of known holders' worker indices
    excl: np.ndarray                # int32


def problem(items, workers, existing) -> Problem:
    """Validate a ``Strategy.place`` call and build its arrays.

    Free capacity is ``capacity - used`` clamped at 0 (a worker reporting more
    use than capacity simply has no room). Existing holders are assumed to be
    counted in ``used_*`` already. A holder that is not among ``workers``
    (draining, suspect) still counts as a replica but cannot be excluded by index.
    """
    ws = check_workers(workers)
    its = check_items(items)
    ex = check_existing(existing)
    index = {w.id: i for i, w in enumerate(ws)}
    free_mem = np.array([max(0, w.memory_bytes - w.used_memory_bytes) for w in ws], dtype=np.int64)
    free_cpu = np.array([max(0.0, w.cpu_cores - w.used_cpu_cores) for w in ws], dtype=np.float64)
    none: list[str] = []  # shared and never mutated: most items have no holders
    holders = [ex.get(it.key, none) for it in its] if ex else [none] * len(its)
    need = np.array([it.replicas for it in its], dtype=np.int32)
    excl_ptr = np.zeros(len(its) + 1, dtype=np.int64)
    excl = np.zeros(0, dtype=np.int32)
    if ex:
        need = np.maximum(0, need - np.array([len(h) for h in holders], dtype=np.int32))
        known = [[index[h] for h in hs if h in index] for hs in holders]
        np.cumsum([len(k) for k in known], out=excl_ptr[1:])
        excl = np.array([i for k in known for i in k], dtype=np.int32)
    return Problem(
        workers=ws,
        items=its,
        holders=holders,
        free_mem=free_mem,
        free_cpu=free_cpu,
        mem=np.array([it.memory_bytes for it in its], dtype=np.int64),
        cpu=np.array([it.cpu_cores for it in its], dtype=np.float64),
        need=need,
        excl_ptr=excl_ptr,
        excl=excl,
    )


def too_few_reason(item: ItemSpec, holders: int, need: int, eligible: int) -> str:
    """Reason for an item that needs more distinct workers than exist."""
    return (
        f"replicas: needs {need} more distinct worker(s) besides its {holders} holder(s) "
        f"for {item.replicas} replicas, but only {eligible} other worker(s) are eligible"
    )
