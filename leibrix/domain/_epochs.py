"""Epoch generation: slice an admitted dataset into calendar-aligned windows × dimension values.

An *epoch* is the unit of residency: one time window of one dataset, restricted
to one combination of dimension values. Everything the master decides (benefit,
placement, lifecycle, routes) is decided per epoch, so the slicing must be
deterministic: the same admission must always produce the same epoch ids, on
any master, in any process, whatever order the client listed the values in.

Windows
    All arithmetic is in UTC milliseconds. A granularity ``N × unit`` cuts time
    into windows anchored at fixed calendar origins, so a window never depends
    on where a request's filter happens to start:

    * ``HOUR``: multiples of ``N`` hours since 1970-01-01T00:00Z (with ``N``
      dividing 24, windows also align to days);
    * ``DAY``: multiples of ``N`` days since 1970-01-01;
    * ``WEEK``: multiples of ``N`` ISO weeks (Monday 00:00Z) since 1970-01-05,
      the first Monday of the Unix epoch;
    * ``MONTH``: multiples of ``N`` calendar months since 1970-01 (``N = 3`` gives
      quarters, ``N = 12`` years).

    A filter ``[start, end)`` yields every window that overlaps it; windows are
    not clipped to the filter (an epoch always holds its whole window, so a
    later, wider admission finds the same epochs with the same ids).

Ids
    ``{start_ms}_{h}`` where ``h`` is the first 3 bytes (6 lowercase hex digits)
    of ``sha256(canonical)``, the upstream Go master's id format. The hashed
    string is exactly::

        {scope}|{start_ms}|{end_ms}|{version}|{k1}={v1}&{k2}={v2}...

    with the dimension keys sorted by code point, ``scope`` = ``tenant/dataset``
    and every ``scope``, ``version``, key and value percent-encoded with
    ``urllib.parse.quote(s, safe="")`` (so ``|``, ``&`` and ``=`` inside a value
    cannot forge another encoding), UTF-8 bytes. The source ``version`` is part
    of the hash so that a refresh (new version) produces new epochs that can be
    loaded beside the old ones; the scope makes two tenants' same-named
    datasets get different ids (workers name tables ``{dataset}__{epoch}``). Six hex digits
    can collide inside one admission (about 3% for a thousand dimension
    combinations at one start): combinations are visited in sorted order and a
    colliding one is re-hashed with ``#1``, ``#2``... appended to the canonical
    string, so ids stay unique and deterministic for the same request.
"""

from __future__ import annotations

import calendar
import enum
import hashlib
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from urllib.parse import quote

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
#: 1970-01-05T00:00Z, the first Monday after the Unix epoch (ISO weeks start on Monday).
_WEEK_ORIGIN_MS = 4 * DAY_MS


class Unit(enum.IntEnum):
    """Calendar unit of an epoch window (our own numbering; see ``from_wire``)."""

    HOUR = 1
    DAY = 2
    WEEK = 3
    MONTH = 4


@dataclass(frozen=True, slots=True)
class Granularity:
    """``value × unit``: the length of one epoch window (``value >= 1``)."""

    value: int
    unit: Unit

    def __str__(self) -> str:
        return f"{self.value} {self.unit.name.lower()}{'s' if self.value != 1 else ''}"


@dataclass(frozen=True, slots=True)
class EpochSlice:
    """One generated epoch: its id, window ``[start_ms, end_ms)`` and dimension values.

    ``dims`` is a tuple of ``(key, value)`` pairs sorted by key: hashable and
    cheap, and already in the canonical order used for the id.
    """

    epoch_id: str
    start_ms: int
    end_ms: int
    dims: tuple[tuple[str, str], ...]
    partition_value: str


def _month_index(ms: int) -> int:
    d = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    return (d.year - 1970) * 12 + d.month - 1


def _month_start_ms(index: int) -> int:
    year, month0 = divmod(index, 12)
    return calendar.timegm((1970 + year, month0 + 1, 1, 0, 0, 0)) * 1000


def _fixed(unit: Unit) -> tuple[int, int] | None:
    """(window length of one unit in ms, origin) for the fixed-length units, None for MONTH."""
    if unit is Unit.HOUR:
        return HOUR_MS, 0
    if unit is Unit.DAY:
        return DAY_MS, 0
    if unit is Unit.WEEK:
        return WEEK_MS, _WEEK_ORIGIN_MS
    return None


def window_index(ms: int, g: Granularity) -> int:
    """Index of the window containing instant ``ms`` (windows are numbered from their origin)."""
    fixed = _fixed(g.unit)
    if fixed is None:
        return _month_index(ms) // g.value
    length, origin = fixed
    return (ms - origin) // (length * g.value)


def window_bounds(index: int, g: Granularity) -> tuple[int, int]:
    """``[start_ms, end_ms)`` of window number ``index``."""
    fixed = _fixed(g.unit)
    if fixed is None:
        return _month_start_ms(index * g.value), _month_start_ms((index + 1) * g.value)
    length, origin = fixed
    size = length * g.value
    return origin + index * size, origin + (index + 1) * size


def count_windows(start_ms: int, end_ms: int, g: Granularity) -> int:
    """Number of windows overlapping ``[start_ms, end_ms)``, computed without generating them."""
    if end_ms <= start_ms:
        return 0
    return window_index(end_ms - 1, g) - window_index(start_ms, g) + 1


def iter_windows(start_ms: int, end_ms: int, g: Granularity) -> Iterator[tuple[int, int]]:
    """Every window ``(start_ms, end_ms)`` overlapping ``[start_ms, end_ms)``, in time order."""
    if end_ms <= start_ms:
        return
    for index in range(window_index(start_ms, g), window_index(end_ms - 1, g) + 1):
        yield window_bounds(index, g)


def partition_value(start_ms: int, g: Granularity) -> str:
    """The human label of a window, sent as ``ResolvedPartition.time_partition_value``.

    ``2026-11-27T05`` (hours), ``2026-11-27`` (days), ``2026-W48`` (ISO weeks),
    ``2026-11`` (months).
    """
    d = datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc)
    if g.unit is Unit.HOUR:
        return d.strftime("%Y-%m-%dT%H")
    if g.unit is Unit.DAY:
        return d.strftime("%Y-%m-%d")
    if g.unit is Unit.WEEK:
        year, week, _ = d.isocalendar()
        return f"{year}-W{week:02d}"
    return d.strftime("%Y-%m")


def canonical(start_ms: int, end_ms: int, version: str, dims: Sequence[tuple[str, str]], scope: str = "") -> str:
    """The exact string whose sha256 names an epoch (``dims`` sorted by key)."""
    enc = "&".join(f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in dims)
    return f"{quote(scope, safe='')}|{start_ms}|{end_ms}|{quote(version, safe='')}|{enc}"


def epoch_id(start_ms: int, end_ms: int, version: str, dims: Sequence[tuple[str, str]], salt: int = 0,
             scope: str = "") -> str:
    """``{start_ms}_{6 hex}``; ``salt`` > 0 appends ``#salt`` (only used to break a collision)."""
    text = canonical(start_ms, end_ms, version, dims, scope)
    if salt:
        text = f"{text}#{salt}"
    return f"{start_ms}_{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def count_epochs(start_ms: int, end_ms: int, g: Granularity, dimensions: Sequence[tuple[str, Sequence[str]]]) -> int:
    """How many epochs ``generate`` would produce: windows × the product of the value counts."""
    n = count_windows(start_ms, end_ms, g)
    for _, values in dimensions:
        n *= len(values)
    return n


def generate(
    start_ms: int,
    end_ms: int,
    g: Granularity,
    dimensions: Sequence[tuple[str, Sequence[str]]],
    *,
    version: str = "",
    scope: str = "",
) -> list[EpochSlice]:
    """All epochs of an admission: windows overlapping ``[start_ms, end_ms)`` × every dimension combination.

    ``dimensions`` is ``[(column, values), ...]``; values must be distinct per
    column (validation guarantees it). The result is sorted by window start,
    then by the sorted dimension values: the same input in any order gives the
    same list.
    """
    keys = sorted(dimensions, key=lambda kv: kv[0])
    names = [k for k, _ in keys]
    value_lists = [sorted(v) for _, v in keys]
    combos = [tuple(zip(names, combo)) for combo in itertools.product(*value_lists)]
    out: list[EpochSlice] = []
    for start, end in iter_windows(start_ms, end_ms, g):
        label = partition_value(start, g)
        used: set[str] = set()
        for dims in combos:
            salt = 0
            eid = epoch_id(start, end, version, dims, scope=scope)
            while eid in used:
                salt += 1
                eid = epoch_id(start, end, version, dims, salt, scope=scope)
            used.add(eid)
            out.append(EpochSlice(eid, start, end, dims, label))
    return out
