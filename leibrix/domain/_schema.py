"""What a table's schema is: canonical text, fingerprint and IPC bytes of an Arrow schema, and the
synthetic source's table shape.

A load is only valid if the worker built the table the master planned, so
"schema" must mean the same thing on both sides. This module is its one
definition, used by the master (admission, plan validation) and by the
reference worker (checking its DuckDB table against the plan):

**Canonical text** (``canonical``) lists the columns in order, each as
``"<name>": <Arrow type>``, joined by ``", "``, e.g.
``"id": int64, "ts": timestamp[us], "key": string, "value": double``. Names
are JSON-quoted (so a name containing ``", "`` or ``:`` cannot make two
schemas print alike); types use Arrow C++'s spellings and include everything
that changes the data: unit, timezone (``timestamp[us, tz="UTC"]``),
precision and scale, byte widths, string/large_string/string_view, list,
struct and map children, dictionary value and index types, extension names.
Types are read from the Arrow C data interface *format strings*, which the
Arrow spec fixes, so the text does not depend on a library's ``repr``.
**Not** part of it: nullability (DuckDB reports every column nullable, a
catalog may declare NOT NULL: same data either way), field and schema
metadata other than the extension name, and the top-level struct's name.

**Fingerprint** (``fingerprint``): the first 16 hex digits (64 bits) of the
sha256 of the canonical text — short enough for status messages and logs,
and stable across processes, versions and languages because the text is.

**IPC bytes** (``to_ipc``/``from_ipc``): ``LoadPlan.arrow_schema`` and
``DatasetRecord.arrow_schema`` hold an Arrow IPC *stream* with the schema
message, no record batches, and the end-of-stream marker — what arrow-rs's
``StreamWriter::try_new(..).finish()`` writes and its ``StreamReader``
(the upstream Rust worker's decoder) reads.

**The synthetic source** (``synthetic``): until real source connectors
exist, workers generate deterministic rows for an epoch. Their table is
``id BIGINT, <time column> TIMESTAMP (us), key VARCHAR, value DOUBLE``, then
one ``VARCHAR`` per dimension column in sorted name order. The master plans
with this shape and the loader builds its ``CREATE TABLE`` from it, so the
two cannot drift.

nanoarrow is used rather than pyarrow: about 5 MiB of resident memory instead
of about 36, and DuckDB relations export ``__arrow_c_stream__``, so
``nanoarrow.ArrayStream(relation).schema`` reads a table's real schema.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections.abc import Iterable
from dataclasses import dataclass

import nanoarrow as na
from nanoarrow.c_array_stream import CArrayStream
from nanoarrow.c_schema import CSchema, c_schema
from nanoarrow.ipc import StreamWriter

__all__ = [
    "DEFAULT_TIME_COLUMN",
    "Column",
    "ColumnConflict",
    "TableSchema",
    "canonical",
    "fingerprint",
    "from_ipc",
    "known",
    "synthetic",
    "to_ipc",
]

#: The synthetic table's time column when a plan names none.
DEFAULT_TIME_COLUMN = "ts"

#: Arrow C format strings of the types that take no parameters, with Arrow C++'s names.
_PLAIN = {
    "n": "null", "b": "bool", "c": "int8", "C": "uint8", "s": "int16", "S": "uint16", "i": "int32",
    "I": "uint32", "l": "int64", "L": "uint64", "e": "halffloat", "f": "float", "g": "double",
    "z": "binary", "Z": "large_binary", "vz": "binary_view", "u": "string", "U": "large_string",
    "vu": "string_view", "tdD": "date32[day]", "tdm": "date64[ms]", "tts": "time32[s]", "ttm": "time32[ms]",
    "ttu": "time64[us]", "ttn": "time64[ns]", "tDs": "duration[s]", "tDm": "duration[ms]",
    "tDu": "duration[us]", "tDn": "duration[ns]", "tiM": "month_interval", "tiD": "day_time_interval",
    "tin": "month_day_nano_interval",
}
_UNITS = {"s": "s", "m": "ms", "u": "us", "n": "ns"}
_LISTS = {"+l": "list", "+L": "large_list"}
_EXTENSION_KEY = b"ARROW:extension:name"


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def _field(c: CSchema) -> str:
    return f"{_quote(c.name or '')}: {_type(c)}"


def _type(c: CSchema) -> str:
    fmt = c.format
    if c.dictionary is not None:
        text = f"dictionary<values={_type(c.dictionary)}, indices={_PLAIN.get(fmt, _quote(fmt))}>"
    elif fmt in _PLAIN:
        text = _PLAIN[fmt]
    elif fmt.startswith("ts") and len(fmt) >= 4:  # tsu:<timezone>
        unit, tz = _UNITS.get(fmt[2], fmt[2]), fmt[4:]
        text = f"timestamp[{unit}, tz={_quote(tz)}]" if tz else f"timestamp[{unit}]"
    elif fmt.startswith("d:"):  # d:precision,scale[,bit width]
        precision, scale, *width = fmt[2:].split(",")
        text = f"decimal{width[0] if width else 128}({precision}, {scale})"
    elif fmt.startswith("w:"):
        text = f"fixed_size_binary[{fmt[2:]}]"
    elif fmt in _LISTS:
        text = f"{_LISTS[fmt]}<{_type(c.child(0))}>"
    elif fmt.startswith("+w:"):
        text = f"fixed_size_list<{_type(c.child(0))}>[{fmt[3:]}]"
    elif fmt == "+s":
        text = f"struct<{', '.join(_field(child) for child in c.children)}>"
    elif fmt == "+m":
        entries = c.child(0)
        text = f"map<{_type(entries.child(0))}, {_type(entries.child(1))}>"
    else:  # unions, run-end encoded, views: the exact format string and the children
        children = ", ".join(_field(child) for child in c.children)
        text = f"{_quote(fmt)}<{children}>" if c.n_children else _quote(fmt)
    metadata = c.metadata
    if metadata is not None and _EXTENSION_KEY in metadata:
        text = f"extension<{_quote(metadata[_EXTENSION_KEY].decode())}, {text}>"
    return text


def canonical(schema: object) -> str:
    """The canonical text of a table schema (see the module docstring for the exact rules).

    Parameters
    ----------
    schema:
        Anything with ``__arrow_c_schema__`` whose type is a struct (one field
        per column): a ``nanoarrow.Schema``, the ``.schema`` of a DuckDB
        relation's Arrow stream, a pyarrow ``Schema``.

    Raises
    ------
    ValueError
        If ``schema`` is not a struct of columns.
    """
    cs = c_schema(schema)
    if cs.format != "+s":
        raise ValueError(f"a table schema is a struct of columns, got Arrow format {cs.format!r}")
    return ", ".join(_field(child) for child in cs.children)


#: fingerprint -> canonical text, for every schema this process fingerprinted (so a master can name
#: the schema behind a fingerprint a worker reports). Bounded: schemas are few, but not trusted to be.
_KNOWN: dict[str, str] = {}
_KNOWN_MAX = 4096


def _fingerprint_text(text: str) -> str:
    fp = hashlib.sha256(text.encode()).hexdigest()[:16]
    if len(_KNOWN) < _KNOWN_MAX:
        _KNOWN.setdefault(fp, text)
    return fp


def fingerprint(schema: object) -> str:
    """A table schema's fingerprint: 16 hex digits of the sha256 of its ``canonical`` text.

    Master and worker both call this one function, so equal fingerprints mean
    equal canonical schemas (up to a 2^-64 collision).
    """
    return _fingerprint_text(canonical(schema))


def known(fp: str) -> str | None:
    """The canonical text behind a fingerprint, if this process has computed it (else None)."""
    return _KNOWN.get(fp)


def to_ipc(schema: object) -> bytes:
    """A schema as an Arrow IPC stream: the schema message, no batches, the end-of-stream marker."""
    out = io.BytesIO()
    writer = StreamWriter.from_writable(out)
    try:
        writer.write_stream(CArrayStream.from_c_arrays([], c_schema(schema), validate=False))
    finally:
        writer.close()  # writes the end-of-stream marker
    return out.getvalue()


def from_ipc(data: bytes) -> na.Schema:
    """The schema at the head of an Arrow IPC stream (``to_ipc``'s output, or any writer's).

    Raises
    ------
    ValueError
        If ``data`` is not an Arrow IPC stream, with nanoarrow's reason.
    """
    try:
        with na.ArrayStream.from_readable(data) as stream:
            return stream.schema
    except RuntimeError as exc:  # nanoarrow's NanoarrowException
        raise ValueError(f"not an Arrow IPC stream with a schema ({len(data)} bytes): {exc}") from None


# ---------------------------------------------------------------- the synthetic source

@dataclass(frozen=True, slots=True)
class Column:
    """One column of a synthetic table.

    ``role`` says which generator fills it (the loader maps roles to SQL
    expressions); ``sql_type`` is the DuckDB type it is cast to, which DuckDB
    exports as ``arrow`` — the test suite checks that correspondence on a real
    DuckDB table.
    """

    name: str
    role: str
    sql_type: str
    arrow: na.Schema


@dataclass(frozen=True, slots=True)
class TableSchema:
    """A table's expected schema in every form the system needs: columns, canonical text,
    fingerprint, and the IPC bytes a LoadPlan carries."""

    columns: tuple[Column, ...]
    text: str
    fingerprint: str
    ipc: bytes


class ColumnConflict(ValueError):
    """Two columns of a synthetic table would have the same name (DuckDB names are case-insensitive).

    ``column`` is always a name from the request (the time column or a
    dimension column), so a caller can point at the request field that
    introduced it; ``taken_by`` is the column it collides with.
    """

    def __init__(self, column: str, taken_by: str) -> None:
        super().__init__(f"column {column!r} collides with the synthetic table's column {taken_by!r} "
                         "(column names are case-insensitive)")
        self.column = column
        self.taken_by = taken_by


#: role -> (DuckDB type, Arrow type) of the synthetic table's columns.
_ROLES = {
    "id": ("BIGINT", na.int64()),
    "time": ("TIMESTAMP", na.timestamp("us")),
    "key": ("VARCHAR", na.string()),
    "value": ("DOUBLE", na.float64()),
    "dimension": ("VARCHAR", na.string()),
}


def synthetic(time_column: str, dimensions: Iterable[str]) -> TableSchema:
    """The synthetic source's table for an epoch: ``id``, the time column, ``key``, ``value``, then
    one VARCHAR per dimension column in sorted order (so the request's order does not matter).

    Cached per (time column, dimension names): admissions and loads of the same
    shape share one object, and the IPC encoding and hashing run once.

    Raises
    ------
    ColumnConflict
        If two column names are equal ignoring case (e.g. a dimension named ``key``).
    """
    return _synthetic(time_column or DEFAULT_TIME_COLUMN, tuple(sorted(dimensions)))


@functools.lru_cache(maxsize=1024)
def _synthetic(time_column: str, dimensions: tuple[str, ...]) -> TableSchema:
    named = [("id", "id"), (time_column, "time"), ("key", "key"), ("value", "value")]
    named += [(d, "dimension") for d in dimensions]
    # fixed names first, then the request's: a conflict always names the request's column
    taken = {"id": "id", "key": "key", "value": "value"}
    for name in (time_column, *dimensions):
        folded = name.lower()
        if folded in taken:
            raise ColumnConflict(name, taken[folded])
        taken[folded] = name
    columns = [Column(name, role, *_ROLES[role]) for name, role in named]
    schema = na.struct({c.name: c.arrow for c in columns})
    text = canonical(schema)
    return TableSchema(tuple(columns), text, _fingerprint_text(text), to_ipc(schema))
