"""Admission batches are written concurrently: the next batch is decided while an earlier one waits for etcd,
and it decides as if the earlier batch were already stored (real etcd, a real master; one etcd write is held
back at the leader's fenced writer to make "still being written" last)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, all_ready, quota, rpc, states
from tests.support.cluster import leading, master_with_workers, start_master
from tests.support.poll import eventually

QUEUE, EVICT = cp.AdmissionPolicy.QUEUE, cp.AdmissionPolicy.EVICT_LOWER_BENEFIT


class HeldWrite:
    """Holds the leader's fenced writes that create ``dataset`` until ``release``; every other write passes."""

    def __init__(self, master: Any, dataset: str) -> None:
        coord = master.parts.admission.coordinator
        self._commit: Callable[..., Awaitable[int]] = coord._commit
        self._key = coord.keys.dataset("acme", dataset)
        self.entered = trio.Event()
        self._gate = trio.Event()
        coord._commit = self

    async def __call__(self, ops: Any, **kw: Any) -> int:
        flat = [op for item in ops for op in getattr(item, "ops", (item,))]  # Atomic groups hold ops
        if any(getattr(op, "key", None) == self._key for op in flat) and not self._gate.is_set():
            self.entered.set()
            await self._gate.wait()
        return await self._commit(ops, **kw)

    def release(self) -> None:
        self._gate.set()


class Deferrals:
    """Records the datasets the admission batcher defers to a later batch (behind a write in flight)."""

    def __init__(self, master: Any) -> None:
        adm = master.parts.admission.admissions
        decide = adm._decide_batch
        self.datasets: list[str] = []

        async def recording(jobs: Any, inflight: Any) -> Any:
            batch, deferred = await decide(jobs, inflight)
            self.datasets.extend(job.spec.dataset_id for job in deferred)
            return batch, deferred

        adm._decide_batch = recording


async def test_a_batch_is_written_while_an_earlier_one_waits_and_a_dataset_in_flight_waits_for_it(
        etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=QUEUE))
    held = HeldWrite(m, "slow")
    answers: dict[str, list[cp.AdmitDatasetResponse]] = {"slow": []}

    async def admit_slow() -> None:
        answers["slow"].append(await rpc(m, "admit_dataset", admission(dataset="slow")))

    nursery.start_soon(admit_slow)
    with trio.fail_after(10):
        await held.entered.wait()
    # another dataset is decided, written and acknowledged while "slow" is still being written
    fast = await rpc(m, "admit_dataset", admission(dataset="fast"))
    assert fast.message.startswith("admitted 1 new epoch") and answers["slow"] == []
    assert set(states(m, dataset="fast").values()) == {"PENDING"} and states(m, dataset="slow") == {}
    # the same dataset again waits for the write in flight, then is decided on the stored state: a no-op
    deferred = Deferrals(m)
    nursery.start_soon(admit_slow)
    await eventually(lambda: deferred.datasets, until=lambda d: "slow" in d,
                     what="the batcher deferring the second 'slow' behind the write in flight")
    assert answers["slow"] == []
    held.release()
    await eventually(lambda: len(answers["slow"]) == 2, what="both answers")
    assert [a.message for a in answers["slow"]] == ["admitted 1 new epoch(s) of 1; they wait as PENDING until "
                                                    "capacity and budget allow", "already admitted: no change"]
    assert len(states(m, dataset="slow")) == 1


async def test_evictions_decided_by_a_batch_in_flight_are_neither_reused_nor_forgotten(
        etcd_server: Any, nursery: trio.Nursery) -> None:
    """Three residents fill the budget but for one epoch's room less a byte; two new epochs of the residents'
    size each need one evicted. The second is decided while the first's write is held: it must pick the *other*
    cold epoch (the first one's victim is taken) and count the room the first one's eviction makes, so both load
    and the hot resident stays."""
    m = await master_with_workers(etcd_server.endpoint, nursery, "w1")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=EVICT))
    await rpc(m, "admit_dataset", admission(dataset="cold", days=3, hints=cp.EstimateHints(scan_cost=100.0)))
    await all_ready(m, dataset="cold", n=3)
    state = m.parts.admission.state  # loaded, the residents are charged their measured bytes
    size = max(e.memory_bytes for e in state.dataset_epochs("acme", "cold"))
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=EVICT,
                                              max_memory_bytes=state.usage("acme").memory_bytes + size - 1))
    hot = sorted(states(m, dataset="cold"))[2]
    await rpc(m, "report_access", cp.ReportAccessRequest(tenant_id="acme", dataset_id="cold", epoch_id=hot,
                                                        count=1000))
    new = cp.EstimateHints(bytes_per_epoch=size, scan_cost=1000.0)
    held = HeldWrite(m, "new1")
    first: list[cp.AdmitDatasetResponse] = []

    async def admit_first() -> None:
        first.append(await rpc(m, "admit_dataset", admission(dataset="new1", hints=new)))

    nursery.start_soon(admit_first)
    with trio.fail_after(10):
        await held.entered.wait()
    second = await rpc(m, "admit_dataset", admission(dataset="new2", hints=new))
    assert second.status == cp.AdmitDatasetResponseStatus.ACCEPTED and first == []
    held.release()
    await eventually(lambda: len(first) == 1, what="the first answer")
    await all_ready(m, dataset="new1", n=1)
    await all_ready(m, dataset="new2", n=1)
    cold = states(m, dataset="cold")
    assert cold[hot] == "READY" and sorted(cold.values()) == ["READY", "RETIRED", "RETIRED"]
    usage = (await rpc(m, "get_tenant", cp.GetTenantRequest(tenant_id="acme"))).usage
    charged = [e for e in state.epochs.values() if e.tenant_id == "acme" and e.state.name == "READY"]
    assert len(charged) == 3 and usage.memory_bytes == sum(e.memory_bytes for e in charged)
