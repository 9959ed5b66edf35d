# cython: language_level=3
"""Weighted consistent-hash ring with virtual nodes, and the walk-based placers.

Compute only; ``leibrix.placement`` validates and converts. The ring is two
parallel sorted arrays (vnode points, owner slots) plus a bucket index over
the top bits of the hash space, so a lookup is one index read and a short scan
(O(1) expected) instead of a ~21-step binary search with a cache miss per step.
Vnode ``j`` of a worker sits at ``xxh64(name, seed=j)``: it depends only on the
worker's name, so the ring does not depend on the order workers were added, and
changing a worker's vnode count from ``a`` to ``b > a`` keeps its first ``a``
points (minimal movement). Ties (equal points) are ordered by slot.
"""

import numpy as np

from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

from _placement._hash cimport key_bytes, xxh64
from _placement._walk cimport (ST_NO_ROOM, ST_OK, ST_TOO_FEW_WORKERS, Walk, walk_exclude,
                               walk_reset, walk_select)

#: status codes of the placers (mirrored by the twin and the facade)
OK = ST_OK
TOO_FEW_WORKERS = ST_TOO_FEW_WORKERS
NO_ROOM = ST_NO_ROOM


cdef inline Py_ssize_t successor(const uint64_t* points, const int64_t* index, int shift,
                                 Py_ssize_t n, uint64_t h) noexcept nogil:
    """Position of the first vnode at or after ``h`` (wrapping to 0)."""
    cdef uint64_t b = h >> shift
    cdef Py_ssize_t i = index[b], e = index[b + 1]
    while i < e and points[i] < h:
        i += 1
    if i == n:
        i = 0
    return i


def vnode_points(bytes name, int64_t first, int64_t stop):
    """Points of vnodes ``first..stop-1`` of the worker called ``name``."""
    cdef Py_ssize_t n = stop - first if stop > first else 0, j
    out = np.empty(n, dtype=np.uint64)
    cdef uint64_t[::1] o = out
    cdef const uint8_t* p = <const uint8_t*><char*>name
    cdef Py_ssize_t ln = len(name)
    with nogil:
        for j in range(n):
            o[j] = xxh64(p, ln, <uint64_t>(first + j))
    return out


cdef class Ring:
    """Sorted vnode arrays of a weighted ring; slots are small ints chosen by the caller."""

    cdef public object points       # uint64[n]
    cdef public object owners       # int32[n]
    cdef object _index              # int64[2**bits + 1]
    cdef int _shift
    cdef object _vn                 # int64 vnode count per slot

    def __init__(self):
        self.points = np.empty(0, dtype=np.uint64)
        self.owners = np.empty(0, dtype=np.int32)
        self._vn = np.zeros(0, dtype=np.int64)
        self._reindex()

    @property
    def vnodes(self):
        """Vnode count per slot (a copy)."""
        return self._vn.copy()

    def _ensure_slot(self, Py_ssize_t slot):
        if slot >= len(self._vn):
            grown = np.zeros(max(slot + 1, 2 * len(self._vn)), dtype=np.int64)
            grown[: len(self._vn)] = self._vn
            self._vn = grown

    def build(self, list names, counts):
        """Replace the ring: slot ``i`` is ``names[i]`` with ``counts[i]`` vnodes."""
        counts = np.ascontiguousarray(counts, dtype=np.int64)
        total = int(counts.sum())
        pts = np.empty(total, dtype=np.uint64)
        own = np.empty(total, dtype=np.int32)
        cdef Py_ssize_t at = 0, s
        for s in range(len(names)):
            c = counts[s]
            pts[at: at + c] = vnode_points(names[s], 0, c)
            own[at: at + c] = s
            at += c
        order = np.argsort(pts, kind="stable")
        self.points = pts[order]
        self.owners = own[order]
        self._vn = counts.copy()
        self._reindex()

    def set_vnodes(self, int32_t slot, bytes name, int64_t count):
        """Give ``slot`` (named ``name``) exactly ``count`` vnodes, touching only its points."""
        self._ensure_slot(slot)
        cdef int64_t old = self._vn[slot]
        if count == old:
            return
        if count > old:
            self._merge(slot, np.sort(vnode_points(name, old, count)))
        else:
            keep = self.owners != slot
            self.points = self.points[keep]
            self.owners = self.owners[keep]
            self._merge(slot, np.sort(vnode_points(name, 0, count)))
        self._vn[slot] = count
        self._reindex()

    def _merge(self, int32_t slot, new_points):
        cdef Py_ssize_t na = len(self.points), nb = len(new_points), i = 0, j = 0, k = 0
        if nb == 0:
            return
        out_p = np.empty(na + nb, dtype=np.uint64)
        out_o = np.empty(na + nb, dtype=np.int32)
        cdef const uint64_t[::1] pa = self.points
        cdef const int32_t[::1] oa = self.owners
        cdef const uint64_t[::1] pb = new_points
        cdef uint64_t[::1] op = out_p
        cdef int32_t[::1] oo = out_o
        with nogil:
            while i < na or j < nb:
                if j == nb or (i < na and (pa[i] < pb[j] or (pa[i] == pb[j] and oa[i] < slot))):
                    op[k] = pa[i]
                    oo[k] = oa[i]
                    i += 1
                else:
                    op[k] = pb[j]
                    oo[k] = slot
                    j += 1
                k += 1
        self.points = out_p
        self.owners = out_o

    def _reindex(self):
        cdef Py_ssize_t n = len(self.points), i = 0
        cdef int bits = 1
        while (1 << bits) < n and bits < 24:
            bits += 1
        cdef Py_ssize_t nb = 1 << bits, b
        self._shift = 64 - bits
        index = np.empty(nb + 1, dtype=np.int64)
        cdef int64_t[::1] ix = index
        cdef const uint64_t[::1] p = self.points
        cdef int shift = self._shift
        with nogil:
            for b in range(nb):
                while i < n and (p[i] >> shift) < <uint64_t>b:
                    i += 1
                ix[b] = i
            ix[nb] = n
        self._index = index

    def lookup_hashes(self, const uint64_t[::1] hashes):
        """Owner slot of each pre-hashed key (ring must be non-empty)."""
        cdef Py_ssize_t m = hashes.shape[0], i, n = len(self.points)
        out = np.empty(m, dtype=np.int32)
        cdef int32_t[::1] o = out
        cdef const uint64_t[::1] p = self.points
        cdef const int32_t[::1] ow = self.owners
        cdef const int64_t[::1] ix = self._index
        cdef int shift = self._shift
        with nogil:
            for i in range(m):
                o[i] = ow[successor(&p[0], &ix[0], shift, n, hashes[i])]
        return out

    def lookup_keys(self, list keys, uint64_t seed=0):
        """Owner slot of each str/bytes key: hashing and search run without the GIL."""
        cdef Py_ssize_t m = len(keys), i, j, blk, n = len(self.points)
        cdef uint64_t hb[256]
        out = np.empty(m, dtype=np.int32)
        cdef int32_t[::1] o = out
        cdef const uint64_t[::1] p = self.points
        cdef const int32_t[::1] ow = self.owners
        cdef const int64_t[::1] ix = self._index
        cdef int shift = self._shift
        cdef const uint8_t** ptrs = <const uint8_t**>malloc((m + 1) * sizeof(uint8_t*))
        cdef Py_ssize_t* lens = <Py_ssize_t*>malloc((m + 1) * sizeof(Py_ssize_t))
        try:
            if ptrs == NULL or lens == NULL:
                raise MemoryError()
            for i in range(m):
                ptrs[i] = key_bytes(keys[i], &lens[i], i)
            with nogil:
                # Hash a block, then search it: independent searches let the CPU
                # overlap their cache misses (interleaving halves the throughput).
                i = 0
                while i < m:
                    blk = m - i if m - i < 256 else 256
                    for j in range(blk):
                        hb[j] = xxh64(ptrs[i + j], lens[i + j], seed)
                    for j in range(blk):
                        o[i + j] = ow[successor(&p[0], &ix[0], shift, n, hb[j])]
                    i += blk
        finally:
            free(ptrs)
            free(lens)
        return out

    def start_positions(self, const uint64_t[::1] hashes):
        """Successor vnode position of each hash (where a walk starts)."""
        cdef Py_ssize_t m = hashes.shape[0], i, n = len(self.points)
        out = np.empty(m, dtype=np.int64)
        cdef int64_t[::1] o = out
        cdef const uint64_t[::1] p = self.points
        cdef const int64_t[::1] ix = self._index
        cdef int shift = self._shift
        with nogil:
            for i in range(m):
                o[i] = successor(&p[0], &ix[0], shift, n, hashes[i])
        return out


def place_walk(const int32_t[::1] seq, const int64_t[::1] starts, int64_t cursor,
               const int32_t[::1] zone, const uint8_t[::1] member,
               const int64_t[::1] mem, const double[::1] cpu, const int32_t[::1] need,
               const int64_t[::1] excl_ptr, const int32_t[::1] excl,
               free_mem, free_cpu, load, cap):
    """Place items in order by walking ``seq``; updates the capacity arrays in place.

    Item ``i`` starts at ``starts[i]`` (ring) or, when ``starts`` is empty, at
    the running ``cursor`` (round-robin: each success moves the cursor past
    the last worker taken). ``free_mem``/``free_cpu`` (or ``load``/``cap``)
    may be None to ignore capacity (or the bounded-load cap). An item is
    all-or-nothing: it gets every missing replica or none.

    Returns ``(out, out_ptr, status, counts, cursor)``: ``out[out_ptr[i]:out_ptr[i+1]]``
    are item ``i``'s new slots; ``counts[i]`` = (found, lacking memory,
    lacking cpu, at cap) for unplaceable items.
    """
    cdef Py_ssize_t m = need.shape[0], n_slots = zone.shape[0], i, k, j
    cdef Py_ssize_t n_zone_ids = 0
    for i in range(n_slots):
        if zone[i] + 1 > n_zone_ids:
            n_zone_ids = zone[i] + 1
    out_ptr = np.zeros(m + 1, dtype=np.int64)
    np.cumsum(need, out=out_ptr[1:])
    out = np.full(out_ptr[m], -1, dtype=np.int32)
    status = np.zeros(m, dtype=np.int8)
    counts = np.zeros((m, 4), dtype=np.int32)
    cdef int64_t[::1] optr = out_ptr
    cdef int32_t[::1] o = out
    cdef int8_t[::1] st = status
    cdef int32_t[:, ::1] cn = counts
    cdef int64_t[::1] fm
    cdef double[::1] fc
    cdef int64_t[::1] ld
    cdef const int64_t[::1] cp
    cdef Walk w
    w.seq = &seq[0] if seq.shape[0] else NULL
    w.seq_len = seq.shape[0]
    w.member = &member[0] if member.shape[0] else NULL
    w.zone = &zone[0] if n_slots else NULL
    w.free_mem = NULL
    w.free_cpu = NULL
    w.load = NULL
    w.cap = NULL
    if free_mem is not None:
        fm = free_mem
        fc = free_cpu
        w.free_mem = &fm[0] if n_slots else NULL
        w.free_cpu = &fc[0] if n_slots else NULL
    if load is not None:
        ld = load
        cp = cap
        w.load = &ld[0] if n_slots else NULL
        w.cap = &cp[0] if n_slots else NULL
    # live slots and their distinct zones
    w.n_live = 0
    w.n_zones = 0
    zmark = np.zeros(n_zone_ids + 1, dtype=np.uint8)
    cdef uint8_t[::1] zm = zmark
    for i in range(n_slots):
        if w.member == NULL or w.member[i]:
            w.n_live += 1
            if not zm[zone[i]]:
                zm[zone[i]] = 1
                w.n_zones += 1
    cdef int32_t max_need = 1
    for i in range(m):
        if need[i] > max_need:
            max_need = need[i]
    w.seen = <uint8_t*>calloc(n_slots + 1, 1)
    w.zone_used = <uint8_t*>calloc(n_zone_ids + 1, 1)
    w.touched = <int32_t*>malloc((n_slots + 1) * sizeof(int32_t))
    w.ztouched = <int32_t*>malloc((n_zone_ids + 1) * sizeof(int32_t))
    w.deferred = <int32_t*>malloc(max_need * sizeof(int32_t))
    w.dstep = <Py_ssize_t*>malloc(max_need * sizeof(Py_ssize_t))
    w.nt = 0
    w.nzt = 0
    cdef bint rr = starts.shape[0] == 0
    cdef Py_ssize_t start, end = cursor
    cdef int32_t found, s
    try:
        if (w.seen == NULL or w.zone_used == NULL or w.touched == NULL or w.ztouched == NULL
                or w.deferred == NULL or w.dstep == NULL):
            raise MemoryError()
        with nogil:
            for i in range(m):
                if need[i] == 0:
                    continue
                walk_exclude(&w, &excl[excl_ptr[i]] if excl_ptr[i + 1] > excl_ptr[i] else NULL,
                             excl_ptr[i + 1] - excl_ptr[i])
                if need[i] > w.n_live - w.pre_members:
                    st[i] = ST_TOO_FEW_WORKERS
                    cn[i, 0] = w.n_live - w.pre_members
                    walk_reset(&w)
                    continue
                start = cursor if rr else starts[i]
                found = walk_select(&w, start, need[i], mem[i], cpu[i], &o[optr[i]], &end)
                if found < need[i]:
                    st[i] = ST_NO_ROOM
                    cn[i, 0] = found
                    cn[i, 1] = w.n_mem
                    cn[i, 2] = w.n_cpu
                    cn[i, 3] = w.n_cap
                    for k in range(optr[i], optr[i + 1]):
                        o[k] = -1
                else:
                    if rr:
                        cursor = end
                    for k in range(optr[i], optr[i + 1]):
                        s = o[k]
                        if w.free_mem != NULL:
                            w.free_mem[s] -= mem[i]
                            w.free_cpu[s] -= cpu[i]
                        if w.load != NULL:
                            w.load[s] += 1
                walk_reset(&w)
    finally:
        free(w.seen)
        free(w.zone_used)
        free(w.touched)
        free(w.ztouched)
        free(w.deferred)
        free(w.dstep)
    return out, out_ptr, status, counts, cursor
