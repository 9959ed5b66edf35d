"""``leibrix placement-demo``: place sample datasets on sample workers and print the result.

A quick, deterministic look at what each strategy does with the same input:
how full every worker ends up, where each epoch's replicas go, what could not
be placed and why, and how benefit ranking picks residents under budgets.
"""

from __future__ import annotations

import argparse
import random

from rich.console import Console
from rich.table import Table

from . import (
    STRATEGY_NAMES,
    Budget,
    Candidate,
    ItemSpec,
    WorkerSpec,
    eviction_candidates,
    make_strategy,
    select_within_budgets,
)

GiB = 1 << 30


def configure(parser: argparse.ArgumentParser) -> None:
    """Add the demo's options to its sub-command parser."""
    parser.add_argument("--strategy", choices=[*STRATEGY_NAMES, "all"], default="all",
                        help="strategy to show (default: all three)")
    parser.add_argument("--workers", type=int, default=8, help="number of sample workers (default 8)")
    parser.add_argument("--epochs", type=int, default=24, help="number of sample epochs (default 24)")
    parser.add_argument("--replicas", type=int, default=2, help="replicas per epoch (default 2)")
    parser.add_argument("--seed", type=int, default=1, help="random seed of the sample (default 1)")


def sample(n_workers: int, n_epochs: int, replicas: int, seed: int) -> tuple[list[WorkerSpec], list[ItemSpec]]:
    """Heterogeneous workers over three zones, and daily epochs of a few tenants' datasets."""
    rng = random.Random(seed)
    workers = [
        WorkerSpec(f"worker-{i:02d}", rng.choice([32, 64, 128]) * GiB, float(rng.choice([8, 16, 32])),
                   zone=f"zone-{'abc'[i % 3]}", used_memory_bytes=rng.choice([0, 0, 8 * GiB]))
        for i in range(n_workers)
    ]
    datasets = [("acme", "orders"), ("acme", "clicks"), ("globex", "ledger"), ("initech", "tickets")]
    items = []
    for i in range(n_epochs):
        tenant, dataset = datasets[i % len(datasets)]
        items.append(ItemSpec(f"{tenant}/{dataset}/2026-11-{1 + i // len(datasets):02d}",
                              rng.randrange(2, 24) * GiB, round(rng.uniform(0.5, 4.0), 1), replicas))
    return workers, items


def _gib(n: float) -> str:
    return f"{n / GiB:.0f} GiB"


def show_strategy(console: Console, name: str, workers: list[WorkerSpec], items: list[ItemSpec]) -> None:
    """Print one strategy's placement: per-worker load, per-epoch replicas, unplaceable reasons."""
    placement = make_strategy(name).place(items, workers)
    size = {it.key: it for it in items}
    load = {w.id: [w.used_memory_bytes, w.used_cpu_cores, 0] for w in workers}
    for key, ws in placement.assignments.items():
        for w in ws:
            load[w][0] += size[key].memory_bytes
            load[w][1] += size[key].cpu_cores
            load[w][2] += 1
    t = Table(title=f"strategy {name!r}: workers", title_justify="left")
    for col in ("worker", "zone", "replicas", "memory used", "cpu used"):
        t.add_column(col, justify="right" if col not in ("worker", "zone") else "left")
    for w in workers:
        mem, cpu, n = load[w.id]
        t.add_row(w.id, w.zone or "-", str(n), f"{_gib(mem)} / {_gib(w.memory_bytes)} ({100 * mem / w.memory_bytes:.0f}%)",
                  f"{cpu:.1f} / {w.cpu_cores:.0f}")
    console.print(t)
    e = Table(title=f"strategy {name!r}: epochs", title_justify="left")
    for col in ("epoch", "memory", "cpu", "replicas on"):
        e.add_column(col)
    for it in items:
        where = ", ".join(placement.assignments[it.key]) if it.key in placement.assignments else \
            f"[red]unplaceable: {placement.unplaceable[it.key]}[/red]"
        e.add_row(it.key, _gib(it.memory_bytes), f"{it.cpu_cores:.1f}", where)
    console.print(e)


def show_ranking(console: Console, items: list[ItemSpec], seed: int) -> None:
    """Print which epochs a benefit ranking keeps under budgets, and a hysteretic eviction."""
    rng = random.Random(seed)
    cands = [Candidate(it.key, round(rng.uniform(1, 100) * 1e9 / it.memory_bytes, 3), it.memory_bytes,
                       it.cpu_cores, tenant=it.key.split("/")[0]) for it in items]
    budget = Budget(sum(c.memory_bytes for c in cands) // 2)
    tenants = {"acme": Budget(budget.memory_bytes // 3)}
    chosen = select_within_budgets(cands, budget, tenants)
    t = Table(title=f"residency by benefit (global {_gib(budget.memory_bytes)}, acme {_gib(tenants['acme'].memory_bytes)})",
              title_justify="left")
    for col in ("epoch", "tenant", "benefit", "memory", "resident"):
        t.add_column(col)
    for c in sorted(cands, key=lambda c: -c.benefit):
        t.add_row(c.key, c.tenant, f"{c.benefit:.3f}", _gib(c.memory_bytes), "yes" if c.key in chosen else "")
    console.print(t)
    residents = [c for c in cands if c.key in chosen]
    newcomers = [Candidate(f"{c.key}+hot", c.benefit * 4, c.memory_bytes, c.cpu_cores, c.tenant)
                 for c in cands if c.key not in chosen][:3]
    ev = eviction_candidates(residents, newcomers, 1.5)
    console.print(f"eviction with hysteresis 1.5: evict {list(ev.evict)} to admit {list(ev.admit)}")


def run(args: argparse.Namespace) -> int:
    """Print the demo; returns the exit status."""
    console = Console()
    if args.workers < 1 or args.epochs < 0 or args.replicas < 1:
        console.print("[red]--workers and --replicas must be >= 1, --epochs >= 0[/red]")
        return 2
    workers, items = sample(args.workers, args.epochs, args.replicas, args.seed)
    for name in STRATEGY_NAMES if args.strategy == "all" else (args.strategy,):
        show_strategy(console, name, workers, items)
    show_ranking(console, items, args.seed)
    return 0
