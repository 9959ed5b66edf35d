"""Client-facing errors: one exception type per gRPC status a caller can act on.

Domain code raises these; the gRPC layer turns each into a ``GRPCError`` with the
same status and message (see ``leibrix.api._server``). A client mistake must never
surface as ``INTERNAL``: anything that is the caller's fault is one of these.

A message often quotes what the client sent (an id, a filter key), and the
message travels back as the ``grpc-message`` trailer, whose HTTP/2 encoding
costs time that grows faster than its length. So every message is cut to
:data:`MAX_MESSAGE_CHARS` here, when the error is constructed, with a marker
saying how much was left out: no code path can send a client's megabyte back.
"""

from __future__ import annotations

from grpclib.const import Status

#: Longest status message sent to a client; longer ones are cut with a marker.
MAX_MESSAGE_CHARS = 1024


def bounded(message: str, limit: int = MAX_MESSAGE_CHARS) -> str:
    """``message`` if it has at most ``limit`` characters, else its start and a ``[... N more characters]`` marker."""
    if len(message) <= limit:
        return message
    head = message[: limit - 40]
    return f"{head}[... {len(message) - len(head)} more characters]"


class ApiError(Exception):
    """Base class: an error with a gRPC ``status`` and a human ``message``."""

    status: Status = Status.UNKNOWN

    def __init__(self, message: str) -> None:
        message = bounded(message)
        super().__init__(message)
        self.message = message


class InvalidArgument(ApiError):
    """The request is malformed; ``field`` names the offending field (dotted path)."""

    status = Status.INVALID_ARGUMENT

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = bounded(field, 256)


class NotFound(ApiError):
    """The named tenant, dataset, epoch or worker does not exist."""

    status = Status.NOT_FOUND


class AlreadyExists(ApiError):
    """The object exists and the request may not replace it."""

    status = Status.ALREADY_EXISTS


class ResourceExhausted(ApiError):
    """A quota or the cluster's capacity is short; the message carries the numbers."""

    status = Status.RESOURCE_EXHAUSTED


class FailedPrecondition(ApiError):
    """The request is valid but the system is not in a state that allows it."""

    status = Status.FAILED_PRECONDITION


class PermissionDenied(ApiError):
    """The caller may not do this (for example a tenant touching another's data)."""

    status = Status.PERMISSION_DENIED


class Unavailable(ApiError):
    """Retry elsewhere or later: not the leader (``leader`` is its gRPC address), or etcd is unreachable."""

    status = Status.UNAVAILABLE

    def __init__(self, message: str, *, leader: str = "") -> None:
        super().__init__(message)
        self.leader = leader
