"""``leibrix ctl``: the operator command line, verbs on resources in the manner of kubectl.

``leibrix ctl RESOURCE VERB [ARGS]`` (``status`` alone is a verb). Every verb
accepts the common options anywhere after ``ctl``: ``--master`` (several
comma-separated addresses are tried in order; a follower's leader redirect
is followed), ``--timeout``, ``-o table|wide|json|yaml``, ``--sort-by`` and
``--tenant``. Settings not given come from the environment and the config
file (:mod:`leibrix.client._config`). The exit status says what went wrong
(:data:`leibrix.cli.ctl._common.EXIT_HELP`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from leibrix.cli.ctl import _datasets, _tenants, _tokens, _workers
from leibrix.cli.ctl._common import EXIT_HELP, Ctx, exit_code
from leibrix.client._config import load_config

__all__ = ["configure", "run"]

DESCRIPTION = """Operate a Leibrix cluster: leibrix ctl RESOURCE VERB [ARGS].
Common options (--master, --timeout, -o, --sort-by, --tenant) may also follow the verb."""

Command = Callable[[Ctx, argparse.Namespace], Awaitable[int]]


def _common(p: argparse.ArgumentParser) -> None:
    """The options every verb takes; SUPPRESS keeps a value given before the verb from being reset after it."""
    g = p.add_argument_group("common options")
    g.add_argument("--master", default=argparse.SUPPRESS, metavar="HOST:PORT[,HOST:PORT...]",
                   help="masters to ask, in order (default: $LEIBRIX_MASTER, the config file, 127.0.0.1:50051)")
    g.add_argument("--timeout", type=float, default=argparse.SUPPRESS, metavar="SECONDS",
                   help="seconds per call (default: the config file, else 5)")
    g.add_argument("-o", "--output", choices=("table", "wide", "json", "yaml"), default=argparse.SUPPRESS,
                   help="table (default), wide (more columns), json or yaml")
    g.add_argument("--sort-by", default=argparse.SUPPRESS, metavar="COLUMN", help="order rows by this column")
    g.add_argument("--tenant", default=argparse.SUPPRESS,
                   help="the tenant of DATASET arguments, or the only one listed (default: the config file)")
    g.add_argument("--tls-ca", default=argparse.SUPPRESS, metavar="FILE",
                   help="speak TLS to the masters, trusting this PEM CA (default: $LEIBRIX_TLS_CA, the config file)")


def _leaf(sub: Any, name: str, help_: str, func: Command) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help_, description=help_[:1].upper() + help_[1:] + ".", epilog=EXIT_HELP,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(p)
    p.set_defaults(func=func)
    return p


def configure(parser: argparse.ArgumentParser) -> None:
    """Options and sub-commands of ``leibrix ctl``."""
    parser.description = DESCRIPTION
    parser.epilog = EXIT_HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    _common(parser)
    sub = parser.add_subparsers(dest="resource", metavar="RESOURCE", required=True)
    _workers.configure(sub, _leaf)  # status first, as in the listing
    _tenants.configure(sub, _leaf)
    _datasets.configure(sub, _leaf)
    _tokens.configure(sub, _leaf)
    # keep the help listing in the order an operator meets the resources
    sub._choices_actions.sort(key=lambda a: ["status", "tenants", "datasets", "epochs", "workers", "routes",
                                                          "tokens"]
                              .index(a.dest))
    for p in sub.choices.values():
        if p.epilog is None:
            p.epilog, p.formatter_class = EXIT_HELP, argparse.RawDescriptionHelpFormatter


def run(args: argparse.Namespace) -> int:
    """Entry point of ``leibrix ctl``: resolve the settings, run the verb, map failures to the exit status."""
    try:
        config = load_config(master=getattr(args, "master", None), timeout=getattr(args, "timeout", None),
                             tenant=getattr(args, "tenant", None), tls_ca=getattr(args, "tls_ca", None))
        args.tenant = config.tenant
        args.output = getattr(args, "output", "table")
        args.sort_by = getattr(args, "sort_by", "")
        ctx = Ctx.from_args(args, config)
        return trio.run(args.func, ctx, args)
    except Exception as exc:
        code, message = exit_code(exc)
        print(f"leibrix ctl: error: {message}", file=sys.stderr)
        return code
