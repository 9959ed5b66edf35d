"""Who is calling, and what they may do: bearer tokens and the one authorization table.

**Authentication.** A ManagementService caller sends ``authorization: Bearer
<token>``. Tokens live in etcd under ``tokens/<token_id>`` as a
``StoredToken`` (the token's info and the SHA-256 of its secret, never the
secret), written by the leader through its fenced writer. Every master
watches them through its Mirror, and :class:`TokenRegistry` keeps an index
from hash to token: checking a caller costs one SHA-256 and one dict lookup,
and a revoked token stops working on every master as soon as the watch
delivers the delete (milliseconds). No token, an unknown one, or an expired
one is ``UNAUTHENTICATED``.

**Authorization.** :data:`RULES` says, for every ManagementService RPC, who
may call it:

* ``ADMIN`` — admin tokens only (tenant lifecycle and quotas, workers, tokens);
* ``TENANT`` — a tenant token only when the request's tenant field names its
  own tenant;
* ``FILTER`` — a listing: a tenant token's request is limited to its own
  tenant (an empty tenant field is filled in, another tenant is refused);
* ``ANY`` — any authenticated caller.

:class:`Authorizer` applies the table in the server before the handler runs,
so no handler repeats it, and it refuses to start if an RPC has no row. A
tenant token that names another tenant gets ``PERMISSION_DENIED`` without the
handler ever looking the other tenant up: the answer is the same whether it
exists or not.

:class:`AdminBootstrap` is the leader service that stores the configured
admin token (``--admin-token-file`` / ``LEIBRIX_ADMIN_TOKEN``) when no admin
token exists yet, and deletes expired tokens.
"""

from __future__ import annotations

import enum
import functools
import hmac
import logging
import time
from datetime import datetime, timezone
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import grpclib.server
import trio
from grpclib.const import Status

from leibrix.domain._errors import ApiError, PermissionDenied
from leibrix.domain._tokens import bearer, new_token_id, token_hash
from leibrix.store._etcd import Delete, EtcdError, Put
from leibrix.store._store import Mirror, Table
from leibrix.store._term import TermContext
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import management_pb2

__all__ = [
    "Access", "AdminBootstrap", "Authorizer", "Principal", "RULES", "Rule", "TOKENS", "TokenRegistry",
    "Unauthenticated",
]

log = logging.getLogger(__name__)

#: The tokens' key prefix, under ``/leibrix/<cluster>/``.
TOKENS = "tokens/"
#: Seconds between the leader's passes over the tokens (bootstrap, expired-token deletion).
SWEEP_INTERVAL_S = 30.0

_SERVICE = "/leibrix_cp.ManagementService/"


class Unauthenticated(ApiError):
    """No bearer token, or one that is unknown, revoked or expired."""

    status = Status.UNAUTHENTICATED


class Access(enum.Enum):
    """Who may call an RPC (see the module docstring)."""

    ADMIN = "admin"
    TENANT = "tenant"
    FILTER = "filter"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class Rule:
    """One row of the table: the access class and, for TENANT/FILTER, the request field naming the tenant."""

    access: Access
    field: str = ""


_ADMIN, _ANY = Rule(Access.ADMIN), Rule(Access.ANY)
_TENANT, _FILTER = Rule(Access.TENANT, "tenant_id"), Rule(Access.FILTER, "tenant_id")

#: Every ManagementService RPC (by its proto name) and who may call it.
RULES: Mapping[str, Rule] = {
    "AdmitDataset": _TENANT,
    "UpsertTenantQuota": _ADMIN,
    "GetClusterStatus": _ANY,
    "GetTenant": _TENANT,
    "ListTenants": _FILTER,
    "DeleteTenant": _ADMIN,
    "GetDataset": _TENANT,
    "ListEpochs": _TENANT,
    "RetireEpoch": _TENANT,
    "DropDataset": _TENANT,
    "ReportAccess": _TENANT,
    "ListWorkers": _ADMIN,
    "GetWorker": _ADMIN,
    "DrainWorker": _ADMIN,
    "UndrainWorker": _ADMIN,
    "ResolveRoute": _TENANT,
    "WatchRoutes": _TENANT,
    "ListDatasets": _FILTER,
    "IssueToken": _ADMIN,
    "RevokeToken": _ADMIN,
    "ListTokens": _ADMIN,
}


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its token's id, and either ``admin`` or the tenant it acts for."""

    token_id: str
    tenant_id: str
    admin: bool


def _expiry_s(info: management_pb2.TokenInfo) -> float:
    """The token's expiry in Unix seconds (infinity when it has none)."""
    if not info.HasField("expires_at") or (info.expires_at.seconds == 0 and info.expires_at.nanos == 0):
        return float("inf")
    return info.expires_at.seconds + info.expires_at.nanos / 1e9


class TokenRegistry:
    """The watched ``tokens/`` table, indexed by hash; answers "who is this token?" from memory."""

    def __init__(self, mirror: Mirror) -> None:
        self.keys = mirror.keys
        self.table: Table[management_pb2.StoredToken] = mirror.table(TOKENS, management_pb2.StoredToken.FromString)
        self._by_hash: dict[bytes, tuple[Principal, float]] = {}
        self.table.on_change(self._index)

    def key(self, token_id: str) -> str:
        """The etcd key of a token."""
        return self.keys.root + TOKENS + token_id

    def _index(self, _key: str, old: management_pb2.StoredToken | None,
               new: management_pb2.StoredToken | None) -> None:
        if old is not None:
            self._by_hash.pop(old.sha256, None)
        if new is not None:
            info = new.info
            self._by_hash[new.sha256] = (Principal(info.token_id, info.tenant_id, info.admin), _expiry_s(info))

    def authenticate(self, token: str | None, now: float | None = None) -> Principal:
        """The principal ``token`` stands for; :class:`Unauthenticated` when absent, unknown or expired."""
        if token is None:
            raise Unauthenticated("this RPC needs a token: send 'authorization: Bearer <token>'")
        digest = token_hash(token)
        found = self._by_hash.get(digest)
        if found is None:
            raise Unauthenticated("the token is unknown or revoked")
        principal, expires = found
        if (time.time() if now is None else now) >= expires:
            raise Unauthenticated(f"token {principal.token_id} has expired")
        return principal

    def admin_hashes(self) -> list[bytes]:
        """The hashes of the stored admin tokens."""
        return [t.sha256 for t in self.table.values() if t.info.admin]

    def stored(self, info: cp.TokenInfo, token: str) -> bytes:
        """The etcd value for a new token: its info and the hash of ``token``."""
        record = management_pb2.StoredToken(sha256=token_hash(token))
        record.info.ParseFromString(bytes(info))
        return record.SerializeToString()


class _CheckedStream:
    """A grpclib stream whose request is checked (and possibly narrowed) before the handler sees it."""

    __slots__ = ("_stream", "_check")

    def __init__(self, stream: grpclib.server.Stream, check: Callable[[Any], None]) -> None:
        self._stream = stream
        self._check = check

    async def recv_message(self) -> Any:
        message = await self._stream.recv_message()
        if message is not None:
            self._check(message)
        return message

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _denied(principal: Principal) -> PermissionDenied:
    return PermissionDenied(f"token {principal.token_id} acts for tenant {principal.tenant_id!r} only")


class Authorizer:
    """Applies :data:`RULES` to the ManagementService's handlers (see the module docstring).

    ``wrap(path, handler)`` returns the handler to serve at ``path``: the
    caller is authenticated from the request metadata before the request is
    read, then authorized against the request. Paths of other services are
    returned unchanged (Health, Reflection and the worker stream stay open).
    """

    def __init__(self, registry: TokenRegistry, rules: Mapping[str, Rule] = RULES) -> None:
        self.registry = registry
        missing = sorted(set(cp.ManagementServiceBase().__mapping__()) - {_SERVICE + name for name in rules})
        if missing:
            raise TypeError(f"no authorization rule for {', '.join(missing)}")
        self._rules = {_SERVICE + name: rule for name, rule in rules.items()}

    def wrap(self, path: str, func: Callable[[grpclib.server.Stream], Any]) -> Callable[[grpclib.server.Stream], Any]:
        """``func`` behind the authorization rule of ``path`` (unchanged outside the ManagementService)."""
        rule = self._rules.get(path)
        if rule is None:
            return func
        authenticate = self.registry.authenticate

        @functools.wraps(func)
        async def handler(stream: grpclib.server.Stream) -> None:
            principal = authenticate(bearer(stream.metadata.get("authorization") if stream.metadata else None))
            if principal.admin or rule.access is Access.ANY:
                await func(stream)
            elif rule.access is Access.ADMIN:
                raise PermissionDenied(f"{path.rsplit('/', 1)[1]} needs an admin token")
            else:
                await func(_CheckedStream(stream, functools.partial(self._check, rule, principal)))

        return handler

    @staticmethod
    def _check(rule: Rule, principal: Principal, request: Any) -> None:
        tenant = getattr(request, rule.field)
        if tenant == principal.tenant_id:
            return
        if rule.access is Access.FILTER and not tenant:
            setattr(request, rule.field, principal.tenant_id)
            return
        raise _denied(principal)


class AdminBootstrap:
    """Leader service: store the configured admin token if no admin token exists; delete expired tokens."""

    def __init__(self, registry: TokenRegistry, admin_token: str, *, interval_s: float = SWEEP_INTERVAL_S) -> None:
        self.registry = registry
        self._admin_token = admin_token
        self.interval_s = interval_s

    async def run_term(self, ctx: TermContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """One pass at the start of the term, then one every ``interval_s``; etcd errors wait for the next."""
        started = False
        while True:
            try:
                await self._bootstrap(ctx)
                await self._delete_expired(ctx)
            except EtcdError as exc:
                log.warning("token sweep failed (%s); retrying in %.0f s", exc, self.interval_s)
            if not started:
                task_status.started()
                started = True
            await trio.sleep(self.interval_s)

    async def before_resign(self, ctx: TermContext) -> None:
        """Nothing is held only in memory."""

    async def _bootstrap(self, ctx: TermContext) -> None:
        if not self._admin_token:
            return
        stored = self.registry.admin_hashes()
        digest = token_hash(self._admin_token)
        if any(hmac.compare_digest(digest, h) for h in stored):
            return
        if stored:
            log.warning("the configured admin token is not stored and other admin tokens exist: it is not "
                        "added (revoke every admin token to bootstrap it again)")
            return
        info = cp.TokenInfo(token_id=new_token_id(), admin=True, description="bootstrap admin token",
                            created_at=datetime.now(timezone.utc))
        await ctx.writer.commit([Put(self.registry.key(info.token_id), self.registry.stored(info, self._admin_token))])
        log.info("stored the configured admin token as token %s", info.token_id)

    async def _delete_expired(self, ctx: TermContext) -> None:
        now = time.time()
        expired = [k for k, t in self.registry.table.items() if _expiry_s(t.info) <= now]
        if expired:
            await ctx.writer.commit([Delete(self.registry.key(k)) for k in expired])
            log.info("deleted %d expired token(s)", len(expired))
