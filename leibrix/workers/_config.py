"""The worker-facing knobs of a master (:class:`HubConfig`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["HubConfig"]


@dataclass(frozen=True, slots=True)
class HubConfig:
    """Worker-facing knobs of the master; each field ``f`` is the master option ``worker_<f>``.

    Liveness (:mod:`leibrix.domain._liveness`) judges each worker by its own
    cadence: ``heartbeat_interval`` is what the master asks for in the
    registration ack and the least interval a worker is judged by.
    """

    heartbeat_interval: float = 3.0
    missed_heartbeats: int = 2
    dead_timeout: float = 10.0
    #: Memory assumed for a registration without a capacity: the Rust leibrix-worker's
    #: default DuckDB memory limit (1024 MB), the memory it will hold at most.
    default_memory_bytes: int = 1 << 30
    #: CPU assumed for a registration without a capacity. The Rust worker sets no CPU
    #: limit (DuckDB uses every core of its host, which it does not report); 4 matches
    #: its default of 4 epoch loads at once.
    default_cpu_cores: float = 4.0
    max_message_bytes: int = 4 << 20
    outbound_queue: int = 4096
    register_timeout: float = 10.0
    #: Registrations processed at once; the rest of a reconnect storm waits its turn.
    max_registering: int = 32
    #: Seconds between rebalancing passes (:mod:`leibrix.workers._rebalance`).
    rebalance_interval: float = 5.0
    #: Most make-before-break moves one pass makes (over all pools).
    rebalance_max_moves: int = 16
    #: A pool rebalances once a worker's load is 2x this far from the mean (relative), until all are within it.
    rebalance_tolerance: float = 0.1
