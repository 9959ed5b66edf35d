"""The control loop against an in-memory writer and recorded workers (``tests.support.control``): scheduling,
status handling, dead workers, retirement, late statuses, admission without capacity. No etcd, no processes:
every pass and report is driven by the test, so each outcome is exact."""

from __future__ import annotations

import dataclasses

import pytest
import trio
import trio.testing

from leibrix.control._coordinator import Coordinator
from leibrix.control._settings import CoordinatorConfig
from leibrix.control._settings import strategy_name
from leibrix.domain._errors import FailedPrecondition, ResourceExhausted
from leibrix.domain._lifecycle import RetryPolicy, State
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import MiB, admission
from tests.support.control import KEYS, STATUS, ControlLoop

QUEUE, REJECT, EVICT = cp.AdmissionPolicy.QUEUE, cp.AdmissionPolicy.REJECT, cp.AdmissionPolicy.EVICT_LOWER_BENEFIT


async def loop_with(nursery: trio.Nursery, *workers: str, config: CoordinatorConfig = CoordinatorConfig(),
                    memory: int = 1 << 30, policy: cp.AdmissionPolicy = QUEUE, **quota: object) -> ControlLoop:
    loop = await ControlLoop(config).start(nursery)
    for w in workers:
        loop.workers.join(w, memory)
    await loop.tenant("acme", admission_policy=policy, **quota)
    return loop


async def ready(loop: ControlLoop, *keys: tuple[str, str, str]) -> None:
    """Every assigned replica of ``keys`` reports COMPLETED."""
    for key in keys:
        for w in loop.epoch(key).worker_ids():
            await loop.report(w, key, STATUS.COMPLETED)


def test_strategy_names_come_from_the_wire_enum() -> None:
    assert [strategy_name(int(s)) for s in cp.PlacementStrategy] == ["capacity", "round_robin", "hash", "capacity"]
    assert strategy_name(99) == "capacity"


# ---------------------------------------------------------------- scheduling


async def test_a_pass_places_every_replica_on_distinct_workers_and_sends_after_the_write(
        nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", "w2", "w3")
    await loop.admit(admission(days=3, replication_factor=2))
    assert loop.states() == ["PENDING"] * 3
    await loop.schedule()
    assert loop.states() == ["LOADING"] * 3
    for key in loop.keys():
        e = loop.epoch(key)
        assert len(set(e.worker_ids())) == 2 and {r.plan_id for r in e.replicas} == {e.plan_id}
        assert sorted(w for w, eid, _ in loop.workers.assigned if eid == key[2]) == sorted(e.worker_ids())
    # the LOADING records were committed before the first assignment left
    first_send = next(i for i, j in enumerate(loop.journal) if j[0] == "assign")
    assert any(j[0] == "commit" and ("LOADING" in {s for _, s in j[1]}) for j in loop.journal[:first_send])


async def test_replicas_spread_over_zones_when_workers_have_them(nursery: trio.Nursery) -> None:
    loop = await ControlLoop().start(nursery)
    for w, zone in (("a1", "a"), ("a2", "a"), ("b1", "b")):
        loop.workers.join(w, zone=zone)
    await loop.tenant("acme", admission_policy=QUEUE)
    await loop.admit(admission(days=4, replication_factor=2))
    await loop.schedule()
    for key in loop.keys():
        zones = sorted(w[0] for w in loop.epoch(key).worker_ids())
        assert zones == ["a", "b"], loop.epoch(key)


async def test_capacity_bounds_a_pass_and_the_rest_waits_pending_for_a_new_worker(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", memory=64 * MiB)
    await loop.admit(admission(days=6, bytes_per_epoch=16 * MiB))
    await loop.schedule()
    assert sorted(loop.states()) == ["LOADING"] * 4 + ["PENDING"] * 2
    assert loop.state.reserved["w1"][0] == 64 * MiB
    await loop.schedule()
    assert sorted(loop.states()) == ["LOADING"] * 4 + ["PENDING"] * 2  # nothing fits: nothing changes
    loop.workers.join("w2", 64 * MiB)
    await loop.schedule()
    assert loop.states() == ["LOADING"] * 6
    assert len(loop.workers.assignments_to("w2")) == 2


async def test_the_tenant_budget_bounds_a_pass_whatever_the_capacity(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", "w2", max_epochs=2)
    await loop.admit(admission(days=5))
    await loop.schedule()
    assert sorted(loop.states()) == ["LOADING"] * 2 + ["PENDING"] * 3


# ---------------------------------------------------------------- status reports


async def test_completed_replicas_validate_then_ready(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", "w2")
    await loop.admit(admission(replication_factor=2))
    await loop.schedule()
    (key,) = loop.keys()
    first, second = loop.epoch(key).worker_ids()
    await loop.report(first, key, STATUS.IN_PROGRESS)
    assert loop.states() == ["LOADING"]
    await loop.report(first, key, STATUS.COMPLETED)
    assert loop.states() == ["VALIDATING"]
    await loop.report(second, key, STATUS.COMPLETED)
    e = loop.epoch(key)
    assert e.state.name == "READY" and set(e.worker_ids()) == {first, second}
    assert [(t.from_state.name, t.to_state.name) for t in e.history] == [
        ("PENDING", "LOADING"), ("LOADING", "VALIDATING"), ("VALIDATING", "READY")]


async def test_failed_loads_retry_after_the_backoff_then_fail(nursery: trio.Nursery, autojump_clock: object) -> None:
    config = CoordinatorConfig(retry=RetryPolicy(max_attempts=2, base_s=5.0))
    loop = await loop_with(nursery, "w1", config=config)
    await loop.admit(admission())
    await loop.schedule()
    (key,) = loop.keys()
    await loop.report("w1", key, STATUS.FAILED, error="disk full")
    e = loop.epoch(key)
    assert (e.state.name, e.attempts, e.replicas) == ("PENDING", 1, ())
    assert loop.workers.evicted[-1] == ("w1", key[2], "load failed on w1: disk full")
    await loop.schedule()
    assert loop.states() == ["PENDING"]  # still backing off
    await trio.sleep(5.0)
    await loop.schedule()
    assert loop.states() == ["LOADING"] and loop.epoch(key).plan_id.endswith(".1")
    await loop.report("w1", key, STATUS.COMPLETED, schema_fingerprint="0" * 16)  # not the planned schema: invalid
    e = loop.epoch(key)
    assert (e.state.name, e.attempts, e.replicas) == ("FAILED", 2, ())
    assert "validation failed: loaded schema 0000000000000000 differs from the plan's" in e.history[-1].reason


async def test_a_status_for_an_older_plan_changes_nothing(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1")
    await loop.admit(admission())
    await loop.schedule()
    (key,) = loop.keys()
    await loop.coord.on_status("w1", cp.DataPullStatusUpdateEvent(
        dataset_id=key[1], epoch_id=key[2], status=STATUS.COMPLETED, plan_id="old-plan", rows=100))
    await loop.flush()
    assert loop.states() == ["LOADING"]


# ---------------------------------------------------------------- dead workers and registration


async def test_a_dead_workers_replicas_are_re_placed_beside_the_survivors(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", "w2", "w3")
    await loop.admit(admission(days=2, replication_factor=2))
    await loop.schedule()
    await ready(loop, *loop.keys())
    victim = max(("w1", "w2", "w3"), key=lambda w: len(loop.coord.replicas_on(w)))
    held = loop.coord.replicas_on(victim)
    survivors = {k: set(loop.epoch(k).worker_ids()) - {victim} for k in held}
    loop.workers.leave(victim)
    await loop.coord.on_worker_dead(victim)
    assert loop.coord.replicas_on(victim) == []
    for key in held:
        e = loop.epoch(key)
        assert e.state.name == "READY" and survivors[key] < set(e.worker_ids()) and len(e.replicas) == 2
        new = (set(e.worker_ids()) - survivors[key]).pop()
        assert key[2] in loop.workers.assignments_to(new)


async def test_a_dead_worker_with_the_last_replica_sends_the_epoch_back_to_loading(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", "w2")
    await loop.admit(admission())
    await loop.schedule()
    (key,) = loop.keys()
    await ready(loop, key)
    (holder,) = loop.epoch(key).worker_ids()
    loop.workers.leave(holder)
    await loop.coord.on_worker_dead(holder)
    e = loop.epoch(key)
    other = ({"w1", "w2"} - {holder}).pop()
    assert e.state.name == "LOADING" and e.worker_ids() == [other]
    assert [t.to_state.name for t in e.history][-2:] == ["PENDING", "LOADING"]


async def test_registration_reconciles_the_inventory(nursery: trio.Nursery) -> None:
    from leibrix.wire._proto.records import control_plane_pb2 as pb

    loop = await loop_with(nursery, "w1")
    await loop.admit(admission(days=3))
    await loop.schedule()
    done, lost, loading = loop.keys()
    await ready(loop, done, lost)
    sent = len(loop.workers.assignments_to("w1"))

    def entry(key: tuple[str, str, str]) -> pb.InventoryEntry:
        e = loop.epoch(key)
        return pb.InventoryEntry(tenant_id=key[0], dataset_id=key[1], epoch_id=key[2], plan_id=e.plan_id,
                                 rows=e.rows, bytes=e.memory_bytes)

    stranger = pb.InventoryEntry(tenant_id="acme", dataset_id="orders", epoch_id="0_000000")
    # it kept `done`, lost `lost`, finished `loading` while disconnected, and holds a table nobody assigned
    await loop.coord.on_registered("w1", [entry(done), entry(loading), stranger])
    # the lost epoch had no other replica: it queues again, and the next pass reloads it
    assert [loop.epoch(k).state.name for k in (done, lost, loading)] == ["READY", "PENDING", "READY"]
    assert ("w1", "0_000000", "not assigned to this worker") in loop.workers.evicted
    await loop.schedule()
    assert loop.epoch(lost).state.name == "LOADING"
    assert loop.workers.assignments_to("w1")[sent:] == [lost[2]]


# ---------------------------------------------------------------- retirement and late statuses


async def test_retirement_withdraws_routes_before_evicting(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", "w2")
    await loop.admit(admission(days=2, replication_factor=2))
    await loop.schedule()
    await ready(loop, *loop.keys())
    key, kept = loop.keys()
    loop.journal.clear()
    assert await loop.coord.retire([key], "retired by test") == 1
    e = loop.epoch(key)
    assert (e.state.name, e.replicas) == ("RETIRED", ())
    assert loop.journal[0] == ("commit", ((key[2], "RETIRING"),))
    assert sorted(j[1] for j in loop.journal[1:3]) == ["w1", "w2"] and {j[0] for j in loop.journal[1:3]} == {"evict"}
    assert loop.journal[3] == ("commit", ((key[2], "RETIRED"),))
    assert loop.epoch(kept).state.name == "READY" and key in loop.coord.retired
    assert await loop.coord.retire([key], "again") == 0


async def test_retirements_an_earlier_term_began_are_finished(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1")
    await loop.admit(admission())
    await loop.schedule()
    (key,) = loop.keys()
    await ready(loop, key)
    old = loop.coord
    async with old.lock:  # the last term withdrew the routes, then ended before evicting
        await old.write([old.move(loop.epoch(key), State.RETIRING, "left by a dead leader")])
    old.close()
    coord = Coordinator(state=loop.state, commit=loop.store.commit, keys=KEYS, hub=loop.workers,
                        clock=trio.current_time)
    await coord.finish_retirements([key], "finishing")
    e = loop.epoch(key)
    assert (e.state.name, e.replicas) == ("RETIRED", ()) and ("w1", key[2], "finishing") in loop.workers.evicted


async def test_a_status_after_the_replica_was_withdrawn_is_late_and_answered_with_an_evict(
        nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1")
    await loop.admit(admission())
    await loop.schedule()
    (key,) = loop.keys()
    plan = loop.epoch(key).plan_id
    await loop.coord.retire([key], "retired by test")
    evicts = len(loop.workers.evicted)
    await loop.coord.on_status("w1", cp.DataPullStatusUpdateEvent(
        dataset_id=key[1], epoch_id=key[2], status=STATUS.COMPLETED, plan_id=plan, rows=100))
    assert loop.workers.evicted[evicts:] == [("w1", key[2], "assignment withdrawn")]
    await loop.coord.on_status("w1", cp.DataPullStatusUpdateEvent(
        dataset_id=key[1], epoch_id=key[2], status=STATUS.FAILED, plan_id=plan))
    assert len(loop.workers.evicted) == evicts + 1  # a failed late load holds nothing: no evict
    assert loop.epoch(key).state.name == "RETIRED"
    with pytest.raises(FailedPrecondition, match="never assigned to worker 'w2'"):
        await loop.coord.on_status("w2", cp.DataPullStatusUpdateEvent(
            dataset_id=key[1], epoch_id=key[2], status=STATUS.COMPLETED))


# ---------------------------------------------------------------- admission: capacity is not a quota


@pytest.mark.parametrize("policy", [QUEUE, REJECT, EVICT])
async def test_admission_with_no_worker_is_accepted_pending_and_loads_when_one_joins(
        nursery: trio.Nursery, policy: cp.AdmissionPolicy) -> None:
    loop = await loop_with(nursery, policy=policy)
    resp = await loop.admit(admission(days=2))
    assert resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED and resp.pending_epochs == 2
    await loop.schedule()
    assert loop.states() == ["PENDING"] * 2
    loop.workers.join("w1")
    await loop.schedule()
    assert loop.states() == ["LOADING"] * 2


async def test_reject_answers_with_the_budget_numbers_never_the_pool_capacity(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "tiny", memory=1 * MiB, policy=REJECT, max_memory_bytes=40 * MiB)
    await loop.admit(admission(days=2))  # 32 MiB of a 40 MiB budget, on a pool with 1 MiB free: accepted
    with pytest.raises(ResourceExhausted) as info:
        await loop.admit(admission("acme", "more"))
    assert info.value.message.startswith(
        f"tenant 'acme' memory budget: {40 * MiB} bytes, {32 * MiB} charged + {16 * MiB} requested")
    assert loop.states("acme", "more") == []


async def test_evict_lower_benefit_evicts_only_the_tenants_own_residents(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", policy=EVICT, max_memory_bytes=32 * MiB)
    await loop.tenant("other", admission_policy=QUEUE)
    await loop.admit(admission("other", "theirs", hints=cp.EstimateHints(bytes_per_epoch=16 * MiB, scan_cost=1.0)))
    await loop.admit(admission(dataset="cold", days=2, hints=cp.EstimateHints(bytes_per_epoch=16 * MiB,
                                                                            scan_cost=100.0)))
    await loop.schedule()
    await ready(loop, *loop.keys("acme", "cold"), *loop.keys("other", "theirs"))
    resp = await loop.admit(admission(dataset="hot", hints=cp.EstimateHints(bytes_per_epoch=16 * MiB,
                                                                          scan_cost=10_000.0)))
    assert resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED
    await trio.testing.wait_all_tasks_blocked()  # the batch retires its victims after answering
    assert sorted(loop.states("acme", "cold")) == ["READY", "RETIRED"]
    assert loop.states("other", "theirs") == ["READY"]
    assert loop.state.usage("acme").memory_bytes + loop.state.usage("acme").pending_memory_bytes == 32 * MiB


async def test_config_changes_on_the_live_coordinator_reach_every_part(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1")
    loop.coord.config = dataclasses.replace(loop.coord.config, max_candidates=1)
    await loop.admit(admission(days=3))
    await loop.schedule()
    assert sorted(loop.states()) == ["LOADING", "PENDING", "PENDING"]


async def test_a_full_pool_is_shared_by_benefit_with_hysteresis(nursery: trio.Nursery) -> None:
    loop = await loop_with(nursery, "w1", memory=64 * MiB)
    await loop.tenant("b", admission_policy=QUEUE)

    def hints(scan_cost: float) -> cp.EstimateHints:
        return cp.EstimateHints(bytes_per_epoch=16 * MiB, scan_cost=scan_cost)

    await loop.admit(admission(days=4, hints=hints(100.0)))
    await loop.schedule()
    await ready(loop, *loop.keys())
    await loop.admit(admission("b", "meh", hints=hints(140.0)))
    await loop.schedule()
    assert loop.states("b", "meh") == ["PENDING"]  # 1.4x does not beat the 1.5x hysteresis: no churn
    assert loop.states() == ["READY"] * 4
    await loop.admit(admission("b", "hot", hints=hints(1000.0)))
    evicts = len(loop.workers.evicted)
    await loop.schedule()
    assert loop.states("b", "hot") == ["LOADING"] and loop.states("b", "meh") == ["PENDING"]
    assert sorted(loop.states()) == ["PENDING", "READY", "READY", "READY"]  # exactly one displaced
    (displaced,) = [k for k in loop.keys() if loop.epoch(k).state is State.PENDING]
    assert loop.workers.evicted[evicts:] == [("w1", displaced[2], "displaced by higher-benefit b/hot/"
                                              + loop.keys("b", "hot")[0][2])]
