"""One ``leibrix master`` process with its embedded etcd: start, serve, stop, restart, crash, bad config.

Every master here is a real subprocess (``python -m leibrix master``) started
through :func:`tests.support.cluster.local_cluster`, which stops and reaps it at the
end of the test; the etcd member is the master's own child.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from leibrix.client._call import call
from leibrix.store._etcd import EtcdClient, EtcdUnavailable
from leibrix.store._ports import free_port_url
from leibrix.wire._proto import leibrix_cp as cp
from leibrix.wire._proto.records import state_pb2
from tests.support.cluster import LOCAL_LEADER_KEY, local_cluster, written_leader
from tests.support.poll import eventually

LEADER_KEY = LOCAL_LEADER_KEY


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (the master's etcd member)."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def gone(pid: int) -> bool:
    """True once ``pid`` no longer runs (absent, or a zombie waiting for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def wait_gone(pid: int, timeout: float = 5.0) -> None:
    await eventually(lambda: gone(pid), timeout=timeout, what=f"process {pid} gone")


async def leader_record(etcd: EtcdClient, *, min_version: int = 2) -> tuple[state_pb2.MasterRecord, int]:
    """The leader's record and token once it has made a fenced write (version >= 2: a proclaim)."""
    return await written_leader(etcd, min_version=min_version)


async def test_single_master_elects_itself_serves_and_exits_cleanly_on_sigterm(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, 1, lease_ttl=None) as cluster:
        master = cluster.processes["m1"]
        (member_pid,) = children(master.pid)
        etcd = await EtcdClient.connect(cluster.etcd_endpoints)
        try:
            record, token = await leader_record(etcd)
            assert record.id == "m1" and record.grpc_addr == cluster.specs["m1"].grpc
            status, _ = await call(cluster.specs["m1"].grpc, lambda s: s.get_cluster_status(cp.GetClusterStatusRequest()))
            assert status.leader.id == "m1" and status.term == token and status.healthy
            assert [m.id for m in status.masters] == ["m1"]
            assert [e.name for e in status.etcd_members] == ["m1"]
            answer = await trio.to_thread.run_sync(cluster.healthz, "m1")
            assert answer is not None and answer[0] == 200 and b'"is_leader": true' in answer[1]
        finally:
            await etcd.aclose()
        started = trio.current_time()
        assert await cluster.stop("m1") == 0
        assert trio.current_time() - started < 5.0
        await wait_gone(member_pid)


async def test_restart_on_the_same_data_dir_keeps_state(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, 1, lease_ttl=None) as cluster:
        etcd = await EtcdClient.connect(cluster.etcd_endpoints)
        try:
            _, first_token = await leader_record(etcd)
            await etcd.put("/leibrix/local/tenants/kept", b"state written before the restart")
        finally:
            await etcd.aclose()
        assert await cluster.stop("m1") == 0

        await cluster.start_all()
        etcd = await EtcdClient.connect(cluster.etcd_endpoints)
        try:
            kept = await etcd.get("/leibrix/local/tenants/kept")
            assert kept is not None and kept.value == b"state written before the restart"
            record, second_token = await leader_record(etcd)
            assert record.id == "m1" and second_token > first_token
        finally:
            await etcd.aclose()


async def test_sigkill_of_the_master_takes_its_etcd_member_with_it(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, 1, lease_ttl=None) as cluster:
        master = cluster.processes["m1"]
        (member_pid,) = children(master.pid)
        cluster.signal("m1", signal.SIGKILL)
        assert await master.wait() == -signal.SIGKILL
        await wait_gone(member_pid)


def run_master(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    base = [
        "--grpc-listen", free_port_url().removeprefix("http://"),
        "--http-listen", free_port_url().removeprefix("http://"),
        "--etcd-client-url", free_port_url(),
        "--etcd-peer-url", free_port_url(),
    ]
    return subprocess.run(
        [sys.executable, "-m", "leibrix", "master", *base, *args],
        capture_output=True, text=True, timeout=timeout, check=False,
    )


def test_port_in_use_is_refused_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_master("--data-dir", str(tmp_path / "d"), "--grpc-listen", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert f"--grpc-listen 127.0.0.1:{port} is already in use" in result.stderr
    assert not (tmp_path / "d").exists()


def test_unusable_data_dir_is_refused(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("not a directory")
    result = run_master("--data-dir", str(a_file))
    assert result.returncode == 1 and "exists and is not a directory" in result.stderr
    result = run_master("--data-dir", str(a_file / "below"))
    assert result.returncode == 1 and "is not a directory" in result.stderr
    assert a_file.read_text() == "not a directory"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("m1", "expected name=peerURL"),
        ("m1=http://127.0.0.1:1,m1=http://127.0.0.1:2", "appears twice"),
        ("other=http://127.0.0.1:1", "does not name this member 'm1'"),
    ],
)
def test_bad_initial_cluster_is_a_config_error(tmp_path: Path, value: str, message: str) -> None:
    result = run_master("--name", "m1", "--data-dir", str(tmp_path / "d"), "--initial-cluster", value)
    assert result.returncode == 2
    assert result.stderr.startswith("leibrix master: error:") and message in result.stderr
    assert not (tmp_path / "d").exists()


def test_missing_or_unsafe_etcd_binary_is_refused(tmp_path: Path) -> None:
    result = run_master("--data-dir", str(tmp_path / "d"), "--etcd-binary", str(tmp_path / "no-such-etcd"))
    assert result.returncode == 1 and "not found" in result.stderr
    assert not (tmp_path / "d").exists()

    fake = tmp_path / "etcd-3.5.3"
    fake.write_text("#!/bin/sh\necho 'etcd Version: 3.5.3'\n")
    fake.chmod(0o755)
    result = run_master("--data-dir", str(tmp_path / "d"), "--etcd-binary", str(fake))
    assert result.returncode == 1 and "known-bad" in result.stderr and "--allow-unsafe-etcd" in result.stderr
    assert not (tmp_path / "d").exists()


async def test_a_crashed_etcd_member_is_restarted_and_the_master_leads_again(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, 1, lease_ttl=None) as cluster:
        master = cluster.processes["m1"]
        (member_pid,) = children(master.pid)
        etcd = await EtcdClient.connect(cluster.etcd_endpoints)
        try:
            await leader_record(etcd)
            kv = await etcd.get(LEADER_KEY)
            assert kv is not None
            os.kill(member_pid, signal.SIGKILL)  # the member, not the master
            await wait_gone(member_pid)

            async def leader_key() -> object:
                try:
                    return await etcd.get(LEADER_KEY)
                except EtcdUnavailable:
                    return None

            await eventually(leader_key, until=lambda now: now is not None and now.mod_revision > kv.mod_revision,
                             timeout=15, interval=0.05, what="the leader key rewritten after the member's restart")
            assert master.returncode is None
            assert children(master.pid) != [member_pid]
        finally:
            await etcd.aclose()


async def test_master_exits_nonzero_when_its_etcd_member_keeps_dying(tmp_path: Path) -> None:
    async with local_cluster(tmp_path, 1, lease_ttl=None, extra_args=("--etcd-max-restarts", "0")) as cluster:
        master = cluster.processes["m1"]
        (member_pid,) = children(master.pid)
        os.kill(member_pid, signal.SIGKILL)
        with trio.fail_after(10):
            assert await master.wait() == 1
        assert "leibrix master: error: etcd member 'm1'" in cluster.log_tail("m1")
