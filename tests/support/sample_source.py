"""The real Iceberg table every test admission names by default (:func:`tests.support.admission.admission`).

Admission plans through the source connectors, so an admitted dataset must
name a table a catalog really holds. :func:`sample_source` builds one per
test process, on first use, and caches it: a pyiceberg SQL catalog on SQLite
in a temporary directory (removed when the process exits) holding
``db.events``:

=========  ============  =====================================================
column     type          values
=========  ============  =====================================================
``id``     long          unique per row
``ts``     timestamp     two rows per day and region, at 06:00 and 18:00 UTC
``key``    string        ``k0`` .. ``k99``
``value``  double        ``float(id)``
``region`` string        every value in :data:`REGIONS`
=========  ============  =====================================================

These are the columns, types and order of the synthetic table
(``leibrix.domain._schema.synthetic("ts", ["region"])``), so a dataset
admitted with the default time column and a ``region`` dimension has the
synthetic schema's fingerprint. Rows cover :data:`FIRST_DAY` (a month before
``T0``) up to, not including, :data:`END_DAY` (over seven years after), which
holds every window the tests admit (``days=2500`` from ``T0`` included).

The table is partitioned by ``year(ts)`` and ``identity(region)``: one
Parquet file per (year, region), 296 files written with pyarrow and committed
with ``add_files``, so planning even a 10,000-epoch admission takes a
fraction of a second. A daily epoch holds two rows, apportioned from its
year's file (``rows_exact`` False). The files were committed in three
appends, so the table has three snapshots (:attr:`SampleSource.versions`,
oldest first): the first holds the rows before :data:`SECOND_APPEND`.

:meth:`SampleSource.table_for` registers the same table metadata under
another name in the same namespace (a catalog row, milliseconds), so a
dataset can name a table called like itself.

Building takes about a second (plus pyiceberg's import). It blocks, so it
should not run inside an event loop that serves a master with a 1 s lease:
:mod:`tests.support.admission` builds it when imported, before any test runs.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["END_DAY", "FIRST_DAY", "REGIONS", "ROWS_PER_DAY", "SECOND_APPEND", "SampleSource", "build", "sample_source"]

#: Every dimension value the tests admit for ``region``.
REGIONS = ("eu", "us", "ap", "apac", "sa", *(f"r{i}" for i in range(8)), *(f"r{i:02d}" for i in range(24)))
#: First day with rows (a month before the tests' ``T0`` of 2026-11-01).
FIRST_DAY = datetime(2026, 10, 1, tzinfo=timezone.utc)
#: First day without rows again (2500 days after ``T0`` is 2033-09-05).
END_DAY = datetime(2034, 1, 1, tzinfo=timezone.utc)
#: The second and third appends start here (the first snapshot holds the rows before 2028).
SECOND_APPEND = datetime(2028, 1, 1, tzinfo=timezone.utc)
_THIRD_APPEND = datetime(2031, 1, 1, tzinfo=timezone.utc)
#: Rows per day and region (06:00 and 18:00 UTC).
ROWS_PER_DAY = 2
NAMESPACE = "db"
TABLE = "events"


@dataclass(frozen=True, slots=True)
class SampleSource:
    """Where the table is: what an admission's ``source`` names, and what it holds."""

    #: The SQL catalog URI (``IcebergCatalog.uri``).
    uri: str
    #: ``source.database`` (the Iceberg namespace).
    database: str
    #: ``source.table``.
    table: str
    #: Snapshot ids, oldest first (valid ``source.version`` values).
    versions: tuple[int, ...]
    rows: int
    root: Path
    #: The table's current metadata file (what :meth:`table_for` registers).
    metadata_location: str

    def table_for(self, name: str) -> str:
        """``name`` registered as another name of this table (once); returns ``name``."""
        with _LOCK:
            names = _aliases.setdefault(self.root, {self.table})
            if name not in names:
                catalog = _catalogs[self.root]
                if not catalog.table_exists(f"{self.database}.{name}"):
                    catalog.register_table(f"{self.database}.{name}", self.metadata_location)
                names.add(name)
        return name


_BUILT: dict[Path, SampleSource] = {}
_catalogs: dict[Path, object] = {}
_aliases: dict[Path, set[str]] = {}
_DEFAULT_ROOT: list[Path] = []
_LOCK = threading.RLock()


def _rows(start: datetime, end: datetime, region: int):
    """The rows of ``REGIONS[region]`` with ``start <= ts < end`` (``id`` unique across the whole table)."""
    import numpy as np
    import pyarrow as pa

    days = (end - start).days
    day = np.repeat(np.arange(days, dtype=np.int64), ROWS_PER_DAY)
    offset = np.tile(np.array([6, 18], dtype=np.int64) * 3_600_000_000, days)
    ts = np.datetime64(start.replace(tzinfo=None), "us") + (day * 86_400_000_000 + offset).astype("timedelta64[us]")
    slot = np.arange(days * ROWS_PER_DAY, dtype=np.int64) + (start - FIRST_DAY).days * ROWS_PER_DAY
    ids = slot * len(REGIONS) + region
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "ts": pa.array(ts, pa.timestamp("us")),
        "key": pa.array(np.char.add("k", (ids % 100).astype(str)), pa.string()),
        "value": pa.array(ids.astype(np.float64), pa.float64()),
        "region": pa.array([REGIONS[region]] * len(ids), pa.string()),
    })


def build(root: Path) -> SampleSource:
    """Write the table under ``root`` (once per ``root`` in this process) and return where it is."""
    root = Path(root).resolve()
    with _LOCK:
        if root in _BUILT:
            return _BUILT[root]
        import pyarrow.parquet as pq
        from pyiceberg.catalog.sql import SqlCatalog
        from pyiceberg.partitioning import PartitionField, PartitionSpec
        from pyiceberg.schema import Schema
        from pyiceberg.transforms import IdentityTransform, YearTransform
        from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

        root.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{root / 'catalog.db'}"
        catalog = SqlCatalog("default", uri=uri, warehouse=f"file://{root / 'warehouse'}")
        catalog.create_namespace(NAMESPACE)
        schema = Schema(
            NestedField(1, "id", LongType(), required=False),
            NestedField(2, "ts", TimestampType(), required=False),
            NestedField(3, "key", StringType(), required=False),
            NestedField(4, "value", DoubleType(), required=False),
            NestedField(5, "region", StringType(), required=False),
        )
        spec = PartitionSpec(
            PartitionField(source_id=2, field_id=1000, transform=YearTransform(), name="ts_year"),
            PartitionField(source_id=5, field_id=1001, transform=IdentityTransform(), name="region"),
        )
        table = catalog.create_table(f"{NAMESPACE}.{TABLE}", schema=schema, partition_spec=spec)
        files = root / "files"
        files.mkdir(exist_ok=True)
        rows = 0
        for start, end in ((FIRST_DAY, SECOND_APPEND), (SECOND_APPEND, _THIRD_APPEND), (_THIRD_APPEND, END_DAY)):
            paths = []
            for year in range(start.year, end.year):
                lo = max(start, datetime(year, 1, 1, tzinfo=timezone.utc))
                hi = min(end, datetime(year + 1, 1, 1, tzinfo=timezone.utc))
                for region in range(len(REGIONS)):
                    data = _rows(lo, hi, region)
                    path = files / f"{year}-{REGIONS[region]}.parquet"
                    pq.write_table(data, path)
                    paths.append(f"file://{path}")
                    rows += data.num_rows
            table.add_files(paths)  # one snapshot per append
        table = catalog.load_table(f"{NAMESPACE}.{TABLE}")
        versions = tuple(s.snapshot_id for s in table.snapshots())
        _catalogs[root] = catalog
        _BUILT[root] = source = SampleSource(uri, NAMESPACE, TABLE, versions, rows, root, table.metadata_location)
        return source


def sample_source() -> SampleSource:
    """This process's table: built on the first call in a fresh temporary directory, then cached."""
    if not _DEFAULT_ROOT:
        with _LOCK:
            if not _DEFAULT_ROOT:
                root = Path(tempfile.mkdtemp(prefix="leibrix-test-source-"))
                atexit.register(shutil.rmtree, root, True)
                _DEFAULT_ROOT.append(root)
    return build(_DEFAULT_ROOT[0])
