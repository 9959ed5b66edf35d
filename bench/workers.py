"""``python -m bench.workers [--quick] [--json PATH]``: one master under thousands of worker streams.

Processes (all on loopback):

* **master**: a real :class:`leibrix.master._master.Master` (embedded etcd, gRPC,
  election, the worker hub) with the heartbeat interval under test;
* **load generators** (``--load``): plain-asyncio processes, each simulating
  many workers multiplexed as HTTP/2 streams, 90 per connection (the
  server's HTTP/2 limit is 100 concurrent streams per connection) — they
  register, heartbeat at the interval with a random phase, and answer
  assignments with COMPLETED at once (the load generator must be cheap);
* **victim** (``--load`` with one worker): killed with SIGKILL to measure
  detection and re-placement.

Measured:

* ``workers.streams``: streams registered and ACTIVE on the master;
* ``workers.heartbeats_per_s``: heartbeats the generators sent per second at steady state;
* ``workers.master_cpu_fraction``: master process CPU seconds ÷ wall seconds over
  the steady-state window (1.0 = one core), from ``/proc/<pid>/stat``;
* ``workers.master_rss_mb``: the master's resident memory at the end of the window;
* ``workers.detect_dead_s``: SIGKILL of the victim → the master reports it DEAD
  (polled with GetWorker every 20 ms; the configured dead timeout dominates);
* ``workers.replace_s``: DEAD → the last replacement assignment received by a
  surviving worker (needs the epoch coordinator: a tenant pool of 10 workers,
  one dataset admitted through the API; ``null`` with the reason when admission
  is unavailable).

* ``auth.heartbeat_cpu_ratio``: the same steady state (same stream count and
  connections, one generator) against a second master serving TLS and
  requiring client certificates (each simulated connection presents one naming
  its workers); master CPU per heartbeat there ÷ in the plain run. Tokens do
  not apply to worker streams; certificates do.

Goals: 5,000 streams at 5 s heartbeats with the master ≤ 50% of one
core and ≤ 512 MiB resident; re-placement sent within 1 s of DEAD; TLS ≤ 1.15 × the plain CPU per heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from leibrix.wire._grpc import COORDINATE_WORKER
from leibrix.store._ports import free_hostport
from leibrix.client._requests import time_partitioned_admission
from leibrix.wire._proto import leibrix_cp as cp

HEARTBEAT_S = 5.0
DEAD_S = 10.0
PATH = COORDINATE_WORKER
#: children's stderr (set LEIBRIX_BENCH_LOG=path to keep it)
_LOG = open(os.environ["LEIBRIX_BENCH_LOG"], "a") if os.environ.get("LEIBRIX_BENCH_LOG") else subprocess.DEVNULL



# ---------------------------------------------------------------- master process


def serve_master(spec: dict) -> None:
    """Child: run a real Master with the worker options under test (``worker_*`` config fields)."""
    from dataclasses import dataclass

    import trio

    from leibrix.master._config import MasterConfig
    from leibrix.store._member import TEST_TIMINGS
    from leibrix.cli._master import serve

    @dataclass(frozen=True, slots=True)
    class BenchConfig(MasterConfig):
        worker_heartbeat_interval: float = HEARTBEAT_S
        worker_dead_timeout: float = DEAD_S

    cfg = BenchConfig(
        name="bench", cluster="bench", grpc_listen=spec["grpc"], http_listen=spec["http"],
        data_dir=Path(spec["dir"]), etcd_client_url="http://" + spec["etcd_client"],
        etcd_peer_url="http://" + spec["etcd_peer"], etcd_heartbeat_ms=TEST_TIMINGS.heartbeat_ms,
        etcd_election_ms=TEST_TIMINGS.election_ms, log_level="warning",
        worker_heartbeat_interval=spec["heartbeat"], worker_dead_timeout=spec["dead"],
        **({"tls_cert": spec["tls"]["cert"], "tls_key": spec["tls"]["key"], "tls_client_ca": spec["tls"]["ca"]}
           if spec.get("tls") else {}),
    ).validate()
    import logging

    logging.basicConfig(level=logging.WARNING)

    async def lag_monitor() -> None:
        """Report the event loop's worst scheduling delay per second (stderr): the lease needs < TTL/3."""
        worst, mark = 0.0, trio.current_time()
        while True:
            t = trio.current_time()
            await trio.sleep(0.01)
            worst = max(worst, trio.current_time() - t - 0.01)
            if trio.current_time() - mark >= 1.0:
                if worst > 0.2:
                    print(f"[{time.strftime('%H:%M:%S')}] master loop lag: {worst:.3f}s", file=sys.stderr, flush=True)
                worst, mark = 0.0, trio.current_time()

    import gc

    gc_started = [0.0]

    def gc_timer(phase: str, info: dict) -> None:
        if phase == "start":
            gc_started[0] = time.perf_counter()
        elif time.perf_counter() - gc_started[0] > 0.1:
            print(f"[{time.strftime('%H:%M:%S')}] gc gen{info['generation']} took "
                  f"{time.perf_counter() - gc_started[0]:.3f}s", file=sys.stderr, flush=True)

    gc.callbacks.append(gc_timer)
    if os.environ.get("LEIBRIX_BENCH_GC_THRESHOLD"):  # experiment: what a tuned collector would change
        gc.set_threshold(*(int(x) for x in os.environ["LEIBRIX_BENCH_GC_THRESHOLD"].split(",")))

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(lag_monitor)
            await serve(cfg)
            n.cancel_scope.cancel()

    trio.run(main)


# ---------------------------------------------------------------- load generator process


async def _load(spec: dict) -> None:
    """Child: simulate ``count`` workers over ``conns`` connections; report on stdout as JSON lines."""
    from grpclib.client import Channel
    from grpclib.const import Cardinality

    from leibrix.wire._proto.records import control_plane_pb2 as pb

    host, port = spec["master"].rsplit(":", 1)

    def context(c: int):
        """TLS to the master presenting connection ``c``'s certificate (naming every worker it carries)."""
        import ssl

        ctx = ssl.create_default_context(cafile=spec["tls"]["ca"])
        ctx.load_cert_chain(*spec["tls"]["certs"][c])
        ctx.set_alpn_protocols(["h2"])
        return ctx

    channels = [Channel(host, int(port), ssl=context(c) if spec.get("tls") else None) for c in range(spec["conns"])]
    hb_count = 0
    registered = 0
    out = sys.stdout

    def emit(**kv) -> None:
        out.write(json.dumps(kv) + "\n")
        out.flush()

    def heartbeat() -> pb.EventStreamMessage:
        m = pb.EventStreamMessage()
        m.heartbeat_event.memory_used_bytes = 1 << 20
        m.heartbeat_event.loads_in_flight = 0
        return m

    async def worker(i: int) -> None:
        nonlocal registered
        wid = f"{spec['prefix']}{i}"
        stream = channels[i % len(channels)].request(PATH, Cardinality.STREAM_STREAM,
                                                    pb.EventStreamMessage, pb.EventStreamMessage)
        lock = asyncio.Lock()
        async with stream:
            reg = pb.EventStreamMessage(worker_id=wid)
            reg.register_event.worker.node_id = wid
            reg.register_event.worker.addr = f"10.0.{i // 250}.{i % 250}:9000"
            reg.register_event.worker.labels["zone"] = f"z{i % 3}"
            if spec.get("pool"):
                reg.register_event.worker.labels["pool"] = spec["pool"]
            reg.register_event.capacity.memory_bytes = 64 << 30
            reg.register_event.capacity.cpu_cores = 16
            await stream.send_message(reg)
            ack = await stream.recv_message()
            if ack is None or "reject" in ack.common_ack.event_type:
                emit(event="rejected", worker=wid)
                return
            registered += 1

            async def beat() -> None:
                nonlocal hb_count
                await asyncio.sleep(random.random() * spec["heartbeat"])
                while True:
                    async with lock:
                        await stream.send_message(heartbeat())
                    hb_count += 1
                    await asyncio.sleep(spec["heartbeat"])

            task = asyncio.ensure_future(beat())
            try:
                while (msg := await stream.recv_message()) is not None:
                    if msg.WhichOneof("payload") == "data_assignment":
                        a = msg.data_assignment
                        emit(event="assignment", worker=wid, t=time.monotonic(), epoch=a.epoch_id)
                        st = pb.EventStreamMessage()
                        u = st.data_pull_status_update
                        u.dataset_id, u.epoch_id, u.status = a.dataset_id, a.epoch_id, 2
                        u.plan_id, u.rows, u.bytes = a.load_plan.plan_id, a.load_plan.expected_rows, 1 << 20
                        async with lock:
                            await stream.send_message(st)
            finally:
                task.cancel()

    async def report() -> None:
        last, last_t = 0, time.monotonic()
        while True:
            await asyncio.sleep(1.0)
            now = time.monotonic()
            emit(event="stats", registered=registered, hb_per_s=(hb_count - last) / (now - last_t))
            last, last_t = hb_count, now

    tasks = []
    for i in range(spec["count"]):
        tasks.append(asyncio.ensure_future(worker(i)))
        if i % 50 == 49:
            await asyncio.sleep(50 / spec.get("rate", 500))  # registrations per second per generator
    rep = asyncio.ensure_future(report())
    try:
        await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        rep.cancel()
        for c in channels:
            c.close()


# ---------------------------------------------------------------- orchestration


class Child:
    """A child process whose JSON-line stdout is read by a thread into ``lines``."""

    def __init__(self, args: list[str]) -> None:
        import threading

        self.proc = subprocess.Popen([sys.executable, "-m", "bench.workers", *args], stdout=subprocess.PIPE,
                                     stderr=_LOG, text=True, start_new_session=True)
        self.lines: list[dict] = []
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            try:
                self.lines.append(json.loads(line))
            except ValueError:
                pass

    def last(self, event: str) -> dict | None:
        return next((x for x in reversed(self.lines) if x.get("event") == event), None)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _term(http: str) -> int:
    """The term the master reports on /healthz (0 if it does not answer)."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{http}/healthz", timeout=2) as r:
            return int(json.loads(r.read()).get("term") or 0)
    except Exception:
        return 0


def _proc_cpu_rss(pid: int) -> tuple[float, float]:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks
    rss = int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / (1 << 20)
    return cpu, rss


def _mgmt(addr: str, method: str, request, timeout: float = 30):
    from grpclib.client import Channel


    host, port = addr.rsplit(":", 1)

    async def call():
        ch = Channel(host, int(port))
        try:
            return await getattr(cp.ManagementServiceStub(ch), method)(request, timeout=timeout)
        finally:
            ch.close()

    return asyncio.run(call())


def _say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _poll_dead(addr: str, worker_id: str, timeout: float) -> tuple[float, float]:
    """Poll GetWorker every 50 ms on one connection until DEAD: (send time of the last not-DEAD poll, time seen DEAD).

    The master turned the worker DEAD between the two, so times measured from
    the first are upper bounds (conservative).
    """
    from grpclib.client import Channel
    from grpclib.const import Status
    from grpclib.exceptions import GRPCError


    host, port = addr.rsplit(":", 1)

    async def poll() -> tuple[float, float]:
        ch = Channel(host, int(port))
        stub = cp.ManagementServiceStub(ch)
        last_alive = time.monotonic()
        try:
            while time.monotonic() - last_alive < timeout:
                sent = time.monotonic()
                try:
                    info = await stub.get_worker(cp.GetWorkerRequest(worker_id=worker_id), timeout=5)
                except GRPCError as e:
                    if e.status is not Status.UNAVAILABLE:  # a lost term: the master campaigns again
                        raise
                    await asyncio.sleep(0.05)
                    continue
                if info.state == cp.WorkerState.DEAD:
                    return last_alive, time.monotonic()
                last_alive = sent
                await asyncio.sleep(0.05)
            raise TimeoutError(f"{worker_id} not DEAD within {timeout} s")
        finally:
            ch.close()

    _say(f"polling {worker_id} until DEAD")
    return asyncio.run(poll())


def _leads(http: str) -> bool:
    """Whether the master whose HTTP side is ``http`` answers /healthz as the healthy leader."""
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{http}/healthz", timeout=1) as r:
            return r.status == 200 and bool(json.loads(r.read()).get("is_leader"))
    except Exception:
        return False


def _wait(pred, timeout: float, what: str, step: float = 0.2):
    _say(f"waiting for {what}")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    raise TimeoutError(f"timed out waiting for {what}")


def _tenant(addr: str) -> str:
    """Create the tenant whose pool the victim serves; '' on success, else why not."""

    try:
        _mgmt(addr, "upsert_tenant_quota", cp.TenantQuota(
            tenant_id="pool", worker_pool="pool", max_datasets=10, max_epochs=1000, max_storage_mb=1 << 20,
            default_replication=2, default_strategy=cp.PlacementStrategy.ROUND_ROBIN))
        return ""
    except Exception as e:  # the bench reports why replace_s is missing instead of failing
        return f"{type(e).__name__}: {e}"


def _admit(addr: str) -> str:
    """Give the pool (victim included) replicas through the real admission path; '' on success, else why not."""
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 1, 1, tzinfo=timezone.utc)
    req = time_partitioned_admission(
        "pool", "events", start=start, end=start + timedelta(days=40), catalog_uri="file:///bench")
    try:
        resp = _mgmt(addr, "admit_dataset", req)
    except Exception as e:
        return f"{type(e).__name__}: {e}"
    if resp.status != cp.AdmitDatasetResponseStatus.ACCEPTED:
        return f"admission rejected: {resp.message}"
    _say(f"admitted {len(resp.epochs.epochs)} epochs: {resp.message}")
    return ""


def run(quick: bool) -> dict:
    streams = 500 if quick else 5000
    loaders = 1 if quick else 2
    # grpclib's server (h2) allows 100 concurrent streams per connection: 90 per connection
    conns = -(-streams // loaders // 90)
    window = 10.0 if quick else 30.0
    tmp = tempfile.mkdtemp(prefix="bench-workers-")
    spec = {"grpc": free_hostport(), "http": free_hostport(), "etcd_client": free_hostport(), "etcd_peer": free_hostport(), "dir": tmp,
            "heartbeat": HEARTBEAT_S, "dead": DEAD_S}
    children: list[Child] = []
    master = Child(["--serve-master", json.dumps(spec)])
    children.append(master)
    result: dict = {}
    notes: list[str] = []
    try:
        _wait(lambda: _leads(spec["http"]), 60, "the master to lead")
        first_term = _term(spec["http"])
        # a tenant pool of 10 (one the victim) to measure re-placement, and the bulk load
        refusal = _tenant(spec["grpc"])
        pool = Child(["--load", json.dumps({"master": spec["grpc"], "count": 9, "conns": 1, "prefix": "pool-",
                                             "heartbeat": HEARTBEAT_S, "pool": "pool"})])
        victim = Child(["--load", json.dumps({"master": spec["grpc"], "count": 1, "conns": 1, "prefix": "victim-",
                                               "heartbeat": HEARTBEAT_S, "pool": "pool"})])
        children += [pool, victim]
        per = streams // loaders
        gens = [Child(["--load", json.dumps({"master": spec["grpc"], "count": per, "conns": conns,
                                              "prefix": f"g{k}-", "heartbeat": HEARTBEAT_S})])
                for k in range(loaders)]
        children += gens

        def registered() -> int:
            return sum((g.last("stats") or {}).get("registered", 0) for g in gens)

        _wait(lambda: registered() >= per * loaders, 300, f"{streams} streams to register", step=0.5)
        _say("admitting a dataset for the tenant pool")
        refusal = refusal or _admit(spec["grpc"])
        _say(f"steady state: measuring for {window:g} s")
        time.sleep(HEARTBEAT_S + 1)  # every stream past its first heartbeat: steady state
        pid = master.proc.pid
        cpu0, _ = _proc_cpu_rss(pid)
        t0 = time.monotonic()
        hb_samples: list[float] = []
        while time.monotonic() - t0 < window:
            time.sleep(1.0)
            hb_samples.append(sum((g.last("stats") or {}).get("hb_per_s", 0.0) for g in gens))
        cpu1, rss = _proc_cpu_rss(pid)
        wall = time.monotonic() - t0
        workers, token = [], None
        while token != "":  # ListWorkers answers in pages
            page = _mgmt(spec["grpc"], "list_workers", cp.ListWorkersRequest(page_size=5000, page_token=token or ""))
            workers, token = workers + page.workers, page.next_page_token
        active = sum(1 for w in workers if w.state == 1 and w.worker_id.startswith("g"))
        result.update({
            "workers.streams": active,
            "workers.heartbeats_per_s": round(sum(hb_samples[1:]) / max(1, len(hb_samples) - 1), 1),
            "workers.master_cpu_fraction": round((cpu1 - cpu0) / wall, 3),
            "workers.master_rss_mb": round(rss, 1),
        })
        # kill -9 the victim: detection, then re-placement of what it held

        held_before = len([x for x in victim.lines if x.get("event") == "assignment"])
        killed = time.monotonic()
        victim.stop(signal.SIGKILL)

        not_dead_sent, dead_seen = _poll_dead(spec["grpc"], "victim-0", DEAD_S + 10)
        # the master declared it DEAD after it answered the last poll that said otherwise
        result["workers.detect_dead_s"] = round(dead_seen - killed, 3)
        dead_at = not_dead_sent
        if refusal:
            result["workers.replace_s"] = None
            notes.append(f"replace_s: no epochs to re-place ({refusal})")
        elif not held_before:
            result["workers.replace_s"] = None
            notes.append("replace_s: the victim held no replica")
        else:
            time.sleep(3.0)
            arrivals = [x["t"] for x in pool.lines if x.get("event") == "assignment" and x["t"] > killed]
            if len(arrivals) < held_before:
                notes.append(f"replace_s: only {len(arrivals)} of {held_before} replicas re-sent within 3 s")
            result["workers.replace_s"] = round(max(arrivals) - dead_at, 3) if arrivals else None
            result["workers.replaced_replicas"] = len(arrivals)
        last_term = _term(spec["http"])
        if last_term != first_term:
            notes.append(f"the master lost its lease during the run (term {first_term} -> {last_term}): "
                         "event-loop stalls (GC pauses) exceeded the lease TTL; see the report")
    finally:
        for c in reversed(children):
            c.stop(signal.SIGKILL if c is not master else signal.SIGTERM)
    if result.get("workers.heartbeats_per_s"):
        plain = result["workers.master_cpu_fraction"] / result["workers.heartbeats_per_s"]
        result["auth.plain_cpu_us_per_heartbeat"] = round(plain * 1e6, 1)
        try:
            tls = _tls_run(streams, conns * loaders, window)
        except Exception as exc:  # noqa: BLE001 - reported, the plain numbers stand
            notes.append(f"TLS run failed: {exc!r}")
        else:
            result.update(tls)
            per_hb = tls["auth.master_cpu_fraction"] / max(tls["auth.heartbeats_per_s"], 1e-9)
            result["auth.tls_cpu_us_per_heartbeat"] = round(per_hb * 1e6, 1)
            result["auth.heartbeat_cpu_ratio"] = round(per_hb / plain, 3)
    result["workers.notes"] = notes
    return result


def _tls_run(streams: int, conns: int, window: float) -> dict:
    """The same steady state against a master serving TLS with client certificates required (mTLS): every
    simulated connection presents a certificate naming the workers it carries (``leibrix://worker/<id>``)."""
    from tests.support.certs import Ca

    tmp = Path(tempfile.mkdtemp(prefix="bench-workers-tls-"))
    ca = Ca(tmp / "pki", "bench")
    server = ca.issue("master", dns=("localhost",))
    per_conn = {c: [f"t-{i}" for i in range(streams) if i % conns == c] for c in range(conns)}
    certs = [list(ca.issue(f"conn{c}", cn=f"conn{c}", uris=tuple(f"leibrix://worker/{w}" for w in ids)))
             for c, ids in per_conn.items()]
    ca_pem = str(tmp / "pki" / "bench-ca.pem")
    spec = {"grpc": free_hostport(), "http": free_hostport(), "etcd_client": free_hostport(),
            "etcd_peer": free_hostport(), "dir": str(tmp / "master"), "heartbeat": HEARTBEAT_S, "dead": DEAD_S,
            "tls": {"cert": server.cert, "key": server.key, "ca": ca_pem}}
    master = Child(["--serve-master", json.dumps(spec)])
    children = [master]
    try:
        _wait(lambda: _leads(spec["http"]), 60, "the TLS master to lead")
        gen = Child(["--load", json.dumps({"master": spec["grpc"], "count": streams, "conns": conns, "prefix": "t-",
                                            "heartbeat": HEARTBEAT_S, "tls": {"ca": ca_pem, "certs": certs}})])
        children.append(gen)
        _wait(lambda: (gen.last("stats") or {}).get("registered", 0) >= streams, 300,
              f"{streams} TLS streams to register", step=0.5)
        _say(f"TLS steady state: measuring for {window:g} s")
        time.sleep(HEARTBEAT_S + 1)
        pid = master.proc.pid
        cpu0, _ = _proc_cpu_rss(pid)
        t0 = time.monotonic()
        samples: list[float] = []
        while time.monotonic() - t0 < window:
            time.sleep(1.0)
            samples.append((gen.last("stats") or {}).get("hb_per_s", 0.0))
        cpu1, _ = _proc_cpu_rss(pid)
        wall = time.monotonic() - t0
        return {"auth.streams": (gen.last("stats") or {}).get("registered", 0),
                "auth.heartbeats_per_s": round(sum(samples[1:]) / max(1, len(samples) - 1), 1),
                "auth.master_cpu_fraction": round((cpu1 - cpu0) / wall, 3)}
    finally:
        for c in reversed(children):
            c.stop(signal.SIGKILL if c is not master else signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark (or, internally, one of its child processes)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-master"]:
        serve_master(json.loads(argv[1]))
        return 0
    if argv[:1] == ["--load"]:
        asyncio.run(_load(json.loads(argv[1])))
        return 0
    from bench._report import Report, options

    args = options("bench.workers: one master under thousands of worker streams", argv)
    result = run(args.quick)
    report = Report("bench.workers", quick=args.quick)
    if args.quick:
        report.note("--quick: 500 streams and a 10 s window instead of 5,000 streams and 30 s")
    report.note(f"heartbeat interval {HEARTBEAT_S:g} s, dead timeout {DEAD_S:g} s; "
                "simulated workers 90 streams per HTTP/2 connection")
    rows = [
        ("workers.streams", "", "ACTIVE on the master; goal 5,000"),
        ("workers.heartbeats_per_s", "1/s", "sent by the generators at steady state"),
        ("workers.master_cpu_fraction", "cores", "master CPU ÷ wall; goal ≤ 0.50"),
        ("workers.master_rss_mb", "MiB", "master resident memory; goal ≤ 512"),
        ("workers.detect_dead_s", "s", "SIGKILL → DEAD (≤ dead timeout after last contact)"),
        ("workers.replace_s", "s", "DEAD → last re-placed assignment received (upper bound); goal ≤ 1"),
        ("workers.replaced_replicas", "", "assignments re-sent for the victim's replicas"),
        ("auth.streams", "", "ACTIVE streams in the TLS run (mTLS: each connection's certificate names its workers)"),
        ("auth.master_cpu_fraction", "cores", "master CPU ÷ wall, TLS + client certificates"),
        ("auth.plain_cpu_us_per_heartbeat", "us", "master CPU per heartbeat, plain (same run)"),
        ("auth.tls_cpu_us_per_heartbeat", "us", "master CPU per heartbeat, TLS + mTLS"),
        ("auth.heartbeat_cpu_ratio", "x", "TLS ÷ plain CPU per heartbeat; goal ≤ 1.15"),
    ]
    for name, unit, note in rows:
        if result.get(name) is not None:
            report.add(name, result[name], unit, note)
    for n in result["workers.notes"]:
        report.note(n)
    report.emit(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
