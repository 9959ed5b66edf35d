"""Dataset, epoch and route RPCs: ``AdmitDataset`` (upstream), ``GetDataset``, ``ListDatasets``, ``ListEpochs``,
``RetireEpoch``, ``DropDataset``, ``ReportAccess``, ``ResolveRoute``, ``WatchRoutes``.

``AdmitDataset`` follows the one response rule of ``leibrix.control._admission``:
accepted → OK with the upstream body (``ACCEPTED``), anything else → a gRPC
error status with the message and no body. Writes and access reports go to
the leader (followers answer UNAVAILABLE + ``leibrix-leader``); reads and
routes are answered by any master from its watched state (a follower may lag
the leader by the watch delay, and knows worker addresses only while leading).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import betterproto
import trio

from leibrix.control._service import AdmissionService
from leibrix.domain._errors import InvalidArgument, NotFound, Unavailable
from leibrix.store._etcd import Delete
from leibrix.api._pages import page
from leibrix.api._server import ClosingStreams, trio_rpc
from leibrix.domain._lifecycle import State
from leibrix.domain._tokens import redact_source
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.state._model import Dataset, Epoch, epoch_to_wire
from leibrix.store._store import Mirror
from leibrix.store._term import Leadership
from leibrix.domain._validation import check_id, validate_admission


def _redacted(source: cp.DataSource) -> cp.DataSource:
    """``source`` with every password in its catalog URI/DSN replaced by ``***`` (references are kept)."""
    if source.catalog is not None:
        kind, part = betterproto.which_one_of(source.catalog, "catalog_type")
        attr = {"iceberg": "uri", "starrocks": "dsn", "jdbc": "uri"}.get(kind)
        if attr and part is not None:
            setattr(part, attr, redact_source(getattr(part, attr)))
    return source


def _dataset_info(svc: AdmissionService, ds: Dataset) -> cp.DatasetInfo:
    """The ``DatasetInfo`` of a dataset: source, placement options and how many epochs are in each state.

    Source credentials never leave the master: passwords in ``source`` and
    ``admitted.source`` are redacted (``${env:...}``/``${file:...}`` references stay).
    """
    counts = Counter(e.state.name for e in svc.state.dataset_epochs(ds.tenant_id, ds.dataset_id))
    admitted = cp.AdmitDatasetRequest().parse(ds.request.SerializeToString())
    if admitted.source is not None:
        _redacted(admitted.source)
    return cp.DatasetInfo(
        tenant_id=ds.tenant_id,
        dataset_id=ds.dataset_id,
        source=_redacted(cp.DataSource().parse(ds.request.source.SerializeToString())),
        replication_factor=ds.replication_factor,
        strategy=cp.PlacementStrategy(ds.strategy),
        retention_epochs=ds.retention,
        epochs_by_state=dict(counts),
        admitted_at=datetime.fromtimestamp(ds.admitted_ms / 1000, tz=timezone.utc),
        admitted=admitted,
    )


#: Seconds a resuming WatchRoutes waits for this master's state to reach the subscriber's revision.
RESUME_WAIT_S = 5.0


class DatasetApi(ClosingStreams, cp.ManagementServiceBase):
    """ManagementService area: admission, dataset/epoch inspection, retirement, heat and routes."""

    def __init__(self, leadership: Leadership, admission: AdmissionService, mirror: Mirror) -> None:
        self.leadership = leadership
        self.admission = admission
        self.mirror = mirror

    def _service(self) -> AdmissionService:
        return self.admission

    def _dataset(self, tenant_id: str, dataset_id: str, *, write: bool = False):
        """The service and the dataset (NOT_FOUND if unknown). A ``write`` asks the leader first: a follower
        answers UNAVAILABLE + ``leibrix-leader``, never NOT_FOUND from a state that may lag the leader's."""
        svc = self._service()
        t = check_id("tenant_id", tenant_id)
        d = check_id("dataset_id", dataset_id)
        if write:
            svc.leading()
        ds = svc.state.datasets.get((t, d))
        if ds is None:
            raise NotFound(f"dataset {t}/{d} not found")
        return svc, ds

    @trio_rpc
    async def admit_dataset(self, request: cp.AdmitDatasetRequest) -> cp.AdmitDatasetResponse:
        """Validate, decide (policy, quotas, idempotency) and persist an admission; see ``leibrix.control._admission``."""
        svc = self._service()
        spec = validate_admission(request, svc.admission_config.limits)
        _, admissions = svc.leading()
        return await admissions.admit(spec)

    @trio_rpc
    async def get_dataset(self, request: cp.GetDatasetRequest) -> cp.DatasetInfo:
        """The dataset's source, placement options and how many epochs are in each state."""
        svc, ds = self._dataset(request.tenant_id, request.dataset_id)
        return _dataset_info(svc, ds)

    @trio_rpc
    async def list_datasets(self, request: cp.ListDatasetsRequest) -> cp.ListDatasetsResponse:
        """One page of datasets (of one tenant when ``tenant_id`` is set), ordered by (tenant, dataset)."""
        svc = self._service()
        tenant_id = check_id("tenant_id", request.tenant_id) if request.tenant_id else None
        keyed = (((t, d), ds) for (t, d), ds in svc.state.datasets.items() if tenant_id in (None, t))
        datasets, token = await page(request, keyed, lambda ds: _dataset_info(svc, ds))
        return cp.ListDatasetsResponse(datasets=datasets, next_page_token=token)

    @trio_rpc
    async def list_epochs(self, request: cp.ListEpochsRequest) -> cp.ListEpochsResponse:
        """One page of the dataset's epochs, ordered by (window start, id), with state, history, replicas,
        estimates, heat and benefit."""
        svc, ds = self._dataset(request.tenant_id, request.dataset_id)
        coord = svc.coordinator

        def status(e: Epoch) -> cp.EpochStatus:
            heat = benefit = 0.0
            if coord is not None:
                now = coord.clock()
                heat = coord.heat(e, now).get(coord.config.heat, now)
                benefit = coord.benefit(e, now)
            return epoch_to_wire(e, svc.worker_addr, heat, benefit)

        keyed = [((e.start_ms, e.epoch_id), e) for e in svc.state.dataset_epochs(ds.tenant_id, ds.dataset_id)]
        epochs, token = await page(request, keyed, status)
        return cp.ListEpochsResponse(epochs=epochs, next_page_token=token)

    @trio_rpc
    async def retire_epoch(self, request: cp.RetireEpochRequest) -> cp.CommonResponse:
        """Retire one epoch: its route is withdrawn first, then its replicas are evicted."""
        svc, ds = self._dataset(request.tenant_id, request.dataset_id, write=True)
        epoch_id = check_id("epoch_id", request.epoch_id)
        e = svc.state.epochs.get((ds.tenant_id, ds.dataset_id, epoch_id))
        if e is None:
            raise NotFound(f"epoch {ds.tenant_id}/{ds.dataset_id}/{epoch_id} not found")
        coord, _ = svc.leading()
        n = await coord.retire([e.key], "retired by RetireEpoch")
        msg = f"epoch {epoch_id} retired" if n else f"epoch {epoch_id} was already {e.state.name}"
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS, message=msg)

    @trio_rpc
    async def drop_dataset(self, request: cp.DropDatasetRequest) -> cp.CommonResponse:
        """Drop a dataset: withdraw every route, evict every replica, delete its records."""
        svc, ds = self._dataset(request.tenant_id, request.dataset_id, write=True)
        coord, _ = svc.leading()
        ctx = self.leadership.leader_context()
        keys = [e.key for e in list(svc.state.dataset_epochs(ds.tenant_id, ds.dataset_id))]
        await coord.retire(keys, "dataset dropped", delete=True)
        await ctx.writer.commit([Delete(ctx.keys.dataset(ds.tenant_id, ds.dataset_id))])
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS,
                                 message=f"dataset {ds.tenant_id}/{ds.dataset_id} dropped ({len(keys)} epoch(s))")

    @trio_rpc
    async def report_access(self, request: cp.ReportAccessRequest) -> cp.CommonResponse:
        """Feed heat: ``count`` queries that scanned ``scanned_bytes`` (one epoch, or all when epoch_id is empty)."""
        svc, ds = self._dataset(request.tenant_id, request.dataset_id, write=True)
        if request.count < 0:
            raise InvalidArgument("count", f"must be >= 0, got {request.count}")
        if request.scanned_bytes < 0:
            raise InvalidArgument("scanned_bytes", f"must be >= 0, got {request.scanned_bytes}")
        coord, _ = svc.leading()
        if request.epoch_id:
            e = svc.state.epochs.get((ds.tenant_id, ds.dataset_id, check_id("epoch_id", request.epoch_id)))
            if e is None:
                raise NotFound(f"epoch {ds.tenant_id}/{ds.dataset_id}/{request.epoch_id} not found")
            targets = [e]
        else:
            targets = [e for e in svc.state.dataset_epochs(ds.tenant_id, ds.dataset_id) if e.state is not State.RETIRED]
        for e in targets:
            coord.report_access(e, request.count, request.scanned_bytes // max(1, len(targets)))
        return cp.CommonResponse(status=cp.ResponseStatus.SUCCESS, message=f"{len(targets)} epoch(s) updated")

    @trio_rpc
    async def resolve_route(self, request: cp.ResolveRouteRequest) -> cp.ResolveRouteResponse:
        """READY epochs overlapping the time range and matching the filter, with workers and tokens."""
        return self._service().routes.resolve(request)

    @trio_rpc
    async def watch_routes(self, request: cp.WatchRoutesRequest) -> AsyncIterator[cp.RouteUpdate]:
        """The tenant's routes (UPSERTs), ``SNAPSHOT_DONE``, then every change until the client leaves.

        With ``since_revision`` (a resuming subscriber), answers only once this
        master's watched state has reached that revision: UNAVAILABLE if it
        does not within ``RESUME_WAIT_S``, so a lagging master never serves a
        snapshot older than what the subscriber has already seen.
        """
        tenant_id = check_id("tenant_id", request.tenant_id)
        if request.since_revision < 0:
            raise InvalidArgument("since_revision", f"must be >= 0, got {request.since_revision}")
        if request.since_revision > self.mirror.revision:
            with trio.move_on_after(RESUME_WAIT_S):
                await self.mirror.wait_for(request.since_revision)
            if request.since_revision > self.mirror.revision:
                raise Unavailable(f"this master's state is at revision {self.mirror.revision}, behind the "
                                  f"subscriber's {request.since_revision}; retry or ask another master")
        svc = self._service()
        if tenant_id not in svc.state.tenants:
            raise NotFound(f"tenant {tenant_id!r} not found")
        recv = svc.routes.subscribe(tenant_id)
        try:
            async for update in recv:
                yield update
        finally:
            recv.close()
