"""``python -m bench.fuzz [--quick] [--seed S] [--json PATH]``: hostile requests against every ManagementService RPC.

Processes (all on loopback, all real): one etcd member, one master
(``python -m leibrix master`` on that etcd), one reference worker
(``python -m leibrix worker``) that stays connected throughout, and this
process as the client — the official grpcio client, sending raw bytes, so
nothing of Leibrix's own codec shapes what the master receives.

State before the first request: tenant ``acme`` (quota: 1 dataset, REJECT)
with dataset ``orders``, whose epochs the worker holds. Then, for every RPC:

* **generated** requests: Hypothesis builds messages of the RPC's request
  type from its schema (short, long and huge strings, extreme numbers, NaN,
  unknown enum values, many map entries), serialized as they are;
* **mutated** requests: a valid request of the RPC, byte-mutated (flips,
  truncation, insertion, varint and length-prefix damage, invalid UTF-8 in a
  string, an out-of-range ``Timestamp``).

Each answer is classified. A failure is an answer that is not a specific
status: ``INTERNAL`` or ``UNKNOWN`` (``fuzz.internal_errors``,
``fuzz.unknown_errors``), no answer within the deadline (``fuzz.hangs``), or
the master unreachable or gone (``fuzz.crashes``). For a rejected write, the
etcd revision is read before and after; when it moved, the request is sent
again once the revision has been still for 0.5 s, and a second move while
rejected is ``fuzz.state_changes_on_reject`` (the cluster also writes on its
own, e.g. after an accepted fuzzed write: a single move may be a coincidence).
``GetClusterStatus`` is asked the term now and then: a new term is
``fuzz.term_changes``. ``fuzz.max_loop_stall_s`` is the master's own loop-stall
gauge (``leibrix_loop_stall_max_seconds``), read from ``/metrics`` throughout.

Every count except ``fuzz.requests`` and ``fuzz.max_loop_stall_s`` must be 0
(the exit status is 1 otherwise). A full run sends over 100,000 requests
(1,500 generated and 5,000 mutated per RPC; about 10 minutes on two cores) and
expects ``fuzz.max_loop_stall_s`` of at most 0.1 s; ``--quick`` is a smoke run. ``BENCH_KEEP=1`` keeps the processes' logs
(the master logs each loop stall over 100 ms with the task step that caused it).
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import betterproto
import grpc

from bench._report import Report
from leibrix.client._requests import time_partitioned_admission
from leibrix.wire._proto import leibrix_cp as cp

SERVICE = "/leibrix_cp.ManagementService/"
#: RPCs that write (a rejected one must leave etcd's revision where it was).
WRITES = {"AdmitDataset", "UpsertTenantQuota", "DeleteTenant", "RetireEpoch", "DropDataset", "DrainWorker",
          "ReportAccess"}
#: Answers that are a bug, never the caller's fault.
FAILURES = {"INTERNAL", "UNKNOWN"}
TENANT, DATASET, WORKER = "acme", "orders", "fuzz-w1"
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
DEADLINE_S = 10.0


def rpcs() -> dict[str, tuple[type[betterproto.Message], bool]]:
    """Every ManagementService RPC: name -> (request type, server-streaming)."""
    out = {}
    for path, handler in cp.ManagementServiceBase().__mapping__().items():
        out[path.rsplit("/", 1)[1]] = (handler.request_type, handler.cardinality.server_streaming)
    return out


# ---------------------------------------------------------------- calling


@dataclass(frozen=True, slots=True)
class Answer:
    """One RPC's outcome: status name, details, and wall time."""

    code: str
    details: str
    seconds: float
    reply: bytes = b""


def raw_call(channel: grpc.Channel, rpc: str, data: bytes, *, streaming: bool = False,
             timeout: float = DEADLINE_S) -> Answer:
    """Send ``data`` as the request of ``rpc`` and classify the answer (a stream: its first message)."""
    t0 = time.perf_counter()
    reply = b""
    try:
        if streaming:
            call = channel.unary_stream(SERVICE + rpc)(data, timeout=timeout)
            try:
                reply = next(call, b"")
            finally:
                call.cancel()
        else:
            reply = channel.unary_unary(SERVICE + rpc)(data, timeout=timeout)
        code, details = "OK", ""
    except grpc.RpcError as exc:
        code, details = exc.code().name, exc.details() or ""
    return Answer(code, details, time.perf_counter() - t0, reply)


# ---------------------------------------------------------------- generated requests


def _scalar_strategy(proto_type: str) -> Any:
    from hypothesis import strategies as st

    text = st.one_of(st.text(max_size=12), st.text(min_size=60, max_size=300),
                     st.sampled_from(["acme", "orders", WORKER, "", "../x", "a/b", "\x00"]),
                     st.integers(1_000, 300_000).map(lambda n: "x" * n))
    return {
        "string": text,
        "bytes": st.binary(max_size=64),
        "bool": st.booleans(),
        "int32": st.integers(-(2 ** 31), 2 ** 31 - 1),
        "sint32": st.integers(-(2 ** 31), 2 ** 31 - 1),
        "sfixed32": st.integers(-(2 ** 31), 2 ** 31 - 1),
        "int64": st.integers(-(2 ** 63), 2 ** 63 - 1),
        "sint64": st.integers(-(2 ** 63), 2 ** 63 - 1),
        "sfixed64": st.integers(-(2 ** 63), 2 ** 63 - 1),
        "uint32": st.integers(0, 2 ** 32 - 1),
        "fixed32": st.integers(0, 2 ** 32 - 1),
        "uint64": st.integers(0, 2 ** 64 - 1),
        "fixed64": st.integers(0, 2 ** 64 - 1),
        "double": st.floats(),
        "float": st.floats(width=32),
        "enum": st.integers(-3, 12),
    }[proto_type]


def message_strategy(cls: type[betterproto.Message], depth: int = 0) -> Any:
    """A Hypothesis strategy for ``cls`` built from its betterproto schema (each field set or left unset)."""
    from hypothesis import strategies as st

    meta = cls._betterproto
    fields: dict[str, Any] = {}
    for name, fm in meta.meta_by_field_name.items():
        sub = meta.cls_by_field.get(name)
        if fm.proto_type == "message":
            if sub is datetime:
                value = st.datetimes(timezones=st.just(timezone.utc))
            elif sub is timedelta or depth > 5 or not (isinstance(sub, type) and issubclass(sub, betterproto.Message)):
                continue
            else:
                value = message_strategy(sub, depth + 1)
        elif fm.proto_type == "map":
            key_type, value_type = fm.map_types
            item = (message_strategy(meta.cls_by_field[f"{name}.value"], depth + 1) if value_type == "message"
                    else _scalar_strategy(value_type))
            value = st.dictionaries(_scalar_strategy(key_type), item, max_size=20)
        else:
            value = _scalar_strategy(fm.proto_type)
        hint = cls.__dataclass_fields__[name].type
        if "List[" in str(hint) and fm.proto_type != "map":
            value = st.lists(value, max_size=30)
        fields[name] = st.one_of(st.none(), value)

    def build(values: dict[str, Any]) -> betterproto.Message:
        msg = cls()
        groups: set[str] = set()
        for name, value in values.items():
            group = meta.oneof_group_by_field.get(name)
            if value is None or (group and group in groups):
                continue
            if group:
                groups.add(group)
            setattr(msg, name, value)
        return msg

    return st.fixed_dictionaries(fields).map(build)


def _serialize(msg: betterproto.Message) -> bytes | None:
    try:
        return bytes(msg)
    except Exception:  # a value the encoder refuses (e.g. an enum out of its range): nothing to send
        return None


# ---------------------------------------------------------------- mutated requests


def _ld(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def seeds() -> dict[str, list[bytes]]:
    """Valid requests of every RPC (those that would destroy the seeded state name other objects)."""
    from tests.support.sample_source import sample_source  # admission plans from a real table

    source = sample_source()
    adm = time_partitioned_admission(TENANT, DATASET, start=T0, end=T0 + timedelta(days=2),
                                     catalog_uri=source.uri, database=source.database,
                                     dimensions={"region": ["eu", "us"]})
    adm.source.table = source.table_for(DATASET)
    ghost = cp.AdmitDatasetRequest().parse(bytes(adm))
    ghost.dataset_id = "ghost"
    ghost.source.table = source.table_for("ghost")
    tr = cp.TimeRange(start_inclusive=T0, end_exclusive=T0 + timedelta(days=1))
    out: dict[str, list[betterproto.Message]] = {
        "AdmitDataset": [adm, ghost],
        "UpsertTenantQuota": [cp.TenantQuota(tenant_id="ghost-q", max_datasets=-1)],
        "GetClusterStatus": [cp.GetClusterStatusRequest()],
        "GetTenant": [cp.GetTenantRequest(tenant_id=TENANT)],
        "ListTenants": [cp.ListTenantsRequest(page_size=2)],
        "DeleteTenant": [cp.DeleteTenantRequest(tenant_id="ghost")],
        "GetDataset": [cp.GetDatasetRequest(tenant_id=TENANT, dataset_id=DATASET)],
        "ListDatasets": [cp.ListDatasetsRequest(tenant_id=TENANT, page_size=1)],
        "ListEpochs": [cp.ListEpochsRequest(tenant_id=TENANT, dataset_id=DATASET, page_size=2)],
        "RetireEpoch": [cp.RetireEpochRequest(tenant_id=TENANT, dataset_id=DATASET, epoch_id="ghost")],
        "DropDataset": [cp.DropDatasetRequest(tenant_id=TENANT, dataset_id="ghost")],
        "ReportAccess": [cp.ReportAccessRequest(tenant_id=TENANT, dataset_id="ghost", count=1)],
        "ListWorkers": [cp.ListWorkersRequest(page_size=1)],
        "GetWorker": [cp.GetWorkerRequest(worker_id=WORKER)],
        "DrainWorker": [cp.DrainWorkerRequest(worker_id="ghost-w", no_wait=True)],
        "ResolveRoute": [cp.ResolveRouteRequest(tenant_id=TENANT, dataset_id=DATASET, time_range=tr,
                                                dimension_filter={"region": "eu"})],
        "WatchRoutes": [cp.WatchRoutesRequest(tenant_id=TENANT)],
    }
    return {rpc: [bytes(m) for m in msgs] for rpc, msgs in out.items()}


def mutate(data: bytes, rnd: random.Random) -> bytes:
    """One random damage of a serialized request."""
    buf = bytearray(data or b"\x0a\x01a")
    kind = rnd.randrange(10)
    pos = rnd.randrange(len(buf))
    if kind == 0:
        buf[pos] ^= 1 << rnd.randrange(8)
    elif kind == 1:
        del buf[pos:]
    elif kind == 2:
        buf[pos:pos] = rnd.randbytes(rnd.randrange(1, 8))
    elif kind == 3:
        buf[pos] = rnd.choice([0x00, 0x07, 0x08, 0x0F, 0x7F, 0x80, 0xFF])
    elif kind == 4:  # a length prefix or varint that runs away
        buf[pos:pos] = b"\xff" * rnd.randrange(1, 11)
    elif kind == 5:  # invalid UTF-8 inside a string field
        buf = bytearray(re.sub(rb"[a-z]", b"\xff", bytes(buf), count=1))
    elif kind == 6:  # an out-of-range Timestamp as a time range (field 3 of ResolveRouteRequest, and elsewhere)
        secs = rnd.choice([253_402_300_800, -62_135_596_801, 2 ** 62])
        nanos = rnd.choice([0, -1, 1_000_000_000])
        buf += _ld(3, _ld(rnd.randrange(1, 3), b"\x08" + _varint(secs) + b"\x10" + _varint(nanos)))
    elif kind == 7:  # a string field made huge
        buf += _ld(rnd.randrange(1, 5), b"z" * rnd.choice([200, 5_000, 200_000]))
    elif kind == 8:  # one length-delimited field (an embedded message, where the schema has one) repeated
        buf += _ld(rnd.randrange(1, 6), b"") * rnd.choice([100, 5_000, 300_000])
    else:
        buf = buf + buf
    return bytes(buf)


# ---------------------------------------------------------------- the run


@dataclass
class Target:
    """Where the fuzzed master is, and how to ask about it."""

    grpc: str
    http: str
    revision: Callable[[], int]  # etcd's current revision (blocking)
    alive: Callable[[], bool] = lambda: True


@dataclass
class Tally:
    requests: int = 0
    codes: Counter = field(default_factory=Counter)
    hangs: int = 0
    crashes: int = 0
    state_changes: int = 0
    replays: int = 0
    terms: set = field(default_factory=set)
    max_stall: float = 0.0
    examples: dict[str, str] = field(default_factory=dict)

    def failures(self) -> int:
        return sum(self.codes[c] for c in FAILURES) + self.hangs + self.crashes + self.state_changes + self.term_changes

    @property
    def term_changes(self) -> int:
        return max(0, len(self.terms) - 1)

    def as_dict(self) -> dict[str, float]:
        return {
            "fuzz.requests": self.requests,
            "fuzz.internal_errors": self.codes["INTERNAL"],
            "fuzz.unknown_errors": self.codes["UNKNOWN"],
            "fuzz.hangs": self.hangs,
            "fuzz.crashes": self.crashes,
            "fuzz.term_changes": self.term_changes,
            "fuzz.state_changes_on_reject": self.state_changes,
            "fuzz.max_loop_stall_s": round(self.max_stall, 4),
        }


def loop_stall(http: str) -> float:
    """The master's ``leibrix_loop_stall_max_seconds`` gauge."""
    with urllib.request.urlopen(f"http://{http}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(r"^leibrix_loop_stall_max_seconds (\S+)$", text, re.M)
    return float(match.group(1)) if match else 0.0


class Fuzzer:
    """Sends requests to one master and tallies the answers (blocking; run it in a thread)."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.tally = Tally()
        self.rpcs = rpcs()
        self.channel = grpc.insecure_channel(target.grpc, options=[("grpc.max_receive_message_length", 64 << 20)])
        self._last_probe = 0.0

    def close(self) -> None:
        self.channel.close()

    def probe(self) -> None:
        """Record the leader's term and the loop-stall gauge."""
        answer = raw_call(self.channel, "GetClusterStatus", b"")
        if answer.code == "OK":
            self.tally.terms.add(cp.ClusterStatus.FromString(answer.reply).term)
        self.tally.max_stall = max(self.tally.max_stall, loop_stall(self.target.http))
        self._last_probe = time.monotonic()

    def send(self, rpc: str, data: bytes) -> Answer:
        streaming = self.rpcs[rpc][1]
        before = self.target.revision() if rpc in WRITES else 0
        answer = raw_call(self.channel, rpc, data, streaming=streaming)
        t = self.tally
        t.requests += 1
        if answer.code == "DEADLINE_EXCEEDED" and answer.seconds >= DEADLINE_S * 0.9:
            t.hangs += 1
        elif answer.code == "UNAVAILABLE" and not self.target.alive():
            t.crashes += 1
        else:
            t.codes[answer.code] += 1
        if answer.code in FAILURES or answer.code == "DEADLINE_EXCEEDED":
            t.examples.setdefault(f"{rpc} {answer.code}", f"{data[:64]!r}: {answer.details[:200]}")
        if rpc in WRITES and answer.code != "OK" and self.target.revision() != before and self._changes(rpc, data):
            t.state_changes += 1
            t.examples.setdefault(f"{rpc} state change", f"{data[:64]!r}: {answer.code} {answer.details[:200]}")
        if time.monotonic() - self._last_probe > 1.0:
            self.probe()
        return answer

    def _changes(self, rpc: str, data: bytes) -> bool:
        """Replay a rejected write that saw the revision move: True if it moves again while rejected.

        The seeded cluster also writes on its own (the worker's loads, epoch
        transitions), so one moved revision may be a coincidence; the same
        request moving it a second time is not.
        """
        self.tally.replays += 1
        before = self._settled()
        answer = raw_call(self.channel, rpc, data, streaming=self.rpcs[rpc][1])
        return answer.code != "OK" and self.target.revision() != before

    def _settled(self, quiet: float = 0.5, limit: float = 10.0) -> int:
        """etcd's revision once it has not moved for ``quiet`` seconds (or after ``limit`` seconds)."""
        revision, since, start = self.target.revision(), time.monotonic(), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() - start < limit:
            time.sleep(0.05)
            now = self.target.revision()
            if now != revision:
                revision, since = now, time.monotonic()
        return revision

    def generated(self, per_rpc: int, seed: int) -> None:
        """``per_rpc`` Hypothesis-generated requests for every RPC."""
        from hypothesis import HealthCheck, given, settings
        from hypothesis import seed as hseed

        for rpc, (cls, _) in sorted(self.rpcs.items()):
            @hseed(seed)
            @settings(max_examples=per_rpc, database=None, deadline=None, derandomize=False,
                      suppress_health_check=list(HealthCheck), phases=["generate"])
            @given(message_strategy(cls))
            def one(msg: betterproto.Message) -> None:
                data = _serialize(msg)
                if data is not None:
                    self.send(rpc, data)

            one()

    def mutated(self, per_rpc: int, seed: int) -> None:
        """``per_rpc`` byte-mutated valid requests for every RPC."""
        rnd = random.Random(seed)
        for rpc, valid in sorted(seeds().items()):
            for _ in range(per_rpc):
                data = rnd.choice(valid)
                for _ in range(rnd.randrange(1, 4)):
                    data = mutate(data, rnd)
                self.send(rpc, data)


def fuzz(target: Target, *, generated: int, mutated: int, seed: int) -> Tally:
    """Run both phases against ``target`` and return the tally (blocking)."""
    fuzzer = Fuzzer(target)
    try:
        fuzzer.probe()
        fuzzer.generated(generated, seed)
        fuzzer.mutated(mutated, seed)
        fuzzer.probe()
    finally:
        fuzzer.close()
    return fuzzer.tally


def seed_state(channel: grpc.Channel) -> None:
    """Tenant ``acme`` (1 dataset at most, REJECT) with dataset ``orders`` admitted."""
    quota = cp.TenantQuota(tenant_id=TENANT, max_datasets=1, admission_policy=cp.AdmissionPolicy.REJECT)
    for rpc, msg in [("UpsertTenantQuota", quota), ("AdmitDataset", cp.AdmitDatasetRequest().parse(seeds()["AdmitDataset"][0]))]:
        answer = raw_call(channel, rpc, bytes(msg))
        if answer.code != "OK":
            raise RuntimeError(f"seeding {rpc} failed: {answer.code} {answer.details}")


# ---------------------------------------------------------------- processes


def _wait_leader(channel: grpc.Channel, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = raw_call(channel, "ListWorkers", b"", timeout=2)
        if answer.code == "OK" and WORKER.encode() in answer.reply:
            return
        time.sleep(0.1)
    raise TimeoutError("the master did not lead with the worker connected in time")


def run(quick: bool, seed: int) -> tuple[Report, Tally]:
    """Start etcd, a master and a worker as processes, seed the state, fuzz, and report."""
    from leibrix.store._ports import free_hostport
    from leibrix.store._member import MemberConfig, find_etcd_binary
    from leibrix.worker._cmd import worker_command

    generated, mutated = (100, 200) if quick else (1500, 5000)
    report = Report("bench.fuzz: hostile ManagementService requests (grpcio client, raw bytes)", quick=quick)
    tmp = Path(tempfile.mkdtemp(prefix="bench-fuzz-"))
    etcd_addr, peer, grpc_addr, http_addr = (free_hostport() for _ in range(4))
    member = MemberConfig(name="fuzz", data_dir=tmp / "etcd", client_url=f"http://{etcd_addr}",
                          peer_url=f"http://{peer}")
    procs: list[subprocess.Popen] = []

    def spawn(cmd: list[str], name: str) -> subprocess.Popen:
        with open(tmp / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        return procs[-1]

    try:
        spawn(member.command(find_etcd_binary()), "etcd")
        master = spawn([sys.executable, "-m", "leibrix", "master", "--name", "m1", "--cluster", "fuzz",
                        "--grpc-listen", grpc_addr, "--http-listen", http_addr, "--data-dir", str(tmp / "m1"),
                        "--etcd-endpoints", f"http://{etcd_addr}"], "master")
        spawn(worker_command([grpc_addr], WORKER, memory="256MiB", extra=("--log-level", "WARNING")), "worker")
        etcd = _SyncEtcd(f"http://{etcd_addr}")
        with grpc.insecure_channel(grpc_addr) as channel:
            _wait_leader(channel)
            seed_state(channel)
        t0 = time.perf_counter()
        tally = fuzz(Target(grpc_addr, http_addr, etcd.revision, alive=lambda: master.poll() is None),
                     generated=generated, mutated=mutated, seed=seed)
        wall = time.perf_counter() - t0
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        if os.environ.get("BENCH_KEEP"):
            print(f"logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    for name, value in tally.as_dict().items():
        report.add(name, value, "s" if name.endswith("_s") else "", "must be 0" if name not in
                   ("fuzz.requests", "fuzz.max_loop_stall_s") else "")
    report.add("fuzz.requests_per_s", round(tally.requests / wall, 1), "/s")
    report.note(f"{tally.replays} rejected write(s) saw etcd's revision move and were replayed on a still "
                "cluster to tell its own writes from theirs")
    report.note(f"seed {seed}; {generated} generated + {mutated} mutated requests per RPC; answers: "
                + ", ".join(f"{code} {n}" for code, n in tally.codes.most_common()))
    for what, example in sorted(tally.examples.items()):
        report.note(f"{what}: {example}")
    return report, tally


class _SyncEtcd:
    """etcd's current revision, read with the plain etcd3 client (blocking)."""

    def __init__(self, endpoint: str) -> None:
        import etcd3

        host, port = endpoint.removeprefix("http://").rsplit(":", 1)
        self._client = etcd3.client(host=host, port=int(port))

    def revision(self) -> int:
        return self._client.get_response("/").header.revision


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (< 60 s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of the generated and mutated requests")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)
    report, tally = run(args.quick, args.seed)
    report.emit(args.json)
    return 1 if tally.failures() else 0


if __name__ == "__main__":
    sys.exit(main())
