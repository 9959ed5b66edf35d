"""The master's HTTP side: ``/healthz``, ``/primary``, ``/replica``, ``/metrics``, the status page ``/`` and
``/status.json``, on hypercorn's Trio worker.

Operators and load balancers speak HTTP, not gRPC, so liveness and Prometheus
metrics live on a separate small listener. The app is plain ASGI (no web
framework: a handful of routes do not need one); ``/metrics`` is prometheus-client's own
ASGI app over the master's private :class:`~prometheus_client.CollectorRegistry`
(a private registry keeps several masters in one test process apart).

Other modules add their metrics to :attr:`Metrics.registry` (the cluster series
of :mod:`leibrix.api._metrics` are registered by the composition root).
``/`` and ``/status.json`` are the read-only status page of
:mod:`leibrix.api._status_page` (404 when the master was composed without one).

``/primary`` answers 200 only on the healthy leader and ``/replica`` only on a
healthy follower (503 elsewhere), as Patroni's REST API does: a TCP load
balancer with an HTTP health check can then send workers and clients that
dial a single address to whichever master leads, without speaking gRPC.
``/healthz`` keeps its meaning (this master is healthy, leader or not).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_asgi_app

from leibrix.api._metrics import RpcMetrics
from leibrix.api._status_page import page_html

__all__ = ["Metrics", "HttpServer"]

log = logging.getLogger(__name__)


class Metrics:
    """The core master metrics, in a registry of their own.

    * ``leibrix_is_leader`` — 1 while this master leads;
    * ``leibrix_term`` — fencing token of the current term (0: no leader known);
    * ``leibrix_etcd_up`` — 1 while etcd answers this master;
    * ``leibrix_leader_terms_total`` — terms this master has won (flapping shows here);
    * ``leibrix_loop_lag_seconds`` — histogram of how late the Trio loop wakes a 10 ms sleeper;
    * ``leibrix_loop_stall_max_seconds`` — the longest such lateness in the last minute
      (see :mod:`leibrix.master._loop`);
    * ``leibrix_etcd_probe_duration_seconds`` — latency of the health probe's etcd status request;
    * ``leibrix_etcd_probe_errors_total{error}`` — probes that failed (``timeout`` or the error's class).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.is_leader = Gauge("leibrix_is_leader", "1 while this master is the leader", registry=self.registry)
        self.term = Gauge(
            "leibrix_term", "fencing token (leader key create revision) of the current term", registry=self.registry
        )
        self.etcd_up = Gauge("leibrix_etcd_up", "1 while etcd answers this master", registry=self.registry)
        self.terms_won = Counter(
            "leibrix_leader_terms", "leadership terms won by this master", registry=self.registry
        )
        self.loop_lag = Histogram(
            "leibrix_loop_lag_seconds", "how late the event loop woke a periodic sleeper",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0), registry=self.registry,
        )
        self.loop_stall_max = Gauge(
            "leibrix_loop_stall_max_seconds", "longest event-loop stall in the last minute", registry=self.registry
        )
        self.etcd_probe = Histogram(
            "leibrix_etcd_probe_duration_seconds", "latency of this master's etcd status probe",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=self.registry,
        )
        self.etcd_probe_errors = Counter(
            "leibrix_etcd_probe_errors", "etcd status probes that failed, by error", ["error"], registry=self.registry
        )
        self.etcd_probe_errors.labels("timeout")  # exported at 0 from the start, so rate() has a baseline
        #: gRPC calls by method and status, AdmitDataset outcomes and latency (the gRPC server's ``observe``).
        self.rpc = RpcMetrics(self.registry)


Health = Callable[[], tuple[bool, dict[str, Any]]]

#: Health paths -> what a healthy master must also be for a 200.
_ROLES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "/healthz": lambda details: True,
    "/primary": lambda details: bool(details.get("is_leader")),
    "/replica": lambda details: not details.get("is_leader"),
}


Status = Callable[[], dict[str, Any]]


class HttpServer:
    """Serves ``GET /healthz`` (200 healthy / 503 not, JSON body), ``/primary``, ``/replica``, ``/metrics``,
    and with a ``status`` source the status page ``/`` and its data ``/status.json``.

    ``health`` returns ``(healthy, details)``; it is called per request and
    must be cheap (it reads state the master keeps current, it does not probe).
    ``status`` (None: no status page) returns the ``/status.json`` document.
    """

    def __init__(self, metrics: Metrics, health: Health, status: Status | None = None) -> None:
        self._metrics_app = make_asgi_app(metrics.registry)
        self._health = health
        self._status = status

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """The ASGI entry point."""
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path == "/metrics":
            await self._metrics_app(scope, receive, send)
        elif path in _ROLES:
            healthy, details = self._health()
            ok = healthy and _ROLES[path](details)
            body = json.dumps({"healthy": healthy, **details}).encode()
            await _respond(send, 200 if ok else 503, body, b"application/json")
        elif path in ("/", "/status.json") and self._status is not None:
            if path == "/":
                await _respond(send, 200, page_html(), b"text/html; charset=utf-8")
            else:
                await _respond(send, 200, json.dumps(self._status()).encode(), b"application/json")
        else:
            await _respond(send, 404, b"not found: try /, /healthz, /primary, /replica or /metrics\n", b"text/plain")

    async def serve(self, host: str, port: int, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen on ``host:port`` until cancelled; ``started()`` once bound (``OSError`` if not)."""
        config = Config()
        config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
        config.accesslog = None
        config.errorlog = log
        config.graceful_timeout = 0.5

        async with trio.open_nursery() as nursery:
            await nursery.start(serve, self, config)
            task_status.started()


async def _respond(send: Any, status: int, body: bytes, content_type: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                        (b"cache-control", b"no-store")],
        }
    )
    await send({"type": "http.response.body", "body": body})
