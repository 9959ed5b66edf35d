"""Real Iceberg tables for the source tests and ``bench.sources``: a pyiceberg SQL catalog on SQLite in a directory.

``make_events_table`` writes an ``events`` table (``id`` long, ``ts`` timestamp,
``region`` string, ``value`` double, ``note`` string) with one Parquet file per
(day, region, part), registered in ``batches`` ``add_files`` calls (one manifest
each), partitioned by ``day(ts)`` and ``identity(region)`` or not at all.
Rows are deterministic, so tests know every count.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DAY_MS = 86_400_000
#: 2024-01-01T00:00Z
BASE_MS = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
ARROW_SCHEMA = pa.schema([
    pa.field("id", pa.int64(), nullable=False),
    pa.field("ts", pa.timestamp("us"), nullable=False),
    pa.field("region", pa.string(), nullable=False),
    pa.field("value", pa.float64()),
    pa.field("note", pa.string()),
])


@dataclass
class IcebergFixture:
    """A catalog URI, the table, and what was written."""

    uri: str
    namespace: str
    name: str
    table: object
    rows_per_file: int
    files: list[str]


def catalog(root: Path, name: str = "default"):
    """A SQL catalog on SQLite under ``root`` (created), with its URI (``#name=`` when not ``default``)."""
    from pyiceberg.catalog.sql import SqlCatalog

    root.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{root / 'catalog.db'}"
    cat = SqlCatalog(name, uri=uri, warehouse=f"file://{root / 'warehouse'}")
    return cat, uri + ("" if name == "default" else f"#name={name}")


def iceberg_schema():
    from pyiceberg.schema import Schema
    from pyiceberg.types import DoubleType, LongType, NestedField, StringType, TimestampType

    return Schema(
        NestedField(1, "id", LongType(), required=True),
        NestedField(2, "ts", TimestampType(), required=True),
        NestedField(3, "region", StringType(), required=True),
        NestedField(4, "value", DoubleType(), required=False),
        NestedField(5, "note", StringType(), required=False),
    )


def batch(day: int, region: str, part: int, rows: int, *, hours: int = 24) -> pa.Table:
    """``rows`` rows of one file: day ``day`` after ``BASE_MS``, spread over its first ``hours`` hours."""
    start = BASE_MS + day * DAY_MS
    step = hours * 3_600_000 // max(1, rows)
    ts = [datetime.fromtimestamp((start + i * step) / 1000, tz=timezone.utc).replace(tzinfo=None) for i in range(rows)]
    base = (day * 1000 + part) * 100_000
    return pa.table({
        "id": pa.array(range(base, base + rows), pa.int64()),
        "ts": pa.array(ts, pa.timestamp("us")),
        "region": pa.array([region] * rows, pa.string()),
        "value": pa.array([float(i) for i in range(rows)], pa.float64()),
        "note": pa.array([f"note-{region}-{i % 97:03d}" for i in range(rows)], pa.string()),
    }, schema=ARROW_SCHEMA)


def make_events_table(root: Path, *, days: int, regions=("eu", "us"), parts: int = 1, rows_per_file: int = 10,
                      batches: int = 1, partitioned: bool = True, name: str = "events",
                      namespace: str = "db", catalog_name: str = "default") -> IcebergFixture:
    """Write the table described in the module docstring and return where it is."""
    from pyiceberg.partitioning import PartitionField, PartitionSpec
    from pyiceberg.transforms import DayTransform, IdentityTransform

    cat, uri = catalog(root, catalog_name)
    try:
        cat.create_namespace(namespace)
    except Exception:  # already exists
        pass
    spec = PartitionSpec(
        PartitionField(source_id=2, field_id=1000, transform=DayTransform(), name="ts_day"),
        PartitionField(source_id=3, field_id=1001, transform=IdentityTransform(), name="region"),
    ) if partitioned else PartitionSpec()
    table = cat.create_table(f"{namespace}.{name}", schema=iceberg_schema(), partition_spec=spec)
    data_dir = root / "files" / name
    data_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for day in range(days):
        for region in regions:
            for part in range(parts):
                path = data_dir / f"d{day:04d}-{region}-{part:03d}.parquet"
                pq.write_table(batch(day, region, part, rows_per_file), path)
                paths.append(str(path))
    size = -(-len(paths) // batches)
    for i in range(0, len(paths), size):
        table.add_files([f"file://{p}" for p in paths[i:i + size]])
    return IcebergFixture(uri, namespace, name, cat.load_table(f"{namespace}.{name}"), rows_per_file, paths)


def day_windows(days: int, first: int = 0) -> tuple[tuple[int, int], ...]:
    """Daily ``[start, end)`` windows from day ``first`` after ``BASE_MS``."""
    return tuple((BASE_MS + d * DAY_MS, BASE_MS + (d + 1) * DAY_MS) for d in range(first, first + days))


def file_sizes(paths) -> int:
    return sum(os.path.getsize(p) for p in paths)


def add_delete_file(fx: IcebergFixture, data_path: str, positions: list[int], *, kind: str = "position",
                    equality_ids: tuple[int, ...] = (1,), single_file: bool = True) -> str:
    """Commit a positional (or equality) delete file for ``data_path``'s rows and return its path.

    pyiceberg 0.12 has no writer for delete manifests, so the delete file is
    committed through a normal append (it sits in a data manifest); pyiceberg's
    planner and ours classify entries by their own ``content``, as the spec
    defines it per entry. The Parquet file itself is a real delete file:
    ``file_path``/``pos`` columns (positional) or the ``id`` column (equality).
    """
    from pyiceberg.manifest import DataFile, DataFileContent, FileFormat

    table = fx.table.refresh()
    target = next(t.file for t in table.scan().plan_files() if t.file.file_path.endswith(data_path.split("/")[-1]))
    out = Path(data_path).with_suffix(f".{kind}-delete-{len(positions)}.parquet")
    full = target.file_path
    if kind == "position":
        pq.write_table(pa.table({"file_path": [full] * len(positions), "pos": pa.array(positions, pa.int64())}), out)
        path_bytes = full.encode()
        lower = {2147483546: path_bytes, 2147483545: min(positions).to_bytes(8, "little")}
        upper = {2147483546: path_bytes if single_file else path_bytes + b"~", 2147483545: max(positions).to_bytes(8, "little")}
        content, eq = DataFileContent.POSITION_DELETES, None
    else:
        ids = pq.read_table(data_path).column("id").to_pylist()
        pq.write_table(pa.table({"id": pa.array([ids[p] for p in positions], pa.int64())}), out)
        lower = upper = {}
        content, eq = DataFileContent.EQUALITY_DELETES, list(equality_ids)
    df = DataFile.from_args(content=content, file_path=f"file://{out}", file_format=FileFormat.PARQUET,
                            partition=target.partition, record_count=len(positions),
                            file_size_in_bytes=os.path.getsize(out), lower_bounds=lower, upper_bounds=upper,
                            equality_ids=eq)
    df.spec_id = target.spec_id
    with table.transaction() as tx:
        with tx.update_snapshot().fast_append() as append:
            append.append_data_file(df)
    fx.table = table.refresh()
    return str(out)
