"""Worker query addresses from the mirrored ``workers/`` records, the same on every master."""

from __future__ import annotations

from leibrix.state._workers import WorkerAddresses
from leibrix.store._store import Keys, Mirror
from leibrix.wire._proto.records import state_pb2


def _record(node_id: str, addr: str, **labels: str) -> bytes:
    rec = state_pb2.WorkerRecord()
    rec.worker.node_id, rec.worker.addr = node_id, addr
    rec.worker.labels.update(labels)
    return rec.SerializeToString()


async def test_addresses_prefer_the_flight_label_and_never_name_a_master(etcd, nursery) -> None:
    keys = Keys("addr")
    await etcd.put(keys.master("m1"), state_pb2.MasterRecord(id="m1", grpc_addr="10.0.0.1:50051").SerializeToString())
    await etcd.put(keys.worker("plain"), _record("plain", "10.0.0.7:8815"))
    await etcd.put(keys.worker("flight"), _record("flight", "10.0.0.8:9000", flight_addr="10.0.0.8:8815"))
    await etcd.put(keys.worker("rust"), _record("rust", "10.0.0.1:50051"))  # registered the master's address
    mirror = Mirror(etcd, keys)
    addresses = WorkerAddresses(mirror.table(Keys.WORKERS, state_pb2.WorkerRecord.FromString),
                                mirror.table(Keys.MASTERS, state_pb2.MasterRecord.FromString))
    await nursery.start(mirror.run)
    assert addresses.addr("plain") == "10.0.0.7:8815"
    assert addresses.addr("flight") == "10.0.0.8:8815"
    assert addresses.addr("rust") is None
    assert addresses.addr("unknown") is None
    revision = await etcd.put(keys.worker("rust"), _record("rust", "10.0.0.1:50051", flight_addr="10.0.0.9:8815"))
    await mirror.wait_for(revision)
    assert addresses.addr("rust") == "10.0.0.9:8815"
