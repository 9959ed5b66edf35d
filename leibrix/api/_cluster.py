"""The ManagementService: one object per area, each answering its own RPCs.

The generated ``ManagementServiceBase`` answers every RPC with UNIMPLEMENTED.
Each area (cluster, tenants, datasets, workers) is a subclass that overrides
the RPCs it owns, each decorated with :func:`leibrix.api._server.trio_rpc` and
written as plain Trio code, and gets what it needs through its constructor.
:class:`ManagementService` serves them together: every RPC is answered by
the one area that implements it, and two areas implementing the same RPC is
an error at construction, not a silent override.

Writes start with ``leadership.leader_context()`` (a follower then answers
UNAVAILABLE with ``leibrix-leader``) and go through ``ctx.writer.commit``;
client mistakes raise :mod:`leibrix.domain._errors` exceptions, never INTERNAL.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

import grpclib.const

from leibrix.store._election import Election, LeaderInfo
from leibrix.store._etcd import EtcdClient, EtcdError
from leibrix.store._store import Keys, Table
from leibrix.api._server import HealthFlag
from leibrix.api._server import trio_rpc
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2

__all__ = ["ClusterApi", "ClusterView", "ManagementService"]

log = logging.getLogger(__name__)


class ClusterView(Protocol):
    """What the cluster RPCs read of the running master."""

    config: Any
    keys: Keys
    health: HealthFlag
    etcd: EtcdClient | None
    election: Election | None
    masters: Table[state_pb2.MasterRecord] | None
    leader: LeaderInfo | None


class ClusterApi(cp.ManagementServiceBase):
    """Cluster-wide RPCs: who the masters are, who leads, and how etcd is doing."""

    def __init__(self, master: ClusterView) -> None:
        self.master = master

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


class ManagementService:
    """The served ManagementService: each RPC answered by the one area object that implements it.

    Raises ``TypeError`` when two areas implement the same RPC. RPCs no area
    implements answer UNIMPLEMENTED (the generated base's answer).
    """

    def __init__(self, areas: Sequence[cp.ManagementServiceBase]) -> None:
        mapping = dict(cp.ManagementServiceBase().__mapping__())
        owner: dict[str, str] = {}
        for area in areas:
            for path, handler in area.__mapping__().items():
                rpc = handler.func.__name__.removeprefix("__rpc_")
                if getattr(type(area), rpc) is getattr(cp.ManagementServiceBase, rpc):
                    continue  # not implemented by this area
                if path in owner:
                    raise TypeError(f"RPC {rpc} is implemented by both {owner[path]} and {type(area).__qualname__}")
                owner[path] = type(area).__qualname__
                mapping[path] = handler
        self._mapping = mapping

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        return dict(self._mapping)
