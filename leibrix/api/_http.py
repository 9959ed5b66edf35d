"""The master's HTTP side: ``/healthz``, ``/primary``, ``/replica`` and ``/metrics`` on hypercorn's Trio worker.

Operators and load balancers speak HTTP, not gRPC, so liveness and Prometheus
metrics live on a separate small listener. The app is plain ASGI (no web
framework: two routes do not need one); ``/metrics`` is prometheus-client's own
ASGI app over the master's private :class:`~prometheus_client.CollectorRegistry`
(a private registry keeps several masters in one test process apart).

Other modules add their metrics to :attr:`Metrics.registry`.

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
      (see :mod:`leibrix.master._loop`).
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


Health = Callable[[], tuple[bool, dict[str, Any]]]

#: Health paths -> what a healthy master must also be for a 200.
_ROLES: dict[str, Callable[[dict[str, Any]], bool]] = {
    "/healthz": lambda details: True,
    "/primary": lambda details: bool(details.get("is_leader")),
    "/replica": lambda details: not details.get("is_leader"),
}


class HttpServer:
    """Serves ``GET /healthz`` (200 healthy / 503 not, JSON body), ``/primary``, ``/replica`` and ``/metrics``.

    ``health`` returns ``(healthy, details)``; it is called per request and
    must be cheap (it reads state the master keeps current, it does not probe).
    """

    def __init__(self, metrics: Metrics, health: Health) -> None:
        self._metrics_app = make_asgi_app(metrics.registry)
        self._health = health

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
        else:
            await _respond(send, 404, b"not found: try /healthz, /primary, /replica or /metrics\n", b"text/plain")

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
            "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})
