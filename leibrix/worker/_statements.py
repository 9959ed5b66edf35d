"""DuckDB's parse of the statements queries send, remembered for the most recent ones.

Before a query runs, the worker reads its parse tree (``json_serialize_sql``:
the tables, functions and time window it reads, :mod:`._scope`), and DuckDB
parses its text again to run it. Both are fixed by the text alone, and the
clients this path serves (dashboards, BI tools) repeat their statements, so
:class:`Statements` keeps, for the last ``capacity`` statements, the tree and
the parsed statement, which a cursor runs without parsing it again
(``cursor.sql(statement)``; a parsed statement is copied for each run, so
queries on several threads share one).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import duckdb

__all__ = ["PARSED_MAX_CHARS", "PARSED_STATEMENTS", "Parsed", "Statements"]

#: Statements remembered, and the longest statement remembered (a longer one is parsed every time).
PARSED_STATEMENTS = 512
PARSED_MAX_CHARS = 16384


@dataclass(frozen=True, slots=True)
class Parsed:
    """One statement as DuckDB's parser reads it."""

    #: ``json_serialize_sql``'s JSON text (an error document when the text does not parse).
    tree: str
    #: The parsed statement, to run; None unless the text is exactly one statement.
    statement: duckdb.Statement | None


class Statements:
    """Parses statements on a cursor of its own, remembering the most recently used; thread-safe."""

    def __init__(self, cursor: duckdb.DuckDBPyConnection, *, capacity: int = PARSED_STATEMENTS,
                 max_chars: int = PARSED_MAX_CHARS) -> None:
        self._cursor = cursor
        self.capacity = capacity
        self.max_chars = max_chars
        self._lock = threading.Lock()
        #: SQL text -> its parse, the most recently used last
        self._parsed: OrderedDict[str, Parsed] = OrderedDict()

    def remembered(self) -> list[str]:
        """The statements remembered, least recently used first."""
        with self._lock:
            return list(self._parsed)

    def parse(self, sql: str) -> Parsed:
        """``sql``'s parse: the remembered one, else DuckDB's (remembered when short enough)."""
        with self._lock:
            parsed = self._parsed.get(sql)
            if parsed is not None:
                self._parsed.move_to_end(sql)
                return parsed
            (tree,), = self._cursor.execute("SELECT json_serialize_sql(?)", [sql]).fetchall()
            try:
                statements = self._cursor.extract_statements(sql)
            except duckdb.Error:
                statements = []
            parsed = Parsed(tree, statements[0] if len(statements) == 1 else None)
            if len(sql) <= self.max_chars:
                self._parsed[sql] = parsed
                while len(self._parsed) > self.capacity:
                    self._parsed.popitem(last=False)
            return parsed

    def tree(self, sql: str) -> str:
        """``sql``'s parse tree (JSON text)."""
        return self.parse(sql).tree

    def statement(self, sql: str) -> duckdb.Statement | str:
        """What to run for ``sql``: its remembered parsed statement, else the text itself."""
        with self._lock:
            parsed = self._parsed.get(sql)
        return parsed.statement if parsed is not None and parsed.statement is not None else sql
