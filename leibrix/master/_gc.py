"""The master's garbage-collection policy: the one place that tunes CPython's cyclic collector.

A master holds millions of long-lived objects (the Mirror, the state model)
and must answer its lease keep-alive every third of a lease TTL. The cyclic
collector's full collections walk every tracked object with the Trio loop
stopped; this module keeps them from ever walking the cluster state:
:func:`quiet_gc` freezes what start-up built, :func:`pace_gc` collects the
young generations on a clock and freezes what survives.
"""

from __future__ import annotations

import gc

import trio

__all__ = ["GC_PACE_S", "GC_THRESHOLDS", "pace_gc", "quiet_gc"]

#: Generation thresholds after start-up (CPython's default is 700, 10, 10): a safety net behind ``pace_gc``.
GC_THRESHOLDS = (50_000, 50, 1000)
#: Seconds between the master's paced young collections (``pace_gc``).
GC_PACE_S = 0.25


def quiet_gc() -> None:
    """Keep the cyclic garbage collector from stalling the Trio loop past the lease.

    Called once the Mirror's first load is done, before this master takes any
    lease (presence, election). At 100k epochs the Mirror and the state model
    hold millions of long-lived objects, and with the default thresholds a
    full (generation 2) collection walks them all, taking hundreds of
    milliseconds during which no Python thread runs, the lease keepalive threads included
    (every lease TTL / 8): a healthy leader would then lose its 1 s lease. ``gc.freeze()``
    moves everything alive now (start-up state, the loaded Mirror) into the
    permanent generation, which collections never scan; ``pace_gc`` then
    does the same for state built later, and the higher thresholds only back
    it up. Objects are still freed by reference counting as usual.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def pace_gc(interval_s: float = GC_PACE_S) -> None:
    """Every ``interval_s``: collect the young generations, then freeze what survived (until cancelled).

    CPython starts a young collection when allocations *minus deallocations*
    pass the threshold. A master mostly replaces state (every transition
    writes a new epoch record and frees the old one), so that count grows
    slowly while the young generation fills with new long-lived records, and
    each triggered collection walks all of them. On a clock, each collection
    walks only what a quarter second allocated, and
    what survives it is long-lived state: frozen (``gc.freeze`` is a
    constant-time splice), it is never walked again, so neither young nor
    full collections grow with the cluster.

    The price of freezing early: a reference cycle still alive at a freeze
    and dead later is never reclaimed. The master's per-request paths make
    no cycles (``leibrix.wire._grpc.call_trio`` breaks trio-asyncio's), so what
    can leak that way is per connection or per term (a worker session, a
    term's tasks), not per request: kilobytes per reconnect.
    """
    while True:
        await trio.sleep(interval_s)
        gc.collect(1)
        gc.freeze()
