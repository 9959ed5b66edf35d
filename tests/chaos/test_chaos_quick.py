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
