"""The ``leibrix`` command: one sub-command per module.

Each command module exposes ``configure(parser)`` (adds its arguments) and
``run(args) -> int`` (the exit status); its one-line help is in
:data:`COMMANDS`. Modules are imported only when their command runs, so
``leibrix --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from leibrix import __version__

#: sub-command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "placement-demo": ("leibrix.placement._demo", "print a placement of sample workers and datasets"),
    "master": ("leibrix.cli._master", "run a master: embedded etcd, gRPC + HTTP endpoints, leader election"),
    "local": ("leibrix.cli._local", "run a local dev cluster: masters on embedded etcd, data under ./data"),
    "status": ("leibrix.cli._status", "show the cluster: masters, leader and term, etcd members and health"),
    "worker": ("leibrix.worker._cmd", "run a reference worker (in-memory DuckDB) that registers with the master"),
    "ctl": ("leibrix.cli.ctl", "operate the cluster: tenants, datasets, epochs, workers, routes (kubectl-like)"),
    "query": ("leibrix.cli._query", "run SQL over a dataset's resident epochs on the workers (Arrow Flight)"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """Build the parser, configuring only the sub-command named in ``argv``."""
    parser = argparse.ArgumentParser(prog="leibrix", description=__doc__.splitlines()[0].replace("``", ""))
    parser.add_argument("--version", action="version", version=f"leibrix {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        if name == chosen:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``leibrix`` command line; returns the process exit status."""
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    module, _ = COMMANDS[args.command]
    return int(importlib.import_module(module).run(args) or 0)
