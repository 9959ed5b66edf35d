"""HashRing: compiled == twin, minimal movement, replicas, bounded loads, edge cases."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leibrix.placement import MAX_VNODES_PER_WORKER, HashRing, WorkerSpec, hash_keys

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=12)


@st.composite
def ring_workers(draw, min_size=1, max_size=12):
    ids = draw(st.lists(TEXT, min_size=min_size, max_size=max_size, unique=True))
    return [
        WorkerSpec(
            i,
            memory_bytes=1 << 30,
            cpu_cores=8.0,
            zone=draw(st.one_of(st.none(), st.sampled_from(["za", "zb", "zc"]))),
            weight=draw(st.sampled_from([0.0, 0.5, 1.0, 1.0, 2.0, 3.7])),
        )
        for i in ids
    ]


def spec(i: str, weight: float = 1.0, zone: str | None = None) -> WorkerSpec:
    return WorkerSpec(i, 1 << 30, 8.0, zone=zone, weight=weight)


KEYS = [f"tenant/ds/{i}" for i in range(3000)]


@settings(max_examples=60, deadline=None)
@given(workers=ring_workers(), keys=st.lists(TEXT, max_size=30), r=st.integers(1, 4),
       eps=st.sampled_from([0.05, 0.25, 1.0]))
def test_native_equals_twin(workers, keys, r, eps) -> None:
    native = HashRing(workers, vnodes=8)
    twin = HashRing(workers, vnodes=8, backend="twin")
    assert (native._ring.points == twin._ring.points).all()
    assert (native._ring.owners == twin._ring.owners).all()
    live = sum(1 for w in workers if w.weight)
    if live == 0:
        with pytest.raises(ValueError, match="ring is empty"):
            native.lookup_batch(keys)
        return
    assert (native.lookup_batch(keys) == twin.lookup_batch(keys)).all()
    assert (native.lookup_batch(keys, bounded_load_epsilon=eps)
            == twin.lookup_batch(keys, bounded_load_epsilon=eps)).all()
    r = min(r, live)
    assert (native.replicas_batch(keys, r) == twin.replicas_batch(keys, r)).all()


@settings(max_examples=25, deadline=None)
@given(workers=ring_workers(min_size=2, max_size=8),
       ops=st.lists(st.tuples(st.sampled_from(["add", "remove", "weight"]), TEXT,
                              st.sampled_from([0.0, 0.5, 1.0, 2.5])), max_size=8))
def test_incremental_updates_match_twin_and_rebuild(workers, ops) -> None:
    native = HashRing(workers, vnodes=8, reference_weight=1.0)
    twin = HashRing(workers, vnodes=8, reference_weight=1.0, backend="twin")
    current = {w.id: w for w in workers}
    for op, wid, weight in ops:
        if op == "add" and wid not in current:
            current[wid] = spec(wid, weight)
            for ring in (native, twin):
                ring.add(current[wid])
        elif op == "remove" and wid in current:
            del current[wid]
            for ring in (native, twin):
                ring.remove(wid)
        elif op == "weight" and current:
            wid = sorted(current)[len(wid) % len(current)]
            for ring in (native, twin):
                ring.set_weight(wid, weight)
            current[wid] = spec(wid, weight, current[wid].zone)
    assert (native._ring.points == twin._ring.points).all()
    assert (native._ring.owners == twin._ring.owners).all()
    fresh = HashRing(list(current.values()), vnodes=8, reference_weight=1.0)
    if len(fresh._ring.points):
        assert (native.lookup_batch(KEYS[:300]) == fresh.lookup_batch(KEYS[:300])).all()


def test_add_moves_only_keys_to_the_new_worker() -> None:
    ring = HashRing([spec(f"w{i}") for i in range(20)])
    before = ring.lookup_batch(KEYS)
    ring.add(spec("new"))
    after = ring.lookup_batch(KEYS)
    moved = before != after
    assert moved.any()
    assert set(after[moved]) == {"new"}
    # about 1/21 of the keys move (the new worker's share of the circle)
    assert moved.mean() == pytest.approx(ring.owned_fraction()["new"], abs=0.02)


def test_remove_moves_only_the_removed_workers_keys() -> None:
    ring = HashRing([spec(f"w{i}") for i in range(20)])
    before = ring.lookup_batch(KEYS)
    ring.remove("w7")
    after = ring.lookup_batch(KEYS)
    assert ((before != after) == (before == "w7")).all()
    assert "w7" not in set(after)


def test_set_weight_moves_keys_only_to_that_worker() -> None:
    ring = HashRing([spec(f"w{i}") for i in range(10)])
    before = ring.lookup_batch(KEYS)
    ring.set_weight("w3", 3.0)
    after = ring.lookup_batch(KEYS)
    assert set(after[before != after]) == {"w3"}
    assert ring.vnodes("w3") == 3 * 160 and ring.weight("w3") == 3.0
    ring.set_weight("w3", 0.5)
    lower = ring.lookup_batch(KEYS)
    assert set(after[after != lower]) == {"w3"}


def test_empty_ring_takes_its_reference_weight_from_the_first_worker() -> None:
    ring = HashRing(vnodes=100)
    ring.add(WorkerSpec("w1", 64 << 30, 8.0))
    ring.add(WorkerSpec("w2", 128 << 30, 8.0))
    assert (ring.vnodes("w1"), ring.vnodes("w2")) == (100, 200)


def test_weight_proportional_to_memory_by_default() -> None:
    ring = HashRing([WorkerSpec("small", 16 << 30, 4), WorkerSpec("big", 48 << 30, 4)], vnodes=400)
    assert ring.vnodes("big") == 3 * ring.vnodes("small")
    share = Counter(ring.lookup_batch(KEYS))
    assert share["big"] / share["small"] == pytest.approx(3.0, rel=0.25)


def test_replicas_distinct_workers_and_zones() -> None:
    workers = [spec(f"w{i}", zone=f"z{i % 3}") for i in range(9)]
    ring = HashRing(workers)
    zone = {w.id: w.zone for w in workers}
    reps = ring.replicas_batch(KEYS, 3)
    for row in reps:
        assert len(set(row)) == 3
        assert len({zone[w] for w in row}) == 3
    assert (reps[:, 0] == ring.lookup_batch(KEYS)).all()
    # more replicas than zones: the first three still span the zones, all workers distinct
    for row in ring.replicas_batch(KEYS[:200], 5):
        assert len(set(row)) == 5 and len({zone[w] for w in row[:3]}) == 3


def test_bounded_load_caps_every_worker() -> None:
    ring = HashRing([spec(f"w{i}", weight=1.0 + (i % 3)) for i in range(30)])
    eps = 0.1
    owners = ring.lookup_batch(KEYS, bounded_load_epsilon=eps)
    counts = Counter(owners)
    total_vn = sum(ring.vnodes(w) for w in ring.workers)
    for w in ring.workers:
        cap = math.ceil((1 + eps) * len(KEYS) * ring.vnodes(w) / total_vn)
        assert counts[w] <= cap
    plain = Counter(ring.lookup_batch(KEYS))
    assert max(plain.values()) > max(counts.values())  # the cap did bite


def test_prehashed_keys_give_the_same_owners() -> None:
    ring = HashRing([spec(f"w{i}") for i in range(5)])
    assert (ring.lookup_batch(hash_keys(KEYS)) == ring.lookup_batch(KEYS)).all()
    assert ring.lookup(KEYS[7]) == ring.lookup_batch(KEYS)[7]


def test_edge_cases() -> None:
    one = HashRing([spec("only")])
    assert set(one.lookup_batch(KEYS)) == {"only"}
    assert one.replicas("k", 1) == ("only",)
    with pytest.raises(ValueError, match=r"r=2 exceeds the 1 worker"):
        one.replicas("k", 2)
    assert one.lookup_batch([]).shape == (0,)
    assert one.lookup("ключ/数据/🙂") == "only"
    zero = HashRing([spec("a", 0.0), spec("b", 1.0)])
    assert set(zero.lookup_batch(KEYS)) == {"b"}
    assert zero.vnodes("a") == 0
    assert HashRing([spec("a", 0.0)]).empty and not zero.empty
    with pytest.raises(ValueError, match="ring is empty"):
        HashRing([spec("a", 0.0)]).lookup("k")
    with pytest.raises(ValueError, match="ring is empty"):
        HashRing().lookup_batch(["k"])
    huge = HashRing([spec("a")], reference_weight=1.0)
    with pytest.raises(ValueError, match=rf"weight 1e\+30 would need .* \(limit {MAX_VNODES_PER_WORKER}\)"):
        huge.set_weight("a", 1e30)
    big = HashRing([spec("a", 1.0), spec("b", 1000.0)], vnodes=10, reference_weight=1.0)
    assert Counter(big.lookup_batch(KEYS))["b"] > 0.98 * len(KEYS)


def test_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match=r"workers\[1\]: duplicate id 'a'"):
        HashRing([spec("a"), spec("a")])
    with pytest.raises(ValueError, match=r"workers\[0\].weight must be >= 0"):
        HashRing([spec("a", -1.0)])
    with pytest.raises(ValueError, match=r"workers\[0\].weight must be finite"):
        HashRing([spec("a", float("nan"))])
    ring = HashRing([spec("a")])
    with pytest.raises(ValueError, match="already on the ring"):
        ring.add(spec("a"))
    with pytest.raises(ValueError, match="worker_id 'zz' is not on the ring"):
        ring.remove("zz")
    with pytest.raises(TypeError, match="r must be an int"):
        ring.replicas("k", 1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="bounded_load_epsilon must be > 0"):
        ring.lookup_batch(["k"], bounded_load_epsilon=0)
    with pytest.raises(TypeError, match=r"keys\[0\] must be str or bytes"):
        ring.lookup_batch([1])
    with pytest.raises(ValueError, match="vnodes must be >= 1"):
        HashRing(vnodes=0)
    with pytest.raises(ValueError, match="backend must be one of"):
        HashRing(backend="gpu")


def test_lookup_returns_object_array_of_ids() -> None:
    ring = HashRing([spec("a"), spec("b")])
    out = ring.lookup_batch(np.array([1, 2, 3], dtype=np.uint64))
    assert out.dtype == object and set(out) <= {"a", "b"}
