"""The reference worker: ``leibrix worker``, a real process that speaks the worker protocol.

It exists so the master can be tested and demonstrated end to end without the
Rust leibrix-worker: it registers over ``CoordinateWorker`` with its capacity,
labels and inventory, heartbeats with its memory use, executes LoadPlans into
an in-memory DuckDB (``_loader``) and evictions, reports status, reconnects with
backoff and follows leader redirects (``_agent``). ``_cmd`` is the CLI.
"""

from leibrix.worker._agent import Agent, WorkerConfig
from leibrix.worker._loader import Loader
from leibrix.worker._sizes import parse_size

__all__ = ["Agent", "Loader", "WorkerConfig", "parse_size"]
