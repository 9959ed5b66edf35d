"""Placement engine benchmark: ring, packing and ranking against peers, in one run.

``python -m bench.placement [--quick] [--json PATH]``

* ring — 1,000,000 keys on 10,000 equal workers (160 vnodes each): our batch
  lookup (hashing included) vs the pure-Python twin, ``uhashring`` and the C
  ``jump.hash`` of ``jump-consistent-hash`` (called per key, on keys we hash
  to ints beforehand, untimed); movement when 1% more workers join; balance
  with and without bounded loads.
* pack — 1,000,000 replicas (333,334 epochs x 3) onto 10,000 heterogeneous
  workers in 8 zones through ``make_strategy("capacity").place`` (validation
  included); the twin on a 1% sample, extrapolated x100; and the same items
  on homogeneous workers to compare workers used with the lower bound.
* rank — top 100,000 of 10,000,000 benefits vs numpy argpartition + sort.
"""

from __future__ import annotations

import math
import random

import numpy as np

from bench._report import Report, best_of, options
from leibrix.placement import HashRing, ItemSpec, WorkerSpec, hash_keys, make_strategy, top_k

GiB = 1 << 30


def ring_section(report: Report, n_workers: int, n_keys: int) -> None:
    import jump
    from uhashring import HashRing as UHashRing

    ids = [f"worker-{i:05d}" for i in range(n_workers)]
    specs = [WorkerSpec(i, 64 * GiB, 16.0, weight=1.0) for i in ids]
    keys = [f"tenant-{i % 97}/dataset-{i % 1013}/epoch-{i}" for i in range(n_keys)]
    ring = HashRing(specs, vnodes=160)
    per_key = best_of(lambda: ring.lookup_batch(keys)) / n_keys * 1e9
    report.add("ring.leibrix_ns_per_key", per_key, "ns", f"lookup_batch, {n_keys:,} str keys, hashing included")

    sample = keys[:: max(1, n_keys // 20_000)]
    twin = HashRing(specs, vnodes=160, backend="twin")
    twin_ns = best_of(lambda: twin.lookup_batch(sample), 1) / len(sample) * 1e9
    report.add("ring.twin_ns_per_key", twin_ns, "ns", f"pure-Python twin, {len(sample):,} sampled keys")

    uh = UHashRing(nodes=ids)  # 160 vnodes per node by default, like ours
    usample = keys[:: max(1, n_keys // 100_000)]
    uh_ns = best_of(lambda: [uh.get_node(k) for k in usample], 1) / len(usample) * 1e9
    report.add("ring.uhashring_ns_per_key", uh_ns, "ns", f"uhashring 2.5 get_node, {len(usample):,} sampled keys")

    ints = [int(h) for h in hash_keys(keys)]  # untimed: jump needs int keys
    jump_ns = best_of(lambda: [jump.hash(k, n_workers) for k in ints]) / n_keys * 1e9
    report.add("ring.jump_ns_per_key", jump_ns, "ns", "jump-consistent-hash C hash(), per-key call, keys pre-hashed")
    report.add("ring.speedup_vs_uhashring", uh_ns / per_key, "x", "target >= 20")
    report.add("ring.speedup_vs_jump", jump_ns / per_key, "x", "target > 1")

    before = ring.lookup_batch(keys)
    added = max(1, n_workers // 100)
    for i in range(added):
        ring.add(WorkerSpec(f"new-{i:05d}", 64 * GiB, 16.0, weight=1.0))
    after = ring.lookup_batch(keys)
    moved = float(np.mean(before != after))
    ideal = added / (n_workers + added)
    report.add("ring.moved_fraction_add", moved, "", f"{added} workers (+1%) join")
    report.add("ring.ideal_moved_fraction_add", ideal, "", "their share of the total weight")
    report.add("ring.moved_over_ideal", moved / ideal, "x", "target <= 1.10")
    share = ring.owned_fraction()
    arc = sum(share[f"new-{i:05d}"] for i in range(added))
    report.add("ring.arc_moved_over_ideal", arc / ideal, "x", "same, from the circle share (no key sampling noise)")
    for i in range(added):
        ring.remove(f"new-{i:05d}")

    counts = np.unique(before, return_counts=True)[1]
    mean = n_keys / n_workers
    report.add("ring.max_over_mean", counts.max() / mean, "", f"keys per worker, mean {mean:.0f}")
    arcs = np.array(list(ring.owned_fraction().values()))
    report.add("ring.arc_max_over_mean", arcs.max() * n_workers, "", "share of the hash circle owned")
    floor = np.random.default_rng(0).multinomial(n_keys, [1 / n_workers] * n_workers).max() / mean
    report.add("ring.ideal_max_over_mean", floor, "", "perfectly uniform random assignment (Poisson floor)")
    eps = 0.10
    bounded_s = best_of(lambda: ring.lookup_batch(keys, bounded_load_epsilon=eps), 1)
    bcounts = np.unique(ring.lookup_batch(keys, bounded_load_epsilon=eps), return_counts=True)[1]
    report.add("ring.bounded_epsilon", eps)
    report.add("ring.bounded_max_over_mean", bcounts.max() / mean, "", "target <= 1 + epsilon")
    report.add("ring.bounded_ns_per_key", bounded_s / n_keys * 1e9, "ns", "bounded-load assignment")


def pack_items(rng: random.Random, n_items: int) -> list[ItemSpec]:
    """Epochs of 0.2-2 GiB and 0.02-0.5 cores, 3 replicas each."""
    return [ItemSpec(f"t{i % 50}/d{i % 700}/e{i}", rng.randrange(GiB // 5, 2 * GiB),
                     round(rng.uniform(0.02, 0.5), 3), 3) for i in range(n_items)]


def hetero_workers(rng: random.Random, n: int, prefix: str = "w") -> list[WorkerSpec]:
    """Three machine sizes (64 GiB/16 cores, 128/32, 256/64), +-25% each resource, in 8 zones."""
    out = []
    for i in range(n):
        scale = rng.choice([1, 2, 4])
        out.append(WorkerSpec(f"{prefix}{i:05d}", int(64 * GiB * scale * rng.uniform(0.75, 1.25)),
                              round(16.0 * scale * rng.uniform(0.75, 1.25), 1), zone=f"z{i % 8}"))
    return out


def pack_section(report: Report, n_workers: int, n_replicas: int) -> None:
    rng = random.Random(42)
    items = pack_items(rng, math.ceil(n_replicas / 3))
    workers = hetero_workers(rng, n_workers)
    strategy = make_strategy("capacity")
    leibrix_s = best_of(lambda: strategy.place(items, workers), 1)
    placement = strategy.place(items, workers)
    report.add("pack.leibrix_s", leibrix_s, "s",
               f"{3 * len(items):,} replicas onto {n_workers:,} heterogeneous workers, validation included")
    report.add("pack.unplaceable", len(placement.unplaceable), "items")

    sample = items[::100]
    twin = make_strategy("capacity", backend="twin")
    twin_s = best_of(lambda: twin.place(sample, workers), 1) * len(items) / len(sample)
    report.add("pack.twin_s", twin_s, "s", f"twin: every 100th item ({len(sample):,}) on all workers, extrapolated")
    report.add("pack.speedup_vs_twin", twin_s / leibrix_s, "x", "target >= 50")

    total_mem = sum(3 * it.memory_bytes for it in items)
    total_cpu = sum(3 * it.cpu_cores for it in items)
    cap_mem, cap_cpu = 128 * GiB, 32.0
    bound = max(math.ceil(total_mem / cap_mem), math.ceil(total_cpu / cap_cpu))
    homo = [WorkerSpec(f"h{i:05d}", cap_mem, cap_cpu, zone=f"z{i % 8}") for i in range(int(bound * 1.3) + 8)]
    hp = strategy.place(items, homo)
    used = len({w for ws in hp.assignments.values() for w in ws})
    report.add("pack.workers_used", used, "workers", f"homogeneous {cap_mem // GiB} GiB / {cap_cpu:.0f} cores")
    report.add("pack.lower_bound_workers", bound, "workers", "max(sum mem / cap, sum cpu / cap)")
    report.add("pack.used_over_bound", used / bound, "x", "target <= 1.05")


def rank_section(report: Report, n: int, k: int) -> None:
    scores = np.random.default_rng(5).random(n)
    ours = top_k(scores, k)
    leibrix_s = best_of(lambda: top_k(scores, k))

    def peer() -> np.ndarray:
        part = np.argpartition(-scores, k - 1)[:k]
        return part[np.argsort(-scores[part], kind="stable")]

    numpy_s = best_of(peer)
    report.add("rank.leibrix_s", leibrix_s, "s", f"top_k, k={k:,} of {n:,}")
    report.add("rank.numpy_s", numpy_s, "s", "numpy argpartition + argsort")
    report.add("rank.speedup_vs_numpy", numpy_s / leibrix_s, "x", "target >= 1")
    report.add("rank.same_result", float((ours == peer()).all()), "bool")


def main(argv: list[str] | None = None) -> int:
    """Run the three sections and emit the table / JSON."""
    args = options(__doc__.splitlines()[0], argv)
    report = Report("bench.placement", quick=args.quick)
    if args.quick:
        sizes = dict(workers=1_000, keys=100_000, replicas=100_000, rank_n=1_000_000, rank_k=10_000)
        report.note("QUICK MODE: sizes reduced 10x (workers, keys, replicas, candidates); targets are for full size")
    else:
        sizes = dict(workers=10_000, keys=1_000_000, replicas=1_000_000, rank_n=10_000_000, rank_k=100_000)
    ring_section(report, sizes["workers"], sizes["keys"])
    pack_section(report, sizes["workers"], sizes["replicas"])
    rank_section(report, sizes["rank_n"], sizes["rank_k"])
    report.note(f"sizes: {sizes}")
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
