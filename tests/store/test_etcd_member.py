"""The embedded etcd member: validation, version refusal, supervision, restarts, parent death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import trio
from tests.support.etcd import EtcdServer, member_config

from leibrix.store._etcd import EtcdClient, EtcdUnavailable
from leibrix.store._member import (
    MEMBER_HEADROOM,
    EtcdBinaryError,
    MemberFailed,
    Timings,
    UnsafeEtcdVersion,
    check_etcd_version,
    find_etcd_binary,
    is_known_bad,
    parse_etcd_version,
    parse_initial_cluster,
    run_member,
)
from leibrix.store._ports import free_port_url
from leibrix.store._writer import TxnLimits

ETCD = find_etcd_binary()


def _alive(pid: int) -> bool:
    """True if ``pid`` runs (a zombie waiting for init to reap it counts as dead)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _script(path: Path, body: str) -> str:
    path.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    path.chmod(0o755)
    return str(path)


# -- --initial-cluster ------------------------------------------------------------


def test_parse_initial_cluster_keeps_order() -> None:
    text = "m1=http://10.0.0.1:2380, m2=http://10.0.0.2:2380,m3=https://h3:2380"
    assert list(parse_initial_cluster(text).items()) == [
        ("m1", "http://10.0.0.1:2380"),
        ("m2", "http://10.0.0.2:2380"),
        ("m3", "https://h3:2380"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "initial-cluster is empty"),
        ("m1=http://a:1,,m2=http://b:1", "entry 2 is empty"),
        ("m1http://a:1", "entry 1 'm1http://a:1': expected name=peerURL"),
        ("=http://a:1", "member name is empty"),
        ("m 1=http://a:1", "member name may only use"),
        ("m1=http://a:1,m1=http://b:1", "member name 'm1' appears twice"),
        ("m1=a:1", r"entry 1 \(m1\) peer URL 'a:1': expected http://host:port"),
        ("m1=http://a", "expected http://host:port"),
        ("m1=http://a:99999", "port is not a number"),
        ("m1=http://a:1/path", "must not have a path"),
        ("m1=http://a:1,m2=http://a:1", "also used by 'm1'"),
    ],
)
def test_parse_initial_cluster_errors_name_the_entry(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_initial_cluster(text)


def test_member_config_checks_itself_against_initial_cluster(tmp_path: Path) -> None:
    cluster = parse_initial_cluster("a=http://127.0.0.1:1001,b=http://127.0.0.1:1002")
    with pytest.raises(ValueError, match="does not name this member 'c'"):
        member_config(tmp_path, "c", peer_url="http://127.0.0.1:1003", initial_cluster=cluster)
    with pytest.raises(ValueError, match="gives member 'a' peer URL http://127.0.0.1:1001"):
        member_config(tmp_path, "a", peer_url="http://127.0.0.1:9999", initial_cluster=cluster)
    with pytest.raises(ValueError, match="client URL"):
        member_config(tmp_path, "a", client_url="127.0.0.1:2379")
    with pytest.raises(ValueError, match="election_ms"):
        Timings(heartbeat_ms=100, election_ms=400)


def test_command_bootstraps_only_an_empty_data_dir(tmp_path: Path) -> None:
    cfg = member_config(tmp_path)
    assert "--initial-cluster-state=new" in cfg.command(ETCD)
    (cfg.data_dir / "member").mkdir(parents=True)
    assert not any(a.startswith("--initial-cluster") for a in cfg.command(ETCD))


def test_member_accepts_headroom_over_the_writers_limits(tmp_path: Path) -> None:
    cfg = member_config(tmp_path, txn_limits=TxnLimits(max_ops=100, max_request_bytes=1_000_000))
    assert f"--max-txn-ops={100 * MEMBER_HEADROOM}" in cfg.command(ETCD)
    assert f"--max-request-bytes={1_000_000 * MEMBER_HEADROOM}" in cfg.command(ETCD)
    on_defaults = member_config(tmp_path, txn_limits=None).command(ETCD)
    assert not any(a.startswith(("--max-txn-ops", "--max-request-bytes")) for a in on_defaults)


# -- binary and version -------------------------------------------------------------


@pytest.mark.parametrize(
    ("output", "version"),
    [
        ("etcd Version: 3.4.23\nGit SHA: x\n", (3, 4, 23)),
        ("etcd Version: v3.5.12\n", (3, 5, 12)),
    ],
)
def test_parse_etcd_version(output: str, version: tuple[int, int, int]) -> None:
    assert parse_etcd_version(output) == version


@pytest.mark.parametrize("output", ["", "etcd version three", "Version: 3.4"])
def test_unreadable_version_is_an_error(output: str) -> None:
    with pytest.raises(EtcdBinaryError, match="cannot read the etcd version"):
        parse_etcd_version(output)


@pytest.mark.parametrize(
    ("version", "bad"),
    [
        ((3, 5, 0), True),
        ((3, 5, 2), True),
        ((3, 5, 5), True),
        ((3, 4, 20), True),
        ((3, 4, 21), True),
        ((3, 3, 27), True),
        ((3, 5, 6), False),
        ((3, 4, 22), False),
        ((3, 4, 23), False),
        ((3, 4, 19), False),
        ((3, 6, 0), False),
    ],
)
def test_known_bad_versions(version: tuple[int, int, int], bad: bool) -> None:
    assert (is_known_bad(version) is not None) is bad


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EtcdBinaryError, match="'/nope/etcd' not found"):
        find_etcd_binary("/nope/etcd")


async def test_bad_version_refused_unless_allowed(tmp_path: Path) -> None:
    fake = _script(tmp_path / "etcd", 'echo "etcd Version: 3.5.3"\n')
    with pytest.raises(UnsafeEtcdVersion, match=r"3\.5\.3 is a known-bad release.*--allow-unsafe-etcd"):
        await check_etcd_version(fake)
    assert await check_etcd_version(fake, allow_unsafe=True) == (3, 5, 3)
    assert (await check_etcd_version(ETCD))[:2] >= (3, 4)


async def test_run_member_refuses_bad_version_before_starting(tmp_path: Path) -> None:
    fake = _script(tmp_path / "etcd", 'echo "etcd Version: 3.4.20"\n')
    cfg = member_config(tmp_path, binary=fake)
    with pytest.raises(UnsafeEtcdVersion):
        await run_member(cfg)
    assert not cfg.data_dir.exists()


# -- supervision ----------------------------------------------------------------------


async def test_port_in_use_fails_fast_with_etcds_reason(tmp_path: Path) -> None:
    cfg = member_config(tmp_path)
    host, port = cfg.client_url.removeprefix("http://").split(":")
    with trio.socket.socket() as taken:
        await taken.bind((host, int(port)))
        taken.listen()
        with trio.fail_after(15), pytest.raises(MemberFailed, match="address already in use"):
            await run_member(cfg)


async def test_stop_terminates_and_reaps(etcd_server: EtcdServer) -> None:
    pid = etcd_server.pid
    assert pid is not None and _alive(pid)
    await etcd_server.stop()
    assert etcd_server.pid is None
    assert not os.path.exists(f"/proc/{pid}")  # reaped, not even a zombie


async def test_crash_is_restarted_on_the_same_data(etcd_server: EtcdServer, etcd: EtcdClient) -> None:
    await etcd.put("/kept", b"yes")
    first = etcd_server.pid
    etcd_server.kill()
    with trio.fail_after(15):
        while etcd_server.pid in (None, first) or etcd_server.state.starts < 2:
            await trio.sleep(0.02)
        while True:
            try:
                kv = await etcd.get("/kept")
                break
            except EtcdUnavailable:
                await trio.sleep(0.05)
    assert kv is not None and kv.value == b"yes"
    assert "status -9" in (etcd_server.state.last_exit or "")


async def test_restart_after_stop_rejoins_existing_data(etcd_server: EtcdServer, etcd: EtcdClient) -> None:
    await etcd.put("/kept", b"across restarts")
    await etcd_server.stop()
    await etcd_server.start()
    with trio.fail_after(10):
        while True:
            try:
                kv = await etcd.get("/kept")
                break
            except EtcdUnavailable:
                await trio.sleep(0.05)
    assert kv is not None and kv.value == b"across restarts"


async def test_gives_up_after_repeated_crashes(tmp_path: Path, nursery: trio.Nursery) -> None:
    # Serves once, then every restart exits at once: the supervisor must give up.
    marker = tmp_path / "started-once"
    wrapper = _script(
        tmp_path / "flaky-etcd",
        f"""\
        if [ "$1" = "--version" ]; then exec {ETCD} --version; fi
        if [ -e {marker} ]; then echo "flaky: refusing to start again" >&2; exit 3; fi
        touch {marker}
        exec {ETCD} "$@"
        """,
    )
    server = EtcdServer(member_config(tmp_path, binary=wrapper, max_restarts=2), nursery)
    failure: list[BaseException] = []

    async def supervise(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            await run_member(server.cfg, state=server.state, task_status=task_status)
        except MemberFailed as exc:
            failure.append(exc)

    async with trio.open_nursery() as inner:
        await inner.start(supervise)
        server.kill()
    (exc,) = failure
    assert "gave up after 3 consecutive failures" in str(exc)
    assert "refusing to start again" in str(exc)
    assert server.state.starts == 3 and server.pid is None


@pytest.mark.parametrize(
    "linger",
    [0, pytest.param(12, marks=pytest.mark.slow, id="after-trio-worker-threads-retire")],
)
async def test_member_dies_with_its_parent_even_on_sigkill(tmp_path: Path, linger: float) -> None:
    """PR_SET_PDEATHSIG: kill -9 the python process that started etcd; etcd must die too.

    With ``linger`` the parent first outlives Trio's idle worker threads
    (10 s): the signal follows the *thread* that forked, so forking from a
    worker thread would kill etcd too early; the member must still be alive.
    """
    cfg = member_config(tmp_path)
    program = textwrap.dedent(f"""\
        import sys, trio
        from pathlib import Path
        from leibrix.store._member import MemberConfig, MemberState, TEST_TIMINGS, run_member

        async def main():
            cfg = MemberConfig(name="p", data_dir=Path({str(cfg.data_dir)!r}), client_url={cfg.client_url!r},
                               peer_url={cfg.peer_url!r}, timings=TEST_TIMINGS)
            state = MemberState()
            async with trio.open_nursery() as n:
                await n.start(lambda task_status: run_member(cfg, state=state, task_status=task_status))
                print(state.pid, flush=True)
                await trio.sleep({linger})
                print("still", state.pid, flush=True)
                await trio.sleep_forever()

        trio.run(main)
        """)
    parent = await trio.lowlevel.open_process(
        [sys.executable, "-c", program], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    etcd_pid = None
    try:
        with trio.fail_after(30):
            buffer = b""
            while buffer.count(b"\n") < 2:
                chunk = await parent.stdout.receive_some()
                assert chunk, "parent exited early"
                buffer += chunk
        etcd_pid = int(buffer.split(b"\n")[0])
        assert buffer.split(b"\n")[1] == f"still {etcd_pid}".encode()
        assert _alive(etcd_pid)
        parent.send_signal(signal.SIGKILL)
        await parent.wait()
        with trio.fail_after(5):
            while _alive(etcd_pid):
                await trio.sleep(0.02)
    finally:
        parent.kill()
        with trio.CancelScope(shield=True):
            await parent.wait()
        await parent.stdout.aclose()
        if etcd_pid is not None and _alive(etcd_pid):
            os.kill(etcd_pid, signal.SIGKILL)


async def test_three_member_cluster_survives_one_member(etcd_cluster) -> None:
    servers = await etcd_cluster(3)
    client = await EtcdClient.connect([servers[1].endpoint])
    try:
        members = await client.members()
        assert sorted(m.name for m in members) == ["m0", "m1", "m2"]
        await servers[0].stop()
        with trio.fail_after(10):
            while True:
                try:
                    await client.put("/still", b"quorum")
                    break
                except EtcdUnavailable:
                    await trio.sleep(0.05)
    finally:
        await client.aclose()


async def test_cluster_member_waits_for_late_peers(tmp_path: Path, nursery: trio.Nursery) -> None:
    """A member of a new 3-member cluster started alone waits (no failure) until its peers come."""
    peers = {name: free_port_url() for name in ("a", "b", "c")}
    servers = [
        EtcdServer(
            member_config(tmp_path, name, peer_url=url, initial_cluster=peers, start_timeout=0.5), nursery
        )
        for name, url in peers.items()
    ]
    try:
        first_up = trio.Event()

        async def start_first() -> None:
            await servers[0].start()
            first_up.set()

        nursery.start_soon(start_first)
        await trio.sleep(1.5)  # three times its start_timeout: a lone member would have failed
        assert not first_up.is_set() and servers[0].pid is not None and _alive(servers[0].pid)
        assert servers[0].state.starts == 1
        with trio.fail_after(20):
            async with trio.open_nursery() as late:
                for server in servers[1:]:
                    late.start_soon(server.start)
            await first_up.wait()
    finally:
        with trio.CancelScope(shield=True):
            for server in servers:
                await server.stop()


async def test_unwritable_location_is_a_clear_failure(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = member_config(blocker / "sub")  # data dir under a regular file
    with pytest.raises(MemberFailed, match="cannot prepare"):
        await run_member(cfg)
