"""bench.fuzz's core against an in-process master with real etcd, a real worker and seeded state: no failures."""

from __future__ import annotations

from typing import Any

import grpc
import trio

from bench.fuzz import WORKER, Target, _SyncEtcd, _wait_leader, fuzz, seed_state
from tests.support.admission import start_master
from tests.support.hub import spawn_worker


async def test_fuzzed_requests_all_get_specific_statuses(etcd_server: Any, nursery: trio.Nursery) -> None:
    master = await start_master(nursery, etcd_server.endpoint)
    addr = master.config.grpc_listen
    await spawn_worker(nursery, addr, WORKER)
    etcd = _SyncEtcd(etcd_server.endpoint)

    def run() -> Any:
        with grpc.insecure_channel(addr) as channel:
            _wait_leader(channel)
            seed_state(channel)
        return fuzz(Target(addr, master.config.http_listen, etcd.revision), generated=8, mutated=20, seed=7)

    tally = await trio.to_thread.run_sync(run)
    counts = tally.as_dict()
    assert counts["fuzz.requests"] > 17 * 20
    assert {k: v for k, v in counts.items() if k not in ("fuzz.requests", "fuzz.max_loop_stall_s")} == {
        "fuzz.internal_errors": 0, "fuzz.unknown_errors": 0, "fuzz.hangs": 0, "fuzz.crashes": 0,
        "fuzz.term_changes": 0, "fuzz.state_changes_on_reject": 0,
    }, tally.examples
    assert len(tally.terms) == 1 and tally.codes["INVALID_ARGUMENT"] > counts["fuzz.requests"] // 2
    assert 0 < counts["fuzz.max_loop_stall_s"] < 1.0
