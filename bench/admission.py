"""``python -m bench.admission [--quick] [--json PATH]``: admission end to end, through gRPC and etcd.

Processes (all on loopback, all real):

* **etcd**: one member (the Debian ``etcd`` 3.4), started by the benchmark;
* **two masters** (``leibrix.master._master.Master`` as composed for production, sharing
  that etcd): the first leads, the second follows with a warm mirror;
* **workers** (``--load``): one plain-asyncio process simulating 10 workers
  as streams over two connections — they register with an inventory,
  heartbeat, answer every ``data_assignment`` with a COMPLETED status whose
  rows/bytes match the plan, honour ``evict_epoch``, and follow the leader
  (re-registering with their inventory) when it changes;
* this process: the gRPC client (grpclib on a plain asyncio loop; the latency
  phases encode and decode ``AdmitDataset`` with upb, in C, so the client costs
  the shared cores little).

Measured:

* ``admission.epochs_per_s``: epochs admitted, placed (LOADING, with their
  assignments sent) and persisted, per second of wall time, for the bulk load
  of ``admission.epochs`` epochs in 100-epoch requests (8 in flight, 4 tenants);
* ``admission.p50_ms`` / ``admission.p99_ms``: latency of single-epoch
  ``AdmitDataset`` requests (each a new dataset) sent open-loop at a fixed
  offered rate (``admission.offered_rate``) while the cluster holds the bulk
  epochs;
* ``admission.commit_p50_ms`` / ``admission.commit_p99_ms``: the floor, measured
  in the same run against the same etcd: 1,000 fenced single-put commits
  (``FencedWriter.commit`` under an election of a cluster name of its own);
* the latency–throughput curve (``admission.curve.<rate>.p99_ms`` and
  ``.acked_per_s``): the same open-loop single-epoch admissions, the offered
  rate doubled each step until saturation, i.e. the step's p99 exceeds
  ``SATURATION_X`` × the commit p99 or its acknowledgements fall behind (fewer
  than 90 % of the offered rate acknowledged per second, or any request
  failing). ``admission.saturation_epochs_per_s`` is the acknowledged rate of
  the last step below saturation; ``admission.p99_over_commit_p99_at_half_load``
  is the p99 of one more step at half that rate over the commit p99. Each
  step's note gives the leader's CPU per admission and the CPU of the load
  generators (this process, the simulated workers) as a share of one core;
* the floor, the latency phase and every curve step start once the leader has
  settled (under 25 % of a core over a second, at most 30 s), so none measures
  the work the previous phase left (the bulk load's tail goes on for seconds
  after its last epoch is READY);
* ``admission.tenants``, ``admission.workers``;
* ``admission.master_rss_mb``: the leader's resident memory once every bulk
  epoch is READY (resident on a worker);
* ``admission.takeover_s``: the leader gets SIGTERM (it resigns first), and the
  clock runs until the follower — now leader, with every epoch in its state —
  acknowledges a new admission. It bounds "winning the election → serving"
  from above (it also includes the resignation and the client's retry step);
* ``auth.admission_p50_ratio``: what authentication and TLS cost an admission.
  Once the scenario above is over, two more clusters of one master each
  (their own cluster names on the same etcd, :data:`AUTH_WORKERS` simulated
  workers each) are started alike but for security: one plain, one with a TLS
  gRPC port (a certificate minted here with ``cryptography``, signed by a
  throwaway CA) and an admin token file. On the secured one the admin creates
  the tenant and issues it a tenant token (``IssueToken``); every admission
  there is sent over TLS with ``authorization: Bearer <tenant token>``, and its
  workers connect over TLS too. The same single-epoch latency phase (same
  duration as ``admission.p50_ms``, and its offered rate unless that is more
  than half of ``admission.saturation_epochs_per_s``, then that half: beyond
  saturation a p50 measures queueing, which magnifies any difference) then
  runs against each in turn, plain first, :data:`AUTH_ROUNDS` times, so both
  see the same background load; the ratio is the secured p50 over the plain
  p50 (``auth.plain_p50_ms``, ``auth.tls_token_p50_ms``, and their p99s).

Every admission names a real Iceberg table: ``db.events`` of the SQL catalog
on SQLite that :mod:`tests.support.sample_source` builds in a temporary
directory before the cluster starts (daily epochs from 2026-11-01, region
``r0``), so the masters plan each one through the source connector when
admission does.

Goals: ≥ 1,000 epochs/s, p99 ≤ 50 ms, ≤ 512 MiB at 100,000 epochs,
takeover ≤ 2 s with 100,000 epochs, p99 at half the saturation rate ≤ 10 ×
the fenced-commit p99, ``auth.admission_p50_ratio`` ≤ 1.10.

``BENCH_KEEP=1`` keeps the processes' logs (the path is printed);
``BENCH_PROFILE_DIR=DIR`` runs each master under cProfile into ``DIR``;
``BENCH_LATENCY_LOG=PATH`` writes each latency-phase request (wall-clock send time, ms) to ``PATH``.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench._report import Report, options
from leibrix.wire._grpc import COORDINATE_WORKER
from leibrix.store._ports import free_hostport
from leibrix.client._requests import time_partitioned_admission

PATH = COORDINATE_WORKER
#: Leader lease TTL of the benchmark's masters (s). The takeover is measured with a graceful
#: resignation, so the TTL does not enter it; it only has to ride out the bulk load's etcd stalls.
LEASE_TTL = 3
#: First day of every admission (inside the sample table's rows).
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
#: A curve step saturates when its p99 exceeds this many fenced-commit p99s.
SATURATION_X = 25
#: Fenced commits timed for the floor (its p99 is the 10th slowest: one etcd or VM hiccup does not decide it).
FLOOR_COMMITS = 1000
#: The Iceberg table every admission names ([catalog uri, database, table]), set by :func:`run`.
SOURCE: list[str] = []
#: Simulated workers of each cluster of the authentication comparison.
AUTH_WORKERS = 3
#: Alternating latency phases (plain, then TLS + token) of the authentication comparison.
AUTH_ROUNDS = 2
#: The one tenant the authentication comparison admits to.
AUTH_TENANT = "t0"


def mint_server_certificate(directory: Path) -> tuple[str, str, str]:
    """A throwaway CA and a server certificate for 127.0.0.1 it signs: (CA PEM, cert PEM, key PEM) paths."""
    from ipaddress import IPv4Address

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(timezone.utc)

    def sign(subject: str, public_key, issuer: str, issuer_key, *, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    directory.mkdir(parents=True, exist_ok=True)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = sign("bench-ca", ca_key.public_key(), "bench-ca", ca_key, ca=True)
    leaf = sign("bench-master", key.public_key(), "bench-ca", ca_key, ca=False)
    paths = directory / "ca.pem", directory / "master.pem", directory / "master.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return tuple(str(p) for p in paths)  # type: ignore[return-value]


def client_ssl(ca: str):
    """A client TLS context trusting ``ca`` and offering HTTP/2."""
    import ssl

    context = ssl.create_default_context(cafile=ca)
    context.set_alpn_protocols(["h2"])
    return context



# ---------------------------------------------------------------- child: a master


def serve_master(spec: dict) -> None:
    """Child: one master on the shared etcd, composed as in production."""
    import logging
    from dataclasses import dataclass

    import trio

    from leibrix.master._config import MasterConfig
    from leibrix.cli._master import serve

    @dataclass(frozen=True, slots=True)
    class BenchConfig(MasterConfig):
        # The hub reads ``worker_*`` options when the configuration has them. One process simulates
        # all workers; when the bulk load starves it of CPU its heartbeats lag, and a benchmark of
        # admission must not turn that into worker deaths and mass re-placement.
        worker_dead_timeout: float = 120.0

    security = {k: spec[k] for k in ("tls_cert", "tls_key", "admin_token_file") if spec.get(k)}
    cfg = BenchConfig(name=spec["name"], cluster=spec.get("cluster", "bench"), grpc_listen=spec["grpc"],
                      http_listen=spec["http"], data_dir=Path(spec["dir"]), etcd_endpoints=[spec["etcd"]],
                      lease_ttl=spec["ttl"], log_level="warning", **security).validate()
    logging.basicConfig(level=logging.WARNING)
    profile_dir = os.environ.get("BENCH_PROFILE_DIR")  # optional: cProfile each master into this directory
    if not profile_dir:
        trio.run(serve, cfg)
        return
    import cProfile

    cProfile.runctx("trio.run(serve, cfg)", globals(), {"trio": trio, "serve": serve, "cfg": cfg},
                    filename=str(Path(profile_dir) / f"{spec['name']}.prof"))


# ---------------------------------------------------------------- child: simulated workers


async def simulate_workers(spec: dict) -> None:
    """Child: ``count`` workers multiplexed over two connections per master, following the leader."""
    from grpclib.client import Channel
    from grpclib.const import Cardinality

    from leibrix.wire._proto.records import control_plane_pb2 as pb

    held: dict[str, dict[tuple[str, str], pb.InventoryEntry]] = {}

    async def session(wid: str, index: int, channel: Channel) -> None:
        mine = held.setdefault(wid, {})
        async with channel.request(PATH, Cardinality.STREAM_STREAM, pb.EventStreamMessage,
                                   pb.EventStreamMessage) as stream:
            reg = pb.EventStreamMessage(worker_id=wid)
            reg.register_event.worker.node_id = wid
            reg.register_event.worker.addr = f"10.0.0.{index}:9000"
            reg.register_event.worker.labels["zone"] = f"z{index % 3}"
            reg.register_event.capacity.memory_bytes = 64 << 30
            reg.register_event.capacity.cpu_cores = 64
            reg.register_event.inventory.extend(mine.values())
            await stream.send_message(reg)
            ack = await stream.recv_message()
            if ack is None or "reject" in ack.common_ack.event_type:
                return
            lock = asyncio.Lock()

            async def beat() -> None:
                while True:
                    await asyncio.sleep(3.0)
                    hb = pb.EventStreamMessage()
                    hb.heartbeat_event.memory_used_bytes = sum(e.bytes for e in mine.values())
                    async with lock:
                        await stream.send_message(hb)

            task = asyncio.ensure_future(beat())
            try:
                while (msg := await stream.recv_message()) is not None:
                    kind = msg.WhichOneof("payload")
                    if kind == "data_assignment":
                        a = msg.data_assignment
                        plan = a.load_plan
                        mine[(a.dataset_id, a.epoch_id)] = pb.InventoryEntry(
                            dataset_id=a.dataset_id, epoch_id=a.epoch_id, plan_id=plan.plan_id,
                            rows=plan.expected_rows, bytes=plan.expected_bytes // 2, tenant_id=plan.tenant_id)
                        st = pb.EventStreamMessage()
                        u = st.data_pull_status_update
                        u.dataset_id, u.epoch_id, u.status = a.dataset_id, a.epoch_id, 2
                        u.plan_id, u.rows, u.bytes = plan.plan_id, plan.expected_rows, plan.expected_bytes // 2
                        async with lock:
                            await stream.send_message(st)
                    elif kind == "common_ack" and msg.common_ack.event_type == "evict_epoch":
                        f = msg.common_ack.payload.fields
                        mine.pop((f["dataset_id"].string_value, f["epoch_id"].string_value), None)
            finally:
                task.cancel()

    async def worker(wid: str, index: int) -> None:
        attempt = 0
        while True:
            host, port = spec["masters"][attempt % len(spec["masters"])].rsplit(":", 1)
            attempt += 1
            channel = Channel(host, int(port), ssl=client_ssl(spec["ca"]) if spec.get("ca") else None)
            try:
                await session(wid, index, channel)
            except Exception as e:  # noqa: BLE001 - the master went away or redirected: try the next one
                print(f"{time.strftime('%H:%M:%S')} {wid}: session ended: {e!r}", file=sys.stderr, flush=True)
            finally:
                channel.close()
            await asyncio.sleep(0.1)

    await asyncio.gather(*(worker(f"w{i}", i) for i in range(spec["count"])))


# ---------------------------------------------------------------- orchestration


class Child:
    """A child process of this module (``--serve``/``--load``), killed with its process group."""

    def __init__(self, mode: str, spec: dict, log: Path) -> None:
        with open(log, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "bench.admission", mode, json.dumps(spec)],
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, wait: float = 10.0) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _quiet(pid: int, *, share: float = 0.25, window: float = 1.0, timeout: float = 30.0) -> None:
    """Return once process ``pid`` used less than ``share`` of a core over ``window`` seconds (or after ``timeout``).

    A phase starts on a settled leader, so it does not measure what the previous one left behind (the bulk
    load's last placements and loads, a step's backlog): the rebalancing passes that follow a bulk load cost
    it less than that share.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = _cpu_s(pid)
        await asyncio.sleep(window)
        if _cpu_s(pid) - before < share * window:
            return


def _run_asyncio(main) -> object:
    """Run coroutine ``main`` on a plain asyncio selector loop.

    Importing ``leibrix`` imports trio-asyncio, whose policy makes ``asyncio.run`` start a loop running on
    top of Trio, several times dearer per callback: the load generator and the simulated workers would spend
    on it CPU that the masters and etcd need on a small machine.
    """
    with asyncio.Runner(loop_factory=asyncio.SelectorEventLoop) as runner:
        return runner.run(main)


def _request(cp, tenant: str, dataset: str, *, days: int, start: datetime, regions: int = 1):
    """Daily epochs of the sample table (every dataset names the same table)."""
    uri, database, table = SOURCE
    req = time_partitioned_admission(
        tenant, dataset, start=start, end=start + timedelta(days=days),
        dimensions={"region": [f"r{i}" for i in range(regions)]}, catalog_uri=uri, database=database,
        hints=cp.EstimateHints(bytes_per_epoch=1 << 20, rows_per_epoch=1000, cpu_cores_per_epoch=0.001),
    )
    req.source.table = table
    return req


def _pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``xs`` (non-empty)."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def commit_floor(etcd: str, n: int) -> list[float]:
    """Seconds of ``n`` fenced single-put commits to ``etcd`` (Trio; run in a thread of its own)."""
    import trio

    from leibrix.store._election import Election
    from leibrix.store._etcd import EtcdClient, Put
    from leibrix.store._store import FencedWriter, Keys

    async def main() -> list[float]:
        client = await EtcdClient.connect([f"http://{etcd}"])
        keys = Keys("bench-floor")
        out: list[float] = []
        try:
            async with trio.open_nursery() as nursery:
                election = Election(client, key=keys.leader, record=b"", ttl=5)
                term = await election.campaign()
                nursery.start_soon(election.keep_alive, term)
                writer = FencedWriter(client, term)
                for i in range(n):
                    t = time.perf_counter()
                    await writer.commit([Put(keys.tenant(f"t{i % 8}"), b"x")])
                    out.append(time.perf_counter() - t)
                nursery.cancel_scope.cancel()
        finally:
            await client.aclose()
        return out

    return trio.run(main)


def _upb_admit(stub):
    """``AdmitDataset`` on ``stub``'s channel, with its metadata, sent and answered as upb messages.

    Encoding and decoding in C costs the load generator microseconds per request where betterproto's
    Python costs it about a millisecond (building the request, parsing the answer's epochs): CPU the
    masters and etcd, on the same cores, need more.
    """
    from grpclib.client import UnaryUnaryMethod

    from leibrix.wire._proto.records import management_pb2 as mpb

    method = UnaryUnaryMethod(stub.channel, "/leibrix_cp.ManagementService/AdmitDataset", mpb.AdmitDatasetRequest,
                              mpb.AdmitDatasetResponse)
    return lambda request: method(request, timeout=10.0, metadata=stub.metadata)


async def _open_loop(api, cp, tenants: list[str], prefix: str, rate: float, seconds: float,
                     sent: list[tuple[float, float]] | None = None) -> tuple[list[float], float, int]:
    """Single-epoch admissions of new datasets at ``rate``/s for ``seconds``, open loop.

    Every request is the same single-epoch admission (:func:`_request`) but for its tenant and a
    dataset id of its own. Returns (latencies of the acknowledged ones in s, acknowledged per second
    of the step's wall time, failed requests); ``sent`` collects (wall-clock send time, latency) per
    acknowledged request.
    """
    from leibrix.wire._proto.records import management_pb2 as mpb

    admit = _upb_admit(api)
    template = mpb.AdmitDatasetRequest.FromString(bytes(_request(cp, tenants[0], prefix, days=1, start=T0)))
    n = max(1, int(rate * seconds))
    lat: list[float] = []
    failed = 0
    start = time.perf_counter()

    async def one(i: int) -> None:
        nonlocal failed
        await asyncio.sleep(max(0.0, start + i / rate - time.perf_counter()))
        req = mpb.AdmitDatasetRequest()
        req.CopyFrom(template)
        req.tenant_id, req.dataset_id = tenants[i % len(tenants)], f"{prefix}{i}"
        at, t = time.time(), time.perf_counter()
        try:
            await admit(req)
        except Exception:  # noqa: BLE001 - a refused or timed-out admission is a failed one
            failed += 1
            return
        lat.append(time.perf_counter() - t)
        if sent is not None:
            sent.append((at, lat[-1]))

    await asyncio.gather(*(one(i) for i in range(n)))
    return lat, len(lat) / max(seconds, time.perf_counter() - start), failed


async def _scenario(masters: list[str], pids: list[int], size: dict, report: Report, stop_leader) -> None:
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError

    from leibrix.wire._proto import leibrix_cp as cp

    def stub(addr: str) -> tuple[Channel, cp.ManagementServiceStub]:
        host, port = addr.rsplit(":", 1)
        ch = Channel(host, int(port))
        return ch, cp.ManagementServiceStub(ch, timeout=30)

    ch, api = stub(masters[0])
    try:
        tenants = [f"t{i}" for i in range(size["tenants"])]

        async def tenants_created() -> bool:
            try:
                for t in tenants:
                    await api.upsert_tenant_quota(cp.TenantQuota(tenant_id=t,
                                                                 admission_policy=cp.AdmissionPolicy.QUEUE))
            except GRPCError:
                return False  # not leading yet
            return True

        await _until(tenants_created, 60, "leader")

        async def workers_active() -> bool:
            listed = await api.list_workers(cp.ListWorkersRequest())
            return sum(w.state == cp.WorkerState.ACTIVE for w in listed.workers) >= size["workers"]

        await _until(workers_active, 60, "workers")
        per = size["per_request"]
        n_req = size["epochs"] // per

        async def placed() -> bool:
            listed = await api.list_tenants(cp.ListTenantsRequest())
            return sum(t.usage.epochs for t in listed.tenants) >= n_req * per

        # ---- bulk: epochs/s admitted + placed + persisted
        sem = asyncio.Semaphore(8)

        async def bulk(i: int) -> None:
            async with sem:
                req = _request(cp, tenants[i % len(tenants)], f"bulk{i}", days=per, start=T0)
                await api.admit_dataset(req)

        t0 = time.perf_counter()
        await asyncio.gather(*(bulk(i) for i in range(n_req)))
        acked = time.perf_counter()
        await _until(placed, 600, "placement", step=0.05)
        t1 = time.perf_counter()
        report.add("admission.epochs", n_req * per, "epochs", f"{n_req} requests x {per} epochs, 8 in flight")
        report.add("admission.epochs_per_s", n_req * per / (t1 - t0), "epochs/s",
                   f"acknowledged after {acked - t0:.1f} s, all placed after {t1 - t0:.1f} s")
        report.add("admission.tenants", len(tenants))
        report.add("admission.workers", size["workers"], "", "simulated over 2 HTTP/2 connections")

        async def all_ready() -> bool:
            for i in range(n_req):
                info = await api.get_dataset(cp.GetDatasetRequest(tenant_id=tenants[i % len(tenants)],
                                                                  dataset_id=f"bulk{i}"))
                if info.epochs_by_state.get("READY", 0) != per:
                    return False
            return True

        await _until(all_ready, 600, "READY", step=0.5)
        report.add("admission.master_rss_mb", _rss_mb(pids[0]), "MiB",
                   f"leader, {n_req * per:,} epochs READY (goal <= 512)")

        # ---- the floor: fenced commits against the same etcd, now that it holds the bulk epochs, once the
        # leader has settled (right after the last READY it is still busy with the bulk's tail for seconds)
        await _quiet(pids[0])
        floor = await asyncio.to_thread(commit_floor, size["etcd"], FLOOR_COMMITS)
        commit_p99 = _pct(floor, 99)
        report.add("admission.commit_p50_ms", 1000 * _pct(floor, 50), "ms",
                   f"{len(floor)} fenced single-put commits, same etcd, same run")
        report.add("admission.commit_p99_ms", 1000 * commit_p99, "ms", "the floor of the ratios below")

        # ---- latency at a fixed offered rate, then the curve: single-epoch admissions of new datasets
        # The client's own full collections (66 ms was seen) would be measured as admission latency: freeze its
        # heap first, so the load generator's GC walks only what the phase itself allocates.
        gc.collect()
        gc.freeze()
        await _quiet(pids[0])
        rate, seconds = size["rate"], size["seconds"]
        sent: list[tuple[float, float]] = []  # (wall-clock send time, latency s) per request
        lat, _, _ = await _open_loop(api, cp, tenants, "lat", rate, seconds, sent)
        if log_path := os.environ.get("BENCH_LATENCY_LOG"):
            Path(log_path).write_text("".join(f"{at:.3f} {1000 * s:.2f}\n" for at, s in sorted(sent)))
        lat = sorted(lat)
        report.add("admission.offered_rate", rate, "req/s", f"{len(lat)} single-epoch requests, open loop")
        report.add("admission.p50_ms", 1000 * _pct(lat, 50), "ms")
        report.add("admission.p99_ms", 1000 * _pct(lat, 99), "ms", "goal <= 50")
        total = n_req * per + len(lat)

        # Each step's CPU: the leader's per admission, and the load generators' (this process, the simulated
        # workers) as a share of one core, which shows they are not what saturates.
        processes = {"leader": pids[0], "client": os.getpid(), "workers": pids[2]}

        async def measured(prefix: str, rate: float) -> tuple[list[float], float, int, str]:
            await _quiet(pids[0])
            before, t0 = {k: _cpu_s(pid) for k, pid in processes.items()}, time.perf_counter()
            got, acked, failed = await _open_loop(api, cp, tenants, prefix, rate, size["curve_seconds"])
            wall = time.perf_counter() - t0
            used = {k: _cpu_s(pid) - before[k] for k, pid in processes.items()}
            return got, acked, failed, (f"leader {1000 * used['leader'] / max(1, len(got)):.1f} ms CPU per admission; "
                                        f"load generator {100 * used['client'] / wall:.0f} %, simulated workers "
                                        f"{100 * used['workers'] / wall:.0f} % of a core")

        bound = SATURATION_X * commit_p99
        step, good = size["curve_start"], 0.0
        while step <= size["curve_max"]:
            got, acked, failed, cpu = await measured(f"c{int(step)}-", step)
            total += len(got)
            p99 = _pct(got, 99) if got else float("inf")
            behind = failed > 0 or acked < 0.9 * step
            saturated = behind or p99 > bound
            report.add(f"admission.curve.{int(step)}.p99_ms", 1000 * p99, "ms",
                       f"offered {step:.0f}/s: p50 {1000 * _pct(got, 50) if got else float('inf'):.1f} ms, "
                       f"{failed} failed" + ("; saturated" if saturated else "") + f"; {cpu}")
            report.add(f"admission.curve.{int(step)}.acked_per_s", acked, "epochs/s")
            if saturated:
                break
            good = acked
            step *= 2
        report.add("admission.saturation_epochs_per_s", good, "epochs/s",
                   f"last step below p99 {1000 * bound:.1f} ms (= {SATURATION_X} x commit p99) with its acks keeping up"
                   + ("" if step <= size["curve_max"] else f"; never saturated up to {size['curve_max']}/s"))
        half = max(1.0, good / 2)
        size["saturation"] = good
        got, _, failed, cpu = await measured("half", half)
        total += len(got)
        p99_half = _pct(got, 99) if got else float("inf")
        report.add("admission.p99_at_half_load_ms", 1000 * p99_half, "ms",
                   f"offered {half:.0f}/s: p50 {1000 * _pct(got, 50) if got else float('inf'):.1f} ms, "
                   f"{failed} failed; {cpu}")
        report.add("admission.p99_over_commit_p99_at_half_load", p99_half / commit_p99, "x",
                   f"{1000 * p99_half:.1f} ms / {1000 * commit_p99:.2f} ms (goal <= 10)")
    finally:
        ch.close()

    # ---- takeover: SIGTERM the leader (it resigns first); the follower must serve with every epoch
    ch2, api2 = stub(masters[1])
    try:
        t0 = time.perf_counter()
        stop_leader()
        probe = 0
        while True:
            probe += 1
            try:
                await api2.admit_dataset(_request(cp, tenants[0], f"takeover{probe}", days=1, start=T0),
                                         timeout=1.0)
                break
            except (GRPCError, OSError, asyncio.TimeoutError):
                await asyncio.sleep(0.01)
        took = time.perf_counter() - t0
        listed = await api2.list_tenants(cp.ListTenantsRequest())
        in_state = sum(t.usage.epochs + t.usage.pending_epochs for t in listed.tenants)
        report.add("admission.takeover_s", took, "s",
                   f"SIGTERM of the leader -> new leader acknowledges an admission; {in_state:,} epochs in its state")
    finally:
        ch2.close()
    report.note(f"{total:,} epochs admitted in all; etcd 3.4 single member; 2 masters; workers answer COMPLETED at once")


async def _auth_scenario(plain: str, secured: str, ca: str, admin_token: str, size: dict, report: Report) -> None:
    """The same latency phase against a plain master and a TLS + tenant-token one, alternately (see the docstring)."""
    from grpclib.client import Channel
    from grpclib.exceptions import GRPCError

    from leibrix.wire._proto import leibrix_cp as cp

    channels: list[Channel] = []

    def stub(addr: str, token: str = "") -> cp.ManagementServiceStub:
        host, port = addr.rsplit(":", 1)
        channels.append(Channel(host, int(port), ssl=client_ssl(ca) if token else None))
        return cp.ManagementServiceStub(channels[-1], timeout=30,
                                        metadata={"authorization": f"Bearer {token}"} if token else None)

    try:
        apis = {"plain": stub(plain), "tls_token": None}
        admin = stub(secured, admin_token)
        quota = cp.TenantQuota(tenant_id=AUTH_TENANT, admission_policy=cp.AdmissionPolicy.QUEUE)
        for api in (apis["plain"], admin):
            async def created(api=api) -> bool:
                try:
                    await api.upsert_tenant_quota(quota)
                except GRPCError:
                    return False  # not leading yet (or, secured, the admin token not stored yet)
                return True

            await _until(created, 60, "leader")
        issued = await admin.issue_token(cp.IssueTokenRequest(tenant_id=AUTH_TENANT, description="bench"))
        apis["tls_token"] = stub(secured, issued.token)
        for name, api in (("plain", apis["plain"]), ("tls_token", admin)):  # ListWorkers is admin-only
            async def workers_active(api=api) -> bool:
                listed = await api.list_workers(cp.ListWorkersRequest())
                return sum(w.state == cp.WorkerState.ACTIVE for w in listed.workers) >= AUTH_WORKERS

            await _until(workers_active, 60, f"{name} workers")
        # Above saturation a p50 is queueing, which magnifies any difference: never offer more than half of it.
        rate = min(size["rate"], max(5.0, size.get("saturation", size["rate"]) / 2))
        lat: dict[str, list[float]] = {name: [] for name in apis}
        failed = dict.fromkeys(apis, 0)
        for r in range(AUTH_ROUNDS):
            for name, api in apis.items():
                got, _, bad = await _open_loop(api, cp, [AUTH_TENANT], f"auth{r}-", rate, size["seconds"])
                lat[name] += got
                failed[name] += bad
        p50 = {name: _pct(xs, 50) for name, xs in lat.items()}
        for name, label in (("plain", "plain gRPC, no token"), ("tls_token", "TLS gRPC port, tenant token")):
            report.add(f"auth.{name}_p50_ms", 1000 * p50[name], "ms",
                       f"{label}: {len(lat[name])} single-epoch requests at {rate:.0f}/s, {failed[name]} failed")
            report.add(f"auth.{name}_p99_ms", 1000 * _pct(lat[name], 99), "ms")
        report.add("auth.admission_p50_ratio", p50["tls_token"] / p50["plain"], "x",
                   f"TLS + tenant token p50 / plain p50, {AUTH_ROUNDS} alternating rounds each (goal <= 1.10)")
    finally:
        for ch in channels:
            ch.close()


async def _until(pred, timeout: float, what: str, step: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if await pred():
                return
        except OSError:
            pass
        await asyncio.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


def run(quick: bool) -> Report:
    """Run the whole scenario and return the report."""
    from leibrix.store._member import MemberConfig, find_etcd_binary

    from tests.support.sample_source import sample_source  # a real Iceberg table the connectors can plan

    source = sample_source()  # blocks about a second: built before any process starts
    SOURCE[:] = [source.uri, source.database, source.table]
    size = (dict(epochs=10_000, per_request=100, tenants=4, workers=10, rate=100, seconds=4,
                 curve_start=5, curve_max=3200, curve_seconds=2) if quick else
            dict(epochs=100_000, per_request=100, tenants=4, workers=10, rate=200, seconds=10,
                 curve_start=5, curve_max=6400, curve_seconds=5))
    report = Report("bench.admission: AdmitDataset end to end (gRPC + etcd)", quick=quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench-admission-"))
    etcd_client, etcd_peer = free_hostport(), free_hostport()
    member = MemberConfig(name="bench", data_dir=tmp / "etcd", client_url=f"http://{etcd_client}",
                          peer_url=f"http://{etcd_peer}")
    with open(tmp / "etcd.log", "wb") as log:
        etcd = subprocess.Popen(member.command(find_etcd_binary()), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    children: list[Child] = []
    try:
        masters = [free_hostport() for _ in range(2)]
        for i, addr in enumerate(masters):
            spec = dict(name=f"m{i + 1}", grpc=addr, http=free_hostport(), dir=str(tmp / f"m{i}"), ttl=LEASE_TTL,
                        etcd=etcd_client)
            children.append(Child("--serve", spec, tmp / f"m{i + 1}.log"))
            if i == 0:
                time.sleep(2.0)  # let m1 win the first election
        children.append(Child("--load", dict(masters=masters, count=size["workers"]), tmp / "workers.log"))
        size["etcd"] = etcd_client
        _run_asyncio(_scenario(masters, [c.proc.pid for c in children[:3]], size, report,
                              stop_leader=lambda: os.killpg(children[0].proc.pid, signal.SIGTERM)))
        for child in reversed(children):
            child.stop()

        # ---- the same latency phase, plain and with TLS + a tenant token, on two fresh one-master clusters
        ca, cert, key = mint_server_certificate(tmp / "certs")
        admin_token = secrets.token_urlsafe(32)
        (tmp / "admin-token").write_text(admin_token)
        pair = {"plain": free_hostport(), "tls_token": free_hostport()}
        for name, addr in pair.items():
            spec = dict(name=f"a-{name}", cluster=f"bench-{name.replace('_', '-')}", grpc=addr, http=free_hostport(),
                        dir=str(tmp / f"a-{name}"), ttl=LEASE_TTL, etcd=etcd_client)
            workers = dict(masters=[addr], count=AUTH_WORKERS)
            if name == "tls_token":
                spec.update(tls_cert=cert, tls_key=key, admin_token_file=str(tmp / "admin-token"))
                workers["ca"] = ca
            children.append(Child("--serve", spec, tmp / f"a-{name}.log"))
            children.append(Child("--load", workers, tmp / f"a-{name}-workers.log"))
        _run_asyncio(_auth_scenario(pair["plain"], pair["tls_token"], ca, admin_token, size, report))
    finally:
        for child in reversed(children):
            child.stop()
        if etcd.poll() is not None:
            print(f"etcd exited during the run with status {etcd.returncode}", file=sys.stderr)
        if etcd.poll() is None:  # never signal a process group id that may have been reused
            os.killpg(etcd.pid, signal.SIGTERM)
            etcd.wait(10)
        if os.environ.get("BENCH_KEEP"):
            print(f"logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--serve":
        serve_master(json.loads(argv[1]))
        return 0
    if argv and argv[0] == "--load":
        _run_asyncio(simulate_workers(json.loads(argv[1])))
        return 0
    args = options("AdmitDataset end to end: throughput, latency, memory and takeover", argv)
    run(args.quick).emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
