"""The coordinator's per-pass candidate cap (``CoordinatorConfig.max_candidates``) must not strand
PENDING epochs: a pass that placed some re-kicks itself while others remain.

Real master + etcd + one reference worker; the cap is lowered on the live term's coordinator (it is
not a master option), so each pass places at most two epochs and only the re-kick reaches the rest.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import trio

from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, quota, rpc, states
from tests.support.cluster import leading, start_master, workers
from tests.support.poll import eventually

CAP = 2


async def test_epochs_beyond_max_candidates_all_become_ready(etcd_server: Any, nursery: trio.Nursery) -> None:
    m = await leading(await start_master(nursery, etcd_server.endpoint))
    coord = m.parts.admission.coordinator
    coord.config = dataclasses.replace(coord.config, max_candidates=CAP)
    # Workers join first: their arrival kicks a pass, and none of theirs may arrive after the admission.
    await workers(nursery, m, "w1", memory="256MiB")
    await rpc(m, "upsert_tenant_quota", quota(admission_policy=cp.AdmissionPolicy.QUEUE))
    resp = await rpc(m, "admit_dataset", admission(days=4, regions=("eu", "us")))  # 8 x 16 MiB: all fit
    n = len(resp.epochs.epochs)
    assert n == 8 > CAP and resp.status == cp.AdmitDatasetResponseStatus.ACCEPTED

    await eventually(lambda: sorted(states(m).values()), until=lambda s: s == ["READY"] * n, timeout=10,
                     what=f"every epoch READY (none stranded past max_candidates={CAP})")
