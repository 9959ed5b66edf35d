"""Tenant quotas, usage accounting and the admission-policy decision.

Multi-tenant governance rests on three rules:

* **Budgets are hard.** What a tenant has *charged* — every replica of its
  LOADING, VALIDATING, READY and RETIRING epochs (``_lifecycle.CHARGED``) —
  never exceeds its memory and CPU budgets, and the number of such epochs never
  exceeds ``max_epochs``. Loading counts as much as resident: bytes being
  pulled already occupy worker memory. PENDING epochs are only a queue and
  cost nothing.
* **Budgets are per tenant.** One tenant's usage is never an input to another
  tenant's budget check, so no tenant can exhaust another's quota (the cluster
  capacity is shared, by benefit, in the coordinator).
* **Pools isolate.** A tenant with a ``worker_pool`` is placed only on workers
  of that pool; one without is placed on the shared pool (workers with no pool
  label).
* **Guarantees protect.** ``guaranteed_memory_bytes`` is memory of the tenant
  that another tenant's higher benefit never displaces: residency by benefit
  may take only what a tenant holds *above* its guarantee
  (:func:`displaceable`), and a tenant below its guarantee may take room from
  tenants above theirs whatever the benefits (the coordinator's scheduling).
  The guarantees of the tenants sharing a pool must fit the pool's capacity
  when one is raised (:func:`guarantee_shortfall`).

Limits are 0 = unlimited. The upstream ``max_storage_mb`` is the tenant's
in-memory storage: the effective memory budget is the smaller of
``max_memory_bytes`` and ``max_storage_mb`` MiB when both are set.

Policies (``AdmissionPolicy``) decide what happens when an admission does not
fit: ``REJECT`` (the default) answers RESOURCE_EXHAUSTED with the numbers and
changes nothing; ``QUEUE`` accepts and keeps what does not fit PENDING until
room appears; ``EVICT_LOWER_BENEFIT`` makes room by evicting the tenant's own
epochs whose benefit is lower by at least the hysteresis factor, and rejects
like ``REJECT`` if that is still not enough.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from leibrix.wire._proto import leibrix_cp as cp


class Policy(enum.IntEnum):
    """What to do with an admission that does not fit (wire values of ``AdmissionPolicy``)."""

    REJECT = 1
    QUEUE = 2
    EVICT_LOWER_BENEFIT = 3


@dataclass(frozen=True, slots=True)
class Quota:
    """A tenant's configuration: hard budgets (0 = unlimited), policy, pool, placement defaults."""

    tenant_id: str
    max_datasets: int = 0
    max_epochs: int = 0
    max_memory_bytes: int = 0
    max_cpu_cores: float = 0.0
    policy: Policy = Policy.REJECT
    pool: str = ""
    priority: int = 0
    default_strategy: int = 0
    default_replication: int = 0
    max_storage_mb: int = 0
    guaranteed_memory_bytes: int = 0

    @classmethod
    def from_wire(cls, q: cp.TenantQuota | object) -> Quota:
        """Build from a ``TenantQuota`` (betterproto or upb ``_pb2``: same field names)."""
        mem = q.max_memory_bytes
        storage = q.max_storage_mb << 20
        if storage and (not mem or storage < mem):
            mem = storage
        policy = int(q.admission_policy) or int(Policy.REJECT)
        return cls(
            tenant_id=q.tenant_id,
            max_datasets=q.max_datasets,
            max_epochs=q.max_epochs,
            max_memory_bytes=mem,
            max_cpu_cores=q.max_cpu_cores,
            policy=Policy(policy),
            pool=q.worker_pool,
            priority=q.priority,
            default_strategy=int(q.default_strategy),
            default_replication=q.default_replication,
            max_storage_mb=q.max_storage_mb,
            guaranteed_memory_bytes=q.guaranteed_memory_bytes,
        )

    def to_wire(self) -> cp.TenantQuota:
        """The ``TenantQuota`` that describes this quota (as the client sent it)."""
        return cp.TenantQuota(
            tenant_id=self.tenant_id,
            max_datasets=self.max_datasets,
            max_epochs=self.max_epochs,
            max_storage_mb=self.max_storage_mb,
            max_memory_bytes=self.max_memory_bytes if not self.max_storage_mb else 0,
            max_cpu_cores=self.max_cpu_cores,
            admission_policy=cp.AdmissionPolicy(int(self.policy)),
            worker_pool=self.pool,
            priority=self.priority,
            default_strategy=cp.PlacementStrategy(self.default_strategy),
            default_replication=self.default_replication,
            guaranteed_memory_bytes=self.guaranteed_memory_bytes,
        )


class Usage:
    """What a tenant holds now: datasets, charged epochs and their memory/CPU (all replicas), and the
    PENDING queue with the memory/CPU it would charge once loaded."""

    __slots__ = ("datasets", "epochs", "memory_bytes", "cpu_cores", "pending", "pending_memory_bytes",
                 "pending_cpu_cores")

    def __init__(self) -> None:
        self.datasets = 0
        self.epochs = 0
        self.memory_bytes = 0
        self.cpu_cores = 0.0
        self.pending = 0
        self.pending_memory_bytes = 0
        self.pending_cpu_cores = 0.0

    def charge(self, memory_bytes: int, cpu_cores: float, epochs: int = 1) -> None:
        """Add (or with negative numbers, release) charged epochs and their resources."""
        self.epochs += epochs
        self.memory_bytes += memory_bytes
        self.cpu_cores += cpu_cores

    def to_wire(self) -> cp.TenantUsage:
        """The ``TenantUsage`` message for ``GetTenant``/``ListTenants``."""
        return cp.TenantUsage(
            datasets=self.datasets,
            epochs=self.epochs,
            memory_bytes=self.memory_bytes,
            cpu_cores=round(self.cpu_cores, 6),
            pending_epochs=self.pending,
        )


_CPU_EPS = 1e-9


def budget_shortfall(quota: Quota, usage: Usage | Amount, *, memory_bytes: int, cpu_cores: float, epochs: int) -> str | None:
    """None if charging this demand keeps the tenant within every budget, else the first excess with numbers.

    The comparison is ``charged + demand <= budget``: a demand that lands
    exactly on the budget fits.
    """
    t = quota.tenant_id
    if quota.max_epochs and usage.epochs + epochs > quota.max_epochs:
        return (
            f"tenant {t!r} epoch budget: {quota.max_epochs} epochs, {usage.epochs} charged + {epochs} requested "
            f"= {usage.epochs + epochs}"
        )
    if quota.max_memory_bytes and usage.memory_bytes + memory_bytes > quota.max_memory_bytes:
        return (
            f"tenant {t!r} memory budget: {quota.max_memory_bytes} bytes, {usage.memory_bytes} charged + "
            f"{memory_bytes} requested = {usage.memory_bytes + memory_bytes}"
        )
    if quota.max_cpu_cores and usage.cpu_cores + cpu_cores > quota.max_cpu_cores + _CPU_EPS:
        return (
            f"tenant {t!r} CPU budget: {quota.max_cpu_cores:g} cores, {usage.cpu_cores:g} charged + "
            f"{cpu_cores:g} requested = {usage.cpu_cores + cpu_cores:g}"
        )
    return None


@dataclass(frozen=True, slots=True)
class Amount:
    """A quantity checked against budgets: epochs, memory bytes, CPU cores."""

    epochs: int
    memory_bytes: int
    cpu_cores: float

    def __add__(self, other: Amount) -> Amount:
        return Amount(self.epochs + other.epochs, self.memory_bytes + other.memory_bytes,
                      self.cpu_cores + other.cpu_cores)

    def __sub__(self, other: Amount) -> Amount:
        return Amount(self.epochs - other.epochs, self.memory_bytes - other.memory_bytes,
                      self.cpu_cores - other.cpu_cores)


#: Nothing: the start of a sum of amounts.
NO_AMOUNT = Amount(0, 0, 0.0)


def committed(u: Usage) -> Amount:
    """Charged usage plus the PENDING queue: what REJECT-policy admissions are checked against.

    Counting the queue keeps two admissions racing toward the same budget from
    both being accepted before either is loaded.
    """
    return Amount(u.epochs + u.pending, u.memory_bytes + u.pending_memory_bytes, u.cpu_cores + u.pending_cpu_cores)


def dataset_shortfall(quota: Quota, datasets: int) -> str | None:
    """None if one more dataset fits ``max_datasets`` next to ``datasets`` admitted ones, else the numbers."""
    if quota.max_datasets and datasets + 1 > quota.max_datasets:
        return f"tenant {quota.tenant_id!r} dataset budget: {quota.max_datasets} datasets, {datasets} admitted"
    return None


def displaceable(quota: Quota, memory_bytes: int) -> int:
    """Bytes of the tenant's charged ``memory_bytes`` that another tenant may displace: what lies above its
    guarantee (everything without one)."""
    return max(0, memory_bytes - quota.guaranteed_memory_bytes)


def below_guarantee(quota: Quota, memory_bytes: int, more: int) -> bool:
    """Whether charging ``more`` bytes keeps the tenant within its guarantee (never true without one)."""
    return quota.guaranteed_memory_bytes > 0 and memory_bytes + more <= quota.guaranteed_memory_bytes


def guarantee_shortfall(pool: str, guarantees: dict[str, int], capacity_bytes: int) -> str | None:
    """None if the ``guarantees`` (tenant → bytes) of the tenants sharing ``pool`` fit its ``capacity_bytes``,
    else the numbers."""
    total = sum(guarantees.values())
    if total <= capacity_bytes:
        return None
    name = f"pool {pool!r}" if pool else "the shared pool"
    parts = ", ".join(f"{t!r} {b}" for t, b in sorted(guarantees.items()) if b)
    return (f"guaranteed memory of {name}: {total} bytes guaranteed ({parts}) > {capacity_bytes} bytes of capacity "
            "on its workers now; add workers or lower a guarantee")

