"""``leibrix ctl status``, ``leibrix ctl workers ...`` and ``leibrix ctl routes resolve``."""

from __future__ import annotations

import argparse
from typing import Any

from leibrix.cli.ctl._common import (SERVER, USAGE, Column, Ctx, CtlError, ago, dims_text, human_bytes, message_data,
                                     minute, split_ref)
from leibrix.cli.ctl._wait import wait_drained
from leibrix.client._datasets import DatasetFileError, parse_time
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["configure"]

# ------------------------------------------------------------------ status

STATUS_COLUMNS = [
    Column("kind", lambda r: r[0]),
    Column("name", lambda r: r[1]),
    Column("address", lambda r: r[2]),
    Column("role", lambda r: r[3]),
]


async def status(ctx: Ctx, args: argparse.Namespace) -> int:
    st = await ctx.rpc("get_cluster_status", cp.GetClusterStatusRequest())
    if ctx.output in ("json", "yaml"):
        ctx.dump(message_data(st))
    else:
        rows = [("master", m.id, m.grpc_addr, "leader" if m.is_leader else "follower") for m in st.masters]
        if st.leader.id and st.leader.id not in {m.id for m in st.masters}:
            rows.append(("master", st.leader.id, st.leader.grpc_addr, "leader (no presence key)"))
        rows += [("etcd", e.name or f"{e.id:x}", ",".join(e.client_urls) or "-", "raft leader" if e.is_leader else "")
                 for e in st.etcd_members]
        ctx.print(f"cluster {st.cluster or '?'}  term {st.term}  {'healthy' if st.healthy else 'UNHEALTHY'}  "
                  f"etcd {st.etcd_version or '?'}")
        ctx.show(rows, STATUS_COLUMNS, lambda r: r)
    return 0 if st.healthy else SERVER


# ------------------------------------------------------------------ workers


def _used(used: int, capacity: int) -> str:
    return f"{human_bytes(used)}/{human_bytes(capacity) if capacity else '-'}"


WORKER_COLUMNS = [
    Column("worker", lambda w: w.worker_id),
    Column("state", lambda w: w.state.name),
    Column("addr", lambda w: w.addr or "-"),
    Column("replicas", lambda w: w.replicas),
    Column("memory", lambda w: w, lambda w: _used(w.memory_used_bytes, w.capacity.memory_bytes),
           key=lambda w: w.memory_used_bytes),
    Column("loads", lambda w: w.loads_in_flight),
    Column("seen", lambda w: w.last_seen, ago, key=lambda w: -w.last_seen.timestamp()),
    Column("reserved", lambda w: w, lambda w: _used(w.reserved.memory_bytes, w.capacity.memory_bytes),
           wide=True, key=lambda w: w.reserved.memory_bytes),
    Column("cpu", lambda w: w, lambda w: f"{w.reserved.cpu_cores:g}/{w.capacity.cpu_cores:g}", wide=True,
           key=lambda w: w.reserved.cpu_cores),
    Column("version", lambda w: w.software_version or "-", wide=True),
    Column("labels", lambda w: ",".join(f"{k}={v}" for k, v in sorted(w.labels.items())) or "-", wide=True),
]


async def workers_list(ctx: Ctx, args: argparse.Namespace) -> int:
    workers = await ctx.pages("list_workers", cp.ListWorkersRequest(), "workers")
    ctx.show(workers, WORKER_COLUMNS, message_data)
    return 0


async def workers_get(ctx: Ctx, args: argparse.Namespace) -> int:
    info = await ctx.rpc("get_worker", cp.GetWorkerRequest(worker_id=args.worker))
    ctx.show([info], WORKER_COLUMNS, message_data, single=True)
    return 0


async def drain(ctx: Ctx, args: argparse.Namespace) -> int:
    """Start the drain (the master runs it); with ``--wait`` follow it until the worker is DRAINED."""
    before = await ctx.rpc("get_worker", cp.GetWorkerRequest(worker_id=args.worker))
    reply = await ctx.rpc("drain_worker", cp.DrainWorkerRequest(
        worker_id=args.worker, deadline_s=args.deadline, max_parallel=args.max_parallel, no_wait=True))
    if ctx.output in ("json", "yaml") and not args.wait:
        ctx.dump(message_data(reply))
        return 0
    ctx.print(f"worker {args.worker} {reply.state.name.lower()}: {reply.remaining} replica(s) to move")
    if not args.wait:
        return 0
    code = await wait_drained(ctx, args.worker, max(before.replicas, reply.remaining), args.wait_timeout)
    final = await ctx.rpc("drain_worker", cp.DrainWorkerRequest(worker_id=args.worker, no_wait=True))
    if ctx.output in ("json", "yaml"):
        ctx.dump(message_data(final))
    else:
        ctx.print(f"worker {args.worker} {final.message}: moved {final.moved_make_before_break} make-before-break, "
                  f"{final.moved_break_before_make} break-before-make, {final.remaining} left")
    return code


async def undrain(ctx: Ctx, args: argparse.Namespace) -> int:
    """Cancel a drain: a running one stops where it is, and the worker takes placements again."""
    info = await ctx.rpc("undrain_worker", cp.UndrainWorkerRequest(worker_id=args.worker))
    if ctx.output in ("json", "yaml"):
        ctx.dump(message_data(info))
    else:
        ctx.print(f"worker {args.worker} {info.state.name.lower()}: {info.replicas} replica(s)")
    return 0


# ------------------------------------------------------------------ routes

ROUTE_COLUMNS = [
    Column("epoch", lambda r: r.epoch.epoch_id),
    Column("start", lambda r: r.epoch.time_range.start_inclusive, minute),
    Column("dims", lambda r: dims_text(r.epoch.dimension_values)),
    Column("workers", lambda r: ",".join(r.worker_ids) or "-"),
    Column("table", lambda r: r.table_name, wide=True),
    Column("addrs", lambda r: ",".join(r.worker_addrs) or "-", wide=True),
    Column("token", lambda r: r.token, wide=True),
]


def _filter(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CtlError(USAGE, f"--where expects COLUMN=VALUE, got {item!r}")
        out[key] = value
    return out


async def resolve(ctx: Ctx, args: argparse.Namespace) -> int:
    tenant, dataset = split_ref(args.ref, args.tenant)
    req = cp.ResolveRouteRequest(tenant_id=tenant, dataset_id=dataset, dimension_filter=_filter(args.where))
    if args.start or args.end:
        try:
            req.time_range = cp.TimeRange(
                start_inclusive=parse_time(args.start, "--from") if args.start else parse_time("1970-01-01", "--from"),
                end_exclusive=parse_time(args.end, "--to") if args.end else parse_time("9999-12-31", "--to"))
        except DatasetFileError as exc:
            raise CtlError(USAGE, str(exc)) from None
    reply = await ctx.rpc("resolve_route", req)
    ctx.show(reply.routes, ROUTE_COLUMNS, message_data)
    return 0


def configure(sub: Any, leaf) -> None:
    """Add ``status``, ``workers`` and ``routes``; ``leaf(sub, name, help, func)`` makes one verb."""
    leaf(sub, "status", "the cluster: masters, leader and term, etcd members and health", status)

    verbs = sub.add_parser("workers", help="workers the leader knows: list, inspect, drain",
                           description="Workers.")
    vs = verbs.add_subparsers(dest="verb", metavar="VERB", required=True)
    leaf(vs, "list", "list workers: state, replicas, memory used/capacity, last contact", workers_list)
    p = leaf(vs, "get", "one worker", workers_get)
    p.add_argument("worker", metavar="WORKER")
    p = leaf(vs, "drain", "move every replica off a worker, then mark it DRAINED", drain)
    p.add_argument("worker", metavar="WORKER")
    p.add_argument("--deadline", type=float, default=0.0, metavar="SECONDS",
                   help="after this, remaining replicas move break-before-make (default: the master's)")
    p.add_argument("--max-parallel", type=int, default=0, metavar="N", help="moves in flight at once")
    p.add_argument("--wait", action="store_true",
                   help="follow the drain until DRAINED (exit 1 if the worker dies, 4 on timeout)")
    p.add_argument("--wait-timeout", type=float, default=600.0, metavar="SECONDS", help="for --wait (default 600)")
    p = leaf(vs, "undrain", "cancel a drain: a running one stops (moved replicas stay), the worker takes "
             "placements again", undrain)
    p.add_argument("worker", metavar="WORKER")

    verbs = sub.add_parser("routes", help="where queries go: the READY epochs and their workers",
                           description="Routes.")
    vs = verbs.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = leaf(vs, "resolve", "the READY epochs of a dataset overlapping a time range, with their workers", resolve)
    p.add_argument("ref", metavar="DATASET", help="TENANT/DATASET, or DATASET with --tenant")
    p.add_argument("--from", dest="start", metavar="TIME", help="start (inclusive), ISO 8601")
    p.add_argument("--to", dest="end", metavar="TIME", help="end (exclusive), ISO 8601")
    p.add_argument("--where", action="append", default=[], metavar="COLUMN=VALUE",
                   help="dimension filter (repeatable)")
