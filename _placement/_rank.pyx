# cython: language_level=3
"""Benefit ranking: benefit scores, top-k, budgeted greedy selection, hysteretic eviction.

Compute only; ``leibrix.placement`` validates (no NaN, no zero memory, budgets
>= 0) and converts. Orders are total and deterministic: higher score first,
ties broken by the lower index.
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.math cimport INFINITY
from libc.stdlib cimport free, malloc, qsort


def benefit(const double[::1] scan_cost, const double[::1] heat, const double[::1] memory):
    """``scan_cost * heat / memory`` element-wise (memory must be > 0)."""
    cdef Py_ssize_t n = scan_cost.shape[0], i
    out = np.empty(n, dtype=np.float64)
    cdef double[::1] o = out
    with nogil:
        for i in range(n):
            o[i] = scan_cost[i] * heat[i] / memory[i]
    return out


cdef struct Entry:
    double s
    int64_t i


cdef inline bint worse(Entry a, Entry b) noexcept nogil:
    """True when ``a`` ranks below ``b`` (lower score, or equal score and higher index)."""
    return a.s < b.s or (a.s == b.s and a.i > b.i)


cdef inline void sift_down(Entry* h, Py_ssize_t n, Py_ssize_t i) noexcept nogil:
    # min-heap on rank: the root is the worst of the kept candidates. Entries
    # carry their score, so sifting never reads the (large) score array.
    cdef Py_ssize_t c
    cdef Entry x = h[i]
    while True:
        c = 2 * i + 1
        if c >= n:
            break
        if c + 1 < n and worse(h[c + 1], h[c]):
            c += 1
        if not worse(h[c], x):
            break
        h[i] = h[c]
        i = c
    h[i] = x


cdef int cmp_entry(const void* a, const void* b) noexcept nogil:
    cdef const Entry* x = <const Entry*>a
    cdef const Entry* y = <const Entry*>b
    if worse(x[0], y[0]):
        return 1
    if worse(y[0], x[0]):
        return -1
    return 0


cdef Py_ssize_t top_k_heap(const double* scores, Py_ssize_t n, Py_ssize_t k, Entry* h) noexcept nogil:
    """Best ``k`` of ``n`` into ``h`` (best first) with a k-entry min-heap."""
    cdef Py_ssize_t i, j
    cdef Entry tmp
    cdef double worst
    for i in range(k):
        h[i].s = scores[i]
        h[i].i = i
    for i in range(k // 2 - 1, -1, -1):
        sift_down(h, k, i)
    worst = h[0].s
    for i in range(k, n):
        # a later index never beats an equal score: strict > suffices
        if scores[i] > worst:
            h[0].s = scores[i]
            h[0].i = i
            sift_down(h, k, 0)
            worst = h[0].s
    # heap sort: move the worst to the end repeatedly -> best first
    for j in range(k - 1, 0, -1):
        tmp = h[0]
        h[0] = h[j]
        h[j] = tmp
        sift_down(h, j, 0)
    return k


def top_k(const double[::1] scores, Py_ssize_t k):
    """Indices of the ``k`` best scores, best first.

    Fast path: a strided sample estimates a threshold slightly below the k-th
    best score, one pass collects every score at or above it (about 1.1 k of
    them) and only those are sorted. If the estimate misses (fewer than k or
    more than 2k collected) the exact k-entry heap runs instead; either way
    the result is the exact top k in the total order (score desc, index asc).
    """
    cdef Py_ssize_t n = scores.shape[0], i, got = 0, cap
    if k > n:
        k = n
    out = np.empty(k, dtype=np.int64)
    if k == 0:
        return out
    cdef int64_t[::1] o = out
    cdef double thr = -INFINITY
    cdef bint sampled = n >= 1 << 16 and k * 4 <= n
    if sampled:
        stride = n // 65536
        sample = np.asarray(scores[::stride])
        want = int(k * len(sample) / n)
        want = min(len(sample) - 1, want + 3 * int(want ** 0.5) + 8)
        thr = float(np.partition(sample, len(sample) - 1 - want)[len(sample) - 1 - want])
    cap = 2 * k + 16
    cdef Entry* h = <Entry*>malloc(cap * sizeof(Entry))
    if h == NULL:
        raise MemoryError()
    try:
        with nogil:
            if sampled:
                for i in range(n):
                    if scores[i] >= thr:
                        if got == cap:
                            got = -1
                            break
                        h[got].s = scores[i]
                        h[got].i = i
                        got += 1
            if got >= k:
                qsort(h, got, sizeof(Entry), cmp_entry)
            else:
                top_k_heap(&scores[0], n, k, h)
            for i in range(k):
                o[i] = h[i].i
    finally:
        free(h)
    return out


def select_within_budgets(const double[::1] benefit, const int64_t[::1] memory,
                          const double[::1] cpu, const int32_t[::1] tenant,
                          const int64_t[::1] tenant_memory, const double[::1] tenant_cpu,
                          int64_t global_memory, double global_cpu):
    """Greedy by benefit (best first): take a candidate if it fits its tenant's and the global budget.

    Returns the selected indices in selection order.
    """
    cdef Py_ssize_t n = benefit.shape[0], i, t, taken = 0
    order = np.lexsort((np.arange(n), -np.asarray(benefit)))
    cdef const int64_t[::1] od = order
    tm = np.array(tenant_memory, dtype=np.int64)
    tc = np.array(tenant_cpu, dtype=np.float64)
    cdef int64_t[::1] tmv = tm
    cdef double[::1] tcv = tc
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef int32_t tn
    with nogil:
        for t in range(n):
            i = od[t]
            tn = tenant[i]
            if (memory[i] <= global_memory and cpu[i] <= global_cpu
                    and memory[i] <= tmv[tn] and cpu[i] <= tcv[tn]):
                global_memory -= memory[i]
                global_cpu -= cpu[i]
                tmv[tn] -= memory[i]
                tcv[tn] -= cpu[i]
                o[taken] = i
                taken += 1
    return out[:taken]


def eviction(const double[::1] res_benefit, const int64_t[::1] res_memory,
             const double[::1] res_cpu, const double[::1] cand_benefit,
             const int64_t[::1] cand_memory, const double[::1] cand_cpu,
             int64_t free_memory, double free_cpu, double hysteresis):
    """Which residents to evict so that better candidates fit.

    Candidates are considered best first, residents are evicted cheapest
    first. A candidate that fits in the free space is admitted; otherwise the
    shortest run of next-cheapest residents that frees enough memory and cpu
    is evicted for it, but only if the candidate's benefit is at least
    ``hysteresis`` times the benefit of every resident in that run (so of the
    last, most valuable one); otherwise the candidate is skipped.

    Returns ``(evicted resident indices, admitted candidate indices)``, each in order.
    """
    cdef Py_ssize_t nr = res_benefit.shape[0], nc = cand_benefit.shape[0], t, i
    rorder = np.lexsort((np.arange(nr), np.asarray(res_benefit)))
    corder = np.lexsort((np.arange(nc), -np.asarray(cand_benefit)))
    pm = np.zeros(nr + 1, dtype=np.int64)
    pc = np.zeros(nr + 1, dtype=np.float64)
    cdef const int64_t[::1] ro = rorder
    cdef const int64_t[::1] co = corder
    cdef int64_t[::1] pmv = pm
    cdef double[::1] pcv = pc
    evicted = np.empty(nr, dtype=np.int64)
    admitted = np.empty(nc, dtype=np.int64)
    cdef int64_t[::1] ev = evicted
    cdef int64_t[::1] ad = admitted
    cdef Py_ssize_t e = 0, n_adm = 0, lo, hi, mid, j
    cdef int64_t need_m
    cdef double need_c
    with nogil:
        for t in range(nr):
            pmv[t + 1] = pmv[t] + res_memory[ro[t]]
            pcv[t + 1] = pcv[t] + res_cpu[ro[t]]
        for t in range(nc):
            i = co[t]
            need_m = cand_memory[i] - free_memory
            need_c = cand_cpu[i] - free_cpu
            if need_m <= 0 and need_c <= 0:
                free_memory -= cand_memory[i]
                free_cpu -= cand_cpu[i]
                ad[n_adm] = i
                n_adm += 1
                continue
            # smallest j > e with prefix[j] - prefix[e] covering both needs
            lo = e + 1
            hi = nr + 1
            while lo < hi:
                mid = (lo + hi) >> 1
                if pmv[mid] - pmv[e] >= need_m and pcv[mid] - pcv[e] >= need_c:
                    hi = mid
                else:
                    lo = mid + 1
            j = lo
            if j > nr:
                continue
            if cand_benefit[i] < hysteresis * res_benefit[ro[j - 1]]:
                continue
            free_memory += pmv[j] - pmv[e] - cand_memory[i]
            free_cpu += pcv[j] - pcv[e] - cand_cpu[i]
            while e < j:
                ev[e] = ro[e]
                e += 1
            ad[n_adm] = i
            n_adm += 1
    return evicted[:e], admitted[:n_adm]
