"""Per-tenant CPU budgets on one worker: how many statements of a tenant run at once, and the DuckDB threads.

The rule
--------
The worker offers ``C`` = ``--cpu`` cores; DuckDB's thread pool has
``max(1, floor(C))`` threads. Each tenant ``t`` has a **share** ``s_t`` of
those cores:

* a worker dedicated to one pool (``--pool T``) gives ``T`` all of them,
  ``s_T = C``;
* ``--tenant-cpu T=CORES,...`` names a tenant's share explicitly (capped at
  ``C``); the registration reports it in the labels ``cpu_share/<T>``;
* any other tenant gets ``--tenant-cpu-default`` cores (default: half the
  worker, at least one core), so no single tenant can occupy every core of a
  shared worker.

From the share come the tenant's **slots** ``n_t = max(1, floor(s_t))``:
at most ``n_t`` of its Flight queries execute at once and at most
``min(n_t, max parallel loads)`` of its loads are in progress at once; more
wait (in arrival order) for one of *its* slots, never taking another
tenant's. A statement then runs on the shared pool, so the **DuckDB
threads** a tenant keeps busy are bounded by ``n_t`` statements' worth of
the pool while other tenants have slots of their own. (DuckDB's ``threads``
setting is one per database, not per connection or statement, so a tenant's
statements cannot each be given a smaller pool; :meth:`Budgets.threads` is
the number of DuckDB threads the tenant is entitled to, ``min(floor(C),
max(1, round(s_t)))``, which the worker reports and which bounds a tenant's
load parallelism.)

The counters (:meth:`Budgets.snapshot`) say, per tenant, how many statements
run, how many wait, and the most that ever ran at once: the worker's Flight
``DoAction`` ``budgets`` returns them as JSON.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Budgets", "parse_tenant_cpu"]


def parse_tenant_cpu(text: str) -> dict[str, float]:
    """``"acme=2,globex=0.5"`` → ``{"acme": 2.0, "globex": 0.5}``; ValueError naming the bad entry."""
    out: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        tenant, sep, cores = item.partition("=")
        try:
            value = float(cores)
        except ValueError:
            value = -1.0
        if not sep or not tenant.strip() or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{item!r}: expected TENANT=CORES with CORES > 0")
        out[tenant.strip()] = value
    return out


@dataclass
class _Tenant:
    slots: int
    cond: threading.Condition
    running: int = 0
    waiting: int = 0
    peak: int = 0
    served: int = 0
    queue: list[int] = field(default_factory=list)
    next_ticket: int = 0


class Budgets:
    """The per-tenant slot pools of one kind of statement (queries, or loads), thread-safe.

    Parameters
    ----------
    cpu_cores:
        The worker's ``--cpu``.
    shares:
        Explicit shares (``--tenant-cpu``), cores per tenant.
    default_share:
        Cores of a tenant not in ``shares`` (None: half the worker, at least 1).
    pool:
        The tenant the worker is dedicated to ("" for a shared worker): its share is the whole worker.
    cap:
        Most slots any tenant gets here (e.g. the worker's parallel-load limit), None for no cap.
    """

    def __init__(self, cpu_cores: float, shares: Mapping[str, float] | None = None, *,
                 default_share: float | None = None, pool: str = "", cap: int | None = None) -> None:
        self.cpu_cores = max(float(cpu_cores), 1e-9)
        self.shares = {t: min(float(s), self.cpu_cores) for t, s in (shares or {}).items()}
        self.default_share = (max(1.0, self.cpu_cores / 2) if default_share is None
                              else min(float(default_share), self.cpu_cores))
        self.pool = pool
        self.cap = cap
        self._lock = threading.Lock()
        self._tenants: dict[str, _Tenant] = {}

    def share(self, tenant: str) -> float:
        """Cores tenant ``tenant`` is entitled to on this worker."""
        if self.pool and tenant == self.pool:
            return self.cpu_cores
        return self.shares.get(tenant, self.default_share)

    def slots(self, tenant: str) -> int:
        """Statements of ``tenant`` that may run at once: ``max(1, floor(share))`` (capped by ``cap``)."""
        n = max(1, math.floor(self.share(tenant) + 1e-9))
        return min(n, self.cap) if self.cap is not None else n

    def threads(self, tenant: str) -> int:
        """DuckDB threads ``tenant`` is entitled to: ``min(floor(C), max(1, round(share)))``."""
        return min(max(1, math.floor(self.cpu_cores)), max(1, round(self.share(tenant))))

    def _state(self, tenant: str) -> _Tenant:
        st = self._tenants.get(tenant)
        if st is None:
            st = self._tenants[tenant] = _Tenant(self.slots(tenant), threading.Condition(self._lock))
        return st

    @contextmanager
    def slot(self, tenant: str, timeout: float | None = None) -> Iterator[bool]:
        """Hold one of ``tenant``'s slots for the ``with`` body; waits first-come first-served.

        Yields True once a slot is held, or False when ``timeout`` seconds passed first (the body then
        runs without a slot: the caller should refuse the statement).
        """
        with self._lock:
            st = self._state(tenant)
            ticket = st.next_ticket
            st.next_ticket += 1
            st.queue.append(ticket)
            st.waiting += 1
            got = st.cond.wait_for(lambda: st.running < st.slots and st.queue[0] == ticket, timeout)
            st.queue.remove(ticket)
            st.waiting -= 1
            if got:
                st.running += 1
                st.peak = max(st.peak, st.running)
            st.cond.notify_all()
        try:
            yield got
        finally:
            if got:
                with self._lock:
                    st.running -= 1
                    st.served += 1
                    st.cond.notify_all()

    def snapshot(self) -> dict[str, dict[str, float]]:
        """Per tenant seen: ``share``, ``slots``, ``threads``, ``running``, ``waiting``, ``peak``, ``served``."""
        with self._lock:
            return {t: {"share": self.share(t), "slots": st.slots, "threads": self.threads(t),
                        "running": st.running, "waiting": st.waiting, "peak": st.peak, "served": st.served}
                    for t, st in self._tenants.items()}
