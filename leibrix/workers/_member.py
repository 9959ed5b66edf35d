"""One worker as the leader knows it (:class:`Member`): built from a registration or a stored record.

A registration is checked here, field by field, before anything else looks
at it; each violation is an ``INVALID_ARGUMENT`` naming the field, and the
limits are this module's constants:

* the worker id (``register_event.worker.node_id``, else the envelope's
  ``worker_id``) matches :data:`WORKER_ID` (1 to :data:`MAX_WORKER_ID_CHARS`
  characters);
* ``addr`` has at most :data:`MAX_ADDR_CHARS` characters, ``software_version``
  at most :data:`MAX_VERSION_CHARS`;
* at most :data:`MAX_LABELS` labels, keys of 1 to :data:`MAX_LABEL_KEY_CHARS`
  characters, values of at most :data:`MAX_LABEL_VALUE_CHARS`;
* inventory entries' ids have at most :data:`MAX_ID_CHARS` characters;
* a capacity, when given, is positive and finite. A registration without one
  (the Rust worker sends none) gets :class:`~leibrix.workers._config.HubConfig`'s
  defaults, logged once per registration;
* a pool label (``pool``, else ``tenant_id``) names a known tenant
  (``NOT_FOUND`` otherwise).

**Certificate identity.** When the stream's connection carries a verified
client certificate (the master runs with ``--tls-client-ca``, so every
connection does), :func:`check_certificate` holds the registration to it, and
a mismatch is ``PERMISSION_DENIED`` naming what the certificate allows:

* the worker id must be named by the certificate: a SAN URI
  ``leibrix://worker/<id>``, a SAN DNS name equal to the id, or the subject's
  common name equal to the id;
* the pool follows the certificate's SAN URIs ``leibrix://tenant/<t>``: a
  certificate with none may join only the shared pool (no ``pool`` or
  ``tenant_id`` label); one with some may join only one of those tenants'
  pools, never the shared pool (a tenant's machine must not receive other
  tenants' data).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from leibrix.domain._errors import InvalidArgument, NotFound, PermissionDenied
from leibrix.domain._liveness import WState
from leibrix.wire._labels import ZONE, pool_of
from leibrix.wire._proto.records import control_plane_pb2 as pb
from leibrix.wire._proto.records import state_pb2
from leibrix.workers._config import HubConfig
from leibrix.workers._messages import clip

if TYPE_CHECKING:
    from leibrix.workers._session import Session

__all__ = [
    "MAX_ADDR_CHARS",
    "MAX_ID_CHARS",
    "MAX_LABELS",
    "MAX_LABEL_KEY_CHARS",
    "MAX_LABEL_VALUE_CHARS",
    "MAX_VERSION_CHARS",
    "MAX_WORKER_ID_CHARS",
    "TENANT_URI",
    "WORKER_ID",
    "WORKER_URI",
    "Member",
    "cert_identity",
    "check_certificate",
    "check_id",
    "member_from_record",
    "member_from_registration",
    "record_of",
]

log = logging.getLogger(__name__)

MAX_WORKER_ID_CHARS = 128
WORKER_ID = re.compile(rf"[A-Za-z0-9][A-Za-z0-9._:-]{{0,{MAX_WORKER_ID_CHARS - 1}}}")
MAX_ADDR_CHARS = 256
MAX_VERSION_CHARS = 128
MAX_LABELS = 32
MAX_LABEL_KEY_CHARS = 128
MAX_LABEL_VALUE_CHARS = 256
#: Longest tenant, dataset, epoch or plan id a worker may send (inventory, status reports).
MAX_ID_CHARS = 256
#: SAN URI prefixes a worker's client certificate uses to name its id and the tenant pools it may join.
WORKER_URI = "leibrix://worker/"
TENANT_URI = "leibrix://tenant/"


@dataclass(eq=False)
class Member:
    """What the leader knows about one worker beyond liveness (readable by the API)."""

    worker_id: str
    addr: str
    labels: dict[str, str]
    memory_bytes: int
    cpu_cores: float
    software_version: str = ""
    memory_used_bytes: int = 0
    loads_in_flight: int = 0
    last_seen_wall: float = 0.0
    registered_wall: float = 0.0
    persisted: WState | None = None
    session: Session | None = None

    @property
    def pool(self) -> str:
        """The tenant pool this worker serves ('' = shared): label ``pool``, else the Rust worker's ``tenant_id``."""
        return pool_of(self.labels)

    @property
    def zone(self) -> str:
        """Failure zone label ('' if none)."""
        return self.labels.get(ZONE, "")


def check_id(field: str, value: str, limit: int = MAX_ID_CHARS) -> None:
    """Raise InvalidArgument naming ``field`` if ``value`` is longer than ``limit`` characters."""
    if len(value) > limit:
        raise InvalidArgument(field, f"{clip(value)!r} has {len(value)} characters, more than {limit}")


def member_from_registration(msg: pb.EventStreamMessage, config: HubConfig,
                             pool_known: Callable[[str], bool] | None) -> Member:
    """Check a ``register_event`` (see the module doc) and return the member it describes."""
    reg = msg.register_event
    wid = reg.worker.node_id or msg.worker_id
    field = "register_event.worker.node_id"
    if not wid:
        raise InvalidArgument(field, "worker id is required")
    if not WORKER_ID.fullmatch(wid):
        raise InvalidArgument(field, f"{clip(wid)!r} must match {WORKER_ID.pattern}")
    check_id("register_event.worker.addr", reg.worker.addr, MAX_ADDR_CHARS)
    check_id("register_event.software_version", reg.software_version, MAX_VERSION_CHARS)
    labels = reg.worker.labels
    if len(labels) > MAX_LABELS:
        raise InvalidArgument("register_event.worker.labels", f"{len(labels)} labels, more than {MAX_LABELS}")
    for key, value in labels.items():
        if not key:
            raise InvalidArgument("register_event.worker.labels", "a label key is empty")
        check_id("register_event.worker.labels", key, MAX_LABEL_KEY_CHARS)
        check_id(f"register_event.worker.labels[{clip(key)!r}]", value, MAX_LABEL_VALUE_CHARS)
    for i, e in enumerate(reg.inventory):
        for name in ("tenant_id", "dataset_id", "epoch_id", "plan_id"):
            check_id(f"register_event.inventory[{i}].{name}", getattr(e, name))
    if reg.HasField("capacity"):
        mem, cpu = reg.capacity.memory_bytes, reg.capacity.cpu_cores
        if mem <= 0:
            raise InvalidArgument("register_event.capacity.memory_bytes", f"must be > 0, got {mem}")
        if not (cpu > 0 and math.isfinite(cpu)):
            raise InvalidArgument("register_event.capacity.cpu_cores", f"must be a finite number > 0, got {cpu}")
    else:
        mem, cpu = config.default_memory_bytes, config.default_cpu_cores
    m = Member(worker_id=wid, addr=reg.worker.addr, labels=dict(labels), memory_bytes=mem, cpu_cores=cpu,
               software_version=reg.software_version)
    if m.pool and pool_known is not None and not pool_known(m.pool):
        raise NotFound(f"register_event.worker.labels: pool {clip(m.pool)!r} names no known tenant")
    if not reg.HasField("capacity"):
        log.info("worker %s registered without a capacity: assuming %d memory bytes and %g CPU cores",
                 wid, mem, cpu)
    return m


def cert_identity(cert: Mapping[str, Any]) -> tuple[set[str], set[str]]:
    """(the worker ids, the tenant pools) a verified peer certificate (``getpeercert()``'s dict) names.

    Ids: SAN URIs ``leibrix://worker/<id>``, SAN DNS names and the subject's
    common names. Pools: SAN URIs ``leibrix://tenant/<t>``.
    """
    ids: set[str] = set()
    pools: set[str] = set()
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "URI" and value.startswith(WORKER_URI):
            ids.add(value[len(WORKER_URI):])
        elif kind == "URI" and value.startswith(TENANT_URI):
            pools.add(value[len(TENANT_URI):])
        elif kind == "DNS":
            ids.add(value)
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                ids.add(value)
    return ids, pools


def check_certificate(m: Member, cert: Mapping[str, Any]) -> None:
    """Raise PermissionDenied unless the peer certificate names ``m``'s id and allows its pool (module doc)."""
    ids, pools = cert_identity(cert)
    if m.worker_id not in ids:
        named = ", ".join(repr(clip(i, 64)) for i in sorted(ids)[:4]) or "no worker id"
        raise PermissionDenied(f"worker id {clip(m.worker_id)!r} is not named by the client certificate "
                               f"(it names {named}; expected SAN URI {WORKER_URI}<id>, a SAN DNS name or CN)")
    if m.pool and m.pool not in pools:
        allowed = ", ".join(repr(clip(p, 64)) for p in sorted(pools)[:4]) or "only the shared pool"
        raise PermissionDenied(f"pool {clip(m.pool)!r} is not allowed by the client certificate of worker "
                               f"{clip(m.worker_id)!r} (it allows {allowed}; SAN URI {TENANT_URI}<tenant>)")
    if not m.pool and pools:
        allowed = ", ".join(repr(clip(p, 64)) for p in sorted(pools)[:4])
        raise PermissionDenied(f"worker {clip(m.worker_id)!r} registered for the shared pool, but its client "
                               f"certificate allows only the pools of {allowed}: set the pool label")


def member_from_record(rec: state_pb2.WorkerRecord) -> Member:
    """The member a stored ``workers/<w>`` record describes (no session)."""
    return Member(
        worker_id=rec.worker.node_id, addr=rec.worker.addr, labels=dict(rec.worker.labels),
        memory_bytes=rec.capacity.memory_bytes, cpu_cores=rec.capacity.cpu_cores,
        software_version=rec.software_version,
    )


def record_of(m: Member, state: WState) -> state_pb2.WorkerRecord:
    """The ``workers/<w>`` record of ``m`` in ``state``."""
    rec = state_pb2.WorkerRecord(software_version=m.software_version, state=int(state))
    rec.worker.node_id, rec.worker.addr = m.worker_id, m.addr
    rec.worker.labels.update(m.labels)
    rec.capacity.memory_bytes, rec.capacity.cpu_cores = m.memory_bytes, m.cpu_cores
    rec.registered_at.FromSeconds(int(m.registered_wall or time.time()))
    return rec
