"""``leibrix ctl tokens issue|revoke|list``: the bearer tokens callers present (admin only).

A token's secret is printed once, by ``issue``; the master keeps only its hash,
so a lost token is revoked and a new one issued.
"""

from __future__ import annotations

import argparse
from typing import Any

from leibrix.cli.ctl._common import Column, Ctx, minute, message_data
from leibrix.client._datasets import DatasetFileError, parse_time
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["configure"]

COLUMNS = [
    Column("id", lambda t: t.token_id),
    Column("tenant", lambda t: "(admin)" if t.admin else t.tenant_id),
    Column("expires", lambda t: t.expires_at, lambda t: minute(t.expires_at) if t.expires_at else "never"),
    Column("description", lambda t: t.description or "-"),
    Column("created", lambda t: t.created_at, lambda t: minute(t.created_at) if t.created_at else "-", wide=True),
]


def _expiry(text: str):
    try:
        return parse_time(text, "--expires")
    except DatasetFileError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


async def issue(ctx: Ctx, args: argparse.Namespace) -> int:
    """Issue a token for a tenant (or ``--admin``); its secret is shown this once."""
    request = cp.IssueTokenRequest(tenant_id=args.tenant_id or "", admin=args.admin, description=args.description)
    if args.expires is not None:
        request.expires_at = args.expires
    reply = await ctx.rpc("issue_token", request)
    if ctx.output in ("json", "yaml"):
        ctx.dump({"token": reply.token, **message_data(reply.info)})
    else:
        ctx.print(f"token {reply.info.token_id} for {'(admin)' if reply.info.admin else reply.info.tenant_id}; "
                  "keep it now, it is not shown again:")
        ctx.print(reply.token)
    return 0


async def revoke(ctx: Ctx, args: argparse.Namespace) -> int:
    reply = await ctx.rpc("revoke_token", cp.RevokeTokenRequest(token_id=args.token_id))
    ctx.print(reply.message or f"token {args.token_id} revoked")
    return 0


async def list_(ctx: Ctx, args: argparse.Namespace) -> int:
    reply = await ctx.rpc("list_tokens", cp.ListTokensRequest(tenant_id=args.tenant or ""))
    ctx.show(list(reply.tokens), COLUMNS, message_data)
    return 0


def configure(sub: Any, leaf) -> None:
    """Add ``tokens`` and its verbs; ``leaf(sub, name, help, func)`` makes one verb's parser."""
    verbs = sub.add_parser("tokens", help="bearer tokens: issue, revoke, list (admin only)",
                           description="Bearer tokens (admin only).")
    vs = verbs.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = leaf(vs, "issue", "issue a token for TENANT (or --admin); the secret is printed once", issue)
    p.add_argument("tenant_id", metavar="TENANT", nargs="?", help="the tenant it acts for (omit with --admin)")
    p.add_argument("--admin", action="store_true", help="an admin token instead of a tenant token")
    p.add_argument("--expires", type=_expiry, metavar="TIME", help="when it stops working (ISO 8601); default never")
    p.add_argument("--description", default="", metavar="TEXT")
    p = leaf(vs, "revoke", "revoke a token by its id (it stops working on every master within a second)", revoke)
    p.add_argument("token_id", metavar="ID")
    leaf(vs, "list", "tokens by id, tenant and expiry (never their secrets); --tenant filters", list_)
