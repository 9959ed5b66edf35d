"""``leibrix local`` and ``leibrix status`` as an operator runs them (real processes end to end), and the sample
data ``leibrix local`` writes and admits (real Iceberg and SQLite tables, planned by the real connectors)."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sqlite3
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import trio

from leibrix.cli import _sample
from leibrix.domain._validation import validate_admission
from leibrix.sources import plan_admission
from tests.master.test_master_process import children, wait_gone

#: Bound on ``leibrix local`` printing its summary: writing the sample, then planning and loading its 42 epochs twice.
SUMMARY_TIMEOUT = 120


def test_the_sample_is_written_once_and_every_epoch_plans_from_its_real_tables(tmp_path: Path) -> None:
    today = datetime(2026, 11, 27, 15, 30, tzinfo=timezone.utc)
    sample, created = _sample.ensure(tmp_path, today=today)
    assert created and sample.first_day == datetime(2026, 11, 20, tzinfo=timezone.utc) and sample.days == 7
    assert sample.iceberg_uri == f"sqlite:///{tmp_path / 'sample' / 'catalog.db'}"
    assert sample.jdbc_uri == f"jdbc:sqlite:{tmp_path / 'sample' / 'shop.db'}"
    assert sample.events == 7 * _sample.EVENTS_PER_DAY and sample.orders == 7 * _sample.ORDERS_PER_DAY
    with sqlite3.connect(tmp_path / "sample" / "shop.db") as db:
        assert db.execute("SELECT count(*), min(ts), max(ts) FROM orders").fetchone()[0] == sample.orders
    events, orders = _sample.admissions(sample, "demo", replication_factor=2)
    assert (events.source.catalog.iceberg.uri, events.source.database, events.source.table) == (
        sample.iceberg_uri, "sample", "events")
    assert (orders.source.catalog.jdbc.uri, orders.source.catalog.jdbc.driver, orders.source.table) == (
        sample.jdbc_uri, "org.sqlite.JDBC", "orders")
    for request, total in ((events, sample.events), (orders, sample.orders)):
        plan = plan_admission(validate_admission(request))
        assert len(plan.epochs) == 7 * 3  # a day per region
        assert all(e.rows > 0 and e.rows_exact for e in plan.epochs.values())
        assert sum(e.rows for e in plan.epochs.values()) == total
        assert [f.name for f in plan.schema][:3] == (["event_id", "ts", "region"] if request is events
                                                     else ["order_id", "ts", "region"])
    # Iceberg: one file per day and region (day(ts), identity(region)), so each epoch reads exactly one file
    assert all(len(e.read.files) == 1 for e in plan_admission(validate_admission(events)).epochs.values())

    again, created = _sample.ensure(tmp_path, today=today + timedelta(days=30))
    assert not created and again == sample  # reused, days included
    (tmp_path / "sample" / "sample.json").unlink()  # an incomplete sample is written again
    rebuilt, created = _sample.ensure(tmp_path, today=today)
    assert created and rebuilt.events == sample.events and (tmp_path / "sample" / "sample.json").is_file()


async def test_leibrix_local_serves_status_and_stops_everything_on_ctrl_c(tmp_path: Path) -> None:
    out = tmp_path / "local.out"
    with open(out, "wb") as sink:
        local = await trio.lowlevel.open_process(
            [sys.executable, "-m", "leibrix", "local", "--data-dir", str(tmp_path / "data"), "--free-ports"],
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        with trio.fail_after(SUMMARY_TIMEOUT):
            while "Ctrl-C stops the cluster." not in out.read_text():
                assert local.returncode is None, out.read_text()
                await trio.sleep(0.05)
        text = out.read_text()
        grpc_addr = re.search(r"leibrix status --master (\S+)", text).group(1)  # type: ignore[union-attr]
        assert "/metrics" in text and "/healthz" in text
        sample = tmp_path / "data" / "sample"
        assert f"Iceberg sqlite:///{sample / 'catalog.db'} table sample.events" in text, text
        assert f"JDBC jdbc:sqlite:{sample / 'shop.db'} table orders" in text, text
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
from leibrix.cli._cluster import LocalCluster

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
        with trio.fail_after(SUMMARY_TIMEOUT):
            while "Ctrl-C stops the cluster." not in out.read_text():
                assert local.returncode is None, out.read_text()
                await trio.sleep(0.05)
        text = out.read_text()
        epochs = re.findall(r"(events|orders) epoch (\S+): (\S+) on (\S+)", text)
        assert len(epochs) == 2 * 7 * 3, text  # two datasets, a day per region
        for _, _, state, replicas in epochs:
            assert state == "READY", text
            # replication 2; a third copy shows while rebalancing moves one make-before-break onto the idle worker
            assert len(set(replicas.split(","))) in (2, 3), text
        assert "sample not fully loaded" not in text and "invalid" not in text, text
        assert re.search(r"leibrix status --master 127\.0\.0\.1:\d+", text)
        # the printed query runs against the loaded epochs and counts every row of the Iceberg table
        (query,) = re.findall(r"^Query:\s+leibrix query (.*)$", text, re.M)
        args = re.findall(r'"[^"]*"|\S+', query)
        result = await trio.run_process([sys.executable, "-m", "leibrix", "query", *(a.strip('"') for a in args),
                                         "-o", "json"], capture_stdout=True, capture_stderr=True, check=False)
        assert result.returncode == 0, result.stderr.decode()
        rows = [json.loads(line) for line in result.stdout.decode().splitlines()]  # one object per line
        assert sorted(r["region"] for r in rows) == ["apac", "eu", "us"]
        assert sum(r["n"] for r in rows) == 7 * _sample.EVENTS_PER_DAY
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


async def test_a_port_taken_between_choosing_and_binding_it_is_replaced(tmp_path: Path) -> None:
    """Another program binds a chosen port before the master does: the master is started again on a free one."""
    from dataclasses import replace

    from leibrix.cli._cluster import LocalCluster
    from leibrix.store._member import TEST_TIMINGS

    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    taken = f"127.0.0.1:{squatter.getsockname()[1]}"
    try:
        async with LocalCluster(tmp_path, 1, timings=TEST_TIMINGS, lease_ttl=1) as cluster:
            cluster.specs["m1"] = replace(cluster.specs["m1"], grpc=taken)  # as if taken after it was chosen
            await cluster.start_all()
            assert cluster.specs["m1"].grpc != taken
            assert len(cluster.moved) == 1 and f"m1 gRPC: {taken} was taken" in cluster.moved[0]
            assert f"--grpc-listen {taken} is already in use" in cluster.specs["m1"].log_path.read_text()
    finally:
        squatter.close()
