"""Worker label keys with a meaning to Leibrix: the one home of their spelling.

A worker registers a free-form ``labels`` map. These keys are read:

* ``zone``: replicas of one epoch go to distinct zones when zones are known;
* ``pool``: the tenant pool the worker serves (a tenant's ``worker_pool``, or a tenant id);
* ``tenant_id``: the Rust leibrix-worker's way of naming the one tenant it serves (same meaning as ``pool``);
* ``flight_addr``: where the worker answers queries (Arrow Flight), when that is not its registered ``addr``.
"""

from __future__ import annotations

__all__ = ["FLIGHT_ADDR", "POOL", "TENANT_ID", "ZONE", "pool_of"]

ZONE = "zone"
POOL = "pool"
TENANT_ID = "tenant_id"
FLIGHT_ADDR = "flight_addr"


def pool_of(labels: dict[str, str] | object) -> str:
    """The pool a worker's labels name: ``pool``, else ``tenant_id``, else ``""`` (the shared pool)."""
    get = labels.get  # type: ignore[attr-defined]
    return get(POOL) or get(TENANT_ID, "")
