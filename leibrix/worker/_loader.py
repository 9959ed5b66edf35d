"""Executing a LoadPlan into the worker's in-memory DuckDB, and evicting it again.

A plan with ``read`` (``ReadPlan``) is loaded from its **source**, by
:mod:`leibrix.worker._readers`: an Iceberg epoch is one ``CREATE TABLE AS``
over DuckDB's Parquet reader (window and dimension filters, positional and
equality deletes applied); a SQL or StarRocks epoch is the planned query,
streamed through SQLAlchemy as Arrow batches into one ``CREATE TABLE AS``.
Columns are taken in the planned schema's order and cast to the planned
types where the source's representation differs (so an ``int32`` planned
column read as ``BIGINT`` lands as ``INTEGER``).

A plan **without** ``read`` (a source the master does not plan yet) is filled
with **deterministic synthetic rows** (:meth:`Loader._load_synthetic`):
``expected_rows`` rows (capped by ``max_rows``) whose values derive only from
the plan id and the row number, with the epoch's time window and dimension
values; its columns are ``leibrix.domain._schema.synthetic``'s definition.

Everything reported back is *measured*, never echoed from the plan: rows by
``count(*)``, bytes by DuckDB's own memory accounting before and after the
load, and the schema fingerprint (``leibrix.domain._schema.fingerprint``) of
the table's real Arrow schema, read back from DuckDB through nanoarrow. When
the plan carries an ``arrow_schema``, the table built must have the same
fingerprint; otherwise the table is dropped and the load fails with
``SchemaMismatch`` naming both schemas, which the agent reports as FAILED — a
table that is not what the master planned must never be reported COMPLETED.
A source's own error is raised as ``SourceError`` (redacted, no secret).

The database runs with ``memory_limit`` (the worker's ``--memory``),
``threads`` (its ``--cpu``), no spilling and the ``UTC`` time zone.
All methods are synchronous and thread-safe (one lock around the DuckDB
connection); the agent calls them through :func:`trio.to_thread.run_sync` so the
event loop never blocks on a load.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

import duckdb
import nanoarrow as na

from leibrix.domain import _schema
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.worker import _readers
from leibrix.worker._readers import SourceError

__all__ = ["Loaded", "Loader", "SchemaMismatch", "SourceError", "table_name"]


def table_name(dataset_id: str, epoch_id: str) -> str:
    """The destination table of an epoch, as the wire contract names it: ``{dataset_id}__{epoch_id}``."""
    return f"{dataset_id}__{epoch_id}"


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


class SchemaMismatch(ValueError):
    """The table a plan produced does not have the schema the plan carries (the table is dropped)."""


@dataclass(frozen=True, slots=True)
class Loaded:
    """What one table holds: the facts a worker reports and re-registers with."""

    tenant_id: str
    dataset_id: str
    epoch_id: str
    plan_id: str
    rows: int
    bytes: int
    schema_fingerprint: str
    #: The time column and the epoch's window ``[start_us, end_us)`` in microseconds since the Unix epoch
    #: (None when the plan resolved no window): the query path prunes epochs with them.
    time_column: str = ""
    start_us: int | None = None
    end_us: int | None = None

    @property
    def table(self) -> str:
        """The DuckDB table holding this epoch."""
        return table_name(self.dataset_id, self.epoch_id)

    def inventory_entry(self) -> pb.InventoryEntry:
        """This table as a registration inventory entry (so a reconnect reconciles, not reloads)."""
        return pb.InventoryEntry(
            dataset_id=self.dataset_id,
            epoch_id=self.epoch_id,
            plan_id=self.plan_id,
            rows=self.rows,
            bytes=self.bytes,
            tenant_id=self.tenant_id,
            schema_fingerprint=self.schema_fingerprint,
        )


class Loader:
    """One in-memory DuckDB database holding one table per resident epoch.

    Parameters
    ----------
    memory_limit_bytes:
        DuckDB's ``memory_limit``: the worker's advertised memory capacity, so a
        plan that does not fit fails with DuckDB's out-of-memory error (reported
        as FAILED) instead of swapping the host.
    max_rows:
        Cap on synthetic rows per plan, to keep test and demo machines safe.
    threads:
        DuckDB's ``threads``: the worker's CPU cores.
    batch_rows:
        Rows per batch fetched from a SQL source (memory held by a SQL load
        beyond its table is about one batch).
    """

    def __init__(self, *, memory_limit_bytes: int, max_rows: int = 5_000_000, threads: int = 1,
                 batch_rows: int = _readers.BATCH_ROWS) -> None:
        self._lock = threading.Lock()
        self._con = duckdb.connect(":memory:")
        self._con.execute(f"SET memory_limit = '{max(memory_limit_bytes, 1 << 20)}B'")
        self._con.execute(f"SET threads = {max(1, int(threads))}")
        # an in-memory cache must not spill to disk (DuckDB's default is ./.tmp): over the limit is a failed load
        self._con.execute("SET temp_directory = ''")
        # TIMESTAMPTZ columns export as timestamp[.., tz="UTC"], the zone the sources' schemas name
        self._con.execute("SET TimeZone = 'UTC'")
        self.max_rows = max_rows
        self.batch_rows = max(1, batch_rows)
        self._tables: dict[str, Loaded] = {}
        # Queries get cursors from this one, never from ``_con``: creating a cursor must not wait for
        # ``_lock``, which a load holds for as long as it runs.
        self._query_root = self._con.cursor()
        self._root_lock = threading.Lock()

    def close(self) -> None:
        """Release the database (every table is gone: a restarted worker starts empty)."""
        with self._lock, self._root_lock:
            self._query_root.close()
            self._con.close()

    # ---- queries -------------------------------------------------------

    def inventory(self) -> list[Loaded]:
        """Every table currently held, for registration."""
        with self._lock:
            return list(self._tables.values())

    def holds(self, dataset_id: str, epoch_id: str) -> Loaded | None:
        """The loaded table of that epoch, if any."""
        return self._tables.get(table_name(dataset_id, epoch_id))

    def epochs(self, dataset_id: str) -> list[Loaded]:
        """The tables held for one logical dataset (every tenant's), in window order."""
        held = [t for t in list(self._tables.values()) if t.dataset_id == dataset_id]
        return sorted(held, key=lambda t: (t.start_us or 0, t.epoch_id))

    def datasets(self) -> dict[tuple[str, str], list[Loaded]]:
        """Every held table grouped by ``(tenant_id, dataset_id)``."""
        out: dict[tuple[str, str], list[Loaded]] = {}
        for t in list(self._tables.values()):
            out.setdefault((t.tenant_id, t.dataset_id), []).append(t)
        return out

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A connection of its own to the worker's database, for one query (close it when done).

        Temporary views made on it are visible to it alone, and ``interrupt()``
        on it stops only its query.
        """
        with self._root_lock:
            return self._query_root.cursor()

    @property
    def memory_used_bytes(self) -> int:
        """Bytes of all resident tables, as measured when each was loaded."""
        return sum(t.bytes for t in list(self._tables.values()))

    def query(self, sql: str) -> list[tuple]:
        """Run a read query (used by tests and the demo to check what is resident)."""
        with self._lock:
            return self._con.execute(sql).fetchall()

    # ---- commands ------------------------------------------------------

    def load(self, assignment: pb.DataAssignmentEvent, *, tenant_id: str,
             progress: Callable[[int], None] | None = None) -> Loaded:
        """Execute a ``data_assignment``: (re)create its table and measure what it holds.

        A plan with ``read`` is loaded from its source (:meth:`_load_source`);
        one without is filled with synthetic rows (:meth:`_load_synthetic`).
        ``progress``, when given, is called with the rows loaded so far:
        after every batch of a SQL read (from this thread or the DuckDB
        thread pulling the batches: keep it cheap and thread-safe, e.g. store
        the number) and, with the measured count, at the end of every read.
        Idempotent: loading the same plan again replaces the table, so a
        re-sent assignment after a reconnect is harmless.

        Raises
        ------
        SourceError
            The source's error (redacted); the table is not created.
        SchemaMismatch
            The table built does not have the plan's schema (it is dropped).
        """
        plan = assignment.load_plan
        dataset_id, epoch_id = assignment.dataset_id, assignment.epoch_id
        if not dataset_id or not epoch_id:
            raise ValueError("data_assignment needs dataset_id and epoch_id")
        name = plan.destination_table_name or table_name(dataset_id, epoch_id)
        expected = None
        if plan.arrow_schema:
            try:
                expected = _schema.from_ipc(plan.arrow_schema)
            except ValueError as exc:
                raise ValueError(f"load_plan.arrow_schema: {exc}") from None
        part = plan.resolved_partition
        window: tuple[int, int] | None = None
        if part.HasField("time_range") and part.time_range.HasField("start_inclusive"):
            start_us = part.time_range.start_inclusive.ToMicroseconds()
            window = (start_us, max(start_us + 1, part.time_range.end_exclusive.ToMicroseconds()))
        with self._lock:
            before = self._memory()
            if plan.HasField("read"):
                self._load_source(plan, name, expected, progress)
                time_column = part.time_column_name
            else:
                time_column = self._load_synthetic(plan, name, window)
            after = self._memory()
            old = self._tables.pop(name, None)
            measured = self._arrow_schema(name)
            fingerprint = _schema.fingerprint(measured)
            if expected is not None and (planned := _schema.fingerprint(expected)) != fingerprint:
                self._con.execute(f"DROP TABLE {_quote(name)}")
                raise SchemaMismatch(
                    f"loaded schema {fingerprint} ({_schema.canonical(measured)}) differs from the plan's "
                    f"{planned} ({_schema.canonical(expected)}); table {name} dropped")
            ((count,),) = self._con.execute(f"SELECT count(*) FROM {_quote(name)}").fetchall()
            # a replaced table freed its old bytes in the same statement
            size = max(0, after - before + (old.bytes if old else 0))
            loaded = Loaded(plan.tenant_id or tenant_id, dataset_id, epoch_id, plan.plan_id,
                            int(count), size, fingerprint, time_column, *(window or (None, None)))
            self._tables[name] = loaded
        if progress is not None and plan.HasField("read"):
            progress(loaded.rows)
        return loaded

    def _load_synthetic(self, plan: pb.LoadPlan, name: str, window: tuple[int, int] | None) -> str:
        """Fill ``name`` with the synthetic rows of a plan that names no read; returns the time column."""
        part = plan.resolved_partition
        rows = max(0, min(plan.expected_rows, self.max_rows))
        seed = plan.plan_id or name
        table = _schema.synthetic(part.time_column_name, part.dimension_values.keys())
        start_us, end_us = window or (0, 86_400_000_000)
        fill = {
            "id": "i",
            "time": f"make_timestamp({start_us}::BIGINT + (hash(i, {_literal(seed)}) % {end_us - start_us})::BIGINT)",
            "key": f"'k' || (hash(i, {_literal(seed + '/k')}) % 1000)::VARCHAR",
            "value": f"(hash(i, {_literal(seed + '/v')}) % 1000000)::DOUBLE / 1000.0",
        }

        def expr(c: _schema.Column) -> str:
            return _literal(part.dimension_values[c.name]) if c.role == "dimension" else fill[c.role]

        columns = ", ".join(f"CAST({expr(c)} AS {c.sql_type}) AS {_quote(c.name)}" for c in table.columns)
        self._con.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT {columns} FROM range({rows}) t(i)")
        return table.columns[1].name

    def _load_source(self, plan: pb.LoadPlan, name: str, expected, progress) -> None:
        """Create ``name`` from the plan's ``read`` (see :mod:`leibrix.worker._readers`), cast to the planned schema."""
        import pyarrow as pa

        planned = pa.schema(pa.ipc.read_schema(pa.py_buffer(_schema.to_ipc(expected)))) if expected is not None else None
        read, part = plan.read, plan.resolved_partition
        kind = read.WhichOneof("read")
        if kind == "iceberg":
            query = _readers.iceberg_query(self._con, read.iceberg, part)
            if query is None:  # an epoch no data file holds rows of
                self._create_from(name, planned.empty_table() if planned is not None else None)
                return
            try:
                self._con.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS "
                                  f"SELECT {self._projection(f'({query})', planned)} FROM ({query})")
            except duckdb.ConversionException as exc:
                raise SchemaMismatch(f"the data files' columns cannot be cast to the plan's schema: "
                                     f"{str(exc).splitlines()[0]}") from None
        elif kind == "sql":
            batches = _readers.sql_batches(plan.source.catalog, read.sql, planned, time_column=part.time_column_name,
                                           batch_rows=self.batch_rows, progress=progress)
            first = next(batches, None)  # connects and runs the query here: its errors are raised as they are
            if first is None:
                self._create_from(name, planned.empty_table() if planned is not None else None)
                return
            failed: list[BaseException] = []

            def stream():
                yield first
                try:
                    yield from batches
                except BaseException as exc:
                    failed.append(exc)
                    raise

            # DuckDB pulls the batches while the driver fetches the next ones: one statement, no per-batch INSERT
            try:
                self._create_from(name, pa.RecordBatchReader.from_batches(first.schema, stream()))
            except Exception:
                if failed:
                    raise failed[0] from None
                raise
            finally:
                batches.close()  # a load DuckDB gave up on (out of memory) closes its source connection now
        else:
            raise _readers.SourceError("load_plan.read names neither an iceberg nor a sql read")

    def _create_from(self, name: str, data) -> None:
        """Create ``name`` from an Arrow table or record batch reader already of the planned types."""
        if data is None:
            raise _readers.SourceError("the epoch has nothing to read and the plan carries no arrow_schema")
        view = f"__leibrix_src_{threading.get_ident()}"
        self._con.register(view, data)
        try:
            self._con.execute(f"CREATE OR REPLACE TABLE {_quote(name)} AS SELECT * FROM {_quote(view)}")
        finally:
            self._con.unregister(view)

    def _projection(self, source: str, planned) -> str:
        """The planned columns of ``source``, in planned order, each cast to its planned DuckDB type when it differs."""
        if planned is None:
            return "*"
        have = {r[0]: r[1] for r in self._con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()}
        view = f"__leibrix_planned_{threading.get_ident()}"
        self._con.register(view, planned.empty_table())
        try:
            want = [(r[0], r[1]) for r in self._con.execute(f"DESCRIBE SELECT * FROM {_quote(view)}").fetchall()]
        finally:
            self._con.unregister(view)
        missing = [c for c, _ in want if c not in have]
        if missing:
            raise _readers.SourceError(f"columns {missing} of the plan's schema are not in the source")
        return ", ".join(_quote(c) if have[c] == t else f"CAST({_quote(c)} AS {t}) AS {_quote(c)}" for c, t in want)

    def evict(self, dataset_id: str, epoch_id: str) -> bool:
        """Drop an epoch's table; False if it was not held (eviction is idempotent)."""
        name = table_name(dataset_id, epoch_id)
        with self._lock:
            self._con.execute(f"DROP TABLE IF EXISTS {_quote(name)}")
            return self._tables.pop(name, None) is not None

    def _arrow_schema(self, name: str) -> na.Schema:
        # On a cursor of its own: DuckDB refuses to export a relation while the connection has an
        # unfinished result (e.g. after a fetchone). The stream is closed at once for the same reason.
        cursor = self._con.cursor()
        try:
            with na.ArrayStream(cursor.sql(f"SELECT * FROM {_quote(name)} LIMIT 0")) as stream:
                return stream.schema
        finally:
            cursor.close()

    def _memory(self) -> int:
        ((total,),) = self._con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()
        return int(total or 0)
