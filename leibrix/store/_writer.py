"""Fenced writes: the only way a leader changes state, sized to the etcd in use.

Every transaction a :class:`FencedWriter` sends first compares the leader key's
``create_revision`` with the term's token. If that compare fails the term is
over (:class:`Fenced`, and ``term.lost`` is set so the leader nursery is
cancelled); if only a caller's own compare failed, the term is fine and the
caller lost an optimistic race (:class:`Conflict`). Any other failure is that
request's error and leaves the term alone: etcd not answering
(:class:`~leibrix.store._ops.EtcdUnavailable`) or refusing the request
(:class:`~leibrix.store._ops.EtcdRefused`: too many ops, too large, quota full).

etcd bounds every transaction twice: ``--max-txn-ops`` (128 by default) and
``--max-request-bytes`` (1.5 MiB by default). :class:`TxnLimits` states the
bounds of the etcd in use, and the writer cuts every commit into transactions
within them, so callers hand it changes of any size and never count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from leibrix.store._election import Term
from leibrix.store._ops import Compare, Delete, Put, op_size

if TYPE_CHECKING:
    from leibrix.store._etcd import EtcdClient

__all__ = ["Atomic", "Conflict", "Fenced", "FencedWriter", "LocalApply", "TxnLimits"]


class LocalApply(Protocol):
    """What the writer needs of a mirror (``leibrix.store._store.Mirror``): applying its own commits at once."""

    def apply_local(self, ops: Sequence[Put | Delete], revision: int) -> None: ...


#: etcd's own defaults (``--max-txn-ops``, ``--max-request-bytes``): what an
#: operator's cluster accepts unless it was configured otherwise.
ETCD_DEFAULT_MAX_TXN_OPS = 128
ETCD_DEFAULT_MAX_REQUEST_BYTES = 1536 * 1024
#: Bytes of every request kept free for what etcd wraps around the
#: transaction before checking its size (the Raft request header).
_REQUEST_RESERVE = 1024


@dataclass(frozen=True, slots=True)
class TxnLimits:
    """How large one transaction may be on the etcd in use.

    ``max_ops`` counts the fencing compare, every other compare and every op
    of a transaction together (etcd checks compares and ops separately against
    ``--max-txn-ops``, so the sum is a bound that always holds);
    ``max_request_bytes`` is etcd's ``--max-request-bytes``. The defaults are
    etcd's own.
    """

    max_ops: int = ETCD_DEFAULT_MAX_TXN_OPS
    max_request_bytes: int = ETCD_DEFAULT_MAX_REQUEST_BYTES

    def __post_init__(self) -> None:
        if self.max_ops < 2:
            raise ValueError(f"max_ops must be >= 2 (the fencing compare and one op), got {self.max_ops}")
        if self.max_request_bytes <= 2 * _REQUEST_RESERVE:
            raise ValueError(f"max_request_bytes must be > {2 * _REQUEST_RESERVE}, got {self.max_request_bytes}")

    @property
    def payload_bytes(self) -> int:
        """Bytes of compares and ops one transaction may carry (the limit minus etcd's wrapping)."""
        return self.max_request_bytes - _REQUEST_RESERVE


@dataclass(frozen=True, slots=True)
class Atomic:
    """Ops that land in one transaction, applied only if every one of ``compares`` holds.

    A :class:`FencedWriter` never splits an ``Atomic`` across transactions. It
    is the unit of all-or-nothing: put the ops that must never be seen apart
    (an epoch record and its heat record) and the compares that guard them
    (``mod_revision ==`` what the caller decided on) in one.
    """

    ops: Sequence[Put | Delete]
    compares: Sequence[Compare] = ()


class Fenced(Exception):
    """Our leadership term is over: the write was not applied and no further write will be."""


class Conflict(Exception):
    """An extra compare of the transaction failed while the term is still valid; that transaction was not applied."""


def _parts(item: Put | Delete | Atomic) -> tuple[Sequence[Compare], Sequence[Put | Delete]]:
    return (item.compares, item.ops) if isinstance(item, Atomic) else ((), (item,))


class FencedWriter:
    """Commits the leader's state changes, each transaction fenced by the term's token.

    A commit of any size is cut into transactions within ``limits``: each is
    the fencing compare plus at most ``max_ops - 1`` compares and ops, and
    under ``max_request_bytes``. One transaction is atomic; **a commit that
    needs several is not**: they are sent one after the other, in order, and
    the first failure (:class:`Fenced`, :class:`Conflict`, ``EtcdRefused``,
    ``EtcdUnavailable``) stops the commit with the earlier transactions
    applied and the later ones never sent. A caller that needs all or nothing
    either keeps that change in one :class:`Atomic` (sent as one transaction,
    or refused whole by etcd with ``EtcdRefused`` if it cannot be), or orders
    it so that any applied prefix is harmless and a retry of the same commit
    converges: the record that makes the change visible or final (an
    idempotency record, a commit marker) goes last.

    An item too large for a transaction of its own (more ops, or more bytes,
    than ``limits`` allow) is still sent, alone: etcd is the judge, and
    refuses it with ``EtcdRefused`` if the limits are real. If ``mirror`` is
    given, every applied transaction is applied to it at once, so the leader
    reads its own writes without waiting for the watch.
    """

    def __init__(
        self, client: EtcdClient, term: Term, mirror: LocalApply | None = None, *, limits: TxnLimits = TxnLimits()
    ) -> None:
        self._client = client
        self.term = term
        self.limits = limits
        self._mirror = mirror
        self._fence = Compare(term.leader_key, "create", "==", term.token)

    def plan(
        self, items: Sequence[Put | Delete | Atomic], compares: Sequence[Compare] = ()
    ) -> list[tuple[list[Compare], list[Put | Delete]]]:
        """The transactions :meth:`commit` sends for ``items``: ``(compares, ops)`` each, fence not included.

        Items keep their order; consecutive items share a transaction while it
        stays within :attr:`limits`. With ``compares`` the whole commit is one
        :class:`Atomic`.
        """
        if compares:
            items = [Atomic([op for item in items for op in _parts(item)[1]], compares)]
        room_ops, room_bytes = self.limits.max_ops - 1, self.limits.payload_bytes - op_size(self._fence)
        txns: list[tuple[list[Compare], list[Put | Delete]]] = []
        guards: list[Compare] = []
        ops: list[Put | Delete] = []
        count = size = 0
        for item in items:
            item_guards, item_ops = _parts(item)
            item_count = len(item_guards) + len(item_ops)
            item_size = sum(map(op_size, item_guards)) + sum(map(op_size, item_ops))
            if count and (count + item_count > room_ops or size + item_size > room_bytes):
                txns.append((guards, ops))
                guards, ops, count, size = [], [], 0, 0
            guards.extend(item_guards)
            ops.extend(item_ops)
            count += item_count
            size += item_size
        if count or not txns:
            txns.append((guards, ops))
        return txns

    async def commit(
        self, items: Sequence[Put | Delete | Atomic], *, compares: Sequence[Compare] = ()
    ) -> int:
        """Apply ``items`` while the term is valid; returns the revision of the last transaction.

        ``items`` are ops and :class:`Atomic` groups; ``compares`` guards the
        whole commit, which makes it one :class:`Atomic`. See the class
        docstring for how a commit that needs several transactions behaves.

        Raises :class:`Fenced` (and sets ``term.lost``) if the term is over,
        including when our own clock says the lease may have expired, in which
        case nothing more is sent at all; :class:`Conflict` if a compare of the
        caller's failed; ``EtcdRefused`` if etcd refused a transaction (the
        term stays valid); ``EtcdUnavailable`` if etcd did not answer (that
        transaction may or may not have been applied: retrying is safe because
        the fence holds only while we lead).
        """
        revision = 0
        for guards, ops in self.plan(items, compares):
            revision = await self._send(guards, ops)
        return revision

    async def _send(self, compares: list[Compare], ops: list[Put | Delete]) -> int:
        if not self.term.is_valid():
            raise Fenced(f"term {self.term.token} is over")
        result = await self._client.txn([self._fence, *compares], ops)
        if result.succeeded:
            if self._mirror is not None:
                self._mirror.apply_local(ops, result.revision)
            return result.revision
        if compares:
            kv = await self._client.get(self.term.leader_key)
            if kv is not None and kv.create_revision == self.term.token:
                raise Conflict(f"a compare failed at revision {result.revision}: {compares}")
        self.term.lost.set()
        raise Fenced(f"term {self.term.token} is over: the leader key changed hands")
