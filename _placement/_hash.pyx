# cython: language_level=3
"""Stable 64-bit key hashing (XXH64) for single keys and for batches.

Compute only: ``leibrix.placement`` validates arguments before calling in.
"""

import numpy as np

from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport free, malloc

from _placement._hash cimport key_bytes, xxh64


def hash64(object key, uint64_t seed=0):
    """XXH64 of a str (UTF-8) or bytes key."""
    cdef Py_ssize_t n
    cdef const uint8_t* p = key_bytes(key, &n, 0)
    return xxh64(p, n, seed)


cdef int gather_keys(list keys, const uint8_t** ptrs, Py_ssize_t* lens) except -1:
    cdef Py_ssize_t i
    for i in range(len(keys)):
        ptrs[i] = key_bytes(keys[i], &lens[i], i)
    return 0


def hash_keys(list keys, uint64_t seed=0):
    """XXH64 of every key, as a ``uint64`` array; hashing runs without the GIL."""
    cdef Py_ssize_t n = len(keys), i
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef const uint8_t** ptrs = <const uint8_t**>malloc((n + 1) * sizeof(uint8_t*))
    cdef Py_ssize_t* lens = <Py_ssize_t*>malloc((n + 1) * sizeof(Py_ssize_t))
    if ptrs == NULL or lens == NULL:
        free(ptrs)
        free(lens)
        raise MemoryError()
    try:
        gather_keys(keys, ptrs, lens)
        with nogil:
            for i in range(n):
                o[i] = xxh64(ptrs[i], lens[i], seed)
    finally:
        free(ptrs)
        free(lens)
    return out
