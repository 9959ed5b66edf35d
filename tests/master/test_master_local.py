"""``leibrix local`` and ``leibrix status`` as an operator runs them (real processes end to end)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import trio

from tests.master.test_master_process import children, wait_gone


async def test_leibrix_local_serves_status_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "local.out"
    with open(out, "wb") as sink:
        local = await trio.lowlevel.open_process(
            [sys.executable, "-m", "leibrix", "local", "--data-dir", str(tmp_path / "data"), "--free-ports"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        with trio.fail_after(60):
            while "Ctrl-C stops the cluster." not in out.read_text():
                assert local.returncode is None, out.read_text()
                await trio.sleep(0.05)
        text = out.read_text()
        grpc_addr = re.search(r"leibrix status --master (\S+)", text).group(1)  # type: ignore[union-attr]
        assert "/metrics" in text and "/healthz" in text
        status = await trio.run_process(
            [sys.executable, "-m", "leibrix", "status", "--master", grpc_addr], capture_stdout=True, check=False
        )
        table = status.stdout.decode()
        assert status.returncode == 0, table
        assert "LEADER" in table and "healthy" in table and "m1" in table
        # Children of any thread (trio spawns processes from a worker thread).
        child_pids = [
            int(p) for task in Path(f"/proc/{local.pid}/task").iterdir() for p in (task / "children").read_text().split()
        ]
        assert len(child_pids) == 4  # the master and the three sample workers
        local.send_signal(signal.SIGINT)
        with trio.fail_after(10):
            assert await local.wait() == 0
        assert all(not Path(f"/proc/{pid}").exists() for pid in child_pids)
        assert (tmp_path / "data" / "m1" / "etcd" / "member").is_dir()
    finally:
        if local.returncode is None:
            local.kill()
            await local.wait()


async def test_status_against_nothing_is_a_clear_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused
        port = sock.getsockname()[1]
        result = await trio.run_process(
            [sys.executable, "-m", "leibrix", "status", "--master", f"127.0.0.1:{port}", "--timeout", "2"],
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 1
    assert result.stderr.decode().startswith(f"leibrix status: error: cannot reach a master at 127.0.0.1:{port}")


LAUNCHER = """
import sys, trio
from pathlib import Path
from leibrix.store._member import TEST_TIMINGS
from leibrix.cli._local import LocalCluster

async def main():
    cluster = LocalCluster(Path(sys.argv[1]), 1, timings=TEST_TIMINGS)
    await cluster.start_all()
    print(cluster.processes["m1"].pid, flush=True)
    await trio.sleep_forever()

trio.run(main)
"""


async def test_masters_do_not_outlive_a_killed_launcher(tmp_path: Path) -> None:
    launcher = await trio.lowlevel.open_process(
        [sys.executable, "-c", LAUNCHER, str(tmp_path)], stdout=subprocess.PIPE
    )
    try:
        assert launcher.stdout is not None
        with trio.fail_after(60):
            line = await launcher.stdout.receive_some()
        master_pid = int(line.split()[0])
        pids = [master_pid, *children(master_pid)]  # the master and its etcd member
        assert len(pids) == 2
    finally:
        launcher.kill()  # no cleanup runs in the launcher
        await launcher.wait()
        await launcher.stdout.aclose()  # type: ignore[union-attr]
    for pid in pids:  # the master gets SIGTERM, shuts down, and takes its member with it
        await wait_gone(pid)


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children of any of its threads, recursively)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except FileNotFoundError:
        return found
    for task in tasks:
        try:
            kids = [int(p) for p in (task / "children").read_text().split()]
        except FileNotFoundError:
            continue
        for kid in kids:
            found += [kid, *_descendants(kid)]
    return found


async def test_leibrix_local_starts_workers_loads_the_sample_and_reaps_everything(tmp_path: Path) -> None:
    out = tmp_path / "local.out"
    with open(out, "wb") as sink:
        local = await trio.lowlevel.open_process(
            [sys.executable, "-m", "leibrix", "local", "--tmp", "--free-ports"], stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        with trio.fail_after(45):
            while "Ctrl-C stops the cluster." not in out.read_text():
                assert local.returncode is None, out.read_text()
                await trio.sleep(0.05)
        text = out.read_text()
        epochs = re.findall(r"epoch (\S+): (\S+) on (\S+)", text)
        assert len(epochs) == 3, text
        for _, state, replicas in epochs:
            assert state == "READY", text
            assert len(replicas.split(",")) == 2, text  # replication 2
        assert "sample not fully loaded" not in text and "placeholder" in text
        assert re.search(r"leibrix status --master 127\.0\.0\.1:\d+", text)
        direct = [int(p) for task in Path(f"/proc/{local.pid}/task").iterdir() for p in (task / "children").read_text().split()]
        assert len(direct) == 4, text  # one master, three workers
        pids = _descendants(local.pid)  # ... and the master's etcd member
        assert len(pids) == 5, pids
        local.send_signal(signal.SIGINT)
        with trio.fail_after(15):
            assert await local.wait() == 0, out.read_text()
        for pid in pids:
            await wait_gone(pid)
    finally:
        if local.returncode is None:
            local.kill()
            await local.wait()


async def test_leibrix_local_takes_free_ports_where_the_defaults_are_taken(tmp_path: Path) -> None:
    """A host's own etcd on 2379 (Debian starts one) and other listeners on the layout's ports: moved, said so."""
    defaults = {"gRPC": 50051, "HTTP": 8081, "etcd client": 2379, "etcd peer": 2380}
    held: list[socket.socket] = []
    try:
        for port in defaults.values():
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("127.0.0.1", port))
                sock.listen()
            except OSError:
                sock.close()  # another program already holds it: just as busy
                continue
            held.append(sock)
        out = tmp_path / "local.out"
        with open(out, "wb") as sink:
            local = await trio.lowlevel.open_process(
                [sys.executable, "-m", "leibrix", "local", "--tmp"], stdout=sink, stderr=subprocess.STDOUT
            )
        try:
            with trio.fail_after(60):
                while "Ctrl-C stops the cluster." not in out.read_text():
                    assert local.returncode is None, out.read_text()
                    await trio.sleep(0.05)
            text = out.read_text()
            for what, port in defaults.items():
                assert re.search(rf"m1 {what}: 127\.0\.0\.1:{port} is in use by another program, "
                                 rf"using 127\.0\.0\.1:\d+ instead", text), text
                summary = text.split("Leibrix local cluster")[1]
                assert not re.search(rf"127\.0\.0\.1:{port}\b", summary), text
            grpc_addr = re.search(r"leibrix status --master (\S+)", text).group(1)  # type: ignore[union-attr]
            assert grpc_addr != "127.0.0.1:50051"
            status = await trio.run_process(
                [sys.executable, "-m", "leibrix", "status", "--master", grpc_addr], capture_stdout=True, check=False
            )
            assert status.returncode == 0 and "LEADER" in status.stdout.decode()
            local.send_signal(signal.SIGINT)
            with trio.fail_after(15):
                assert await local.wait() == 0, out.read_text()
        finally:
            if local.returncode is None:
                local.kill()
                await local.wait()
    finally:
        for sock in held:
            sock.close()
