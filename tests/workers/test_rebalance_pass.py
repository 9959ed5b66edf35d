"""One rebalancing pass over a small in-memory coordinator: the plan, not the transport."""

from __future__ import annotations

from dataclasses import dataclass, field

from leibrix.workers._rebalance import PoolWorker, rebalance_pass

Key = tuple[str, str, str]


@dataclass
class Placements:
    """The replica-count part of an EpochCoordinator over a fixed placement; moves land on ``to_worker``."""

    held: dict[str, list[Key]]
    dest: str
    moves: list[tuple[Key, str]] = field(default_factory=list)

    def reserved(self, worker_id: str) -> tuple[int, float]:
        return 0, 0.0  # nothing reserved: the pass compares replica shares

    def replica_count(self, worker_id: str) -> int:
        return len(self.held.get(worker_id, []))

    def movable_replicas(self, worker_id: str, limit: int) -> list[Key]:
        return self.held.get(worker_id, [])[:limit]

    async def move_replica(self, tenant: str, dataset: str, epoch: str, from_worker: str, *,
                           make_before_break: bool, to_worker: str | None = None) -> bool:
        key = (tenant, dataset, epoch)
        assert make_before_break
        assert to_worker == self.dest, f"the pass must name the least loaded worker, named {to_worker!r}"
        self.moves.append((key, from_worker))
        self.held[from_worker].remove(key)
        self.held.setdefault(to_worker, []).append(key)
        return True


def _pool(*ids: str) -> list[PoolWorker]:
    return [PoolWorker(w, 1 << 30, 4.0) for w in ids]


async def test_an_epoch_moves_at_most_once_per_pass_and_within_the_budget() -> None:
    same = [("t", "d", f"e{i}") for i in range(4)]
    # two full workers holding the same epochs (2 replicas each), one empty newcomer
    coord = Placements({"a": list(same), "b": list(same), "c": []}, dest="c")
    moved = await rebalance_pass([_pool("a", "b", "c")], coord, budget=4)
    keys = [k for k, _ in coord.moves]
    assert moved == len(coord.moves) == 2  # a:3 b:3 c:2 is balanced (within one)
    assert len(set(keys)) == len(keys), coord.moves  # never two replicas of one epoch
    assert sorted(len(v) for v in coord.held.values()) == [2, 3, 3]


async def test_balanced_pools_move_nothing() -> None:
    coord = Placements({"a": [("t", "d", "e0")], "b": []}, dest="b")
    assert await rebalance_pass([_pool("a", "b")], coord, budget=4) == 0 and coord.moves == []
