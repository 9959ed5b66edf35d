"""Real etcd members for tests: supervised ``etcd`` processes on free loopback ports.

Every member is run by :func:`leibrix.store._member.run_member` with the fast
test timings in the test's tmp dir, and is stopped and reaped at teardown (the
supervisor sends SIGTERM, then SIGKILL, and waits).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

import trio

from leibrix.store._etcd import EtcdClient
from leibrix.store._member import TEST_TIMINGS, MemberConfig, MemberState, run_member
from leibrix.store._ports import free_port_url


@dataclass
class EtcdServer:
    """A running, supervised etcd member for tests.

    ``kill()`` SIGKILLs the current process (the supervisor restarts it on the
    same data dir, like a crash); ``stop()`` cancels the supervisor, which stops
    and reaps the member for good; ``start()`` runs it again on the same data.
    """

    cfg: MemberConfig
    nursery: trio.Nursery
    state: MemberState = field(default_factory=MemberState)
    _scope: trio.CancelScope | None = None
    _done: trio.Event | None = None

    @property
    def client_url(self) -> str:
        return self.cfg.client_url

    @property
    def endpoint(self) -> str:
        """``host:port`` of the client URL, as ``EtcdClient.connect`` takes it."""
        return self.cfg.client_url.removeprefix("http://")

    @property
    def pid(self) -> int | None:
        return self.state.pid

    @property
    def running(self) -> bool:
        return self._scope is not None

    async def start(self) -> None:
        """Start (or restart after ``stop``) the supervised member; returns once it answers."""
        assert self._scope is None, "already running"
        scope = trio.CancelScope()
        done = trio.Event()

        async def supervise(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await run_member(self.cfg, state=self.state, task_status=task_status)
            finally:
                done.set()

        self._scope, self._done = scope, done
        try:
            await self.nursery.start(supervise)
        except BaseException:
            self._scope = self._done = None
            raise

    async def stop(self) -> None:
        """Stop the member for good (SIGTERM, then SIGKILL) and wait until it is reaped."""
        if self._scope is None or self._done is None:
            return
        self._scope.cancel()
        await self._done.wait()
        self._scope = self._done = None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to the member process (default SIGKILL: a crash the supervisor recovers)."""
        assert self.state.pid is not None, "member is not running"
        os.kill(self.state.pid, sig)


def member_config(directory: Path, name: str = "m0", **overrides: object) -> MemberConfig:
    """A single-member config on free loopback ports with the fast test timings."""
    options: dict[str, object] = {
        "name": name,
        "data_dir": directory / name,
        "client_url": free_port_url(),
        "peer_url": free_port_url(),
        "timings": TEST_TIMINGS,
        "stop_grace": 1.0,
        "start_timeout": 10.0,
    }
    options.update(overrides)
    return MemberConfig(**options)  # type: ignore[arg-type]


async def start_etcd_cluster(nursery: trio.Nursery, directory: Path, size: int = 3) -> list[EtcdServer]:
    """Start ``size`` members forming one cluster; returns once it has quorum."""
    peers = {f"m{i}": free_port_url() for i in range(size)}
    servers = [
        EtcdServer(member_config(directory, name, peer_url=url, initial_cluster=peers), nursery)
        for name, url in peers.items()
    ]
    try:
        async with trio.open_nursery() as starting:
            for server in servers:
                starting.start_soon(server.start)
        client = await EtcdClient.connect([s.endpoint for s in servers])
        try:
            await client.wait_ready(deadline=trio.current_time() + 20)
        finally:
            await client.aclose()
    except BaseException:
        with trio.CancelScope(shield=True):
            for server in servers:
                await server.stop()
        raise
    return servers
