# cython: language_level=3
"""XXH64 and key gathering, inlined into every placement module that cimports them.

XXH64 (Yann Collet, https://github.com/Cyan4973/xxHash, spec ``doc/xxhash_spec.md``)
is a 64-bit non-cryptographic hash: fast (~1 byte/cycle), well distributed, and
— unlike Python's ``hash`` — identical in every process and on every run, which
is what placement needs (a key must map to the same worker on every master).
The functions live in this ``.pxd`` as ``inline`` so the ring and packing loops
call them without an indirection.
"""

from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object s, Py_ssize_t* size) except NULL
    char* PyBytes_AS_STRING(object b)
    Py_ssize_t PyBytes_GET_SIZE(object b)
    bint PyUnicode_Check(object o)
    bint PyBytes_Check(object o)

cdef extern from *:
    """
    #define XXH_P1 0x9E3779B185EBCA87ULL
    #define XXH_P2 0xC2B2AE3D27D4EB4FULL
    #define XXH_P3 0x165667B19E3779F9ULL
    #define XXH_P4 0x85EBCA77C2B2AE63ULL
    #define XXH_P5 0x27D4EB2F165667C5ULL
    """
    const uint64_t XXH_P1
    const uint64_t XXH_P2
    const uint64_t XXH_P3
    const uint64_t XXH_P4
    const uint64_t XXH_P5


cdef inline uint64_t _rotl(uint64_t x, int r) noexcept nogil:
    return (x << r) | (x >> (64 - r))


cdef inline uint64_t _read64(const uint8_t* p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t _read32(const uint8_t* p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint64_t _round(uint64_t acc, uint64_t lane) noexcept nogil:
    acc = acc + lane * XXH_P2
    acc = _rotl(acc, 31)
    return acc * XXH_P1


cdef inline uint64_t _merge(uint64_t acc, uint64_t v) noexcept nogil:
    acc = acc ^ _round(0, v)
    return acc * XXH_P1 + XXH_P4


cdef inline uint64_t xxh64(const uint8_t* p, Py_ssize_t n, uint64_t seed) noexcept nogil:
    """XXH64 of ``n`` bytes at ``p`` (little-endian lanes, as on x86-64/arm64)."""
    cdef const uint8_t* end = p + n
    cdef uint64_t h, v1, v2, v3, v4
    if n >= 32:
        v1 = seed + XXH_P1 + XXH_P2
        v2 = seed + XXH_P2
        v3 = seed
        v4 = seed - XXH_P1
        while p + 32 <= end:
            v1 = _round(v1, _read64(p))
            v2 = _round(v2, _read64(p + 8))
            v3 = _round(v3, _read64(p + 16))
            v4 = _round(v4, _read64(p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = seed + XXH_P5
    h += <uint64_t>n
    while p + 8 <= end:
        h = h ^ _round(0, _read64(p))
        h = _rotl(h, 27) * XXH_P1 + XXH_P4
        p += 8
    if p + 4 <= end:
        h = h ^ (<uint64_t>_read32(p) * XXH_P1)
        h = _rotl(h, 23) * XXH_P2 + XXH_P3
        p += 4
    while p < end:
        h = h ^ (<uint64_t>p[0] * XXH_P5)
        h = _rotl(h, 11) * XXH_P1
        p += 1
    h = h ^ (h >> 33)
    h = h * XXH_P2
    h = h ^ (h >> 29)
    h = h * XXH_P3
    h = h ^ (h >> 32)
    return h


cdef inline const uint8_t* key_bytes(object key, Py_ssize_t* size, Py_ssize_t index) except NULL:
    """Pointer to the UTF-8 (str) or raw (bytes) content of ``key``; no copy.

    The UTF-8 form of a str is cached inside the str object, so the pointer
    stays valid while the caller holds the key (e.g. the list it came from).
    """
    if PyUnicode_Check(key):
        return <const uint8_t*>PyUnicode_AsUTF8AndSize(key, size)
    if PyBytes_Check(key):
        size[0] = PyBytes_GET_SIZE(key)
        return <const uint8_t*>PyBytes_AS_STRING(key)
    raise TypeError(f"keys[{index}] must be str or bytes, got {type(key).__name__}")
