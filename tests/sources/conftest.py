"""Session-scoped real database servers for the source tests (skipped only when the binaries are missing)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import databases


@pytest.fixture(scope="session")
def postgres() -> Iterator[databases.Server]:
    bindir = databases.find_postgres()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) are not installed: `make install` installs them")
    server = databases.start_postgres(bindir)
    try:
        yield server
    finally:
        databases.stop_postgres(server, bindir)


@pytest.fixture(scope="session")
def mariadb() -> Iterator[databases.Server]:
    found = databases.find_mariadb()
    if found is None:
        pytest.skip("MariaDB server binaries (mariadbd, mariadb-install-db) are not installed: `make install` installs them")
    server, proc = databases.start_mariadb(*found)
    try:
        yield server
    finally:
        databases.stop_mariadb(server, proc)
