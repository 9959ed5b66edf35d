"""Tenant RPCs: ``UpsertTenantQuota`` (upstream, extended), ``GetTenant``, ``ListTenants``, ``DeleteTenant``.

Writes go to the leader (a follower answers UNAVAILABLE with ``leibrix-leader``);
reads are answered by any master from its watched state. ``DeleteTenant``
refuses (FAILED_PRECONDITION) while the tenant still has datasets unless
``force`` is set; forced deletion retires every epoch first (routes withdrawn,
then evictions), then deletes the records. Deleting a tenant also deletes its
access tokens, so a tenant re-created later under the same name does not
inherit them. ``UpsertTenantQuota`` refuses (FAILED_PRECONDITION, with the
numbers) a raised ``guaranteed_memory_bytes`` that the tenant's pool cannot
honour next to the other guarantees there (see
``AdmissionService.guarantee_shortfall``). ``ListTenants`` with ``tenant_id`` lists just that tenant (how a
tenant token's listing is narrowed, see :mod:`leibrix.api._auth`).
"""

from __future__ import annotations

from leibrix.api._auth import TokenRegistry
from leibrix.control._service import AdmissionService
from leibrix.domain._errors import FailedPrecondition, NotFound
from leibrix.store._etcd import Delete, Put
from leibrix.api._pages import page
from leibrix.api._server import trio_rpc
from leibrix.domain._lifecycle import State
from leibrix.domain._tenants import Quota
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.state._model import encode_tenant, now_ms
from leibrix.store._term import Leadership
from leibrix.domain._validation import check_id, validate_quota

class TenantApi(cp.ManagementServiceBase):
    """ManagementService area: tenant quotas and their usage."""

    def __init__(self, leadership: Leadership, admission: AdmissionService, tokens: TokenRegistry | None = None) -> None:
        self.leadership = leadership
        self.admission = admission
        self.tokens = tokens

    @trio_rpc
    async def upsert_tenant_quota(self, request: cp.TenantQuota) -> cp.CommonResponse:
        """Create or replace a tenant's quota (0 = unlimited); takes effect for the next placements."""
        validate_quota(request)
        svc = self.admission
        ctx = self.leadership.leader_context()
        if why := await svc.guarantee_shortfall(Quota.from_wire(request)):
            raise FailedPrecondition(why)
        existed = request.tenant_id in svc.state.tenants
        await ctx.writer.commit([Put(ctx.keys.tenant(request.tenant_id), encode_tenant(request, now_ms()))])
        if svc.coordinator is not None:
            svc.coordinator.kick()  # a larger budget may let PENDING epochs load
        verb = "updated" if existed else "created"
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS, message=f"tenant {request.tenant_id!r} {verb}")

    @trio_rpc
    async def get_tenant(self, request: cp.GetTenantRequest) -> cp.TenantInfo:
        """The tenant's quota and current usage (charged epochs, memory, CPU, pending queue)."""
        tenant_id = check_id("tenant_id", request.tenant_id)
        svc = self.admission
        t = svc.state.tenants.get(tenant_id)
        if t is None:
            raise NotFound(f"tenant {tenant_id!r} not found")
        return cp.TenantInfo(quota=t.quota.to_wire(), usage=t.usage.to_wire())

    @trio_rpc
    async def list_tenants(self, request: cp.ListTenantsRequest) -> cp.ListTenantsResponse:
        """One page of tenants, ordered by id (see :mod:`leibrix.api._pages`)."""
        only = check_id("tenant_id", request.tenant_id) if request.tenant_id else None
        tenants, token = await page(
            request, (((tid,), t) for tid, t in self.admission.state.tenants.items() if only in (None, tid)),
            lambda t: cp.TenantInfo(quota=t.quota.to_wire(), usage=t.usage.to_wire()))
        return cp.ListTenantsResponse(tenants=tenants, next_page_token=token)

    @trio_rpc
    async def delete_tenant(self, request: cp.DeleteTenantRequest) -> cp.CommonResponse:
        """Delete a tenant; refused while it has datasets unless ``force`` (then everything is retired first)."""
        tenant_id = check_id("tenant_id", request.tenant_id)
        svc = self.admission
        coord, _ = svc.leading()  # a follower's state may lag: it never answers NOT_FOUND for a write
        if tenant_id not in svc.state.tenants:
            raise NotFound(f"tenant {tenant_id!r} not found")
        datasets = sorted(d for (t, d) in svc.state.datasets if t == tenant_id)
        resident = sum(1 for d in datasets for e in svc.state.dataset_epochs(tenant_id, d)
                       if e.state not in (State.RETIRED, State.FAILED))
        if datasets and not request.force:
            raise FailedPrecondition(
                f"tenant {tenant_id!r} has {len(datasets)} dataset(s) with {resident} live epoch(s); "
                "drop them first or set force")
        ctx = self.leadership.leader_context()
        for d in datasets:
            await coord.retire([e.key for e in list(svc.state.dataset_epochs(tenant_id, d))],
                               f"tenant {tenant_id} deleted", delete=True)
        tokens = [] if self.tokens is None else [
            Delete(self.tokens.key(k)) for k, t in self.tokens.table.items() if t.info.tenant_id == tenant_id]
        await ctx.writer.commit([Delete(ctx.keys.datasets_of(tenant_id), prefix=True), *tokens,
                                 Delete(ctx.keys.tenant(tenant_id))])
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS,
                                 message=f"tenant {tenant_id!r} deleted ({len(datasets)} dataset(s) dropped)")
