"""``leibrix ctl tenants list|get|set-quota|delete``: tenant quotas and what they use."""

from __future__ import annotations

import argparse
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError

from leibrix.cli.ctl._common import Column, Ctx, human_bytes, message_data
from leibrix.client._datasets import DatasetFileError, parse_bytes
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["configure"]


def _used(name: str, used, limit, fmt=str) -> Column:
    """A ``used/limit`` column ("-" = unlimited), sorted by the used amount."""
    return Column(name, lambda t: t, lambda t: f"{fmt(used(t))}/{fmt(limit(t)) if limit(t) else '-'}", key=used)


COLUMNS = [
    Column("tenant", lambda t: t.quota.tenant_id),
    _used("datasets", lambda t: t.usage.datasets, lambda t: t.quota.max_datasets),
    _used("epochs", lambda t: t.usage.epochs, lambda t: t.quota.max_epochs),
    _used("memory", lambda t: t.usage.memory_bytes, lambda t: t.quota.max_memory_bytes, human_bytes),
    _used("cpu", lambda t: round(t.usage.cpu_cores, 2), lambda t: t.quota.max_cpu_cores),
    Column("pending", lambda t: t.usage.pending_epochs),
    Column("policy", lambda t: t.quota.admission_policy.name.replace("POLICY_DEFAULT", "REJECT")),
    Column("pool", lambda t: t.quota.worker_pool or "-", wide=True),
    Column("priority", lambda t: t.quota.priority, wide=True),
    Column("strategy", lambda t: t.quota.default_strategy.name.replace("STRATEGY_", ""), wide=True),
    Column("replication", lambda t: t.quota.default_replication or "-", wide=True),
    Column("storage_mb", lambda t: t.quota.max_storage_mb or "-", wide=True),
]


async def list_(ctx: Ctx, args: argparse.Namespace) -> int:
    tenants = await ctx.pages("list_tenants", cp.ListTenantsRequest(), "tenants")
    if args.tenant:
        tenants = [t for t in tenants if t.quota.tenant_id == args.tenant]
    ctx.show(tenants, COLUMNS, message_data)
    return 0


async def get(ctx: Ctx, args: argparse.Namespace) -> int:
    info = await ctx.rpc("get_tenant", cp.GetTenantRequest(tenant_id=args.name))
    ctx.show([info], COLUMNS, message_data, single=True)
    return 0


_POLICIES = {"REJECT": cp.AdmissionPolicy.REJECT, "QUEUE": cp.AdmissionPolicy.QUEUE,
             "EVICT_LOWER_BENEFIT": cp.AdmissionPolicy.EVICT_LOWER_BENEFIT}
_STRATEGIES = {"DEFAULT": cp.PlacementStrategy.STRATEGY_DEFAULT, "ROUND_ROBIN": cp.PlacementStrategy.ROUND_ROBIN,
               "HASH": cp.PlacementStrategy.HASH, "CAPACITY": cp.PlacementStrategy.CAPACITY}


def _bytes(text: str) -> int:
    try:
        return parse_bytes({"v": text}, "v", "--max-memory")
    except DatasetFileError:
        raise argparse.ArgumentTypeError(f"expected bytes like 512MiB or 1073741824, got {text!r}") from None


async def set_quota(ctx: Ctx, args: argparse.Namespace) -> int:
    """Change only the limits given: read the tenant's quota (if any), apply the flags, write it back."""
    try:
        quota = (await ctx.rpc("get_tenant", cp.GetTenantRequest(tenant_id=args.name))).quota
    except GRPCError as exc:
        if exc.status is not Status.NOT_FOUND:
            raise
        quota = cp.TenantQuota(tenant_id=args.name)
    for field in ("max_datasets", "max_epochs", "max_storage_mb", "max_memory_bytes", "max_cpu_cores",
                  "worker_pool", "priority", "default_replication"):
        value = getattr(args, field)
        if value is not None:
            setattr(quota, field, value)
    if args.policy is not None:
        quota.admission_policy = _POLICIES[args.policy]
    if args.default_strategy is not None:
        quota.default_strategy = _STRATEGIES[args.default_strategy]
    reply = await ctx.rpc("upsert_tenant_quota", quota)
    ctx.print(reply.message or f"tenant {args.name!r} configured")
    return 0


async def delete(ctx: Ctx, args: argparse.Namespace) -> int:
    reply = await ctx.rpc("delete_tenant", cp.DeleteTenantRequest(tenant_id=args.name, force=args.force))
    ctx.print(reply.message or f"tenant {args.name!r} deleted")
    return 0


def configure(sub: Any, leaf) -> None:
    """Add ``tenants`` and its verbs; ``leaf(sub, name, help, func)`` makes one verb's parser."""
    verbs = sub.add_parser("tenants", help="tenant quotas and usage", description="Tenant quotas and usage.")
    vs = verbs.add_subparsers(dest="verb", metavar="VERB", required=True)
    leaf(vs, "list", "list tenants with usage/limit ('-' = unlimited)", list_)
    p = leaf(vs, "get", "one tenant's quota and usage", get)
    p.add_argument("name", metavar="TENANT")
    p = leaf(vs, "set-quota", "create a tenant or change the limits given (others are kept; 0 = unlimited)",
             set_quota)
    p.add_argument("name", metavar="TENANT")
    p.add_argument("--max-datasets", type=int, dest="max_datasets")
    p.add_argument("--max-epochs", type=int, dest="max_epochs")
    p.add_argument("--max-storage-mb", type=int, dest="max_storage_mb")
    p.add_argument("--max-memory", type=_bytes, dest="max_memory_bytes", metavar="BYTES",
                   help="memory budget, e.g. 4GiB")
    p.add_argument("--max-cpu", type=float, dest="max_cpu_cores", metavar="CORES")
    p.add_argument("--policy", choices=list(_POLICIES), help="what admission does when a budget is full")
    p.add_argument("--pool", dest="worker_pool", metavar="POOL", help="worker pool the tenant's epochs use")
    p.add_argument("--priority", type=int)
    p.add_argument("--default-strategy", choices=list(_STRATEGIES))
    p.add_argument("--default-replication", type=int, metavar="N")
    p = leaf(vs, "delete", "delete a tenant (refused while it has datasets, unless --force)", delete)
    p.add_argument("name", metavar="TENANT")
    p.add_argument("--force", action="store_true", help="drop its datasets first (routes withdrawn, replicas evicted)")
