"""Scheduling passes: which PENDING epochs load now, and where every missing replica goes.

One pass (``Scheduler.schedule_locked``), run whenever something changed and
on retry timers:

1. **Repair**: charged epochs with fewer live replicas than their replication
   factor (a worker died, a load failed) get the missing replicas, placed with
   the epoch's strategy and ``existing=`` the survivors (minimal movement).
2. **Residency by benefit**: PENDING epochs, highest benefit first (tenant
   priority breaks ties), are loaded when their tenant's hard budget has room
   and the strategy finds workers in the tenant's pool. When the pool is
   full, a candidate may displace resident epochs (of any tenant sharing the
   pool) whose benefit is lower by at least the hysteresis factor; displaced
   epochs go back to PENDING and are evicted. Budgets are never loosened for
   this: benefit decides *among* tenants, quotas bound *each* tenant.

**Guaranteed memory.** Another tenant's epochs are displaceable only as far
as that tenant holds memory above its ``guaranteed_memory_bytes``
(``leibrix.domain._tenants.displaceable``; its lowest-benefit residents
first), so no benefit, however high, takes a tenant below its guarantee. A
candidate whose tenant is still within its own guarantee comes first in the
pass and claims its room from the memory other tenants hold above theirs
*whatever the benefits* (the lowest-benefit residents go first). Every
eviction is logged with the two benefits behind it.

An epoch that finds no room simply stays PENDING: capacity is waited for,
never a reason to give up on an epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Iterable, Sequence

import trio

from leibrix import placement as pl
from leibrix.control._ledger import Ledger, live_replicas
from leibrix.domain._lifecycle import State
from leibrix.domain._tenants import NO_AMOUNT, Amount, below_guarantee, budget_shortfall, displaceable
from leibrix.state._model import ASSIGNED, Epoch, EpochKey, Replica, epoch_name
from leibrix.store._etcd import EtcdRefused, EtcdUnavailable

__all__ = ["Round", "Scheduler"]

log = logging.getLogger(__name__)


def _per_replica(ledger: Ledger, e: Epoch) -> Amount:
    """What one replica of ``e`` occupies on its worker (in expected bytes: ``Ledger.expected_bytes``)."""
    return Amount(1, ledger.expected_bytes(e), e.cpu_cores)


class Round:
    """Worker capacity as seen during one scheduling pass: the hub's view plus this pass's placements."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self._pools: dict[str, list[pl.WorkerSpec]] = {}
        self._extra: dict[str, Amount] = {}
        self._residents: dict[tuple[str, ...], dict[EpochKey, Epoch]] = {}
        #: Per tenant: what this pass charged (placements) or released (displacements), not stored yet.
        self._charged: dict[str, Amount] = {}

    def usage(self, tenant_id: str) -> Amount:
        """The tenant's charged epochs, memory and CPU: its stored usage plus this pass's placements and
        displacements."""
        t = self.ledger.state.tenants.get(tenant_id)
        u = Amount(t.usage.epochs, t.usage.memory_bytes, t.usage.cpu_cores) if t is not None else NO_AMOUNT
        return u + self._charged.get(tenant_id, NO_AMOUNT)

    def charged(self, tenant_id: str) -> int:
        """The tenant's charged memory (see ``usage``)."""
        return int(self.usage(tenant_id).memory_bytes)

    def charge(self, e: Epoch, sign: int = 1) -> None:
        """Count ``e``'s charge (all replicas) in its tenant's usage for the rest of the pass (-1: release it);
        a placement is charged in expected bytes, a release what the resident is charged."""
        mem, cpu = self.ledger.charge_of(e) if sign > 0 else self.ledger.state.charge_of(e)
        self._charged[e.tenant_id] = self._charged.get(e.tenant_id, NO_AMOUNT) + Amount(sign, sign * mem, sign * cpu)

    def _eligible(self, pool: str) -> list[pl.WorkerSpec]:
        ws = self._pools.get(pool)
        if ws is None:
            hub = self.ledger.hub
            ws = self._pools[pool] = hub.eligible(pool or None) if hub else []
        return ws

    def workers(self, pools: tuple[str, ...]) -> list[pl.WorkerSpec]:
        """The eligible workers of ``pools`` (``Ledger.pools_of``) with this pass's placements (and releases)
        in their usage."""
        out = []
        for w in (w for pool in pools for w in self._eligible(pool)):
            x = self._extra.get(w.id)
            if x is not None:
                w = dataclasses.replace(w, used_memory_bytes=max(0, w.used_memory_bytes + int(x.memory_bytes)),
                                        used_cpu_cores=max(0.0, w.used_cpu_cores + x.cpu_cores))
            out.append(w)
        return out

    def _add(self, worker_id: str, amount: Amount) -> None:
        self._extra[worker_id] = self._extra.get(worker_id, NO_AMOUNT) + amount

    def release(self, e: Epoch, workers: Iterable[str], sign: int = 1) -> None:
        """Credit back an evicted epoch's replicas within this pass (``sign=-1`` undoes it)."""
        one = Amount(1, e.memory_bytes, e.cpu_cores)
        for w in workers:
            self._add(w, NO_AMOUNT - one if sign > 0 else one)

    def residents(self, pools: tuple[str, ...]) -> dict[EpochKey, Epoch]:
        """READY epochs with a replica on the eligible workers of ``pools`` (computed once per pass)."""
        found = self._residents.get(pools)
        if found is None:
            state = self.ledger.state
            found = self._residents[pools] = {
                key: e for w in self.workers(pools) for key in state.by_worker.get(w.id, ())
                if (e := state.epochs.get(key)) is not None and e.state is State.READY}
        return found

    def place_many(self, requests: Sequence[tuple[Epoch, Sequence[str]]], *, extra: int = 0,
                   exclude: frozenset[str] = frozenset()) -> dict[EpochKey, tuple[str, ...]]:
        """New workers for each epoch's missing replicas (or ``extra`` more), one strategy call per
        (pool, strategy) group; epochs that cannot get all of them are left out."""
        ledger = self.ledger
        groups: dict[tuple[tuple[str, ...], str], list[tuple[Epoch, Sequence[str]]]] = {}
        for e, existing in requests:
            groups.setdefault((ledger.pools_of(e.tenant_id), ledger.strategy_name(e)), []).append((e, existing))
        out: dict[EpochKey, tuple[str, ...]] = {}
        for (pools, name), reqs in groups.items():
            ws = [w for w in self.workers(pools) if w.id not in exclude]
            ids = {w.id for w in ws}
            items: list[pl.ItemSpec] = []
            held: dict[str, tuple[str, ...]] = {}
            for e, existing in reqs:
                want = ledger.state.replication(e) + extra
                if len(existing) >= want or len(ids | set(existing)) < want:
                    continue
                item = epoch_name(e.key)
                items.append(pl.ItemSpec(key=item, memory_bytes=ledger.expected_bytes(e), cpu_cores=e.cpu_cores,
                                         replicas=want))
                if existing:
                    held[item] = tuple(existing)
            if not items:
                continue
            result = ledger.strategy(name).place(items, ws, existing=held)
            for e, existing in reqs:
                got = result.assignments.get(epoch_name(e.key))
                if got:
                    new = tuple(w for w in got if w not in existing)
                    for w in new:
                        self._add(w, _per_replica(ledger, e))
                    out[e.key] = new
        return out

    def place(self, e: Epoch, *, existing: Sequence[str], extra: int = 0,
              exclude: frozenset[str] = frozenset()) -> tuple[str, ...]:
        """New workers for one epoch (see ``place_many``), () if they cannot all be placed."""
        return self.place_many([(e, existing)], extra=extra, exclude=exclude).get(e.key, ())


class Scheduler:
    """Scheduling passes over a :class:`Ledger` (see the module docstring)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def schedule_locked(self) -> None:
        """One pass: repair under-replicated epochs, then load PENDING ones by benefit; call with the lock held."""
        ledger = self.ledger
        state, config = ledger.state, ledger.config
        await ledger.flush_locked()
        now = ledger.clock()
        rounds = Round(ledger)
        changed: list[Epoch] = []
        sends: list[tuple[Epoch, str]] = []
        evicts: list[tuple[Epoch, str, str]] = []
        # 1. repair: every under-replicated epoch, in one placement call per (pool, strategy)
        repairs = [(e, [r.worker_id for r in live_replicas(e)]) for key in sorted(ledger.repair)
                   if (e := state.epochs.get(key)) is not None and e.retry_at <= now]
        placed = rounds.place_many(repairs)
        for i, (e, _) in enumerate(repairs):
            if i % 500 == 499:
                await trio.lowlevel.checkpoint()
            got = placed.get(e.key)
            if got:
                new = e.evolve(replicas=e.replicas + tuple(Replica(w, ASSIGNED, e.plan_id) for w in got))
                changed.append(new)
                sends.extend((new, w) for w in got)
        await trio.lowlevel.checkpoint()
        # 2. residency by benefit: budgets first (in benefit order), then one placement call per group
        fits, short = self._within_budgets(now)
        await trio.lowlevel.checkpoint()
        placed = rounds.place_many([(e, ()) for e in fits])
        displaced: set[EpochKey] = set()
        attempts = 0
        for i, (e, over_budget) in enumerate([(e, False) for e in fits] + [(e, True) for e in short]):
            if i % 500 == 499:
                await trio.lowlevel.checkpoint()
            got = placed.get(e.key) if not over_budget else ()
            if not got and attempts < config.max_displacements and e.key not in displaced:
                attempts += 1
                got = self._displace_for(e, now, rounds, displaced, changed, evicts)
            if not got:
                continue
            rounds.charge(e)
            plan_id = f"{e.epoch_id}.{e.attempts}"
            new = ledger.move(e, State.LOADING, f"placed on {', '.join(got)}", plan_id=plan_id,
                              replicas=tuple(Replica(w, ASSIGNED, plan_id) for w in got))
            changed.append(new)
            sends.extend((new, w) for w in got)
        if not changed:
            return
        try:
            await ledger.write(changed)
        except (EtcdUnavailable, EtcdRefused):
            # A commit cut into several transactions may have stored a prefix: the commands of what was
            # stored still follow it (a stored placement whose plan was never sent would wait forever).
            stored = {e.key for e in changed if (cur := ledger.state.epochs.get(e.key)) is not None
                      and cur.plan_id == e.plan_id and cur.replicas == e.replicas and cur.state is e.state}
            await self._send([x for x in evicts if x[0].key in stored], [x for x in sends if x[0].key in stored])
            raise
        if ledger.pending:
            # This pass placed something and more is queued (it may have stopped at max_candidates):
            # go again. A pass that places nothing does not re-kick, so a full cluster does not spin.
            ledger.kick()
        await self._send(evicts, sends)

    async def _send(self, evicts: list[tuple[Epoch, str, str]], sends: list[tuple[Epoch, str]]) -> None:
        ledger = self.ledger
        for e, w, reason in evicts:
            await ledger.send_evict(e.key, w, reason)
        for i, (e, w) in enumerate(sends):
            await ledger.send_assignment(e, w)
            if i % 256 == 255:
                await trio.lowlevel.checkpoint()  # let the hub's senders drain their queues

    def _within_budgets(self, now: float) -> tuple[list[Epoch], list[Epoch]]:
        """PENDING epochs due now, by tenant priority then benefit: those their tenant's budgets can take
        together (at most ``max_candidates``), and the first ``max_displacements`` of those they cannot (each
        may still displace its own tenant's residents, ``_displace_for``)."""
        ledger = self.ledger
        state = ledger.state
        candidates = [e for k in ledger.pending if (e := state.epochs.get(k)) is not None and e.retry_at <= now]
        prio = {t: ten.quota.priority for t, ten in state.tenants.items()}
        # A tenant still within its guarantee goes first: its room is promised, whatever the benefits.
        claims = {t: below_guarantee(ten.quota, ten.usage.memory_bytes, 0) for t, ten in state.tenants.items()}
        order = sorted(zip(candidates, ledger.benefits(candidates, now)),
                       key=lambda eb: (-prio.get(eb[0].tenant_id, 0), not claims.get(eb[0].tenant_id, False),
                                       -eb[1], eb[0].key))
        charged: dict[str, Amount] = {}
        fits: list[Epoch] = []
        short: list[Epoch] = []
        for e, _ in order:
            if len(fits) >= ledger.config.max_candidates:
                break
            tenant = state.tenants.get(e.tenant_id)
            if tenant is None or ledger.dataset_of(e) is None:
                continue
            mem, cpu = ledger.charge_of(e)
            u = tenant.usage
            probe = Amount(u.epochs, u.memory_bytes, u.cpu_cores) + charged.get(e.tenant_id, NO_AMOUNT)
            if budget_shortfall(tenant.quota, probe, memory_bytes=mem, cpu_cores=cpu, epochs=1):
                if len(short) < ledger.config.max_displacements:
                    short.append(e)
                continue
            charged[e.tenant_id] = charged.get(e.tenant_id, NO_AMOUNT) + Amount(1, mem, cpu)
            fits.append(e)
        return fits, short

    def _displace_for(self, cand: Epoch, now: float, rounds: Round, displaced: set[EpochKey],
                      changed: list[Epoch], evicts: list[tuple[Epoch, str, str]]) -> tuple[str, ...]:
        """Make room for ``cand`` by evicting READY residents that it beats by the hysteresis.

        Two shortages are made up, in this order:

        * **budget**: while ``cand`` does not fit its tenant's budgets, the
          tenant's own residents go, lowest benefit first, each only if
          ``cand``'s benefit is at least the hysteresis factor times its own
          (another tenant's evictions would free no budget of this one);
        * **capacity**: if ``cand`` still finds no workers,
          ``leibrix.placement.eviction_candidates`` picks the cheapest residents
          to evict among those open to it (:meth:`_open_to`: each must be
          worse than the candidate by ≥ the hysteresis factor, unless ``cand``
          claims its tenant's guarantee).

        A candidate without benefit (nothing has ever been gained from it)
        displaces nothing unless it claims its tenant's guarantee: equal zeros
        are no reason to trade one resident for another. The evictions happen
        only if the candidate can then really be placed, so no resident is
        evicted for nothing.
        """
        ledger = self.ledger
        state = ledger.state
        tenant = state.tenants.get(cand.tenant_id)
        if tenant is None:
            return ()
        cost, cost_cpu = ledger.charge_of(cand)
        claim = below_guarantee(tenant.quota, rounds.charged(cand.tenant_id), cost)
        open_to = self._open_to(cand, rounds, displaced, now, claim=claim)
        benefit = {epoch_name(e.key): b for e, b in open_to}
        mine = ledger.benefit(cand, now)
        hysteresis = ledger.config.hysteresis
        victims: list[Epoch] = []
        # budget: the tenant's own residents, lowest benefit first
        probe = rounds.usage(cand.tenant_id)
        own = sorted((eb for eb in open_to if eb[0].tenant_id == cand.tenant_id), key=lambda eb: (eb[1], eb[0].key))
        while budget_shortfall(tenant.quota, probe, memory_bytes=cost, cpu_cores=cost_cpu, epochs=1):
            if not own or mine <= 0 or mine < hysteresis * own[0][1]:
                return ()
            v, _ = own.pop(0)
            victims.append(v)
            mem, cpu = state.charge_of(v)
            probe = probe - Amount(1, mem, cpu)
        for v in victims:
            rounds.release(v, v.worker_ids())
        placed = rounds.place(cand, existing=[])
        if not placed:
            # capacity: the cheapest residents open to the candidate that it beats by the hysteresis
            taken = {v.key for v in victims}
            rest = {epoch_name(e.key): e for e, _ in open_to if e.key not in taken}
            choice = None
            if rest and (claim or mine > 0):
                n = state.replication(cand)
                # a claim beats every resident open to it, whatever the benefits (the cheapest still go first)
                bid = max(mine, 2.0 * hysteresis * max(benefit[k] for k in rest) + 1.0) if claim else mine
                choice = pl.eviction_candidates(
                    [pl.Candidate(name, benefit[name], e.memory_bytes * len(e.replicas),
                                  e.cpu_cores * len(e.replicas)) for name, e in rest.items()],
                    [pl.Candidate(epoch_name(cand.key), bid, ledger.expected_bytes(cand) * n, cand.cpu_cores * n)],
                    hysteresis,
                )
            more = [rest[name] for name in choice.evict] if choice is not None and choice.admit else []
            for v in more:
                rounds.release(v, v.worker_ids())
            victims.extend(more)
            placed = rounds.place(cand, existing=[]) if more else ()
            if not placed:
                for v in victims:
                    rounds.release(v, v.worker_ids(), sign=-1)
                return ()
        why = f"claiming tenant {cand.tenant_id!r}'s guaranteed memory" if claim else "higher benefit"
        reason = (f"displaced by {epoch_name(cand.key)} {why}" if claim else
                  f"displaced by higher-benefit {epoch_name(cand.key)}")
        for v in victims:
            log.info("evicting %s (tenant %s, benefit %.6g) for %s (tenant %s, benefit %.6g): %s",
                     epoch_name(v.key), v.tenant_id, benefit[epoch_name(v.key)], epoch_name(cand.key),
                     cand.tenant_id, mine, why)
            displaced.add(v.key)
            rounds.charge(v, -1)
            changed.append(ledger.move(v, State.PENDING, reason, replicas=()))
            evicts.extend((v, w, reason) for w in v.worker_ids())
        return placed

    def _open_to(self, cand: Epoch, rounds: Round, displaced: set[EpochKey], now: float, *,
                 claim: bool) -> list[tuple[Epoch, float]]:
        """READY residents of ``cand``'s pool that it may displace, with their benefits.

        Another tenant's residents are open only within the memory that
        tenant holds above its guarantee (lowest benefit first), so any set of
        them chosen leaves the guarantee whole. ``cand``'s own tenant's are
        open too, except when it claims its guarantee (evicting its own
        epochs would not bring it closer).
        """
        ledger = self.ledger
        state = ledger.state
        residents = [e for k, e in rounds.residents(ledger.pools_of(cand.tenant_id)).items() if k not in displaced]
        by_tenant: dict[str, list[tuple[Epoch, float]]] = {}
        for e, b in zip(residents, ledger.benefits(residents, now)):
            by_tenant.setdefault(e.tenant_id, []).append((e, b))
        out: list[tuple[Epoch, float]] = []
        for t, items in by_tenant.items():
            if t == cand.tenant_id:
                if not claim:
                    out.extend(items)
                continue
            tenant = state.tenants.get(t)
            room = displaceable(tenant.quota, rounds.charged(t)) if tenant is not None else math.inf
            for e, b in sorted(items, key=lambda eb: (eb[1], eb[0].key)):
                cost = state.charge_of(e)[0]
                if cost <= room:
                    room -= cost
                    out.append((e, b))
        return out
