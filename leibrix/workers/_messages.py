"""What the hub puts on a worker stream: already-serialized frames, ``common_ack`` commands, quoted input.

Client-supplied strings are quoted in status messages and acks only through
:func:`clip`, so a worker that sends a megabyte-long id gets a short answer
(a gRPC status message travels in an HTTP/2 header, percent-encoded).
"""

from __future__ import annotations

import uuid
from typing import Any

from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = ["CLIP_CHARS", "MAX_STATUS_MESSAGE_CHARS", "Frame", "clip", "common_ack"]

#: Characters of a client-supplied string quoted in a message.
CLIP_CHARS = 128
#: Longest status message (and rejection reason) the hub sends, whatever its source.
MAX_STATUS_MESSAGE_CHARS = 1024


class Frame(bytes):
    """An already-serialized message: grpclib's protobuf codec passes it through untouched."""

    def SerializeToString(self) -> bytes:  # noqa: N802 - grpclib's codec protocol
        return bytes(self)

    @classmethod
    def FromString(cls, data: bytes) -> Frame:  # noqa: N802
        return cls(data)


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """``text`` if at most ``limit`` characters, else its first ``limit`` and a ``…(N chars)`` marker."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}…({len(text)} chars)"


def common_ack(server_id: str, worker_id: str, event_type: str, payload: dict[str, Any], *,
               tenant: str = "") -> pb.EventStreamMessage:
    """A ``common_ack`` command (``registration_ack``, ``evict_epoch``, ``drain_command``...)."""
    msg = pb.EventStreamMessage(event_id=uuid.uuid4().hex, worker_id=worker_id, tenant_id=tenant)
    msg.common_ack.server_id = server_id
    msg.common_ack.event_type = event_type
    msg.common_ack.payload.update(payload)
    return msg
