"""Executing a LoadPlan into the worker's in-memory DuckDB, and evicting it again.

A plan with ``read`` (``ReadPlan``) is loaded from its **source**, by
:mod:`leibrix.sources._readers` (which a client reading a non-resident epoch
uses too): an Iceberg epoch is one ``CREATE TABLE AS``
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
load (the table compressed), and the schema fingerprint
(``leibrix.domain._schema.fingerprint``) of the table's real Arrow schema,
read back from DuckDB through nanoarrow. When the plan carries an
``arrow_schema``, the table built must have the same fingerprint; otherwise
the table is dropped and the load fails with ``SchemaMismatch`` naming both
schemas, which the agent reports as FAILED — a table that is not what the
master planned must never be reported COMPLETED.
A source's own error is raised as ``SourceError`` (redacted, no secret).

Tables are named ``{dataset_id}__{epoch_id}`` (the plan's destination name)
inside their tenant's own DuckDB schema (:func:`tenant_schema`), so tenants
sharing a worker never share a table. Each table lives in an in-memory
database of its own, attached to the worker's DuckDB for the table's lifetime
(``epoch_{n}``, a new one per load). Once built, that database is
checkpointed, which stores the table compressed: per column segment DuckDB
keeps the smallest of its methods (dictionary and FSST for strings,
bit-packing for integers and timestamps, ALP for doubles ...). Compressed
segments take a few times less memory, and selective filters over them run
faster (a string column is compared through its segments' dictionaries).
Building the table still needs the room of its uncompressed form (the memory
limit applies to that peak). The checkpoint touches only the new database, so
it never waits for the queries reading the others. Evicting an epoch detaches its database, which frees its
memory (a query already reading it finishes first). Reloading an epoch builds
the new table in a new database and detaches the old one once the new one is
in place.

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
from leibrix.sources import _readers
from leibrix.sources._readers import SchemaMismatch, SourceError, literal, quote

__all__ = ["Loaded", "Loader", "SchemaMismatch", "SourceError", "is_integer_type", "table_name", "tenant_schema",
           "time_filter"]


def table_name(dataset_id: str, epoch_id: str) -> str:
    """The destination table of an epoch, as the wire contract names it: ``{dataset_id}__{epoch_id}``."""
    return f"{dataset_id}__{epoch_id}"


def tenant_schema(tenant_id: str) -> str:
    """The DuckDB schema holding one tenant's tables: ``tenant_{tenant_id}``.

    Two tenants may hold a dataset of the same name on one shared worker;
    their ``{dataset_id}__{epoch_id}`` tables live in different schemas, so
    they never collide, and a query sees only its own tenant's schema. The
    prefix keeps a tenant id from naming DuckDB's own schemas (``main``,
    ``temp``, ``information_schema``).
    """
    return f"tenant_{tenant_id}"


_INTEGERS = ("TINYINT", "SMALLINT", "INTEGER", "BIGINT", "HUGEINT", "UTINYINT", "USMALLINT", "UINTEGER", "UBIGINT")


def is_integer_type(duck_type: str) -> bool:
    """Whether a DuckDB type is an integer type (a time column of one counts epoch milliseconds)."""
    return duck_type.upper() in _INTEGERS


def _comparable(duck_type: str) -> bool:
    """Whether :func:`time_filter` compares a column of this type with constants of its own type."""
    t = duck_type.upper()
    return is_integer_type(t) or t in ("DATE", "VARCHAR") or t.startswith("TIMESTAMP")


def _instant(duck_type: str, micros: int) -> str:
    """A constant of the time column's type for an instant in µs: epoch ms for integer columns."""
    t = duck_type.upper()
    if is_integer_type(t):
        return str(micros // 1000)
    if t == "DATE":
        return f"CAST(make_timestamp({micros}::BIGINT) AS DATE)"
    if t == "VARCHAR":
        return f"strftime(make_timestamp({micros}::BIGINT), '%Y-%m-%dT%H:%M:%S')"
    if t.startswith("TIMESTAMP"):
        return f"CAST(make_timestamp({micros}::BIGINT) AS {t})"
    return f"make_timestamp({micros}::BIGINT)"


def time_filter(column: str, duck_type: str, start_us: int | None, end_us: int | None) -> str:
    """The predicate keeping the rows whose time is in ``[start_us, end_us)`` (µs; None: unbounded on that side),
    compared in the column's own type; ``""`` when there is nothing to compare (no column, no bound)."""
    if not column:
        return ""
    terms = []
    if start_us is not None:
        terms.append(f"{quote(column)} >= {_instant(duck_type, int(start_us))}")
    if end_us is not None:
        terms.append(f"{quote(column)} < {_instant(duck_type, int(end_us))}")
    return " AND ".join(terms)


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

    #: The time column's DuckDB type as loaded (``TIMESTAMP``, ``BIGINT`` for epoch milliseconds, ``DATE`` ...).
    time_type: str = ""
    #: The table's name inside its tenant's schema (the plan's destination name, else ``{dataset}__{epoch}``).
    name: str = ""
    #: The in-memory database holding the table (attached to the worker's DuckDB while the table is held).
    database: str = ""
    #: Whether every row's time was inside ``[start_us, end_us)`` when the table was loaded (by the same
    #: comparison a query's time filter makes: :func:`time_filter`).
    in_window: bool = False

    def holds_only(self, start_us: int | None, end_us: int | None) -> bool:
        """Whether every row's time is known to be in ``[start_us, end_us)`` (µs; None: unbounded on that side),
        so a filter to that range would keep every row."""
        return (self.in_window and (start_us is None or (self.start_us is not None and start_us <= self.start_us))
                and (end_us is None or (self.end_us is not None and self.end_us <= end_us)))

    @property
    def table(self) -> str:
        """The DuckDB table holding this epoch, unqualified (inside :attr:`schema`)."""
        return self.name or table_name(self.dataset_id, self.epoch_id)

    @property
    def schema(self) -> str:
        """The tenant's DuckDB schema (:func:`tenant_schema`)."""
        return tenant_schema(self.tenant_id)

    @property
    def qualified(self) -> str:
        """``"database"."schema"."table"``: the table as SQL names it from any connection."""
        return f"{quote(self.database)}.{quote(self.schema)}.{quote(self.table)}"

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
        #: (tenant_id, table) -> what it holds
        self._tables: dict[tuple[str, str], Loaded] = {}
        #: Loads so far: numbers each load's database (``epoch_{n}``), so a name is never reused.
        self._loads = 0
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

    def holds(self, dataset_id: str, epoch_id: str, tenant_id: str | None = None) -> Loaded | None:
        """The loaded table of that epoch (of ``tenant_id``, or of any tenant when None), if any."""
        for t in list(self._tables.values()):
            if t.dataset_id == dataset_id and t.epoch_id == epoch_id and tenant_id in (None, t.tenant_id):
                return t
        return None

    def epochs(self, dataset_id: str, tenant_id: str | None = None) -> list[Loaded]:
        """The tables held for one logical dataset (of ``tenant_id``, or every tenant's), in window order."""
        held = [t for t in list(self._tables.values())
                if t.dataset_id == dataset_id and tenant_id in (None, t.tenant_id)]
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
        """Run a read query (used by tests and the demo to check what is resident).

        Unqualified table names resolve in every tenant's schema here (the
        query path never does this: it reads only the ticket's tenant).
        """
        with self._lock:
            self._con.execute(self._search_path())
            return self._con.execute(sql).fetchall()

    def _search_path(self) -> str:
        schemas = sorted((t.schema, t.database) for t in list(self._tables.values()))
        path = ",".join(["main", *(f"{quote(d)}.{quote(s)}" for s, d in schemas)])
        return f"SET search_path = {literal(path)}"

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
        tenant = plan.tenant_id or tenant_id
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
            self._loads += 1
            database = f"epoch_{self._loads}"
            table = f"{quote(tenant_schema(tenant))}.{quote(name)}"
            target = f"{quote(database)}.{table}"
            before = self._memory()
            self._con.execute(f"ATTACH ':memory:' AS {quote(database)} (COMPRESS)")
            try:
                self._con.execute(f"CREATE SCHEMA {quote(database)}.{quote(tenant_schema(tenant))}")
                if plan.HasField("read"):
                    self._load_source(plan, target, expected, progress)
                    time_column = part.time_column_name
                else:
                    time_column = self._load_synthetic(plan, target, window, seed=plan.plan_id or table)
                measured = self._arrow_schema(target)
                fingerprint = _schema.fingerprint(measured)
                if expected is not None and (planned := _schema.fingerprint(expected)) != fingerprint:
                    old = self._tables.pop((tenant, name), None)
                    if old is not None:
                        self._detach(old.database)
                    raise SchemaMismatch(
                        f"loaded schema {fingerprint} ({_schema.canonical(measured)}) differs from the plan's "
                        f"{planned} ({_schema.canonical(expected)}); table {name} dropped")
                types = {r[0]: r[1] for r in self._con.execute(f"DESCRIBE {target}").fetchall()}
                time_type = types.get(time_column, "")
                # whether every row is inside the epoch's window: a query whose window covers the epoch's then
                # needs no time filter on it
                check = time_filter(time_column, time_type, *window) if window and _comparable(time_type) else ""
                ((count, inside),) = self._con.execute(
                    f"SELECT count(*), count(*) FILTER (WHERE {check or 'false'}) FROM {target}").fetchall()
                self._con.execute(f"CHECKPOINT {quote(database)}")  # stores the table compressed
                size = max(0, self._memory() - before)
            except BaseException:
                self._detach(database)
                raise
            loaded = Loaded(tenant, dataset_id, epoch_id, plan.plan_id, int(count), size, fingerprint,
                            time_column, *(window or (None, None)), time_type=time_type, name=name,
                            database=database, in_window=bool(check) and inside == count)
            old = self._tables.pop((tenant, name), None)
            self._tables[(tenant, name)] = loaded
            if old is not None:
                self._detach(old.database)
        if progress is not None and plan.HasField("read"):
            progress(loaded.rows)
        return loaded

    def _load_synthetic(self, plan: pb.LoadPlan, target: str, window: tuple[int, int] | None, *, seed: str) -> str:
        """Fill ``target`` (quoted, qualified) with the synthetic rows of a plan that names no read; returns the time column.

        The rows derive from ``seed`` and the row number only.
        """
        part = plan.resolved_partition
        rows = max(0, min(plan.expected_rows, self.max_rows))
        table = _schema.synthetic(part.time_column_name, part.dimension_values.keys())
        start_us, end_us = window or (0, 86_400_000_000)
        fill = {
            "id": "i",
            "time": f"make_timestamp({start_us}::BIGINT + (hash(i, {literal(seed)}) % {end_us - start_us})::BIGINT)",
            "key": f"'k' || (hash(i, {literal(seed + '/k')}) % 1000)::VARCHAR",
            "value": f"(hash(i, {literal(seed + '/v')}) % 1000000)::DOUBLE / 1000.0",
        }

        def expr(c: _schema.Column) -> str:
            return literal(part.dimension_values[c.name]) if c.role == "dimension" else fill[c.role]

        columns = ", ".join(f"CAST({expr(c)} AS {c.sql_type}) AS {quote(c.name)}" for c in table.columns)
        self._con.execute(f"CREATE OR REPLACE TABLE {target} AS SELECT {columns} FROM range({rows}) t(i)")
        return table.columns[1].name

    def _load_source(self, plan: pb.LoadPlan, target: str, expected, progress) -> None:
        """Create ``target`` from the plan's ``read`` (:func:`leibrix.sources._readers.create_epoch_table`)."""
        catalog = plan.source.catalog
        kind = catalog.WhichOneof("catalog_type")
        if kind and "${sealed:" in str(getattr(catalog, kind)):
            # The master could not unseal the stored credentials (it lacks the secrets key that sealed them).
            raise SourceError(f"the {kind} catalog's credentials arrived sealed: the master does not hold the "
                              "secrets key that sealed them (--secrets-key-file)")
        import pyarrow as pa

        planned = pa.schema(pa.ipc.read_schema(pa.py_buffer(_schema.to_ipc(expected)))) if expected is not None else None
        _readers.create_epoch_table(self._con, target, plan, planned, batch_rows=self.batch_rows, progress=progress)

    def evict(self, dataset_id: str, epoch_id: str, tenant_id: str | None = None) -> bool:
        """Drop an epoch's table (of ``tenant_id``, or of every tenant when None); False if it was not held
        (eviction is idempotent)."""
        with self._lock:
            gone = [k for k, t in self._tables.items()
                    if t.dataset_id == dataset_id and t.epoch_id == epoch_id and tenant_id in (None, t.tenant_id)]
            for key in gone:
                self._detach(self._tables.pop(key).database)
            return bool(gone)

    def _detach(self, database: str) -> None:
        """Detach a table's database: its memory is freed once no query reads it any more."""
        self._con.execute(f"DETACH DATABASE IF EXISTS {quote(database)}")

    def _arrow_schema(self, target: str) -> na.Schema:
        """The Arrow schema of a table (``target``: quoted and qualified, or a bare name)."""
        # On a cursor of its own: DuckDB refuses to export a relation while the connection has an
        # unfinished result (e.g. after a fetchone). The stream is closed at once for the same reason.
        cursor = self._con.cursor()
        try:
            cursor.execute(self._search_path())  # a bare name (bench.schema) resolves in the tenants' schemas
            with na.ArrayStream(cursor.sql(f"SELECT * FROM {target} LIMIT 0")) as stream:
                return stream.schema
        finally:
            cursor.close()

    def _memory(self) -> int:
        ((total,),) = self._con.execute("SELECT sum(memory_usage_bytes) FROM duckdb_memory()").fetchall()
        return int(total or 0)
