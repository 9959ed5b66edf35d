"""The read-only status page: ``GET /`` (one self-contained HTML page) and ``GET /status.json`` (what it shows).

The page has no build step and loads nothing from elsewhere: its CSS and
JavaScript are inline (``status.html``, package data beside this module). It
fetches ``/status.json`` from the master that served it every few seconds and
renders the cluster (this master, the leader, the term, etcd), the masters,
the workers, the tenants with usage-against-quota bars and the epochs by state
(the READY ones listed, up to :data:`MAX_EPOCHS`).

:class:`StatusSource` builds the JSON from the master's in-memory state (no
etcd read per request). Workers come from the leader's worker hub; a follower
shows the workers as the mirrored ``workers/`` records last persisted them
(their recorded state, no heartbeat age), and names the leader's page.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from importlib import resources
from typing import TYPE_CHECKING, Any

from leibrix.domain._lifecycle import State

if TYPE_CHECKING:
    from leibrix.control._service import AdmissionService
    from leibrix.wire._proto.records import state_pb2
    from leibrix.workers._hub import WorkerHub

__all__ = ["MAX_EPOCHS", "StatusSource", "page_html"]

#: Most epochs listed by name per state group (the counts are always complete).
MAX_EPOCHS = 500
_WORKER_STATES = {1: "ACTIVE", 2: "SUSPECT", 3: "DEAD", 4: "DRAINING", 5: "DRAINED"}


def page_html() -> bytes:
    """The page itself (read once per request: it is small and this keeps edits live in development)."""
    return resources.files(__package__).joinpath("status.html").read_bytes()


class StatusSource:
    """Builds the ``/status.json`` document.

    ``health`` is the master's ``/healthz`` report; ``masters`` lists the
    ``masters/`` records; ``leading`` says whether this master leads.
    """

    def __init__(self, *, cluster: str, health: Callable[[], tuple[bool, dict[str, Any]]],
                 masters: Callable[[], Iterable[state_pb2.MasterRecord]], leading: Callable[[], bool],
                 hub: WorkerHub, admission: AdmissionService) -> None:
        self.cluster = cluster
        self._health = health
        self._masters = masters
        self._leading = leading
        self.hub = hub
        self.admission = admission

    def __call__(self) -> dict[str, Any]:
        """The document, read now."""
        healthy, details = self._health()
        masters = sorted(self._masters(), key=lambda m: m.id)
        leader = details.get("leader")
        leader_http = next((m.http_addr for m in masters if m.id == leader), "")
        return {
            "cluster": self.cluster,
            "generated_at": time.time(),
            "master": {**details, "healthy": healthy},
            "leader_http": leader_http,
            "masters": [{"id": m.id, "grpc": m.grpc_addr, "http": m.http_addr,
                         "started_at": m.started_at.seconds, "leader": m.id == leader} for m in masters],
            "workers": self._workers(),
            "tenants": self._tenants(),
            "epochs": self._epochs(),
        }

    def _workers(self) -> list[dict[str, Any]]:
        hub = self.hub
        out = []
        if self._leading():
            now_wall = time.time()
            for wid, m in sorted(hub.members.items()):
                live = hub.liveness.get(wid)
                if live is None:
                    continue
                mem, cpu = hub.reserved(wid)
                out.append({
                    "id": wid, "state": live.state.name, "pool": m.pool, "zone": m.zone, "addr": m.addr,
                    "memory_bytes": m.memory_bytes, "reserved_memory_bytes": mem, "cpu_cores": m.cpu_cores,
                    "reserved_cpu_cores": cpu, "connected": m.session is not None,
                    "last_seen_s": round(max(0.0, now_wall - m.last_seen_wall), 1) if m.last_seen_wall else None,
                    "epochs": len(self.admission.state.by_worker.get(wid, ())),
                })
            return out
        records = getattr(hub, "_records", None) or {}
        for wid, rec in sorted(records.items()):
            labels = rec.worker.labels
            out.append({
                "id": wid, "state": _WORKER_STATES.get(rec.state, "UNKNOWN"),
                "pool": labels.get("pool") or labels.get("tenant_id", ""), "zone": labels.get("zone", ""),
                "addr": rec.worker.addr, "memory_bytes": rec.capacity.memory_bytes,
                "reserved_memory_bytes": None, "cpu_cores": rec.capacity.cpu_cores, "reserved_cpu_cores": None,
                "connected": None, "last_seen_s": None,
                "epochs": len(self.admission.state.by_worker.get(wid, ())),
            })
        return out

    def _tenants(self) -> list[dict[str, Any]]:
        state = self.admission.state
        out = []
        for tid in sorted(state.tenant_ids()):
            u = state.usage(tid)
            t = state.tenants.get(tid)
            q = t.quota if t is not None else None
            out.append({
                "id": tid, "pool": q.pool if q else "", "policy": q.policy.name if q else "",
                "memory_bytes": u.memory_bytes, "memory_limit_bytes": q.max_memory_bytes if q else 0,
                "cpu_cores": u.cpu_cores, "cpu_limit_cores": q.max_cpu_cores if q else 0,
                "epochs": u.epochs, "epochs_limit": q.max_epochs if q else 0,
                "datasets": u.datasets, "datasets_limit": q.max_datasets if q else 0,
                "pending_epochs": u.pending,
            })
        return out

    def _epochs(self) -> dict[str, Any]:
        state = self.admission.state
        by_state: Counter[str] = Counter()
        by_dataset: dict[tuple[str, str], Counter[str]] = {}
        ready = []
        for e in list(state.epochs.values()):
            by_state[e.state.name] += 1
            by_dataset.setdefault((e.tenant_id, e.dataset_id), Counter())[e.state.name] += 1
            if e.state is State.READY and len(ready) < MAX_EPOCHS:
                ready.append({"tenant": e.tenant_id, "dataset": e.dataset_id, "epoch": e.epoch_id,
                              "start_ms": e.start_ms, "end_ms": e.end_ms, "memory_bytes": e.memory_bytes,
                              "workers": sorted(r.worker_id for r in e.replicas)})
        ready.sort(key=lambda r: (r["tenant"], r["dataset"], r["start_ms"], r["epoch"]))
        return {
            "by_state": dict(sorted(by_state.items())),
            "datasets": [{"tenant": t, "dataset": d, "states": dict(sorted(c.items()))}
                         for (t, d), c in sorted(by_dataset.items())],
            "ready": ready,
            "ready_total": by_state.get("READY", 0),
        }
