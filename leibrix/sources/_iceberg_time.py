"""The time column of an Iceberg read and the ms interval a data file covers in it.

Shared by the connector (``leibrix.sources._iceberg``, which resolves the
column: :class:`_TimeColumn`), the assignment of files to epochs
(``_iceberg_assign``) and the snapshot index (``_iceberg_index``), which both
place a file by :func:`_file_interval`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone

__all__ = ["_TimeColumn", "_file_interval"]

_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000


@dataclass(slots=True)
class _TimeColumn:
    field_id: int
    kind: str  # "timestamp" (micros) | "date" (days) | "int" (ms) | "string" (ISO text)
    iceberg_type: object

    def literal(self, ms: int):
        if self.kind == "timestamp":
            return ms * 1000
        if self.kind == "date":
            return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).date().isoformat()
        if self.kind == "int":
            return ms
        return datetime.fromtimestamp(ms / 1000, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")

    def to_ms(self, value) -> tuple[int, int] | None:
        """``[lo, hi)`` in ms covered by one column value."""
        if value is None:
            return None
        if self.kind == "timestamp":
            if isinstance(value, datetime):
                value = int(value.replace(tzinfo=value.tzinfo or timezone.utc).timestamp() * 1_000_000)
            return value // 1000, value // 1000 + 1
        if self.kind == "date":
            if isinstance(value, date):
                value = (value - date(1970, 1, 1)).days
            return value * _DAY_MS, (value + 1) * _DAY_MS
        if self.kind == "int":
            return int(value), int(value) + 1
        try:
            dt = datetime.fromisoformat(str(value))
        except ValueError:
            return None
        ms = int(dt.replace(tzinfo=dt.tzinfo or timezone.utc).timestamp() * 1000)
        return ms, ms + 1


def _partition_interval(table, df, time: _TimeColumn) -> tuple[int, int] | None:
    from pyiceberg import transforms as tr

    spec = table.metadata.specs()[df.spec_id]
    best = None
    for pos, pf in enumerate(spec.fields):
        if pf.source_id != time.field_id:
            continue
        value = df.partition[pos]
        if value is None:
            continue
        t = pf.transform
        if isinstance(t, tr.IdentityTransform):
            iv = time.to_ms(value)
        elif isinstance(t, tr.HourTransform):
            iv = (value * _HOUR_MS, (value + 1) * _HOUR_MS)
        elif isinstance(t, tr.DayTransform):
            v = (value - date(1970, 1, 1)).days if isinstance(value, date) else value
            iv = (v * _DAY_MS, (v + 1) * _DAY_MS)
        elif isinstance(t, tr.MonthTransform):
            iv = (_month_ms(value), _month_ms(value + 1))
        elif isinstance(t, tr.YearTransform):
            iv = (_month_ms(value * 12), _month_ms(value * 12 + 12))
        else:
            continue
        best = iv if best is None else (max(best[0], iv[0]), min(best[1], iv[1]))
    return best


def _month_ms(months: int) -> int:
    y, m = divmod(months, 12)
    return int(datetime(1970 + y, m + 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def _file_interval(table, df, time: _TimeColumn, full: tuple[int, int]) -> tuple[tuple[int, int], bool]:
    """The file's ``[lo, hi)`` ms interval and whether anything bounded it."""
    from pyiceberg.conversions import from_bytes

    iv = _partition_interval(table, df, time)
    lo_b, hi_b = (df.lower_bounds or {}).get(time.field_id), (df.upper_bounds or {}).get(time.field_id)
    if lo_b is not None and hi_b is not None and time.kind != "string":
        lo = time.to_ms(from_bytes(time.iceberg_type, lo_b))
        hi = time.to_ms(from_bytes(time.iceberg_type, hi_b))
        if lo and hi:
            bounds = (lo[0], hi[1])
            iv = bounds if iv is None else (max(iv[0], bounds[0]), min(iv[1], bounds[1]))
    if iv is None:
        return full, False
    return iv, True
