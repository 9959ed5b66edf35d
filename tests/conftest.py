"""Shared pytest configuration: the ``--runslow`` switch for chaos/scale runs.

Fixtures that start real components (etcd, masters, workers) live beside the
tests that need them; the etcd server fixture is here because every area uses it.
"""

from __future__ import annotations

import os

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow",
        action="store_true",
        default=os.environ.get("LEIBRIX_SLOW") == "1",
        help="also run tests marked slow (long chaos/scale runs)",
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow or LEIBRIX_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
