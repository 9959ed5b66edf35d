# cython: language_level=3
"""Capacity-aware vector packing: best-fit decreasing in two dimensions.

Compute only; ``leibrix.placement`` validates and converts.

Measure. With ``M`` and ``C`` the largest worker memory and cpu capacities, an
item is the vector ``(x, y) = (mem/M, cpu/C)``; its size is its *dominant
share* ``d = max(x, y)`` and it is *cpu-heavy* when ``y > x``. A worker's free
vector is ``(a, b) = (free_mem/M, free_cpu/C)``.

Order (``item_order``): large items first, by size class of ``d``; within a
class memory-heavy and cpu-heavy items are interleaved, so that the two
resources are consumed together.

Choice. Workers already in use are *open*, untouched ones *closed*, as bins in
bin packing: a replica goes to an open worker whenever one fits, and a closed
worker is opened only when none does. Within a pool the choice is
*complementary best fit* on a ``GRID x GRID`` grid of free vectors (cell
``(A, B) = (floor(sqrt(a)*GRID), floor(sqrt(b)*GRID))``; the square root makes
cells fine where little is free; cells at or above ``(ceil(sqrt(x)*GRID),
ceil(sqrt(y)*GRID))`` are guaranteed to fit): a cpu-heavy item goes to the
worker with the least memory left (least ``(A, B)``), a memory-heavy one to
the worker with the least cpu left (least ``(B, A)``). Each item thus finishes
off the resource its host has in excess, and workers fill in both dimensions.
When no cell is guaranteed (the item is within one grid step of what is left),
an exact search takes the first worker of the pool, in worker order, with
both resources free.

Structures (per pool, and per *group*: one per zone plus one for zoneless
workers): one intrusive list of workers per grid cell, 64-bit occupancy masks
per grid row and per grid column plus a mask of non-empty rows and one of
non-empty columns (a best-fit probe is at most GRID find-next-set-bit steps,
usually one); and per pool a segment tree over all workers, ordered by group,
holding the max free memory and cpu of each subtree for the exact search
(O(log n) per probe; subtrees that cannot fit are pruned). A replica search
costs O(groups x GRID + log n), independent of the item count.

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
    uint64_t* summ       # 2 * G: non-empty rows
    uint64_t* cbits      # 2 * G * WORDS: column masks (bit A of column B)
    uint64_t* csumm      # 2 * G: non-empty columns
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
    p.cbits[g * WORDS + (l & 63)] |= (<uint64_t>1) << (l >> 6)
    p.csumm[g] |= (<uint64_t>1) << (l & 63)


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
        p.cbits[g * WORDS + (l & 63)] &= ~((<uint64_t>1) << (l >> 6))
        if p.cbits[g * WORDS + (l & 63)] == 0:
            p.csumm[g] &= ~((<uint64_t>1) << (l & 63))
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


cdef inline int32_t grid_first(const uint64_t* masks, uint64_t nonempty, int32_t q1,
                               int32_t q2) noexcept nogil:
    """Least (major, minor) cell with major >= q1 and minor >= q2, as major * 64 + minor; or -1.

    ``masks[major]`` has bit ``minor`` set for non-empty cells; ``nonempty``
    has bit ``major`` set when ``masks[major]`` is non-zero. Used on rows
    (major = memory step) or on columns (major = cpu step).
    """
    cdef uint64_t lines = nonempty & ((~(<uint64_t>0)) << q1)
    cdef uint64_t hit
    cdef int32_t major
    while lines:
        major = ctz64(lines)
        hit = masks[major] & ((~(<uint64_t>0)) << q2)
        if hit:
            return major * G_STEPS + ctz64(hit)
        lines &= lines - 1
    return -1


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
                    bint cpu_heavy, int64_t m, double c) noexcept nogil:
    """Best-fit worker for one replica among the allowed groups, open pool first; or -1."""
    cdef int32_t g, gg, best_g, best_key, key, cell, best_cell, w, pool
    for pool in range(2):
        best_g = -1
        best_key = 1 << 30
        best_cell = -1
        if qx < G_STEPS and qy < G_STEPS:
            for g in range(p.G):
                if strict and g != p.zoneless and zone_used[g]:
                    continue
                gg = g + pool * p.G
                if cpu_heavy:  # least memory left, then least cpu
                    key = grid_first(&p.bits[<Py_ssize_t>gg * WORDS], p.summ[gg], qx, qy)
                    cell = key
                else:          # least cpu left, then least memory
                    key = grid_first(&p.cbits[<Py_ssize_t>gg * WORDS], p.csumm[gg], qy, qx)
                    cell = (key & 63) * G_STEPS + (key >> 6) if key >= 0 else -1
                if key >= 0 and key < best_key:
                    best_key = key
                    best_cell = cell
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


def item_order(mem, cpu, double mhat, double chat):
    """The order items are placed in: large first, memory- and cpu-heavy items interleaved.

    Items fall into size classes ``floor(sqrt(d) * GRID)`` of their dominant
    share ``d``, largest class first. Within a class, memory-heavy and
    cpu-heavy items (``cpu/C > mem/M``) are each sorted by ``d`` descending and
    merged in proportion (by rank / count), so a run of same-sized cpu-heavy
    epochs cannot fill fresh workers with cpu alone while their memory idles.
    Ties: input order.
    """
    n = len(mem)
    x = np.asarray(mem, dtype=np.float64) / mhat
    y = np.asarray(cpu, dtype=np.float64) / chat
    d = np.maximum(x, y)
    size_class = np.floor(np.sqrt(d) * G_STEPS)
    heavy = (y > x).astype(np.int64)
    idx = np.arange(n)
    first = np.lexsort((idx, -d, heavy, -size_class))
    group = (size_class * 2 + heavy)[first]
    change = np.ones(n, dtype=bool)
    change[1:] = group[1:] != group[:-1]
    starts = np.flatnonzero(change)
    sizes = np.diff(np.append(starts, n))
    start_of = np.repeat(starts, sizes)
    frac = (np.arange(n) - start_of) / np.repeat(sizes, sizes).astype(np.float64)
    final = np.lexsort((idx[first], heavy[first], frac, -size_class[first]))
    return first[final].astype(np.int64)


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
    order = item_order(mem, cpu, mhat, chat)
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
    p.cbits = <uint64_t*>calloc(2 * <Py_ssize_t>G * WORDS + 1, sizeof(uint64_t))
    p.csumm = <uint64_t*>calloc(2 * G + 1, sizeof(uint64_t))
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
    cdef bint ok, heavy
    try:
        if (p.head == NULL or p.nxt == NULL or p.prv == NULL or p.lvl == NULL or p.bits == NULL
                or p.summ == NULL or p.cbits == NULL or p.csumm == NULL or p.tm == NULL or p.tc == NULL or zone_used == NULL
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
                    heavy = ic / chat > im / mhat
                    dq = ceil(sqrt(im / mhat) * G_STEPS)
                    qx = G_STEPS if dq > G_STEPS else <int32_t>dq
                    dq = ceil(sqrt(ic / chat) * G_STEPS)
                    qy = G_STEPS if dq > G_STEPS else <int32_t>dq
                    ok = True
                    r = 0
                    while r < need[i]:
                        w = search(&p, zone_used, True, qx, qy, heavy, im, ic)
                        if w < 0:
                            w = search(&p, zone_used, False, qx, qy, heavy, im, ic)
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
        free(p.cbits)
        free(p.csumm)
        free(p.tm)
        free(p.tc)
        free(zone_used)
        free(chosen)
    return out, out_ptr, status, found_arr, mfm, mfc
