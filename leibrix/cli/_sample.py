"""The sample data ``leibrix local`` admits: a real Iceberg table and a real SQLite table under its data dir.

:func:`ensure` creates, once, ``DATA/sample/`` with

* ``catalog.db`` + ``warehouse/``: a pyiceberg SQL catalog on SQLite holding
  ``sample.events``, :data:`DAYS` full days (UTC) of clickstream-like rows,
  :data:`EVENTS_PER_DAY` a day (about a million in all), partitioned by
  ``day(ts)`` and ``identity(region)`` (one Parquet file per day and region),
  written with pyarrow in one append per day;
* ``shop.db``: a SQLite database with an ``orders`` table (``ts`` DATETIME,
  indexed) of :data:`ORDERS_PER_DAY` orders a day over the same days;
* ``sample.json``: what was written (the days, row counts, the time taken),
  written last: a directory without it is incomplete and is rebuilt.

A data dir that already has a complete sample keeps it (and its days: the
admissions cover the days the data holds, not the last week at restart).
:func:`admissions` builds the two AdmitDatasetRequests with the tables' real
catalog URIs: ``IcebergCatalog(uri="sqlite:///DATA/sample/catalog.db")``
with database ``sample``, table ``events``; ``JdbcCatalog(uri="jdbc:sqlite:DATA/sample/shop.db",
driver="org.sqlite.JDBC")`` with table ``orders``. Each is one epoch per day
and region.

Both tables have ``ts`` (timestamp, UTC) and ``region`` (one of :data:`REGIONS`)
columns, so the same admission shape fits both.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from leibrix.client._requests import time_partitioned_admission
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["DAYS", "REGIONS", "Sample", "admissions", "ensure"]

DAYS = 7
REGIONS = ("eu", "us", "apac")
EVENTS_PER_DAY = 143_000
ORDERS_PER_DAY = 10_000
NAMESPACE = "sample"
EVENTS_TABLE = "events"
ORDERS_TABLE = "orders"
SQLITE_DRIVER = "org.sqlite.JDBC"
_MANIFEST = "sample.json"
_CHANNELS = ("web", "app", "store")
_STATUSES = ("paid", "shipped", "returned")
#: SQLAlchemy's SQLite DATETIME text format: what the SQL connector and loader compare and parse.
_SQLITE_TS = "%Y-%m-%d %H:%M:%S.%f"
#: In-memory bytes per row of either table (six columns, short strings): the admissions' hints.
_ROW_BYTES = 48
#: Cores one epoch (some 50,000 rows) is charged: 2 datasets x 21 epochs x 2 replicas x 0.02 = 1.7 of the
#: 3 cores ``leibrix local``'s workers offer (the default charge per epoch, 0.05, would need 4.2).
_CPU_PER_EPOCH = 0.02


@dataclass(frozen=True, slots=True)
class Sample:
    """A complete sample directory: where the tables are and what they hold."""

    directory: str
    #: First day (UTC midnight, ISO); the data covers ``[start, start + days)``.
    start: str
    days: int
    regions: tuple[str, ...]
    iceberg_uri: str
    namespace: str
    events_table: str
    events: int
    events_bytes: int
    jdbc_uri: str
    orders_table: str
    orders: int
    orders_bytes: int
    #: Seconds it took to write both tables.
    seconds: float

    @property
    def first_day(self) -> datetime:
        return datetime.fromisoformat(self.start)

    @property
    def end(self) -> datetime:
        return self.first_day + timedelta(days=self.days)


def ensure(data_dir: Path, *, today: datetime | None = None) -> tuple[Sample, bool]:
    """The sample under ``data_dir/sample``: reused when complete, else (re)written; ``(sample, created)``.

    ``today`` (default: now, UTC) fixes the days written: the :data:`DAYS`
    full days before it. Blocking (about 3 s to write): call it from a thread.
    """
    directory = (Path(data_dir) / "sample").resolve()
    manifest = directory / _MANIFEST
    if manifest.is_file():
        try:
            fields = json.loads(manifest.read_text())
            fields["regions"] = tuple(fields["regions"])
            return Sample(**fields), False
        except (ValueError, TypeError, KeyError):
            pass  # unreadable: rebuild
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    now = today or datetime.now(timezone.utc)
    start = now.astimezone(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    began = time.perf_counter()
    iceberg_uri, events, events_bytes = _write_events(directory, start)
    jdbc_uri, orders = _write_orders(directory, start)
    sample = Sample(str(directory), start.isoformat(), DAYS, REGIONS, iceberg_uri, NAMESPACE, EVENTS_TABLE, events,
                    events_bytes, jdbc_uri, ORDERS_TABLE, orders, (directory / "shop.db").stat().st_size,
                    round(time.perf_counter() - began, 2))
    manifest.write_text(json.dumps(asdict(sample), indent=1) + "\n")
    return sample, True


def _write_events(directory: Path, start: datetime) -> tuple[str, int, int]:
    """``sample.events`` in a SQL catalog under ``directory``, one append per day; ``(uri, rows, file bytes)``."""
    import numpy as np
    import pyarrow as pa
    from pyiceberg.catalog.sql import SqlCatalog
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.schema import Schema
    from pyiceberg.transforms import DayTransform, IdentityTransform
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

    uri = f"sqlite:///{directory / 'catalog.db'}"
    catalog = SqlCatalog("default", uri=uri, warehouse=f"file://{directory / 'warehouse'}")
    catalog.create_namespace(NAMESPACE)
    schema = Schema(
        NestedField(1, "event_id", LongType(), required=False),
        NestedField(2, "ts", TimestampType(), required=False),
        NestedField(3, "region", StringType(), required=False),
        NestedField(4, "user_id", LongType(), required=False),
        NestedField(5, "channel", StringType(), required=False),
        NestedField(6, "amount", DoubleType(), required=False),
    )
    spec = PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"),
        PartitionField(source_id=3, field_id=1001, transform=IdentityTransform(), name="region"),
    )
    table = catalog.create_table(f"{NAMESPACE}.{EVENTS_TABLE}", schema=schema, partition_spec=spec)
    rng = np.random.default_rng(20261127)
    regions, channels = np.array(REGIONS), np.array(_CHANNELS)
    n = EVENTS_PER_DAY
    for day in range(DAYS):
        midnight = np.datetime64((start + timedelta(days=day)).replace(tzinfo=None), "us")
        ts = midnight + np.sort(rng.integers(0, 86_400_000_000, n)).astype("timedelta64[us]")
        table.append(pa.table({
            "event_id": pa.array(np.arange(day * n, (day + 1) * n), pa.int64()),
            "ts": pa.array(ts, pa.timestamp("us")),
            "region": pa.array(regions[rng.choice(len(REGIONS), n, p=[0.45, 0.35, 0.2])], pa.string()),
            "user_id": pa.array(rng.integers(1, 50_000, n), pa.int64()),
            "channel": pa.array(channels[rng.integers(0, len(_CHANNELS), n)], pa.string()),
            "amount": pa.array(np.round(rng.gamma(2.0, 20.0, n), 2), pa.float64()),
        }))
    files = [t.file for t in catalog.load_table(f"{NAMESPACE}.{EVENTS_TABLE}").scan().plan_files()]
    return uri, sum(f.record_count for f in files), sum(f.file_size_in_bytes for f in files)


def _write_orders(directory: Path, start: datetime) -> tuple[str, int]:
    """``orders`` in ``directory/shop.db`` (``ts`` DATETIME, indexed); ``(JDBC URI, rows)``."""
    import numpy as np

    path = directory / "shop.db"
    rng = np.random.default_rng(20261128)
    n = ORDERS_PER_DAY * DAYS
    seconds = np.sort(rng.integers(0, DAYS * 86_400_000_000, n))
    first = start.replace(tzinfo=None)
    regions = rng.choice(len(REGIONS), n, p=[0.45, 0.35, 0.2])
    customers = rng.integers(1, 20_000, n)
    amounts = np.round(rng.gamma(2.0, 35.0, n), 2)
    statuses = rng.choice(len(_STATUSES), n, p=[0.6, 0.35, 0.05])
    rows = ((i + 1, (first + timedelta(microseconds=int(seconds[i]))).strftime(_SQLITE_TS), REGIONS[regions[i]],
             int(customers[i]), float(amounts[i]), _STATUSES[statuses[i]]) for i in range(n))
    with sqlite3.connect(path) as db:
        db.execute(f"CREATE TABLE {ORDERS_TABLE} (order_id INTEGER PRIMARY KEY, ts DATETIME NOT NULL, "
                   "region VARCHAR(8) NOT NULL, customer_id INTEGER NOT NULL, amount REAL NOT NULL, "
                   "status VARCHAR(16) NOT NULL)")
        db.executemany(f"INSERT INTO {ORDERS_TABLE} VALUES (?, ?, ?, ?, ?, ?)", rows)
        db.execute(f"CREATE INDEX {ORDERS_TABLE}_ts ON {ORDERS_TABLE} (ts)")
    db.close()
    return f"jdbc:sqlite:{path}", n


def admissions(sample: Sample, tenant: str, *, replication_factor: int) -> list[cp.AdmitDatasetRequest]:
    """AdmitDataset for both tables: one epoch per day and region, named by their real catalog URIs."""
    epochs = sample.days * len(sample.regions)

    def hints(rows: int, size: int) -> cp.EstimateHints:
        return cp.EstimateHints(rows_per_epoch=rows // epochs, bytes_per_epoch=size // epochs,
                                cpu_cores_per_epoch=_CPU_PER_EPOCH)

    common = dict(start=sample.first_day, end=sample.end, time_column="ts",
                  dimensions={"region": list(sample.regions)}, replication_factor=replication_factor)
    events = time_partitioned_admission(
        tenant, sample.events_table, catalog_uri=sample.iceberg_uri, database=sample.namespace,
        request_id="leibrix-local-sample-events", hints=hints(sample.events, sample.events * _ROW_BYTES), **common)
    orders = time_partitioned_admission(tenant, sample.orders_table, request_id="leibrix-local-sample-orders",
                                        hints=hints(sample.orders, sample.orders * _ROW_BYTES), **common)
    orders.source.catalog = cp.Catalog(jdbc=cp.JdbcCatalog(uri=sample.jdbc_uri, driver=SQLITE_DRIVER))
    orders.source.database = ""
    return [events, orders]
