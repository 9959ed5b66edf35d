"""Housekeeping at scale: heat checkpoints, a new term's warm-up, and the janitor's pruning, at 100,000 epochs.

These leader services run beside scheduling on the same Trio loop, so what
matters is both how long a pass takes and how long it holds the loop (a stall
delays the lease keepalive, RPCs and worker events). Against a private etcd
(the Debian ``etcd``, test timings, free loopback ports) holding N epochs, half
PENDING and half RETIRED two hours ago, and N request records, half of them
two hours old, the benchmark times (``*_stall_ms``: the longest gap seen by a
task that sleeps 1 ms in a loop during the step). As in a master, the seeded
state is frozen by ``leibrix.master._gc.quiet_gc`` once the Mirror holds it;
without that a full collection of the cyclic GC (~50 ms at 10,000 epochs,
more at 100,000) lands in whichever step comes first and hides its own stall.

* ``housekeeping.checkpoint_*`` — ``HeatCheckpointer.flush`` of N dirty epochs
  (every epoch got an access report), in one fenced commit that the writer cuts
  into transactions within etcd's default limits (``TxnLimits()``);
* ``housekeeping.coordinator_init_ms`` — ``Coordinator()`` construction at a
  takeover (resets every epoch's heat, builds the pending/RETIRED indexes);
* ``housekeeping.warm_*`` — ``HeatCheckpointer.warm`` of the new term from N
  checkpoints, then ``benefits_first_ms``/``benefits_next_ms``: the first
  scheduling pass's ``Coordinator.benefits`` over every epoch (already warm) and a repeat;
* ``housekeeping.janitor_keep_*`` — ``Janitor.prune_epochs`` while all N/2
  RETIRED epochs are within their TTL (nothing to delete: the first pass decodes
  their histories, the next one reuses them);
* ``housekeeping.prune_epochs_*`` — the pass that deletes the N/2 RETIRED epochs
  with their heat checkpoints;
* ``housekeeping.prune_requests_*`` — ``Janitor.prune_requests`` deleting N/2
  expired request records, then ``requests_scan_ms``: a pass over the N/2 left
  (none expired).

Run: ``python -m bench.housekeeping [--quick] [--json PATH]`` (``--quick``: 10,000 epochs).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TypeVar

import trio

from bench._report import Report, options
from leibrix.control._coordinator import Coordinator
from leibrix.control._settings import CoordinatorConfig
from leibrix.store._election import Election
from leibrix.store._etcd import EtcdClient, Put
from leibrix.store._member import TEST_TIMINGS, MemberConfig, run_member
from leibrix.store._ports import free_port_url
from leibrix.control._heat_checkpoint import HeatCheckpointer
from leibrix.control._janitor import Janitor
from leibrix.domain._lifecycle import State, Transition
from leibrix.master._gc import quiet_gc
from leibrix.wire._proto.records import state_pb2
from leibrix.state._model import ClusterState, Epoch, encode_epoch, now_ms
from leibrix.store._store import FencedWriter, Keys, Mirror

T = TypeVar("T")


@asynccontextmanager
async def stall_watch() -> AsyncIterator[list[float]]:
    """Yield a one-item list that ends up holding the longest gap (s) between wake-ups of a 1 ms ticker."""
    longest = [0.0]

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await trio.sleep(0.001)
            t = time.perf_counter()
            longest[0], last = max(longest[0], t - last), t

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ticker)
        await trio.sleep(0.01)  # let the ticker run once before the step starts
        longest[0] = 0.0
        try:
            yield longest
        finally:
            nursery.cancel_scope.cancel()


async def timed(step: Callable[[], Awaitable[T]]) -> tuple[T, float, float]:
    """``(result, wall seconds, longest loop stall seconds)`` of one awaited step."""
    async with stall_watch() as stall:
        start = time.perf_counter()
        result = await step()
        elapsed = time.perf_counter() - start
    return result, elapsed, stall[0]


async def seed(writer: FencedWriter, keys: Keys, n: int) -> None:
    """Write ``n`` epochs: odd ones RETIRED two hours ago, even ones PENDING, over 100 datasets."""
    retired = (Transition(State.PENDING, State.RETIRED, now_ms() - 7_200_000, "bench"),)
    ops = []
    for i in range(n):
        st = State.RETIRED if i % 2 else State.PENDING
        e = Epoch("t1", f"d{i % 100}", f"{i:08d}_abcdef", i * 3_600_000, (i + 1) * 3_600_000, (("r", "eu"),),
                  st, retired if st is State.RETIRED else (), (), 16 << 20, 0.5, float(16 << 20), 100, "")
        ops.append(Put(keys.epoch(*e.key), encode_epoch(e)))
    await writer.commit(ops)


async def seed_requests(writer: FencedWriter, keys: Keys, n: int) -> None:
    """Write ``n`` request records, odd ones stamped two hours ago."""
    ops = []
    for i in range(n):
        rec = state_pb2.RequestRecord(request_id=f"r{i}", fingerprint="x")
        rec.at.FromSeconds(int(time.time()) - (7200 if i % 2 else 0))
        ops.append(Put(keys.request(f"r{i}"), rec.SerializeToString()))
    await writer.commit(ops)


async def measure(client: EtcdClient, nursery: trio.Nursery, n: int, report: Report) -> None:
    """Seed etcd with ``n`` epochs and run every housekeeping step once, adding rows to ``report``."""
    keys = Keys("bench")
    election = Election(client, key=keys.leader, record=state_pb2.MasterRecord(id="a").SerializeToString(), ttl=60)
    term = await election.campaign()
    nursery.start_soon(election.keep_alive, term)
    state = ClusterState()
    mirror = Mirror(client, keys)
    requests = state.attach(mirror)
    await nursery.start(mirror.run)
    writer = FencedWriter(client, term, mirror)
    await seed(writer, keys, n)
    quiet_gc()  # as a master does once its Mirror is loaded: else a gen-2 collection lands in the first step
    half = n // 2

    def add(name: str, value: float, unit: str, note: str = "") -> None:
        report.add(f"housekeeping.{name}", value, unit, note)

    # the old term: every epoch accessed, then one checkpoint
    coord = Coordinator(state=state, commit=writer.commit, keys=keys, hub=None,
                        config=CoordinatorConfig(), clock=trio.current_time)
    for e in list(state.epochs.values()):
        coord.report_access(e, 3, 0)
    written, flush_s, flush_stall = await timed(HeatCheckpointer(coord, interval_s=10).flush)
    if written != n or len(state.heat_records) != n:
        raise RuntimeError(f"checkpoint wrote {written}, mirror holds {len(state.heat_records)}; expected {n}")
    add("checkpoint_s", flush_s, "s", f"{n:,} dirty epochs, {writer.limits.max_ops}-op txns")
    add("checkpoint_records_per_s", written / flush_s, "1/s")
    add("checkpoint_stall_ms", flush_stall * 1e3, "ms")
    coord.close()

    # the new term: takeover, warm-up, first scheduling pass
    start = time.perf_counter()
    coord = Coordinator(state=state, commit=writer.commit, keys=keys, hub=None,
                        config=CoordinatorConfig(), clock=trio.current_time)
    add("coordinator_init_ms", (time.perf_counter() - start) * 1e3, "ms", f"{n:,} epochs")
    seeded, warm_s, warm_stall = await timed(HeatCheckpointer(coord, interval_s=10).warm)
    if seeded != n:
        raise RuntimeError(f"warm() seeded {seeded} of {n} checkpoints")
    add("warm_ms", warm_s * 1e3, "ms", f"{seeded:,} checkpoints")
    add("warm_stall_ms", warm_stall * 1e3, "ms", "longest Trio loop stall during warm()")
    epochs, now = list(state.epochs.values()), trio.current_time()
    for name in ("benefits_first_ms", "benefits_next_ms"):
        start = time.perf_counter()
        coord.benefits(epochs, now)
        add(name, (time.perf_counter() - start) * 1e3, "ms", f"{len(epochs):,} epochs, one synchronous call")

    # the janitor: RETIRED within the TTL, then expired; then requests
    janitor = Janitor(coord, requests, commit=writer.commit, request_ttl_s=86_400, retired_ttl_s=3 * 3600,
                      interval_s=60)
    for name, what in (("janitor_keep_first", "decodes histories"), ("janitor_keep_next", "histories known")):
        pruned, keep_s, keep_stall = await timed(janitor.prune_epochs)
        if pruned:
            raise RuntimeError(f"pruned {pruned} epochs within their TTL")
        add(f"{name}_ms", keep_s * 1e3, "ms", f"{len(coord.retired):,} RETIRED within TTL, {what}")
        add(f"{name}_stall_ms", keep_stall * 1e3, "ms")
    janitor.retired_ttl_s = 3600
    pruned, prune_s, prune_stall = await timed(janitor.prune_epochs)
    if pruned != half or len(state.epochs) != n - half or len(state.heat_records) != n - half:
        raise RuntimeError(f"pruned {pruned}; left {len(state.epochs)} epochs, {len(state.heat_records)} heat")
    add("prune_epochs_s", prune_s, "s", f"{pruned:,} RETIRED epochs + their heat")
    add("prune_epochs_per_s", pruned / prune_s, "1/s")
    add("prune_epochs_stall_ms", prune_stall * 1e3, "ms")

    await seed_requests(writer, keys, n)
    janitor.request_ttl_s = 3600
    pruned, req_s, req_stall = await timed(janitor.prune_requests)
    if pruned != half:
        raise RuntimeError(f"pruned {pruned} of {half} expired requests")
    add("prune_requests_s", req_s, "s", f"{n:,} records, {pruned:,} expired")
    add("prune_requests_stall_ms", req_stall * 1e3, "ms")
    pruned, scan_s, scan_stall = await timed(janitor.prune_requests)
    if pruned:
        raise RuntimeError(f"pruned {pruned} requests within their TTL")
    add("requests_scan_ms", scan_s * 1e3, "ms", f"{len(requests):,} records, none expired")
    add("requests_scan_stall_ms", scan_stall * 1e3, "ms")
    coord.close()


async def main(quick: bool, json_path: Path | None) -> None:
    n = 10_000 if quick else 100_000
    report = Report(f"housekeeping: heat checkpoints, warm-up, janitor at {n:,} epochs", quick=quick)
    with tempfile.TemporaryDirectory(prefix="leibrix-bench-housekeeping-") as tmp:
        cfg = MemberConfig(name="m0", data_dir=Path(tmp) / "m0", client_url=free_port_url(),
                           peer_url=free_port_url(), timings=TEST_TIMINGS, stop_grace=1.0, start_timeout=10.0)
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(run_member, cfg)
                client = await EtcdClient.connect([cfg.client_url], timeout=30.0)
                try:
                    async with trio.open_nursery() as services:  # election, mirror: ended before the client closes
                        try:
                            await measure(client, services, n, report)
                        finally:
                            services.cancel_scope.cancel()
                finally:
                    await client.aclose()
            finally:
                nursery.cancel_scope.cancel()
    report.note(f"single etcd member (TEST_TIMINGS), {n:,} epochs (half RETIRED 2 h ago) and {n:,} request records; "
                "stall = longest gap between wake-ups of a 1 ms sleeper")
    report.emit(json_path)


if __name__ == "__main__":
    args = options(__doc__.splitlines()[0])
    trio.run(main, args.quick, args.json)
