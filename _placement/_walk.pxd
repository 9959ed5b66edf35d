# cython: language_level=3
"""The clockwise walk shared by ring replicas, bounded load, hash and round-robin placement.

A walk visits worker slots in a fixed sequence (the ring's vnode owners from a
key's successor, or the worker list from the round-robin cursor) and picks the
first ``need`` distinct workers that pass the filters (room for the item's
memory and cpu, under the bounded-load cap). Zones are a preference, not a
hard rule: workers in a zone not yet used by the item are taken first; a
worker in an already-used zone is only taken (in walk order) when the walk
proves that no unused zone can still supply one. Zoneless workers carry a
unique zone id each, so they never conflict.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t

cdef struct Walk:
    const int32_t* seq        # slot per position
    Py_ssize_t seq_len
    const uint8_t* member     # 1 if the slot appears in seq; NULL = every slot
    const int32_t* zone       # zone id per slot
    int32_t n_live            # distinct slots in seq
    int32_t n_zones           # distinct zone ids among them
    int64_t* free_mem         # NULL: capacity ignored
    double* free_cpu
    int64_t* load             # NULL: no bounded-load cap
    const int64_t* cap
    uint8_t* seen             # scratch per slot (zero between walks)
    uint8_t* zone_used        # scratch per zone id (zero between walks)
    int32_t* touched          # scratch, one per slot
    int32_t* ztouched         # scratch, one per zone id
    int32_t* deferred         # scratch, one per wanted replica
    Py_ssize_t* dstep
    Py_ssize_t nt, nzt
    int32_t pre_members, pre_zones
    int32_t n_mem, n_cpu, n_cap   # distinct workers rejected by each filter


cdef inline void walk_exclude(Walk* w, const int32_t* excl, Py_ssize_t n_excl) noexcept nogil:
    """Start a walk: the item's current holders are skipped and their zones count as used."""
    cdef Py_ssize_t i
    cdef int32_t s, z
    cdef bint member
    w.pre_members = 0
    w.pre_zones = 0
    for i in range(n_excl):
        s = excl[i]
        if w.seen[s]:
            continue
        w.seen[s] = 1
        w.touched[w.nt] = s
        w.nt += 1
        member = w.member == NULL or w.member[s]
        if member:
            w.pre_members += 1
        z = w.zone[s]
        if not w.zone_used[z]:
            w.zone_used[z] = 1
            w.ztouched[w.nzt] = z
            w.nzt += 1
            # Only zones that can occur in the walk count towards "all zones used".
            if member:
                w.pre_zones += 1


cdef inline void walk_reset(Walk* w) noexcept nogil:
    """Clear the scratch marks touched by the last walk (cost: what it touched)."""
    cdef Py_ssize_t i
    for i in range(w.nt):
        w.seen[w.touched[i]] = 0
    for i in range(w.nzt):
        w.zone_used[w.ztouched[i]] = 0
    w.nt = 0
    w.nzt = 0


cdef inline int32_t walk_select(Walk* w, Py_ssize_t start, int32_t need, int64_t mem,
                                double cpu, int32_t* out, Py_ssize_t* end) noexcept nogil:
    """Pick up to ``need`` workers walking from ``start``; returns how many were found.

    ``end`` receives the position just after the last worker taken (the next
    round-robin cursor).
    """
    cdef Py_ssize_t pos = start, steps = 0, last = 0
    cdef int32_t acc = 0, ndef = 0, s, z, i
    cdef int32_t distinct = w.pre_members, zused = w.pre_zones
    w.n_mem = 0
    w.n_cpu = 0
    w.n_cap = 0
    while acc < need and steps < w.seq_len and distinct < w.n_live:
        s = w.seq[pos]
        pos += 1
        if pos == w.seq_len:
            pos = 0
        steps += 1
        if w.seen[s]:
            continue
        w.seen[s] = 1
        w.touched[w.nt] = s
        w.nt += 1
        distinct += 1
        if w.load != NULL and w.load[s] >= w.cap[s]:
            w.n_cap += 1
            continue
        if w.free_mem != NULL and w.free_mem[s] < mem:
            w.n_mem += 1
            continue
        if w.free_cpu != NULL and w.free_cpu[s] < cpu:
            w.n_cpu += 1
            continue
        z = w.zone[s]
        if not w.zone_used[z]:
            w.zone_used[z] = 1
            w.ztouched[w.nzt] = z
            w.nzt += 1
            zused += 1
            out[acc] = s
            acc += 1
            last = steps
        elif ndef < need:
            w.deferred[ndef] = s
            w.dstep[ndef] = steps
            ndef += 1
        if acc + ndef >= need and zused >= w.n_zones:
            break
    i = 0
    while acc < need and i < ndef:
        out[acc] = w.deferred[i]
        if w.dstep[i] > last:
            last = w.dstep[i]
        acc += 1
        i += 1
    if w.seq_len > 0:
        end[0] = (start + last) % w.seq_len
    else:
        end[0] = 0
    return acc


# Item status codes shared by every placer (mirrored by the twin and the facade).
cdef enum:
    ST_OK = 0
    ST_TOO_FEW_WORKERS = 1     # fewer eligible distinct workers than missing replicas
    ST_NO_ROOM = 2             # enough workers, but not enough with room
