"""Talking to masters from outside: one call with leader redirects, request builders, and queries.

``leibrix.client.Client(masters=[...]).query(tenant, dataset, sql, start, end)``
answers SQL from the workers' resident epochs (:mod:`leibrix.client._query`).
It is imported on first use, so code that only calls masters does not load
pyarrow and DuckDB.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Client", "EpochsUnavailable", "QueryFailed"]


def __getattr__(name: str) -> Any:
    if name in ("Client", "QueryFailed"):
        from leibrix.client import _query

        return getattr(_query, name)
    if name == "EpochsUnavailable":
        from leibrix.client._routes import EpochsUnavailable

        return EpochsUnavailable
    raise AttributeError(f"module 'leibrix.client' has no attribute {name!r}")
