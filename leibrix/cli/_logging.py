"""``--log-level`` and ``--log-format`` for the ``leibrix`` commands that have no configuration file.

``leibrix master`` takes the same two settings as master options (flag,
``LEIBRIX_*`` environment variable or TOML). The formats and the context
fields every line carries are described in :mod:`leibrix.domain._logging`.
"""

from __future__ import annotations

import argparse

from leibrix.domain._logging import FORMATS, LEVELS, bind, setup_logging

__all__ = ["add_arguments", "bind", "setup_logging"]


def add_arguments(parser: argparse.ArgumentParser, *, default_level: str = "info") -> None:
    """Add ``--log-level`` and ``--log-format`` to a command that has no options of its own for them."""
    parser.add_argument("--log-level", default=default_level, type=str.lower, choices=LEVELS,
                        help=f"least severe level logged (default {default_level})")
    parser.add_argument("--log-format", default="text", choices=FORMATS,
                        help="'text' lines for people or one JSON object per line ('json'); default text")
