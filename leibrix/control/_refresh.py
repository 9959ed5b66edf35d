"""The leader's source polling: datasets admitted with a ``refresh_interval`` follow their source by themselves.

Every ``refresh_interval`` the leader plans the dataset's stored request
again (in a worker thread, within the admission queue's planning bound) and,
when the source's version or schema differs from the stored one, admits it
through the admission queue like a client would: a make-before-break refresh
of only the epochs whose data changed (``leibrix.control._admission``). A
source that cannot be planned is logged and tried again at the next interval;
the epochs already loaded keep serving.

The schedule is leader-local: a new leader polls each dataset one interval
after its term begins.
"""

from __future__ import annotations

import logging

import trio

from leibrix.control._admission import Admissions
from leibrix.domain._errors import ApiError
from leibrix.domain._validation import AdmissionLimits, validate_admission
from leibrix.state._model import ClusterState, Dataset
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["Refresher"]

log = logging.getLogger(__name__)


class Refresher:
    """Polls the sources of datasets that ask for it (see the module docstring)."""

    def __init__(self, state: ClusterState, admissions: Admissions, *, limits: AdmissionLimits = AdmissionLimits(),
                 tick_s: float = 0.5) -> None:
        self.state = state
        self.admissions = admissions
        self.limits = limits
        self.tick_s = tick_s
        #: (tenant, dataset) -> when (``trio.current_time``) its source is polled next.
        self.due: dict[tuple[str, str], float] = {}
        self._busy: set[tuple[str, str]] = set()
        #: Refreshes admitted by this term (for observers and tests).
        self.refreshed = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Poll due datasets until cancelled (each dataset one poll at a time).

        Every tick walks only the datasets that ask to be polled (``ClusterState.refreshing``), however many
        others the cluster holds.
        """
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                now = trio.current_time()
                polled = self.state.refreshing
                for key in [k for k in self.due if k not in polled]:
                    del self.due[key]
                for key in list(polled):
                    ds = self.state.datasets[key]
                    interval = ds.refresh_s
                    at = self.due.setdefault(key, now + interval)
                    if at <= now and key not in self._busy:
                        self.due[key] = now + interval
                        self._busy.add(key)
                        nursery.start_soon(self._poll, key, ds)
                await trio.sleep(self.tick_s)

    async def _poll(self, key: tuple[str, str], ds: Dataset) -> None:
        try:
            request = cp.AdmitDatasetRequest().parse(ds.request.SerializeToString())
            request.request_id = ""
            spec = validate_admission(request, self.limits)
            planned = await self.admissions.plan(spec)
            current = self.state.datasets.get(key)
            if current is None or (planned.version == current.version
                                   and planned.fingerprint == current.schema_fingerprint):
                return
            resp = await self.admissions.admit(spec, planned)
            self.refreshed += 1
            log.info("dataset %s/%s refreshed to version %s: %s", *key, planned.version, resp.message)
        except ApiError as exc:
            log.warning("refresh of dataset %s/%s failed (retried next interval): %s", *key, exc)
        finally:
            self._busy.discard(key)
