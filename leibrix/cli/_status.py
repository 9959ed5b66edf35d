"""``leibrix status``: masters, leader and term, etcd members and health, as a table."""

from __future__ import annotations

import argparse
import sys

import trio
from grpclib.exceptions import GRPCError
from rich.console import Console
from rich.table import Table

from leibrix.wire._address import split_hostport
from leibrix.client._call import call
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["render_status"]


def render_status(status: cp.ClusterStatus, answered_by: str) -> Table:
    """The cluster status as a rich table (one row per master, then the etcd members)."""
    table = Table(
        title=(
            f"cluster {status.cluster or '?'}  term {status.term}  "
            f"{'healthy' if status.healthy else 'UNHEALTHY'}  etcd {status.etcd_version or '?'}  "
            f"(answered by {status.self_id} at {answered_by})"
        )
    )
    for column in ("kind", "name", "address", "role"):
        table.add_column(column)
    for m in status.masters:
        table.add_row("master", m.id, f"grpc {m.grpc_addr}  http {m.http_addr}", "LEADER" if m.is_leader else "follower")
    if status.leader.id and status.leader.id not in {m.id for m in status.masters}:
        table.add_row("master", status.leader.id, status.leader.grpc_addr, "LEADER (no presence key)")
    for e in status.etcd_members:
        table.add_row(
            "etcd", e.name or f"{e.id:x}", ", ".join(e.client_urls) or "(not started)", "raft leader" if e.is_leader else ""
        )
    return table


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``leibrix status``."""
    parser.add_argument(
        "--master", default="127.0.0.1:50051", metavar="HOST:PORT", help="any master's gRPC address (default 127.0.0.1:50051)"
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds per call (default 5)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``leibrix status``."""
    try:
        split_hostport(args.master, what="--master")
        status, answered = trio.run(
            lambda: call(args.master, lambda stub: stub.get_cluster_status(cp.GetClusterStatusRequest()), timeout=args.timeout)
        )
    except ValueError as exc:
        print(f"leibrix status: error: {exc}", file=sys.stderr)
        return 2
    except GRPCError as exc:
        print(f"leibrix status: error: {args.master} answered {exc.status.name}: {exc.message}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"leibrix status: error: cannot reach a master at {args.master}: {exc}", file=sys.stderr)
        return 1
    Console().print(render_status(status, answered))
    return 0 if status.healthy else 1
