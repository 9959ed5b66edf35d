"""Builders for client requests that are tedious to spell out by hand.

An ``AdmitDatasetRequest`` nests seven messages deep; the dev cluster, the
benchmarks and the tests all admit time-partitioned datasets, so the nesting
lives here once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from leibrix.wire._proto import leibrix_cp as cp


def time_partitioned_admission(
    tenant_id: str,
    dataset_id: str,
    *,
    start: datetime,
    end: datetime,
    unit: cp.EpochGranularityTimeUnit = cp.EpochGranularityTimeUnit.DAY,
    catalog_uri: str = "http://rest:8181",
    database: str = "db",
    time_column: str = "ts",
    dimensions: Mapping[str, Sequence[str]] | None = None,
    version: str | None = None,
    **fields: Any,
) -> cp.AdmitDatasetRequest:
    """An AdmitDataset request for ``[start, end)`` of an Iceberg table named like the dataset.

    One epoch per ``unit`` (granularity value 1) times the cross product of
    ``dimensions`` (column -> values). ``fields`` are further
    ``AdmitDatasetRequest`` fields (``hints``, ``replication_factor``,
    ``request_id``, ...).
    """
    dims = [
        cp.DimensionPartition(column=cp.PartitionColumn(name=name), values=cp.PartitionValues(values=list(values)))
        for name, values in (dimensions or {}).items()
    ]
    return cp.AdmitDatasetRequest(
        tenant_id=tenant_id,
        dataset_id=dataset_id,
        source=cp.DataSource(
            catalog=cp.Catalog(iceberg=cp.IcebergCatalog(uri=catalog_uri)),
            database=database,
            table=dataset_id,
            version=version,
            partition=cp.Partition(
                time_partition=cp.TimePartition(
                    column=cp.PartitionColumn(name=time_column, type=cp.PartitionColumnType.TIMESTAMP),
                    filter=cp.TimeRangeFilter(start_inclusive=start, end_exclusive=end),
                ),
                dimension_partitions=dims,
            ),
        ),
        epoch_granularity=cp.EpochGranularity(value=1, unit=unit),
        **fields,
    )
