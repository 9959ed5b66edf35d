"""``leibrix query``: run SQL over a dataset's resident epochs and print the answer.

Example::

    leibrix query --master 127.0.0.1:50051 --tenant acme --dataset orders \\
        "SELECT region, count(*) FROM orders GROUP BY region" \\
        --start 2026-11-01 --end 2026-11-02

The masters (``--master``, else ``LEIBRIX_MASTER`` or the client config
file's ``master``) and TLS (``--tls-ca``, else ``LEIBRIX_TLS_CA`` or the config
file's ``tls_ca``/``tls_cert``/``tls_key``) are resolved as ``leibrix ctl``
resolves them (:mod:`leibrix.client._config`); with TLS the masters and the
workers' Arrow Flight are dialled over TLS.

The answer is printed as a table followed by the worker(s) that answered and
the time taken, or written with ``-o json|csv|parquet FILE`` (json and csv go
to standard output when no FILE is given). Exit status 0 on success, 1 when
the query failed (the reason on standard error), 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.flight as fl
from rich.console import Console
from rich.table import Table

from leibrix.client._config import ConfigError, load_config
from leibrix.client._query import Client, QueryFailed
from leibrix.client._routes import EpochsUnavailable

FORMATS = ("table", "json", "csv", "parquet")


def _moment(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an ISO date or timestamp") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def configure(parser: argparse.ArgumentParser) -> None:
    """Options of ``leibrix query``."""
    parser.add_argument("sql", help="the SQL, naming the dataset as a table")
    parser.add_argument("--master", metavar="HOST:PORT[,HOST:PORT...]",
                        help="any master's gRPC address (comma-separate several; default: LEIBRIX_MASTER, "
                             "then the client config file)")
    parser.add_argument("--tls-ca", metavar="FILE",
                        help="speak TLS to the masters and workers, trusting this CA (PEM; default: LEIBRIX_TLS_CA, "
                             "then the client config file's tls_ca)")
    parser.add_argument("--tenant", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--start", type=_moment, help="first instant (ISO; UTC when no zone), inclusive")
    parser.add_argument("--end", type=_moment, help="last instant (ISO; UTC when no zone), exclusive")
    parser.add_argument("-o", "--output", nargs="+", metavar=("FORMAT", "FILE"), default=["table"],
                        help="table (default), json, csv or parquet, and a FILE (required for parquet)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds the query may run (default 300)")
    parser.add_argument("--max-rows", type=int, default=50, help="rows printed by -o table (default 50)")
    parser.add_argument("--resident-only", action="store_true",
                        help="fail, naming them, when epochs are not resident (default: read them from the source)")


def render(result: pa.Table, max_rows: int) -> Table:
    """The first ``max_rows`` rows as a rich table."""
    table = Table(show_lines=False)
    for name in result.column_names:
        table.add_column(name)
    for row in result.slice(0, max_rows).to_pylist():
        table.add_row(*("NULL" if v is None else str(v) for v in row.values()))
    return table


def write(result: pa.Table, fmt: str, path: str | None) -> None:
    """Write the result as json (one object per line), csv or parquet to ``path`` (stdout when None)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(result, path)
    elif fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(result, path or sys.stdout.buffer)
    elif fmt == "json":
        import json

        lines = "".join(json.dumps(row, default=str) + "\n" for row in result.to_pylist())
        if path:
            with open(path, "w") as f:
                f.write(lines)
        else:
            sys.stdout.write(lines)


def run(args: argparse.Namespace) -> int:
    """Entry point of ``leibrix query``."""
    err = Console(stderr=True)
    fmt, *rest = args.output
    if fmt not in FORMATS or len(rest) > 1:
        err.print(f"leibrix query: error: -o expects FORMAT [FILE] with FORMAT one of {', '.join(FORMATS)}")
        return 2
    path = rest[0] if rest else None
    if fmt == "parquet" and not path:
        err.print("leibrix query: error: -o parquet needs a FILE")
        return 2
    try:
        config = load_config(master=args.master, tls_ca=args.tls_ca)
        client = Client(masters=config.master, timeout=min(args.timeout, 30.0), metadata=config.metadata(),
                        tls_ca=config.tls_ca or None, tls_cert=config.tls_cert or None, tls_key=config.tls_key or None)
    except (ConfigError, ValueError) as exc:
        err.print(f"leibrix query: error: {exc}")
        return 2
    try:
        result = client.query(args.tenant, args.dataset, args.sql, args.start, args.end, timeout_secs=args.timeout,
                              resident_only=args.resident_only)
    except (EpochsUnavailable, QueryFailed, ValueError, pa.ArrowException, fl.FlightError, OSError) as exc:
        err.print(f"leibrix query: {type(exc).__name__}: {exc}", markup=False, highlight=False)
        return 1
    except Exception as exc:  # a master's gRPC error (e.g. NOT_FOUND for an unknown dataset)
        err.print(f"leibrix query: {type(exc).__name__}: {getattr(exc, 'message', None) or exc}",
                  markup=False, highlight=False)
        return 1
    finally:
        client.close()
    info = client.last
    summary = (f"{result.num_rows} row(s) in {info.seconds * 1000:.1f} ms from {', '.join(info.workers)} "
               f"({info.epochs} epoch(s){', combined locally' if info.combined else ''}"
               f"{', retried after ' + ', '.join(info.failed_workers) + ' failed' if info.failed_workers else ''})")
    if fmt == "table":
        out = Console()
        out.print(render(result, args.max_rows))
        if result.num_rows > args.max_rows:
            out.print(f"... {result.num_rows - args.max_rows} more row(s)")
        out.print(summary)
    else:
        write(result, fmt, path)
        err.print(summary)
    return 0
