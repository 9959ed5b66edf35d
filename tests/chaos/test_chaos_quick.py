"""``bench.chaos --quick``: a few seeded faults on a real 3-master cluster under load lose nothing.

Runs the benchmark as a child process (it starts its own masters, workers and
etcd quorum) and asserts on its JSON: no acknowledged admission missing from
etcd, no write outside a term, no invariant violated, every request answered.
A failure prints the seed; ``python -m bench.chaos --quick --seed S`` replays it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from leibrix.wire._proto.records import state_pb2

SEED = 7


def test_quick_chaos_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--quick", "--seed", str(SEED), "--json", str(out)],
        cwd=Path(__file__).resolve().parents[2], capture_output=True, text=True, timeout=240,
    )
    assert out.exists(), f"bench.chaos wrote no results (exit {run.returncode}):\n{run.stderr[-3000:]}"
    chaos = json.loads(out.read_text())["chaos"]
    where = f"seed {SEED}:\n{run.stderr[-3000:]}"
    assert chaos["faults"] == 5  # one of each kind
    assert chaos["acked_admissions"] > 0, where
    assert chaos["lost_admissions"] == 0, where
    assert chaos["stale_leader_writes"] == 0, where
    assert chaos["invariant_violations"] == 0, where
    assert chaos["unacknowledged_requests"] == 0, where
    assert run.returncode == 0, where


def test_the_safety_check_judges_acknowledgements_older_than_the_snapshot() -> None:
    from bench.chaos import KEYS, Audit, Ledger, check_safety

    ledger, audit = Ledger(), Audit()
    stored, lost, late, dropping = (KEYS.dataset("t1", d) for d in ("stored", "lost", "late", "dropping"))
    empty = {"epochs": {}, "workers": {}, "tenants": {}}
    snap = {"datasets": {stored: state_pb2.DatasetRecord()}, **empty}
    before = {stored: "admit-1", lost: "admit-2", dropping: "admit-3"}  # acknowledged before the read
    ledger.acked = {**before, late: "admit-4"}  # admit-4 was acknowledged while etcd was being read
    ledger.in_doubt.add(dropping)  # its drop was sent while etcd was being read
    assert check_safety(snap, before, ledger, audit) == [f"acknowledged admission admit-2 ({lost}) is missing"]
