"""The seams of worker streams: one Protocol for each direction of each, defined here once.

Between the workers and the control loop: the hub (this package) implements
:class:`WorkerDirectory`; the term's epoch coordinator (``leibrix.control``)
implements :class:`EpochCoordinator` and is handed to the hub with
``WorkerHub.attach``. Neither side names the other's classes.

Inside this package, between the asyncio side (one session per gRPC stream,
``_stream``) and the Trio side (membership, liveness, persistence,
``_membership``): the membership implements :class:`Registry`, each stream's
session implements :class:`~leibrix.workers._session.Session` (defined on its
own, so that ``_member``, whose members hold one, need not import this module).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from leibrix.domain._liveness import WState
from leibrix.placement import WorkerSpec
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb

if TYPE_CHECKING:
    from leibrix.workers._member import Member
    from leibrix.workers._session import Session

__all__ = ["EpochCoordinator", "Registry", "WorkerDirectory"]


class WorkerDirectory(Protocol):
    """What the control loop asks of the workers: who can take placements, and sending them commands.

    Draining (``leibrix.control._drain``) also asks whether this master
    serves a term (``serving``; else ``leader_hint`` names the leader), the
    term's ``coordinator``, and sends ``command`` and ``set_drain``.
    """

    #: the EpochCoordinator of the current term, None outside one
    coordinator: EpochCoordinator | None

    def eligible(self, pool: str | None) -> list[WorkerSpec]: ...
    def state(self, worker_id: str) -> cp.WorkerState | None: ...
    def addr(self, worker_id: str) -> str | None: ...
    async def send(self, worker_id: str, msg: cp.EventStreamMessage) -> bool: ...
    async def evict(self, worker_id: str, tenant: str, dataset: str, epoch: str, reason: str) -> bool: ...
    def serving(self) -> bool: ...
    def leader_hint(self) -> str: ...
    async def command(self, worker_id: str, event_type: str, payload: dict[str, Any]) -> bool: ...
    async def set_drain(self, worker_id: str, state: WState | None) -> None: ...


class EpochCoordinator(Protocol):
    """What the hub tells and asks the term's epoch coordinator."""

    async def on_status(self, worker_id: str, update: cp.DataPullStatusUpdateEvent) -> None: ...
    async def on_registered(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None: ...
    async def on_capacity(self) -> None: ...
    async def on_worker_dead(self, worker_id: str) -> None: ...
    def reserved(self, worker_id: str) -> tuple[int, float]: ...
    def replicas_on(self, worker_id: str) -> list[tuple[str, str, str]]: ...
    def replica_count(self, worker_id: str) -> int: ...
    def movable_replicas(self, worker_id: str, limit: int) -> list[tuple[str, str, str]]: ...
    async def move_replica(
        self, tenant: str, dataset: str, epoch: str, from_worker: str, *, make_before_break: bool,
        to_worker: str | None = None,
    ) -> bool:
        """Move one replica off ``from_worker``; onto ``to_worker`` only, when given. True once it is LOADED."""
        ...


class Registry(Protocol):
    """What a worker stream asks of the membership.

    The plain methods are called from the asyncio side on the event-loop
    thread; the coroutines are Trio functions, called through ``call_trio``.
    """

    def leader_hint(self) -> str:
        """The current leader's gRPC address ('' if unknown)."""
        ...

    def serving(self) -> bool:
        """True during a leadership term: registrations are accepted."""
        ...

    def pool_known(self, pool: str) -> bool:
        """Whether a pool label names a known tenant."""
        ...

    def open_session(self, member: Member, session: Session) -> None:
        """Make ``session`` the member's live stream; AlreadyExists if it has one."""
        ...

    async def admit(self, worker_id: str, inventory: list[pb.InventoryEntry]) -> None:
        """Trio side of a registration: liveness, record, ``registration_ack``, reconcile the inventory."""
        ...

    def seen(self, worker_id: str, heartbeat: pb.HeartbeatEvent | None) -> None:
        """A message arrived on the worker's stream (``heartbeat`` if it was one)."""
        ...

    async def on_statuses(self, worker_id: str, updates: list[cp.DataPullStatusUpdateEvent]) -> None:
        """Status reports of one worker, in order (FailedPrecondition for one never assigned)."""
        ...

    def closed(self, worker_id: str, session: Session) -> None:
        """``session`` ended; the worker is SUSPECT unless another session replaced it."""
        ...
