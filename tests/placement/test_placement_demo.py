"""``leibrix placement-demo`` and ``python -m bench.placement --quick``, run for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from leibrix.cli import main

ROOT = Path(__file__).resolve().parents[2]


def test_demo_prints_every_strategy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["placement-demo", "--workers", "5", "--epochs", "6", "--replicas", "2"]) == 0
    out = capsys.readouterr().out
    for name in ("round_robin", "hash", "capacity"):
        assert f"strategy '{name}': workers" in out
    assert "worker-04" in out and "acme/orders/2026-11-01" in out
    assert "residency by benefit" in out and "eviction with hysteresis" in out


def test_demo_one_strategy_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["placement-demo", "--strategy", "hash", "--workers", "3", "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert "strategy 'hash'" in out and "strategy 'capacity'" not in out
    assert main(["placement-demo", "--workers", "0"]) == 2


def test_quick_benchmark_writes_every_key(tmp_path: Path) -> None:
    path = tmp_path / "bench.json"
    run = subprocess.run([sys.executable, "-m", "bench.placement", "--quick", "--json", str(path)],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "QUICK" in run.stdout
    data = json.loads(path.read_text())
    assert data["quick"] is True
    expected = {
        "ring": ["leibrix_ns_per_key", "twin_ns_per_key", "uhashring_ns_per_key", "jump_ns_per_key",
                 "moved_fraction_add", "ideal_moved_fraction_add", "max_over_mean",
                 "bounded_max_over_mean", "bounded_epsilon"],
        "pack": ["leibrix_s", "twin_s", "workers_used", "lower_bound_workers"],
        "rank": ["leibrix_s", "numpy_s"],
    }
    for section, keys in expected.items():
        for key in keys:
            assert isinstance(data[section][key], float) and data[section][key] > 0, (section, key)
    assert data["rank"]["same_result"] == 1.0
    assert data["ring"]["bounded_max_over_mean"] <= 1 + data["ring"]["bounded_epsilon"] + 1e-9
    assert data["pack"]["workers_used"] >= data["pack"]["lower_bound_workers"]


@pytest.mark.parametrize("module", ["leibrix.placement", "leibrix.placement._hashing", "leibrix.placement._ring",
                                    "leibrix.placement._strategies", "leibrix.placement._ranking"])
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0
