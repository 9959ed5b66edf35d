"""Request decoding for the gRPC server: bytes that do not parse are the caller's mistake.

grpclib decodes each request with the server's codec inside the handler, and
the generated code parses with betterproto's Rust codec, which says only "the
given binary data does not match the protobuf schema". Left alone, that is an
``UNKNOWN "Internal Server Error"`` and a traceback per request. The
:class:`RequestCodec` here turns it into ``INVALID_ARGUMENT`` naming the field
(one debug log line, no traceback).

Before parsing, it bounds the work a request can cost the event loop (the
parser runs on it), answering ``RESOURCE_EXHAUSTED`` with the sizes:

* **bytes.** A ManagementService request may be at most
  :data:`MAX_MANAGEMENT_REQUEST_BYTES` (2 MiB). The largest legitimate one is
  an ``AdmitDataset`` at the bounds of :mod:`leibrix.domain._validation` and
  the default epoch cap (10,000 epochs per request): 16 dimension columns with
  1,000, 10 and fourteen times 1 values of 256 four-byte characters, every
  other string at its bound, is 1,073,050 bytes (1.02 MiB). Other messages the
  server decodes (the worker stream's frames, Health, Reflection) keep gRPC's
  usual :data:`MAX_REQUEST_BYTES` (4 MiB); the worker stream applies its own
  ``max_message_bytes`` on top.
* **fields and messages.** Parsing costs little per byte but much per field,
  and most per embedded message: betterproto builds a Python object for each
  occurrence of a message field, about 20 µs apiece, so 10 KB of empty
  sub-messages alone would stall the loop for 0.1 s. :func:`check_decode_work`
  counts a ManagementService request's fields and embedded messages on the
  wire (skipping string payloads by their length prefix) and refuses one over
  :data:`MAX_REQUEST_FIELDS` fields or :data:`MAX_REQUEST_MESSAGES` embedded
  messages. The bounds allow a legitimate request at most 16,000 strings in
  its largest repeated field (16 columns of 1,000 values) and a few dozen
  messages, well under both. The count stops at the first malformed byte and
  leaves that request to the parser and its diagnosis.

To name the field, :func:`describe_decode_error` walks the wire format
against the message's betterproto metadata, only after a parse has failed:
truncated data, a wire type the field cannot have, a string that is not UTF-8,
or a ``google.protobuf.Timestamp`` outside 0001-01-01 .. 9999-12-31 or with
nanos outside ``[0, 1e9)`` — the cases the parser rejects — each named by its
dotted path (``source.partition.time_partition.filter.start_inclusive``).
The walk is pure Python on the event loop, so it looks at no more than
:data:`MAX_DIAGNOSED_FIELDS` fields: a hostile request of millions of tiny
fields gets the generic answer instead of a multi-second stall.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import betterproto
from grpclib.const import Status
from grpclib.encoding.proto import ProtoCodec
from grpclib.exceptions import GRPCError

from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["MAX_MANAGEMENT_REQUEST_BYTES", "MAX_REQUEST_BYTES", "MAX_REQUEST_FIELDS", "MAX_REQUEST_MESSAGES",
           "RequestCodec", "check_decode_work", "describe_decode_error"]

log = logging.getLogger(__name__)

#: Largest message accepted (bytes) of a type that is not a ManagementService request, as gRPC servers accept.
MAX_REQUEST_BYTES = 4 << 20

#: Largest ManagementService request accepted (bytes): about twice the largest legitimate ``AdmitDataset``.
MAX_MANAGEMENT_REQUEST_BYTES = 2 << 20

#: Most fields (at any depth, each repeated entry counted) a ManagementService request may carry.
MAX_REQUEST_FIELDS = 20_000

#: Most embedded messages (map entries excluded) a ManagementService request may carry.
MAX_REQUEST_MESSAGES = 1_000

#: The request types of the ManagementService (the ones the byte and work limits above apply to).
MANAGEMENT_REQUEST_TYPES = frozenset(h.request_type for h in cp.ManagementServiceBase().__mapping__().values())

#: Fields the diagnosis of an undecodable request looks at before it gives up naming one.
MAX_DIAGNOSED_FIELDS = 10_000

#: Seconds of 0001-01-01T00:00:00Z and of 10000-01-01T00:00:00Z, the Timestamp range.
_MIN_SECONDS, _END_SECONDS = -62_135_596_800, 253_402_300_800

_WIRE_TYPE = {
    **dict.fromkeys(("int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool", "enum"), 0),
    **dict.fromkeys(("fixed64", "sfixed64", "double"), 1),
    **dict.fromkeys(("string", "bytes", "message", "map"), 2),
    **dict.fromkeys(("fixed32", "sfixed32", "float"), 5),
}


class _Bad(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path or 'request'}: {problem}")


class _TooLong(Exception):
    """The diagnosis ran out of its field budget."""


class _Budget:
    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left = MAX_DIAGNOSED_FIELDS


def _varint(data: bytes, i: int, path: str) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(data):
            raise _Bad(path, "truncated (a varint runs past the end)")
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift >= 70:
            raise _Bad(path, "malformed varint (more than 10 bytes)")
    if result >> 64:
        raise _Bad(path, "malformed varint (more than 64 bits)")
    return result, i


def _signed(value: int, bits: int) -> int:
    value &= (1 << bits) - 1
    return value - (1 << bits) if value >> (bits - 1) else value


def _fields(data: bytes, path: str, budget: _Budget):
    """Yield ``(number, wire_type, value)`` for each field of one message's bytes."""
    i = 0
    while i < len(data):
        budget.left -= 1
        if budget.left < 0:
            raise _TooLong
        tag, i = _varint(data, i, path)
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Bad(path, "field number 0")
        if wire == 0:
            value, i = _varint(data, i, path)
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if i + size > len(data):
                raise _Bad(path, "truncated (a fixed-size field runs past the end)")
            value, i = data[i:i + size], i + size
        elif wire == 2:
            length, i = _varint(data, i, path)
            if i + length > len(data):
                raise _Bad(path, f"truncated (field {number} claims {length} bytes, {len(data) - i} left)")
            value, i = data[i:i + length], i + length
        else:
            raise _Bad(path, f"field {number} has wire type {wire} (groups are not supported)")
        yield number, wire, value


def _timestamp(data: bytes, path: str, budget: _Budget) -> None:
    seconds = nanos = 0
    for number, wire, value in _fields(data, path, budget):
        if number in (1, 2) and wire != 0:
            raise _Bad(path, f"Timestamp field {number} has wire type {wire}, expected 0")
        if number == 1:
            seconds = _signed(value, 64)
        elif number == 2:
            nanos = _signed(value, 64)
    if not _MIN_SECONDS <= seconds < _END_SECONDS:
        raise _Bad(path, f"Timestamp seconds {seconds} is outside 0001-01-01 .. 9999-12-31")
    if not 0 <= nanos < 1_000_000_000:
        raise _Bad(path, f"Timestamp nanos {nanos} is outside [0, 999999999]")


def _walk(cls: type[betterproto.Message], data: bytes, prefix: str, budget: _Budget) -> None:
    meta = cls._betterproto
    where = prefix.rstrip(".")
    for number, wire, value in _fields(data, where, budget):
        name = meta.field_name_by_number.get(number)
        if name is None:
            continue  # unknown fields are skipped, as the parser does
        path = prefix + name
        field = meta.meta_by_field_name[name]
        expected = _WIRE_TYPE.get(field.proto_type)
        if expected is not None and wire != expected and not (wire == 2 and expected != 2):  # packed repeated
            raise _Bad(path, f"has wire type {wire}, expected {expected} for a {field.proto_type}")
        if field.proto_type == "string" and wire == 2:
            try:
                value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _Bad(path, f"is not valid UTF-8 (byte {exc.start})") from None
        elif field.proto_type in ("message", "map"):
            sub = meta.cls_by_field[name]
            if sub is datetime:
                _timestamp(value, path, budget)
            elif isinstance(sub, type) and issubclass(sub, betterproto.Message):
                _walk(sub, value, path + ".", budget)


def describe_decode_error(cls: type[betterproto.Message], data: bytes) -> str:
    """Why ``data`` is not a ``cls``: ``"<dotted field path>: <problem>"`` where the walk can tell."""
    try:
        _walk(cls, data, "", _Budget())
    except _Bad as bad:
        return str(bad)
    except _TooLong:
        pass
    return f"request does not parse as {cls.__name__}"


class _Work:
    __slots__ = ("fields", "messages")

    def __init__(self) -> None:
        self.fields = self.messages = 0


class _TooMuch(Exception):
    """A request over the field or message budget."""


def _count(cls: type[betterproto.Message], data: bytes, work: _Work) -> None:
    meta = cls._betterproto
    i, end = 0, len(data)
    while i < end:
        work.fields += 1
        if work.fields > MAX_REQUEST_FIELDS:
            raise _TooMuch(f"more than {MAX_REQUEST_FIELDS} fields")
        tag, i = _varint(data, i, "")
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            _, i = _varint(data, i, "")
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        elif wire == 2:
            length, i = _varint(data, i, "")
            name = meta.field_name_by_number.get(number)
            if name is not None and meta.meta_by_field_name[name].proto_type == "message":
                work.messages += 1
                if work.messages > MAX_REQUEST_MESSAGES:
                    raise _TooMuch(f"more than {MAX_REQUEST_MESSAGES} embedded messages")
                sub = meta.cls_by_field[name]
                if isinstance(sub, type) and issubclass(sub, betterproto.Message):
                    _count(sub, data[i:i + length], work)
            i += length
        else:
            return  # malformed: the parser refuses it
        if i > end:
            return


def check_decode_work(cls: type[betterproto.Message], data: bytes) -> str | None:
    """Why parsing ``data`` as a ``cls`` would cost too much, or None when it is within the budgets.

    Walks the wire format against ``cls``'s schema, counting every field (a
    repeated or map entry each) and every embedded message at any depth;
    a payload that is not a message is skipped by its length. Stops quietly at
    malformed bytes (the parser then refuses them) and at the first budget
    passed, so the walk itself looks at no more than
    :data:`MAX_REQUEST_FIELDS` fields.
    """
    work = _Work()
    try:
        _count(cls, data, work)
    except _TooMuch as too_much:
        return f"request of {len(data)} bytes has {too_much}, the limit for a {cls.__name__}"
    except _Bad:
        pass
    return None


class RequestCodec(ProtoCodec):
    """grpclib's protobuf codec, answering undecodable or oversized requests with a precise status."""

    def decode(self, data: bytes, message_type: Any) -> Any:
        management = message_type in MANAGEMENT_REQUEST_TYPES
        limit = MAX_MANAGEMENT_REQUEST_BYTES if management else MAX_REQUEST_BYTES
        if len(data) > limit:
            log.debug("%s of %d bytes refused (limit %d)", message_type.__name__, len(data), limit)
            raise GRPCError(Status.RESOURCE_EXHAUSTED,
                            f"request of {len(data)} bytes is larger than the {limit}-byte limit")
        if management:
            too_much = check_decode_work(message_type, data)
            if too_much is not None:
                log.debug("%s refused: %s", message_type.__name__, too_much)
                raise GRPCError(Status.RESOURCE_EXHAUSTED, too_much)
        try:
            return message_type.FromString(data)
        except Exception:
            problem = (describe_decode_error(message_type, data)
                       if issubclass(message_type, betterproto.Message)
                       else f"request does not parse as {message_type.__name__}")
            log.debug("undecodable %s (%d bytes): %s", message_type.__name__, len(data), problem)
            raise GRPCError(Status.INVALID_ARGUMENT, problem) from None
