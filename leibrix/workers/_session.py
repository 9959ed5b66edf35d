"""What the membership asks of one worker's live stream: the :class:`Session` a ``Member`` holds.

Implemented by each gRPC stream's session (``_stream``); named by the member
records (``_member``), the membership (``_membership``) and the
:class:`~leibrix.workers._protocols.Registry` seam.
"""

from __future__ import annotations

from typing import Protocol

from grpclib.const import Status

__all__ = ["Session"]


class Session(Protocol):
    """What the membership asks of one worker's live stream (called on the event-loop thread)."""

    #: the worker's address as the connection sees it, for messages
    peer: str

    def offer(self, frame: bytes) -> bool:
        """Queue a serialized message without waiting; False if the session is closing (a full queue closes it)."""
        ...

    def close(self, status: Status, message: str, *, leader: str = "") -> None:
        """End the stream with ``status`` (``leader``: the address for ``leibrix-leader``)."""
        ...
