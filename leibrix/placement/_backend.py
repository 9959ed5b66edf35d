"""Choice of implementation: the compiled core ("native") or the pure-Python twin ("twin").

Both expose the same functions with the same results; the facade runs on the
native core, while tests and benchmarks pass ``backend="twin"`` to run the
very same facade code on the reference implementation.
"""

from __future__ import annotations

from types import ModuleType, SimpleNamespace

from _placement import _hash, _pack, _rank, _ring

from . import _twin

NATIVE = SimpleNamespace(
    hash64=_hash.hash64,
    hash_keys=_hash.hash_keys,
    Ring=_ring.Ring,
    place_walk=_ring.place_walk,
    pack=_pack.pack,
    OK=_ring.OK,
    TOO_FEW_WORKERS=_ring.TOO_FEW_WORKERS,
    NO_ROOM=_ring.NO_ROOM,
    benefit=_rank.benefit,
    top_k=_rank.top_k,
    select_within_budgets=_rank.select_within_budgets,
    eviction=_rank.eviction,
)

BACKENDS = ("native", "twin")


def core(backend: str) -> SimpleNamespace | ModuleType:
    """The implementation called ``backend``."""
    if backend == "native":
        return NATIVE
    if backend == "twin":
        return _twin
    raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
