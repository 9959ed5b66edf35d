"""Bearer tokens and per-tenant authorization on a real master (real etcd, real gRPC).

One table lists every ManagementService RPC with who may call it and a
request naming tenant ``acme``; the RPCs are enumerated from the generated
service, so an RPC added without a row fails here before anywhere else.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
import trio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.api._auth import RULES, Authorizer, TokenRegistry
from leibrix.client._call import call
from leibrix.store._store import Mirror
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.cluster import KEYS, leader_and_follower, leading, start_master
from tests.support.poll import eventually

ADMIN = "admin-" + "x" * 40
SERVICE = "/leibrix_cp.ManagementService/"

# (who may call it, request for tenant t)
ROWS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "AdmitDataset": ("tenant", lambda t: cp.AdmitDatasetRequest(tenant_id=t, dataset_id="d")),
    "UpsertTenantQuota": ("admin", lambda t: cp.TenantQuota(tenant_id=t)),
    "GetClusterStatus": ("any", lambda t: cp.GetClusterStatusRequest()),
    "GetTenant": ("tenant", lambda t: cp.GetTenantRequest(tenant_id=t)),
    "ListTenants": ("filter", lambda t: cp.ListTenantsRequest(tenant_id=t)),
    "DeleteTenant": ("admin", lambda t: cp.DeleteTenantRequest(tenant_id="nobody")),
    "GetDataset": ("tenant", lambda t: cp.GetDatasetRequest(tenant_id=t, dataset_id="d")),
    "ListEpochs": ("tenant", lambda t: cp.ListEpochsRequest(tenant_id=t, dataset_id="d")),
    "RetireEpoch": ("tenant", lambda t: cp.RetireEpochRequest(tenant_id=t, dataset_id="d", epoch_id="e")),
    "DropDataset": ("tenant", lambda t: cp.DropDatasetRequest(tenant_id=t, dataset_id="d")),
    "ReportAccess": ("tenant", lambda t: cp.ReportAccessRequest(tenant_id=t, dataset_id="d", count=1)),
    "ListWorkers": ("admin", lambda t: cp.ListWorkersRequest()),
    "GetWorker": ("admin", lambda t: cp.GetWorkerRequest(worker_id="w")),
    "DrainWorker": ("admin", lambda t: cp.DrainWorkerRequest(worker_id="w", no_wait=True)),
    "UndrainWorker": ("admin", lambda t: cp.UndrainWorkerRequest(worker_id="w")),
    "ResolveRoute": ("tenant", lambda t: cp.ResolveRouteRequest(tenant_id=t, dataset_id="d")),
    "WatchRoutes": ("tenant", lambda t: cp.WatchRoutesRequest(tenant_id=t)),
    "ListDatasets": ("filter", lambda t: cp.ListDatasetsRequest(tenant_id=t)),
    "IssueToken": ("admin", lambda t: cp.IssueTokenRequest(tenant_id=t, description="table test")),
    "RevokeToken": ("admin", lambda t: cp.RevokeTokenRequest(token_id="0123456789abcdef")),
    "ListTokens": ("admin", lambda t: cp.ListTokensRequest(tenant_id=t)),
}


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def invoke(addr: str, name: str, request: Any, token: str | None) -> tuple[Status, str, Any]:
    """(status, message, reply) of one call; a stream counts as answered at its first message."""
    metadata = {"authorization": f"Bearer {token}"} if token else None

    async def rpc(stub: cp.ManagementServiceStub) -> Any:
        method = getattr(stub, _snake(name))
        if name == "WatchRoutes":
            async for update in method(request):
                return update
            return None
        return await method(request)

    try:
        reply, _ = await call(addr, rpc, timeout=10, metadata=metadata)
    except BaseException as exc:  # noqa: BLE001 - unwrapped and re-raised unless it is a status
        leaf = _leaf(exc)
        if isinstance(leaf, GRPCError):
            return leaf.status, leaf.message or "", None
        raise
    return Status.OK, "", reply


async def issue(addr: str, tenant: str = "", *, admin: bool = False, **kw: Any) -> cp.IssueTokenResponse:
    status, message, reply = await invoke(addr, "IssueToken", cp.IssueTokenRequest(tenant_id=tenant, admin=admin, **kw),
                                          ADMIN)
    assert status is Status.OK, message
    return reply


async def authed_master(nursery: trio.Nursery, endpoint: str, name: str = "m1", **options: Any):
    master = await leading(await start_master(nursery, endpoint, name, admin_token=ADMIN, **options))
    await _admin_stored(master)
    return master


async def _admin_stored(master) -> None:
    registry = master.parts.authorizer.registry
    await eventually(lambda: registry.admin_hashes(), what="the bootstrap admin token stored")


def test_every_rpc_has_exactly_one_row_here_and_in_the_rules() -> None:
    served = {path.removeprefix(SERVICE) for path in cp.ManagementServiceBase().__mapping__()}
    assert served == set(ROWS), f"rows missing: {served - set(ROWS)}, stale: {set(ROWS) - served}"
    assert served == set(RULES)
    assert {name: RULES[name].access.value for name in RULES} == {name: row[0] for name, row in ROWS.items()}


async def test_an_rpc_without_a_rule_stops_the_server_from_starting(etcd) -> None:
    registry = TokenRegistry(Mirror(etcd, KEYS))
    with pytest.raises(TypeError, match="GetTenant"):
        Authorizer(registry, {k: v for k, v in RULES.items() if k != "GetTenant"})


async def test_every_rpc_authenticates_and_authorizes_by_its_row(etcd_server, nursery) -> None:
    master = await authed_master(nursery, etcd_server.endpoint)
    addr = master.config.grpc_listen
    for tenant in ("acme", "other"):
        assert (await invoke(addr, "UpsertTenantQuota", cp.TenantQuota(tenant_id=tenant), ADMIN))[0] is Status.OK
    acme = (await issue(addr, "acme")).token
    other = (await issue(addr, "other")).token
    expired = (await issue(addr, "acme", expires_at=datetime.now(timezone.utc) + timedelta(seconds=1))).token
    await trio.sleep(1.1)
    outcomes: dict[str, dict[str, Status]] = {}
    for name, (who, build) in ROWS.items():
        seen = outcomes[name] = {}
        for label, token in (("none", None), ("garbage", "lbx_not-a-token"), ("expired", expired)):
            status, message, _ = await invoke(addr, name, build("acme"), token)
            seen[label] = status
            assert status is Status.UNAUTHENTICATED, (name, label, status, message)
        right = await invoke(addr, name, build("acme"), ADMIN if who == "admin" else acme)
        seen["right"] = right[0]
        assert right[0] not in (Status.UNAUTHENTICATED, Status.PERMISSION_DENIED), (name, right)
        if who == "admin":
            seen["tenant"] = (await invoke(addr, name, build("acme"), acme))[0]
            assert seen["tenant"] is Status.PERMISSION_DENIED, name
        if who in ("tenant", "filter"):
            seen["other"] = (await invoke(addr, name, build("acme"), other))[0]
            assert seen["other"] is Status.PERMISSION_DENIED, name
            assert (await invoke(addr, name, build("acme"), ADMIN))[0] is right[0], f"{name}: admin acts on any tenant"
            # another tenant's name, existing or not: the same refusal, word for word
            existing = await invoke(addr, name, build("other"), acme)
            missing = await invoke(addr, name, build("ghost"), acme)
            assert existing[:2] == missing[:2] and existing[0] is Status.PERMISSION_DENIED, name
    assert len(outcomes) == len(ROWS)


async def test_listings_are_narrowed_to_the_tokens_tenant(etcd_server, nursery) -> None:
    master = await authed_master(nursery, etcd_server.endpoint)
    addr = master.config.grpc_listen
    for tenant in ("acme", "other", "third"):
        await invoke(addr, "UpsertTenantQuota", cp.TenantQuota(tenant_id=tenant), ADMIN)
    issued = await issue(addr, "acme", description="ci")
    status, _, tenants = await invoke(addr, "ListTenants", cp.ListTenantsRequest(), issued.token)
    assert status is Status.OK and [t.quota.tenant_id for t in tenants.tenants] == ["acme"]
    _, _, everyone = await invoke(addr, "ListTenants", cp.ListTenantsRequest(), ADMIN)
    assert [t.quota.tenant_id for t in everyone.tenants] == ["acme", "other", "third"]
    assert (await invoke(addr, "ListDatasets", cp.ListDatasetsRequest(), issued.token))[0] is Status.OK
    # ListTokens names tokens, never their secrets or hashes
    _, _, listed = await invoke(addr, "ListTokens", cp.ListTokensRequest(), ADMIN)
    ids = {t.token_id: t for t in listed.tokens}
    assert ids[issued.info.token_id].tenant_id == "acme" and ids[issued.info.token_id].description == "ci"
    assert any(t.admin for t in listed.tokens), "the bootstrap admin token is listed"
    assert issued.token.encode() not in bytes(listed) and ADMIN.encode() not in bytes(listed)
    # deleting the tenant deletes its tokens
    await invoke(addr, "DeleteTenant", cp.DeleteTenantRequest(tenant_id="acme"), ADMIN)
    assert (await invoke(addr, "GetClusterStatus", cp.GetClusterStatusRequest(), issued.token))[0] \
        is Status.UNAUTHENTICATED


async def test_a_revoked_token_stops_working_on_another_master_within_a_second(etcd_server, nursery) -> None:
    leader, follower = await leader_and_follower(nursery, etcd_server.endpoint, admin_token=ADMIN)
    await _admin_stored(follower)
    await invoke(leader.config.grpc_listen, "UpsertTenantQuota", cp.TenantQuota(tenant_id="acme"), ADMIN)
    issued = await issue(leader.config.grpc_listen, "acme")
    on_follower = follower.config.grpc_listen
    request = cp.GetTenantRequest(tenant_id="acme")
    await eventually(lambda: invoke(on_follower, "GetTenant", request, issued.token),
                     until=lambda r: r[0] is Status.OK, what="the follower accepting the new token")
    status, message, _ = await invoke(leader.config.grpc_listen, "RevokeToken",
                                      cp.RevokeTokenRequest(token_id=issued.info.token_id), ADMIN)
    assert status is Status.OK, message
    revoked_at = trio.current_time()
    while (await invoke(on_follower, "GetTenant", request, issued.token))[0] is Status.OK:
        assert trio.current_time() - revoked_at < 1.0, "the follower still accepts a revoked token"
        await trio.sleep(0.01)
    assert (await invoke(on_follower, "GetTenant", request, issued.token))[0] is Status.UNAUTHENTICATED
    # revoking twice is NOT_FOUND, not a silent success
    again = await invoke(leader.config.grpc_listen, "RevokeToken", cp.RevokeTokenRequest(token_id=issued.info.token_id),
                         ADMIN)
    assert again[0] is Status.NOT_FOUND


async def test_without_auth_configured_no_token_is_needed_and_health_stays_open(etcd_server, nursery) -> None:
    plain = await leading(await start_master(nursery, etcd_server.endpoint, "plain"))
    assert plain.parts.authorizer is None
    assert (await invoke(plain.config.grpc_listen, "GetClusterStatus", cp.GetClusterStatusRequest(), None))[0] \
        is Status.OK
