"""Human byte sizes (``8GiB``, ``512MiB``, ``1.5G``, ``1048576``) parsed exactly.

Exact means integer arithmetic: ``1.5GiB`` is computed with :class:`fractions.Fraction`,
never through a float, so a capacity is the same number on every machine and a
fractional byte is an error rather than silently rounded.
"""

from __future__ import annotations

import re
from fractions import Fraction

__all__ = ["format_size", "parse_size"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "m": 10**6,
    "mb": 10**6,
    "g": 10**9,
    "gb": 10**9,
    "t": 10**12,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(text: str) -> int:
    """Parse a byte size: decimal units (k, M, G, T, with optional B) or binary (KiB, MiB, GiB, TiB).

    Raises ``ValueError`` naming the problem for an unknown unit, a negative or
    malformed number, or a size that is not a whole number of bytes.

    >>> parse_size("8GiB"), parse_size("512MiB"), parse_size("1.5k")
    (8589934592, 536870912, 1500)
    """
    m = _RE.match(text)
    if not m:
        raise ValueError(f"size {text!r}: expected a number with an optional unit like 8GiB or 512MiB")
    number, unit = m.groups()
    try:
        factor = _UNITS[unit.lower()]
    except KeyError:
        raise ValueError(
            f"size {text!r}: unknown unit {unit!r} (use B, k/M/G/T[B] or KiB/MiB/GiB/TiB)"
        ) from None
    value = Fraction(number) * factor
    if value.denominator != 1:
        raise ValueError(f"size {text!r} is not a whole number of bytes ({float(value)})")
    return int(value)


def format_size(n: int) -> str:
    """Format bytes with the largest binary unit that keeps three significant digits."""
    for unit, factor in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= factor:
            return f"{n / factor:.3g}{unit}"
    return f"{n}B"
