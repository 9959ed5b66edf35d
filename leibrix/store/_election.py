"""Leader election on etcd, in the vocabulary of etcd's ``concurrency/election.go``.

One key, ``/leibrix/<cluster>/leader``, names the leader. A candidate
*campaigns* by creating it in a transaction that succeeds only if the key does
not exist (``version == 0``), attached to a lease it keeps alive; the winner is
whoever created it. The key's ``create_revision`` is the term's **fencing
token**: every state write the leader makes compares it (see
``leibrix.store._store.FencedWriter``), so a leader whose lease expired, even one that
was frozen and does not know it yet, cannot change anything once someone else
holds the key. The other verbs: *proclaim* (update our record without ending the
term), *resign* (end our term at once so a follower takes over without waiting
for the lease), *leader* (who leads now) and *observe* (a stream of leaders).

Timing. A term ends when (a) its lease expires in etcd, (b) etcd tells us the
lease is gone, (c) the key is deleted or re-created, or (d) our own monotonic
clock says a full TTL has passed since the last keepalive etcd acknowledged:
(d) is what makes a leader that was paused (SIGSTOP, a VM freeze) step down on
its own, before it even talks to etcd. All of these set :attr:`Term.lost`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field

import trio

from leibrix.store._etcd import Compacted, Compare, Delete, EtcdClient, EtcdError, EtcdUnavailable, KeyValue, Put
from leibrix.store._lease import LeaseKeeper
from leibrix.wire._proto.records import state_pb2

__all__ = ["Election", "LeaderInfo", "Term"]

log = logging.getLogger(__name__)

#: Pause between retries when etcd is unreachable while campaigning or observing.
_RETRY = 0.1
#: Keepalives sent per lease TTL. etcd takes 0.3-0.7 s with the production
#: timings to replace a dead Raft leader and answer held keepalives; with a 1 s
#: TTL a keepalive every 1/8 s leaves 0.875 s between the last acknowledged
#: keepalive before the outage and the local deadline.
_REFRESHES_PER_TTL = 8
#: Keepalives outstanding at once (each waits for etcd to have a leader).
_KEEPALIVES_IN_FLIGHT = 4
#: Bound of one attempt to revoke a dead leader's lease (see ``Election.depose``).
_DEPOSE_ATTEMPT = 0.2


@dataclass(frozen=True, slots=True)
class LeaderInfo:
    """Who leads: the master's id and addresses (from its MasterRecord), the term's token and its lease."""

    id: str
    grpc_addr: str
    http_addr: str
    token: int
    lease: int = field(default=0, compare=False)


@dataclass(eq=False, slots=True)
class Term:
    """One leadership term: valid until :attr:`lost` is set, never again after.

    ``token`` is the leader key's create revision (the fencing token);
    ``deadline`` is the local :func:`trio.current_time` up to which the lease is
    known to be alive (send time of the last acknowledged keepalive + TTL).
    """

    token: int
    lease_id: int
    leader_key: str
    ttl: float
    deadline: float
    lost: trio.Event = field(default_factory=trio.Event)

    def is_valid(self) -> bool:
        """True while the term is not lost and our own clock says the lease is alive.

        The first call past the deadline sets :attr:`lost`, so everyone waiting
        on it learns that the term is over.
        """
        if self.lost.is_set():
            return False
        if trio.current_time() >= self.deadline:
            self.lost.set()
            return False
        return True


def _leader_info(kv: KeyValue) -> LeaderInfo:
    record = state_pb2.MasterRecord.FromString(kv.value)
    return LeaderInfo(record.id, record.grpc_addr, record.http_addr, kv.create_revision, kv.lease)


class Election:
    """Campaign for, hold, and watch the leadership of one cluster.

    ``record`` is the serialized ``MasterRecord`` stored as the key's value so
    followers can redirect clients to the leader. ``ttl`` (seconds, >= 1) is the
    lease: how long a dead leader blocks the cluster, and how long a live one
    may go without an acknowledged keepalive before it must step down. See
    ``leibrix.store._member.PRODUCTION_TIMINGS`` for the arithmetic behind the
    default of 1 s.
    """

    def __init__(self, client: EtcdClient, *, key: str, record: bytes, ttl: float) -> None:
        if not ttl >= 1:
            raise ValueError(f"election ttl must be >= 1 second (etcd's lease granularity), got {ttl}")
        self._client = client
        self.key = key
        self.record = record
        self.ttl = float(ttl)

    async def campaign(self) -> Term:
        """Block until this candidate holds the leader key; returns the new term.

        While someone else leads, waits for the key to disappear (lease expiry or
        resign) using a watch, then races for it. Rides out etcd being briefly
        unavailable by retrying.
        """
        while True:
            try:
                current, revision = await self._client.get_with_revision(self.key)
                if current is not None:
                    await self._wait_deleted(revision)
                    continue
                term = await self._try_acquire()
                if term is not None:
                    return term
            except (EtcdUnavailable, Compacted) as exc:
                log.debug("campaign: %s; retrying", exc)
                await trio.sleep(_RETRY)

    async def _try_acquire(self) -> Term | None:
        started = trio.current_time()  # before the grant: the lease cannot outlive started + ttl
        lease_id = await self._client.lease_grant(math.ceil(self.ttl))
        try:
            result = await self._client.txn(
                [Compare(self.key, "version", "==", 0)], [Put(self.key, self.record, lease_id)]
            )
        except BaseException:
            with trio.CancelScope(shield=True):
                await self._revoke_quietly(lease_id)
            raise
        if result.succeeded:
            return Term(result.revision, lease_id, self.key, self.ttl, started + self.ttl)
        await self._revoke_quietly(lease_id)
        return None

    async def _wait_deleted(self, seen_at: int) -> None:
        # Watch from the revision the key was seen at, not from its mod_revision:
        # the latter may be long compacted away for a leader that held on for hours.
        async with self._client.watch_key(self.key, start_revision=seen_at + 1) as stream:
            async for batch in stream:
                if any(ev.kind == "delete" for ev in batch):
                    return

    async def _revoke_quietly(self, lease_id: int) -> None:
        try:
            with trio.move_on_after(self._client.timeout):
                await self._client.lease_revoke(lease_id)
        except EtcdError as exc:
            log.debug("revoking lease %x failed (%s); it expires on its own", lease_id, exc)

    async def keep_alive(
        self, term: Term, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep the term's lease alive until the term is lost, then set ``term.lost`` and return.

        Refreshes every TTL/8 without waiting for earlier refreshes (see
        :meth:`_refresh_loop`). A failed refresh is retried until the local
        deadline; past it the term is lost even if etcd would still honour the
        lease (we cannot know, so we assume the worst). Also watches the leader
        key: if it is deleted or re-created by anyone, the term is lost at once.
        Returns promptly if ``term.lost`` is set by someone else (a fenced write).
        """
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_loop, term)
            nursery.start_soon(self._watch_own_key, term)
            task_status.started()
            await term.lost.wait()
            nursery.cancel_scope.cancel()

    async def _refresh_loop(self, term: Term) -> None:
        """Keep the lease alive from a :class:`~leibrix.store._lease.LeaseKeeper` (threads of its own) until
        the term is lost: by the local deadline, by etcd saying the lease is gone, or by anyone else.

        A keepalive goes out every ``ttl / _REFRESHES_PER_TTL``, without
        waiting for earlier ones, whatever the Trio loop is doing; each
        acknowledged one moves ``term.deadline`` to its *send* time + TTL.
        While etcd has no Raft leader every keepalive waits; the ones sent
        during the outage are answered once a new leader is elected, and the
        latest of them sets the deadline. The term survives a Raft re-election
        as long as the first answer after it arrives within ``ttl - interval``
        of the last one before it. At most ``_KEEPALIVES_IN_FLIGHT`` are
        outstanding, each bounded by the local deadline.
        """
        interval = self.ttl / _REFRESHES_PER_TTL
        keeper = LeaseKeeper(self._client, term, term.lease_id, ttl=self.ttl, interval=interval,
                             in_flight=_KEEPALIVES_IN_FLIGHT, clock_offset=trio.current_time() - time.perf_counter())
        keeper.start()
        try:
            while term.is_valid():
                if keeper.gone.is_set():
                    log.warning("leadership lease %x is gone; term %d is over", term.lease_id, term.token)
                    break
                with trio.move_on_at(min(trio.current_time() + interval, term.deadline)):
                    await term.lost.wait()
        finally:
            keeper.stop()
        # Not when cancelled: a master stopping with its term still valid may use the rest of it (a final flush).
        term.lost.set()

    async def _watch_own_key(self, term: Term) -> None:
        start = term.token + 1
        while not term.lost.is_set():
            try:
                async with self._client.watch_key(self.key, start_revision=start) as stream:
                    async for batch in stream:
                        for ev in batch:
                            if ev.kind == "delete" or ev.kv.create_revision != term.token:
                                log.warning("leader key changed hands; term %d is over", term.token)
                                term.lost.set()
                                return
                            start = ev.kv.mod_revision + 1
            except Compacted:
                # History is gone: look at the key itself, then watch from now.
                try:
                    kv, revision = await self._client.get_with_revision(self.key)
                except EtcdError:
                    await trio.sleep(_RETRY)
                    continue
                if kv is None or kv.create_revision != term.token:
                    term.lost.set()
                    return
                start = revision + 1
            except EtcdError as exc:
                log.debug("watch on own leader key broke (%s); re-watching", exc)
                await trio.sleep(_RETRY)

    async def proclaim(self, term: Term, record: bytes) -> bool:
        """Replace our leader record (e.g. new addresses) without ending the term.

        Returns False, and marks the term lost, if the key is no longer ours
        (or our own clock already says the lease may have lapsed: then nothing
        is sent).
        """
        if not term.is_valid():
            return False
        result = await self._client.txn(
            [Compare(self.key, "create", "==", term.token)], [Put(self.key, record, term.lease_id)]
        )
        if not result.succeeded:
            term.lost.set()
            return False
        self.record = record
        return True

    async def resign(self, term: Term) -> None:
        """End the term now: delete the key if it is still ours, then revoke the lease.

        A follower's campaign sees the delete at once, so a graceful handover
        takes one watch round trip instead of a TTL. ``term.lost`` is set first,
        so nothing in the term writes after we decided to leave. Never raises
        for etcd trouble (shutdown must not fail because etcd is gone); each
        step is bounded by the client timeout.
        """
        term.lost.set()
        try:
            with trio.move_on_after(self._client.timeout):
                await self._client.txn([Compare(self.key, "create", "==", term.token)], [Delete(self.key)])
        except EtcdError as exc:
            # Best effort by design: the term is already over for us, and the
            # lease ends it for everyone within the TTL.
            log.info("resign of term %d could not delete the leader key (%s)", term.token, exc)
        await self._revoke_quietly(term.lease_id)

    async def depose(self, leader: LeaderInfo) -> None:
        """End another master's term now by revoking its lease (its key goes with it, and a campaign wins).

        For a leader known to be dead (its process is gone) whose lease would
        otherwise keep the cluster leaderless for up to a TTL more. Safe
        whatever the truth: a term is fenced by its token, so a leader deposed
        by mistake merely loses its term (and campaigns again); a lease id is
        never reused, so a term that began meanwhile is untouched. One attempt
        waits at most ``_DEPOSE_ATTEMPT`` seconds (etcd holds a proposal while
        it re-elects its Raft leader, so the caller retries rather than waits).
        Never raises for etcd trouble (the lease then expires on its own).
        """
        if leader.lease:
            log.warning("deposing %s: revoking the lease of term %d", leader.id, leader.token)
            try:
                with trio.move_on_after(_DEPOSE_ATTEMPT):
                    await self._client.lease_revoke(leader.lease)
            except EtcdError as exc:
                log.info("revoking the lease of term %d failed (%s); retrying", leader.token, exc)

    async def leader(self) -> LeaderInfo | None:
        """The current leader, or None while nobody holds the key."""
        kv = await self._client.get(self.key)
        return None if kv is None else _leader_info(kv)

    def observe(self) -> AbstractAsyncContextManager[trio.MemoryReceiveChannel[LeaderInfo | None]]:
        """A channel of leadership changes: the current leader first, then every change.

        ``None`` means "no leader right now". Consecutive duplicates are
        suppressed; a broken watch is re-established transparently (re-reading
        the key, so no change is missed for long).
        """
        return self._observe()

    @asynccontextmanager
    async def _observe(self) -> AsyncIterator[trio.MemoryReceiveChannel[LeaderInfo | None]]:
        send, receive = trio.open_memory_channel[LeaderInfo | None](16)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._observe_loop, send)
            try:
                async with receive:
                    yield receive
            finally:
                nursery.cancel_scope.cancel()

    async def _observe_loop(self, send: trio.MemorySendChannel[LeaderInfo | None]) -> None:
        last: LeaderInfo | None | bool = False  # False: nothing sent yet
        async with send:
            while True:
                try:
                    kv, revision = await self._client.get_with_revision(self.key)
                    current = None if kv is None else _leader_info(kv)
                    if current != last:
                        await send.send(current)
                        last = current
                    async with self._client.watch_key(self.key, start_revision=revision + 1) as stream:
                        async for batch in stream:
                            ev = batch[-1]
                            current = (
                                None
                                if ev.kind == "delete"
                                else _leader_info(ev.kv)
                            )
                            if current != last:
                                await send.send(current)
                                last = current
                except EtcdError as exc:
                    log.debug("observe: etcd error (%s); re-reading the leader", exc)
                    await trio.sleep(_RETRY)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return
