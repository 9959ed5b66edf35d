"""Admission planned from a real source (``leibrix.control._planned``): Iceberg tables written by
``tests.support.sources`` under ``tmp_path``, admitted through the real admission queue and coordinator over the
in-memory writer (``tests.support.control``). The planned rows, sizes, reads and schema reach the epoch records and
the LoadPlans; bad sources answer their statuses with nothing stored; a new snapshot refreshes only the epochs whose
files changed; measured bytes replace the estimate; dedicated workers serve their tenant."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import trio

from leibrix.client._requests import time_partitioned_admission
from leibrix.control._refresh import Refresher
from leibrix.domain import _schema
from leibrix.domain._errors import InvalidArgument, NotFound
from leibrix.domain._validation import AdmissionLimits, validate_admission
from leibrix.sources import plan_admission
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import control_plane_pb2 as pb
from tests.support.control import KEYS, STATUS, ControlLoop
from tests.support.sources import BASE_MS, IcebergFixture, batch, make_events_table

T0 = datetime.fromtimestamp(BASE_MS / 1000, tz=timezone.utc)


def request(fx: IcebergFixture, *, days: int = 3, regions=("eu", "us"), **kw) -> cp.AdmitDatasetRequest:
    return time_partitioned_admission("acme", fx.name, start=T0, end=T0 + timedelta(days=days), catalog_uri=fx.uri,
                                      database=fx.namespace, dimensions={"region": regions}, **kw)


async def loop_with(nursery: trio.Nursery, *workers: str, **quota) -> ControlLoop:
    loop = await ControlLoop().start(nursery)
    for w in workers:
        loop.workers.join(w)
    await loop.tenant("acme", **quota)
    return loop


def stored_keys(loop: ControlLoop) -> list[str]:
    return sorted(k for k in loop.store.kv if k.startswith(KEYS.root + "epochs/") or k.startswith(KEYS.root + "datasets/"))


def append_file(fx: IcebergFixture, root: Path, day: int, region: str, rows: int) -> None:
    """A new snapshot that adds one file to (day, region)."""
    path = root / "files" / fx.name / f"extra-d{day:04d}-{region}.parquet"
    pq.write_table(batch(day, region, 7, rows), path)
    fx.table.refresh().add_files([f"file://{path}"])


async def test_planned_rows_sizes_read_and_schema_reach_epochs_and_load_plans(nursery, tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=3, rows_per_file=10)
    loop = await loop_with(nursery, "w1")
    req = request(fx)
    plan = plan_admission(validate_admission(req, AdmissionLimits()))
    resp = await loop.admit(req)
    assert len(resp.epochs.epochs) == 6 and resp.pending_epochs == 6
    ds = loop.state.datasets[("acme", fx.name)]
    assert ds.version == plan.version == str(fx.table.refresh().metadata.current_snapshot_id)
    assert ds.schema_fingerprint == plan.fingerprint == _schema.fingerprint(_schema.from_ipc(ds.arrow_schema))
    assert ds.schema_fingerprint != _schema.synthetic("ts", ["region"]).fingerprint  # the table's own columns
    for key in loop.keys(dataset_id=fx.name):
        e = loop.epoch(key)
        p = plan.epochs[(e.start_ms, e.end_ms, e.dims)]
        assert (e.rows, e.rows_exact, e.memory_bytes, e.planned_bytes, e.scan_cost, e.source_bytes) == \
            (10, True, p.memory_bytes, p.memory_bytes, p.scan_cost_bytes, p.source_bytes)
        assert e.memory_bytes > 0 and e.schema == plan.fingerprint
        read = pb.ReadPlan.FromString(e.read)
        assert read.rows_exact and [f.path for f in read.iceberg.files] == [f.path for f in p.read.files]
    await loop.schedule()
    for key in loop.keys(dataset_id=fx.name):
        lp = loop.workers.plans[key[2]]
        e = loop.epoch(key)
        assert (lp.expected_rows, lp.expected_bytes, lp.arrow_schema) == (10, e.memory_bytes, ds.arrow_schema)
        assert lp.read.SerializeToString(deterministic=True) == e.read and lp.read.iceberg.files
        assert lp.source.version == ds.version


async def test_hints_override_only_what_they_set(nursery, tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=1, rows_per_file=10)
    loop = await loop_with(nursery)
    await loop.admit(request(fx, days=1, hints=cp.EstimateHints(bytes_per_epoch=5000, rows_per_epoch=12)))
    e = loop.epoch(loop.keys(dataset_id=fx.name)[0])
    assert (e.memory_bytes, e.rows, e.rows_exact, e.cpu_cores) == (5000, 12, False, 0.05)
    assert e.scan_cost > 0 and not pb.ReadPlan.FromString(e.read).rows_exact  # a hinted count is an estimate


@pytest.mark.parametrize(("change", "error", "field"), [
    ({"dataset": "missing"}, NotFound, "source.table"),
    ({"time_column": "nope"}, InvalidArgument, "source.partition.time_partition.column.name"),
])
async def test_a_source_error_is_the_answer_and_nothing_is_stored(nursery, tmp_path: Path, change, error,
                                                                   field) -> None:
    fx = make_events_table(tmp_path, days=1)
    loop = await loop_with(nursery)
    name = change.get("dataset", fx.name)
    req = time_partitioned_admission("acme", name, start=T0, end=T0 + timedelta(days=1), catalog_uri=fx.uri,
                                     database=fx.namespace, time_column=change.get("time_column", "ts"))
    with pytest.raises(error) as info:
        await loop.admit(req)
    assert field in str(info.value) or getattr(info.value, "field", "") == field
    assert stored_keys(loop) == [] and not loop.state.datasets


async def test_a_new_snapshot_refreshes_only_the_epochs_whose_files_changed(nursery, tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=3, rows_per_file=10)
    loop = await loop_with(nursery, "w1")
    first = await loop.admit(request(fx))
    await loop.schedule()
    for key in loop.keys(dataset_id=fx.name):
        await loop.report("w1", key, STATUS.COMPLETED)
    before = {e.epoch_id: e for e in loop.state.dataset_epochs("acme", fx.name)}
    assert {e.state.name for e in before.values()} == {"READY"}
    append_file(fx, tmp_path, day=1, region="eu", rows=4)
    again = await loop.admit(request(fx))
    assert again.refresh and again.pending_epochs == 1 and "admitted 1 new epoch(s) of 6" in again.message
    old_ids = [i.epoch_id for i in first.epochs.epochs]
    new_ids = [i.epoch_id for i in again.epochs.epochs]
    changed = [(a, b) for a, b in zip(old_ids, new_ids) if a != b]
    assert len(changed) == 1
    old_id, new_id = changed[0]
    old = before[old_id]
    assert (old.start_ms, old.dims) == (BASE_MS + 86_400_000, (("region", "eu"),))
    new = loop.epoch(("acme", fx.name, new_id))
    assert (new.state.name, new.replaces, new.rows) == ("PENDING", old_id, 14)
    assert loop.state.datasets[("acme", fx.name)].version == str(fx.table.refresh().metadata.current_snapshot_id)
    # make-before-break: the old epoch serves until its replacement is READY, then retires
    await loop.schedule()
    assert loop.epoch(old.key).state.name == "READY"
    await loop.report("w1", new.key, STATUS.COMPLETED)
    assert loop.epoch(new.key).state.name == "READY"
    assert old.key not in loop.state.epochs or loop.state.epochs[old.key].state.name in ("RETIRING", "RETIRED")
    # re-admitting the same snapshot again changes nothing
    third = await loop.admit(request(fx))
    assert not third.refresh and [i.epoch_id for i in third.epochs.epochs] == new_ids


async def test_a_new_schema_reloads_every_epoch_even_unchanged_ones_and_keeps_the_old_schema_for_the_old_ones(nursery,
                                                                                          tmp_path: Path) -> None:
    from pyiceberg.types import StringType

    fx = make_events_table(tmp_path, days=2, regions=("eu",))
    loop = await loop_with(nursery, "w1")
    await loop.admit(request(fx, days=2, regions=("eu",)))
    await loop.schedule()
    for key in loop.keys(dataset_id=fx.name):
        await loop.report("w1", key, STATUS.COMPLETED)
    old_fp = loop.state.datasets[("acme", fx.name)].schema_fingerprint
    with fx.table.refresh().update_schema() as update:
        update.add_column("extra", StringType())
    append_file(fx, tmp_path, day=1, region="eu", rows=2)  # the next snapshot has the new schema
    resp = await loop.admit(request(fx, days=2, regions=("eu",)))
    ds = loop.state.datasets[("acme", fx.name)]
    assert resp.refresh and resp.pending_epochs == 2 and ds.schema_fingerprint != old_fp
    assert set(ds.retained_schemas) == {old_fp}  # the READY old epochs still serve, and may reload, with it
    old = [e for e in loop.state.dataset_epochs("acme", fx.name) if e.state.name == "READY"]
    assert len(old) == 2 and all(e.schema == old_fp for e in old)
    await loop.schedule()
    new = [e for e in loop.state.dataset_epochs("acme", fx.name) if e.schema == ds.schema_fingerprint]
    assert len(new) == 2 and all(loop.workers.plans[e.epoch_id].arrow_schema == ds.arrow_schema for e in new)
    # a load with the old schema is refused for a new epoch
    await loop.report("w1", new[0].key, STATUS.COMPLETED, schema_fingerprint=old_fp)
    assert loop.epoch(new[0].key).state.name == "PENDING" and loop.epoch(new[0].key).attempts == 1


async def test_validation_holds_exact_rows_and_bounds_bytes_then_the_measured_bytes_are_charged(
        nursery, tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=3, regions=("eu",), rows_per_file=10)
    loop = await loop_with(nursery, "w1")
    await loop.admit(request(fx, regions=("eu",)))
    await loop.schedule()
    a, b, c = loop.keys(dataset_id=fx.name)
    await loop.report("w1", a, STATUS.COMPLETED, rows=9)
    assert loop.epoch(a).state.name == "PENDING" and "exactly 10" in loop.epoch(a).history[-1].reason
    planned = loop.epoch(b).planned_bytes
    await loop.report("w1", b, STATUS.COMPLETED, size=100 * planned + (1 << 30))
    assert loop.epoch(b).state.name == "PENDING" and "planned" in loop.epoch(b).history[-1].reason
    measured = planned + 12_345
    await loop.report("w1", c, STATUS.COMPLETED, size=measured)
    e = loop.epoch(c)
    assert (e.state.name, e.memory_bytes, e.planned_bytes) == ("READY", measured, planned)
    assert loop.coord.reserved("w1")[0] == measured
    assert loop.state.usage("acme").memory_bytes == measured


async def test_dedicated_workers_serve_their_tenant_and_a_pool_tenant_uses_only_its_pool(nursery,
                                                                                         tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",))
    loop = await ControlLoop().start(nursery)
    loop.workers.join("mine", pool="acme")       # labelled tenant_id=acme (the Rust worker's way)
    loop.workers.join("theirs", pool="globex")   # dedicated to another tenant
    loop.workers.join("pooled", pool="gold")
    await loop.tenant("acme")
    await loop.tenant("globex")
    await loop.tenant("vip", worker_pool="gold")
    await loop.admit(request(fx, days=2, regions=("eu",)))
    await loop.schedule()
    assert {w for k in loop.keys(dataset_id=fx.name) for w in loop.epoch(k).worker_ids()} == {"mine"}
    loop.workers.join("shared")
    vip = request(fx, days=2, regions=("eu",))
    vip.tenant_id = "vip"
    await loop.admit(vip)
    await loop.schedule()
    assert {w for k in loop.keys("vip", fx.name) for w in loop.epoch(k).worker_ids()} == {"pooled"}
    other = request(fx, days=2, regions=("eu",))
    other.tenant_id = "globex"
    other.replication_factor = 2
    await loop.admit(other)
    await loop.schedule()
    assert {w for k in loop.keys("globex", fx.name) for w in loop.epoch(k).worker_ids()} == {"theirs", "shared"}


async def test_the_refresher_walks_only_the_datasets_with_a_refresh_interval(nursery, tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",))
    loop = await loop_with(nursery, "w1")
    await loop.admit(request(fx, days=2, regions=("eu",), refresh_interval=timedelta(seconds=30)))
    other = request(fx, days=2, regions=("eu",))
    other.dataset_id = "other"  # the same table, not polled
    await loop.admit(other)
    assert set(loop.state.datasets) == {("acme", fx.name), ("acme", "other")}
    assert loop.state.refreshing == {("acme", fx.name)}
    refresher = Refresher(loop.state, loop.admissions, tick_s=0.01)
    await nursery.start(refresher.run)
    with trio.fail_after(5):
        while not refresher.due:
            await trio.sleep(0.01)
    assert set(refresher.due) == {("acme", fx.name)}
    await loop.admit(request(fx, days=2, regions=("eu",)))  # admitted again without an interval: no longer polled
    assert loop.state.refreshing == set()
    with trio.fail_after(5):
        while refresher.due:
            await trio.sleep(0.01)


async def test_the_leader_polls_a_source_with_a_refresh_interval(nursery, tmp_path: Path) -> None:
    fx = make_events_table(tmp_path, days=2, regions=("eu",))
    loop = await loop_with(nursery, "w1")
    with pytest.raises(InvalidArgument, match="at least 1 s"):
        await loop.admit(request(fx, days=2, regions=("eu",), refresh_interval=timedelta(milliseconds=10)))
    await loop.admit(request(fx, days=2, regions=("eu",), refresh_interval=timedelta(seconds=1)))
    refresher = Refresher(loop.state, loop.admissions, tick_s=0.05)
    await nursery.start(refresher.run)
    with trio.fail_after(5):
        while not refresher.due:
            await trio.sleep(0.05)
    first = {e.epoch_id for e in loop.state.dataset_epochs("acme", fx.name)}
    await trio.sleep(1.3)
    assert refresher.refreshed == 0  # polled, unchanged
    append_file(fx, tmp_path, day=0, region="eu", rows=3)
    with trio.fail_after(10):
        while refresher.refreshed == 0:
            await trio.sleep(0.05)
    now = {e.epoch_id for e in loop.state.dataset_epochs("acme", fx.name)}
    assert len(now - first) == 1 and first <= now
    assert loop.state.datasets[("acme", fx.name)].version == str(fx.table.refresh().metadata.current_snapshot_id)
