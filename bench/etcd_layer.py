"""Benchmark of the etcd layer: txn round trip through the Trio thread bridge, mirror load/catch-up.

Run: python -m bench.etcd_layer [--quick] [--json PATH]
Starts a private single-member etcd (production timings) in a temp dir and reaps it.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import trio

from leibrix.store._election import Election
from leibrix.store._etcd import EtcdClient, Put
from leibrix.store._member import PRODUCTION_TIMINGS, MemberConfig, run_member
from leibrix.store._ports import free_port_url
from leibrix.wire._proto.records import state_pb2
from leibrix.store._store import FencedWriter, Keys, Mirror

from bench._report import Report, options


def epoch_record(i: int) -> bytes:
    """A realistic READY epoch record (two replicas, full history) numbered ``i``."""
    r = state_pb2.EpochRecord(tenant_id="tenant-1", dataset_id=f"ds-{i // 1000}", state=4,
                              scan_cost=12.5, expected_rows=100_000 + i, version="v1", plan_id=f"p-{i}")
    r.info.epoch_id = f"{1_700_000_000_000 + i * 3_600_000}_{i:06x}"
    r.info.time_range.start_inclusive.seconds = 1_700_000_000 + i * 3600
    r.info.time_range.end_exclusive.seconds = 1_700_000_000 + (i + 1) * 3600
    r.info.dimension_values["region"] = "eu-west-1"
    for s in (1, 2, 3, 4):
        t = r.history.add(); t.from_state = s - 1; t.to_state = s; t.at.seconds = 1_700_000_000 + s
    for w in range(2):
        rep = r.replicas.add(); rep.worker_id = f"worker-{(i + w) % 50}"; rep.addr = f"10.0.0.{w}:7000"
    r.estimate.memory_bytes = 64 << 20; r.estimate.cpu_cores = 0.5
    return r.SerializeToString()


def pct(xs: list[float], p: float) -> float:
    """The p-th percentile (nearest rank) of ``xs``."""
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


async def main(quick: bool, json_path: Path | None) -> None:
    n_txn = 300 if quick else 2000
    n_epochs = 20_000 if quick else 100_000
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as d:
        cfg = MemberConfig(name="b", data_dir=Path(d) / "etcd", client_url=free_port_url(),
                           peer_url=free_port_url(), timings=PRODUCTION_TIMINGS)
        async with trio.open_nursery() as nursery:
            await nursery.start(run_member, cfg)
            client = await EtcdClient.connect([cfg.client_url])
            keys = Keys("bench")
            try:
                # 1. raw etcd3 txn, synchronous (no bridge) vs through the bridge vs fenced commit
                import etcd3.etcdrpc as rpc
                from leibrix.store._etcd import _op_msg
                req = rpc.TxnRequest(success=[_op_msg(Put("/bench/sync", b"x"))])
                lat_sync = []
                for i in range(n_txn):
                    t = time.perf_counter(); client._kv_call("Txn", req); lat_sync.append(time.perf_counter() - t)
                election = Election(client, key=keys.leader, record=b"", ttl=5)
                term = await election.campaign()
                await nursery.start(election.keep_alive, term)
                writer = FencedWriter(client, term)
                lat_bridge, lat_fenced = [], []
                for i in range(n_txn):
                    t = time.perf_counter(); await client.txn([], [Put("/bench/b", b"x")]); lat_bridge.append(time.perf_counter() - t)
                for i in range(n_txn):
                    t = time.perf_counter(); await writer.commit([Put(keys.tenant("t"), b"x")]); lat_fenced.append(time.perf_counter() - t)
                results["etcd.txn_sync_no_bridge_p50_us"] = pct(lat_sync, 50) * 1e6
                results["etcd.txn_bridge_p50_us"] = pct(lat_bridge, 50) * 1e6
                results["etcd.txn_bridge_p99_us"] = pct(lat_bridge, 99) * 1e6
                results["etcd.fenced_commit_p50_us"] = pct(lat_fenced, 50) * 1e6
                results["etcd.fenced_commit_p99_us"] = pct(lat_fenced, 99) * 1e6

                # 2. follower mirror catch-up while the leader writes n_epochs in 4000-op txns
                follower = Mirror(client, keys)
                ftable = follower.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
                await nursery.start(follower.run)
                values = [epoch_record(i) for i in range(n_epochs)]
                t0 = time.perf_counter()
                rev = 0
                for start in range(0, n_epochs, 4000):
                    ops = [Put(keys.epoch("tenant-1", f"ds-{i // 1000}", f"e{i:06d}"), values[i])
                           for i in range(start, min(n_epochs, start + 4000))]
                    rev = await writer.commit(ops)
                t_written = time.perf_counter()
                await follower.wait_for(rev)
                t_caught = time.perf_counter()
                assert len(ftable) == n_epochs
                results["mirror.write_epochs_s"] = t_written - t0
                results["mirror.catchup_lag_after_last_commit_s"] = t_caught - t_written
                results["mirror.epochs"] = n_epochs
                results["mirror.value_bytes"] = len(values[-1])

                # 3. cold mirror (a master that starts with nothing): list + decode n_epochs
                cold = Mirror(client, keys)
                ctable = cold.table(Keys.EPOCHS, state_pb2.EpochRecord.FromString)
                t = time.perf_counter()
                async with trio.open_nursery() as inner:
                    await inner.start(cold.run)
                    results["mirror.cold_load_s"] = time.perf_counter() - t
                    inner.cancel_scope.cancel()
                assert len(ctable) == n_epochs

                # 4. in-process resign -> successor's first fenced write
                lat = []
                await election.resign(term)
                for _ in range(5 if quick else 20):
                    a = Election(client, key=keys.leader, record=b"a", ttl=5)
                    b = Election(client, key=keys.leader, record=b"b", ttl=5)
                    ta = await a.campaign()
                    done = trio.Event(); box = {}
                    async def succ():
                        tb = await b.campaign()
                        await FencedWriter(client, tb).commit([Put(keys.tenant("x"), b"b")])
                        box["t"] = time.perf_counter(); box["term"] = tb; done.set()
                    nursery.start_soon(succ)
                    await trio.sleep(0.05)
                    t = time.perf_counter()
                    await a.resign(ta)
                    await done.wait()
                    lat.append(box["t"] - t)
                    await b.resign(box["term"])
                results["election.resign_to_first_write_p50_s"] = pct(lat, 50)
                results["election.resign_to_first_write_max_s"] = max(lat)
            finally:
                await client.aclose()
            nursery.cancel_scope.cancel()
    report = Report("etcd layer: txn round trips, fenced commits, mirror, resign", quick=quick)
    for name, value in results.items():
        unit = "us" if name.endswith("_us") else "s" if name.endswith("_s") else ""
        report.add(name, value, unit)
    report.note(f"single etcd member, production timings; {n_txn} txns per latency row, {n_epochs:,} epoch records")
    report.emit(json_path)


if __name__ == "__main__":
    args = options(__doc__.splitlines()[0])
    trio.run(main, args.quick, args.json)
