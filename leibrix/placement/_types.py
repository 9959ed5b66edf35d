"""The small objects the service exchanges with the placement engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """One eligible worker as the placer sees it.

    The caller filters eligibility (state ACTIVE, tenant pool labels) before
    calling; the placer only checks room. ``weight`` is the consistent-hash
    weight; ``None`` means proportional to ``memory_bytes``.
    """

    id: str
    memory_bytes: int
    cpu_cores: float
    zone: str | None = None
    used_memory_bytes: int = 0
    used_cpu_cores: float = 0.0
    weight: float | None = None


@dataclass(frozen=True, slots=True)
class ItemSpec:
    """One epoch to place: ``replicas`` copies, each needing the given memory and cpu."""

    key: str
    memory_bytes: int
    cpu_cores: float
    replicas: int = 1


@dataclass(frozen=True, slots=True)
class Placement:
    """What a strategy decided.

    ``assignments`` maps each placed item to its workers (``len == replicas``:
    the holders it already had, then the new ones); ``unplaceable`` maps the
    other items to a reason naming the resource or constraint that blocked them.
    """

    assignments: dict[str, tuple[str, ...]]
    unplaceable: dict[str, str]


class Strategy(Protocol):
    """A placement policy; the caller never names a concrete class (see ``make_strategy``)."""

    name: str

    def place(
        self,
        items: Sequence[ItemSpec],
        workers: Sequence[WorkerSpec],
        *,
        existing: Mapping[str, Sequence[str]] = ...,
    ) -> Placement:
        """Place every item's missing replicas; ``existing`` holders are kept and avoided."""
        ...


@dataclass(frozen=True, slots=True)
class Candidate:
    """An epoch competing for residency: its benefit and what it would cost to hold."""

    key: str
    benefit: float
    memory_bytes: int
    cpu_cores: float = 0.0
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class Budget:
    """Memory and cpu a tenant (or the cluster) may spend."""

    memory_bytes: int
    cpu_cores: float = float("inf")


@dataclass(frozen=True, slots=True)
class Eviction:
    """Residents to evict (cheapest first) and the candidates they make room for (best first)."""

    evict: tuple[str, ...]
    admit: tuple[str, ...]
