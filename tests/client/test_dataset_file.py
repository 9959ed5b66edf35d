"""The declarative dataset file: what it parses into, and the errors that name the key."""

from __future__ import annotations

from datetime import timedelta

import pytest

from leibrix.client._datasets import DatasetFileError, parse_dataset
from leibrix.wire._proto import leibrix_cp as cp

BASE = {
    "kind": "Dataset",
    "tenant": "acme",
    "dataset": "events",
    "source": {
        "iceberg": {"uri": "sqlite:///data/sample/catalog.db"},
        "database": "sample",
        "table": "events",
        "partition": {"time": {"column": "ts", "type": "TIMESTAMP",
                               "start": "2026-11-01T00:00:00Z", "end": "2026-11-03T00:00:00Z"},
                      "dimensions": {"region": ["eu", "us"]}},
    },
    "epoch_granularity": "1 DAY",
}


def test_a_file_becomes_the_admission_request_it_describes() -> None:
    req = parse_dataset(dict(BASE, replication=2, strategy="HASH", refresh_interval="10m"), "f")
    assert (req.tenant_id, req.dataset_id, req.source.table) == ("acme", "events", "events")
    assert req.source.catalog.iceberg.uri == "sqlite:///data/sample/catalog.db"
    assert req.replication_factor == 2 and req.strategy == cp.PlacementStrategy.HASH
    assert req.refresh_interval == timedelta(minutes=10)
    assert req.epoch_granularity.unit == cp.EpochGranularityTimeUnit.DAY
    assert parse_dataset(dict(BASE, refresh_interval=90), "f").refresh_interval == timedelta(seconds=90)
    assert not parse_dataset(BASE, "f").refresh_interval


@pytest.mark.parametrize(("change", "message"), [
    ({"refresh_interval": "soon"}, "f.refresh_interval: expected a duration"),
    ({"replicas": 2}, "replicas"),
    ({"replication": "two"}, "f.replication: expected a whole number"),
])
def test_bad_keys_are_refused_naming_the_key(change: dict, message: str) -> None:
    with pytest.raises(DatasetFileError, match=message):
        parse_dataset(dict(BASE, **change), "f")
