"""Benefit ranking for admission: scores, top-k, budgeted selection, hysteretic eviction.

``benefit = scan_cost * heat / memory_bytes``: the scan work a resident epoch
saves per unit time, per byte it occupies. Admission keeps the epochs with the
most benefit per byte within hard per-tenant budgets and the shared cluster
budget, and only evicts a resident for a candidate that is clearly better
(hysteresis), so two near-equal epochs do not take turns being loaded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from . import _check
from ._backend import core
from ._types import Budget, Candidate, Eviction


def benefit(scan_cost, heat, memory, *, backend: str = "native"):
    """Benefit per byte: ``scan_cost * heat / memory``.

    Parameters
    ----------
    scan_cost, heat : float or array_like
        Non-negative, finite. ``scan_cost`` is the estimated cost of scanning
        the epoch at the source; ``heat`` its decayed access rate.
    memory : int/float or array_like
        Bytes the epoch needs resident; must be > 0 (an epoch of 0 bytes has
        no defined benefit per byte — refusing it beats returning inf).

    Returns
    -------
    float, or numpy.ndarray of float64 when any argument is an array

    Examples
    --------
    >>> benefit(10.0, 2.0, 4)
    5.0
    """
    scalar = all(np.ndim(x) == 0 for x in (scan_cost, heat, memory))
    s, h, m = (np.atleast_1d(np.asarray(x)) for x in (scan_cost, heat, memory))
    try:
        s, h, m = np.broadcast_arrays(s, h, m)
    except ValueError:
        raise ValueError(
            f"scan_cost, heat and memory must have matching shapes, got {s.shape}, {h.shape}, {m.shape}"
        ) from None
    s = _check.float_array("scan_cost", s.ravel(), minimum=0.0)
    h = _check.float_array("heat", h.ravel(), minimum=0.0)
    m = _check.float_array("memory", m.ravel())
    if m.size and m.min() <= 0:
        bad = int(np.flatnonzero(m <= 0)[0])
        raise ValueError(f"memory[{bad}] must be > 0 (benefit is per byte), got {m[bad]}")
    out = core(backend).benefit(s, h, m)
    return float(out[0]) if scalar else out


def top_k(scores, k: int, *, backend: str = "native") -> np.ndarray:
    """Indices of the ``k`` highest scores, best first (equal scores: lower index first).

    One pass in C over the scores; only about ``k`` of them are ever sorted.
    ``k`` larger than ``len(scores)`` returns every index.

    Parameters
    ----------
    scores : array_like of float, 1-D, no NaN
    k : int >= 0

    Returns
    -------
    numpy.ndarray of int64, shape (min(k, len(scores)),)

    Examples
    --------
    >>> top_k([0.5, 3.0, 1.0, 3.0], 3).tolist()
    [1, 3, 2]
    """
    s = np.ascontiguousarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if s.size and np.isnan(s).any():
        raise ValueError(f"scores[{int(np.flatnonzero(np.isnan(s))[0])}] is NaN")
    k = _check.integer("k", k)
    return core(backend).top_k(s, min(k, s.size))


def _check_candidates(name: str, cands: Sequence[Candidate]) -> list[Candidate]:
    if isinstance(cands, (str, bytes)) or not isinstance(cands, Sequence):
        raise TypeError(f"{name} must be a sequence of Candidate, got {type(cands).__name__}")
    for i, c in enumerate(cands):
        _check.instance(f"{name}[{i}]", c, Candidate)
        _check.text(f"{name}[{i}].key", c.key)
        _check.real(f"{name}[{i}].benefit", c.benefit)
        _check.integer(f"{name}[{i}].memory_bytes", c.memory_bytes)
        _check.real(f"{name}[{i}].cpu_cores", c.cpu_cores)
        if not isinstance(c.tenant, str):
            raise TypeError(f"{name}[{i}].tenant must be a str, got {type(c.tenant).__name__}")
    _check.unique(name, [c.key for c in cands])
    return list(cands)


def _columns(cands: list[Candidate]):
    return (np.array([c.benefit for c in cands], dtype=np.float64),
            np.array([c.memory_bytes for c in cands], dtype=np.int64),
            np.array([c.cpu_cores for c in cands], dtype=np.float64))


def _budget(name: str, b: Budget) -> tuple[int, float]:
    _check.instance(name, b, Budget)
    mem = _check.integer(f"{name}.memory_bytes", b.memory_bytes, maximum=1 << 200)
    cpu = _check.real(f"{name}.cpu_cores", b.cpu_cores, allow_inf=True)
    return min(mem, _check.INT64_MAX), cpu


def select_within_budgets(
    candidates: Sequence[Candidate],
    budget: Budget,
    tenant_budgets: Mapping[str, Budget] | None = None,
    *,
    backend: str = "native",
) -> tuple[str, ...]:
    """Greedy residency: best benefit first, each taken only if it fits every budget it spends.

    A candidate spends its memory and cpu from the global ``budget`` and from
    its tenant's budget (tenants absent from ``tenant_budgets`` are limited by
    the global budget only). A candidate that does not fit is skipped and the
    next one tried, so small epochs can use what a big one left. No budget is
    ever exceeded.

    Returns
    -------
    tuple of str
        Selected candidate keys, in selection (benefit) order.

    Examples
    --------
    >>> cands = [Candidate("a", 9.0, 60, tenant="t1"), Candidate("b", 5.0, 50, tenant="t1"),
    ...          Candidate("c", 1.0, 30, tenant="t2")]
    >>> select_within_budgets(cands, Budget(100), {"t1": Budget(70)})
    ('a', 'c')
    """
    cands = _check_candidates("candidates", candidates)
    g_mem, g_cpu = _budget("budget", budget)
    tenant_budgets = {} if tenant_budgets is None else tenant_budgets
    if not isinstance(tenant_budgets, Mapping):
        raise TypeError(f"tenant_budgets must be a mapping of tenant -> Budget, got {type(tenant_budgets).__name__}")
    tenants = sorted({c.tenant for c in cands})
    t_index = {t: i for i, t in enumerate(tenants)}
    t_mem = np.full(len(tenants), _check.INT64_MAX, dtype=np.int64)
    t_cpu = np.full(len(tenants), np.inf, dtype=np.float64)
    for t, b in tenant_budgets.items():
        mem, cpu = _budget(f"tenant_budgets[{t!r}]", b)
        if t in t_index:
            t_mem[t_index[t]], t_cpu[t_index[t]] = mem, cpu
    ben, mem_a, cpu_a = _columns(cands)
    chosen = core(backend).select_within_budgets(
        ben, mem_a, cpu_a, np.array([t_index[c.tenant] for c in cands], dtype=np.int32),
        t_mem, t_cpu, g_mem, g_cpu,
    )
    return tuple(cands[i].key for i in chosen)


def eviction_candidates(
    residents: Sequence[Candidate],
    candidates: Sequence[Candidate],
    hysteresis: float = 1.2,
    *,
    free_memory_bytes: int = 0,
    free_cpu_cores: float = 0.0,
    backend: str = "native",
) -> Eviction:
    """Which residents to evict so that clearly better candidates fit.

    Candidates are taken best first. One that fits in the free space is
    admitted as is; otherwise the cheapest residents not yet evicted are
    evicted, as few as free enough memory and cpu — but only if the candidate's
    benefit is at least ``hysteresis`` times that of every resident it
    displaces. Otherwise the candidate is skipped (a smaller one may still fit).

    Parameters
    ----------
    residents, candidates : sequence of Candidate
    hysteresis : float >= 1
        1.2 means a newcomer must be 20% better per byte than what it evicts.
    free_memory_bytes, free_cpu_cores : free capacity before any eviction

    Returns
    -------
    Eviction
        ``evict``: resident keys in eviction order; ``admit``: candidate keys.

    Examples
    --------
    >>> res = [Candidate("old", 1.0, 100), Candidate("warm", 5.0, 100)]
    >>> eviction_candidates(res, [Candidate("hot", 3.0, 100)], 1.5)
    Eviction(evict=('old',), admit=('hot',))
    """
    res = _check_candidates("residents", residents)
    cands = _check_candidates("candidates", candidates)
    h = _check.real("hysteresis", hysteresis)
    if h < 1.0:
        raise ValueError(f"hysteresis must be >= 1 (a worse candidate may not evict), got {h}")
    free_mem = _check.integer("free_memory_bytes", free_memory_bytes)
    free_cpu = _check.real("free_cpu_cores", free_cpu_cores)
    rb, rm, rc = _columns(res)
    cb, cm, cc = _columns(cands)
    evicted, admitted = core(backend).eviction(rb, rm, rc, cb, cm, cc, free_mem, free_cpu, h)
    return Eviction(evict=tuple(res[i].key for i in evicted), admit=tuple(cands[i].key for i in admitted))
