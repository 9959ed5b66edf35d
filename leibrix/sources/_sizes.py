"""The in-memory size model: bytes per row of an Arrow schema, from metadata only.

An epoch's ``memory_bytes`` is ``rows × row_width(schema, string_lengths)``
where a row's width is the sum over columns of:

* fixed-width types (integers, floats, dates, timestamps, times, durations,
  decimals, fixed-size binary): their Arrow byte width (``bit_width / 8``);
  booleans 1/8 byte;
* variable-width types (string, binary and their large/view forms): the
  offset (4 bytes; 8 for ``large_*``; 16 for ``*_view``) plus the average
  value length. The length comes from the source's statistics when it has
  any (Iceberg column bounds and sizes, PostgreSQL's ``pg_stats.avg_width``),
  capped by a declared maximum (``VARCHAR(n)``), else
  :data:`DEFAULT_STRING_BYTES`, a fixed sample-free default;
* anything else (lists, structs, maps): :data:`DEFAULT_NESTED_BYTES`;
* a validity bitmap (1/8 byte) for every nullable column.

No rows are read to size an epoch: the model is what the metadata can say.
``bench.sources`` measures its error against DuckDB holding a loaded epoch.
"""

from __future__ import annotations

from collections.abc import Mapping

import pyarrow as pa

__all__ = ["DEFAULT_NESTED_BYTES", "DEFAULT_STRING_BYTES", "memory_bytes", "row_width"]

#: Average length assumed for a string/binary value when the source has no statistics.
DEFAULT_STRING_BYTES = 16
#: Bytes per row assumed for a nested column (list, struct, map).
DEFAULT_NESTED_BYTES = 32


def _column_width(t: pa.DataType, avg_len: float | None) -> float:
    if pa.types.is_boolean(t):
        return 0.125
    if pa.types.is_string(t) or pa.types.is_binary(t):
        return 4 + (avg_len if avg_len is not None else DEFAULT_STRING_BYTES)
    if pa.types.is_large_string(t) or pa.types.is_large_binary(t):
        return 8 + (avg_len if avg_len is not None else DEFAULT_STRING_BYTES)
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        length = avg_len if avg_len is not None else DEFAULT_STRING_BYTES
        return 16 + (length if length > 12 else 0)
    if pa.types.is_dictionary(t):
        return _column_width(t.index_type, None)
    try:
        return t.bit_width / 8
    except ValueError:  # not a fixed-width type
        return DEFAULT_NESTED_BYTES


def row_width(schema: pa.Schema, string_lengths: Mapping[str, float] | None = None) -> float:
    """Estimated in-memory bytes of one row of ``schema``.

    Parameters
    ----------
    schema:
        The table's Arrow schema.
    string_lengths:
        Average value length in bytes per variable-width column, from the
        source's statistics; columns missing here use ``DEFAULT_STRING_BYTES``.

    Returns
    -------
    float
        Bytes per row (fractional: bitmaps are 1/8 byte).
    """
    lengths = string_lengths or {}
    total = 0.0
    for f in schema:
        total += _column_width(f.type, lengths.get(f.name))
        if f.nullable:
            total += 0.125
    return total


def memory_bytes(rows: int, width: float) -> int:
    """``rows × width`` rounded up to whole bytes (0 rows cost 0)."""
    return int(-(-rows * width // 1)) if rows > 0 else 0
