"""The pure-Python twin of ``_placement``: the same algorithms, written to be read.

Every function here has the signature and the exact output of its compiled
counterpart (``_placement._hash``, ``._ring``, ``._pack``, ``._rank``), and none
of the speed. Property tests run random inputs through both and require equal
results, so the twin is the executable specification of the compiled code;
benchmarks use it as the "plain Python" baseline. Loops here are deliberately
naive (full walks, linear scans) where the compiled code is clever (indexes,
bitmaps, segment trees): when they agree, the clever version is right.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Sequence

import numpy as np

OK, TOO_FEW_WORKERS, NO_ROOM = 0, 1, 2
GRID = 64

_M64 = (1 << 64) - 1
_P1, _P2, _P3 = 0x9E3779B185EBCA87, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9
_P4, _P5 = 0x85EBCA77C2B2AE63, 0x27D4EB2F165667C5


# -- hashing -------------------------------------------------------------------------------------


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(acc: int, lane: int) -> int:
    return (_rotl((acc + lane * _P2) & _M64, 31) * _P1) & _M64


def _key_bytes(key: object, index: int) -> bytes:
    if isinstance(key, str):
        return key.encode("utf-8")
    if isinstance(key, bytes):
        return key
    raise TypeError(f"keys[{index}] must be str or bytes, got {type(key).__name__}")


def hash64(key: str | bytes, seed: int = 0) -> int:
    """XXH64 (the reference algorithm from the xxHash spec) of a str (UTF-8) or bytes key."""
    data = _key_bytes(key, 0)
    n, p = len(data), 0
    if n >= 32:
        v = [(seed + _P1 + _P2) & _M64, (seed + _P2) & _M64, seed, (seed - _P1) & _M64]
        while p + 32 <= n:
            for lane in range(4):
                v[lane] = _round(v[lane], int.from_bytes(data[p + 8 * lane: p + 8 * lane + 8], "little"))
            p += 32
        h = (_rotl(v[0], 1) + _rotl(v[1], 7) + _rotl(v[2], 12) + _rotl(v[3], 18)) & _M64
        for lane in v:
            h = ((h ^ _round(0, lane)) * _P1 + _P4) & _M64
    else:
        h = (seed + _P5) & _M64
    h = (h + n) & _M64
    while p + 8 <= n:
        h ^= _round(0, int.from_bytes(data[p: p + 8], "little"))
        h = (_rotl(h, 27) * _P1 + _P4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p: p + 4], "little") * _P1) & _M64
        h = (_rotl(h, 23) * _P2 + _P3) & _M64
        p += 4
    while p < n:
        h ^= (data[p] * _P5) & _M64
        h = (_rotl(h, 11) * _P1) & _M64
        p += 1
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    return h ^ (h >> 32)


def hash_keys(keys: list, seed: int = 0) -> np.ndarray:
    """``hash64`` of every key as a ``uint64`` array."""
    for i, k in enumerate(keys):
        _key_bytes(k, i)
    return np.array([hash64(k, seed) for k in keys], dtype=np.uint64)


# -- ring ----------------------------------------------------------------------------------------


class Ring:
    """The ring as a sorted list of (point, slot), rebuilt from scratch on every change."""

    def __init__(self) -> None:
        self._slots: dict[int, tuple[bytes, int]] = {}
        self._rebuild()

    @property
    def vnodes(self) -> np.ndarray:
        """Vnode count per slot."""
        size = max(self._slots, default=-1) + 1
        out = np.zeros(size, dtype=np.int64)
        for slot, (_, count) in self._slots.items():
            out[slot] = count
        return out

    def build(self, names: list[bytes], counts) -> None:
        """Replace the ring: slot ``i`` is ``names[i]`` with ``counts[i]`` vnodes."""
        self._slots = {i: (name, int(c)) for i, (name, c) in enumerate(zip(names, counts))}
        self._rebuild()

    def set_vnodes(self, slot: int, name: bytes, count: int) -> None:
        """Give ``slot`` exactly ``count`` vnodes."""
        self._slots[slot] = (name, count)
        self._rebuild()

    def _rebuild(self) -> None:
        pairs = sorted(
            (hash64(name, j), slot) for slot, (name, count) in self._slots.items() for j in range(count)
        )
        self._points = [p for p, _ in pairs]
        self._owners = [s for _, s in pairs]
        self.points = np.array(self._points, dtype=np.uint64)
        self.owners = np.array(self._owners, dtype=np.int32)

    def _successor(self, h: int) -> int:
        i = bisect_left(self._points, h)
        return 0 if i == len(self._points) else i

    def start_positions(self, hashes) -> np.ndarray:
        """Successor vnode position of each hash."""
        return np.array([self._successor(int(h)) for h in hashes], dtype=np.int64)

    def lookup_hashes(self, hashes) -> np.ndarray:
        """Owner slot of each pre-hashed key."""
        return np.array([self._owners[self._successor(int(h))] for h in hashes], dtype=np.int32)

    def lookup_keys(self, keys: list, seed: int = 0) -> np.ndarray:
        """Owner slot of each str/bytes key."""
        return self.lookup_hashes(hash_keys(keys, seed))


def place_walk(seq, starts, cursor, zone, member, mem, cpu, need, excl_ptr, excl,
               free_mem, free_cpu, load, cap):
    """Walk placement (ring or round-robin), as ``_placement._ring.place_walk``.

    For each item: list the distinct slots met walking once around ``seq``
    from its start, skipping current holders; keep those that pass the filters;
    take workers in zones the item does not use yet first (one per zone, walk
    order), then, if still short, the passed-over ones in walk order.
    """
    seq = [int(s) for s in seq]
    n_slots = len(zone)
    members = [s for s in range(n_slots) if len(member) == 0 or member[s]]
    n_live = len(members)
    out_ptr = np.zeros(len(need) + 1, dtype=np.int64)
    np.cumsum(need, out=out_ptr[1:])
    out = np.full(int(out_ptr[-1]), -1, dtype=np.int32)
    status = np.zeros(len(need), dtype=np.int8)
    counts = np.zeros((len(need), 4), dtype=np.int32)
    rr = len(starts) == 0
    for i in range(len(need)):
        r = int(need[i])
        if r == 0:
            continue
        holders = list(dict.fromkeys(int(s) for s in excl[excl_ptr[i]: excl_ptr[i + 1]]))
        if r > n_live - sum(1 for s in holders if s in set(members)):
            status[i] = TOO_FEW_WORKERS
            counts[i, 0] = n_live - sum(1 for s in holders if s in set(members))
            continue
        start = int(cursor if rr else starts[i])
        used_zones = {int(zone[s]) for s in holders}
        visited: list[tuple[int, int]] = []  # (slot, position just after it)
        seen = set(holders)
        for step in range(len(seq)):
            s = seq[(start + step) % len(seq)]
            if s not in seen:
                seen.add(s)
                visited.append((s, (start + step + 1) % len(seq)))
        accepted, deferred = [], []
        n_mem = n_cpu = n_cap = 0
        for s, after in visited:
            if load is not None and load[s] >= cap[s]:
                n_cap += 1
            elif free_mem is not None and free_mem[s] < mem[i]:
                n_mem += 1
            elif free_mem is not None and free_cpu[s] < cpu[i]:
                n_cpu += 1
            elif int(zone[s]) not in used_zones:
                used_zones.add(int(zone[s]))
                accepted.append((s, after))
                if len(accepted) == r:
                    break
            else:
                deferred.append((s, after))
        chosen = (accepted + deferred)[:r]
        if len(chosen) < r:
            status[i] = NO_ROOM
            counts[i] = (len(chosen), n_mem, n_cpu, n_cap)
            continue
        # the cursor moves past the chosen worker met last in the walk
        order = {s: k for k, (s, _) in enumerate(visited)}
        cursor = max(chosen, key=lambda sa: order[sa[0]])[1] if rr else cursor
        for k, (s, _) in enumerate(chosen):
            out[out_ptr[i] + k] = s
            if free_mem is not None:
                free_mem[s] -= mem[i]
                free_cpu[s] -= cpu[i]
            if load is not None:
                load[s] += 1
    return out, out_ptr, status, counts, cursor


# -- packing -------------------------------------------------------------------------------------


def item_order(mem, cpu, mhat: float, chat: float) -> list[int]:
    """Size classes of the dominant share, largest first; memory- and cpu-heavy merged in proportion."""
    classes: dict[tuple[float, bool], list[tuple[float, int]]] = {}
    for i in range(len(mem)):
        x, y = int(mem[i]) / mhat, float(cpu[i]) / chat
        d = max(x, y)
        classes.setdefault((math.floor(math.sqrt(d) * GRID), y > x), []).append((d, i))
    entries = []
    for (size_class, heavy), members in classes.items():
        members.sort(key=lambda di: (-di[0], di[1]))
        entries += [(-size_class, rank / len(members), heavy, i) for rank, (_, i) in enumerate(members)]
    return [i for *_, i in sorted(entries)]


def pack(free_mem, free_cpu, in_use, group, group_ptr, zoneless_group, mhat, chat, mem, cpu, need,
         excl_ptr, excl):
    """Best-fit decreasing in two dimensions, as ``_placement._pack.pack``.

    Workers sit in lists by (pool, group, grid cell of their free vector, on a
    square-root scale);
    pool 0 holds the open workers (in use), pool 1 the untouched ones. A
    worker is appended to its cell's list when it becomes visible and the
    *last* one is taken (the compiled code links at the head of an intrusive
    list: same order). Best fit: among cells guaranteed to fit, a cpu-heavy
    item takes the least (A, B), a memory-heavy one the least (B, A); then the
    lowest group.
    """
    n, n_groups = len(free_mem), len(group_ptr) - 1
    pool = [0 if in_use[w] else 1 for w in range(n)]
    cells = {(pl, g): {} for pl in (0, 1) for g in range(n_groups)}  # -> (A, B) -> [workers]
    cell_of_worker: list[tuple[int, int]] = [(-1, -1)] * n
    visible = [False] * n

    def step(v: float) -> int:
        return 0 if v <= 0 else min(GRID - 1, math.floor(math.sqrt(v) * GRID))

    def show(w: int) -> None:
        cell = (step(free_mem[w] / mhat), step(free_cpu[w] / chat))
        cell_of_worker[w] = cell
        cells[pool[w], group[w]].setdefault(cell, []).append(w)
        visible[w] = True

    def hide(w: int) -> None:
        cells[pool[w], group[w]][cell_of_worker[w]].remove(w)
        visible[w] = False

    def fits(w: int, m: int, c: float) -> bool:
        return free_mem[w] >= m and free_cpu[w] >= c

    def search(strict: bool, qx: int, qy: int, cpu_heavy: bool, m: int, c: float, zone_used: set[int]) -> int:
        allowed = [g for g in range(n_groups) if not (strict and g != zoneless_group and g in zone_used)]
        for pl in (0, 1):
            if qx < GRID and qy < GRID:
                # complementary best fit: a cpu-heavy item goes where the least memory is left
                # (then the least cpu), a memory-heavy one where the least cpu is left
                guaranteed = [((a, b) if cpu_heavy else (b, a), g, (a, b)) for g in allowed
                              for (a, b), ws in cells[pl, g].items() if ws and a >= qx and b >= qy]
                if guaranteed:
                    _, g, cell = min(guaranteed)
                    w = cells[pl, g][cell][-1]
                    if fits(w, m, c):
                        return w
            for g in allowed:
                for w in range(group_ptr[g], group_ptr[g + 1]):
                    if visible[w] and pool[w] == pl and fits(w, m, c):
                        return w
        return -1

    for w in reversed(range(n)):
        show(w)
    m_items = len(need)
    out_ptr = np.zeros(m_items + 1, dtype=np.int64)
    np.cumsum(need, out=out_ptr[1:])
    out = np.full(int(out_ptr[-1]), -1, dtype=np.int32)
    status = np.zeros(m_items, dtype=np.int8)
    found = np.zeros(m_items, dtype=np.int32)
    max_free_mem = np.zeros(m_items, dtype=np.int64)
    max_free_cpu = np.zeros(m_items, dtype=np.float64)
    for i in item_order(mem, cpu, mhat, chat):
        r_need, m, c = int(need[i]), int(mem[i]), float(cpu[i])
        if r_need == 0:
            continue
        holders = [int(w) for w in excl[excl_ptr[i]: excl_ptr[i + 1]]]
        zone_used = {group[w] for w in holders if group[w] != zoneless_group}
        for w in holders:
            hide(w)
        chosen: list[int] = []
        if r_need > n - len(holders):
            status[i], found[i] = TOO_FEW_WORKERS, n - len(holders)
        else:
            qx = min(GRID, math.ceil(math.sqrt(m / mhat) * GRID))
            qy = min(GRID, math.ceil(math.sqrt(c / chat) * GRID))
            heavy = c / chat > m / mhat
            while len(chosen) < r_need:
                w = search(True, qx, qy, heavy, m, c, zone_used)
                if w < 0:
                    w = search(False, qx, qy, heavy, m, c, zone_used)
                if w < 0:
                    break
                hide(w)
                free_mem[w] -= m
                free_cpu[w] -= c
                if group[w] != zoneless_group:
                    zone_used.add(group[w])
                chosen.append(w)
            if len(chosen) < r_need:
                status[i], found[i] = NO_ROOM, len(chosen)
                for w in chosen:
                    free_mem[w] += m
                    free_cpu[w] += c
            else:
                out[out_ptr[i]: out_ptr[i + 1]] = chosen
                for w in chosen:
                    pool[w] = 0
        for w in chosen + holders:
            show(w)
        if status[i] != OK:
            max_free_mem[i] = max((int(x) for x in free_mem), default=-1)
            max_free_cpu[i] = max((float(x) for x in free_cpu), default=-1.0)
    return out, out_ptr, status, found, max_free_mem, max_free_cpu


# -- ranking -------------------------------------------------------------------------------------


def benefit(scan_cost, heat, memory) -> np.ndarray:
    """``scan_cost * heat / memory`` element-wise."""
    return np.array([s * h / m for s, h, m in zip(scan_cost, heat, memory)], dtype=np.float64)


def _best_first(scores: Sequence[float]) -> list[int]:
    return sorted(range(len(scores)), key=lambda i: (-scores[i], i))


def top_k(scores, k: int) -> np.ndarray:
    """Indices of the ``k`` best scores, best first (ties: lower index first)."""
    return np.array(_best_first([float(s) for s in scores])[:k], dtype=np.int64)


def select_within_budgets(benefit, memory, cpu, tenant, tenant_memory, tenant_cpu,
                          global_memory, global_cpu) -> np.ndarray:
    """Greedy best-first selection that keeps every budget non-negative."""
    t_mem = [int(x) for x in tenant_memory]
    t_cpu = [float(x) for x in tenant_cpu]
    taken = []
    for i in _best_first([float(b) for b in benefit]):
        m, c, t = int(memory[i]), float(cpu[i]), int(tenant[i])
        if m <= global_memory and c <= global_cpu and m <= t_mem[t] and c <= t_cpu[t]:
            global_memory -= m
            global_cpu -= c
            t_mem[t] -= m
            t_cpu[t] -= c
            taken.append(i)
    return np.array(taken, dtype=np.int64)


def eviction(res_benefit, res_memory, res_cpu, cand_benefit, cand_memory, cand_cpu,
             free_memory, free_cpu, hysteresis):
    """Evict cheapest residents for the best candidates that beat them by ``hysteresis``."""
    residents = sorted(range(len(res_benefit)), key=lambda i: (float(res_benefit[i]), i))
    prefix_mem, prefix_cpu = [0], [0.0]
    for r in residents:
        prefix_mem.append(prefix_mem[-1] + int(res_memory[r]))
        prefix_cpu.append(prefix_cpu[-1] + float(res_cpu[r]))
    evicted, admitted, e = [], [], 0
    for i in _best_first([float(b) for b in cand_benefit]):
        need_m = int(cand_memory[i]) - free_memory
        need_c = float(cand_cpu[i]) - free_cpu
        if need_m <= 0 and need_c <= 0:
            free_memory -= int(cand_memory[i])
            free_cpu -= float(cand_cpu[i])
            admitted.append(i)
            continue
        j = next((j for j in range(e + 1, len(residents) + 1)
                  if prefix_mem[j] - prefix_mem[e] >= need_m and prefix_cpu[j] - prefix_cpu[e] >= need_c),
                 None)
        if j is None or float(cand_benefit[i]) < hysteresis * float(res_benefit[residents[j - 1]]):
            continue
        free_memory += prefix_mem[j] - prefix_mem[e] - int(cand_memory[i])
        free_cpu += prefix_cpu[j] - prefix_cpu[e] - float(cand_cpu[i])
        evicted.extend(residents[e:j])
        e = j
        admitted.append(i)
    return np.array(evicted, dtype=np.int64), np.array(admitted, dtype=np.int64)
