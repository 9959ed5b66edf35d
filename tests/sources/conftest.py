"""Session-scoped real database servers for the source tests (`tests.support.databases`; skipped only when the binaries are missing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import databases


@pytest.fixture(scope="session")
def postgres() -> Iterator[databases.Server]:
    with databases.running_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def mariadb() -> Iterator[databases.Server]:
    with databases.running_mariadb() as server:
        yield server
