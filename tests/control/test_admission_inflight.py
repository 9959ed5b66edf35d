"""Admissions in flight (``leibrix.control._admission``): a retry of a request id still in flight is answered
with its first attempt's outcome without being planned or queued again, and past ``max_in_flight`` admissions
are shed at once with RESOURCE_EXHAUSTED and a retry hint. The real planner reads the real Iceberg source behind
a gate the test opens, so "in flight" lasts exactly as long as the test wants."""

from __future__ import annotations

import threading

import pytest
import trio
import trio.testing

from leibrix.control._admission import AdmissionConfig, Overloaded
from leibrix.domain._errors import InvalidArgument, NotFound
from leibrix.domain._validation import AdmissionLimits, validate_admission
from leibrix.sources import plan_admission
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission
from tests.support.control import KEYS, ControlLoop
from tests.support.poll import eventually

QUEUE = cp.AdmissionPolicy.QUEUE


class GatedPlanner:
    """The real source planner, held at a gate until the test opens it; counts its calls."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.calls = 0
        #: raised (once the gate opens) instead of planning, when set
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    def __call__(self, spec):
        with self._lock:
            self.calls += 1
        if not self.gate.wait(30):
            raise TimeoutError("the test never opened the planner's gate")
        if self.error is not None:
            raise self.error
        return plan_admission(spec)


async def gated_loop(nursery: trio.Nursery, **config: object) -> tuple[ControlLoop, GatedPlanner]:
    planner = GatedPlanner()
    cfg = AdmissionConfig(limits=AdmissionLimits(), planner=planner, **config)  # type: ignore[arg-type]
    loop = await ControlLoop(admission=cfg).start(nursery)
    loop.workers.join("w1")
    await loop.tenant("acme", admission_policy=QUEUE)
    return loop, planner


async def test_a_retry_in_flight_gets_the_first_attempts_answer_without_being_planned_again(
        nursery: trio.Nursery) -> None:
    loop, planner = await gated_loop(nursery)
    request = admission(days=3, request_id="req-1")
    answers: list[cp.AdmitDatasetResponse] = []

    async def admit() -> None:
        answers.append(await loop.admit(request))

    nursery.start_soon(admit)
    await eventually(lambda: planner.calls == 1, what='planner.calls == 1')
    async with trio.open_nursery() as retries:
        for _ in range(3):
            retries.start_soon(admit)
        await eventually(lambda: loop.admissions.joined == 3, what='loop.admissions.joined == 3')
        # the same id with a different request is refused at once, while the first is still planning
        with pytest.raises(InvalidArgument, match="request_id"):
            await loop.admit(admission(days=4, request_id="req-1"))
        assert answers == [] and loop.admissions.in_flight == 1
        planner.gate.set()
    await eventually(lambda: len(answers) == 4, what='len(answers) == 4')
    assert planner.calls == 1  # the retries were never planned from the source
    assert len({bytes(a) for a in answers}) == 1 and len(answers[0].epochs.epochs) == 3
    assert len(loop.state.epochs) == 3
    assert [k for k in loop.store.kv if k.startswith(KEYS.root + "requests/")] == [KEYS.request("req-1")]
    assert loop.admissions.in_flight == 0
    # once answered, the id leaves the in-flight map: a later retry is answered from the stored record
    assert bytes(await loop.admit(request)) == bytes(answers[0]) and planner.calls == 1


async def test_a_retry_in_flight_gets_the_first_attempts_rejection(nursery: trio.Nursery) -> None:
    loop, planner = await gated_loop(nursery)
    request = admission(tenant="nobody", request_id="req-2")
    errors: list[BaseException] = []

    async def admit() -> None:
        try:
            await loop.admit(request)
        except NotFound as exc:
            errors.append(exc)

    nursery.start_soon(admit)
    await eventually(lambda: planner.calls == 1, what='planner.calls == 1')
    nursery.start_soon(admit)
    await eventually(lambda: loop.admissions.joined == 1, what='loop.admissions.joined == 1')
    planner.gate.set()
    await eventually(lambda: len(errors) == 2, what='len(errors) == 2')
    assert errors[0] is errors[1] and "nobody" in str(errors[0])
    assert planner.calls == 1 and loop.admissions.in_flight == 0


async def test_a_flood_is_shed_past_the_bound_with_a_retry_hint_and_memory_stays_bounded(
        nursery: trio.Nursery) -> None:
    loop, planner = await gated_loop(nursery, max_in_flight=8, retry_after_ms=250)
    accepted: list[cp.AdmitDatasetResponse] = []
    shed: list[Overloaded] = []
    peak = 0

    async def admit(i: int) -> None:
        nonlocal peak
        try:
            accepted.append(await loop.admit(admission(dataset=f"ds{i}", request_id=f"flood-{i}")))
        except Overloaded as exc:
            shed.append(exc)
        peak = max(peak, loop.admissions.in_flight)

    async with trio.open_nursery() as flood:
        for i in range(200):
            flood.start_soon(admit, i)
        await eventually(lambda: len(shed) == 192, what='len(shed) == 192')
        assert loop.admissions.in_flight == 8 and planner.calls <= 8 and accepted == []
        planner.gate.set()
    assert len(accepted) == 8 and peak <= 8 and loop.admissions.shed == 192
    err = shed[0]
    assert err.status.name == "RESOURCE_EXHAUSTED" and err.retry_after_ms == 250
    assert "retry-after-ms=250" in err.message and "limit 8" in err.message
    # a shed admission that retries once there is room is admitted
    assert (await loop.admit(admission(dataset="ds199", request_id="flood-199"))).status == \
        cp.AdmitDatasetResponseStatus.ACCEPTED


async def test_a_first_attempt_whose_caller_left_still_answers_its_retry(nursery: trio.Nursery) -> None:
    loop, planner = await gated_loop(nursery, max_in_flight=1)
    spec = validate_admission(admission(request_id="req-3"), AdmissionLimits())
    answers: list[cp.AdmitDatasetResponse] = []

    async def retry() -> None:
        answers.append(await loop.admissions.admit(spec))

    with trio.CancelScope() as first:
        async with trio.open_nursery() as n:
            n.start_soon(loop.admissions.admit, spec)
            await eventually(lambda: planner.calls == 1, what="the first attempt planning")
            nursery.start_soon(retry)
            await eventually(lambda: loop.admissions.joined == 1, what="the retry waiting for it")
            first.cancel()  # the first caller leaves; its admission is planned, queued and decided all the same
            planner.gate.set()
    await eventually(lambda: len(answers) == 1, what="the retry answered")
    assert answers[0].status == cp.AdmitDatasetResponseStatus.ACCEPTED and planner.calls == 1
    assert loop.admissions.in_flight == 0 and KEYS.request("req-3") in loop.store.kv


async def test_a_first_attempt_that_fails_unexpectedly_releases_its_retries_and_its_slot(
        nursery: trio.Nursery) -> None:
    loop, planner = await gated_loop(nursery, max_in_flight=1)
    planner.error = RuntimeError("connector bug")
    spec = validate_admission(admission(request_id="req-4"), AdmissionLimits())
    errors: list[BaseException] = []

    async def attempt() -> None:
        try:
            await loop.admissions.admit(spec)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            errors.append(exc)

    nursery.start_soon(attempt)
    await eventually(lambda: planner.calls == 1, what="the first attempt planning")
    nursery.start_soon(attempt)
    await eventually(lambda: loop.admissions.joined == 1, what="the retry waiting for it")
    planner.gate.set()
    await eventually(lambda: len(errors) == 2, what="both answered")
    assert sorted(type(e).__name__ for e in errors) == ["RuntimeError", "Unavailable"]
    assert loop.admissions.in_flight == 0
    planner.error = None
    assert (await loop.admissions.admit(spec)).status == cp.AdmitDatasetResponseStatus.ACCEPTED
