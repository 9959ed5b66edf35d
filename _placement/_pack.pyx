# cython: language_level=3
"""Capacity-aware vector packing: best-fit decreasing in two dimensions.

Compute only; ``leibrix.placement`` validates and converts.

Measure. With ``M`` and ``C`` the largest worker memory and cpu capacities, an
item is the vector ``(x, y) = (mem/M, cpu/C)`` and its size is its *dominant
share* ``d = max(x, y)``; a worker's free vector is ``(a, b) = (free_mem/M,
free_cpu/C)``. Best fit is the worker that fits with the least free capacity
``a + b`` (L1), so a cpu-heavy item lands where cpu is what is left over, and
both resources fill together. Items are placed largest ``d`` first (ties: input
order). Workers already in use are *open*, untouched ones *closed*, as bins in
bin packing: a replica goes to an open worker whenever one fits and a closed
worker is opened only when none does. Within a pool the replica goes to the
best-fit worker on a ``GRID x GRID`` grid of quantised free vectors (cell
``(floor(sqrt(a)*GRID), floor(sqrt(b)*GRID))``; cells at or above
``(ceil(sqrt(x)*GRID), ceil(sqrt(y)*GRID))`` are guaranteed to fit; the least ``A + B``, then the least
``A``, wins); when no cell is guaranteed (the item is within one grid step of
what is left) an exact search takes the first worker of the pool, in worker
order, with both resources free.

Structures (per pool, and per *group*: one per zone plus one for zoneless
workers): one intrusive list of workers per grid cell, a 64-bit occupancy
mask per grid row and one mask of non-empty rows (best fit = at most GRID
find-next-set-bit steps, usually a few); and per pool one
segment tree over all workers, ordered by group, holding the max free memory
and cpu of each subtree for the exact search (O(log n) per probe; subtrees
that cannot fit are pruned).
A replica search costs O(groups + log n), independent of the item count.

Replica rules: replicas of an item go to distinct workers; a zone not yet used
by the item is preferred, and a used zone is accepted only when no unused zone
has room. Items are all-or-nothing.
"""

import numpy as np

from libc.math cimport ceil, floor, sqrt
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint64_t
from libc.stdlib cimport calloc, free, malloc

from _placement._walk cimport ST_NO_ROOM, ST_OK, ST_TOO_FEW_WORKERS

#: grid steps per unit of the largest capacity, per resource
GRID = 64
cdef enum:
    G_STEPS = 64         # grid steps per dimension (one row = one 64-bit mask)
    L = 4096             # cells per (pool, group) = G_STEPS * G_STEPS
    WORDS = 64           # row masks per (pool, group)


cdef extern from *:
    """
    static inline int lbx_ctz64(unsigned long long x) { return __builtin_ctzll(x); }
    """
    int ctz64 "lbx_ctz64"(uint64_t x) noexcept nogil


cdef struct Packer:
    Py_ssize_t n, P
    int32_t G, zoneless
    const int32_t* group
    int64_t* fm
    double* fc
    double mhat, chat
    uint8_t* pool        # 0 = open (in use), 1 = closed (untouched)
    int32_t* head        # 2 * G * L
    int32_t* nxt
    int32_t* prv
    int32_t* lvl         # -1 = hidden
    uint64_t* bits       # 2 * G * WORDS
    uint64_t* summ       # 2 * G
    int64_t* tm          # 2 * 2P
    double* tc
    const int64_t* gptr  # G + 1


cdef inline int32_t step(double v) noexcept nogil:
    """Grid step of a free share: ``floor(sqrt(v) * GRID)``, clamped.

    The square root makes the grid fine where little is free (a step is
    1/4096 of the largest capacity near empty, 1/32 near full): tight fits
    are what best fit must tell apart. Any increasing map keeps the
    guarantee that a cell at or above the item's cell fits it.
    """
    if v <= 0:
        return 0
    v = floor(sqrt(v) * G_STEPS)
    return G_STEPS - 1 if v > G_STEPS - 1 else <int32_t>v


cdef inline int32_t level_of(Packer* p, Py_ssize_t w) noexcept nogil:
    """Grid cell ``A * 64 + B`` of the worker's free vector."""
    return step(p.fm[w] / p.mhat) * G_STEPS + step(p.fc[w] / p.chat)


cdef inline void link(Packer* p, int32_t w) noexcept nogil:
    cdef int32_t g = p.group[w] + p.pool[w] * p.G, l = level_of(p, w)
    cdef Py_ssize_t slot = <Py_ssize_t>g * L + l
    p.lvl[w] = l
    p.prv[w] = -1
    p.nxt[w] = p.head[slot]
    if p.head[slot] != -1:
        p.prv[p.head[slot]] = w
    p.head[slot] = w
    p.bits[g * WORDS + (l >> 6)] |= (<uint64_t>1) << (l & 63)
    p.summ[g] |= (<uint64_t>1) << (l >> 6)


cdef inline void unlink(Packer* p, int32_t w) noexcept nogil:
    cdef int32_t g = p.group[w] + p.pool[w] * p.G, l = p.lvl[w]
    cdef Py_ssize_t slot = <Py_ssize_t>g * L + l
    if p.prv[w] != -1:
        p.nxt[p.prv[w]] = p.nxt[w]
    else:
        p.head[slot] = p.nxt[w]
    if p.nxt[w] != -1:
        p.prv[p.nxt[w]] = p.prv[w]
    if p.head[slot] == -1:
        p.bits[g * WORDS + (l >> 6)] &= ~((<uint64_t>1) << (l & 63))
        if p.bits[g * WORDS + (l >> 6)] == 0:
            p.summ[g] &= ~((<uint64_t>1) << (l >> 6))
    p.lvl[w] = -1


cdef inline void tree_set(Packer* p, int32_t w, int64_t m, double c) noexcept nogil:
    cdef Py_ssize_t i = p.P + w
    cdef int64_t* tm = p.tm + 2 * p.P * p.pool[w]
    cdef double* tc = p.tc + 2 * p.P * p.pool[w]
    tm[i] = m
    tc[i] = c
    i >>= 1
    while i >= 1:
        tm[i] = tm[2 * i] if tm[2 * i] > tm[2 * i + 1] else tm[2 * i + 1]
        tc[i] = tc[2 * i] if tc[2 * i] > tc[2 * i + 1] else tc[2 * i + 1]
        i >>= 1


cdef inline void hide(Packer* p, int32_t w) noexcept nogil:
    unlink(p, w)
    tree_set(p, w, -1, -1.0)


cdef inline void show(Packer* p, int32_t w) noexcept nogil:
    link(p, w)
    tree_set(p, w, p.fm[w], p.fc[w])


cdef inline bint grid_best(Packer* p, int32_t gg, int32_t qx, int32_t qy, int32_t* best_sum,
                           int32_t* best_a, int32_t* best_cell) noexcept nogil:
    """Improve (best_sum, best_a) with list set gg's best cell at or above (qx, qy); True if improved."""
    cdef uint64_t rows = p.summ[gg] & ((~(<uint64_t>0)) << qx)
    cdef uint64_t mask
    cdef int32_t a, b
    cdef bint improved = False
    while rows:
        a = ctz64(rows)
        # every cell of this row and later rows is no better than (a + qy, a)
        if a + qy > best_sum[0] or (a + qy == best_sum[0] and a >= best_a[0]):
            break
        mask = p.bits[<Py_ssize_t>gg * WORDS + a] & ((~(<uint64_t>0)) << qy)
        if mask:
            b = ctz64(mask)
            if a + b < best_sum[0] or (a + b == best_sum[0] and a < best_a[0]):
                best_sum[0] = a + b
                best_a[0] = a
                best_cell[0] = a * G_STEPS + b
                improved = True
        rows &= rows - 1
    return improved


cdef int32_t first_fit(const int64_t* tm, const double* tc, Py_ssize_t node, Py_ssize_t nlo,
                       Py_ssize_t nhi, Py_ssize_t lo, Py_ssize_t hi, int64_t m, double c) noexcept nogil:
    """Leftmost worker in [lo, hi) with both resources free, or -1 (pruned DFS on one pool's tree)."""
    if nhi <= lo or hi <= nlo or tm[node] < m or tc[node] < c:
        return -1
    if nhi - nlo == 1:
        return <int32_t>nlo
    cdef Py_ssize_t mid = (nlo + nhi) >> 1
    cdef int32_t r = first_fit(tm, tc, 2 * node, nlo, mid, lo, hi, m, c)
    if r >= 0:
        return r
    return first_fit(tm, tc, 2 * node + 1, mid, nhi, lo, hi, m, c)


cdef int32_t search(Packer* p, const uint8_t* zone_used, bint strict, int32_t qx, int32_t qy,
                    int64_t m, double c) noexcept nogil:
    """Best-fit worker for one replica among the allowed groups, open pool first; or -1."""
    cdef int32_t g, best_g, best_sum, best_a, best_cell, w, pool
    for pool in range(2):
        best_g = -1
        best_sum = 2 * G_STEPS
        best_a = G_STEPS
        best_cell = -1
        if qx < G_STEPS and qy < G_STEPS:
            for g in range(p.G):
                if strict and g != p.zoneless and zone_used[g]:
                    continue
                if grid_best(p, g + pool * p.G, qx, qy, &best_sum, &best_a, &best_cell):
                    best_g = g
            if best_g >= 0:
                w = p.head[<Py_ssize_t>(best_g + pool * p.G) * L + best_cell]
                if p.fm[w] >= m and p.fc[w] >= c:
                    return w
        for g in range(p.G):
            if strict and g != p.zoneless and zone_used[g]:
                continue
            w = first_fit(p.tm + 2 * p.P * pool, p.tc + 2 * p.P * pool, 1, 0, p.P,
                          p.gptr[g], p.gptr[g + 1], m, c)
            if w >= 0:
                return w
    return -1


def pack(int64_t[::1] free_mem, double[::1] free_cpu, const uint8_t[::1] in_use,
         const int32_t[::1] group, const int64_t[::1] group_ptr, int32_t zoneless_group,
         double mhat, double chat,
         const int64_t[::1] mem, const double[::1] cpu, const int32_t[::1] need,
         const int64_t[::1] excl_ptr, const int32_t[::1] excl):
    """Place every item's missing replicas; ``free_mem``/``free_cpu`` are updated in place.

    Workers must be ordered by group (``group_ptr[g]:group_ptr[g+1]`` is group
    ``g``); ``zoneless_group`` is the group without zone anti-affinity (-1 if
    none); ``in_use[w]`` marks the workers that start open.

    Returns ``(out, out_ptr, status, found, max_free_mem, max_free_cpu)``:
    item ``i``'s workers are ``out[out_ptr[i]:out_ptr[i+1]]`` (-1 when
    unplaceable); for unplaceable items ``found`` is how many replicas had room
    (or how many workers were eligible) and ``max_free_*`` the largest free
    memory / cpu left on any worker.
    """
    cdef Py_ssize_t n = free_mem.shape[0], m_items = need.shape[0], i, k, t
    cdef int32_t G = group_ptr.shape[0] - 1
    out_ptr = np.zeros(m_items + 1, dtype=np.int64)
    np.cumsum(need, out=out_ptr[1:])
    out = np.full(out_ptr[m_items], -1, dtype=np.int32)
    status = np.zeros(m_items, dtype=np.int8)
    found_arr = np.zeros(m_items, dtype=np.int32)
    mfm = np.zeros(m_items, dtype=np.int64)
    mfc = np.zeros(m_items, dtype=np.float64)
    dom = np.maximum(np.asarray(mem, dtype=np.float64) / mhat, np.asarray(cpu) / chat)
    order = np.argsort(-dom, kind="stable").astype(np.int64)
    cdef const int64_t[::1] od = order
    cdef int64_t[::1] optr = out_ptr
    cdef int32_t[::1] o = out
    cdef int8_t[::1] st = status
    cdef int32_t[::1] fa = found_arr
    cdef int64_t[::1] mfm_v = mfm
    cdef double[::1] mfc_v = mfc
    cdef Packer p
    p.n = n
    p.P = 1
    while p.P < n:
        p.P <<= 1
    p.G = G
    p.zoneless = zoneless_group
    p.group = &group[0] if n else NULL
    p.fm = &free_mem[0] if n else NULL
    p.fc = &free_cpu[0] if n else NULL
    p.mhat = mhat
    p.chat = chat
    p.gptr = &group_ptr[0]
    pool_arr = np.where(np.asarray(in_use, dtype=bool), 0, 1).astype(np.uint8)
    cdef uint8_t[::1] pool_v = pool_arr
    p.pool = &pool_v[0] if n else NULL
    p.head = <int32_t*>malloc((2 * <Py_ssize_t>G * L + 1) * sizeof(int32_t))
    p.nxt = <int32_t*>malloc((n + 1) * sizeof(int32_t))
    p.prv = <int32_t*>malloc((n + 1) * sizeof(int32_t))
    p.lvl = <int32_t*>malloc((n + 1) * sizeof(int32_t))
    p.bits = <uint64_t*>calloc(2 * <Py_ssize_t>G * WORDS + 1, sizeof(uint64_t))
    p.summ = <uint64_t*>calloc(2 * G + 1, sizeof(uint64_t))
    p.tm = <int64_t*>malloc(4 * p.P * sizeof(int64_t))
    p.tc = <double*>malloc(4 * p.P * sizeof(double))
    cdef uint8_t* zone_used = <uint8_t*>calloc(G + 1, 1)
    cdef int32_t max_need = 1
    for i in range(m_items):
        if need[i] > max_need:
            max_need = need[i]
    cdef int32_t* chosen = <int32_t*>malloc(max_need * sizeof(int32_t))
    cdef int32_t w, qx, qy, r, nex, g
    cdef int64_t im
    cdef double ic, dq
    cdef bint ok
    try:
        if (p.head == NULL or p.nxt == NULL or p.prv == NULL or p.lvl == NULL or p.bits == NULL
                or p.summ == NULL or p.tm == NULL or p.tc == NULL or zone_used == NULL
                or chosen == NULL):
            raise MemoryError()
        with nogil:
            for k in range(2 * <Py_ssize_t>G * L):
                p.head[k] = -1
            for k in range(4 * p.P):
                p.tm[k] = -1
                p.tc[k] = -1.0
            for k in range(n - 1, -1, -1):
                # reverse order: the list head (taken first) is the lowest worker index
                link(&p, <int32_t>k)
            for k in range(n):
                p.tm[2 * p.P * p.pool[k] + p.P + k] = p.fm[k]
                p.tc[2 * p.P * p.pool[k] + p.P + k] = p.fc[k]
            for t in range(2):
                for k in range(p.P - 1, 0, -1):
                    i = 2 * p.P * t + k
                    p.tm[i] = p.tm[i + k] if p.tm[i + k] > p.tm[i + k + 1] else p.tm[i + k + 1]
                    p.tc[i] = p.tc[i + k] if p.tc[i + k] > p.tc[i + k + 1] else p.tc[i + k + 1]
            for t in range(m_items):
                i = od[t]
                if need[i] == 0:
                    continue
                im = mem[i]
                ic = cpu[i]
                nex = 0
                for k in range(excl_ptr[i], excl_ptr[i + 1]):
                    w = excl[k]
                    hide(&p, w)
                    nex += 1
                    g = p.group[w]
                    if g != p.zoneless:
                        zone_used[g] = 1
                if need[i] > n - nex:
                    st[i] = ST_TOO_FEW_WORKERS
                    fa[i] = <int32_t>(n - nex)
                    r = 0
                else:
                    dq = ceil(sqrt(im / mhat) * G_STEPS)
                    qx = G_STEPS if dq > G_STEPS else <int32_t>dq
                    dq = ceil(sqrt(ic / chat) * G_STEPS)
                    qy = G_STEPS if dq > G_STEPS else <int32_t>dq
                    ok = True
                    r = 0
                    while r < need[i]:
                        w = search(&p, zone_used, True, qx, qy, im, ic)
                        if w < 0:
                            w = search(&p, zone_used, False, qx, qy, im, ic)
                        if w < 0:
                            ok = False
                            break
                        hide(&p, w)
                        p.fm[w] -= im
                        p.fc[w] -= ic
                        g = p.group[w]
                        if g != p.zoneless:
                            zone_used[g] = 1
                        chosen[r] = w
                        o[optr[i] + r] = w
                        r += 1
                    if not ok:
                        st[i] = ST_NO_ROOM
                        fa[i] = r
                        for k in range(r):
                            p.fm[chosen[k]] += im
                            p.fc[chosen[k]] += ic
                            o[optr[i] + k] = -1
                    else:
                        for k in range(r):
                            p.pool[chosen[k]] = 0  # now in use: open
                for k in range(r):
                    show(&p, chosen[k])
                for k in range(excl_ptr[i], excl_ptr[i + 1]):
                    show(&p, excl[k])
                for g in range(G):
                    zone_used[g] = 0
                if st[i] != ST_OK:
                    mfm_v[i] = p.tm[1] if p.tm[1] > p.tm[2 * p.P + 1] else p.tm[2 * p.P + 1]
                    mfc_v[i] = p.tc[1] if p.tc[1] > p.tc[2 * p.P + 1] else p.tc[2 * p.P + 1]
    finally:
        free(p.head)
        free(p.nxt)
        free(p.prv)
        free(p.lvl)
        free(p.bits)
        free(p.summ)
        free(p.tm)
        free(p.tc)
        free(zone_used)
        free(chosen)
    return out, out_ptr, status, found_arr, mfm, mfc
