"""The one place tests launch masters (and the workers that join them).

In-process masters (real etcd, real gRPC, the real composition root unless a
test passes its own ``compose``), on free loopback ports:

* :func:`master_config` / :func:`start_master` — one master on the given etcd
  endpoint(s), any ``MasterConfig`` option as a keyword; serving on return;
* :func:`crashable_master` — the same inside a cancel scope the test cancels
  to end the whole task tree at once (a crash, as far as etcd can tell);
* :func:`start_masters` — N of them on one etcd; :func:`leader_and_follower`
  — two, the first leading before the second starts;
* :func:`leading` / :func:`sole_leader` — wait until a master leads (and its
  term's services run) / until exactly one of several leads and all agree;
* :func:`workers` / :func:`master_with_workers` — real ``leibrix worker``
  processes joined to a master, ACTIVE on return;
* :func:`scheduling_pass` — kick the leader's coordinator and wait for a pass
  begun after the call: the positive sign before asserting "still PENDING".

Master processes (``python -m leibrix master``, SIGKILL-able):

* :func:`master_process` — one child master on an external etcd;
* :func:`local_cluster` — N masters with embedded etcd members forming one
  quorum (:class:`leibrix.cli._cluster.LocalCluster`, fast test timings);
  :func:`written_leader` reads from etcd the leader that has made a fenced write,
  :func:`healthz_leader` asks the masters' ``/healthz`` who leads.
"""

from __future__ import annotations

import json
import sys
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import trio

from leibrix.cli._cluster import LocalCluster
from leibrix.store._ports import free_hostport
from leibrix.master._compose import Parts
from leibrix.master._config import MasterConfig
from leibrix.master._master import Master
from leibrix.store._etcd import EtcdClient, EtcdUnavailable
from leibrix.store._member import TEST_TIMINGS
from leibrix.store._store import Keys
from leibrix.wire._proto.records import state_pb2
from tests.support.poll import Passes, eventually

#: The cluster name of in-process masters unless a test names another; its etcd key layout.
CLUSTER = "adm"
KEYS = Keys(CLUSTER)
#: The leader key of :func:`local_cluster`'s masters (``LocalCluster``'s cluster name is "local").
LOCAL_LEADER_KEY = Keys("local").leader


def _endpoints(endpoints: str | Sequence[str]) -> list[str]:
    return [endpoints] if isinstance(endpoints, str) else list(endpoints)


def master_config(endpoints: str | Sequence[str], name: str = "m1", *, cluster: str = CLUSTER, lease_ttl: int = 1,
                  **options: Any) -> MasterConfig:
    """A validated config on free loopback ports against ``endpoints``, with ``options`` set."""
    return MasterConfig(name=name, cluster=cluster, grpc_listen=free_hostport(), http_listen=free_hostport(),
                        etcd_endpoints=_endpoints(endpoints), lease_ttl=lease_ttl, **options).validate()


async def start_master(nursery: trio.Nursery, endpoints: str | Sequence[str], name: str = "m1", *,
                       compose: Callable[[Master], Parts] | None = None, **options: Any) -> Master:
    """An in-process master run by ``nursery``, serving once this returns (not necessarily leading yet).

    ``options``: ``cluster``, ``lease_ttl`` (1 s unless given) and any ``MasterConfig`` field;
    ``compose``: what it serves and runs while leading (default: the real composition root).
    """
    config = master_config(endpoints, name, **options)
    master = Master(config) if compose is None else Master(config, compose=compose)
    await nursery.start(master.run)
    return master


async def crashable_master(nursery: trio.Nursery, endpoints: str | Sequence[str], name: str = "m1",
                           **options: Any) -> tuple[Master, trio.CancelScope]:
    """:func:`start_master` inside a scope whose cancellation ends the master's whole task tree at once."""
    holder: dict[str, Any] = {}

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as inner:
                holder["master"] = await start_master(inner, endpoints, name, **options)
                holder["scope"] = scope
                task_status.started()

    await nursery.start(run)
    return holder["master"], holder["scope"]


async def start_masters(nursery: trio.Nursery, endpoints: str | Sequence[str], *names: str,
                        **options: Any) -> list[Master]:
    """One in-process master per name (all with ``options``), started in order."""
    return [await start_master(nursery, endpoints, name, **options) for name in names]


async def leader_and_follower(nursery: trio.Nursery, endpoints: str | Sequence[str], names: tuple[str, str] = ("a", "b"),
                              **options: Any) -> tuple[Master, Master]:
    """Master ``names[0]``, leading, then master ``names[1]`` following it with a warm mirror (both with ``options``)."""
    leader = await leading(await start_master(nursery, endpoints, names[0], **options))
    return leader, await start_master(nursery, endpoints, names[1], **options)


def _term_started(master: Master) -> bool:
    admission = master.parts.admission if master.parts is not None else None
    return master.is_leader and (admission is None or admission.admissions is not None)


async def leading(master: Master, *, timeout: float = 20.0) -> Master:
    """Wait until ``master`` leads and its term's admission service (if it has one) runs."""
    await eventually(lambda: _term_started(master), timeout=timeout, what=f"{master.config.name} leading")
    return master


async def sole_leader(*masters: Master, timeout: float = 10.0) -> tuple[Master, list[Master]]:
    """Wait until exactly one of ``masters`` leads and every one names it; returns (leader, the others)."""

    def view() -> dict[str, tuple[bool, str | None]]:
        return {m.config.name: (m.is_leader, m.leader.id if m.leader is not None else None) for m in masters}

    def agreed(seen: dict[str, tuple[bool, str | None]]) -> bool:
        leaders = [name for name, (is_leader, _) in seen.items() if is_leader]
        return len(leaders) == 1 and all(named == leaders[0] for _, named in seen.values())

    seen = await eventually(view, until=agreed, timeout=timeout, what="one leader every master agrees on")
    leader = next(m for m in masters if seen[m.config.name][0])
    return leader, [m for m in masters if m is not leader]


async def leader_id(etcd: EtcdClient, keys: Keys = KEYS) -> str | None:
    """The id of the master holding the leader key (None: nobody)."""
    kv = await etcd.get(keys.leader)
    return state_pb2.MasterRecord.FromString(kv.value).id if kv is not None else None


# ------------------------------------------------------------------ workers


async def workers(nursery: trio.Nursery, master: Master, *ids: str, memory: str = "256MiB",
                  pool: str = "") -> dict[str, trio.Process]:
    """Start real worker processes (reaped by ``nursery``) and wait until the leader sees them ACTIVE."""
    from tests.support.hub import run_process, worker_cmd

    extra = ("--pool", pool) if pool else ()
    procs = {wid: await nursery.start(run_process, worker_cmd(master.config.grpc_listen, wid, *extra, memory=memory))
             for wid in ids}
    hub = master.parts.hub
    await eventually(lambda: len(hub.eligible(pool or None)), until=lambda n: n >= len(ids), timeout=30,
                     what=f"workers {', '.join(ids)} ACTIVE")
    return procs


async def master_with_workers(endpoints: str | Sequence[str], nursery: trio.Nursery, *ids: str,
                              memory: str = "256MiB", **options: Any) -> Master:
    """A leading in-process master with real workers ``ids`` ACTIVE on it."""
    master = await leading(await start_master(nursery, endpoints, **options))
    await workers(nursery, master, *ids, memory=memory)
    return master


_passes: weakref.WeakKeyDictionary[Any, Passes] = weakref.WeakKeyDictionary()


async def scheduling_pass(master: Master, *, timeout: float = 10.0) -> None:
    """Kick the leader's coordinator and wait until a scheduling pass begun after this call has finished.

    The positive sign a test waits for before asserting that scheduling left
    something alone. Counts the passes of the current term's coordinator
    (its ``schedule`` is wrapped on first use; the coordinator ends with its term).
    """
    coord = master.parts.admission.coordinator
    assert coord is not None, f"{master.config.name} is not leading"
    passes = _passes.get(coord)
    if passes is None:
        passes = _passes[coord] = Passes("scheduling")
        coord.schedule = passes.wrap(coord.schedule)
    mark = passes.mark()
    coord.kick()
    await passes.after(mark, timeout=timeout)


# ------------------------------------------------------------------ master processes


async def master_process(nursery: trio.Nursery, endpoint: str, name: str, *, cluster: str = CLUSTER,
                         **options: Any) -> tuple[trio.Process, str]:
    """``python -m leibrix master`` on ``endpoint`` with ``options`` as flags (lease 1 s); returns the process
    (SIGKILLed and reaped by ``nursery``) and its gRPC address."""
    from tests.support.hub import run_process

    cfg = master_config(endpoint, name, cluster=cluster, **options)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    cmd = [sys.executable, "-m", "leibrix", "master", f"--name={name}", f"--cluster={cluster}",
           f"--grpc-listen={cfg.grpc_listen}", f"--http-listen={cfg.http_listen}", f"--etcd-endpoints={endpoint}",
           "--lease-ttl=1", "--log-level=warning", *flags]
    return await nursery.start(run_process, cmd), cfg.grpc_listen


@asynccontextmanager
async def local_cluster(directory: Path, size: int = 3, *, start: bool = True,
                        **options: Any) -> AsyncIterator[LocalCluster]:
    """``size`` master processes with embedded etcd members in one quorum (test timings and a 1 s lease unless
    ``options`` say otherwise), all started unless ``start`` is false; stopped and reaped on exit."""
    options = {"timings": TEST_TIMINGS, "lease_ttl": 1, **options}
    async with LocalCluster(directory, size, **options) as cluster:
        if start:
            await cluster.start_all()
        yield cluster


async def written_leader(etcd: EtcdClient, *, key: str = LOCAL_LEADER_KEY, not_token: int = 0, min_version: int = 2,
                         timeout: float = 15.0) -> tuple[state_pb2.MasterRecord, int]:
    """The leader's record and term token once it has made a fenced write (the leader key's version
    >= ``min_version``: a proclaim), in a term other than ``not_token``.

    Rides out the test client's own endpoint having died with a killed master.
    """

    async def probe() -> Any:
        try:
            return await etcd.get(key)
        except EtcdUnavailable:
            return None

    def written(kv: Any) -> bool:
        return kv is not None and kv.create_revision != not_token and kv.version >= min_version

    kv = await eventually(probe, until=written, timeout=timeout,
                          what=f"a leader (term other than {not_token}) that has written {key}")
    return state_pb2.MasterRecord.FromString(kv.value), kv.create_revision


def _healthz_leader(cluster: LocalCluster) -> str | None:
    for name in cluster.names:
        answer = cluster.healthz(name)
        if answer and answer[0] == 200 and json.loads(answer[1]).get("is_leader"):
            return name
    return None


async def healthz_leader(cluster: LocalCluster, *, not_: str = "", timeout: float = 20.0) -> str:
    """The name of the master whose ``/healthz`` says it leads (other than ``not_``)."""
    return await eventually(lambda: trio.to_thread.run_sync(_healthz_leader, cluster),
                            until=lambda name: name and name != not_, timeout=timeout, interval=0.1,
                            what=f"a master other than {not_!r} leading, by /healthz")
