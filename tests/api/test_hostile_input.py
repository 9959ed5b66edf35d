"""Hostile input on the ManagementService, sent as raw bytes by the official grpcio client to a real master.

Every answer must be a specific status (never UNKNOWN or INTERNAL), come back
at once, and carry a bounded message: huge strings are refused by size before
any RPC sees them, undecodable bytes are INVALID_ARGUMENT naming the field,
out-of-range timestamps too, and List replies come in pages.
"""

from __future__ import annotations

import logging
from typing import Any

import grpc
import pytest
import trio

from bench.fuzz import _ld, _varint, raw_call, rpcs
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, leading, quota, rpc, start_master

MAX_MESSAGE = 1024


async def call(master: Any, name: str, data: bytes | Any, *, streaming: bool = False) -> Any:
    raw = data if isinstance(data, bytes) else bytes(data)

    def blocking() -> Any:
        with grpc.insecure_channel(master.config.grpc_listen) as channel:
            return raw_call(channel, name, raw, streaming=streaming)

    return await trio.to_thread.run_sync(blocking)


@pytest.fixture
async def master(etcd_server: Any, nursery: trio.Nursery) -> Any:
    m = await start_master(nursery, etcd_server.endpoint)
    await leading(m)
    return m


async def test_huge_strings_are_refused_by_size_without_echo(master: Any) -> None:
    huge = "w" * (1 << 20)
    cases = [
        ("GetWorker", cp.GetWorkerRequest(worker_id=huge), "worker_id"),
        ("DrainWorker", cp.DrainWorkerRequest(worker_id=huge), "worker_id"),
        ("ResolveRoute", cp.ResolveRouteRequest(tenant_id="acme", dataset_id="d", dimension_filter={huge: "x"}),
         "dimension_filter key"),
        ("GetTenant", cp.GetTenantRequest(tenant_id=huge), "tenant_id"),
        ("AdmitDataset", admission(version=huge), "source.version"),
    ]
    for name, request, field in cases:
        answer = await call(master, name, request)
        assert answer.code == "INVALID_ARGUMENT", (name, answer)
        assert answer.details.startswith(f"{field}: longer than"), answer.details
        assert len(answer.details) <= MAX_MESSAGE and "www" not in answer.details
        assert answer.seconds < 2.0, (name, answer.seconds)  # was 83 s for a 1 MiB id


async def test_a_long_value_under_its_bound_is_cut_in_the_message(master: Any) -> None:
    # 128-character worker id: within the bound, unknown, and quoted by the NotFound message.
    answer = await call(master, "GetWorker", cp.GetWorkerRequest(worker_id="w" * 128))
    assert answer.code == "NOT_FOUND" and len(answer.details) <= MAX_MESSAGE


async def test_undecodable_bytes_are_invalid_argument_on_every_rpc_without_traceback(
    master: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for name, (_, streaming) in sorted(rpcs().items()):
        answer = await call(master, name, b"\x08", streaming=streaming)
        assert answer.code == "INVALID_ARGUMENT", (name, answer)
        assert "truncated" in answer.details
    answer = await call(master, "GetTenant", _ld(1, b"\xff\xfeab"))
    assert (answer.code, answer.details) == ("INVALID_ARGUMENT", "tenant_id: is not valid UTF-8 (byte 0)")
    answer = await call(master, "GetTenant", b"\x08\x01")  # a varint where the string is
    assert answer.code == "INVALID_ARGUMENT" and answer.details.startswith("tenant_id: has wire type 0")
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]
    assert any("undecodable GetTenantRequest" in r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG)


def _timestamp(seconds: int, nanos: int = 0) -> bytes:
    return b"\x08" + _varint(seconds) + b"\x10" + _varint(nanos)


@pytest.mark.parametrize("seconds, nanos, problem", [
    (253_402_300_800, 0, "seconds 253402300800 is outside"),
    (-62_135_596_801, 0, "seconds -62135596801 is outside"),
    (0, -1, "nanos -1 is outside"),
    (0, 1_000_000_000, "nanos 1000000000 is outside"),
])
async def test_out_of_range_timestamps_are_invalid_argument_naming_the_field(
    master: Any, seconds: int, nanos: int, problem: str
) -> None:
    bad = _timestamp(seconds, nanos)
    route = bytes(cp.ResolveRouteRequest(tenant_id="acme", dataset_id="orders")) + _ld(3, _ld(1, bad))
    answer = await call(master, "ResolveRoute", route)
    assert answer.code == "INVALID_ARGUMENT"
    assert answer.details.startswith("time_range.start_inclusive: Timestamp " + problem)
    # AdmitDataset: source(3).partition(4).time_partition(1).filter(2).start_inclusive(1), appended (merged).
    admit = bytes(admission()) + _ld(3, _ld(4, _ld(1, _ld(2, _ld(1, bad)))))
    answer = await call(master, "AdmitDataset", admit)
    assert answer.code == "INVALID_ARGUMENT"
    assert answer.details.startswith("source.partition.time_partition.filter.start_inclusive: Timestamp " + problem)


async def test_oversized_request_is_resource_exhausted(master: Any) -> None:
    answer = await call(master, "GetTenant", _ld(1, b"a" * ((2 << 20) + 1)))
    assert answer.code == "RESOURCE_EXHAUSTED"
    assert answer.details == "request of 2097158 bytes is larger than the 2097152-byte limit", answer.details


async def test_requests_over_the_decode_budget_are_refused_before_parsing(master: Any) -> None:
    cases = [  # each took seconds of loop time to parse: one Python object per embedded message, or per field
        ("AdmitDataset", b"\x1a\x00" * 200_000, "more than 1000 embedded messages"),  # source, 200,000 times
        ("ResolveRoute", _ld(3, b"") * 5_000, "more than 1000 embedded messages"),
        ("GetTenant", b"\x0a\x00" * 500_000, "more than 20000 fields"),
        ("ResolveRoute", _ld(4, b"\x0a\x00\x12\x00") * 100_000, "more than 20000 fields"),  # map entries
    ]
    for name, data, problem in cases:
        answer = await call(master, name, data)
        assert answer.code == "RESOURCE_EXHAUSTED", (name, answer)
        assert answer.details == (f"request of {len(data)} bytes has {problem}, the limit for a {name}Request"), answer
        assert answer.seconds < 1.0, (name, answer.seconds)


def test_the_largest_legitimate_admission_fits_the_limits() -> None:
    from datetime import datetime, timedelta, timezone

    from leibrix.api._decode import MAX_MANAGEMENT_REQUEST_BYTES, RequestCodec, check_decode_work
    from leibrix.domain import _validation as v

    def text(n: int, suffix: object = "") -> str:  # n characters of four UTF-8 bytes each
        return "\U0001F600" * (n - len(str(suffix))) + str(suffix)

    counts = [1000, 10] + [1] * 14  # 16 columns whose combinations reach the default epoch cap in one window
    dims = [cp.DimensionPartition(column=cp.PartitionColumn(name=text(v.MAX_NAME_LEN, i)),
                                  values=cp.PartitionValues(values=[text(v.MAX_VALUE_LEN, j) for j in range(n)]))
            for i, n in enumerate(counts)]
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    time_partition = cp.TimePartition(column=cp.PartitionColumn(name=text(v.MAX_NAME_LEN)),
                                      filter=cp.TimeRangeFilter(start_inclusive=t0, end_exclusive=t0 + timedelta(hours=1)))
    request = cp.AdmitDatasetRequest(
        tenant_id="t" * 64, dataset_id="d" * 64, request_id="r" * 128,
        source=cp.DataSource(catalog=cp.Catalog(iceberg=cp.IcebergCatalog(uri=text(v.MAX_URI_LEN))),
                             database=text(v.MAX_STRING_LEN), table=text(v.MAX_STRING_LEN),
                             version=text(v.MAX_VERSION_LEN),
                             partition=cp.Partition(time_partition=time_partition, dimension_partitions=dims)),
        epoch_granularity=cp.EpochGranularity(value=1, unit=cp.EpochGranularityTimeUnit.HOUR))
    data = bytes(request)
    assert v.validate_admission(request).epoch_count == v.DEFAULT_MAX_EPOCHS_PER_REQUEST
    assert len(data) < MAX_MANAGEMENT_REQUEST_BYTES * 0.55, len(data)
    assert check_decode_work(cp.AdmitDatasetRequest, data) is None
    assert RequestCodec().decode(data, cp.AdmitDatasetRequest) == request


async def _pages(master: Any, name: str, request: Any, field: str) -> list[list[Any]]:
    pages = []
    while True:
        reply = await rpc(master, name, request)
        pages.append(list(getattr(reply, field)))
        if not reply.next_page_token:
            return pages
        request.page_token = reply.next_page_token


async def test_list_rpcs_page_in_id_order(master: Any) -> None:
    tenants = [f"t{i}" for i in range(7)]
    for t in reversed(tenants):
        await rpc(master, "upsert_tenant_quota", quota(t, admission_policy=cp.AdmissionPolicy.QUEUE))
    pages = await _pages(master, "list_tenants", cp.ListTenantsRequest(page_size=3), "tenants")
    assert [[t.quota.tenant_id for t in p] for p in pages] == [tenants[:3], tenants[3:6], tenants[6:]]

    for d in ("d2", "d0", "d1"):
        await rpc(master, "admit_dataset", admission("t0", d, days=2, regions=("eu", "us")))
    pages = await _pages(master, "list_datasets", cp.ListDatasetsRequest(tenant_id="t0", page_size=2), "datasets")
    assert [[d.dataset_id for d in p] for p in pages] == [["d0", "d1"], ["d2"]]
    assert len((await rpc(master, "list_datasets", cp.ListDatasetsRequest())).datasets) == 3

    pages = await _pages(master, "list_epochs", cp.ListEpochsRequest(tenant_id="t0", dataset_id="d0", page_size=3),
                         "epochs")
    keys = [(e.info.time_range.start_inclusive, e.info.epoch_id) for p in pages for e in p]
    assert [len(p) for p in pages] == [3, 1] and keys == sorted(keys) and len(set(keys)) == 4

    for request, field in [(cp.ListTenantsRequest(page_token="not-a-token"), "page_token"),
                           (cp.ListTenantsRequest(page_size=-1), "page_size"),
                           (cp.ListEpochsRequest(tenant_id="t0", dataset_id="d0",
                                                 page_token=pages[0] and "WyJ4Il0="), "page_token")]:
        answer = await call(master, type(request).__name__.removesuffix("Request"), request)
        assert answer.code == "INVALID_ARGUMENT" and answer.details.startswith(field), answer


async def test_a_page_ends_before_its_reply_passes_the_byte_limit() -> None:
    from leibrix.api._pages import MAX_PAGE_BYTES, page

    big = {i: "x" * (1 << 20) for i in range(10)}  # 1 MiB + a few bytes each: two fit in a page
    request = cp.ListTenantsRequest(page_size=10)
    sizes = []
    while True:
        entries, token = await page(request, (((i,), v) for i, v in big.items()), lambda v: cp.CommonResponse(message=v))
        assert sum(len(bytes(e)) for e in entries) <= MAX_PAGE_BYTES
        sizes.append(len(entries))
        if not token:
            break
        request.page_token = token
    assert sizes == [2, 2, 2, 2, 2]


async def test_a_request_of_many_fields_is_diagnosed_within_a_budget(master: Any) -> None:
    data = b"\x20\x01" * 15_000 + b"\x08"  # 15,000 valid varint fields (within the budget), then a truncated tag
    answer = await call(master, "ReportAccess", data)
    assert (answer.code, answer.details) == ("INVALID_ARGUMENT", "request does not parse as ReportAccessRequest")
