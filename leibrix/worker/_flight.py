"""The worker's query service: Arrow Flight over the epochs it holds.

The contract is the upstream Rust leibrix-worker's:

* ``GetFlightInfo(FlightDescriptor.for_command(sql))`` returns the result's
  schema and one endpoint whose ticket ``DoGet`` executes. The command is the
  SQL text (the ticket then names the tenant owning the datasets it reads), or
  a ticket's JSON object itself, so a client can name its tenant.
* The ticket is JSON ``{"sql", "tenant_id", "memory_limit_mb"?, "timeout_secs"?}``.
  This worker also reads two optional keys: ``"epochs"`` (``{dataset: [epoch
  ids]}``, the only epochs each dataset's view may read; a missing one is
  NOT_FOUND, so a caller never gets a silently partial answer), ``"window"``
  (``{dataset: [start_us | null, end_us | null]}``, the view keeps only rows
  whose time is in that half-open range, in microseconds since the Unix epoch;
  an epoch table whose rows were all inside its own window when it was loaded,
  a window the range covers, is read without the filter, which would keep
  every row) and ``"query_id"`` (the id ``cancel_query`` names). An upstream
  worker ignores unknown keys; see :mod:`leibrix.client._query` for why a
  client stays correct with such a worker.
* SQL names **logical** datasets. On a cursor of its own the query gets one
  temporary view per dataset it names: the ``UNION ALL`` of that dataset's
  epoch tables ``{dataset}__{epoch}`` held for the ticket's tenant, without the
  epochs whose window its time predicate excludes (:mod:`._scope`); a cursor
  whose query ended cleanly is kept with its views for the next query over
  the same tables (:mod:`._cursors`). Each
  tenant's tables live in a DuckDB schema of its own
  (:func:`~._loader.tenant_schema`, inside each table's own in-memory
  database), outside the query's search path, so a name resolves within the
  ticket's tenant only: two tenants' datasets of the same name on one worker
  never meet, and naming a table directly (qualified or not) is refused.
* ``ListFlights`` lists the datasets held (one ``FlightInfo`` per dataset, path
  descriptor ``[dataset]``; criteria, when given, is a tenant id or
  ``{"tenant_id": ...}`` and narrows the list to that tenant).
* ``DoAction``: ``health_check`` answers ``OK``; ``cancel_query`` with body
  ``{"query_id": ...}`` cancels that query, whether it is still waiting for a
  query slot or already executing (DuckDB ``interrupt()``). A query is known
  from the moment its ticket is accepted until its call returns, and a cancel
  is sticky: an interrupt reaches DuckDB only while a statement executes, so
  the query also checks its cancelled flag before its statement starts and
  after it ends, and a query answered "cancelled" always ends CANCELLED.

Statuses: bad SQL or ticket → INVALID_ARGUMENT; a name that is none of the
tenant's datasets → NOT_FOUND; another tenant's dataset, or a table function
reading outside the worker → PERMISSION_DENIED; over the timeout →
DEADLINE_EXCEEDED; cancelled → CANCELLED; no query slot within the timeout →
UNAVAILABLE; a result over the memory limit → UNKNOWN ("resource exhausted":
pyarrow has no RESOURCE_EXHAUSTED mapping).

Each result's schema carries ``leibrix.scanned`` metadata: JSON ``{dataset:
{epoch: [rows, bytes]}}`` of the epoch tables its views read, which the client
uses for access reports and to check that ``"epochs"`` was honoured.

Limits: at most ``max_queries`` run at once (a semaphore; gRPC's own threads
run the handlers and DuckDB releases the GIL while it works), and each
tenant's queries first wait for one of that tenant's slots
(:mod:`leibrix.worker._budget`: its CPU share), so one tenant's flood queues
behind its own budget while others' queries still find slots; ``DoAction``
``budgets`` returns the per-tenant counters as JSON. ``timeout_secs``
interrupts the query's cursor when it expires (:mod:`._deadlines`: one thread
keeps every query's deadline). DuckDB's memory limit is one
setting for the whole database, so ``memory_limit_mb`` caps what one query may
materialise: its result. The parses of the most recent statements are
remembered (:mod:`._statements`), so a repeated statement (a dashboard's)
skips DuckDB's parser.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.flight as fl

from leibrix.worker._budget import Budgets
from leibrix.worker._cursors import ViewCursors, Views, make_views
from leibrix.worker._deadlines import Deadlines
from leibrix.worker._loader import Loaded, Loader, is_integer_type, time_filter
from leibrix.worker._scope import SqlError, overlaps, read_scope
from leibrix.worker._statements import Statements

__all__ = ["QueryService", "Ticket", "parse_ticket"]

log = logging.getLogger("leibrix.worker.flight")

#: Table functions a query may call: they read nothing outside the worker's memory.
SAFE_FUNCTIONS = frozenset({"range", "generate_series", "unnest"})
SCANNED_KEY = b"leibrix.scanned"


@dataclass
class Ticket:
    """A decoded query ticket."""

    sql: str
    tenant_id: str
    memory_limit_mb: int | None = None
    timeout_secs: float | None = None
    epochs: dict[str, list[str]] | None = None
    query_id: str = ""
    window: dict[str, list[int | None]] | None = None

    def encode(self) -> bytes:
        """The ticket's JSON bytes (optional keys only when set, as upstream)."""
        doc: dict = {"sql": self.sql, "tenant_id": self.tenant_id}
        if self.memory_limit_mb is not None:
            doc["memory_limit_mb"] = self.memory_limit_mb
        if self.timeout_secs is not None:
            doc["timeout_secs"] = self.timeout_secs
        if self.epochs is not None:
            doc["epochs"] = self.epochs
        if self.query_id:
            doc["query_id"] = self.query_id
        if self.window is not None:
            doc["window"] = self.window
        return json.dumps(doc).encode()


def parse_ticket(raw: bytes) -> Ticket:
    """Decode ticket JSON; ``pa.ArrowInvalid`` (INVALID_ARGUMENT) naming what is wrong."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise pa.ArrowInvalid(f"invalid ticket: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise pa.ArrowInvalid("invalid ticket: expected a JSON object")
    sql, tenant = doc.get("sql"), doc.get("tenant_id")
    if not isinstance(sql, str) or not sql.strip():
        raise pa.ArrowInvalid("invalid ticket: 'sql' must be a non-empty string")
    if not isinstance(tenant, str):
        raise pa.ArrowInvalid("invalid ticket: 'tenant_id' must be a string")
    memory, timeout = doc.get("memory_limit_mb"), doc.get("timeout_secs")
    if memory is not None and (not isinstance(memory, int) or isinstance(memory, bool) or memory <= 0):
        raise pa.ArrowInvalid("invalid ticket: 'memory_limit_mb' must be a positive integer")
    if timeout is not None and (not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0):
        raise pa.ArrowInvalid("invalid ticket: 'timeout_secs' must be a positive number")
    epochs = doc.get("epochs")
    if epochs is not None and not (isinstance(epochs, dict) and all(
            isinstance(k, str) and isinstance(v, list) and all(isinstance(e, str) for e in v)
            for k, v in epochs.items())):
        raise pa.ArrowInvalid("invalid ticket: 'epochs' must map dataset ids to lists of epoch ids")
    query_id = doc.get("query_id") or ""
    if not isinstance(query_id, str):
        raise pa.ArrowInvalid("invalid ticket: 'query_id' must be a string")
    window = doc.get("window")
    if window is not None and not (isinstance(window, dict) and all(
            isinstance(v, list) and len(v) == 2
            and all(b is None or (isinstance(b, int) and not isinstance(b, bool)) for b in v)
            for v in window.values())):
        raise pa.ArrowInvalid("invalid ticket: 'window' must map dataset ids to [start_us|null, end_us|null]")
    return Ticket(sql, tenant, memory, timeout, epochs, query_id, window)


class QueryService(fl.FlightServerBase):
    """Arrow Flight over a :class:`Loader`'s tables. Listens from construction until :meth:`shutdown`.

    Parameters
    ----------
    loader:
        The worker's tables.
    location:
        ``grpc://HOST:PORT`` (port 0: a free one; :attr:`port` tells which), or
        ``grpc+tls://HOST:PORT`` with ``tls_certificates``.
    max_queries:
        Queries executed at once; more wait for a slot up to their timeout.
    timeout_secs, memory_limit_mb:
        Defaults for tickets that set none.
    tls_certificates:
        ``[(certificate chain PEM, key PEM)]`` to serve TLS with (clients are not asked for certificates).
    """

    def __init__(self, loader: Loader, location: str, *, max_queries: int = 4, timeout_secs: float = 300.0,
                 memory_limit_mb: int = 1024, tls_certificates: list[tuple[bytes, bytes]] | None = None,
                 budgets: Budgets | None = None) -> None:
        super().__init__(location, tls_certificates=tls_certificates)
        #: Per-tenant query slots (default: every tenant may use every query slot).
        self.budgets = budgets or Budgets(max(1, max_queries), default_share=max(1, max_queries))
        self.loader = loader
        self.timeout_secs = timeout_secs
        self.memory_limit_mb = memory_limit_mb
        self._slots = threading.BoundedSemaphore(max(1, max_queries))
        #: Query ids from ticket acceptance until the call returns (waiting for a slot or executing).
        self._queries: set[str] = set()
        #: The cursors of the queries that hold a slot, by query id.
        self._running: dict[str, duckdb.DuckDBPyConnection] = {}
        #: Idle query cursors that still hold the views of the query they ran.
        self.cursors = ViewCursors(loader.cursor)
        #: Cancelled query ids among ``_queries``.
        self._cancelled: set[str] = set()
        self._lock = threading.Lock()
        #: The parses of the most recent statements.
        self.statements = Statements(loader.cursor())
        #: The running queries' timeouts.
        self.deadlines = Deadlines()
        self.queries = 0

    def shutdown(self) -> None:
        """Stop serving (waits for the calls in progress), then stop the deadlines' thread and close the idle
        cursors."""
        super().shutdown()
        self.deadlines.close()
        self.cursors.close()

    # ---- Flight RPCs -----------------------------------------------------

    def list_flights(self, context, criteria: bytes) -> Iterator[fl.FlightInfo]:
        tenant = _criteria_tenant(criteria)
        for (owner, dataset), tables in sorted(self.loader.datasets().items()):
            if tenant and owner != tenant:
                continue
            schema = self._schema_of(tables[0])
            yield fl.FlightInfo(schema, fl.FlightDescriptor.for_path(dataset), [],
                                sum(t.rows for t in tables), sum(t.bytes for t in tables))

    def get_flight_info(self, context, descriptor: fl.FlightDescriptor) -> fl.FlightInfo:
        command = descriptor.command or b""
        ticket = None
        if command.lstrip().startswith(b"{"):
            try:
                ticket = parse_ticket(command)
            except pa.ArrowInvalid:
                ticket = None  # not a ticket: SQL that happens to start with "{" fails below as SQL
        if ticket is None:
            try:
                sql = command.decode()
            except UnicodeDecodeError as exc:
                raise pa.ArrowInvalid(f"invalid SQL encoding: {exc}") from None
            if not sql.strip():
                raise pa.ArrowInvalid("empty SQL query")
            ticket = Ticket(sql, self._owner(sql))
        schema = self._run(ticket, schema_only=True).schema
        return fl.FlightInfo(schema, descriptor, [fl.FlightEndpoint(ticket.encode(), [])], -1, -1)

    def do_get(self, context, ticket: fl.Ticket) -> fl.RecordBatchStream:
        return fl.RecordBatchStream(self._run(parse_ticket(ticket.ticket)))

    def list_actions(self, context) -> list[tuple[str, str]]:
        return [("health_check", "Check service health"),
                ("cancel_query", 'Cancel a running query (body: {"query_id": ...})'),
                ("budgets", "Per-tenant CPU shares, query slots and how many queries run and wait (JSON)")]

    def do_action(self, context, action: fl.Action) -> Iterator[bytes]:
        if action.type == "health_check":
            return iter([b"OK"])
        if action.type == "budgets":
            return iter([json.dumps(self.budgets.snapshot(), sort_keys=True).encode()])
        if action.type == "cancel_query":
            try:
                query_id = json.loads(action.body.to_pybytes())["query_id"]
            except (ValueError, KeyError, TypeError) as exc:
                raise pa.ArrowInvalid(f"invalid cancel_query request: {exc!r}") from None
            return iter([f"Query {query_id} {'cancelled' if self.cancel(str(query_id)) else 'not running'}".encode()])
        raise pa.ArrowInvalid(f"Unknown action type: {action.type}")

    # ---- execution -------------------------------------------------------

    def cancel(self, query_id: str) -> bool:
        """Cancel a waiting or executing query; False when no query with that id is known.

        The query's cancelled flag is set (checked before and after its statement) and, when it holds a
        cursor, that cursor is interrupted (which stops a statement that is executing). Both happen under
        the lock the query's end takes, so an interrupt never reaches a cursor that has gone back to the pool.
        """
        with self._lock:
            if query_id not in self._queries:
                return False
            self._cancelled.add(query_id)
            cursor = self._running.get(query_id)
            if cursor is not None:
                cursor.interrupt()
        return True

    def _raise_if_cancelled(self, query_id: str) -> None:
        with self._lock:
            cancelled = query_id in self._cancelled
        if cancelled:
            raise fl.FlightCancelledError(f"query {query_id} cancelled")

    def _owner(self, sql: str) -> str:
        """The tenant owning the datasets a bare-SQL command reads (GetFlightInfo without a tenant)."""
        scope = self._scope(sql)
        owners = {owner for (owner, dataset) in self.loader.datasets() if dataset.lower() in scope.tables}
        return owners.pop() if len(owners) == 1 else ""

    def _scope(self, sql: str, tenant: str | None = None):
        def time_column(name: str) -> str | None:
            held = self.loader.epochs(name, tenant)
            # a window is read from timestamp literals: only a timestamp column can be pruned by one
            return held[0].time_column if held and not is_integer_type(held[0].time_type) else None
        try:
            return read_scope(self.statements.tree, sql, time_column)
        except SqlError as exc:
            raise pa.ArrowInvalid(f"SQL error: {exc}") from None

    def _views(self, ticket: Ticket) -> tuple[dict[str, list[Loaded]], set[str]]:
        """Per dataset the query names, the epoch tables its view reads, and the datasets whose every
        epoch was pruned (their view keeps one table's schema and reads no row); raises the contract's
        statuses."""
        scope = self._scope(ticket.sql, ticket.tenant_id)
        blocked = sorted(scope.functions - SAFE_FUNCTIONS)
        if blocked:
            raise fl.FlightUnauthorizedError(f"table function(s) not allowed on a worker: {', '.join(blocked)}")
        held = self.loader.datasets()
        # CTE names are collected without their scope, so a CTE may not share a name with a table the
        # tenant must not read: outside the CTE's scope DuckDB would bind that name to the table.
        table_names = {n.lower() for ts in held.values() for t in ts
                       for n in (t.table, f"{t.schema}.{t.table}", f"{t.database}.{t.schema}.{t.table}")}
        foreign = table_names | {
            ds.lower() for (owner, ds) in held if owner != ticket.tenant_id}
        shadowing = sorted(scope.ctes & foreign)
        if shadowing:
            raise fl.FlightUnauthorizedError(f"a WITH name may not be a table's name: {', '.join(shadowing)}")
        views: dict[str, list[Loaded]] = {}
        pruned_all: set[str] = set()
        for name in sorted(scope.tables - scope.ctes):
            mine = [ts for (owner, ds), ts in held.items() if owner == ticket.tenant_id and ds.lower() == name]
            if not mine:
                expected = {d.lower(): e for d, e in (ticket.epochs or {}).items()}
                if name in expected:  # the caller was routed here for this tenant's epochs: not held (any more)
                    raise pa.ArrowKeyError(f"Table not found: epoch(s) {', '.join(expected[name])} of {name} "
                                           "are not held here")
                if name in table_names or any(ds.lower() == name for (owner, ds) in held):
                    raise fl.FlightUnauthorizedError(
                        f"Tenant validation failed: {name!r} is not a dataset of tenant {ticket.tenant_id!r}")
                raise pa.ArrowKeyError(f"Table not found: {name} (no dataset of that name is held here)")
            tables = mine[0]
            dataset = tables[0].dataset_id
            wanted = (ticket.epochs or {}).get(dataset)
            if wanted is not None:
                by_id = {t.epoch_id: t for t in tables}
                missing = sorted(set(wanted) - set(by_id))
                if missing:
                    raise pa.ArrowKeyError(f"Table not found: epoch(s) {', '.join(missing)} of {dataset} "
                                           "are not held here")
                tables = [by_id[e] for e in wanted]
            windows = scope.window_of(name)
            bound = (ticket.window or {}).get(dataset)
            views[dataset] = [t for t in tables if overlaps(t.start_us, t.end_us, windows)
                              and (bound is None or overlaps(t.start_us, t.end_us, [tuple(bound)]))]
            if not views[dataset]:
                views[dataset] = [tables[0]]
                pruned_all.add(dataset)
        return views, pruned_all

    def _run(self, ticket: Ticket, *, schema_only: bool = False) -> pa.Table:
        views, pruned_all = self._views(ticket)
        timeout = ticket.timeout_secs or self.timeout_secs
        query_id = ticket.query_id or uuid.uuid4().hex
        with self._lock:
            if query_id in self._queries:
                raise pa.ArrowInvalid(f"query_id {query_id!r} is already running")
            self._queries.add(query_id)
        try:
            if schema_only:  # LIMIT 0: no tenant slot, so planning never queues behind the tenant's long queries
                return self._execute(query_id, ticket, views, pruned_all, timeout, schema_only=True)
            with self.budgets.slot(ticket.tenant_id, timeout) as held:
                if not held:
                    raise fl.FlightUnavailableError(
                        f"tenant {ticket.tenant_id!r} busy: none of its {self.budgets.slots(ticket.tenant_id)} "
                        f"query slot(s) within {timeout}s")
                return self._execute(query_id, ticket, views, pruned_all, timeout)
        finally:
            with self._lock:
                self._queries.discard(query_id)
                self._cancelled.discard(query_id)

    def _execute(self, query_id: str, ticket: Ticket, views, pruned_all, timeout: float, *,
                 schema_only: bool = False) -> pa.Table:
        if not self._slots.acquire(timeout=timeout):
            raise fl.FlightUnavailableError(f"worker busy: no query slot within {timeout}s")
        definitions: Views = tuple(
            (dataset, " UNION ALL ".join(f"SELECT * FROM {t.qualified}{_where(dataset in pruned_all, t, bound)}"
                                         for t in tables))
            for dataset, tables in views.items() for bound in [(ticket.window or {}).get(dataset)])
        cursor = None
        deadline = None
        reusable = False
        try:
            cursor, ready = self.cursors.take(definitions)
            with self._lock:
                self._running[query_id] = cursor
            self._raise_if_cancelled(query_id)  # cancelled while it waited for its slots
            try:
                if not ready:
                    make_views(cursor, definitions)
            except (duckdb.CatalogException, duckdb.BinderException):
                for dataset, tables in views.items():
                    gone = [t.epoch_id for t in tables
                            if self.loader.holds(dataset, t.epoch_id, ticket.tenant_id) is None]
                    if gone:  # evicted between the query's planning and now: another replica may still hold it
                        raise pa.ArrowKeyError(f"Table not found: epoch(s) {', '.join(gone)} of {dataset} are not "
                                               "held here any more (evicted)") from None
                raise
            deadline = self.deadlines.arm(timeout, cursor.interrupt)
            relation = cursor.sql(self.statements.statement(ticket.sql))
            if relation is None:
                raise pa.ArrowInvalid("SQL error: the statement returns no rows")
            # An interrupt between two statements is lost (DuckDB clears it when the next one starts), so the
            # flag is read right before the statement and again once it has ended.
            self._raise_if_cancelled(query_id)
            result = (relation.limit(0) if schema_only else relation).to_arrow_table()
            self._raise_if_cancelled(query_id)
            reusable = True
        except duckdb.InterruptException:
            with self._lock:
                cancelled = query_id in self._cancelled
            if cancelled:
                raise fl.FlightCancelledError(f"query {query_id} cancelled") from None
            raise fl.FlightTimedOutError(f"Query timeout after {timeout}s") from None
        except (duckdb.ParserException, duckdb.BinderException, duckdb.CatalogException,
                duckdb.ConversionException, duckdb.InvalidInputException, duckdb.NotImplementedException) as exc:
            raise pa.ArrowInvalid(f"SQL error: {exc}") from None
        except duckdb.OutOfMemoryException as exc:
            raise fl.FlightServerError(f"resource exhausted: {exc}") from None
        except duckdb.Error as exc:
            raise fl.FlightInternalError(f"Database error: {exc}") from None
        finally:
            if deadline is not None and not self.deadlines.disarm(deadline):
                reusable = False  # its interrupt may still be on its way
            with self._lock:
                self._running.pop(query_id, None)
                reusable = reusable and query_id not in self._cancelled
            if cursor is not None:
                if reusable:
                    self.cursors.give(definitions, cursor)
                else:
                    cursor.close()
            self._slots.release()
        limit = (ticket.memory_limit_mb or self.memory_limit_mb) << 20
        if result.nbytes > limit:
            raise fl.FlightServerError(f"resource exhausted: result of {result.nbytes} bytes is over the "
                                       f"query's memory limit of {limit >> 20} MB")
        scanned = {ds: {} if ds in pruned_all else {t.epoch_id: [t.rows, t.bytes] for t in tables}
                   for ds, tables in views.items()}
        meta = dict(result.schema.metadata or {})
        meta[SCANNED_KEY] = json.dumps(scanned).encode()
        self.queries += 0 if schema_only else 1
        return result.replace_schema_metadata(meta)

    def _schema_of(self, table: Loaded) -> pa.Schema:
        cursor = self.loader.cursor()
        try:
            return cursor.sql(f"SELECT * FROM {table.qualified} LIMIT 0").to_arrow_table().schema
        finally:
            cursor.close()


def _where(empty: bool, table: Loaded, bound: list[int | None] | None) -> str:
    """The ``WHERE`` of one epoch table in a view: none when every row is inside ``bound`` already."""
    if empty:
        return " WHERE false"
    if bound is None or table.holds_only(bound[0], bound[1]):
        return ""
    predicate = time_filter(table.time_column, table.time_type, bound[0], bound[1])
    return f" WHERE {predicate}" if predicate else ""


def _criteria_tenant(criteria: bytes) -> str:
    raw = (criteria or b"").strip()
    if not raw:
        return ""
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.decode(errors="replace")
    return str(doc.get("tenant_id", "")) if isinstance(doc, dict) else str(doc)
