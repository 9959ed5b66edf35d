"""Soak: the leader keeps its lease on a saturated machine; every new term counts as a false failover.

Three real ``leibrix master`` processes on loopback (each with its embedded
etcd member, one 3-member quorum) run with the production settings: etcd
``PRODUCTION_TIMINGS``, the default lease TTL (``--lease-ttl`` to try
another) and the default worker heartbeat. For ``--minutes`` the leader
carries, all at once:

* ``--streams`` simulated worker streams: ``python -m bench.workers --load``
  children (90 streams per HTTP/2 connection, 2,500 streams per child) that
  register with the leader, heartbeat at the master's interval and answer
  assignments at once; when the leader changes they are replaced by children
  dialling the new one;
* a steady open-loop admission load: :data:`ADMISSIONS_PER_S` single-epoch
  admissions per second of new datasets on a real Iceberg table, each sent to
  the leader first and re-sent with its request id until answered (each
  attempt gets :data:`ATTEMPT_S` per master);
* ``--burners`` CPU burners: ``python -c`` busy loops, each bounded by the run
  and tied to this process, so that together with the rest both cores stay
  saturated.

No fault is injected, so every new term seen on the leader key (any put with
a new create revision after the first leader's) is a false failover:
``failover.false_failovers``, goal 0 (exit status 1 otherwise). Also
reported: ACTIVE streams on the leader at the end, admissions acknowledged
and their p99, the leading master's CPU use, etcd Raft elections (the Raft
term's increase), the leader's longest event-loop stall
(``leibrix_loop_stall_max_seconds`` from its ``/metrics``, sampled every
:data:`SAMPLE_S` seconds) and the machine's 1-minute load average over the
soak. The lease keepalives run on threads of their own, so a loop stall
does not delay them (a whole-process pause, such as a garbage collection,
does); the masters log each stall over 100 ms with the task step that
caused it.

``BENCH_KEEP=1`` keeps the cluster's directory (master logs ``m*.log``,
burner logs); ``LEIBRIX_BENCH_LOG=PATH`` keeps the load children's stderr.

Usage: ``python -m bench.soak [--quick] [--minutes M] [--streams N] [--burners K]
[--lease-ttl S] [--json PATH]``; ``--quick``: 1 minute, 500 streams.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from bench._report import Report, options
from bench.failover import CLUSTER, LEADER_KEY, current_leader
from bench.fuzz import loop_stall
from bench.workers import Child, _proc_cpu_rss
from leibrix.cli._cluster import LocalCluster, MasterProcess, spawn_tied
from leibrix.client._call import call
from leibrix.client._requests import time_partitioned_admission
from leibrix.master._options import DEFAULT_LEASE_TTL
from leibrix.store._etcd import EtcdClient, EtcdError
from leibrix.store._member import PRODUCTION_TIMINGS
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from leibrix.workers._config import HubConfig

TENANT = "soak"
#: Open-loop admissions per second during the soak.
ADMISSIONS_PER_S = 2.0
#: Simulated workers per ``--load`` child, and per HTTP/2 connection (the server allows 100 concurrent streams).
STREAMS_PER_CHILD = 2500
STREAMS_PER_CONN = 90
#: Seconds between samples of the leader's loop-stall gauge (a maximum over the last minute) and the load
#: average. Rendering ``/metrics`` over thousands of workers takes the leader's loop a while itself.
SAMPLE_S = 30.0
#: One attempt's deadline per master. The leader drops a call whose deadline passed and a retry starts it
#: over, so a deadline below the slowest admissions of a saturated leader (several seconds with four
#: burners) turns them into a retry storm that acknowledges nothing.
ATTEMPT_S = 30.0
#: A request not acknowledged within this long (same request, retried) counts as unanswered.
ACK_LIMIT = 60.0
#: Bound on every simulated worker registering before the soak starts.
REGISTER_TIMEOUT = 300.0
#: The day every admission covers (inside the sample table's rows).
DAY = datetime(2026, 11, 1, tzinfo=UTC)
#: A burner: spin until ``argv[1]`` seconds have passed (it cannot outlive the run by more).
BURN = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


@dataclass
class Soak:
    """The run's moving parts and what it observed."""

    cluster: LocalCluster
    streams: int
    leader: str = ""
    token: int = 0
    #: ``(trio time, master)`` of every term after the first leader's.
    new_terms: list[tuple[float, str]] = field(default_factory=list)
    loaders: list[Child] = field(default_factory=list)
    burners: list[MasterProcess] = field(default_factory=list)
    stalls: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    #: CPU seconds of the leading master, summed per sample interval (credited to who leads at its end).
    leader_cpu: float = 0.0
    sampled_s: float = 0.0
    #: Seconds from the first send of each acknowledged admission to its acknowledgement.
    waits: list[float] = field(default_factory=list)
    accepted: int = 0
    unanswered: int = 0
    errors: int = 0

    async def acknowledged(self, rpc, what: str) -> object | None:
        """``rpc``'s reply, asking the leader first and re-sending until answered; None after ``ACK_LIMIT``."""
        started = trio.current_time()
        while trio.current_time() - started < ACK_LIMIT:
            first = self.cluster.specs[self.leader].grpc
            addrs = ",".join([first, *(s.grpc for s in self.cluster.specs.values() if s.grpc != first)])
            try:
                reply, _ = await call(addrs, rpc, timeout=ATTEMPT_S)
                return reply
            except GRPCError as exc:
                if exc.status not in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED):
                    self.errors += 1
                    print(f"soak: {what}: {exc.status.name} {exc.message}", file=sys.stderr, flush=True)
                    return None
            except (OSError, StreamTerminatedError, ProtocolError):
                pass
            await trio.sleep(0.1)
        self.unanswered += 1
        print(f"soak: {what} not answered within {ACK_LIMIT:.0f} s", file=sys.stderr, flush=True)
        return None

    def registered(self) -> int:
        """Streams the current load children have had acknowledged."""
        return sum((c.last("stats") or {}).get("registered", 0) for c in self.loaders)

    async def dial_leader(self) -> None:
        """Replace the load children with ones whose streams go to the current leader."""
        await self.stop_loaders()
        children = -(-self.streams // STREAMS_PER_CHILD)
        for k in range(children):
            count = self.streams // children + (k < self.streams % children)
            spec = {"master": self.cluster.specs[self.leader].grpc, "count": count,
                    "conns": -(-count // STREAMS_PER_CONN), "prefix": f"s{k}-",
                    "heartbeat": HubConfig().heartbeat_interval}
            self.loaders.append(Child(["--load", json.dumps(spec)]))

    async def stop_loaders(self) -> None:
        loaders, self.loaders = self.loaders, []
        for child in loaders:
            await trio.to_thread.run_sync(child.stop, signal.SIGKILL)

    async def watch_terms(self, etcd: EtcdClient, revision: int) -> None:
        """Count every new term on the leader key from ``revision``; send the streams to each new leader."""
        start = revision + 1
        while True:
            try:
                async with etcd.watch_key(LEADER_KEY, start_revision=start) as stream:
                    async for batch in stream:
                        for ev in batch:
                            start = ev.kv.mod_revision + 1
                            if ev.kind != "put" or ev.kv.create_revision <= self.token:
                                continue
                            self.token = ev.kv.create_revision
                            leader = state_pb2.MasterRecord.FromString(ev.kv.value).id
                            self.new_terms.append((trio.current_time(), leader))
                            print(f"soak: new term {self.token} led by {leader} (was {self.leader}); no fault "
                                  "was injected", file=sys.stderr, flush=True)
                            if leader != self.leader:
                                self.leader = leader
                                await self.dial_leader()
            except EtcdError:
                await trio.sleep(0.1)

    def masters_cpu(self) -> dict[str, float]:
        """CPU seconds each master process has used so far."""
        return {name: _proc_cpu_rss(process.pid)[0] for name, process in self.cluster.processes.items()}

    async def sample(self) -> None:
        """Every :data:`SAMPLE_S`: the leader's CPU use and longest loop stall of the last minute, the load average."""
        cpu = self.masters_cpu()
        while True:
            await trio.sleep(SAMPLE_S)
            self.loads.append(os.getloadavg()[0])
            cpu, before = self.masters_cpu(), cpu
            self.leader_cpu += cpu[self.leader] - before[self.leader]
            self.sampled_s += SAMPLE_S
            try:
                stall = await trio.to_thread.run_sync(loop_stall, self.cluster.specs[self.leader].http)
            except OSError:
                continue
            self.stalls.append(stall)

    async def admit(self, source, n: int) -> None:
        """One admission of a new single-epoch dataset, retried with its request id until acknowledged."""
        req = time_partitioned_admission(
            TENANT, f"d{n}", start=DAY, end=DAY + timedelta(days=1), catalog_uri=source.uri,
            database=source.database, request_id=f"soak-{n}", replication_factor=2,
            hints=cp.EstimateHints(bytes_per_epoch=4 << 20, rows_per_epoch=1000))
        req.source.table = source.table
        started = trio.current_time()
        reply = await self.acknowledged(lambda s: s.admit_dataset(req), f"admit d{n}")
        if isinstance(reply, cp.AdmitDatasetResponse):
            self.waits.append(trio.current_time() - started)
            self.accepted += reply.status == cp.AdmitDatasetResponseStatus.ACCEPTED

    async def admissions(self, source) -> None:
        """Open loop: start one admission every ``1 / ADMISSIONS_PER_S`` s, whatever the earlier ones do."""
        async with trio.open_nursery() as nursery:
            n = 0
            next_at = trio.current_time()
            while True:
                nursery.start_soon(self.admit, source, n)
                n += 1
                next_at += 1 / ADMISSIONS_PER_S
                await trio.sleep_until(next_at)

    async def active_streams(self) -> int:
        """Simulated workers the leader lists as ACTIVE."""
        active, token = 0, None
        while token != "":
            page_request = cp.ListWorkersRequest(page_size=5000, page_token=token or "")
            page = await self.acknowledged(lambda s, r=page_request: s.list_workers(r), "list workers")
            if not isinstance(page, cp.ListWorkersResponse):
                return active
            active += sum(w.state == cp.WorkerState.ACTIVE and w.worker_id.startswith("s") for w in page.workers)
            token = page.next_page_token
        return active

    async def stop_burners(self) -> None:
        burners, self.burners = self.burners, []
        for burner in burners:
            burner.send_signal(signal.SIGKILL)
            await burner.wait()

    async def aclose(self) -> None:
        with trio.CancelScope(shield=True):
            await self.stop_burners()
            await self.stop_loaders()
            await self.cluster.aclose()


async def run(args: argparse.Namespace, source) -> Report:
    lease = args.lease_ttl or DEFAULT_LEASE_TTL
    report = Report(f"soak: {args.streams:,} streams, {args.burners} CPU burners, {args.minutes:g} min, "
                    f"lease {lease} s", quick=args.quick)
    keep = os.environ.get("BENCH_KEEP") == "1"
    tmp = Path(tempfile.mkdtemp(prefix="leibrix-soak-"))
    cluster = LocalCluster(tmp, 3, cluster=CLUSTER, timings=PRODUCTION_TIMINGS, lease_ttl=args.lease_ttl)
    soak = Soak(cluster, args.streams)
    seconds = args.minutes * 60
    try:
        await cluster.start_all()
        soak.leader, soak.token, revision = await current_leader(cluster)
        etcd = await EtcdClient.connect(cluster.etcd_endpoints)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(soak.watch_terms, etcd, revision)
                await soak.dial_leader()
                with trio.fail_after(REGISTER_TIMEOUT):
                    while soak.registered() < args.streams:
                        await trio.sleep(0.5)
                print(f"soak: {args.streams:,} streams registered with {soak.leader}", file=sys.stderr, flush=True)
                await soak.acknowledged(lambda s: s.upsert_tenant_quota(cp.TenantQuota(tenant_id=TENANT)), "tenant")
                for _ in range(args.burners):
                    soak.burners.append(spawn_tied([sys.executable, "-c", BURN, str(seconds + 60)], tmp / "burner.log"))
                started = trio.current_time()
                raft_term = (await etcd.status()).raft_term
                nursery.start_soon(soak.sample)
                nursery.start_soon(soak.admissions, source)
                await trio.sleep(seconds)
                load_end = os.getloadavg()
                raft_elections = (await etcd.status()).raft_term - raft_term
                await soak.stop_burners()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                await etcd.aclose()
        streams = await soak.active_streams()
    finally:
        await soak.aclose()
        if keep:
            print(f"soak: kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)

    waits = np.array(soak.waits) * 1e3
    report.add("failover.false_failovers", len(soak.new_terms), "", "new terms with no fault injected; goal 0")
    report.add("failover.soak_minutes", args.minutes, "min", "all of the load at once")
    report.add("failover.lease_ttl_s", lease, "s", "production default" if lease == DEFAULT_LEASE_TTL else
               f"production default is {DEFAULT_LEASE_TTL} s")
    report.add("failover.streams", streams, "", f"ACTIVE on the leader at the end, of {args.streams:,}")
    report.add("failover.burners", args.burners, "", "busy-loop processes")
    report.add("failover.admissions_acked", soak.accepted, "",
               f"ACCEPTED; {soak.unanswered} unanswered within {ACK_LIMIT:.0f} s, {soak.errors} answered with an error")
    report.add("failover.admission_p99_ms", float(np.percentile(waits, 99)) if len(waits) else 0.0, "ms",
               f"first send to acknowledgement, {ADMISSIONS_PER_S:g}/s open loop")
    report.add("failover.leader_cpu_cores", soak.leader_cpu / max(soak.sampled_s, 1.0), "cores",
               "the leading master's CPU seconds per second")
    report.add("failover.etcd_raft_elections", raft_elections, "", "etcd Raft term increase during the soak")
    report.add("failover.max_loop_stall_s", max(soak.stalls, default=0.0), "s",
               "leader's leibrix_loop_stall_max_seconds, highest sample")
    report.add("failover.load_avg_1m_mean", float(np.mean(soak.loads)) if soak.loads else load_end[0], "",
               f"max {max(soak.loads, default=load_end[0]):.1f}; {os.cpu_count()} cores")
    report.note(f"etcd heartbeat {PRODUCTION_TIMINGS.heartbeat_ms} ms, election {PRODUCTION_TIMINGS.election_ms} ms; "
                f"worker heartbeat {HubConfig().heartbeat_interval:g} s; load average at the end "
                + " / ".join(f"{x:.1f}" for x in load_end) + " (1/5/15 min)")
    for at, leader in soak.new_terms:
        report.note(f"new term at {at - started:+.1f} s into the soak, led by {leader}")
    if args.quick:
        report.note(f"quick: {args.minutes:g} min and {args.streams:,} streams instead of 10 min and 5,000")
    return report


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.soak [--quick] [--minutes M] [--streams N] [--burners K] [--lease-ttl S] [--json PATH]``."""

    def flags(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--minutes", type=float, default=None, help="soak duration (default 10, quick 1)")
        parser.add_argument("--streams", type=int, default=None,
                            help="simulated worker streams (default 5000, quick 500)")
        parser.add_argument("--burners", type=int, default=2, help="busy-loop CPU burner processes (default 2)")
        parser.add_argument("--lease-ttl", type=int, default=None,
                            help=f"the masters' lease TTL in seconds (default: the production {DEFAULT_LEASE_TTL})")

    args = options(__doc__.splitlines()[0], argv, flags)
    args.minutes = args.minutes if args.minutes is not None else (1.0 if args.quick else 10.0)
    args.streams = args.streams if args.streams is not None else (500 if args.quick else 5000)
    from tests.support.sample_source import sample_source  # a real table the connectors can plan

    report = trio.run(run, args, sample_source())
    report.emit(args.json)
    return 1 if report.as_dict()["failover"]["false_failovers"] > 0 else 0


if __name__ == "__main__":
    sys.exit(main())
