"""An admission's source plan, made ready for the decider: reads, schema and per-epoch estimates.

``plan(spec, planner)`` runs in a worker thread (see ``Admissions.plan``):
it asks the source connector (``leibrix.sources.plan_admission``) for the
admission's :class:`~leibrix.sources.SourcePlan` and converts, off the Trio
loop, everything the decider stores: each epoch's wire ``ReadPlan`` as bytes
(``read_plan``; ``rows_exact`` as the hints leave it), the schema as Arrow
IPC bytes and its fingerprint, and the resolved version.

``same_read`` is how a refresh tells a changed epoch from an unchanged one:
two reads are the same when they read the same files (Iceberg: paths, sizes,
record counts and delete files, whatever the snapshot that lists them) or
the same query with the same parameters (SQL).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from leibrix.domain._errors import InvalidArgument
from leibrix.domain._estimates import Estimate, HintEstimator
from leibrix.domain import _epochs
from leibrix.domain._lifecycle import State
from leibrix.domain._validation import AdmissionSpec
from leibrix.state._model import Dataset, Epoch, EpochKey as StoredKey
from leibrix.sources import EpochKey, EpochPlan, SourcePlan
from leibrix.sources._wire import read_plan
from leibrix.wire._proto.records import control_plane_pb2 as pb

__all__ = ["LIVE", "MIN_REFRESH_INTERVAL_S", "Planned", "Planner", "check_refresh_interval", "kept_epoch", "plan",
           "retained_schemas", "same_read", "slices_for"]

#: Epoch states that still occupy a slot (window × dimensions) of a dataset.
LIVE = frozenset({State.PENDING, State.LOADING, State.VALIDATING, State.READY})

#: The shortest ``refresh_interval`` an admission may ask for.
MIN_REFRESH_INTERVAL_S = 1.0

#: Turns a validated admission into its source plan (blocking; ``leibrix.sources.plan_admission``).
Planner = Callable[[AdmissionSpec], SourcePlan]


@dataclass(frozen=True, slots=True)
class Planned:
    """Everything the decider needs from the source, per admission and per epoch.

    ``version`` is the resolved source version (the source's, else the
    request's ``source.version``); ``estimates`` and ``reads`` are keyed like
    ``SourcePlan.epochs`` (``(start_ms, end_ms, dims)``).
    """

    version: str
    schema_ipc: bytes
    fingerprint: str
    estimates: Mapping[EpochKey, Estimate]
    reads: Mapping[EpochKey, bytes]
    source_bytes: Mapping[EpochKey, int]


def _estimate(p: EpochPlan, hints, estimator: HintEstimator) -> Estimate:
    planned = Estimate(p.memory_bytes, estimator.default_cpu_cores, float(p.scan_cost_bytes), p.rows, p.rows_exact)
    return estimator.estimate(hints, planned)


def plan(spec: AdmissionSpec, planner: Planner, estimator: HintEstimator) -> Planned:
    """Plan ``spec`` from its source and convert the answer (blocking: run it in a worker thread).

    Raises the connector's ``ApiError`` (naming the request field at fault)
    when the source cannot be planned.
    """
    sp = planner(spec)
    estimates: dict[EpochKey, Estimate] = {}
    reads: dict[EpochKey, bytes] = {}
    sizes: dict[EpochKey, int] = {}
    for key, p in sp.epochs.items():
        est = estimates[key] = _estimate(p, spec.hints, estimator)
        rp = read_plan(p)
        rp.rows_exact = est.rows_exact
        reads[key] = rp.SerializeToString(deterministic=True)
        sizes[key] = p.source_bytes
    return Planned(version=sp.version or spec.version, schema_ipc=sp.ipc, fingerprint=sp.fingerprint,
                   estimates=estimates, reads=reads, source_bytes=sizes)


def _files(raw: bytes) -> tuple[bytes, ...]:
    """What a read reads, in a comparable form: its files in path order, or its query and parameters."""
    rp = pb.ReadPlan.FromString(raw)
    if rp.HasField("iceberg"):
        return tuple(sorted(f.SerializeToString(deterministic=True) for f in rp.iceberg.files))
    return (rp.sql.SerializeToString(deterministic=True),)


def same_read(a: bytes, b: bytes) -> bool:
    """Whether two serialized ``ReadPlan``s read the same data (see the module docstring); an empty one
    (an epoch stored without a planned read) is never the same as another."""
    if not a or not b:
        return False
    return a == b or _files(a) == _files(b)


def check_refresh_interval(spec: AdmissionSpec) -> None:
    """INVALID_ARGUMENT on ``refresh_interval`` when it is shorter than ``MIN_REFRESH_INTERVAL_S`` or set with
    a pinned ``source.version`` (polling follows the source's current version)."""
    s = spec.request.refresh_interval.total_seconds()
    if s < 0 or 0 < s < MIN_REFRESH_INTERVAL_S:
        raise InvalidArgument("refresh_interval", f"must be at least {MIN_REFRESH_INTERVAL_S:g} s, or unset")
    if s and spec.version:
        raise InvalidArgument("refresh_interval", "follows the source's current version: leave source.version unset")


def slices_for(spec: AdmissionSpec, version: str) -> list[_epochs.EpochSlice]:
    """The admission's epochs, their ids derived from the resolved source ``version``."""
    return _epochs.generate(spec.start_ms, spec.end_ms, spec.granularity, spec.dimensions, version=version,
                            scope=f"{spec.tenant_id}/{spec.dataset_id}")


def kept_epoch(s: _epochs.EpochSlice, existing: dict[str, Epoch], live: dict[tuple, list[Epoch]], planned: Planned,
               current: str) -> Epoch | None:
    """The stored epoch that already holds slice ``s``, else None (the slice needs a new epoch).

    ``live`` maps each (window, dims) to its live epochs, oldest admission
    first; ``current`` is the dataset's schema fingerprint (that of epochs
    stored without their own).

    That is the epoch of the same id (unless RETIRED), else the newest live
    epoch of the same window and dimensions when it reads the same data
    with the same schema (``same_read``): a refresh reloads only what changed.
    """
    e = existing.get(s.epoch_id)
    if e is not None and e.state is not State.RETIRED:
        return e
    olds = live.get((s.start_ms, s.end_ms, s.dims))
    if olds:
        e = olds[-1]
        if (e.schema or current) == planned.fingerprint and \
                same_read(e.read, planned.reads[(s.start_ms, s.end_ms, s.dims)]):
            return e
    return None


def retained_schemas(ds: Dataset | None, planned: Planned, existing: dict[str, Epoch],
                     retired: set[StoredKey]) -> dict[str, bytes]:
    """Schemas other than the new one that live epochs still load with (a refresh keeps the old epochs
    serving until their replacements are READY; a reload of one carries its own schema)."""
    if ds is None:
        return {}
    out: dict[str, bytes] = {}
    for e in existing.values():
        fp = e.schema or ds.schema_fingerprint
        if e.state in LIVE and e.key not in retired and fp and fp != planned.fingerprint and fp not in out:
            if ipc := ds.schema_ipc(fp):
                out[fp] = ipc
    return out
