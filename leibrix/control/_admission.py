"""Admission: turn validated ``AdmitDataset`` requests into PENDING epochs, in batched fenced writes.

The path of one admission (all on the leader):

1. ``_validation.validate_admission`` (in the RPC handler: bad requests never
   reach the queue);
2. the request waits in a bounded queue; the batcher takes everything queued
   (up to ``max_batch``) and decides each admission in order against the
   in-memory state plus what earlier admissions of the same batch, and of
   the batches still being written, decided (an admission of a dataset or
   request id such a batch holds waits for that write);
3. all accepted admissions of the batch are written in one fenced commit
   (every new epoch first, each dataset record with its idempotency record
   last), while the next batch is decided (up to ``max_inflight_batches`` at
   once); a rejection is answered at once, since it stores nothing;
4. only then are the callers answered: an acknowledged admission is in etcd,
   so a leader failover can never lose it.

**All or nothing, whatever the size.** The writer cuts a commit into
transactions within etcd's limits (128 ops and 1.5 MiB by default), so a
large admission takes several, and a leader may die, or etcd fail, between
them. Visibility is therefore decided by a generation, not by the
transactions: each admission of a dataset gets a new ``admission``
generation (one more than any its dataset, its epochs or its uncommitted
epochs carry), stamped on every epoch it writes; the dataset record, which
carries the dataset's *committed* generation, is written last, in one
``Atomic`` with the idempotency record. ``ClusterState`` keeps an epoch whose
generation is newer than its dataset record's aside: not indexed, not
charged, not routed, not scheduled. So until the dataset record lands none
of the admission's epochs exist for anyone, and the transaction that stores
it makes all of them visible at once. A refresh (a new version of an existing
dataset) follows the same rule: the old version serves until the new
dataset record lands. Epochs left aside by an admission that never
committed are deleted by the next admission of the dataset (in its commit,
before its dataset record) or by the janitor once they are old
(``leibrix.control._janitor``).

**etcd errors.** Only a failed fencing compare (``Fenced``) ends the term.
etcd not answering is UNAVAILABLE for the batch's callers (retry with the
same ``request_id``); etcd refusing the write (``EtcdRefused``: too many ops,
too large, quota full) is RESOURCE_EXHAUSTED with etcd's message, which
names the limit. In both cases nothing the batch decided is evicted, and the
queue carries on.

**Never blocking the loop.** Deciding a 10,000-epoch admission builds
10,000 records and answers; every ``_YIELD_EVERY`` epochs the decider yields
to the Trio loop (and generating a large admission's epochs runs in a
thread), so the lease keepalive and the RPCs keep running meanwhile.

**A retry while the first attempt is in flight.** Each request id being
admitted (planned, queued, decided or written) is in an in-flight map
``request_id → Job``. A retry that finds its id there is neither planned nor
queued again: it waits for the first attempt's outcome and gets the same
answer (its response, or its error), as soon as that is known. The same id
with a different request is INVALID_ARGUMENT at once. Once the first attempt
is answered its id leaves the map; a later retry is answered from the stored
first answer (``requests/<id>``), or, if it was rejected (rejections are not
stored), decided afresh.

**Overload.** At most ``max_in_flight`` admissions are in flight at once
(planning from their source, queued, being decided or written). One more is
shed at once with RESOURCE_EXHAUSTED (:class:`Overloaded`) whose message
carries a retry hint (``retry after N ms``, ``retry-after-ms=N``), instead of
waiting in memory that grows with the flood. A retry of an id in flight is
not counted: it holds no plan and no queue slot. The queue (``queue_size``)
is never the bound that bites: it holds at least ``max_in_flight`` jobs.

Deciding one admission (idempotency, tenant, source, epochs, policy) is
``leibrix.control._decide``.

**Response rule** (one for every admission error): an accepted admission is
gRPC OK with the upstream body (``status = ACCEPTED``, the epochs, a message,
and ``pending_epochs`` when some wait for capacity); everything else is a
gRPC error status carrying the message (INVALID_ARGUMENT naming the field,
NOT_FOUND, RESOURCE_EXHAUSTED with the numbers, UNAVAILABLE on a follower or
when etcd does not answer) and no body. Machine clients thus cannot mistake a
rejection for success (every gRPC client raises on a non-OK status), and
upstream clients that test ``status == REJECTED`` get an error instead,
which they already treat as a failure. Rejections are not stored, so a retry
after room appears can succeed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from leibrix.control._batch import Batch, Job
from leibrix.control._coordinator import Coordinator
from leibrix.control._decide import Decider
from leibrix.control._planned import Planned, Planner, check_refresh_interval, plan
from leibrix.domain._errors import ApiError, InvalidArgument, ResourceExhausted, Unavailable
from leibrix.domain._estimates import HintEstimator
from leibrix.domain._validation import AdmissionLimits, AdmissionSpec
from leibrix.sources import plan_admission
from leibrix.state._model import ClusterState, EpochKey
from leibrix.store._etcd import EtcdRefused, EtcdUnavailable
from leibrix.store._store import Fenced, Keys, Table
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2

__all__ = ["AdmissionConfig", "Admissions", "Overloaded"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class AdmissionConfig:
    """Tunables of the admission queue."""

    limits: AdmissionLimits = AdmissionLimits()
    estimator: HintEstimator = HintEstimator()
    #: Plans an admission from its source's metadata (blocking: run in a worker thread).
    planner: Planner = plan_admission
    #: Admissions planned at once (each holds a worker thread and a source connection meanwhile).
    max_planning: int = 8
    #: Admissions decided and written together.
    max_batch: int = 512
    #: Epochs created by one batch, at most (a bigger admission still goes alone in its batch).
    max_batch_epochs: int = 5000
    #: Batches decided and being written at once (their etcd round trips overlap; see ``Admissions``).
    max_inflight_batches: int = 2
    #: Admissions in flight at once (planning, queued, deciding, writing); more are shed (``Overloaded``).
    max_in_flight: int = 4096
    #: The retry hint of a shed admission (ms).
    retry_after_ms: int = 1000
    #: Admissions the queue holds (raised to ``max_in_flight`` if smaller).
    queue_size: int = 10_000
    #: Seconds an idempotency record (``requests/<id>``) is kept before the janitor deletes it.
    request_ttl_s: float = 86400.0


class Overloaded(ResourceExhausted):
    """Shed: too many admissions in flight. ``retry_after_ms`` is the hint, also given in the message."""

    def __init__(self, in_flight: int, limit: int, retry_after_ms: int) -> None:
        super().__init__(f"the master is overloaded: {in_flight} admissions in flight (limit {limit}); "
                         f"retry after {retry_after_ms} ms (retry-after-ms={retry_after_ms})")
        self.retry_after_ms = retry_after_ms


class Admissions:
    """The leader's admission queue and batcher for one term."""

    def __init__(self, *, state: ClusterState, coordinator: Coordinator, keys: Keys,
                 requests: Table[state_pb2.RequestRecord] | None, config: AdmissionConfig = AdmissionConfig()) -> None:
        self.state = state
        self.coord = coordinator
        self.keys = keys
        self.requests = requests
        self.config = config
        self.decider = Decider(state=state, coordinator=coordinator, keys=keys, requests=requests)
        self._send, self._recv = trio.open_memory_channel[Job](max(config.queue_size, config.max_in_flight))
        #: Set (and replaced) each time a batch being written is done with.
        self._stored = trio.Event()
        #: Batches decided and being written.
        self._inflight: list[Batch] = []
        self._planning = trio.CapacityLimiter(config.max_planning)
        #: Admissions in flight, from ``admit`` until answered.
        self._live: set[Job] = set()
        #: The first attempt of each request id in flight (a retry waits for its outcome).
        self._attempts: dict[str, Job] = {}
        #: Admissions shed since the term began (``Overloaded``).
        self.shed = 0
        #: Retries answered with the outcome of their first attempt, still in flight when they arrived.
        self.joined = 0

    @property
    def in_flight(self) -> int:
        """Admissions in flight now (planning, queued, deciding or being written)."""
        return len(self._live)

    async def plan(self, spec: AdmissionSpec) -> Planned:
        """Plan ``spec`` from its source in a worker thread (at most ``max_planning`` at once); raises the
        connector's ``ApiError`` (naming the request field at fault) when the source cannot be planned."""
        return await trio.to_thread.run_sync(plan, spec, self.config.planner, self.config.estimator,
                                             limiter=self._planning)

    async def admit(self, spec: AdmissionSpec, planned: Planned | None = None) -> cp.AdmitDatasetResponse:
        """Plan a validated admission from its source (unless ``planned`` is given), queue it and wait for
        its decision; raises the ``ApiError`` on rejection (nothing is stored for a rejected admission).

        A retry of an answered ``request_id`` is answered from the stored first answer, without asking
        the source again; a retry of one still in flight waits for the first attempt's outcome. Past
        ``max_in_flight`` admissions, raises :class:`Overloaded` at once.
        """
        check_refresh_interval(spec)
        rid = spec.request_id
        first = self._attempts.get(rid) if rid else None
        if first is not None:
            if first.spec.fingerprint != spec.fingerprint:
                raise InvalidArgument("request_id", f"{rid!r} is in use by a different request")
            self.joined += 1
            return await self._outcome(first)
        if len(self._live) >= self.config.max_in_flight:
            self.shed += 1
            raise Overloaded(len(self._live), self.config.max_in_flight, self.config.retry_after_ms)
        job = Job(spec, planned)
        self._live.add(job)
        if rid:
            self._attempts[rid] = job
        queued = False
        try:
            if planned is None and (not rid or self.decider.stored_answer(spec) is None):
                job.planned = await self.plan(spec)
            try:
                self._send.send_nowait(job)
            except (trio.ClosedResourceError, trio.BrokenResourceError):
                raise Unavailable("leadership is changing; retry") from None
            except trio.WouldBlock:
                # Jobs of callers that went away still wait in the queue: shed this one too.
                self.shed += 1
                raise Overloaded(len(self._live), self.config.max_in_flight, self.config.retry_after_ms) from None
            queued = True
        except ApiError as exc:
            self._finish(job, exc)
        finally:
            if not queued and not job.done.is_set():
                # Cancelled before it was queued: a retry waiting on this attempt must not wait forever.
                self._finish(job, Unavailable("the first attempt with this request_id was abandoned; retry"))
        return await self._outcome(job)

    @staticmethod
    async def _outcome(job: Job) -> cp.AdmitDatasetResponse:
        await job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.response is not None
        return job.response

    def _finish(self, job: Job, error: ApiError | None = None) -> None:
        """Answer ``job`` (with its response, or ``error``) and take it out of the in-flight sets."""
        if not job.done.is_set():
            if error is not None:
                job.response, job.error = None, error
            job.done.set()
        self._live.discard(job)
        rid = job.spec.request_id
        if rid and self._attempts.get(rid) is job:
            del self._attempts[rid]

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Batch queued admissions until cancelled; queued callers get UNAVAILABLE at the end of the term.

        Up to ``max_inflight_batches`` batches are written at once: the next
        batch is decided while earlier ones wait for etcd (each new batch sees
        their effects, see ``Batch``), so an admission waits for its own
        round trip, not for the one in progress when it arrived.
        """
        task_status.started()
        carry: list[Job] = []
        inflight = self._inflight
        room = trio.Semaphore(self.config.max_inflight_batches)
        try:
            async with trio.open_nursery() as writers:
                while True:
                    jobs = carry or [await self._recv.receive()]
                    while len(jobs) < self.config.max_batch:
                        try:
                            jobs.append(self._recv.receive_nowait())
                        except trio.WouldBlock:
                            break
                    await room.acquire()
                    batch, carry = await self._decide_batch(jobs, inflight)
                    if batch.accepted:
                        inflight.append(batch)
                        writers.start_soon(self._store, batch, inflight, room)
                        continue
                    room.release()
                    if len(carry) == len(jobs):
                        # Every one of them waits for a batch being written (there is one): wait for it.
                        await self._stored.wait()
        finally:
            self._send.close()
            leftovers = list(carry)
            while True:
                try:
                    leftovers.append(self._recv.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            for job in leftovers:
                self._finish(job, Unavailable("leadership ended before this admission was decided; retry"))

    async def _decide_batch(self, jobs: list[Job], inflight: Sequence[Batch]) -> tuple[Batch, list[Job]]:
        """Decide ``jobs`` in order; rejected ones are answered at once. Returns the batch (its accepted jobs
        wait for its write) and the jobs deferred to a later batch."""
        batch = Batch.after(inflight)
        deferred: list[Job] = []
        # Admissions only create epochs and datasets (changes to existing epochs go through the
        # coordinator), so deciding does not hold the coordinator's lock: the batches' etcd round trips
        # overlap with the coordinator's placements and status writes instead of queueing behind them.
        epochs = 0
        for job in jobs:
            spec = job.spec
            if batch.conflicts(spec) or (epochs and epochs + spec.epoch_count > self.config.max_batch_epochs):
                # The same dataset or request twice, or a full batch: decide after the earlier write.
                deferred.append(job)
                continue
            epochs += spec.epoch_count
            try:
                if not await self.decider.decide(job, batch):
                    self._finish(job)  # answered by its stored first answer: nothing to write
            except ApiError as exc:
                self._finish(job, exc)  # a rejection is not stored: nothing to wait for
            await trio.lowlevel.checkpoint()
        return batch, deferred

    async def _store(self, batch: Batch, inflight: list[Batch], room: trio.Semaphore) -> None:
        """Write one decided batch, answer its callers, then start the retirements it decided."""
        try:
            try:
                await self._write(batch)
            except EtcdRefused as exc:
                log.warning("admission batch of %d refused by etcd: %s", len(batch.accepted), exc)
                self._answer(batch, ResourceExhausted(str(exc)))
                return  # not stored: evicting for it could only lose data
            except (Fenced, EtcdUnavailable) as exc:
                why = ("leadership was lost before this admission was stored; retry" if isinstance(exc, Fenced) else
                       f"the state store did not answer; retry with the same request_id: {exc}")
                self._answer(batch, Unavailable(why))
                if isinstance(exc, Fenced):
                    raise
                return  # not known to be stored: evicting for it could only lose data
            self._answer(batch, None)
            if batch.retire:
                by_reason: dict[str, list[EpochKey]] = {}
                for key, reason in batch.retire:
                    by_reason.setdefault(reason, []).append(key)
                try:
                    for reason, keys in by_reason.items():
                        await self.coord.retire(keys, reason)
                except (EtcdUnavailable, EtcdRefused) as exc:
                    log.warning("retirements decided by an admission failed (retire them again): %s", exc)
            self.coord.kick()
        finally:
            # cancelled (the term ended) before the write returned: the outcome is unknown
            self._answer(batch, Unavailable("leadership ended during this admission; retry"))
            inflight.remove(batch)
            room.release()
            self._stored.set()
            self._stored = trio.Event()

    def _answer(self, batch: Batch, error: ApiError | None) -> None:
        """Wake the batch's callers not answered yet: with their response, or with ``error`` instead."""
        for job in batch.accepted:
            if not job.done.is_set():
                self._finish(job, error)

    async def _write(self, batch: Batch) -> None:
        # Epochs first, dataset and idempotency records last (see the module docstring): a commit cut
        # short leaves only uncommitted epochs, invisible, and a retry re-decides and converges.
        await self.coord.write([], [*batch.epoch_ops, *batch.final])

    def writing(self, tenant_id: str, dataset_id: str) -> bool:
        """Whether an admission of the dataset is decided and being written (its epochs may be uncommitted)."""
        return any((tenant_id, dataset_id) in b.datasets for b in self._inflight)
