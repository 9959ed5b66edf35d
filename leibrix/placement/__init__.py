"""The placement engine: where epochs live, and which epochs deserve to.

Public surface (everything else in this package is private):

* hashing — :func:`hash64`, :func:`hash_keys`: XXH64, stable across processes;
* :class:`HashRing` — weighted consistent hashing with vnodes, replicas across
  zones, incremental membership and bounded loads;
* strategies — :func:`make_strategy` returns a :class:`Strategy`
  ("round_robin", "hash" or "capacity") whose ``place(items, workers,
  existing=...)`` turns :class:`ItemSpec` s and :class:`WorkerSpec` s into a
  :class:`Placement`;
* ranking — :func:`benefit`, :func:`top_k`, :func:`select_within_budgets`,
  :func:`eviction_candidates` over :class:`Candidate` s and :class:`Budget` s.

The arithmetic runs in the compiled ``_placement`` extension (Cython, GIL
released in every loop); this package validates arguments, raising
``ValueError``/``TypeError`` that name the offending argument, and converts
between small objects and arrays. Every function takes ``backend="twin"`` to
run the pure-Python reference implementation instead, with identical results.

Example
-------
>>> from leibrix.placement import ItemSpec, WorkerSpec, make_strategy
>>> workers = [WorkerSpec(f"w{i}", 64 << 30, 16.0, zone=f"z{i % 3}") for i in range(6)]
>>> placement = make_strategy("capacity").place([ItemSpec("t/sales/2026-11-27", 8 << 30, 2.0, 3)], workers)
>>> len(placement.assignments["t/sales/2026-11-27"])
3
"""

from ._hashing import hash64, hash_keys
from ._ranking import benefit, eviction_candidates, select_within_budgets, top_k
from ._ring import MAX_VNODES_PER_WORKER, HashRing
from ._strategies import (
    STRATEGY_NAMES,
    CapacityStrategy,
    HashStrategy,
    RoundRobinStrategy,
    make_strategy,
)
from ._types import Budget, Candidate, Eviction, ItemSpec, Placement, Strategy, WorkerSpec

__all__ = [
    "MAX_VNODES_PER_WORKER",
    "STRATEGY_NAMES",
    "Budget",
    "Candidate",
    "CapacityStrategy",
    "Eviction",
    "HashRing",
    "HashStrategy",
    "ItemSpec",
    "Placement",
    "RoundRobinStrategy",
    "Strategy",
    "WorkerSpec",
    "benefit",
    "eviction_candidates",
    "hash64",
    "hash_keys",
    "make_strategy",
    "select_within_budgets",
    "top_k",
]
