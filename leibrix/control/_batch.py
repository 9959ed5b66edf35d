"""The admission queue's units: one queued admission (:class:`Job`) and one batch being decided and written
(:class:`Batch`), used by ``leibrix.control._admission`` and ``leibrix.control._decide``."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from leibrix.control._planned import Planned
from leibrix.domain._errors import ApiError
from leibrix.domain._tenants import NO_AMOUNT, Amount
from leibrix.domain._validation import AdmissionSpec
from leibrix.state._model import EpochKey
from leibrix.store._etcd import Delete, Put
from leibrix.store._store import Atomic
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["Batch", "Job"]


@dataclass(slots=True, eq=False)
class Job:
    """One queued admission: the validated request and its source plan (None: answered by its request id)."""

    spec: AdmissionSpec
    planned: Planned | None = None
    done: trio.Event = field(default_factory=trio.Event)
    response: cp.AdmitDatasetResponse | None = None
    error: ApiError | None = None


@dataclass(slots=True)
class Batch:
    """Writes of one batch and the effects later admissions must see until the batch is stored.

    A batch is decided against the in-memory state, which shows a batch's
    writes only once they are committed; so each new batch starts from the
    effects of the batches still being written (``after``): their datasets and
    request ids (an admission touching one waits for that write), and their
    new datasets, demand and eviction victims (counted as if stored).
    """

    #: New epochs and deleted uncommitted ones: written first.
    epoch_ops: list[Put | Delete | Atomic] = field(default_factory=list)
    #: Per admission, its dataset record and idempotency record: written last (they commit the epochs).
    final: list[Atomic] = field(default_factory=list)
    datasets: set[tuple[str, str]] = field(default_factory=set)
    requests: set[str] = field(default_factory=set)
    new_datasets: dict[str, int] = field(default_factory=dict)
    #: Per tenant: what its accepted admissions add to its usage, net of the evictions they decided.
    demand: dict[str, Amount] = field(default_factory=dict)
    retire: list[tuple[EpochKey, str]] = field(default_factory=list)
    accepted: list[Job] = field(default_factory=list)
    #: Datasets and request ids of batches still being written (an admission touching one is deferred).
    busy_datasets: set[tuple[str, str]] = field(default_factory=set)
    busy_requests: set[str] = field(default_factory=set)
    #: Epochs already chosen for eviction (by this batch or one being written): never counted twice.
    victims: set[EpochKey] = field(default_factory=set)

    @classmethod
    def after(cls, inflight: Sequence[Batch]) -> Batch:
        """A new batch that sees the effects of ``inflight`` (decided, not yet stored)."""
        b = cls()
        for prior in inflight:
            b.busy_datasets |= prior.datasets
            b.busy_requests |= prior.requests
            b.victims |= prior.victims
            for t, n in prior.new_datasets.items():
                b.new_datasets[t] = b.new_datasets.get(t, 0) + n
            for t, amount in prior.demand.items():
                b.add_demand(t, amount)
        return b

    def add_demand(self, tenant_id: str, amount: Amount) -> None:
        """Count ``amount`` more in the tenant's demand."""
        self.demand[tenant_id] = self.demand.get(tenant_id, NO_AMOUNT) + amount

    def conflicts(self, spec: AdmissionSpec) -> bool:
        """Whether ``spec`` touches a dataset or request id of this batch or of one being written."""
        ds = (spec.tenant_id, spec.dataset_id)
        rid = spec.request_id
        return (ds in self.datasets or ds in self.busy_datasets
                or bool(rid) and (rid in self.requests or rid in self.busy_requests))
