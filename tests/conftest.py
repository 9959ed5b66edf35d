"""Shared pytest configuration: the ``--runslow`` switch and the real-etcd fixtures.

The etcd fixtures are here because every layer's tests use them; the members
they start are described in :mod:`tests.support.etcd`.
"""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator, Iterator, Awaitable, Callable
from pathlib import Path

import pytest
import trio

from leibrix.store._etcd import EtcdClient
from tests.support.etcd import EtcdServer, member_config, start_etcd_cluster


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


@pytest.fixture(autouse=True)
def restore_gc() -> Iterator[None]:
    """Put the cyclic collector back as it was: an in-process master freezes the heap and raises thresholds."""
    thresholds = gc.get_threshold()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def _serve(server: EtcdServer) -> AsyncIterator[EtcdServer]:
    await server.start()
    try:
        yield server
    finally:
        with trio.CancelScope(shield=True):
            await server.stop()


async def _connect(server: EtcdServer) -> AsyncIterator[EtcdClient]:
    client = await EtcdClient.connect([server.endpoint], timeout=5.0)
    try:
        yield client
    finally:
        with trio.CancelScope(shield=True):
            await client.aclose()


@pytest.fixture
async def etcd_server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[EtcdServer]:
    """A real single-member etcd configured as a master's embedded member, stopped and reaped at teardown."""
    async for server in _serve(EtcdServer(member_config(tmp_path / "etcd"), nursery)):
        yield server


@pytest.fixture
async def etcd(etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    """An ``EtcdClient`` connected to ``etcd_server``."""
    async for client in _connect(etcd_server):
        yield client


@pytest.fixture
async def default_etcd_server(tmp_path: Path, nursery: trio.Nursery) -> AsyncIterator[EtcdServer]:
    """A real etcd on etcd's own limits (no --max-txn-ops / --max-request-bytes), as an operator runs it."""
    async for server in _serve(EtcdServer(member_config(tmp_path / "default-etcd", txn_limits=None), nursery)):
        yield server


@pytest.fixture
async def default_etcd(default_etcd_server: EtcdServer) -> AsyncIterator[EtcdClient]:
    """An ``EtcdClient`` connected to ``default_etcd_server``."""
    async for client in _connect(default_etcd_server):
        yield client


@pytest.fixture
async def etcd_cluster(
    tmp_path: Path, nursery: trio.Nursery
) -> AsyncIterator[Callable[[int], Awaitable[list[EtcdServer]]]]:
    """Factory: ``servers = await etcd_cluster(3)`` starts an N-member cluster; all reaped at teardown."""
    started: list[EtcdServer] = []
    counter = 0

    async def make(size: int = 3) -> list[EtcdServer]:
        nonlocal counter
        counter += 1
        servers = await start_etcd_cluster(nursery, tmp_path / f"cluster{counter}", size)
        started.extend(servers)
        return servers

    try:
        yield make
    finally:
        with trio.CancelScope(shield=True):
            for server in started:
                await server.stop()
