"""The wire views of epochs (``EpochStatus``, ``EpochInfo``), re-exported by ``leibrix.state._model``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from leibrix.wire._proto import leibrix_cp as cp

if TYPE_CHECKING:
    from leibrix.state._records import Epoch

__all__ = ["epoch_info", "epoch_to_wire", "fill_epoch_info"]


def _set_ts(ts, ms: int) -> None:
    ts.seconds, rem = divmod(ms, 1000)
    ts.nanos = rem * 1_000_000


def epoch_to_wire(e: Epoch, addr: Callable[[str], str | None] = lambda w: None, heat: float = 0.0,
                  benefit: float = 0.0) -> cp.EpochStatus:
    """The ``EpochStatus`` shown by ``ListEpochs``: state, history, replicas and estimates."""
    return cp.EpochStatus(
        info=epoch_info(e.epoch_id, e.start_ms, e.end_ms, e.dims),
        state=cp.EpochState(int(e.state)),
        history=[
            cp.EpochTransition(from_state=cp.EpochState(int(t.from_state)), to_state=cp.EpochState(int(t.to_state)),
                               at=datetime.fromtimestamp(t.at_ms / 1000, tz=timezone.utc), reason=t.reason)
            for t in e.history
        ],
        replicas=[cp.ReplicaInfo(worker_id=r.worker_id, addr=addr(r.worker_id) or "",
                                 state=cp.ReplicaInfoState(r.state), plan_id=r.plan_id) for r in e.replicas],
        estimate=cp.Resources(memory_bytes=e.memory_bytes, cpu_cores=e.cpu_cores),
        scan_cost=e.scan_cost,
        heat=heat,
        benefit=benefit,
        version=e.version,
        attempts=e.attempts,
    )


def epoch_info(epoch_id: str, start_ms: int, end_ms: int, dims: tuple[tuple[str, str], ...]) -> cp.EpochInfo:
    """The upstream ``EpochInfo``: id, window, dimension values."""
    return cp.EpochInfo(
        epoch_id=epoch_id,
        time_range=cp.TimeRange(
            start_inclusive=datetime.fromtimestamp(start_ms / 1000, tz=timezone.utc),
            end_exclusive=datetime.fromtimestamp(end_ms / 1000, tz=timezone.utc),
        ),
        dimension_values=dict(dims),
    )


def fill_epoch_info(msg, epoch_id: str, start_ms: int, end_ms: int, dims: tuple[tuple[str, str], ...]) -> None:
    """Fill a upb ``EpochInfo`` (``msg``) like :func:`epoch_info` (about 20× cheaper than building betterproto)."""
    msg.epoch_id = epoch_id
    _set_ts(msg.time_range.start_inclusive, start_ms)
    _set_ts(msg.time_range.end_exclusive, end_ms)
    for k, v in dims:
        msg.dimension_values[k] = v
