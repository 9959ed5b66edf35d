"""The live files of one Iceberg snapshot, read once per process and selected per admission.

A snapshot never changes, so what planning needs from its manifests is read
once: :func:`index_for` reads every manifest of the snapshot into a
:class:`SnapshotIndex` (:func:`plan_files_once`: every live data file with the
delete files that apply to it) and keeps it per ``(table uuid, snapshot id)``
in a bounded LRU (:data:`MAX_INDEXES` entries, :data:`MAX_INDEX_BYTES`
estimated bytes; an index larger than that is used for its request and not
kept). Concurrent requests for the same missing snapshot read the manifests
once. Manifest files never change either: their live entries are kept per
manifest path (:data:`MAX_MANIFESTS`, :data:`MAX_MANIFEST_BYTES`), so the
index of a new snapshot reads only the manifests its commit wrote.

Per admission, :meth:`SnapshotIndex.select` returns the files of the admission:

1. by time: per time column the index keeps its files sorted by the
   ``[lo, hi)`` interval their partition values and column bounds give
   (the interval :func:`leibrix.sources._iceberg_assign.assign` places them
   by), so only files overlapping a window are looked at; files with no known
   interval are always looked at;
2. by dimension: per dimension column partitioned by ``identity`` the index
   keeps its files by partition value, so a file whose value is none of the
   admitted ones is not looked at (the partition projection below would drop
   it); files of specs without that identity field, or with a null value, are
   looked at;
3. then the pruning pyiceberg's planner applies to manifest entries, with the
   admission's union filter: the inclusive partition projection per spec and
   the inclusive metrics evaluator (column bounds, null and value counts;
   empty files dropped).
"""

from __future__ import annotations

import bisect
import itertools
import threading
from dataclasses import dataclass, field
from datetime import date, timedelta

from leibrix.sources._iceberg_time import _file_interval
from leibrix.sources._lru import Lru
from leibrix.sources._types import IcebergDeleteFile

__all__ = ["MAX_INDEXES", "MAX_INDEX_BYTES", "SnapshotIndex", "clear", "identity_value", "index_for",
           "plan_files_once"]

#: Snapshot indexes kept.
MAX_INDEXES = 64
#: Estimated bytes of the snapshot indexes kept, together.
MAX_INDEX_BYTES = 256 << 20
#: Manifests whose entries are kept.
MAX_MANIFESTS = 4096
#: Estimated bytes of the manifest entries kept, together.
MAX_MANIFEST_BYTES = 256 << 20
#: Estimated bytes of one planned file beyond its path, bounds and delete files.
_FILE_OVERHEAD = 1024


@dataclass(slots=True)
class _Planned:
    data_file: object
    sequence_number: int
    deletes: list[IcebergDeleteFile]
    delete_files: list[object]


def _manifest_size(entries) -> int:
    size = 0
    for entry in entries:
        df = entry.data_file
        size += _FILE_OVERHEAD + len(df.file_path)
        for bounds in (df.lower_bounds, df.upper_bounds):
            size += sum(len(b) + 16 for b in (bounds or {}).values())
    return size


def snapshot_entries(table, snapshot) -> list:
    """The live entries of every manifest of ``snapshot``: kept per manifest path, the others read (in parallel)."""
    from pyiceberg.utils.concurrent import ExecutorFactory

    manifests = snapshot.manifests(table.io)
    kept = {m.manifest_path: _manifests.get(m.manifest_path) for m in manifests}
    missing = [m for m in manifests if kept[m.manifest_path] is None]
    if missing:
        read = ExecutorFactory.get_or_create().map(lambda m: m.fetch_manifest_entry(table.io, discard_deleted=True), missing)
        for m, entries in zip(missing, read):
            kept[m.manifest_path] = entries
            _manifests.put(m.manifest_path, entries, _manifest_size(entries))
    return list(itertools.chain.from_iterable(kept[m.manifest_path] for m in manifests))


def plan_files_once(table, entries) -> list[_Planned]:
    """The data files of manifest ``entries`` (one snapshot's) with the delete files that apply to each.

    Positional deletes are matched by pyiceberg's delete file index; equality deletes
    (which its planner refuses) are set aside and matched here: same partition
    (or an unpartitioned delete) and a data sequence number below the delete's.
    """
    from pyiceberg.manifest import DataFileContent
    from pyiceberg.table.delete_file_index import DeleteFileIndex

    sequence: dict[str, int] = {}
    equality: list[tuple[object, int]] = []
    data_entries = []
    index = DeleteFileIndex()
    for entry in entries:
        df = entry.data_file
        if df.content == DataFileContent.EQUALITY_DELETES:
            equality.append((df, entry.sequence_number or 0))
        elif df.content == DataFileContent.DATA:
            sequence[df.file_path] = entry.sequence_number or 0
            data_entries.append(entry)
        elif df.content == DataFileContent.POSITION_DELETES:
            index.add_delete_file(entry, partition_key=df.partition)
    tasks = [(e.data_file, index.for_data_file(e.sequence_number or 0, e.data_file, partition_key=e.data_file.partition))
             for e in data_entries]
    specs = table.metadata.specs()
    out = []
    for df, positional in tasks:
        seq = sequence.get(df.file_path, 0)
        dels = [_delete(d, "position") for d in positional]
        raw = list(positional)
        for eq, eq_seq in equality:
            same_scope = specs[eq.spec_id].is_unpartitioned() or (eq.spec_id == df.spec_id and eq.partition == df.partition)
            if eq_seq > seq and same_scope:
                dels.append(_delete(eq, "equality"))
                raw.append(eq)
        out.append(_Planned(df, seq, dels, raw))
    return out


def identity_value(table, df, field) -> tuple[bool, object]:
    """``(True, value)`` when ``df``'s partition spec has an ``identity`` field on column ``field`` (a pyiceberg
    ``NestedField``) and the file's value there is not null, the value typed like an admitted dimension value
    (a ``date`` for a date column); ``(False, None)`` otherwise."""
    from pyiceberg import transforms as tr
    from pyiceberg import types as it

    spec = table.metadata.specs()[df.spec_id]
    for pos, pf in enumerate(spec.fields):
        if pf.source_id == field.field_id and isinstance(pf.transform, tr.IdentityTransform):
            value = df.partition[pos]
            if value is None:
                return False, None
            if isinstance(field.field_type, it.DateType) and isinstance(value, int):
                value = date(1970, 1, 1) + timedelta(days=value)
            return True, value
    return False, None


def _delete(df, kind: str) -> IcebergDeleteFile:
    return IcebergDeleteFile(df.file_path, kind, df.record_count, df.file_size_in_bytes, tuple(df.equality_ids or ()))


@dataclass(slots=True)
class _TimeIndex:
    los: list[int]        # interval starts, sorted
    his: list[int]        # interval ends, aligned with ``los``
    order: list[int]      # positions in ``SnapshotIndex.planned``, aligned with ``los``
    unbounded: list[int]  # positions of files with no known interval
    max_span: int


@dataclass(slots=True)
class _ValueIndex:
    by_value: dict[object, list[int]]  # identity partition value -> positions in ``SnapshotIndex.planned``
    others: list[int]                  # positions of files with no identity value on the column


@dataclass(slots=True)
class SnapshotIndex:
    """Every live data file of one snapshot (with its delete files), and per time column an interval index."""

    planned: list[_Planned]
    size: int
    _by_time: dict[tuple[int, str], _TimeIndex] = field(default_factory=dict)
    _by_value: dict[int, _ValueIndex] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def read(cls, table, snapshot) -> SnapshotIndex:
        """The live files of every manifest of ``snapshot`` (manifests read by an earlier snapshot are not read again)."""
        planned = plan_files_once(table, snapshot_entries(table, snapshot))
        size = 0
        for p in planned:
            df = p.data_file
            size += _FILE_OVERHEAD + len(df.file_path) + 256 * len(p.deletes)
            for bounds in (df.lower_bounds, df.upper_bounds):
                size += sum(len(b) + 16 for b in (bounds or {}).values())
        return cls(planned, size)

    def _time_index(self, table, time) -> _TimeIndex:
        key = (time.field_id, time.kind)
        with self._lock:
            found = self._by_time.get(key)
            if found is not None:
                return found
            bounded, unbounded = [], []
            for i, p in enumerate(self.planned):
                (lo, hi), known = _file_interval(table, p.data_file, time, (0, 0))
                if not known:
                    unbounded.append(i)
                elif lo < hi:
                    bounded.append((lo, hi, i))
            bounded.sort()
            ti = _TimeIndex([b[0] for b in bounded], [b[1] for b in bounded], [b[2] for b in bounded], unbounded,
                            max((hi - lo for lo, hi, _ in bounded), default=0))
            self._by_time[key] = ti
            return ti

    def _value_index(self, table, column) -> _ValueIndex:
        with self._lock:
            found = self._by_value.get(column.field_id)
            if found is not None:
                return found
            by_value: dict[object, list[int]] = {}
            others: list[int] = []
            for i, p in enumerate(self.planned):
                known, value = identity_value(table, p.data_file, column)
                if known:
                    by_value.setdefault(value, []).append(i)
                else:
                    others.append(i)
            vi = self._by_value[column.field_id] = _ValueIndex(by_value, others)
            return vi

    def select(self, table, time, ranges: list[tuple[int, int]], row_filter, dims=()) -> list[_Planned]:
        """The files that may hold rows of ``ranges`` (merged ``[start, end)`` windows) and pass ``row_filter``.

        ``dims``: ``(column, values)`` per dimension, ``column`` its pyiceberg ``NestedField`` and ``values``
        the admitted values, typed (``row_filter`` holds them too).
        """
        from pyiceberg.expressions.visitors import _InclusiveMetricsEvaluator, expression_evaluator, inclusive_projection
        from pyiceberg.schema import Schema

        ti = self._time_index(table, time)
        picked = set(ti.unbounded)
        for s, e in ranges:
            for k in range(bisect.bisect_right(ti.los, s - ti.max_span), bisect.bisect_left(ti.los, e)):
                if ti.his[k] > s:
                    picked.add(ti.order[k])
        for column, values in dims:
            if not picked:
                break
            vi = self._value_index(table, column)
            if vi.by_value:
                allowed = set(vi.others)
                for v in values:
                    allowed.update(vi.by_value.get(v, ()))
                picked &= allowed
        if not picked:
            return []
        metadata = table.metadata
        schema = metadata.schema()
        specs = metadata.specs()
        partition_ok: dict[int, object] = {}
        metrics_ok = _InclusiveMetricsEvaluator(schema, row_filter, True, False).eval
        out = []
        for i in sorted(picked):
            p = self.planned[i]
            df = p.data_file
            check = partition_ok.get(df.spec_id)
            if check is None:
                spec = specs[df.spec_id]
                partition_schema = Schema(*spec.partition_type(schema).fields)
                check = expression_evaluator(partition_schema, inclusive_projection(schema, spec, True)(row_filter), True)
                partition_ok[df.spec_id] = check
            if check(df.partition) and metrics_ok(df):
                out.append(p)
        return out


_indexes: Lru[SnapshotIndex] = Lru(MAX_INDEXES, MAX_INDEX_BYTES)
_manifests: Lru[list] = Lru(MAX_MANIFESTS, MAX_MANIFEST_BYTES)


def index_for(table, snapshot) -> SnapshotIndex:
    """The index of ``snapshot`` of ``table``: kept from an earlier request, or read now (and kept if it fits)."""
    key = (str(table.metadata.table_uuid), snapshot.snapshot_id)
    return _indexes.get_or_build(key, lambda: SnapshotIndex.read(table, snapshot), lambda ix: ix.size)


def clear() -> None:
    """Forget every kept snapshot index and manifest."""
    _indexes.clear()
    _manifests.clear()
