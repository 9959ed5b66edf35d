"""``leibrix ctl datasets ...`` and ``leibrix ctl epochs ...``: admitted datasets and their epochs.

``datasets apply -f FILE`` sends each document of the file as one
``AdmitDataset``: an identical file is a no-op (the master answers "already
admitted: no change"), a changed one re-admits (a new ``source.version`` is a
refresh). ``datasets get -o yaml`` prints the dataset as such a file (see
:mod:`leibrix.client._datasets`). ``datasets refresh`` re-admits the stored
request at the source's current version (or ``--version``); either refresh
reloads only the epochs whose data changed.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import betterproto

from leibrix.cli.ctl._common import (NOT_FOUND, Column, Ctx, CtlError, ago, dims_text, human_bytes, message_data,
                                     minute, split_ref)
from leibrix.cli.ctl._wait import wait_ready
from leibrix.client._datasets import dataset_document, infer_granularity, iso, load_dataset_file
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["configure"]

_LIVE = ("PENDING", "LOADING", "VALIDATING", "READY")


def _catalog(info: cp.DatasetInfo) -> str:
    doc = dataset_document(info)["source"]
    return next(k for k in ("iceberg", "jdbc", "starrocks") if k in doc)


def _table(info: cp.DatasetInfo) -> str:
    return ".".join(x for x in (info.source.database, info.source.table) if x)


DATASET_COLUMNS = [
    Column("dataset", lambda d: f"{d.tenant_id}/{d.dataset_id}"),
    Column("catalog", _catalog),
    Column("table", _table),
    Column("version", lambda d: d.source.version or "-"),
    Column("ready", lambda d: d, lambda d: f"{d.epochs_by_state.get('READY', 0)}/"
           f"{sum(n for s, n in d.epochs_by_state.items() if s in _LIVE)}",
           key=lambda d: d.epochs_by_state.get("READY", 0)),
    Column("age", lambda d: d.admitted_at, ago, key=lambda d: -d.admitted_at.timestamp()),
    Column("replication", lambda d: d.replication_factor, wide=True),
    Column("strategy", lambda d: d.strategy.name.replace("STRATEGY_", ""), wide=True),
    Column("retention", lambda d: d.retention_epochs or "-", wide=True),
    Column("states", lambda d: " ".join(f"{s}={n}" for s, n in sorted(d.epochs_by_state.items())) or "-",
           wide=True),
]


EPOCH_COLUMNS = [
    Column("epoch", lambda e: e.info.epoch_id),
    Column("state", lambda e: e.state.name),
    Column("start", lambda e: e.info.time_range.start_inclusive, minute),
    Column("dims", lambda e: dims_text(e.info.dimension_values)),
    Column("replicas", lambda e: e, lambda e: f"{sum(r.state == cp.ReplicaInfoState.LOADED for r in e.replicas)}/"
           f"{len(e.replicas)}", key=lambda e: len(e.replicas)),
    Column("end", lambda e: e.info.time_range.end_exclusive, minute, wide=True),
    Column("version", lambda e: e.version or "-", wide=True),
    Column("workers", lambda e: ",".join(r.worker_id for r in e.replicas) or "-", wide=True),
    Column("memory", lambda e: e.estimate.memory_bytes, human_bytes, wide=True),
    Column("heat", lambda e: e.heat, lambda v: f"{v:.2f}", wide=True),
    Column("benefit", lambda e: e.benefit, lambda v: f"{v:.3g}", wide=True),
    Column("attempts", lambda e: e.attempts, wide=True),
]


async def _document(ctx: Ctx, info: cp.DatasetInfo) -> dict[str, Any]:
    """The dataset as an apply-able document, its epoch granularity read back from its epochs' windows.

    A granularity equal to the time column's source granularity is left out
    (the master derives the same one), as a file relying on that would have.
    """
    epochs = await ctx.pages("list_epochs", cp.ListEpochsRequest(tenant_id=info.tenant_id,
                                                                 dataset_id=info.dataset_id), "epochs")
    current = [e for e in epochs if e.version == (info.source.version or "")] or epochs
    granularity = infer_granularity([(e.info.time_range.start_inclusive, e.info.time_range.end_exclusive)
                                     for e in current])
    source = info.source.partition.time_partition.column.source_granularity
    if (granularity is not None and source is not None and granularity.value == 1
            and source.name == f"GRANULARITY_{granularity.unit.name}"):
        granularity = None
    return dataset_document(info, granularity)


async def _admit(ctx: Ctx, req: cp.AdmitDatasetRequest, args: argparse.Namespace) -> int:
    reply = await ctx.rpc("admit_dataset", req)
    name = f"{req.tenant_id}/{req.dataset_id}"
    if "no change" in reply.message:
        ctx.print(f"dataset {name} unchanged ({reply.message})")
    else:
        ctx.print(f"dataset {name} {'refreshed' if reply.refresh else 'configured'}: {reply.message}")
    if args.wait:
        ids = [e.epoch_id for e in reply.epochs.epochs]
        return await wait_ready(ctx, req.tenant_id, req.dataset_id, ids, args.wait_timeout)
    return 0


async def apply(ctx: Ctx, args: argparse.Namespace) -> int:
    text = sys.stdin.read() if args.file == "-" else None
    requests = load_dataset_file(args.file, text)  # every document parsed before any is sent
    code = 0
    for req in requests:
        code = max(code, await _admit(ctx, req, args))
    return code


async def list_(ctx: Ctx, args: argparse.Namespace) -> int:
    datasets = await ctx.pages("list_datasets", cp.ListDatasetsRequest(tenant_id=args.tenant or ""), "datasets")
    ctx.show(datasets, DATASET_COLUMNS, dataset_document)
    return 0


async def get(ctx: Ctx, args: argparse.Namespace) -> int:
    tenant, dataset = split_ref(args.ref, args.tenant)
    info = await ctx.rpc("get_dataset", cp.GetDatasetRequest(tenant_id=tenant, dataset_id=dataset))
    doc = await _document(ctx, info) if ctx.output in ("json", "yaml") else None
    ctx.show([info], DATASET_COLUMNS, lambda _: doc, single=True)
    return 0


def _refresh_request(info: cp.DatasetInfo, version: str) -> cp.AdmitDatasetRequest:
    """The dataset's stored request (GetDataset's ``admitted``) with ``source.version`` set to ``version``.

    A catalog URI/DSN whose inline password the master redacted (``***``) cannot be sent back: the
    dataset is then refreshed by applying its file again.
    """
    if info.admitted is None or info.admitted.source is None:
        raise CtlError(1, f"the master did not return dataset {info.tenant_id}/{info.dataset_id}'s admitted "
                          "request: apply its file again to refresh it")
    req = cp.AdmitDatasetRequest().parse(bytes(info.admitted))
    which, catalog = betterproto.which_one_of(req.source.catalog, "catalog_type") if req.source.catalog \
        else ("", None)
    secret = getattr(catalog, {"iceberg": "uri", "starrocks": "dsn", "jdbc": "uri"}.get(which, ""), "") or ""
    if "***" in secret:
        raise CtlError(2, f"dataset {info.tenant_id}/{info.dataset_id}'s source has an inline password, which the "
                          "master never returns: refresh it with `datasets apply -f FILE` (or name the password "
                          "as ${env:...}/${file:...})")
    req.request_id = ""
    req.source.version = version
    return req


async def refresh(ctx: Ctx, args: argparse.Namespace) -> int:
    """Re-admit the dataset's stored request: at the source's current version, or at ``--version``.

    Without ``--version`` the request goes back with ``source.version`` empty, so the master plans the
    source as it is now (an Iceberg table's current snapshot) and reloads only the epochs whose data
    changed; an unchanged source is answered "no change".
    """
    tenant, dataset = split_ref(args.ref, args.tenant)
    info = await ctx.rpc("get_dataset", cp.GetDatasetRequest(tenant_id=tenant, dataset_id=dataset))
    if args.version and args.version == info.source.version:
        raise CtlError(2, f"--version {args.version!r} is the dataset's current version: nothing to refresh")
    return await _admit(ctx, _refresh_request(info, args.version or ""), args)


async def drop(ctx: Ctx, args: argparse.Namespace) -> int:
    tenant, dataset = split_ref(args.ref, args.tenant)
    reply = await ctx.rpc("drop_dataset", cp.DropDatasetRequest(tenant_id=tenant, dataset_id=dataset))
    ctx.print(reply.message)
    return 0


async def epochs_list(ctx: Ctx, args: argparse.Namespace) -> int:
    tenant, dataset = split_ref(args.ref, args.tenant)
    epochs = await ctx.pages("list_epochs", cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset), "epochs")
    if args.state:
        epochs = [e for e in epochs if e.state.name == args.state.upper()]
    ctx.show(epochs, EPOCH_COLUMNS, message_data)
    return 0


async def epochs_get(ctx: Ctx, args: argparse.Namespace) -> int:
    tenant, dataset = split_ref(args.ref, args.tenant)
    epochs = await ctx.pages("list_epochs", cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset), "epochs")
    found = [e for e in epochs if e.info.epoch_id == args.epoch]
    if not found:
        raise CtlError(NOT_FOUND, f"epoch {tenant}/{dataset}/{args.epoch} not found")
    ctx.show(found, EPOCH_COLUMNS, message_data, single=True)
    if ctx.output in ("table", "wide"):
        for t in found[0].history:
            ctx.print(f"  {iso(t.at)}  {t.from_state.name} -> {t.to_state.name}" + (f"  {t.reason}" if t.reason else ""))
    return 0


async def epochs_retire(ctx: Ctx, args: argparse.Namespace) -> int:
    tenant, dataset = split_ref(args.ref, args.tenant)
    reply = await ctx.rpc("retire_epoch", cp.RetireEpochRequest(tenant_id=tenant, dataset_id=dataset,
                                                                epoch_id=args.epoch))
    ctx.print(reply.message)
    return 0


def _wait_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--wait", action="store_true",
                   help="follow the admitted epochs until all are READY (exit 1 on a FAILED one, 4 on timeout)")
    p.add_argument("--wait-timeout", type=float, default=600.0, metavar="SECONDS", help="for --wait (default 600)")


def configure(sub: Any, leaf) -> None:
    """Add ``datasets`` and ``epochs`` with their verbs; ``leaf(sub, name, help, func)`` makes one verb."""
    ref = "TENANT/DATASET, or DATASET with --tenant"
    verbs = sub.add_parser("datasets", help="admitted datasets: apply files, inspect, refresh, drop",
                           description="Admitted datasets.")
    vs = verbs.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = leaf(vs, "apply", "admit or update datasets from a YAML, JSON or TOML file (same file twice = no change)",
             apply)
    p.add_argument("-f", "--filename", dest="file", required=True, metavar="FILE", help="the dataset file (- = stdin)")
    _wait_flags(p)
    leaf(vs, "list", "list datasets (of --tenant, else all) with READY/live epochs", list_)
    p = leaf(vs, "get", "one dataset; -o yaml prints a file that 'datasets apply' accepts", get)
    p.add_argument("ref", metavar="DATASET", help=ref)
    p = leaf(vs, "refresh", "re-admit a dataset at its source's current version (or --version): the epochs "
             "whose data changed are reloaded", refresh)
    p.add_argument("ref", metavar="DATASET", help=ref)
    p.add_argument("--version", help="a source version to refresh to (an Iceberg snapshot id; default: the "
                   "source's current one)")
    _wait_flags(p)
    p = leaf(vs, "drop", "drop a dataset: routes withdrawn, replicas evicted, records deleted", drop)
    p.add_argument("ref", metavar="DATASET", help=ref)

    verbs = sub.add_parser("epochs", help="a dataset's epochs: list, inspect, retire", description="Epochs.")
    vs = verbs.add_subparsers(dest="verb", metavar="VERB", required=True)
    p = leaf(vs, "list", "list a dataset's epochs (state, window, dimensions, replicas loaded/placed)",
             epochs_list)
    p.add_argument("ref", metavar="DATASET", help=ref)
    p.add_argument("--state", help="only epochs in this state (READY, FAILED, ...)")
    p = leaf(vs, "get", "one epoch, with its state history", epochs_get)
    p.add_argument("ref", metavar="DATASET", help=ref)
    p.add_argument("epoch", metavar="EPOCH_ID")
    p = leaf(vs, "retire", "retire one epoch: its route is withdrawn, then its replicas evicted", epochs_retire)
    p.add_argument("ref", metavar="DATASET", help=ref)
    p.add_argument("epoch", metavar="EPOCH_ID")
