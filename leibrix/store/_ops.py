"""What goes over the wire to etcd, as plain values: keys, ops, compares, results and errors.

Callers never see protobuf or library objects: :class:`KeyValue`, :class:`Put`,
:class:`Delete`, :class:`Compare`, :class:`TxnResult` ... are frozen
dataclasses, converted to etcd's messages here (``_op_msg``,
``_compare_msg``), and :func:`op_size` bounds what each adds to a request so
a writer can size its transactions before sending them.

Failures are four exceptions callers can act on: :class:`EtcdUnavailable`
(no answer: retry later or elsewhere), :class:`EtcdRefused` (etcd answered
"no" to this request: too many ops, too large, quota full), :class:`LeaseLost`
(the lease is gone: whatever it guarded is over) and :class:`Compacted`
(the watch start revision is history: re-list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import etcd3.etcdrpc as rpc
import etcd3.utils

__all__ = [
    "Compacted",
    "Compare",
    "Delete",
    "EtcdError",
    "EtcdRefused",
    "EtcdUnavailable",
    "KeyValue",
    "LeaseLost",
    "Member",
    "Put",
    "ServerStatus",
    "TxnResult",
    "WatchEvent",
    "op_size",
    "prefix_end",
]


class EtcdError(Exception):
    """Base class of every error this module raises."""


class EtcdUnavailable(EtcdError):
    """etcd did not answer: connection refused, deadline passed or no quorum.

    The operation may or may not have been applied (a write that timed out can
    still commit); callers that must know re-read, and fenced writers rely on
    their compare to make a retry safe.
    """


class EtcdRefused(EtcdError):
    """etcd answered and refused this one request; the request's error, nothing more.

    ``code`` is the gRPC status name and ``details`` etcd's message, e.g.
    ``RESOURCE_EXHAUSTED: etcdserver: mvcc: database space exceeded``.
    ``reason`` classifies the refusals a writer can cause by the size of what
    it writes: ``"too_many_ops"`` (over ``--max-txn-ops``),
    ``"request_too_large"`` (over ``--max-request-bytes``, or over the gRPC
    message limit etcd derives from it), ``"no_space"`` (the backend quota is
    full and etcd raised its NOSPACE alarm), or ``"other"``. Nothing of a
    refused request was applied, and sending it again fails the same way.
    """

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details
        self.reason = _refusal_reason(code, details)

    @property
    def exhausted(self) -> bool:
        """True when a limit or the quota refused the request (an API answers RESOURCE_EXHAUSTED)."""
        return self.reason != "other"


def _refusal_reason(code: str, details: str) -> str:
    text = details.lower()
    if "too many operations" in text:
        return "too_many_ops"
    if "request is too large" in text or (code == "RESOURCE_EXHAUSTED" and "larger than max" in text):
        return "request_too_large"
    if "space exceeded" in text or "nospace" in text:
        return "no_space"
    return "other"


class LeaseLost(EtcdError):
    """The lease no longer exists (expired or revoked): keys attached to it are gone."""


class Compacted(EtcdError):
    """A watch asked for history etcd has compacted away; re-list, then watch again.

    ``compact_revision`` is the oldest revision still available.
    """

    def __init__(self, compact_revision: int) -> None:
        super().__init__(f"revision compacted; oldest available is {compact_revision}")
        self.compact_revision = compact_revision


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key as etcd stores it, with the revisions that make fencing and dedup possible.

    ``create_revision`` is the revision that created this incarnation of the key
    (a deleted and re-created key gets a new one: that is why it is a fencing
    token); ``mod_revision`` the revision of the last write, ``version`` the
    number of writes since creation and ``lease`` the attached lease id (0: none).
    """

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True, slots=True)
class Put:
    """Write ``value`` at ``key`` inside a transaction, optionally attached to a lease."""

    key: str
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    """Delete ``key`` inside a transaction; with ``prefix=True`` every key starting with it."""

    key: str
    prefix: bool = False


@dataclass(frozen=True, slots=True)
class Compare:
    """One guard of a transaction: ``target(key) op value``.

    ``target`` is ``"create"``/``"mod"``/``"version"`` (compared with an int; a
    missing key has all three equal to 0) or ``"value"`` (compared with bytes).
    ``Compare(k, "create", "==", token)`` is the fencing compare.
    """

    key: str
    target: Literal["create", "mod", "version", "value"]
    op: Literal["==", "!=", "<", ">"]
    value: int | bytes

    def __post_init__(self) -> None:
        if self.target not in _TARGETS:
            raise ValueError(f"Compare.target must be one of {sorted(_TARGETS)}, got {self.target!r}")
        if self.op not in _OPS:
            raise ValueError(f"Compare.op must be one of {sorted(_OPS)}, got {self.op!r}")
        want: type = bytes if self.target == "value" else int
        if not isinstance(self.value, want) or isinstance(self.value, bool):
            raise ValueError(
                f"Compare.value for target {self.target!r} must be {want.__name__}, "
                f"got {type(self.value).__name__}"
            )


_TARGETS = {
    "create": rpc.Compare.CREATE,
    "mod": rpc.Compare.MOD,
    "version": rpc.Compare.VERSION,
    "value": rpc.Compare.VALUE,
}
_OPS = {
    "==": rpc.Compare.EQUAL,
    "!=": rpc.Compare.NOT_EQUAL,
    "<": rpc.Compare.LESS,
    ">": rpc.Compare.GREATER,
}


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Outcome of a transaction: whether every compare held, and the store revision after it.

    When ``succeeded`` the revision is the one the success ops were written at
    (if they wrote anything), which lets a writer apply its own change locally
    and recognise the echo on the watch.
    """

    succeeded: bool
    revision: int


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """A change seen by a watch: the key's new state (``put``) or its tombstone (``delete``).

    For a delete only ``kv.key`` and ``kv.mod_revision`` (the deleting revision)
    are meaningful.
    """

    kind: Literal["put", "delete"]
    kv: KeyValue


@dataclass(frozen=True, slots=True)
class Member:
    """An etcd cluster member as ``MemberList`` reports it (ids are etcd's uint64)."""

    id: int
    name: str
    peer_urls: tuple[str, ...]
    client_urls: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServerStatus:
    """Health facts of the member the client is talking to (``Maintenance.Status``)."""

    version: str
    member_id: int
    leader_id: int
    raft_term: int
    db_size: int


def prefix_end(prefix: str) -> bytes:
    """The exclusive end of the key range holding every key that starts with ``prefix``."""
    return etcd3.utils.prefix_range_end(prefix.encode())


def _kv(raw: Any) -> KeyValue:
    return KeyValue(
        raw.key.decode(),
        raw.value,
        raw.create_revision,
        raw.mod_revision,
        raw.version,
        raw.lease,
    )


def _compare_msg(c: Compare) -> Any:
    msg = rpc.Compare(key=c.key.encode(), target=_TARGETS[c.target], result=_OPS[c.op])
    if c.target == "create":
        msg.create_revision = c.value
    elif c.target == "mod":
        msg.mod_revision = c.value
    elif c.target == "version":
        msg.version = c.value
    else:
        msg.value = c.value
    return msg


def _op_msg(op: Put | Delete) -> Any:
    if isinstance(op, Put):
        if not isinstance(op.value, bytes):
            raise ValueError(f"Put.value for {op.key!r} must be bytes, got {type(op.value).__name__}")
        return rpc.RequestOp(request_put=rpc.PutRequest(key=op.key.encode(), value=op.value, lease=op.lease))
    if isinstance(op, Delete):
        req = rpc.DeleteRangeRequest(key=op.key.encode())
        if op.prefix:
            req.range_end = prefix_end(op.key)
        return rpc.RequestOp(request_delete_range=req)
    raise TypeError(f"transaction ops must be Put or Delete, got {type(op).__name__}")


#: Upper bound of the protobuf framing around one op or compare inside a
#: ``TxnRequest`` (field tags, length prefixes, lease or revision varints, the
#: ``RequestOp`` wrapper): what :func:`op_size` adds to the key and value bytes.
_FRAMING = 40


def op_size(op: Put | Delete | Compare) -> int:
    """An upper bound of the bytes ``op`` adds to a transaction request (etcd's ``--max-request-bytes``)."""
    if isinstance(op, Put):
        return _FRAMING + len(op.key) + len(op.value)
    if isinstance(op, Delete):
        # A prefix delete carries the range end, as long as the key.
        return _FRAMING + len(op.key) * (2 if op.prefix else 1)
    value = op.value if isinstance(op.value, bytes) else b""
    return _FRAMING + len(op.key) + len(value)
