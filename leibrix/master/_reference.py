"""The configuration reference: the master's options table rendered as Markdown.

Every option is declared once, in :data:`leibrix.master._config.OPTIONS`. This
module turns that table into the reference published in
``docs/operations.md``, between two marker comments::

    <!-- options:begin -->
    ... generated, do not edit by hand ...
    <!-- options:end -->

so the documentation can never drift from the flags a master accepts::

    python -m leibrix.master._reference                  # print the table
    python -m leibrix.master._reference --write FILE     # rewrite FILE's block (``make docs``)
    python -m leibrix.master._reference --check FILE     # exit 1 if FILE's block is stale

A test runs the check against the committed file, so adding or changing an
option without regenerating the reference fails ``make test``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from leibrix.master._options import OPTIONS, Option

__all__ = ["BEGIN", "END", "StaleReference", "main", "render_options", "splice"]

#: Marker comments around the generated block (each on a line of its own).
BEGIN = "<!-- options:begin -->"
END = "<!-- options:end -->"

_NOTE = "<!-- generated from leibrix/master/_config.py OPTIONS by `make docs`; do not edit by hand -->"

_UNITS = ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB"))


class StaleReference(Exception):
    """The reference in a file differs from the one the options table renders."""


def _cell(text: str) -> str:
    """Make ``text`` safe inside a Markdown table cell (no pipes, nothing read as an HTML tag, one line)."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;")


def _default(opt: Option) -> str:
    value: Any = opt.default
    if opt.kind is bool:
        return "`false`" if not value else "`true`"
    if opt.kind is list:
        return "`" + ",".join(value) + "`" if value else "(none)"
    if isinstance(value, str) and not value:
        return "(none)"
    text = f"`{value}`"
    if opt.metavar == "BYTES" and isinstance(value, int):
        for size, unit in _UNITS:
            if value >= size and value % size == 0:
                return f"{text} ({value // size} {unit})"
    return text


def render_options(options: Iterable[Option] = OPTIONS) -> str:
    """The options as one Markdown table: flag, environment variable, TOML key, default, meaning.

    The result is deterministic (the options' declared order) and ends with a
    newline; it holds no marker comments (see :func:`splice`).
    """
    lines = [
        "| flag | environment | TOML key | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for opt in options:
        flag = f"`{opt.flag} {opt.metavar}`" if opt.metavar and opt.kind is not bool else f"`{opt.flag}`"
        lines.append(
            f"| {flag} | `{opt.env}` | `{opt.name}` | {_default(opt)} | {_cell(opt.help)} |"
        )
    return "\n".join(lines) + "\n"


def _block(table: str) -> str:
    return f"{BEGIN}\n{_NOTE}\n\n{table}\n{END}"


def _find(text: str) -> tuple[int, int]:
    """Offsets of the generated block in ``text`` (from the begin marker to the end of the end marker)."""
    start = text.find(BEGIN)
    if start < 0 or text.find(BEGIN, start + 1) >= 0:
        raise ValueError(f"expected exactly one {BEGIN} marker")
    end = text.find(END, start)
    if end < 0 or text.find(END, end + 1) >= 0:
        raise ValueError(f"expected exactly one {END} marker after {BEGIN}")
    return start, end + len(END)


def splice(text: str, table: str | None = None) -> str:
    """``text`` with the block between the markers replaced by ``table`` (default: the current options).

    Raises ``ValueError`` when the markers are missing, repeated or out of order.
    """
    start, end = _find(text)
    return text[:start] + _block(render_options() if table is None else table) + text[end:]


def check(path: Path) -> None:
    """Raise :class:`StaleReference` if ``path``'s generated block is not what the options render."""
    text = path.read_text(encoding="utf-8")
    if splice(text) != text:
        raise StaleReference(
            f"{path}: the configuration reference is stale; run `make docs` "
            f"(python -m leibrix.master._reference --write {path})"
        )


def write(path: Path) -> bool:
    """Rewrite ``path``'s generated block; returns True if the file changed."""
    text = path.read_text(encoding="utf-8")
    new = splice(text)
    if new == text:
        return False
    path.write_text(new, encoding="utf-8")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: print the table, ``--write FILE`` or ``--check FILE``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m leibrix.master._reference",
        description="Render the master's configuration reference (Markdown) from its options table.",
    )
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="FILE", help=f"rewrite the block between {BEGIN} and {END}")
    group.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if that block is stale")
    args = parser.parse_args(argv)
    try:
        if args.write:
            changed = write(args.write)
            print(f"{args.write}: {'updated' if changed else 'already current'}")
        elif args.check:
            check(args.check)
            print(f"{args.check}: configuration reference is current")
        else:
            sys.stdout.write(render_options())
    except StaleReference as exc:
        print(exc, file=sys.stderr)
        return 1
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
