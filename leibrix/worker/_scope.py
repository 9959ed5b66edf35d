"""What a query reads: the tables, table functions and time ranges named by one SELECT statement.

The worker answers SQL written against **logical** dataset names. Before it
runs a query it needs three facts about the statement, and it reads them from
DuckDB's own parser (``json_serialize_sql``, built in, about half a millisecond)
instead of guessing with regular expressions:

* every table the statement names (``BASE_TABLE`` nodes) and every name its
  ``WITH`` clauses define, so a name that is neither one of the tenant's
  datasets nor a CTE can be refused before anything runs;
* every table function it calls (``read_csv``, ``range`` ...), so functions that
  reach outside the worker's memory can be refused;
* for each dataset, the time window its rows can come from, so epochs whose
  ``[start, end)`` cannot match are left out of the query's view.

The window is derived conservatively. It is read only from a ``SELECT`` whose
``FROM`` is the dataset alone, from the top-level ``AND`` conjuncts of its
``WHERE`` that compare the time column (bare, or qualified by the table's name
or alias) with a timestamp literal (``=``, ``<``, ``<=``, ``>``, ``>=``,
``BETWEEN``). Every other conjunct is ignored, which can only widen the
window. If any reference to the dataset is not such a ``SELECT`` (a join, a
subquery over it without a bound) the dataset is not pruned at all. So pruning
never removes an epoch whose rows the statement could see.

Literals are read as UTC when they carry no zone, the way the synthetic loader
and the master's epoch windows count time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

__all__ = ["Scope", "SqlError", "Window", "overlaps", "read_scope"]

#: A half-open window in microseconds since the Unix epoch; None is unbounded on that side.
Window = tuple[int | None, int | None]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


class SqlError(ValueError):
    """The statement does not parse, is not a single SELECT, or cannot be analysed."""


@dataclass
class Scope:
    """The names a statement reads and, per table, the windows its rows can come from."""

    tables: set[str] = field(default_factory=set)
    ctes: set[str] = field(default_factory=set)
    functions: set[str] = field(default_factory=set)
    #: table name (lower case) -> windows of its references; None when some reference is unbounded
    windows: dict[str, list[Window] | None] = field(default_factory=dict)

    def window_of(self, table: str) -> list[Window] | None:
        """The windows a table's rows are read from (None: all of it)."""
        return self.windows.get(table.lower())


def overlaps(start_us: int | None, end_us: int | None, windows: list[Window] | None) -> bool:
    """Whether an epoch ``[start_us, end_us)`` can hold a row inside any of ``windows``."""
    if windows is None or start_us is None or end_us is None:
        return True
    return any((hi is None or start_us < hi) and (lo is None or end_us > lo) for lo, hi in windows)


def read_scope(serialize: Callable[[str], str], sql: str, time_column: Callable[[str], str | None]) -> Scope:
    """Analyse one statement.

    Parameters
    ----------
    serialize:
        Runs DuckDB's ``json_serialize_sql`` on ``sql`` and returns its JSON text.
    sql:
        The statement.
    time_column:
        The time column of a table name, or None for a table that has none (no pruning).

    Raises
    ------
    SqlError
        When the statement does not parse or is not exactly one SELECT.
    """
    try:
        tree = json.loads(serialize(sql))
    except ValueError as exc:
        raise SqlError(f"cannot analyse the statement: {exc}") from None
    if tree.get("error"):
        raise SqlError(tree.get("error_message") or "the statement does not parse")
    statements = tree.get("statements") or []
    if len(statements) != 1:
        raise SqlError(f"expected exactly one SELECT statement, got {len(statements)}")
    scope = Scope()
    bounded: dict[int, Window] = {}
    refs: list[dict[str, Any]] = []
    for node in _walk(statements[0]):
        kind = node.get("type")
        if kind == "BASE_TABLE":
            refs.append(node)
        elif kind == "TABLE_FUNCTION":
            fn = node.get("function") or {}
            scope.functions.add(str(fn.get("function_name", "")).lower())
        elif kind == "SELECT_NODE":
            source = node.get("from_table") or {}
            if source.get("type") == "BASE_TABLE":
                column = time_column(str(source.get("table_name", "")))
                if column:
                    bounded[id(source)] = _window(node.get("where_clause"), column, source)
        cte_map = node.get("cte_map")
        if isinstance(cte_map, dict):
            for entry in cte_map.get("map") or []:
                scope.ctes.add(str(entry.get("key", "")).lower())
    for ref in refs:
        name = str(ref.get("table_name", "")).lower()
        if ref.get("schema_name") or ref.get("catalog_name"):
            name = ".".join(p for p in (ref.get("catalog_name"), ref.get("schema_name"), name) if p).lower()
        scope.tables.add(name)
        window = bounded.get(id(ref))
        if name not in scope.windows:
            scope.windows[name] = []
        current = scope.windows[name]
        if window is None or current is None:
            scope.windows[name] = None
        else:
            current.append(window)
    return scope


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            yield item
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


_FLIP = {"COMPARE_LESSTHAN": "COMPARE_GREATERTHAN", "COMPARE_GREATERTHAN": "COMPARE_LESSTHAN",
         "COMPARE_LESSTHANOREQUALTO": "COMPARE_GREATERTHANOREQUALTO",
         "COMPARE_GREATERTHANOREQUALTO": "COMPARE_LESSTHANOREQUALTO", "COMPARE_EQUAL": "COMPARE_EQUAL"}


def _window(where: Any, column: str, table: dict[str, Any]) -> Window:
    lo: int | None = None
    hi: int | None = None
    names = {str(table.get("table_name", "")).lower(), str(table.get("alias", "")).lower()} - {""}

    def is_time(expr: Any) -> bool:
        if not isinstance(expr, dict) or expr.get("class") != "COLUMN_REF":
            return False
        parts = [str(p).lower() for p in expr.get("column_names") or []]
        return parts == [column.lower()] or (len(parts) == 2 and parts[0] in names and parts[1] == column.lower())

    def narrow(low: int | None, high: int | None) -> None:
        nonlocal lo, hi
        if low is not None:
            lo = low if lo is None else max(lo, low)
        if high is not None:
            hi = high if hi is None else min(hi, high)

    for term in _conjuncts(where):
        kind = term.get("type")
        if kind == "COMPARE_BETWEEN" and is_time(term.get("input")):
            low, high = _micros(term.get("lower")), _micros(term.get("upper"))
            narrow(low, None if high is None else high + 1)
            continue
        if kind not in _FLIP:
            continue
        left, right = term.get("left"), term.get("right")
        if is_time(right) and not is_time(left):
            left, right, kind = right, left, _FLIP[kind]
        if not is_time(left):
            continue
        value = _micros(right)
        if value is None:
            continue
        if kind == "COMPARE_EQUAL":
            narrow(value, value + 1)
        elif kind == "COMPARE_GREATERTHANOREQUALTO":
            narrow(value, None)
        elif kind == "COMPARE_GREATERTHAN":
            narrow(value + 1, None)
        elif kind == "COMPARE_LESSTHAN":
            narrow(None, value)
        elif kind == "COMPARE_LESSTHANOREQUALTO":
            narrow(None, value + 1)
    return lo, hi


def _conjuncts(expr: Any) -> Iterator[dict[str, Any]]:
    if not isinstance(expr, dict):
        return
    if expr.get("type") == "CONJUNCTION_AND":
        for child in expr.get("children") or []:
            yield from _conjuncts(child)
    else:
        yield expr


def _micros(expr: Any) -> int | None:
    """A timestamp literal (``'2026-11-01'``, ``TIMESTAMP '...'``, ``'...'::TIMESTAMPTZ``) in µs, else None."""
    while isinstance(expr, dict) and expr.get("class") == "CAST":
        target = str((expr.get("type_expr") or {}).get("type_name", "")).upper()
        if target not in {"TIMESTAMP", "TIMESTAMPTZ", "DATE", "TIMESTAMP WITH TIME ZONE", "DATETIME"}:
            return None
        expr = expr.get("child")
    if not isinstance(expr, dict) or expr.get("class") != "CONSTANT":
        return None
    literal = expr.get("literal") or {}
    if literal.get("kind") != "STRING":
        return None
    try:
        moment = datetime.fromisoformat(str(literal.get("text", "")).strip())
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
