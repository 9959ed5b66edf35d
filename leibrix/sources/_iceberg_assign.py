"""Grouping planned Iceberg data files into epochs: time and dimension overlap, apportioned rows and bytes.

:func:`assign` is the second half of the Iceberg connector's one pass (see
``leibrix.sources._iceberg`` for the rules it applies): every planned data
file is placed into each epoch whose window its time interval overlaps and
whose dimension values it may hold, with its share of rows and bytes.
"""

from __future__ import annotations

import bisect
import itertools
from collections import defaultdict
from dataclasses import dataclass, field

import pyarrow as pa

from leibrix.sources import _sizes
from leibrix.sources._iceberg_index import _Planned, identity_value
from leibrix.sources._iceberg_time import _file_interval
from leibrix.sources._types import EpochKey, EpochPlan, IcebergFile, IcebergRead, SourcePlan

__all__ = ["assign"]

#: Iceberg's reserved field id of ``file_path`` in positional delete files.
_DELETE_FILE_PATH_ID = 2147483546
#: Iceberg writers truncate string bounds to this many characters by default.
_BOUND_TRUNCATE = 16


@dataclass(slots=True)
class _Acc:
    files: list[IcebergFile] = field(default_factory=list)
    rows: float = 0.0
    exact: bool = True
    source_bytes: float = 0.0
    scan_bytes: int = 0
    deletes_seen: set[str] = field(default_factory=set)



def _dimension_candidates(table, df, dim_fields, dim_values) -> tuple[list[list[tuple[object, str]]], bool]:
    """Per dimension, the admitted ``(typed, text)`` values the file may hold, and whether each is certain."""
    from pyiceberg.conversions import from_bytes

    out, certain = [], True
    for nf, (column, typed_values) in zip(dim_fields, dim_values):
        pairs = [(tv, str(tv) if not isinstance(tv, bool) else str(tv).lower()) for tv in typed_values]
        known, ident = identity_value(table, df, nf)
        if known:
            pairs = [p for p in pairs if p[0] == ident]
        else:
            lo_b, hi_b = (df.lower_bounds or {}).get(nf.field_id), (df.upper_bounds or {}).get(nf.field_id)
            if lo_b is not None and hi_b is not None:
                lo, hi = from_bytes(nf.field_type, lo_b), from_bytes(nf.field_type, hi_b)
                truncated = isinstance(hi, str) and len(hi) >= _BOUND_TRUNCATE
                pairs = [p for p in pairs if lo <= p[0] and (truncated or p[0] <= hi)]
                certain = certain and lo == hi and not truncated
            else:
                certain = False
        out.append(pairs)
    return out, certain


def _string_lengths(table, files: list[_Planned], arrow_schema: pa.Schema) -> dict[str, float]:
    from pyiceberg import types as it

    schema = table.metadata.schema()
    out: dict[str, float] = {}
    for f in arrow_schema:
        if not (pa.types.is_string(f.type) or pa.types.is_binary(f.type) or pa.types.is_large_string(f.type)):
            continue
        try:
            nf = schema.find_field(f.name)
        except ValueError:
            continue
        if not isinstance(nf.field_type, (it.StringType, it.BinaryType)):
            continue
        size = values = 0
        bound_len = []
        for p in files:
            df = p.data_file
            size += (df.column_sizes or {}).get(nf.field_id, 0)
            values += (df.value_counts or {}).get(nf.field_id, 0)
            for b in ((df.lower_bounds or {}).get(nf.field_id), (df.upper_bounds or {}).get(nf.field_id)):
                if b is not None:
                    bound_len.append(len(b))
        if values or bound_len:
            per_value = size / values if values else 0.0
            mean_bound = sum(bound_len) / len(bound_len) if bound_len else 0.0
            out[f.name] = max(per_value, mean_bound)
    return out


def assign(request, table, snapshot_id, time, dim_fields, dim_values, planned, schema) -> SourcePlan:
    """The ``SourcePlan`` of ``planned`` files (``plan_files_once``'s output) over ``request``'s epochs; ``schema``
    is the table schema as planned: (Arrow schema, fingerprint, IPC bytes)."""
    arrow_schema, fingerprint, ipc = schema
    windows = list(request.windows)
    starts = [s for s, _ in windows]
    ends = [e for _, e in windows]
    full = (starts[0], ends[-1])
    names = [c for c, _ in dim_values]
    order = sorted(range(len(names)), key=lambda k: names[k])
    acc: dict[EpochKey, _Acc] = defaultdict(_Acc)
    # how many planned data files each positional delete file is attached to (for apportioning)
    attached: dict[str, int] = defaultdict(int)
    attached_rows: dict[str, int] = defaultdict(int)
    for p in planned:
        for d in p.deletes:
            if d.kind == "position":
                attached[d.path] += 1
                attached_rows[d.path] += p.data_file.record_count
    for p in planned:
        df = p.data_file
        (lo, hi), _ = _file_interval(table, df, time, full)
        if hi <= lo:
            continue
        first, last = bisect.bisect_right(ends, lo), bisect.bisect_left(starts, hi)
        if first >= last:
            continue
        candidates, dims_certain = _dimension_candidates(table, df, dim_fields, dim_values)
        combos = list(itertools.product(*candidates))
        if not combos:
            continue
        deleted, deletes_exact = 0.0, True
        for d, raw in zip(p.deletes, p.delete_files):
            if d.kind == "equality":
                deletes_exact = False
                continue
            fp_lo = (raw.lower_bounds or {}).get(_DELETE_FILE_PATH_ID)
            fp_hi = (raw.upper_bounds or {}).get(_DELETE_FILE_PATH_ID)
            if fp_lo is not None and fp_lo == fp_hi:
                deleted += d.record_count
            else:
                deletes_exact = False
                deleted += d.record_count * df.record_count / max(1, attached_rows[d.path])
        live = max(0.0, df.record_count - deleted)
        span = hi - lo
        ifile = IcebergFile(df.file_path, str(df.file_format.value if hasattr(df.file_format, "value") else df.file_format),
                            df.record_count, df.file_size_in_bytes, tuple(p.deletes))
        whole = last - first == 1 and starts[first] <= lo and hi <= ends[first] and len(combos) == 1 and dims_certain
        for w in range(first, last):
            share_t = (min(hi, ends[w]) - max(lo, starts[w])) / span
            if share_t <= 0:
                continue
            for combo in combos:
                dims = tuple((names[k], combo[k][1]) for k in order)
                a = acc[(starts[w], ends[w], dims)]
                share = share_t / len(combos)
                a.files.append(ifile)
                a.rows += live * share
                a.source_bytes += df.file_size_in_bytes * share
                a.scan_bytes += df.file_size_in_bytes
                a.exact = a.exact and whole and deletes_exact
                for d in p.deletes:
                    if d.path not in a.deletes_seen:
                        a.deletes_seen.add(d.path)
                        a.scan_bytes += d.file_size_in_bytes
                        a.source_bytes += d.file_size_in_bytes * (1 if attached[d.path] <= 1 else 1 / attached[d.path])
    width = _sizes.row_width(arrow_schema, _string_lengths(table, planned, arrow_schema))
    epochs = {}
    for key in request.epoch_keys():
        a = acc.get(key) or _Acc()
        rows = int(round(a.rows))
        epochs[key] = EpochPlan(key[0], key[1], key[2], IcebergRead(snapshot_id, tuple(a.files)), rows, a.exact,
                                int(round(a.source_bytes)), _sizes.memory_bytes(rows, width), a.scan_bytes)
    return SourcePlan(str(snapshot_id), arrow_schema, epochs, known_fingerprint=fingerprint, known_ipc=ipc)
