"""Retirement: taking epochs out of service without a request ever reaching a worker that dropped them.

Routes are withdrawn first: the epoch becomes RETIRING in one fenced write
(the route table stops serving it the moment that write lands). Only then are
its replicas evicted, and the epoch recorded RETIRED with no replicas, or
its records deleted (``DropDataset``). PENDING and FAILED epochs hold nothing
and go straight to RETIRED. A leader that dies between the two steps leaves
RETIRING epochs behind; the next term finishes them (``AdmissionService``).
"""

from __future__ import annotations

from collections.abc import Iterable

from leibrix.control._ledger import Ledger
from leibrix.domain._lifecycle import State
from leibrix.state._model import Epoch, EpochKey

__all__ = ["Retirement"]


class Retirement:
    """Retires epochs over a :class:`Ledger` (see the module docstring)."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    async def retire(self, keys: Iterable[EpochKey], reason: str, *, delete: bool = False) -> int:
        """Withdraw routes first (→ RETIRING in one fenced write), then evict, then RETIRED (or delete).

        Returns how many epochs were retired. ``delete`` removes the records
        afterwards.
        """
        ledger = self.ledger
        keys = list(keys)
        async with ledger.lock:
            await ledger.flush_locked()
            first: list[Epoch] = []
            for key in keys:
                e = ledger.state.epochs.get(key)
                if e is None or e.state is State.RETIRED or (e.state is State.RETIRING and not delete):
                    continue
                if e.state is State.RETIRING:
                    first.append(e)
                    continue
                to = State.RETIRING if e.replicas else State.RETIRED
                first.append(ledger.move(e, to, reason))
            await ledger.write(first)
            for e in first:
                await self.finish(e.key, reason, delete=delete)
            if delete:
                await ledger.delete_epochs([key for key in keys if key in ledger.state.epochs])
            return len(first)

    async def finish(self, key: EpochKey, reason: str, *, delete: bool = False) -> None:
        """Send evictions for a RETIRING epoch, then record it RETIRED (its routes are already gone);
        call with the lock held."""
        ledger = self.ledger
        e = ledger.state.epochs.get(key)
        if e is None or e.state is not State.RETIRING:
            return
        for w in e.worker_ids():
            await ledger.send_evict(key, w, reason)
        if not delete:
            await ledger.write([ledger.move(e, State.RETIRED, "evictions sent", replicas=())])
        ledger.kick()
