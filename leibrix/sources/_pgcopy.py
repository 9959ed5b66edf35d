"""PostgreSQL's fast path for SQL epochs: ``COPY (query) TO STDOUT`` parsed by Arrow's CSV reader.

Fetching rows through a DB-API cursor builds one Python tuple per row and one
Python object per value before they become Arrow arrays; at a few hundred
thousand rows a second that, not the database, is the cost of a load. For
PostgreSQL the worker asks the server for the rows as CSV instead
(``COPY (<query, parameters bound>) TO STDOUT (FORMAT csv)``) and parses the
stream with ``pyarrow.csv.open_csv`` straight into the planned Arrow types:
no per-value Python objects, parsing in C++ across threads, and memory
bounded by the reader's block size (the stream is consumed as it arrives).

The parameters are bound client-side by psycopg (``ClientCursor.mogrify``:
its own quoting of each value), since ``COPY`` takes no bind parameters.
The session runs with ``TimeZone = UTC`` and ISO dates so the text is
unambiguous. CSV conventions of PostgreSQL: a NULL is an unquoted empty
field, an empty string a quoted one; booleans are ``t``/``f``; ``NaN`` and
``Infinity`` are floats, not nulls.

Only schemas whose every column has a faithful CSV text form take this path
(:func:`supports`): integers, floats, booleans, strings, dates, timestamps and
decimals. Anything else (bytea, intervals, arrays, json as non-text, ...) is
read through the generic cursor path of :mod:`leibrix.sources._readers`.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

import pyarrow as pa

__all__ = ["copy_batches", "supports"]

#: Bytes of CSV per Arrow batch (the reader's block size).
BLOCK_BYTES = 4 << 20


def supports(schema: pa.Schema | None) -> bool:
    """Whether every column of ``schema`` can be read from PostgreSQL's CSV text exactly."""
    if schema is None:
        return False
    t = pa.types
    return all(t.is_integer(f.type) or t.is_floating(f.type) or t.is_boolean(f.type) or t.is_string(f.type)
               or t.is_date32(f.type) or t.is_timestamp(f.type) or t.is_decimal(f.type) for f in schema)


class _CopyStream(io.RawIOBase):
    """The chunks of a psycopg ``Copy`` (one row each, as libpq hands them over) as a readable binary stream.

    ``read(n)`` joins as many chunks as it takes to fill ``n`` bytes, so Arrow's
    reader pulls whole blocks, not rows.
    """

    def __init__(self, copy) -> None:
        self._chunks = iter(copy)
        # copied into one bytearray at once: keeping psycopg's memoryviews alive (a list to join) costs 3x more
        self._buffer = bytearray()

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        buf = self._buffer
        while size < 0 or len(buf) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            buf += chunk
        n = len(buf) if size < 0 else min(size, len(buf))
        data = bytes(buf[:n])
        del buf[:n]
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def copy_batches(conn, query: str, params: dict, schema: pa.Schema) -> Iterator[pa.RecordBatch]:
    """The rows of ``query`` (``:name`` placeholders bound to ``params``) as batches of ``schema``.

    ``conn`` is a SQLAlchemy connection on the ``postgresql+psycopg`` dialect;
    errors are the driver's or Arrow's own (the caller redacts them).
    """
    import psycopg
    import pyarrow.csv as csv
    import sqlalchemy as sa

    compiled = sa.text(query).compile(dialect=conn.dialect)
    bound = compiled.construct_params(params)
    raw = conn.connection.dbapi_connection
    with raw.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute("SET DateStyle = 'ISO, YMD'")
    sql = psycopg.ClientCursor(raw).mogrify(str(compiled), bound)
    strings = any(pa.types.is_string(f.type) for f in schema)
    read = csv.ReadOptions(column_names=schema.names, block_size=BLOCK_BYTES)
    parse = csv.ParseOptions(newlines_in_values=strings)
    convert = csv.ConvertOptions(column_types=schema, null_values=[""], strings_can_be_null=True,
                                 quoted_strings_can_be_null=False, true_values=["t"], false_values=["f"])
    with raw.cursor() as cur, cur.copy(f"COPY ({sql}) TO STDOUT (FORMAT csv)") as copy:
        reader = csv.open_csv(_CopyStream(copy), read_options=read, parse_options=parse, convert_options=convert)
        for batch in reader:
            yield pa.RecordBatch.from_arrays(batch.columns, schema=schema)
