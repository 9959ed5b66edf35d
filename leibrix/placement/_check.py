"""Argument checks shared by the facade: precise errors that name the argument.

Everything the compiled core receives has passed through here, so the core
never sees NaN, negative sizes, wrong dtypes or out-of-range counts.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

#: the largest int64, the ceiling for byte counts handed to the core
INT64_MAX = (1 << 63) - 1


def integer(name: str, value: object, *, minimum: int | None = 0, maximum: int = INT64_MAX) -> int:
    """``value`` as an int within bounds; bools and floats are refused (a float count is a bug)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def real(name: str, value: object, *, minimum: float | None = 0.0, allow_inf: bool = False) -> float:
    """``value`` as a finite float (no NaN; inf only if allowed) not below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def text(name: str, value: object) -> str:
    """A non-empty str."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{name} must be valid Unicode (no lone surrogates), got {value!r}") from None
    return value


def float_array(name: str, values: object, *, minimum: float | None = None) -> np.ndarray:
    """A 1-D contiguous float64 copy-free view when possible; no NaN/inf, optional lower bound."""
    try:
        arr = np.ascontiguousarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} must be a 1-D array of numbers ({exc})") from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if arr.size and not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"{name}[{bad}] must be finite, got {arr[bad]}")
    if minimum is not None and arr.size and arr.min() < minimum:
        bad = int(np.flatnonzero(arr < minimum)[0])
        raise ValueError(f"{name}[{bad}] must be >= {minimum}, got {arr[bad]}")
    return arr


def instance(name: str, value: object, cls: type) -> None:
    """Refuse anything that is not a ``cls`` (the small-object API takes its own dataclasses)."""
    if not isinstance(value, cls):
        raise TypeError(f"{name} must be a {cls.__name__}, got {type(value).__name__}")


def unique(name: str, ids: list[str]) -> None:
    """Refuse duplicate ids, naming the first one repeated."""
    seen: set[str] = set()
    for i, v in enumerate(ids):
        if v in seen:
            raise ValueError(f"{name}[{i}]: duplicate id {v!r}")
        seen.add(v)
