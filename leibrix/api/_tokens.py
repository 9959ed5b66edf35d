"""Token RPCs: ``IssueToken``, ``RevokeToken``, ``ListTokens`` (admin only, see :mod:`leibrix.api._auth`).

``IssueToken`` mints 256 random bits, stores only their SHA-256 under
``tokens/<token_id>`` through the leader's fenced writer and returns the
token this once. ``RevokeToken`` deletes the record; every master's Mirror
sees the delete and the token stops working there. ``ListTokens`` answers
from the watched table on any master and never carries a secret or a hash.
"""

from __future__ import annotations

from datetime import datetime, timezone

from leibrix.api._auth import TokenRegistry
from leibrix.api._server import trio_rpc
from leibrix.domain._errors import InvalidArgument, NotFound
from leibrix.domain._tokens import new_token, new_token_id
from leibrix.domain._validation import check_id
from leibrix.store._etcd import Delete, Put
from leibrix.store._term import Leadership
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["TokenApi"]

#: Longest token description accepted.
MAX_DESCRIPTION = 256


class TokenApi(cp.ManagementServiceBase):
    """ManagementService area: access tokens."""

    def __init__(self, leadership: Leadership, registry: TokenRegistry) -> None:
        self.leadership = leadership
        self.registry = registry

    @trio_rpc
    async def issue_token(self, request: cp.IssueTokenRequest) -> cp.IssueTokenResponse:
        """Mint a tenant token (or, with ``admin``, an admin token); the secret is returned only here."""
        if request.admin and request.tenant_id:
            raise InvalidArgument("tenant_id", "must be empty for an admin token")
        tenant_id = "" if request.admin else check_id("tenant_id", request.tenant_id)
        if len(request.description) > MAX_DESCRIPTION:
            raise InvalidArgument("description", f"longer than {MAX_DESCRIPTION} characters")
        now = datetime.now(timezone.utc)
        expires = request.expires_at if request.expires_at.timestamp() > 0 else None  # unset: the epoch
        if expires is not None and expires <= now:
            raise InvalidArgument("expires_at", f"{expires.isoformat()} is in the past")
        ctx = self.leadership.leader_context()
        info = cp.TokenInfo(token_id=new_token_id(), tenant_id=tenant_id, admin=request.admin,
                            description=request.description, created_at=now)
        if expires is not None:
            info.expires_at = expires
        token = new_token()
        await ctx.writer.commit([Put(self.registry.key(info.token_id), self.registry.stored(info, token))])
        return cp.IssueTokenResponse(info=info, token=token)

    @trio_rpc
    async def revoke_token(self, request: cp.RevokeTokenRequest) -> cp.CommonResponse:
        """Delete a token: every master refuses it once its watch delivers the delete."""
        token_id = check_id("token_id", request.token_id)
        ctx = self.leadership.leader_context()
        if token_id not in self.registry.table:
            raise NotFound(f"token {token_id!r} not found")
        await ctx.writer.commit([Delete(self.registry.key(token_id))])
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS, message=f"token {token_id} revoked")

    @trio_rpc
    async def list_tokens(self, request: cp.ListTokensRequest) -> cp.ListTokensResponse:
        """The tokens (of one tenant when ``tenant_id`` is set), ordered by (tenant, id): ids, never secrets."""
        tenant_id = check_id("tenant_id", request.tenant_id) if request.tenant_id else None
        stored = sorted(self.registry.table.values(), key=lambda t: (t.info.tenant_id, t.info.token_id))
        return cp.ListTokensResponse(tokens=[
            cp.TokenInfo().parse(t.info.SerializeToString())
            for t in stored if tenant_id in (None, t.info.tenant_id)
        ])
