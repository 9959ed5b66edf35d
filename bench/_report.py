"""The shared frame of every ``python -m bench.<name>``: options, timing, table, JSON.

A benchmark builds a :class:`Report`, adds ``name, value, unit`` rows whose
dotted names double as nested JSON keys (``ring.leibrix_ns_per_key`` →
``{"ring": {"leibrix_ns_per_key": ...}}``), then calls :meth:`Report.emit`.
Keeping this in one place means every benchmark accepts the same flags and
writes JSON of the same shape, so CI and the README can read any of them.

Example::

    args = options("my benchmark")
    report = Report("my benchmark", quick=args.quick)
    report.add("ring.leibrix_ns_per_key", 42.0, "ns", "1,000,000 keys")
    report.emit(args.json)
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table


def options(description: str, argv: list[str] | None = None,
            extra: Callable[[argparse.ArgumentParser], None] | None = None) -> argparse.Namespace:
    """Parse the common flags: ``--quick`` (small sizes, for CI) and ``--json PATH``.

    ``extra`` adds a benchmark's own flags to the parser.
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true", help="shrink sizes (CI smoke run); the output says so")
    parser.add_argument("--json", metavar="PATH", type=Path, help="also write the results as nested JSON")
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def best_of(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall-clock seconds of ``repeat`` calls (the least disturbed run on a shared machine)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


class Report:
    """Rows of ``(dotted name, value, unit, note)`` printed as one table and written as JSON."""

    def __init__(self, title: str, *, quick: bool) -> None:
        self.title = title
        self.quick = quick
        self.rows: list[tuple[str, float, str, str]] = []
        self.notes: list[str] = []

    def add(self, name: str, value: float, unit: str = "", note: str = "") -> float:
        """Record one result; returns ``value`` so it can be reused in ratios."""
        self.rows.append((name, float(value), unit, note))
        return value

    def note(self, text: str) -> None:
        """A line printed under the table (sizes, sampling, caveats) and stored in the JSON."""
        self.notes.append(text)

    def as_dict(self) -> dict:
        """The results as nested dicts keyed by the dotted names, plus ``quick`` and ``notes``."""
        out: dict = {"quick": self.quick, "notes": list(self.notes)}
        for name, value, _, _ in self.rows:
            node = out
            *parents, leaf = name.split(".")
            for p in parents:
                node = node.setdefault(p, {})
            node[leaf] = value
        return out

    def emit(self, json_path: Path | None = None, console: Console | None = None) -> None:
        """Print the table (and notes); write the JSON if a path is given."""
        console = console or Console()
        title = self.title + (" [QUICK: reduced sizes]" if self.quick else "")
        table = Table(title=title, title_justify="left")
        for col, justify in (("name", "left"), ("value", "right"), ("unit", "left"), ("note", "left")):
            table.add_column(col, justify=justify)  # type: ignore[arg-type]
        for name, value, unit, note in self.rows:
            table.add_row(name, _fmt(value), unit, note)
        console.print(table)
        for line in self.notes:
            console.print(f"- {line}")
        if json_path is not None:
            json_path.write_text(json.dumps(self.as_dict(), indent=2) + "\n")
            console.print(f"wrote {json_path}")


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.1f}"
    return f"{value:.4g}"
