"""Chaos under load: faults drawn from a seed, every invariant checked against etcd and the workers.

A real cluster on loopback: three ``leibrix master`` processes (a 3-member
embedded etcd quorum, production Raft timings, 1 s lease), five reference
workers and two tenants with quotas. A client admits datasets (each with a
request id), refreshes them (a new source version) and drops them through the
official client (:func:`leibrix.client._call.call`, which follows the
``leibrix-leader`` redirect), retrying a request with the same id until it is
acknowledged, and records every acknowledgement.

Faults, drawn from ``random.Random(seed)``: ``kill_leader`` / ``kill_follower``
(SIGKILL of a master, its etcd member dies with it; restarted on the same data
dir), ``kill_worker`` (SIGKILL, restarted), ``stop_leader`` (SIGSTOP past its
lease, then SIGCONT), ``restart_member`` (SIGKILL of one master's etcd member
only; the master's supervisor restarts it).

Checked directly in etcd (one watch over the whole cluster prefix from
revision 1, plus listings), after every fault and at the end:

* every acknowledged admission is present (unless its drop was acknowledged);
* tenant charged epochs and memory <= quota, at every observation;
* no write from a deposed leader: every state write at revision R happened
  while a leader key existed (its term covered R);
* after convergence: nothing READY lacks a LOADED replica on a non-DEAD
  worker, and no replica is on a DEAD worker (``chaos.max_convergence_s``:
  fault to invariants holding; not holding within the bound is a violation).

Measured besides: ``chaos.max_client_gap_s`` (the longest wait for one
acknowledgement; the client gives each master :data:`CALL_TIMEOUT` to answer,
asks the master that answered last first and moves one that failed to the
back), the same per fault kind (``chaos.client_gap.<kind>_s``), and
``chaos.spurious_failovers``: new terms after faults that left the leader's
process running.

``--seed S`` replays the same fault sequence. Usage:
``python -m bench.chaos [--quick] [--faults N] [--seed S] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from bench._report import Report
from leibrix.cli._cluster import LocalCluster, MasterProcess, spawn_tied, stop_process
from leibrix.client._call import call
from leibrix.client._requests import time_partitioned_admission
from leibrix.master._options import DEFAULT_LEASE_TTL
from leibrix.store._etcd import EtcdClient, EtcdError, WatchEvent
from leibrix.store._member import PRODUCTION_TIMINGS
from leibrix.store._store import Keys
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from leibrix.worker._cmd import worker_command

CLUSTER = "chaos"
KEYS = Keys(CLUSTER)
KINDS = ("kill_leader", "kill_follower", "kill_worker", "stop_leader", "restart_member")
#: Faults that take the leader's process away: each may start a new term.
LEADER_FAULTS = ("kill_leader", "stop_leader")
TENANTS = {"t1": 24, "t2": 24}  # tenant -> max charged epochs
MAX_MEMORY = 4 << 30
WORKERS = 5
#: Convergence bound after a fault (the goal is 10 s; beyond this it is a violation).
CONVERGE_LIMIT = 20.0
#: A request not acknowledged within this long (same id, retried) counts as lost.
ACK_LIMIT = 30.0
#: How long one master gets to answer one attempt (its redirects included) before the next master is asked.
CALL_TIMEOUT = 0.5
_CHARGED = {int(s) for s in (cp.EpochState.LOADING, cp.EpochState.VALIDATING, cp.EpochState.READY,
                              cp.EpochState.RETIRING)}
_READY = int(cp.EpochState.READY)
_LOADED = int(cp.ReplicaInfoState.LOADED)
_DEAD = int(cp.WorkerState.DEAD)


@dataclass
class Ledger:
    """What the client was told: acknowledged admissions and drops, and the longest waits."""

    acked: dict[str, str] = field(default_factory=dict)  # dataset key -> request id of its first ack
    dropped: set[str] = field(default_factory=set)  # acknowledged drops
    in_doubt: set[str] = field(default_factory=set)  # a drop sent and not acknowledged
    ack_times: list[float] = field(default_factory=list)
    max_gap: float = 0.0
    waits: list[tuple[float, float]] = field(default_factory=list)  # (first send, acknowledgement) per request
    unacked: int = 0
    rejected: int = 0


@dataclass
class Audit:
    """Facts read from etcd: term intervals, stale writes, violations."""

    terms: dict[int, int] = field(default_factory=dict)  # token -> revision the key was deleted (0: alive)
    term_started: list[float] = field(default_factory=list)  # trio time each new term was seen
    last_event_revision: int = 0
    stale_writes: int = 0
    violations: list[str] = field(default_factory=list)
    observations: int = 0


async def request(masters: list[str], ledger: Ledger, rpc, *, what: str) -> object | None:
    """Send ``rpc`` (same request, same id) until a master answers it; None if never within ACK_LIMIT.

    ``masters`` is the client's memory: the master that answered last (the
    leader) is asked first, and one that failed an attempt moves to the back.
    """
    started = trio.current_time()
    last: BaseException | None = None
    while trio.current_time() - started < ACK_LIMIT:
        try:
            reply, answered = await call(",".join(masters), rpc, timeout=CALL_TIMEOUT)
        except GRPCError as exc:
            if exc.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.ABORTED, Status.INTERNAL):
                last = exc
                masters.append(masters.pop(0))
                await trio.sleep(0.05)
                continue
            ledger.rejected += 1
            print(f"chaos: {what}: {exc.status.name} {exc.message}", file=sys.stderr)
            return exc
        except (OSError, TimeoutError, StreamTerminatedError, ProtocolError) as exc:
            last = exc
            masters.append(masters.pop(0))
            await trio.sleep(0.05)
            continue
        if answered in masters:
            masters.insert(0, masters.pop(masters.index(answered)))
        now = trio.current_time()
        ledger.max_gap = max(ledger.max_gap, now - started)
        ledger.waits.append((started, now))
        ledger.ack_times.append(now)
        return reply
    ledger.unacked += 1
    print(f"chaos: {what} not acknowledged within {ACK_LIMIT:.0f} s (last: {last!r})", file=sys.stderr)
    return None


#: The Iceberg table every admission names (a SQL catalog on SQLite, built before the cluster starts).
SOURCE: list[object] = []


def admission(tenant: str, dataset: str, request_id: str, version: str | None) -> cp.AdmitDatasetRequest:
    source = SOURCE[0]
    source.table_for(dataset)
    start = datetime(2026, 11, 1, tzinfo=timezone.utc)
    return time_partitioned_admission(
        tenant, dataset, start=start, end=start + timedelta(days=2),
        catalog_uri=source.uri, database=source.database, request_id=request_id,
        replication_factor=2, version=version,
        hints=cp.EstimateHints(bytes_per_epoch=4 << 20, rows_per_epoch=1000),
    )


async def load(addrs: list[str], ledger: Ledger, rng: random.Random, stop: trio.Event) -> None:
    """Admit, refresh and drop datasets until ``stop``; one request at a time, each retried until answered."""
    n = 0
    live: list[tuple[str, str]] = []
    while not stop.is_set():
        n += 1
        roll = rng.random()
        if live and roll < 0.2:
            tenant, dataset = live.pop(rng.randrange(len(live)))
            key = KEYS.dataset(tenant, dataset)
            ledger.in_doubt.add(key)
            reply = await request(addrs, ledger, lambda s: s.drop_dataset(cp.DropDatasetRequest(tenant_id=tenant, dataset_id=dataset)),
                                  what=f"drop {key}")
            if reply is not None and not isinstance(reply, GRPCError):
                ledger.dropped.add(key)
                ledger.in_doubt.discard(key)
        elif live and roll < 0.4:
            tenant, dataset = rng.choice(live)
            req = admission(tenant, dataset, f"refresh-{n}", str(SOURCE[0].versions[n % len(SOURCE[0].versions)]))
            await request(addrs, ledger, lambda s: s.admit_dataset(req), what=f"refresh {dataset}")
        else:
            tenant = f"t{1 + n % 2}"
            dataset, rid = f"d{n}", f"admit-{n}"
            req = admission(tenant, dataset, rid, None)
            reply = await request(addrs, ledger, lambda s: s.admit_dataset(req), what=f"admit {dataset}")
            if isinstance(reply, cp.AdmitDatasetResponse) and reply.status == cp.AdmitDatasetResponseStatus.ACCEPTED:
                ledger.acked[KEYS.dataset(tenant, dataset)] = rid
                live.append((tenant, dataset))
        await trio.sleep(0.05)


async def watch_terms(etcd: EtcdClient, audit: Audit) -> None:
    """Follow every write under the cluster prefix from revision 1 and check each against the terms."""
    start = 1
    while True:
        try:
            async with etcd.watch_prefix(KEYS.root, start_revision=start) as stream:
                async for batch in stream:
                    for ev in batch:
                        _audit_event(audit, ev)
                        start = ev.kv.mod_revision + 1
        except EtcdError:
            await trio.sleep(0.1)


def _audit_event(audit: Audit, ev: WatchEvent) -> None:
    key, revision = ev.kv.key, ev.kv.mod_revision
    audit.last_event_revision = max(audit.last_event_revision, revision)
    if key == KEYS.leader:
        if ev.kind == "put":
            if ev.kv.create_revision not in audit.terms:
                audit.term_started.append(trio.current_time())
            audit.terms.setdefault(ev.kv.create_revision, 0)
        else:
            for token, ended in audit.terms.items():
                if not ended:
                    audit.terms[token] = revision
        return
    if key.startswith(KEYS.root + Keys.MASTERS):
        return  # each master's presence record: leased, written by every master, not fenced
    if ev.kind == "delete" and ev.kv.lease:
        return
    alive = [t for t, ended in audit.terms.items() if t < revision and (not ended or ended > revision)]
    if not alive:
        audit.stale_writes += 1
        audit.violations.append(f"write of {key} at revision {revision} outside every term")


async def snapshot(etcd: EtcdClient) -> dict[str, dict[str, object]]:
    kvs, _ = await etcd.get_prefix(KEYS.root)
    out: dict[str, dict[str, object]] = {"datasets": {}, "epochs": {}, "workers": {}, "tenants": {}}
    decoders = {Keys.DATASETS: ("datasets", state_pb2.DatasetRecord), Keys.EPOCHS: ("epochs", state_pb2.EpochRecord),
                Keys.WORKERS: ("workers", state_pb2.WorkerRecord), Keys.TENANTS: ("tenants", state_pb2.TenantRecord)}
    for kv in kvs:
        rest = kv.key[len(KEYS.root):]
        for prefix, (table, cls) in decoders.items():
            if rest.startswith(prefix):
                out[table][kv.key] = cls.FromString(kv.value)
    return out


def check_safety(snap: dict[str, dict[str, object]], acked: dict[str, str], ledger: Ledger, audit: Audit) -> list[str]:
    """Invariants that hold at every observation: acknowledged admissions present, usage within quota.

    ``acked`` is the ledger's acknowledged admissions copied *before* ``snap``
    was read (one acknowledged while it was being read may be younger than its
    revision); drops are taken from the ledger as it is now, so a drop sent
    while it was read excuses a missing dataset.
    """
    audit.observations += 1
    problems = []
    for key, rid in acked.items():
        if key not in ledger.dropped and key not in ledger.in_doubt and key not in snap["datasets"]:
            problems.append(f"acknowledged admission {rid} ({key}) is missing")
    rf = {(d.request.tenant_id, d.request.dataset_id): max(1, d.replication_factor) for d in snap["datasets"].values()}
    epochs: dict[str, int] = {}
    memory: dict[str, int] = {}
    for e in snap["epochs"].values():
        if e.state in _CHARGED:
            epochs[e.tenant_id] = epochs.get(e.tenant_id, 0) + 1
            n = rf.get((e.tenant_id, e.dataset_id), max(1, len(e.replicas)))
            memory[e.tenant_id] = memory.get(e.tenant_id, 0) + e.estimate.memory_bytes * n
    for key, t in snap["tenants"].items():
        tid = key.rsplit("/", 1)[1]
        if t.quota.max_epochs and epochs.get(tid, 0) > t.quota.max_epochs:
            problems.append(f"tenant {tid}: {epochs[tid]} charged epochs > quota {t.quota.max_epochs}")
        if t.quota.max_memory_bytes and memory.get(tid, 0) > t.quota.max_memory_bytes:
            problems.append(f"tenant {tid}: {memory[tid]} bytes charged > quota {t.quota.max_memory_bytes}")
    return problems


def check_converged(snap: dict[str, dict[str, object]]) -> list[str]:
    """Invariants that must hold once the cluster has converged after a fault."""
    dead = {k.rsplit("/", 1)[1] for k, w in snap["workers"].items() if w.state == _DEAD}
    live = {k.rsplit("/", 1)[1] for k in snap["workers"]} - dead
    problems = []
    for key, e in snap["epochs"].items():
        on_dead = [r.worker_id for r in e.replicas if r.worker_id in dead]
        if on_dead:
            problems.append(f"{key}: replica on DEAD worker(s) {on_dead}")
        if e.state == _READY and not any(r.state == _LOADED and r.worker_id in live for r in e.replicas):
            problems.append(f"{key}: READY without a LOADED replica on a live worker")
    return problems


class Chaos:
    """The cluster, its workers, the fault injector and the measurements."""

    def __init__(self, directory: Path, seed: int) -> None:
        self.cluster = LocalCluster(directory, 3, cluster=CLUSTER, timings=PRODUCTION_TIMINGS)
        self.directory = directory
        self.rng = random.Random(seed)
        self.workers: dict[str, MasterProcess] = {}
        self.addrs = [s.grpc for s in self.cluster.specs.values()]
        self.ledger, self.audit = Ledger(), Audit()
        self.convergence: list[float] = []
        self.unavailable: list[float] = []
        self.injected: list[tuple[float, str]] = []  # (trio time, kind) per fault
        self.etcd: EtcdClient | None = None

    def start_worker(self, wid: str) -> None:
        masters = [s.grpc for s in self.cluster.specs.values()]
        self.workers[wid] = spawn_tied(worker_command(masters, wid, memory="1GiB", zone=f"z{wid[-1]}"),
                                       self.directory / f"{wid}.log")

    async def leader(self) -> str:
        assert self.etcd is not None
        with trio.fail_after(30):
            while True:
                try:
                    kv = await self.etcd.get(KEYS.leader)
                except EtcdError:
                    kv = None
                if kv is not None and kv.version >= 2:
                    return state_pb2.MasterRecord.FromString(kv.value).id
                await trio.sleep(0.05)

    async def setup(self) -> None:
        await self.cluster.start_all()
        self.etcd = await EtcdClient.connect(self.cluster.etcd_endpoints)
        for i in range(1, WORKERS + 1):
            self.start_worker(f"w{i}")
        for tenant, max_epochs in TENANTS.items():
            quota = cp.TenantQuota(tenant_id=tenant, max_epochs=max_epochs, max_memory_bytes=MAX_MEMORY)
            await request(self.addrs, self.ledger, lambda s, q=quota: s.upsert_tenant_quota(q), what="quota")
        with trio.fail_after(60):
            while True:
                reply = await request(self.addrs, self.ledger, lambda s: s.list_workers(cp.ListWorkersRequest()),
                                      what="list workers")
                if isinstance(reply, cp.ListWorkersResponse) and sum(
                        w.state == cp.WorkerState.ACTIVE for w in reply.workers) >= WORKERS:
                    return
                await trio.sleep(0.2)

    async def inject(self, kind: str) -> float:
        """Inject one fault; returns when it was injected (trio clock). Victims are brought back."""
        leader = await self.leader()
        cluster = self.cluster
        if kind in ("kill_leader", "kill_follower", "stop_leader", "restart_member"):
            victim = leader if kind in ("kill_leader", "stop_leader") else self.rng.choice(
                [n for n in cluster.names if n != leader])
            if kind == "restart_member":
                victim = self.rng.choice(cluster.names)
        else:
            victim = self.rng.choice(sorted(self.workers))
        print(f"chaos: {kind} {victim} (leader {leader})", file=sys.stderr, flush=True)
        at = trio.current_time()
        self.injected.append((at, kind))
        if kind in ("kill_leader", "kill_follower"):
            cluster.signal(victim, signal.SIGKILL)
            await cluster.processes[victim].wait()
            await cluster.start(victim)
            await cluster.wait_healthy(victim)
        elif kind == "stop_leader":
            cluster.signal(victim, signal.SIGSTOP)
            await trio.sleep(DEFAULT_LEASE_TTL + 1.5)
            cluster.signal(victim, signal.SIGCONT)
        elif kind == "restart_member":
            for pid in _children(cluster.processes[victim].pid):
                os.kill(pid, signal.SIGKILL)
        else:
            process = self.workers[victim]
            process.send_signal(signal.SIGKILL)
            await process.wait()
            self.start_worker(victim)
        return at

    async def settle(self, at: float) -> None:
        """Measure unavailability and convergence after the fault at ``at``; record violations."""
        assert self.etcd is not None
        deadline = at + CONVERGE_LIMIT
        converged = None
        while trio.current_time() < deadline:
            acked = dict(self.ledger.acked)
            try:
                snap = await snapshot(self.etcd)
            except EtcdError:
                await trio.sleep(0.2)
                continue
            self.audit.violations += check_safety(snap, acked, self.ledger, self.audit)
            if not check_converged(snap):
                converged = trio.current_time() - at
                break
            await trio.sleep(0.25)
        if converged is None:
            self.audit.violations += [f"not converged {CONVERGE_LIMIT:.0f} s after a fault: {p}"
                                      for p in check_converged(await snapshot(self.etcd))[:5]]
            converged = CONVERGE_LIMIT
        self.convergence.append(converged)
        with trio.move_on_after(ACK_LIMIT):
            while not any(t > at for t in self.ledger.ack_times):
                await trio.sleep(0.05)
        after = [t for t in self.ledger.ack_times if t > at]
        self.unavailable.append((after[0] - at) if after else ACK_LIMIT)

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            for process in self.workers.values():
                await stop_process(process, timeout=5)
            if self.etcd is not None:
                await self.etcd.aclose()
            await self.cluster.aclose()


def gaps_by_kind(waits: list[tuple[float, float]], injected: list[tuple[float, str]]) -> dict[str, float]:
    """Per fault kind, the longest wait of a request acknowledged after such a fault and before the next one."""
    out: dict[str, float] = {}
    bounds = [at for at, _ in injected[1:]] + [float("inf")]
    for (at, kind), until in zip(injected, bounds):
        longest = max((end - start for start, end in waits if at <= end < until), default=0.0)
        out[kind] = max(out.get(kind, 0.0), longest)
    return out


def spurious_terms(started: list[float], injected: list[tuple[float, str]]) -> int:
    """New terms that began after a fault that left the leader's process running, before the next fault."""
    bounds = [at for at, _ in injected[1:]] + [float("inf")]
    return sum(1 for (at, kind), until in zip(injected, bounds) if kind not in LEADER_FAULTS
               for t in started if at <= t < until)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


async def run(faults: int, seed: int, quick: bool) -> Report:
    report = Report(f"chaos under load (3 masters, {WORKERS} workers, seed {seed})", quick=quick)
    kinds_rng = random.Random(seed)
    kinds = [KINDS[i % len(KINDS)] for i in range(faults)]
    kinds_rng.shuffle(kinds)
    keep = os.environ.get("BENCH_KEEP") == "1"
    tmp = tempfile.mkdtemp(prefix="leibrix-chaos-")
    chaos = Chaos(Path(tmp), seed)
    try:
        await chaos.setup()
        assert chaos.etcd is not None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch_terms, chaos.etcd, chaos.audit)
            nursery.start_soon(load, chaos.addrs, chaos.ledger, random.Random(seed + 1), stop)
            await trio.sleep(2.0)
            for kind in kinds:
                at = await chaos.inject(kind)
                await chaos.settle(at)
                await trio.sleep(0.5)
            stop.set()
            await trio.sleep(1.0)
            acked = dict(chaos.ledger.acked)
            snap = await snapshot(chaos.etcd)
            chaos.audit.violations += check_safety(snap, acked, chaos.ledger, chaos.audit)
            nursery.cancel_scope.cancel()
    finally:
        await chaos.aclose()
        if not keep:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"chaos: kept {tmp}", file=sys.stderr)
    ledger, audit = chaos.ledger, chaos.audit
    lost = [p for p in audit.violations if p.startswith("acknowledged admission")]
    for line in sorted(set(audit.violations))[:20]:
        print(f"chaos: violation: {line}", file=sys.stderr)
    report.add("chaos.faults", len(kinds), "", ",".join(kinds))
    report.add("chaos.acked_admissions", len(ledger.acked), "", f"{ledger.rejected} answered with an error")
    report.add("chaos.lost_admissions", len({p.split()[2] for p in lost}), "", "goal 0")
    report.add("chaos.stale_leader_writes", audit.stale_writes, "", "must be 0")
    report.add("chaos.invariant_violations", len(audit.violations) - len(lost), "",
               f"{audit.observations} observations")
    report.add("chaos.unacknowledged_requests", ledger.unacked, "", f"not answered within {ACK_LIMIT:.0f} s")
    report.add("chaos.max_convergence_s", max(chaos.convergence, default=0.0), "s", "goal <= 10")
    report.add("chaos.max_unavailable_s", max(chaos.unavailable, default=0.0), "s", "fault to the next acknowledged write")
    report.add("chaos.max_client_gap_s", ledger.max_gap, "s", "longest wait for one acknowledgement, goal <= 3")
    for kind, gap in sorted(gaps_by_kind(ledger.waits, chaos.injected).items()):
        report.add(f"chaos.client_gap.{kind}_s", gap, "s", "longest wait acknowledged after such a fault")
    spurious = spurious_terms(audit.term_started, chaos.injected)
    report.add("chaos.spurious_failovers", spurious, "",
               "new terms after a fault that spared the leader's process (a follower, a worker, an etcd member); goal 0")
    report.add("chaos.seed", seed, "", "replay with --seed")
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.chaos [--quick] [--faults N] [--seed S] [--json PATH]``; exit 1 on any loss or violation."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one fault of each kind (CI smoke run)")
    parser.add_argument("--faults", type=int, default=None, help="number of faults (default 100, quick 5)")
    parser.add_argument("--seed", type=int, default=None, help="fault sequence seed (default: random, printed)")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as nested JSON")
    args = parser.parse_args(argv)
    faults = args.faults if args.faults is not None else (len(KINDS) if args.quick else 100)
    seed = args.seed if args.seed is not None else random.randrange(1 << 31)
    from tests.support.sample_source import sample_source  # a real table the connectors can plan

    SOURCE.append(sample_source())
    report = trio.run(run, faults, seed, args.quick)
    report.emit(args.json)
    values = {row[0]: row[1] for row in report.rows}
    bad = sum(values.get(k, 0) for k in ("chaos.lost_admissions", "chaos.stale_leader_writes",
                                         "chaos.invariant_violations"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
