"""Every admission/quota validation error, each naming its field (leibrix.domain._validation)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from leibrix.domain import _epochs
from leibrix.domain._errors import MAX_MESSAGE_CHARS, InvalidArgument, bounded
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.domain._validation import AdmissionLimits, check_request_bounds, validate_admission, validate_quota

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
T1 = datetime(2026, 11, 4, tzinfo=timezone.utc)


def request(**over) -> cp.AdmitDatasetRequest:
    """A valid admission (3 days × 2 regions); keyword arguments replace top-level fields."""
    req = cp.AdmitDatasetRequest(
        tenant_id="acme",
        dataset_id="orders",
        source=cp.DataSource(
            catalog=cp.Catalog(iceberg=cp.IcebergCatalog(uri="http://rest:8181")),
            database="db",
            table="orders",
            partition=cp.Partition(
                time_partition=cp.TimePartition(
                    column=cp.PartitionColumn(name="ts", type=cp.PartitionColumnType.TIMESTAMP),
                    filter=cp.TimeRangeFilter(start_inclusive=T0, end_exclusive=T1),
                ),
                dimension_partitions=[
                    cp.DimensionPartition(
                        column=cp.PartitionColumn(name="region"), values=cp.PartitionValues(values=["eu", "us"])
                    )
                ],
            ),
        ),
        epoch_granularity=cp.EpochGranularity(value=1, unit=cp.EpochGranularityTimeUnit.DAY),
    )
    for k, v in over.items():
        setattr(req, k, v)
    # Round-trip through the wire like a real gRPC request.
    return cp.AdmitDatasetRequest().parse(bytes(req))


def error_field(req, **kw) -> str:
    with pytest.raises(InvalidArgument) as info:
        validate_admission(req, **kw)
    assert info.value.status.name == "INVALID_ARGUMENT"
    assert info.value.message.startswith(info.value.field + ": ")
    return info.value.field


def test_valid_request_gives_a_clean_spec():
    spec = validate_admission(request(request_id="r-1"))
    assert (spec.tenant_id, spec.dataset_id, spec.request_id) == ("acme", "orders", "r-1")
    assert spec.granularity == _epochs.Granularity(1, _epochs.Unit.DAY)
    assert spec.epoch_count == 6 == len(spec.generate())
    assert spec.dimensions == (("region", ("eu", "us")),)


def test_fingerprint_ignores_request_id_but_not_content():
    a = validate_admission(request(request_id="a")).fingerprint
    assert validate_admission(request(request_id="b")).fingerprint == a
    assert validate_admission(request(replication_factor=2)).fingerprint != a


@pytest.mark.parametrize("field", ["tenant_id", "dataset_id"])
def test_missing_ids(field):
    assert error_field(request(**{field: ""})) == field


@pytest.mark.parametrize("bad", ["a/b", "a b", ".x", "-x", "x" * 65, "naïve", "a.b"])
@pytest.mark.parametrize("field", ["tenant_id", "dataset_id"])
def test_malformed_ids(field, bad):
    assert error_field(request(**{field: bad})) == field


def test_id_boundaries_are_accepted():
    validate_admission(request(tenant_id="x" * 64, dataset_id="0a_b-C"))


def test_malformed_request_id():
    assert error_field(request(request_id="has space")) == "request_id"
    validate_admission(request(request_id="client-7:42.1"))


def test_missing_source_and_catalog():
    assert error_field(request(source=cp.DataSource())) == "source"
    req = request()
    req.source.catalog = cp.Catalog()
    assert error_field(cp.AdmitDatasetRequest().parse(bytes(req))) == "source.catalog"


def test_unknown_source_type():
    # A catalog whose oneof member this master does not know (field 4, e.g. a newer "delta" type).
    catalog_bytes = bytes([0x22, 0x02, 0x0A, 0x00])  # field 4, length-delimited, holding a tiny message
    source_bytes = bytes([0x0A, len(catalog_bytes)]) + catalog_bytes + bytes(cp.DataSource(table="t"))
    body = bytes(cp.AdmitDatasetRequest(tenant_id="acme", dataset_id="d"))
    parsed = cp.AdmitDatasetRequest().parse(body + bytes([0x1A, len(source_bytes)]) + source_bytes)
    with pytest.raises(InvalidArgument) as info:
        validate_admission(parsed)
    assert info.value.field == "source.catalog" and "unknown source type" in info.value.message


@pytest.mark.parametrize(
    "catalog,field",
    [
        (cp.Catalog(iceberg=cp.IcebergCatalog(uri="")), "source.catalog.iceberg.uri"),
        (cp.Catalog(starrocks=cp.StarRocksCatalog(dsn="")), "source.catalog.starrocks.dsn"),
        (cp.Catalog(jdbc=cp.JdbcCatalog(uri="", driver="pg")), "source.catalog.jdbc.uri"),
    ],
)
def test_catalog_details(catalog, field):
    req = request()
    req.source.catalog = catalog
    assert error_field(cp.AdmitDatasetRequest().parse(bytes(req))) == field


def test_missing_table():
    req = request()
    req.source.table = ""
    assert error_field(req) == "source.table"


def test_time_range_end_not_after_start():
    req = request()
    req.source.partition.time_partition.filter.end_exclusive = T0
    assert error_field(req) == "source.partition.time_partition.filter.end_exclusive"
    req.source.partition.time_partition.filter.end_exclusive = datetime(2026, 10, 1, tzinfo=timezone.utc)
    assert error_field(req) == "source.partition.time_partition.filter.end_exclusive"


def test_missing_time_partition_and_column():
    req = request()
    req.source.partition = cp.Partition()
    assert error_field(cp.AdmitDatasetRequest().parse(bytes(req))) == "source.partition.time_partition"
    req = request()
    req.source.partition.time_partition.column.name = ""
    assert error_field(req) == "source.partition.time_partition.column.name"


def test_granularity_missing_when_the_column_has_none():
    req = request()
    req.epoch_granularity = None
    req = cp.AdmitDatasetRequest().parse(bytes(req))
    assert error_field(req) == "epoch_granularity"
    req.source.partition.time_partition.column.source_granularity = cp.PartitionColumnGranularity.GRANULARITY_HOUR
    spec = validate_admission(req)
    assert spec.granularity == _epochs.Granularity(1, _epochs.Unit.HOUR)
    assert spec.epoch_count == 3 * 24 * 2


def test_granularity_value_range_and_date_column():
    req = request(epoch_granularity=cp.EpochGranularity(value=0, unit=cp.EpochGranularityTimeUnit.DAY))
    assert error_field(req) == "epoch_granularity.value"
    req = request(epoch_granularity=cp.EpochGranularity(value=1, unit=cp.EpochGranularityTimeUnit.HOUR))
    req.source.partition.time_partition.column.type = cp.PartitionColumnType.DATE
    assert error_field(req) == "epoch_granularity.unit"


def test_too_many_epochs_for_one_request_is_capped_and_configurable():
    req = request()  # 6 epochs
    validate_admission(req, limits=AdmissionLimits(max_epochs_per_request=6))
    with pytest.raises(InvalidArgument) as info:
        validate_admission(req, limits=AdmissionLimits(max_epochs_per_request=5))
    assert info.value.field == "source.partition"
    assert "6 epochs" in info.value.message and "limit per request is 5" in info.value.message


def test_dimension_errors():
    req = request()
    dp = req.source.partition.dimension_partitions[0]
    dp.values.values = []
    assert error_field(req) == "source.partition.dimension_partitions[0].values"
    dp.values.values = ["a", "a"]
    assert error_field(req) == "source.partition.dimension_partitions[0].values"
    dp.values.values = ["a"]
    dp.column.name = "ts"
    assert error_field(req) == "source.partition.dimension_partitions[0].column.name"
    dp.column.name = ""
    assert error_field(req) == "source.partition.dimension_partitions[0].column.name"


@pytest.mark.parametrize(
    "over,field",
    [
        ({"replication_factor": -1}, "replication_factor"),
        ({"replication_factor": 17}, "replication_factor"),
        ({"retention_epochs": -1}, "retention_epochs"),
        ({"hints": cp.EstimateHints(bytes_per_epoch=-1)}, "hints.bytes_per_epoch"),
        ({"hints": cp.EstimateHints(rows_per_epoch=-5)}, "hints.rows_per_epoch"),
        ({"hints": cp.EstimateHints(cpu_cores_per_epoch=float("nan"))}, "hints.cpu_cores_per_epoch"),
        ({"hints": cp.EstimateHints(scan_cost=-1.0)}, "hints.scan_cost"),
    ],
)
def test_option_ranges(over, field):
    assert error_field(request(**over)) == field


def test_quota_validation():
    ok = cp.TenantQuota(tenant_id="acme", max_datasets=2, max_memory_bytes=1 << 30, worker_pool="gold")
    assert validate_quota(ok) is ok
    for q, field in [
        (cp.TenantQuota(tenant_id=""), "tenant_id"),
        (cp.TenantQuota(tenant_id="a", max_epochs=-1), "max_epochs"),
        (cp.TenantQuota(tenant_id="a", max_memory_bytes=-1), "max_memory_bytes"),
        (cp.TenantQuota(tenant_id="a", max_cpu_cores=float("inf")), "max_cpu_cores"),
        (cp.TenantQuota(tenant_id="a", worker_pool="a/b"), "worker_pool"),
        (cp.TenantQuota(tenant_id="a", default_replication=99), "default_replication"),
    ]:
        with pytest.raises(InvalidArgument) as info:
            validate_quota(q)
        assert info.value.field == field


# ---------------------------------------------------------------- request bounds


def test_a_valid_admission_is_within_bounds() -> None:
    check_request_bounds(request())


@pytest.mark.parametrize("make, field, limit", [
    (lambda: cp.GetWorkerRequest(worker_id="w" * 129), "worker_id", "128 characters (129 given)"),
    (lambda: cp.AdmitDatasetRequest(request_id="r" * 200), "request_id", "128 characters"),
    (lambda: request(source=cp.DataSource(catalog=cp.Catalog(jdbc=cp.JdbcCatalog(uri="u" * 4097)))),
     "source.catalog.jdbc.uri", "4096 characters"),
    (lambda: request(source=cp.DataSource(table="t" * 1025)), "source.table", "1024 characters"),
    (lambda: request(source=cp.DataSource(version="v" * 129)), "source.version", "128 characters"),
    (lambda: request(source=cp.DataSource(partition=cp.Partition(dimension_partitions=[
        cp.DimensionPartition(values=cp.PartitionValues(values=["ok", "x" * 257]))]))),
     "source.partition.dimension_partitions[0].values.values[1]", "256 characters"),
    (lambda: request(source=cp.DataSource(partition=cp.Partition(dimension_partitions=[
        cp.DimensionPartition(values=cp.PartitionValues(values=[str(i) for i in range(1001)]))]))),
     "source.partition.dimension_partitions[0].values.values", "at most 1000 entries (1001 given)"),
    (lambda: cp.ResolveRouteRequest(dimension_filter={f"k{i}": "v" for i in range(17)}), "dimension_filter",
     "at most 16 entries"),
    (lambda: cp.ResolveRouteRequest(dimension_filter={"k" * 129: "v"}), "dimension_filter key", "128 characters"),
    (lambda: cp.ResolveRouteRequest(dimension_filter={"k": "v" * 257}), "dimension_filter['k']", "256 characters"),
    (lambda: cp.ListTenantsRequest(page_token="p" * 129), "page_token", "128 characters"),
])
def test_request_bounds_name_the_field_and_never_the_value(make, field: str, limit: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        check_request_bounds(make())
    assert info.value.field == field and limit in info.value.message
    assert "uuuu" not in info.value.message and "xxxx" not in info.value.message


def test_error_messages_are_bounded_with_a_marker() -> None:
    err = InvalidArgument("f", "y" * 100_000)
    assert len(err.message) <= MAX_MESSAGE_CHARS and err.message.endswith("more characters]")
    assert bounded("short") == "short"


def test_unknown_column_types_name_their_field():
    req = request()
    req.source.partition.time_partition.column.type = 65  # a value the wire enum does not have
    assert error_field(req) == "source.partition.time_partition.column.type"
    req = request()
    req.source.partition.dimension_partitions[0].column.type = 65
    assert error_field(req) == "source.partition.dimension_partitions[0].column.type"
