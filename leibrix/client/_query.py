"""Querying resident data: ``Client(masters=[...]).query(tenant, dataset, sql, start, end) -> pyarrow.Table``.

How a query runs:

1. **Routes.** The epochs of ``dataset`` overlapping ``[start, end)`` and the
   workers holding each come from the masters (:mod:`._routes`: pushed by a
   ``WatchRoutes`` subscription, else ``ResolveRoute`` cached for a couple of
   seconds). An answer from part of the data is never returned: epochs not
   READY on any reachable worker are read from the dataset's source by the
   client itself, with the worker's own readers (:mod:`._query_source`), and
   combined with the workers' rows; with ``resident_only=True`` the query
   fails instead with :class:`~._routes.EpochsUnavailable` naming each one.
2. **Placement.** Epochs are grouped onto as few workers as possible (the
   worker holding most of the remaining epochs first, ties broken at random to
   spread load).
3. **One worker holds them all**: one Flight ``DoGet`` runs the user's SQL
   there. **Several workers**: each returns its rows of the dataset, restricted
   to its epochs and to ``[start, end)``, and the user's SQL runs over the union
   in an in-process DuckDB. That is correct for any SQL (aggregates, ``DISTINCT``,
   window functions, ``LIMIT``), because the SQL sees exactly the rows one
   worker would have. Only the time filter is pushed down, not the projection.
4. **Failures.** A worker that cannot be reached, dies mid-query or no longer
   holds an epoch (NOT_FOUND) is excluded for this query; its epochs are asked
   of another replica, with fresh routes. Other errors (bad SQL, permission,
   timeout) are the answer.
5. **Heat.** The epochs each worker read, with their rows and bytes, go to
   :class:`~._access.AccessReporter`, which reports them in batches; so do
   the epochs read from the source, which is how a dataset that is not
   resident gains the heat that makes the masters load it.

TLS: with ``tls_ca`` (and ``tls_cert``/``tls_key`` for masters that require
client certificates) the masters are called over TLS and the workers' Arrow
Flight is dialled as ``grpc+tls``, trusting that CA.

Time bounds are compared in the time column's own type: timestamps, or
integers counting epoch milliseconds (``PartitionColumnType.INT64``).

The ticket this client sends is the upstream worker's JSON with two keys of
its own: ``"epochs"`` (``{dataset: [epoch ids]}``) and ``"window"``
(``{dataset: [start_us | null, end_us | null]}``), which make a worker's view
of the dataset exactly the chosen epochs' rows inside the range. The Leibrix
worker acknowledges them by returning ``leibrix.scanned`` schema metadata. An
upstream worker ignores unknown keys and returns no such metadata; the client
then does not trust the answer and reruns the query the several-worker way,
whose per-worker SQL carries the same restriction as an explicit ``WHERE`` on
the time and dimension columns, which every worker honours.
"""

from __future__ import annotations

import json
import random
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.flight as fl

from leibrix.client._access import AccessReporter
from leibrix.client._call import tls_context
from leibrix.client._query_source import read_from_source
from leibrix.client._routes import Coverage, EpochPlace, EpochsUnavailable, RouteCache, to_ms
from leibrix.sources._readers import literal, quote
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["Client", "QueryFailed", "QueryInfo"]

SCANNED_KEY = b"leibrix.scanned"
_CONNECTION_WORDS = ("socket closed", "connection reset", "connection refused", "goaway", "rst_stream",
                     "failed to connect", "broken pipe", "unavailable", "end of stream")


class QueryFailed(RuntimeError):
    """A query that could not be answered after trying every replica it was allowed to."""


@dataclass
class QueryInfo:
    """How the last query ran: the workers asked, the path taken, attempts and time."""

    workers: list[str] = field(default_factory=list)
    epochs: int = 0
    combined: bool = False
    attempts: int = 1
    failed_workers: list[str] = field(default_factory=list)
    rows: int = 0
    seconds: float = 0.0
    #: Epochs read from the source because no worker held them.
    from_source: list[str] = field(default_factory=list)
    #: Where the routes came from: ``"watch"`` or ``"resolve"``.
    routes: str = ""


def _ts(ms: int) -> str:
    moment = datetime.fromtimestamp(ms / 1000, tz=timezone.utc).replace(tzinfo=None)
    return f"TIMESTAMP {literal(moment.isoformat(sep=' '))}"


def _retryable(exc: BaseException) -> bool:
    """Whether an error says "this worker cannot answer" rather than "this query is wrong"."""
    if isinstance(exc, (fl.FlightUnavailableError, pa.ArrowKeyError, OSError)):
        return True
    if isinstance(exc, (fl.FlightInternalError, fl.FlightServerError, fl.FlightCancelledError)) and not isinstance(
            exc, fl.FlightTimedOutError):
        text = str(exc).lower()
        return any(word in text for word in _CONNECTION_WORDS)
    return False


def restriction(time_column: str, places: Iterable[EpochPlace], lo_ms: int | None, hi_ms: int | None,
                epoch_ms: bool = False) -> str:
    """A ``WHERE`` predicate selecting exactly the rows of ``places`` inside ``[lo_ms, hi_ms)``.

    Adjacent windows with the same dimension values merge into one range, so
    30 daily epochs of one region are one comparison pair. With ``epoch_ms``
    the time column is an integer of epoch milliseconds and is compared with
    integers.
    """
    bound = str if epoch_ms else _ts
    by_dims: dict[tuple, list[list[int]]] = {}
    for p in sorted(places, key=lambda p: (p.dims, p.start_ms)):
        ranges = by_dims.setdefault(p.dims, [])
        if ranges and ranges[-1][1] == p.start_ms:
            ranges[-1][1] = p.end_ms
        else:
            ranges.append([p.start_ms, p.end_ms])
    col = quote(time_column)
    terms = []
    for dims, ranges in by_dims.items():
        for s, e in ranges:
            s = max(s, lo_ms) if lo_ms is not None else s
            e = min(e, hi_ms) if hi_ms is not None else e
            if s >= e:
                continue
            parts = [f"{col} >= {bound(s)}", f"{col} < {bound(e)}"]
            parts += [f"{quote(k)} = {literal(v)}" for k, v in dims]
            terms.append("(" + " AND ".join(parts) + ")")
    return " OR ".join(terms) if terms else "false"


class _WorkerFailed(Exception):
    def __init__(self, worker: str, cause: BaseException) -> None:
        super().__init__(f"{worker}: {type(cause).__name__}: {cause}")
        self.worker = worker
        self.cause = cause


def _tls(ca: str | None, cert: str | None, key: str | None) -> tuple[ssl.SSLContext | None, dict[str, bytes] | None]:
    """The masters' TLS context and the Flight client's TLS options, both None for plain text.

    Raises ``ValueError`` when a file cannot be read or a certificate without its key is given.
    """
    if not (ca or cert or key):
        return None, None
    if bool(cert) != bool(key):
        raise ValueError("tls_cert and tls_key: give both or neither")
    try:
        context = tls_context(ca or None, cert or None, key or None)
        flight: dict[str, bytes] = {}
        if ca:
            flight["tls_root_certs"] = Path(ca).read_bytes()
        if cert and key:
            flight["cert_chain"], flight["private_key"] = Path(cert).read_bytes(), Path(key).read_bytes()
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls_ca/tls_cert/tls_key: cannot be loaded: {exc}") from None
    return context, flight


class Client:
    """Queries over resident epochs, routed by the masters and answered by workers over Arrow Flight.

    Parameters
    ----------
    masters:
        Master gRPC addresses (``HOST:PORT``); any of them, calls follow the leader redirect.
    route_ttl:
        Seconds a dataset's routes are reused before asking the masters again.
    report_interval:
        Seconds between access-report batches.
    timeout:
        Seconds for each master call and each Flight call.
    max_attempts:
        Rounds of re-placement after worker failures before :class:`QueryFailed`.
    tls_ca:
        A CA certificate file (PEM): speak TLS to the masters and to the workers' Arrow Flight
        (``grpc+tls``), trusting this CA. With ``tls_cert``/``tls_key`` (a client certificate
        and its key, for masters that require mTLS) TLS is on too, trusting the system CAs
        when ``tls_ca`` is not given. None of them: plain text.

    Use as a context manager, or call :meth:`close` to send the last access reports.

    Examples
    --------
    >>> with Client(masters=["127.0.0.1:7070"]) as client:               # doctest: +SKIP
    ...     table = client.query("acme", "orders", "SELECT count(*) FROM orders",
    ...                          start=datetime(2026, 11, 1), end=datetime(2026, 11, 2))
    """

    def __init__(self, masters: Sequence[str] | str, *, route_ttl: float = 2.0, report_interval: float = 1.0,
                 timeout: float = 30.0, max_attempts: int = 3, metadata: Mapping[str, str] | None = None,
                 tls_ca: str | None = None, tls_cert: str | None = None, tls_key: str | None = None) -> None:
        joined = masters if isinstance(masters, str) else ",".join(masters)
        if not joined.strip():
            raise ValueError("masters: at least one HOST:PORT is required")
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        context, self._flight_tls = _tls(tls_ca, tls_cert, tls_key)
        self.routes = RouteCache(joined, ttl=route_ttl, timeout=min(timeout, 10.0), metadata=metadata, ssl=context)
        self.reporter = AccessReporter(joined, interval=report_interval, metadata=metadata, ssl=context)
        self.last = QueryInfo()
        self._flights: dict[str, fl.FlightClient] = {}
        self._lock = threading.Lock()
        self._rng = random.Random()
        #: Called with a worker id just before each Flight call to it (tracing; tests).
        self.on_dispatch: Callable[[str], None] | None = None

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """End the route subscriptions, send pending access reports and close the Flight connections."""
        self.routes.close()
        self.reporter.close()
        with self._lock:
            flights, self._flights = self._flights, {}
        for client in flights.values():
            client.close()

    # ---- the query -------------------------------------------------------

    def query(self, tenant: str, dataset: str, sql: str, start: datetime | None = None, end: datetime | None = None,
              *, timeout_secs: float | None = None, memory_limit_mb: int | None = None,
              resident_only: bool = False) -> pa.Table:
        """Run ``sql`` (naming ``dataset``) over the dataset's rows with time in ``[start, end)``.

        ``start``/``end`` of None are unbounded; naive datetimes are UTC.
        Epochs not READY on any worker are read from the source, unless
        ``resident_only``: then :class:`EpochsUnavailable` names them. Raises
        :class:`QueryFailed` when every replica of some epoch failed, the
        source's error (``SourceError``) when a source read fails, and the
        worker's Flight error (``pa.ArrowInvalid`` for bad SQL,
        ``FlightUnauthorizedError``, ``FlightTimedOutError`` ...) otherwise.
        """
        began = time.perf_counter()
        if start is not None and end is not None and to_ms(end) <= to_ms(start):
            raise ValueError("end must be after start")
        info = QueryInfo(attempts=0)
        lo, hi = to_ms(start), to_ms(end)
        limits = {"timeout_secs": timeout_secs, "memory_limit_mb": memory_limit_mb}
        failed: dict[str, str] = {}
        done: list[tuple[str, pa.Table, set[str]]] = []  # worker, its rows, the epochs they cover
        sourced: list[tuple[pa.Table, set[str]]] = []  # rows read from the source, the epochs they cover
        while True:
            info.attempts += 1
            coverage = self.routes.get(tenant, dataset, start, end)
            info.routes = coverage.via
            if resident_only:
                coverage.check()
            if not coverage.routed and not coverage.gaps:
                raise EpochsUnavailable(tenant, dataset, [("(none)", "no epoch of the dataset covers the range")])
            wanted = {p.epoch_id for p in coverage.routed} | {p.epoch_id for p in coverage.gaps}
            have = {e for _, _, epochs in done for e in epochs}
            read = {e for _, epochs in sourced for e in epochs}
            if (have | read) - wanted:  # the routes changed under the query (an epoch was refreshed): start over
                done, sourced, have, read = [], [], set(), set()
            gaps = [p for p in coverage.gaps if p.epoch_id not in have | read]
            if gaps:
                sourced.append((self._from_source(tenant, dataset, coverage, gaps, lo, hi), {p.epoch_id for p in gaps}))
                read |= {p.epoch_id for p in gaps}
                info.from_source += [p.epoch_id for p in gaps]
            plan = self._assign([p for p in coverage.routed if p.epoch_id not in have | read], failed)
            if not done and not sourced and len(plan) == 1:
                (worker, addr), epochs = next(iter(plan.items()))
                try:
                    table = self._direct(worker, addr, tenant, dataset, sql, epochs, lo, hi, limits)
                except _WorkerFailed as exc:
                    self._failed(exc, failed, tenant, dataset, info)
                    continue
                if table is not None:
                    info.workers, info.epochs = [worker], len(epochs)
                    return self._finish(info, table, began)
            errors = self._parts(plan, tenant, dataset, coverage, lo, hi, limits, done)
            for exc in errors:
                self._failed(exc, failed, tenant, dataset, info)
            if errors:
                continue  # the failed workers' epochs, on other replicas
            info.combined = True
            info.workers = sorted({w for w, _, _ in done})
            info.epochs = len(wanted)
            parts = [t for _, t, _ in done] + [t for t, _ in sourced]
            return self._finish(info, self._combine(dataset, sql, parts), began)

    def _from_source(self, tenant: str, dataset: str, coverage: Coverage, gaps: list[EpochPlace],
                     lo: int | None, hi: int | None) -> pa.Table:
        """The rows of ``gaps`` in ``[lo, hi)`` read from the dataset's source; their accesses are reported."""
        if coverage.source is None:
            raise EpochsUnavailable(tenant, dataset, coverage.missing)
        table = read_from_source(coverage.source, coverage.time_column,
                                 [(p.epoch_id, p.start_ms, p.end_ms, p.dims) for p in gaps], lo, hi)
        share = table.num_rows // max(1, len(gaps)), table.nbytes // max(1, len(gaps))
        self.reporter.add(tenant, dataset, {p.epoch_id: share for p in gaps})
        return table

    def _failed(self, exc: _WorkerFailed, failed: dict[str, str], tenant: str, dataset: str, info: QueryInfo) -> None:
        """Note a worker that could not answer and make the next attempt use fresh routes.

        A worker that no longer holds an epoch it was routed for (NOT_FOUND: the
        route was older than a move or an eviction) is healthy: only the routes
        are refreshed. A worker that cannot answer at all is left out of this
        query's remaining attempts.
        """
        self.routes.invalidate(tenant, dataset)
        if not isinstance(exc.cause, pa.ArrowKeyError):
            failed[exc.worker] = str(exc.cause)
            info.failed_workers.append(exc.worker)
            self._drop(exc.worker)
        if info.attempts >= self.max_attempts + 1:
            raise QueryFailed(f"{tenant}/{dataset}: gave up after {info.attempts} attempts; failed workers: "
                              + "; ".join(f"{w} ({why})" for w, why in failed.items())) from exc.cause

    def _finish(self, info: QueryInfo, table: pa.Table, began: float) -> pa.Table:
        info.rows = table.num_rows
        info.seconds = time.perf_counter() - began
        self.last = info
        return table.replace_schema_metadata(None)

    def _assign(self, places: list[EpochPlace], failed: Mapping[str, str]) -> dict[tuple[str, str], list[EpochPlace]]:
        remaining = list(places)
        plan: dict[tuple[str, str], list[EpochPlace]] = {}
        while remaining:
            counts: dict[tuple[str, str], int] = {}
            for p in remaining:
                for w in p.workers:
                    if w[0] not in failed:
                        counts[w] = counts.get(w, 0) + 1
            if not counts:
                raise QueryFailed(
                    "no live replica left for epoch(s) " + ", ".join(p.epoch_id for p in remaining)
                    + "; failed workers: " + "; ".join(f"{w} ({why})" for w, why in failed.items()))
            top = max(counts.values())
            best = self._rng.choice(sorted(w for w, n in counts.items() if n == top))
            plan[best] = [p for p in remaining if best in p.workers]
            remaining = [p for p in remaining if best not in p.workers]
        return plan

    # ---- Flight ----------------------------------------------------------

    def _flight(self, addr: str) -> fl.FlightClient:
        with self._lock:
            client = self._flights.get(addr)
            if client is None:
                if self._flight_tls is None:
                    client = fl.FlightClient(f"grpc://{addr}")
                else:
                    client = fl.FlightClient(f"grpc+tls://{addr}", **self._flight_tls)
                self._flights[addr] = client
            return client

    def _drop(self, worker: str) -> None:
        """Forget connections after a failure (a restarted worker gets a fresh channel)."""
        with self._lock:
            flights, self._flights = self._flights, {}
        for client in flights.values():
            client.close()

    def _get(self, worker: str, addr: str, ticket: dict) -> pa.Table:
        options = fl.FlightCallOptions(timeout=self.timeout + float(ticket.get("timeout_secs") or 0))
        if self.on_dispatch is not None:
            self.on_dispatch(worker)
        try:
            reader = self._flight(addr).do_get(fl.Ticket(json.dumps(ticket).encode()), options)
            return reader.read_all()
        except Exception as exc:
            if _retryable(exc):
                raise _WorkerFailed(worker, exc) from exc
            raise

    def _ticket(self, tenant: str, sql: str, limits: Mapping[str, float | None]) -> dict:
        ticket: dict = {"sql": sql, "tenant_id": tenant, "query_id": uuid.uuid4().hex}
        ticket.update({k: v for k, v in limits.items() if v is not None})
        return ticket

    def _restrict(self, ticket: dict, dataset: str, epochs: list[EpochPlace], lo: int | None, hi: int | None) -> dict:
        ticket["epochs"] = {dataset: [p.epoch_id for p in epochs]}
        if lo is not None or hi is not None:
            ticket["window"] = {dataset: [None if lo is None else lo * 1000, None if hi is None else hi * 1000]}
        return ticket

    def _direct(self, worker: str, addr: str, tenant: str, dataset: str, sql: str, epochs: list[EpochPlace],
                lo: int | None, hi: int | None, limits: Mapping[str, float | None]) -> pa.Table | None:
        """The user's SQL on the one worker holding every epoch; None when the worker ignored the restriction."""
        ticket = self._restrict(self._ticket(tenant, sql, limits), dataset, epochs, lo, hi)
        table = self._get(worker, addr, ticket)
        scanned = _scanned(table, dataset)
        if scanned is None:
            return None
        self.reporter.add(tenant, dataset, scanned)
        return table

    def _parts(self, plan: Mapping[tuple[str, str], list[EpochPlace]], tenant: str, dataset: str,
               coverage: Coverage, lo: int | None, hi: int | None, limits: Mapping[str, float | None],
               done: list[tuple[str, pa.Table, set[str]]]) -> list[_WorkerFailed]:
        """Fetch each worker's rows of its epochs in parallel; successes go to ``done``, failures are returned."""
        column = coverage.source.partition.time_partition.column if coverage.source is not None else None
        epoch_ms = column is not None and column.type == cp.PartitionColumnType.INT64

        def fetch(item: tuple[tuple[str, str], list[EpochPlace]]) -> tuple[str, pa.Table, set[str]]:
            (worker, addr), epochs = item
            sql = (f"SELECT * FROM {quote(dataset)} WHERE "
                   f"{restriction(coverage.time_column, epochs, lo, hi, epoch_ms)}")
            ticket = self._restrict(self._ticket(tenant, sql, limits), dataset, epochs, lo, hi)
            table = self._get(worker, addr, ticket)
            scanned = _scanned(table, dataset)
            if scanned is None:  # a worker that ignores "epochs": the WHERE above restricts it
                scanned = {p.epoch_id: (0, 0) for p in epochs}
            self.reporter.add(tenant, dataset, scanned)
            return worker, table, {p.epoch_id for p in epochs}

        errors: list[_WorkerFailed] = []
        items = list(plan.items())
        with ThreadPoolExecutor(max_workers=max(1, len(items))) as pool:
            futures = [pool.submit(fetch, item) for item in items]
            for future in futures:
                try:
                    done.append(future.result())
                except _WorkerFailed as exc:
                    errors.append(exc)
        return errors

    def _combine(self, dataset: str, sql: str, parts: list[pa.Table]) -> pa.Table:
        """Run the user's SQL over the union of the workers' rows in an in-process DuckDB."""
        union = pa.concat_tables([p.replace_schema_metadata(None) for p in parts], promote_options="permissive")
        con = duckdb.connect(":memory:")
        try:
            con.register(dataset, union)
            return con.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise pa.ArrowInvalid(f"SQL error (combining {len(parts)} worker results): {exc}") from None
        finally:
            con.close()


def _scanned(table: pa.Table, dataset: str) -> dict[str, tuple[int, int]] | None:
    raw = (table.schema.metadata or {}).get(SCANNED_KEY)
    if raw is None:
        return None
    try:
        per = json.loads(raw).get(dataset, {})
        return {e: (int(v[0]), int(v[1])) for e, v in per.items()}
    except (ValueError, AttributeError, TypeError, IndexError):
        return None
