"""Benefit ranking: compiled == twin, ordering, budgets, hysteretic eviction, validation."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leibrix.placement import (
    Budget,
    Candidate,
    Eviction,
    benefit,
    eviction_candidates,
    select_within_budgets,
    top_k,
)

SCORES = st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.0, 3.25, 1e9, -1.0]) | st.floats(-1e6, 1e6),
                  max_size=60)


@st.composite
def candidates(draw, prefix: str, max_size: int = 25):
    n = draw(st.integers(0, max_size))
    return [
        Candidate(f"{prefix}{i}", benefit=draw(st.sampled_from([0.0, 1.0, 1.5, 2.0, 3.0, 10.0])),
                  memory_bytes=draw(st.integers(0, 50)), cpu_cores=draw(st.sampled_from([0.0, 0.5, 1.0, 2.2])),
                  tenant=draw(st.sampled_from(["t1", "t2", "t3"])))
        for i in range(n)
    ]


@settings(max_examples=150, deadline=None)
@given(scores=SCORES, k=st.integers(0, 70))
def test_top_k_native_equals_twin_and_is_ordered(scores, k) -> None:
    got = top_k(scores, k)
    assert (got == top_k(scores, k, backend="twin")).all()
    assert len(got) == min(k, len(scores))
    ranked = [(-scores[i], i) for i in got]
    assert ranked == sorted(ranked)
    rest = set(range(len(scores))) - set(got.tolist())
    if len(got) and rest:
        assert max(scores[i] for i in rest) <= scores[got[-1]]


def test_top_k_large_input_matches_numpy_and_breaks_ties_by_index() -> None:
    rng = np.random.default_rng(3)
    s = rng.integers(0, 1000, 300_000).astype(np.float64)  # many ties
    got = top_k(s, 5000)
    expect = np.lexsort((np.arange(len(s)), -s))[:5000]
    assert (got == expect).all()
    ascending = np.arange(200_000, dtype=np.float64)
    assert (top_k(ascending, 10) == np.arange(199_999, 199_989, -1)).all()


@settings(max_examples=150, deadline=None)
@given(cands=candidates("c"), g_mem=st.integers(0, 400), g_cpu=st.sampled_from([0.0, 3.0, 10.0, float("inf")]),
       t1=st.integers(0, 200))
def test_select_within_budgets(cands, g_mem, g_cpu, t1) -> None:
    tenants = {"t1": Budget(t1, 4.0), "t2": Budget(120)}
    got = select_within_budgets(cands, Budget(g_mem, g_cpu), tenants)
    assert got == select_within_budgets(cands, Budget(g_mem, g_cpu), tenants, backend="twin")
    by_key = {c.key: c for c in cands}
    chosen = [by_key[k] for k in got]
    assert sum(c.memory_bytes for c in chosen) <= g_mem
    assert sum(c.cpu_cores for c in chosen) <= g_cpu + 1e-9
    per_t: defaultdict = defaultdict(lambda: [0, 0.0])
    for c in chosen:
        per_t[c.tenant][0] += c.memory_bytes
        per_t[c.tenant][1] += c.cpu_cores
    for t, b in tenants.items():
        assert per_t[t][0] <= b.memory_bytes and per_t[t][1] <= b.cpu_cores + 1e-9
    assert [c.benefit for c in chosen] == sorted((c.benefit for c in chosen), reverse=True)


@settings(max_examples=150, deadline=None)
@given(res=candidates("r"), cands=candidates("c"), h=st.sampled_from([1.0, 1.2, 2.0]),
       free_mem=st.integers(0, 60), free_cpu=st.sampled_from([0.0, 1.0, 5.0]))
def test_eviction_native_equals_twin_and_invariants(res, cands, h, free_mem, free_cpu) -> None:
    got = eviction_candidates(res, cands, h, free_memory_bytes=free_mem, free_cpu_cores=free_cpu)
    assert got == eviction_candidates(res, cands, h, free_memory_bytes=free_mem, free_cpu_cores=free_cpu,
                                      backend="twin")
    rb = {c.key: c for c in res}
    cb = {c.key: c for c in cands}
    evicted = [rb[k] for k in got.evict]
    admitted = [cb[k] for k in got.admit]
    # everything admitted fits in the free space plus what was evicted
    assert sum(c.memory_bytes for c in admitted) <= free_mem + sum(r.memory_bytes for r in evicted)
    assert sum(c.cpu_cores for c in admitted) <= free_cpu + sum(r.cpu_cores for r in evicted) + 1e-9
    # hysteresis: every evicted resident is beaten h-fold by the best admitted candidate
    if evicted:
        assert max(c.benefit for c in admitted) >= h * max(r.benefit for r in evicted)
    # cheapest first
    assert [r.benefit for r in evicted] == sorted(r.benefit for r in evicted)


def test_hysteresis_protects_marginally_worse_residents() -> None:
    res = [Candidate("resident", 10.0, 100)]
    assert eviction_candidates(res, [Candidate("new", 11.0, 100)], 1.2) == Eviction((), ())
    assert eviction_candidates(res, [Candidate("new", 12.0, 100)], 1.2) == Eviction(("resident",), ("new",))
    # fits in free space: admitted without evicting anything
    assert eviction_candidates(res, [Candidate("new", 0.1, 50)], 1.2, free_memory_bytes=50) == \
        Eviction((), ("new",))


def test_benefit() -> None:
    assert benefit(10.0, 2.0, 4) == 5.0
    arr = benefit(np.array([1.0, 2.0]), 3.0, np.array([1, 2]))
    assert arr.tolist() == [3.0, 3.0]
    assert (benefit([1.0, 8.0], [2.0, 2.0], [4, 4], backend="twin") == benefit([1.0, 8.0], [2.0, 2.0], [4, 4])).all()
    with pytest.raises(ValueError, match=r"memory\[1\] must be > 0 \(benefit is per byte\), got 0.0"):
        benefit([1.0, 1.0], [1.0, 1.0], [5, 0])
    with pytest.raises(ValueError, match=r"heat\[0\] must be finite"):
        benefit(1.0, float("nan"), 1)
    with pytest.raises(ValueError, match=r"scan_cost\[0\] must be >= 0"):
        benefit(-1.0, 1.0, 1)
    with pytest.raises(ValueError, match="matching shapes"):
        benefit([1.0, 2.0], [1.0, 2.0, 3.0], 1)


def test_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"scores\[1\] is NaN"):
        top_k([1.0, float("nan")], 1)
    with pytest.raises(ValueError, match="k must be >= 0"):
        top_k([1.0], -1)
    with pytest.raises(ValueError, match="scores must be 1-D"):
        top_k([[1.0]], 1)
    with pytest.raises(ValueError, match="hysteresis must be >= 1"):
        eviction_candidates([], [], 0.9)
    with pytest.raises(ValueError, match=r"candidates\[1\]: duplicate id 'a'"):
        select_within_budgets([Candidate("a", 1.0, 1), Candidate("a", 2.0, 1)], Budget(10))
    with pytest.raises(ValueError, match=r"residents\[0\]\.memory_bytes must be >= 0"):
        eviction_candidates([Candidate("a", 1.0, -1)], [])
    with pytest.raises(TypeError, match=r"tenant_budgets\['t'\] must be a Budget"):
        select_within_budgets([], Budget(1), {"t": 5})
    with pytest.raises(ValueError, match=r"candidates\[0\]\.benefit must be finite"):
        select_within_budgets([Candidate("a", float("inf"), 1)], Budget(1))
