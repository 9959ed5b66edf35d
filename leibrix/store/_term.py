"""What a leader service sees of one leadership term, and the interfaces built on it.

A term begins when this master wins the election and ends the moment the
leader key changes hands, its lease is lost, or a fenced write is refused.
Everything that may write state does so through the :class:`TermContext` of
the current term: its ``writer`` fences every transaction with the term's
token, so a deposed leader can never write.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import trio

from leibrix.store._election import Term
from leibrix.store._store import FencedWriter, Keys, Mirror

__all__ = ["LeaderService", "Leadership", "TermContext"]


@dataclass(frozen=True, slots=True)
class TermContext:
    """What a leader service gets for one term: valid only until ``term.lost`` is set.

    ``writer`` is the only way to write state (every commit is fenced by
    ``term.token``; a :class:`~leibrix.store.Fenced` from it ends the term);
    ``mirror`` is the watched state, already current when the term starts.
    """

    term: Term
    writer: FencedWriter
    mirror: Mirror
    keys: Keys

    @property
    def token(self) -> int:
        """The term's fencing token (leader key create revision)."""
        return self.term.token


class LeaderService(Protocol):
    """A long-lived task that runs only while this master leads (one run per term)."""

    async def run_term(self, ctx: TermContext, *, task_status: trio.TaskStatus[None]) -> None:
        """Run for the term; call ``task_status.started()`` when ready; return or be cancelled at its end."""

    async def before_resign(self, ctx: TermContext) -> None:
        """On a graceful shutdown, while the term is still valid: write what the term holds only in memory."""


class Leadership(Protocol):
    """Who may write right now: the one question request handlers ask before a write."""

    @property
    def is_leader(self) -> bool:
        """True while this master holds a valid term."""

    def leader_context(self) -> TermContext:
        """The current term's context, or :class:`~leibrix.domain.Unavailable` naming the leader."""
