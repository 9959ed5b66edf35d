"""Tenant isolation of resources on the real coordinator (``tests.support.control``): guaranteed memory is never
displaced by another tenant's benefit, even one that floods heat and admissions; a tenant within its guarantee
claims room from memory others hold above theirs; each tenant's heat weight is bounded (fair share); every
eviction is logged with the two benefits."""

from __future__ import annotations

import logging

import pytest
import trio

from leibrix.control._settings import CoordinatorConfig
from leibrix.domain._heat import HeatModel
from leibrix.domain._lifecycle import State
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import MiB, admission
from tests.support.control import STATUS, ControlLoop

QUEUE = cp.AdmissionPolicy.QUEUE
EPOCH = 16 * MiB


def hints(scan_cost: float = 100.0) -> cp.EstimateHints:
    return cp.EstimateHints(bytes_per_epoch=EPOCH, scan_cost=scan_cost)


async def settle(loop: ControlLoop, passes: int = 4) -> None:
    """Scheduling passes, each followed by every LOADING replica reporting COMPLETED."""
    for _ in range(passes):
        await loop.schedule()
        for e in list(loop.state.epochs.values()):
            if e.state is State.LOADING:
                for w in e.worker_ids():
                    await loop.report(w, e.key, STATUS.COMPLETED)


def ready_bytes(loop: ControlLoop, tenant: str) -> int:
    return sum(e.memory_bytes for e in loop.state.epochs.values() if e.tenant_id == tenant and e.state is State.READY)


async def two_tenants(nursery: trio.Nursery, guarantee: int, config: CoordinatorConfig = CoordinatorConfig()
                      ) -> ControlLoop:
    loop = await ControlLoop(config).start(nursery)
    loop.workers.join("w1", 4 * EPOCH)
    await loop.tenant("good", admission_policy=QUEUE, guaranteed_memory_bytes=guarantee)
    await loop.tenant("evil", admission_policy=QUEUE)
    return loop


async def flood(loop: ControlLoop, rounds: int) -> None:
    """The hostile tenant: many admissions of hot epochs, and a flood of access reports on every one."""
    for i in range(rounds):
        await loop.admit(admission("evil", f"spam{i}", days=2, hints=hints(1000.0)))
        for e in list(loop.state.epochs.values()):
            if e.tenant_id == "evil":
                for _ in range(50):
                    loop.coord.report_access(e, 1_000_000_000, 0)
        await settle(loop, passes=2)


@pytest.mark.parametrize("guarantee", [2 * EPOCH, 0])
async def test_guaranteed_memory_holds_under_a_tenant_flooding_heat_and_admissions(
        nursery: trio.Nursery, guarantee: int) -> None:
    loop = await two_tenants(nursery, guarantee)
    await loop.admit(admission("good", "orders", days=2, hints=hints()))
    await settle(loop)
    assert ready_bytes(loop, "good") == 2 * EPOCH
    await flood(loop, rounds=5)
    good = [e.epoch_id for e in loop.state.epochs.values() if e.tenant_id == "good"]
    evicted_good = [eid for _, eid, _ in loop.workers.evicted if eid in good]
    if guarantee:
        assert evicted_good == [] and ready_bytes(loop, "good") == 2 * EPOCH
        assert ready_bytes(loop, "evil") == 2 * EPOCH  # the rest of the pool is the flood's, by benefit
    else:  # the same flood without a guarantee takes the pool: the guarantee is what held it
        assert evicted_good and ready_bytes(loop, "good") == 0


async def test_a_tenant_within_its_guarantee_claims_room_above_other_guarantees(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    loop = await two_tenants(nursery, 2 * EPOCH)
    await flood(loop, rounds=2)
    assert ready_bytes(loop, "evil") == 4 * EPOCH  # the pool is full of hot epochs
    caplog.set_level(logging.INFO, logger="leibrix.control._scheduling")
    await loop.admit(admission("good", "orders", days=3, hints=hints(1.0)))  # colder than anything resident
    await settle(loop)
    assert ready_bytes(loop, "good") == 2 * EPOCH  # its guarantee, not its third epoch
    assert ready_bytes(loop, "evil") == 2 * EPOCH
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evicting ")]
    assert len(lines) == 2, lines
    for line in lines:
        assert "(tenant evil, benefit " in line and "(tenant good, benefit " in line
        assert "guaranteed memory" in line and "evil/spam" in line and "good/orders/" in line
    # and it never claims more: the third epoch waits, the flood keeps what lies above the guarantee
    await flood(loop, rounds=1)
    assert ready_bytes(loop, "good") == 2 * EPOCH


async def test_displacement_by_benefit_is_logged_with_both_benefits(
        nursery: trio.Nursery, caplog: pytest.LogCaptureFixture) -> None:
    loop = await two_tenants(nursery, 0)
    await loop.admit(admission("good", "orders", days=4, hints=hints(1.0)))
    await settle(loop)
    caplog.set_level(logging.INFO, logger="leibrix.control._scheduling")
    await loop.admit(admission("evil", "hot", days=1, hints=hints(1000.0)))
    await settle(loop, passes=1)
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("evicting ")]
    victim = next(e for e in loop.state.epochs.values() if e.tenant_id == "good" and e.state is State.PENDING)
    hot = next(e for e in loop.state.epochs.values() if e.tenant_id == "evil")
    now = loop.coord.clock()
    assert f"good/orders/{victim.epoch_id} (tenant good, benefit " in line
    assert f"evil/hot/{hot.epoch_id} (tenant evil, benefit {loop.coord.benefit(hot, now):.6g})" in line
    assert line.endswith(": higher benefit")


async def test_a_tenants_heat_weight_is_bounded_and_keeps_its_own_ranking(nursery: trio.Nursery) -> None:
    config = CoordinatorConfig(heat=HeatModel(tenant_budget=1000.0))
    loop = await two_tenants(nursery, 0, config)
    await loop.admit(admission("good", "orders", days=2, hints=hints()))
    await loop.admit(admission("evil", "spam", days=2, hints=hints()))
    coord = loop.coord
    good = sorted((e for e in loop.state.epochs.values() if e.tenant_id == "good"), key=lambda e: e.epoch_id)
    evil = sorted((e for e in loop.state.epochs.values() if e.tenant_id == "evil"), key=lambda e: e.epoch_id)
    coord.report_access(good[0], 500, 0)  # within the budget: raw heat
    now = coord.clock()
    before = coord.benefits(good, now)
    assert before[0] == pytest.approx(before[1] * 501)
    coord.report_access(evil[0], 10**12, 0)
    coord.report_access(evil[1], 10**11, 0)
    now = coord.clock()
    b_good, b_evil = coord.benefits(good, now), coord.benefits(evil, now)
    assert b_good == pytest.approx(before)  # another tenant's reports never move this one's benefits
    ceiling = 100.0 * 1000.0 / EPOCH  # scan_cost × tenant_budget ÷ memory
    assert sum(b_evil) <= ceiling * 1.0001  # however much it reports, its total weight is the budget
    assert b_evil[0] / b_evil[1] == pytest.approx(10.0, rel=1e-6)  # its own ranking is kept
    assert b_good[0] > b_evil[1]  # honest heat within the budget outranks the spammer's second epoch
