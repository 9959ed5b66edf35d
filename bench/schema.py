"""Per-step cost of recording and checking table schemas, in microseconds per call.

Every admission asks the source for the table schema and stores it (Arrow IPC
bytes + fingerprint) in the ``DatasetRecord``; every ``LoadPlan`` carries the
bytes; every worker load measures the DuckDB table's schema and compares
fingerprints. These steps sit on the admission and load hot paths (at 100,000
epochs a few microseconds each add up), so each is timed on its own, with and
without a schema where that is the choice, to show what the schema adds:

* ``schema.source_cached_us`` — ``_schema.synthetic(time_column, dims)`` for a shape
  already seen (the normal case: cached per time column + dimension names);
* ``schema.source_first_call_us`` — building a shape's schema the first time
  (columns, canonical text, fingerprint, IPC encoding; the cache bypassed);
* ``schema.encode_dataset[_with_schema]_us`` / ``schema.decode_dataset[_with_schema]_us``
  — the ``DatasetRecord`` written at admission and decoded by every mirror;
* ``schema.load_plan_serialize[_with_schema]_us`` — a LoadPlan like the
  coordinator's (partition, source) serialized, without and with ``arrow_schema``;
* ``schema.worker_measure_us`` — the worker's check after a load: the loaded
  DuckDB table's Arrow schema, then its fingerprint;
* ``schema.worker_plan_decode_us`` — the plan's IPC bytes decoded and fingerprinted;
* ``schema.ipc_bytes`` / ``schema.dataset_record_bytes[_with_schema]`` — sizes.

Each row is the best of R repeats of N calls, divided by N (the least disturbed
run on a shared machine). The dataset has one dimension (``region``).

Run: ``python -m bench.schema [--quick] [--json PATH]`` (``--quick``: 10x fewer calls, 3 repeats).
"""

from __future__ import annotations

import timeit
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

from bench._report import Report, options
from leibrix.domain import _schema
from leibrix.state import _model as _state
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._proto.records import management_pb2
from leibrix.client._requests import time_partitioned_admission
from leibrix.domain._validation import AdmissionSpec, validate_admission
from leibrix.worker._loader import Loader

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def per_call_us(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Microseconds per call of ``fn``: the best of ``repeat`` runs of ``calls`` calls."""
    return min(timeit.repeat(fn, number=calls, repeat=repeat)) / calls * 1e6


def assignment(spec: AdmissionSpec, arrow_schema: bytes) -> pb.DataAssignmentEvent:
    """A ``data_assignment`` shaped like ``Coordinator.assignment``'s for the first epoch of ``spec``."""
    a = pb.DataAssignmentEvent(dataset_id=spec.dataset_id, epoch_id="e1")
    plan = a.load_plan
    plan.plan_id, plan.destination_table_name = "plan-1", f"{spec.dataset_id}__e1"
    plan.expected_rows, plan.expected_bytes, plan.tenant_id = 1000, 64 << 20, spec.tenant_id
    plan.source.CopyFrom(management_pb2.AdmitDatasetRequest.FromString(spec.raw).source)
    plan.arrow_schema = arrow_schema
    rp = plan.resolved_partition
    rp.time_range.start_inclusive.FromMilliseconds(spec.start_ms)
    rp.time_range.end_exclusive.FromMilliseconds(spec.start_ms + 3_600_000)
    rp.time_column_name = spec.time_column
    rp.dimension_values.update({name: values[0] for name, values in spec.dimensions})
    return a


def main(quick: bool, json_path: Path | None) -> None:
    scale, repeat = (10, 3) if quick else (1, 5)
    report = Report("schema handling: per-step cost (admission, mirror, LoadPlan, worker)", quick=quick)
    spec = validate_admission(time_partitioned_admission(
        "t0", "d0", start=T0, end=T0 + timedelta(hours=1), dimensions={"region": ["r0"]}))
    dims = tuple(name for name, _ in spec.dimensions)
    table = _schema.synthetic(spec.time_column, dims)

    def row(name: str, fn: Callable[[], object], calls: int, note: str) -> None:
        report.add(f"schema.{name}", per_call_us(fn, max(1, calls // scale), repeat), "us", note)

    row("source_cached_us", lambda: _schema.synthetic(spec.time_column, dims), 20_000,
        "_schema.synthetic, shape seen before")
    row("source_first_call_us", lambda: _schema._synthetic.__wrapped__(spec.time_column, dims), 500,
        "a new shape: columns, canonical text, fingerprint, IPC")

    raw = spec.raw
    plain = _state.encode_dataset(raw, 1, 1, 0, "v")
    with_schema = _state.encode_dataset(raw, 1, 1, 0, "v", arrow_schema=table.ipc,
                                        schema_fingerprint=table.fingerprint)
    row("encode_dataset_us", lambda: _state.encode_dataset(raw, 1, 1, 0, "v"), 20_000, "DatasetRecord, no schema")
    row("encode_dataset_with_schema_us",
        lambda: _state.encode_dataset(raw, 1, 1, 0, "v", arrow_schema=table.ipc, schema_fingerprint=table.fingerprint),
        20_000, "DatasetRecord + IPC bytes + fingerprint")
    row("decode_dataset_us", lambda: _state.decode_dataset(plain), 20_000, "mirror side, no schema")
    row("decode_dataset_with_schema_us", lambda: _state.decode_dataset(with_schema), 20_000,
        "mirror side, schema bytes interned")

    plan0, plan1 = assignment(spec, b"").load_plan, assignment(spec, table.ipc).load_plan
    row("load_plan_serialize_us", plan0.SerializeToString, 20_000, "coordinator-shaped plan, no schema")
    row("load_plan_serialize_with_schema_us", plan1.SerializeToString, 20_000, "same plan + arrow_schema")

    loader = Loader(memory_limit_bytes=256 << 20)
    try:
        loaded = loader.load(assignment(spec, table.ipc), tenant_id=spec.tenant_id)
        if loaded.schema_fingerprint != table.fingerprint:
            raise RuntimeError(f"loaded table's fingerprint {loaded.schema_fingerprint} != plan's {table.fingerprint}")
        name = plan1.destination_table_name
        row("worker_measure_us", lambda: _schema.fingerprint(loader._arrow_schema(name)), 500,
            f"DuckDB table ({loaded.rows:,} rows, {len(table.columns)} columns): Arrow schema + fingerprint")
    finally:
        loader.close()
    row("worker_plan_decode_us", lambda: _schema.fingerprint(_schema.from_ipc(table.ipc)), 2000,
        "plan's IPC bytes -> schema + fingerprint")

    report.add("schema.ipc_bytes", len(table.ipc), "B", f"{len(table.columns)} columns")
    report.add("schema.dataset_record_bytes", len(plain), "B")
    report.add("schema.dataset_record_bytes_with_schema", len(with_schema), "B")
    report.note(f"best of {repeat} repeats of {20_000 // scale:,} calls ({500 // scale:,} for source_first_call "
                f"and worker_measure, {2000 // scale:,} for worker_plan_decode)")
    report.emit(json_path)


if __name__ == "__main__":
    args = options(__doc__.splitlines()[0])
    main(args.quick, args.json)
