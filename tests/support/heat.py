"""Harness for the heat-checkpoint and janitor tests: the heat checkpoints as stored in etcd.

* :func:`heat_records` lists ``heat/`` straight from etcd (the in-process
  masters of :mod:`tests.support.cluster`, whose key layout is ``KEYS``).
"""

from __future__ import annotations

from leibrix.store._etcd import EtcdClient
from leibrix.store._store import Keys
from leibrix.wire._proto.records import state_pb2
from tests.support.cluster import KEYS


async def heat_records(etcd: EtcdClient) -> dict[str, tuple[state_pb2.HeatRecord, int]]:
    """``"t/d/e"`` -> (stored ``HeatRecord``, mod revision), read from etcd."""
    prefix = KEYS.root + Keys.HEAT
    kvs, _ = await etcd.get_prefix(prefix)
    return {kv.key[len(prefix):]: (state_pb2.HeatRecord.FromString(kv.value), kv.mod_revision) for kv in kvs}
