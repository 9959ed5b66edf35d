"""LoadPlans: the ``data_assignment`` message that tells a worker to load one epoch.

Built with the upb ``_pb2`` classes (the hub sends either kind): about ten
times cheaper than betterproto, and assignments are the master's most
frequent outbound message.
"""

from __future__ import annotations

import uuid

from leibrix.domain import _epochs
from leibrix.state._model import Dataset, Epoch
from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = ["assignment"]


def assignment(e: Epoch, ds: Dataset | None, worker_id: str) -> pb.EventStreamMessage:
    """The ``data_assignment`` that makes ``worker_id`` load ``e`` of dataset ``ds``.

    Its LoadPlan names table ``{dataset}__{epoch}``, the epoch's window and
    dimension values, the source at the epoch's own version (a replaced epoch
    keeps loading its version), exactly what to read (``read``: the files or
    query planned at admission, with ``rows_exact``), the expected rows and
    bytes (the estimate, or the bytes measured by an earlier load), and the
    epoch's table schema as Arrow IPC bytes (``arrow_schema``: the dataset's,
    or the one it retains for an epoch planned before the source's schema
    changed). Without the dataset record only the epoch's own fields are set.
    """
    msg = pb.EventStreamMessage(event_id=uuid.uuid4().hex, tenant_id=e.tenant_id, worker_id=worker_id)
    a = msg.data_assignment
    a.dataset_id, a.epoch_id = e.dataset_id, e.epoch_id
    plan = a.load_plan
    plan.plan_id = e.plan_id
    plan.destination_table_name = f"{e.dataset_id}__{e.epoch_id}"
    plan.expected_rows, plan.expected_bytes, plan.tenant_id = e.rows, e.memory_bytes, e.tenant_id
    if e.read:
        plan.read.ParseFromString(e.read)
    rp = plan.resolved_partition
    rp.time_range.start_inclusive.FromMilliseconds(e.start_ms)
    rp.time_range.end_exclusive.FromMilliseconds(e.end_ms)
    rp.dimension_values.update(e.dims)
    if ds is not None:
        plan.source.CopyFrom(ds.request.source)
        plan.arrow_schema = ds.schema_ipc(e.schema)
        rp.time_column_name = ds.time_column
        rp.time_partition_value = _epochs.partition_value(e.start_ms, ds.granularity)
    if e.version:
        plan.source.version = e.version
    else:
        plan.source.ClearField("version")
    return msg
