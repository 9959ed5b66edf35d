"""An epoch's planned read as the wire ``ReadPlan`` a worker executes (``LoadPlan.read``).

:func:`read_plan` turns a connector's :class:`~leibrix.sources._types.EpochPlan`
into ``leibrix_cp.ReadPlan`` (the upb message of
``leibrix.wire._proto.records.control_plane_pb2``): an ``IcebergRead`` lists the
data files with their delete files; a ``SqlRead`` carries the whole query
text and each parameter in the ``SqlParam`` oneof that fits its Python value
(``bool`` → ``boolean``, ``int`` → ``integer``, ``float`` → ``real``,
``datetime`` → ``timestamp`` (a naive one is UTC), ``date`` → ``date``
as ``YYYY-MM-DD``, anything else → ``text``). ``rows_exact`` is the epoch's.
"""

from __future__ import annotations

from datetime import date, datetime, timezone

from leibrix.sources._types import EpochPlan, IcebergRead, SqlRead
from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = ["read_plan"]


def _param(name: str, value: object) -> pb.SqlParam:
    p = pb.SqlParam(name=name)
    if isinstance(value, bool):
        p.boolean = value
    elif isinstance(value, int):
        p.integer = value
    elif isinstance(value, float):
        p.real = value
    elif isinstance(value, datetime):
        p.timestamp.FromDatetime(value if value.tzinfo else value.replace(tzinfo=timezone.utc))
    elif isinstance(value, date):
        p.date = value.isoformat()
    elif value is not None:
        p.text = str(value)
    return p


def read_plan(epoch: EpochPlan) -> pb.ReadPlan:
    """The wire ``ReadPlan`` of one planned epoch (see the module docstring)."""
    out = pb.ReadPlan(rows_exact=epoch.rows_exact)
    read = epoch.read
    if isinstance(read, IcebergRead):
        out.iceberg.SetInParent()
        if read.snapshot_id is not None:
            out.iceberg.snapshot_id = read.snapshot_id
        for f in read.files:
            df = out.iceberg.files.add(path=f.path, file_format=f.file_format, record_count=f.record_count,
                                       file_size_in_bytes=f.file_size_in_bytes)
            for d in f.delete_files:
                df.delete_files.add(path=d.path, kind=d.kind, record_count=d.record_count,
                                    file_size_in_bytes=d.file_size_in_bytes, equality_ids=list(d.equality_ids))
    elif isinstance(read, SqlRead):
        out.sql.query = read.sql()
        out.sql.params.extend(_param(k, v) for k, v in read.params.items())
    else:
        raise TypeError(f"unknown read {type(read).__name__}")
    return out
