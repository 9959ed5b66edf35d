"""The three strategies: compiled == twin, capacity/replica invariants, reasons, edge cases."""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from leibrix.placement import STRATEGY_NAMES, ItemSpec, Placement, WorkerSpec, make_strategy

GiB = 1 << 30


@st.composite
def clusters(draw):
    n = draw(st.integers(0, 10))
    workers = [
        WorkerSpec(
            f"w{i:02d}",
            memory_bytes=draw(st.integers(0, 64)),
            cpu_cores=draw(st.sampled_from([0.0, 0.5, 1.0, 3.3, 8.0])),
            zone=draw(st.one_of(st.none(), st.sampled_from(["a", "b", "c"]))),
            used_memory_bytes=draw(st.integers(0, 20)),
            used_cpu_cores=draw(st.sampled_from([0.0, 0.25, 1.1])),
            weight=draw(st.one_of(st.none(), st.sampled_from([0.0, 1.0, 2.0]))),
        )
        for i in range(n)
    ]
    items = [
        ItemSpec(f"t/d/{i}", memory_bytes=draw(st.integers(0, 24)),
                 cpu_cores=draw(st.sampled_from([0.0, 0.1, 0.3, 1.0, 2.5])),
                 replicas=draw(st.integers(1, 4)))
        for i in range(draw(st.integers(0, 25)))
    ]
    existing = {}
    for it in items:
        if workers and draw(st.booleans()):
            k = draw(st.integers(1, min(len(workers), it.replicas + 1)))
            existing[it.key] = draw(st.permutations([w.id for w in workers]))[:k]
    return items, workers, existing


def check_invariants(items, workers, existing, placement: Placement) -> None:
    """What every strategy promises, checked from the outside."""
    by_id = {w.id: w for w in workers}
    assert set(placement.assignments) | set(placement.unplaceable) == {it.key for it in items}
    assert not set(placement.assignments) & set(placement.unplaceable)
    used_mem: Counter = Counter()
    used_cpu: defaultdict = defaultdict(float)
    for it in items:
        if it.key not in placement.assignments:
            assert placement.unplaceable[it.key]
            continue
        got = placement.assignments[it.key]
        held = list(existing.get(it.key, []))
        assert len(got) == min(it.replicas, max(it.replicas, len(held)))
        assert len(set(got)) == len(got), "replicas on distinct workers"
        assert list(got[: min(len(held), it.replicas)]) == held[: it.replicas], "holders kept first"
        for w in got[len(held):]:
            used_mem[w] += it.memory_bytes
            used_cpu[w] += it.cpu_cores
    for w, mem in used_mem.items():
        spec = by_id[w]
        assert mem <= max(0, spec.memory_bytes - spec.used_memory_bytes), f"memory over capacity on {w}"
        assert used_cpu[w] <= max(0.0, spec.cpu_cores - spec.used_cpu_cores) + 1e-9, f"cpu over on {w}"


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@settings(max_examples=120, deadline=None)
@given(case=clusters(), cursor=st.integers(0, 30), eps=st.sampled_from([None, 0.2, 1.0]))
def test_native_equals_twin_and_invariants(name, case, cursor, eps) -> None:
    items, workers, existing = case
    opts = {"cursor": cursor} if name == "round_robin" else {}
    if name == "hash":
        opts = {"vnodes": 8, "bounded_load_epsilon": eps}
    native = make_strategy(name, **opts)
    twin = make_strategy(name, backend="twin", **opts)
    got = native.place(items, workers, existing=existing)
    assert got == twin.place(items, workers, existing=existing)
    if name == "round_robin":
        assert native.cursor == twin.cursor
    check_invariants(items, workers, existing, got)


def zoned(n: int, zones: int, mem: int = 64 * GiB, cpu: float = 16.0) -> list[WorkerSpec]:
    return [WorkerSpec(f"w{i:03d}", mem, cpu, zone=f"z{i % zones}") for i in range(n)]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_replicas_span_zones_when_room_allows(name) -> None:
    workers = zoned(12, 3)
    zone = {w.id: w.zone for w in workers}
    items = [ItemSpec(f"t/d/{i}", GiB, 0.5, replicas=3) for i in range(40)]
    got = make_strategy(name).place(items, workers)
    assert not got.unplaceable
    for ws in got.assignments.values():
        assert len({zone[w] for w in ws}) == 3


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_zone_is_a_preference_not_a_wall(name) -> None:
    # zone z1 is full: the item still gets 3 replicas, two zones used
    workers = [WorkerSpec("a1", 10, 1, zone="z0"), WorkerSpec("a2", 10, 1, zone="z0"),
               WorkerSpec("b1", 10, 1, zone="z1", used_memory_bytes=10), WorkerSpec("c1", 10, 1, zone="z2")]
    got = make_strategy(name).place([ItemSpec("k", 5, 0.5, replicas=3)], workers)
    assert sorted(got.assignments["k"]) == ["a1", "a2", "c1"]


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_replace_after_worker_death_keeps_survivors(name) -> None:
    workers = zoned(9, 3)
    strategy = make_strategy(name)
    items = [ItemSpec(f"t/d/{i}", GiB, 1.0, replicas=3) for i in range(30)]
    first = strategy.place(items, workers).assignments
    dead = "w004"
    survivors = [w for w in workers if w.id != dead]
    existing = {k: [w for w in ws if w != dead] for k, ws in first.items()}
    again = strategy.place(items, survivors, existing=existing)
    assert not again.unplaceable
    for k, ws in again.assignments.items():
        assert list(ws[: len(existing[k])]) == existing[k]  # nothing that survived moves
        assert dead not in ws and len(set(ws)) == 3
    moved = sum(len(ws) - len(existing[k]) for k, ws in again.assignments.items())
    assert moved == sum(1 for ws in first.values() if dead in ws)


def test_unplaceable_reasons_name_the_resource() -> None:
    workers = [WorkerSpec("w1", 10 * GiB, 4.0), WorkerSpec("w2", 10 * GiB, 1.0)]
    items = [ItemSpec("too-big", 11 * GiB, 1.0), ItemSpec("too-hot", GiB, 5.0),
             ItemSpec("too-many", GiB, 0.1, replicas=3), ItemSpec("both", 6 * GiB, 2.0, replicas=2)]
    for name in STRATEGY_NAMES:
        got = make_strategy(name).place(items, workers)
        assert set(got.unplaceable) == {"too-big", "too-hot", "too-many", "both"}, name
        assert got.unplaceable["too-many"].startswith("replicas: needs 3 more")
        assert "memory" in got.unplaceable["too-big"].split(":")[0]
        assert "cpu" in got.unplaceable["too-hot"].split(":")[0]
        assert "cpu" in got.unplaceable["both"]
        # hopeless items are reported precisely (and without walking the ring/worker list)
        assert got.unplaceable["too-big"] == \
            f"memory: needs {11 * GiB} B per replica, the most free on any worker is {10 * GiB} B"
        assert got.unplaceable["too-hot"] == "cpu: needs 5.0 cores per replica, the most free on any worker is 4.0"


@pytest.mark.parametrize("name", STRATEGY_NAMES)
def test_edge_cases(name) -> None:
    s = make_strategy(name)
    assert s.place([], zoned(3, 1)) == Placement({}, {})
    assert s.place([ItemSpec("k", 1, 0.0)], []).unplaceable["k"].startswith("replicas:")
    one = s.place([ItemSpec("k", 1, 0.0), ItemSpec("k2", 1, 0.0, replicas=2)], [WorkerSpec("solo", 8, 1)])
    assert one.assignments == {"k": ("solo",)} and "k2" in one.unplaceable
    full = [WorkerSpec(f"f{i}", 8, 1.0, used_memory_bytes=8) for i in range(4)]
    assert "memory" in s.place([ItemSpec("k", 1, 0.0)], full).unplaceable["k"]
    # an item already fully held needs nothing
    assert s.place([ItemSpec("k", 100, 9.0)], [], existing={"k": ["gone"]}).assignments == {"k": ("gone",)}
    uni = s.place([ItemSpec("租户/数据/🙂", 1, 0.0)], [WorkerSpec("wörker", 8, 1)])
    assert uni.assignments == {"租户/数据/🙂": ("wörker",)}


def test_hash_strategy_starting_with_no_workers() -> None:
    s = make_strategy("hash")
    assert s.place([ItemSpec("k", 1, 0.0)], []).unplaceable
    got = s.place([ItemSpec("k", 1, 0.0)], [WorkerSpec("w1", 512 * GiB, 64.0), WorkerSpec("w2", 64 * GiB, 8.0)])
    assert got.assignments["k"][0] in {"w1", "w2"}


def test_hash_skips_zero_weight_workers() -> None:
    workers = [WorkerSpec("zero", GiB, 4.0, weight=0.0), WorkerSpec("one", GiB, 4.0, weight=1.0)]
    got = make_strategy("hash").place([ItemSpec(f"k{i}", 1, 0.0) for i in range(50)], workers)
    assert set(w for ws in got.assignments.values() for w in ws) == {"one"}
    only_zero = make_strategy("hash").place([ItemSpec("k", 1, 0.0)], workers[:1])
    assert only_zero.unplaceable["k"].startswith("replicas:")


def test_hash_minimal_movement_when_a_worker_joins() -> None:
    s = make_strategy("hash")
    items = [ItemSpec(f"t/d/{i}", 1, 0.0) for i in range(2000)]
    workers = [WorkerSpec(f"w{i}", GiB, 4.0) for i in range(10)]
    before = s.place(items, workers).assignments
    after = s.place(items, workers + [WorkerSpec("new", GiB, 4.0)]).assignments
    moved = [k for k in before if before[k] != after[k]]
    assert moved and all(after[k] == ("new",) for k in moved)
    assert len(moved) / len(items) == pytest.approx(1 / 11, abs=0.03)


def test_hash_bounded_load_caps_replicas_per_worker() -> None:
    workers = [WorkerSpec(f"w{i}", GiB, 64.0) for i in range(10)]
    items = [ItemSpec(f"t/d/{i}", 1, 0.0, replicas=2) for i in range(500)]
    got = make_strategy("hash", bounded_load_epsilon=0.1).place(items, workers)
    load = Counter(w for ws in got.assignments.values() for w in ws)
    assert max(load.values()) <= math.ceil(1.1 * 1000 / 10)


def test_round_robin_cursor_resumes_the_rotation() -> None:
    workers = zoned(7, 7)
    items = [ItemSpec(f"t/d/{i}", 1, 0.0, replicas=2) for i in range(20)]
    whole = make_strategy("round_robin").place(items, workers).assignments
    first = make_strategy("round_robin")
    part1 = first.place(items[:9], workers).assignments
    second = make_strategy("round_robin", cursor=first.cursor)  # e.g. persisted and reloaded
    part2 = second.place(items[9:], workers).assignments
    assert {**part1, **part2} == whole
    counts = Counter(w for ws in whole.values() for w in ws)
    assert max(counts.values()) - min(counts.values()) <= 1  # even rotation


def test_capacity_packs_close_to_the_lower_bound() -> None:
    import random

    rng = random.Random(7)
    workers = [WorkerSpec(f"w{i:03d}", 64 * GiB, 32.0, zone=f"z{i % 4}") for i in range(300)]
    items = [ItemSpec(f"t/d/{i}", rng.randrange(GiB // 2, 2 * GiB), rng.uniform(0.1, 0.8), replicas=2)
             for i in range(5000)]
    got = make_strategy("capacity").place(items, workers)
    assert not got.unplaceable
    used = {w for ws in got.assignments.values() for w in ws}
    bound = max(math.ceil(sum(2 * it.memory_bytes for it in items) / (64 * GiB)),
                math.ceil(sum(2 * it.cpu_cores for it in items) / 32.0))
    assert len(used) <= 1.05 * bound


def test_validation_names_the_argument() -> None:
    s = make_strategy("capacity")
    ok = [WorkerSpec("w", 8, 1.0)]
    cases = [
        (dict(workers=[WorkerSpec("w", -1, 1.0)]), ValueError, r"workers\[0\]\.memory_bytes must be >= 0"),
        (dict(workers=[WorkerSpec("w", 1, float("nan"))]), ValueError, r"workers\[0\]\.cpu_cores must be finite"),
        (dict(workers=ok + ok), ValueError, r"workers\[1\]: duplicate id 'w'"),
        (dict(workers=[("w", 1, 1)]), TypeError, r"workers\[0\] must be a WorkerSpec"),
        (dict(items=[ItemSpec("k", 1, 1.0, replicas=0)]), ValueError, r"items\[0\]\.replicas must be >= 1"),
        (dict(items=[ItemSpec("k", 1.5, 1.0)]), TypeError, r"items\[0\]\.memory_bytes must be an int"),
        (dict(items=[ItemSpec("", 1, 1.0)]), ValueError, r"items\[0\]\.key must not be empty"),
        (dict(existing={"k": ["a", "a"]}), ValueError, r"existing\['k'\]\[1\]: duplicate id 'a'"),
        (dict(existing={"k": "a"}), TypeError, r"existing\['k'\] must be a sequence"),
    ]
    for kwargs, exc, match in cases:
        args = dict(items=[ItemSpec("k", 1, 1.0)], workers=ok, existing=None) | kwargs
        with pytest.raises(exc, match=match):
            s.place(args["items"], args["workers"], existing=args["existing"])
    with pytest.raises(ValueError, match="name must be one of"):
        make_strategy("random")
    with pytest.raises(TypeError, match="make_strategy\\('hash'\\).*cursor"):
        make_strategy("hash", cursor=3)
    with pytest.raises(ValueError, match="bounded_load_epsilon must be >= 0.0, got -0.5"):
        make_strategy("hash", bounded_load_epsilon=-0.5)
    with pytest.raises(ValueError, match="bounded_load_epsilon must be > 0, got 0.0"):
        make_strategy("hash", bounded_load_epsilon=0.0)
    with pytest.raises(ValueError, match="cursor must be >= 0"):
        make_strategy("round_robin", cursor=-1)


def test_capacity_fills_workers_in_use_before_opening_idle_ones() -> None:
    workers = [WorkerSpec("idle", 64 * GiB, 16.0), WorkerSpec("busy", 64 * GiB, 16.0, used_memory_bytes=60 * GiB)]
    got = make_strategy("capacity").place([ItemSpec("small", GiB, 1.0), ItemSpec("big", 8 * GiB, 1.0)], workers)
    assert got.assignments == {"small": ("busy",), "big": ("idle",)}


def test_capacity_mixes_memory_and_cpu_heavy_items() -> None:
    """Runs of equal cpu estimates (they are coarse) must not fill fresh workers with cpu alone."""
    import random

    rng = random.Random(11)
    workers = [WorkerSpec(f"w{i:03d}", 128 * GiB, 32.0, zone=f"z{i % 4}") for i in range(500)]
    items = [ItemSpec(f"t/d/{i}", rng.randrange(GiB // 5, 2 * GiB), round(rng.uniform(0.02, 0.5), 2), replicas=3)
             for i in range(12000)]
    got = make_strategy("capacity").place(items, workers)
    assert not got.unplaceable
    used = {w for ws in got.assignments.values() for w in ws}
    bound = max(math.ceil(sum(3 * it.memory_bytes for it in items) / (128 * GiB)),
                math.ceil(sum(3 * it.cpu_cores for it in items) / 32.0))
    assert len(used) <= 1.03 * bound
