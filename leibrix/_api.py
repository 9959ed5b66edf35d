"""The ManagementService, composed of one mixin class per area.

The generated ``ManagementServiceBase`` answers every RPC with UNIMPLEMENTED.
Each area implements its RPCs in a small mixin class in its own module, and the
served class is built at start-up from all of them::

    ManagementService = type("ManagementService", (*area_mixins, ClusterApi, ManagementServiceBase), {})

**Adding a mixin** (no edit of this file needed):

1. In ``leibrix/_<area>_api.py`` write a subclass of :class:`ApiMixin`
   whose methods override generated RPCs (same snake_case name and
   signature), each decorated with :func:`leibrix._grpc.trio_rpc` and
   written as plain Trio code. ``self.master`` is the running
   :class:`leibrix._master.Master`.
2. Writes start with ``ctx = self.master.leader_context()`` (followers then
   answer UNAVAILABLE + ``leibrix-leader``) and go through
   ``ctx.writer.commit(...)``; reads use ``self.master.mirror`` tables.
3. Raise :mod:`leibrix._errors` exceptions for client mistakes (never let
   one become INTERNAL/UNKNOWN).
4. In the same module define ``install(master)`` calling
   ``master.add_api_mixin(YourApi)`` (and registering any mirror tables).

Two mixins implementing the same RPC is a start-up error, not a silent override.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from leibrix._etcd import EtcdError
from leibrix._grpc import trio_rpc
from leibrix._proto import leibrix_cp as cp
from leibrix._proto.records import state_pb2

if TYPE_CHECKING:
    from leibrix._master import Master

__all__ = ["ApiMixin", "ClusterApi", "build_management_service", "rpc_names"]

log = logging.getLogger(__name__)


def rpc_names() -> frozenset[str]:
    """The snake_case names of every ManagementService RPC (the methods a mixin may override)."""
    return frozenset(
        name
        for name, value in vars(cp.ManagementServiceBase).items()
        if not name.startswith("_") and callable(value)
    )


class ApiMixin:
    """Base of every ManagementService mixin: holds the master the RPCs act on."""

    def __init__(self, master: Master) -> None:
        self.master = master


class ClusterApi(ApiMixin):
    """Cluster-wide RPCs: who the masters are, who leads, and how etcd is doing."""

    @trio_rpc
    async def get_cluster_status(self, request: cp.GetClusterStatusRequest) -> cp.ClusterStatus:
        """Masters (``masters/<id>``, present while each master's lease lives), leader and term,
        etcd members and health, etcd version.

        Answered by any master, leader or not, from a fresh etcd read. The etcd
        parts are best effort: when etcd does not answer, the reply still lists
        what this master knows (its mirror of ``masters/``, the last leader it
        saw), with ``healthy = false`` and no etcd members, because "etcd is
        down" is exactly when an operator runs ``leibrix status``.
        """
        master = self.master
        assert master.etcd is not None and master.election is not None and master.masters is not None
        leader = master.leader
        records = list(master.masters.values())
        members: list[cp.EtcdMember] = []
        version = ""
        healthy = master.health.serving
        try:
            leader = await master.election.leader()
            kvs, _ = await master.etcd.get_prefix(master.keys.root + master.keys.MASTERS)
            records = [state_pb2.MasterRecord.FromString(kv.value) for kv in kvs]
            status = await master.etcd.status()
            version = status.version
            members = [
                cp.EtcdMember(
                    id=m.id,
                    name=m.name,
                    peer_urls=list(m.peer_urls),
                    client_urls=list(m.client_urls),
                    is_leader=m.id == status.leader_id,
                )
                for m in sorted(await master.etcd.members(), key=lambda m: m.name)
            ]
        except EtcdError as exc:
            log.info("GetClusterStatus: etcd did not answer (%s); replying with what is known", exc)
            healthy = False
        masters = [
            cp.MasterInfo(
                id=record.id,
                grpc_addr=record.grpc_addr,
                http_addr=record.http_addr,
                is_leader=leader is not None and record.id == leader.id,
            )
            for record in sorted(records, key=lambda r: r.id)
        ]
        return cp.ClusterStatus(
            cluster=master.config.cluster,
            self_id=master.config.name,
            leader=(
                cp.MasterInfo(id=leader.id, grpc_addr=leader.grpc_addr, http_addr=leader.http_addr, is_leader=True)
                if leader is not None
                else None
            ),
            term=leader.token if leader is not None else 0,
            masters=masters,
            etcd_members=members,
            healthy=healthy,
            etcd_version=version,
        )


def build_management_service(master: Master, mixins: list[type]) -> cp.ManagementServiceBase:
    """The served ManagementService: ``mixins`` + :class:`ClusterApi` over the generated base.

    Raises ``TypeError`` if a mixin is not an :class:`ApiMixin`, or if two
    mixins implement the same RPC.
    """
    names = rpc_names()
    owner: dict[str, str] = {}
    for mixin in [*mixins, ClusterApi]:
        if not (isinstance(mixin, type) and issubclass(mixin, ApiMixin)):
            raise TypeError(f"{mixin!r} is not an ApiMixin subclass")
        for rpc in names & set(vars(mixin)):
            if rpc in owner:
                raise TypeError(f"RPC {rpc} is implemented by both {owner[rpc]} and {mixin.__qualname__}")
            owner[rpc] = mixin.__qualname__
    service = type("ManagementService", (*mixins, ClusterApi, cp.ManagementServiceBase), {})
    return service(master)
