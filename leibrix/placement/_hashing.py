"""Stable 64-bit key hashing (XXH64): the one hash every placement decision uses."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _check
from ._backend import core


def hash64(key: str | bytes, seed: int = 0, *, backend: str = "native") -> int:
    """XXH64 of ``key`` (str keys are hashed as UTF-8).

    Python's ``hash`` is salted per process; placement must send a key to the
    same worker from every master on every run, so it uses this instead.

    Parameters
    ----------
    key : str or bytes
        The key; a str is encoded as UTF-8.
    seed : int, default 0
        XXH64 seed, ``0 <= seed < 2**64``.
    backend : {"native", "twin"}
        "twin" runs the pure-Python reference implementation.

    Returns
    -------
    int
        The hash, ``0 <= h < 2**64``.

    Examples
    --------
    >>> hex(hash64(b"abc"))
    '0x44bc2cf5ad770999'

    References
    ----------
    Yann Collet, xxHash specification, https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md
    """
    if not isinstance(key, (str, bytes)):
        raise TypeError(f"key must be str or bytes, got {type(key).__name__}")
    seed = _check.integer("seed", seed, maximum=(1 << 64) - 1)
    return int(core(backend).hash64(key, seed))


def hash_keys(keys: Sequence[str | bytes], seed: int = 0, *, backend: str = "native") -> np.ndarray:
    """XXH64 of every key, as a ``uint64`` array (the bulk form of :func:`hash64`).

    Hashing runs in C without the GIL. Pass the result to
    ``HashRing.lookup_batch`` to hash once and look up many times.

    Parameters
    ----------
    keys : sequence of str or bytes
    seed : int, default 0

    Returns
    -------
    numpy.ndarray of uint64, shape (len(keys),)

    Raises
    ------
    TypeError
        If ``keys[i]`` is neither str nor bytes (the message names ``i``).
    """
    seed = _check.integer("seed", seed, maximum=(1 << 64) - 1)
    return core(backend).hash_keys(as_key_list(keys), seed)


def as_key_list(keys: object) -> list:
    """``keys`` as a list (the compiled loops index a list directly)."""
    if isinstance(keys, list):
        return keys
    if isinstance(keys, (str, bytes)):
        raise TypeError("keys must be a sequence of keys, not a single str/bytes")
    try:
        return list(keys)  # type: ignore[call-overload]
    except TypeError:
        raise TypeError(f"keys must be a sequence of str or bytes, got {type(keys).__name__}") from None
