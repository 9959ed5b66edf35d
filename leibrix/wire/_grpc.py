"""How the master's gRPC contract is addressed and crossed into Trio: paths, metadata keys, the bridge.

grpclib is asyncio-only; the master and the reference worker run on Trio
through trio-asyncio. :func:`call_trio` is the one crossing from asyncio code
into a Trio function. The constants are the one home of the wire facts that
are not in the ``.proto`` files.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["CONTROL_PLANE_ALIASES", "COORDINATE_WORKER", "COORDINATE_WORKER_RUST", "LEADER_METADATA", "call_trio"]

T = TypeVar("T")

#: Trailing metadata key naming the leader's gRPC address on a follower's UNAVAILABLE.
LEADER_METADATA = "leibrix-leader"

#: The worker stream: our path (= the upstream Go master's package ``leibrix_cp``)...
COORDINATE_WORKER = "/leibrix_cp.ControlPlaneService/CoordinateWorker"
#: ...and the path the Rust leibrix-worker dials (its proto package is ``control_plane``).
COORDINATE_WORKER_RUST = "/control_plane.ControlPlaneService/CoordinateWorker"

#: Paths served a second time under another name: path -> alias.
CONTROL_PLANE_ALIASES = {COORDINATE_WORKER: COORDINATE_WORKER_RUST}


async def call_trio(fn: Callable[..., Awaitable[T]], *args: Any) -> T:
    """From asyncio code under trio-asyncio, run the Trio function ``fn(*args)`` as a Trio task and return
    its result (cancelling the caller cancels the task), leaving no garbage cycle behind.

    ``trio_asyncio.trio_as_aio`` replaces its Future's ``cancel`` with a closure
    over the task's handle, and the handle holds the Future and ``args``: a
    reference cycle, so every crossing would leave the request it carried for
    the cyclic garbage collector (and keep it forever once ``gc.freeze`` has
    moved it to the permanent generation). Removing
    the replacement once the Future is done breaks the cycle, and reference
    counting frees everything at once.
    """
    fut = asyncio.get_running_loop().trio_as_future(fn, *args)
    try:
        return await fut
    finally:
        try:
            del fut.cancel  # the instance attribute; ``Future.cancel`` itself stays
        except AttributeError:
            pass
