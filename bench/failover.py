"""Master failover: seconds from a fault of the leader to the first write accepted by the new leader.

Three real ``leibrix master`` processes on loopback (each with its embedded
etcd member, one 3-member quorum) run with the **production** settings: etcd
``PRODUCTION_TIMINGS`` and the default lease TTL. For each of N trials per
fault kind the benchmark finds the leader, injects the fault and watches the
leader key from a surviving member; the clock stops when a put arrives whose
create revision is a new term's token and whose version is >= 2 — the new
leader's first fenced write (its leadership probe) has been applied.

* ``kill9``   — SIGKILL the leader master (its etcd member dies with it; when
  that member was the Raft leader, etcd re-elects first). The victim is
  restarted on its data before the next trial.
* ``sigstop`` — SIGSTOP the leader until a new leader has written, then
  SIGCONT it; the old leader must step down without any accepted write.
* ``resign``  — SIGTERM the leader (graceful: it resigns first), restart it after.

``failover.stale_writes_accepted`` counts, over every trial, leader-key writes
applied under an older term's token after a newer term began (must be 0).

``--lease-ttl S`` runs the masters with another lease TTL (default: the
production one), to see what a longer lease costs a kill -9.

Usage: ``python -m bench.failover [--quick] [--lease-ttl S] [--json PATH]``.
"""

from __future__ import annotations

import signal
import tempfile
from pathlib import Path

import numpy as np
import trio

from bench._report import Report, options
from leibrix.master._options import DEFAULT_LEASE_TTL
from leibrix.store._etcd import EtcdClient, EtcdUnavailable, KeyValue
from leibrix.store._member import PRODUCTION_TIMINGS
from leibrix.cli._cluster import LocalCluster
from leibrix.wire._proto.records import state_pb2

CLUSTER = "bench"
LEADER_KEY = f"/leibrix/{CLUSTER}/leader"
KINDS = ("kill9", "sigstop", "resign")
#: Seconds a restarted master's member gets to catch up before the next trial.
_SETTLE = 1.0


class Observer:
    """Follows the leader key through a member the fault does not touch, and audits the terms."""

    def __init__(self) -> None:
        self.highest_token = 0
        self.stale_writes = 0

    def audit(self, kv: KeyValue) -> None:
        """Count a put applied under a token older than one already seen (a stale leader's write)."""
        if kv.create_revision < self.highest_token:
            self.stale_writes += 1
        self.highest_token = max(self.highest_token, kv.create_revision)


def _leader_id(kv: KeyValue) -> str:
    return state_pb2.MasterRecord.FromString(kv.value).id


async def current_leader(cluster: LocalCluster) -> tuple[str, int, int]:
    """``(leader name, token, revision)`` once the leader has written and every master is healthy."""
    for name in cluster.names:
        await cluster.wait_healthy(name)
    client = await EtcdClient.connect(cluster.etcd_endpoints)
    try:
        while True:
            try:
                kv, revision = await client.get_with_revision(LEADER_KEY)
            except EtcdUnavailable:
                kv, revision = None, 0
            if kv is not None and kv.version >= 2:
                return _leader_id(kv), kv.create_revision, revision
            await trio.sleep(0.01)
    finally:
        await client.aclose()


async def raft_leader_is(cluster: LocalCluster, name: str) -> bool:
    """True if ``name``'s etcd member is currently the Raft leader."""
    client = await EtcdClient.connect([cluster.specs[name].client_url])
    try:
        status = await client.status()
        return status.member_id == status.leader_id
    finally:
        await client.aclose()


async def trial(
    cluster: LocalCluster, observer: Observer, kind: str, settled: str | None
) -> tuple[float, bool, str]:
    """One fault: (seconds to the new leader's first accepted write, victim was Raft leader, victim).

    The watch runs on a member other than the victim's and other than
    ``settled`` (the one restarted by the previous trial, whose member may
    still be catching up and deliver events late).
    """
    old, token, revision = await current_leader(cluster)
    observer.highest_token = max(observer.highest_token, token)
    was_raft_leader = await raft_leader_is(cluster, old)
    witness = next(n for n in cluster.names if n not in (old, settled))
    client = await EtcdClient.connect([cluster.specs[witness].client_url])
    try:
        async with client.watch_key(LEADER_KEY, start_revision=revision + 1) as stream:
            started = trio.current_time()
            if kind == "kill9":
                cluster.signal(old, signal.SIGKILL)
            elif kind == "sigstop":
                cluster.signal(old, signal.SIGSTOP)
            else:
                cluster.signal(old, signal.SIGTERM)
            elapsed = None
            async for batch in stream:
                for event in batch:
                    if event.kind != "put":
                        continue
                    observer.audit(event.kv)
                    if event.kv.create_revision > token and event.kv.version >= 2 and elapsed is None:
                        elapsed = trio.current_time() - started
                if elapsed is not None:
                    break
            if kind == "sigstop":
                # Wake the old leader and keep auditing while it finds out it lost.
                cluster.signal(old, signal.SIGCONT)
                with trio.move_on_after(cluster.lease_ttl + 1.0):
                    async for batch in stream:
                        for event in batch:
                            if event.kind == "put":
                                observer.audit(event.kv)
    finally:
        await client.aclose()
    if kind == "kill9":
        await cluster.processes[old].wait()
    elif kind == "resign" and await cluster.processes[old].wait() != 0:
        raise RuntimeError(f"{old} did not exit cleanly on SIGTERM:\n{cluster.log_tail(old)}")
    if kind != "sigstop":
        # Bring the victim back and let its member catch up: each trial measures
        # one fault on a healthy 3-member quorum, not a fault stacked on a rejoin.
        await cluster.start(old)
        await cluster.wait_healthy(old)
        await trio.sleep(_SETTLE)
    assert elapsed is not None
    return elapsed, was_raft_leader, old


async def run(quick: bool, lease_ttl: int = DEFAULT_LEASE_TTL) -> Report:
    trials = 3 if quick else 10
    report = Report("master failover (3 masters, production etcd timings)", quick=quick)
    observer = Observer()
    results: dict[str, list[float]] = {k: [] for k in KINDS}
    raft_leader_kills = 0
    with tempfile.TemporaryDirectory(prefix="leibrix-bench-failover-") as tmp:
        async with LocalCluster(Path(tmp), 3, cluster=CLUSTER, timings=PRODUCTION_TIMINGS,
                                lease_ttl=lease_ttl) as cluster:
            await cluster.start_all()
            for kind in KINDS:
                settled = None
                for _ in range(trials):
                    elapsed, was_raft_leader, victim = await trial(cluster, observer, kind, settled)
                    results[kind].append(elapsed)
                    raft_leader_kills += kind == "kill9" and was_raft_leader
                    settled = None if kind == "sigstop" else victim
    for kind in KINDS:
        samples = np.array(results[kind])
        for label, value in (("p50", np.percentile(samples, 50)), ("p99", np.percentile(samples, 99)), ("max", samples.max())):
            report.add(f"failover.{kind}_{label}_s", float(value), "s", f"{len(samples)} trials")
    report.add("failover.trials", trials, "", "per fault kind")
    report.add("failover.stale_writes_accepted", observer.stale_writes, "", "must be 0")
    report.add("failover.lease_ttl_s", lease_ttl, "s",
               "production default" if lease_ttl == DEFAULT_LEASE_TTL else f"production default {DEFAULT_LEASE_TTL} s")
    report.note(
        f"etcd heartbeat {PRODUCTION_TIMINGS.heartbeat_ms} ms, election {PRODUCTION_TIMINGS.election_ms} ms; "
        f"lease TTL {lease_ttl} s; goals: kill -9 p99 <= 3 s, resign <= 0.5 s"
    )
    report.note(f"{raft_leader_kills}/{trials} kill -9 trials also killed the etcd Raft leader (re-election first)")
    if quick:
        report.note(f"quick: {trials} trials per kind instead of 10")
    return report


def main() -> None:
    """``python -m bench.failover [--quick] [--lease-ttl S] [--json PATH]``."""
    args = options(__doc__.splitlines()[0], extra=lambda parser: parser.add_argument(
        "--lease-ttl", type=int, default=DEFAULT_LEASE_TTL,
        help=f"the masters' lease TTL in seconds (default: the production {DEFAULT_LEASE_TTL})"))
    report = trio.run(run, args.quick, args.lease_ttl)
    report.emit(args.json)


if __name__ == "__main__":
    main()
