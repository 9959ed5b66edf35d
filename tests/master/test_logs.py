"""``--log-format json``: a real master and worker (child processes) write one JSON object per line, lines
about a worker or an epoch carry it as fields, and heartbeats write no lines (state transitions do)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from leibrix.store._ports import free_hostport
from leibrix.worker._cmd import worker_command
from tests.support.admission import admission, quota, rpc
from tests.support.poll import eventually

HEARTBEAT_S = 0.2


def _lines(path: Path) -> list[dict[str, Any]]:
    """Every line of ``path`` parsed as JSON (a line that is not JSON fails the test)."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        entry = json.loads(line)  # raises on any non-JSON line
        assert isinstance(entry, dict), f"{path.name}:{n} is not a JSON object: {line}"
        assert {"ts", "level", "logger", "msg"} <= entry.keys(), f"{path.name}:{n}: {line}"
        out.append(entry)
    return out


async def _spawn(nursery: trio.Nursery, cmd: list[str], log: Path) -> trio.Process:
    handle = open(log, "wb")

    async def run(task_status: trio.TaskStatus[trio.Process]) -> None:
        proc = await trio.lowlevel.open_process(cmd, stdout=handle, stderr=subprocess.STDOUT)
        try:
            task_status.started(proc)
            await proc.wait()
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            with trio.CancelScope(shield=True):
                await proc.wait()
            handle.close()

    return await nursery.start(run)


async def test_json_lines_with_fields_and_no_line_per_heartbeat(etcd_server: Any, nursery: trio.Nursery,
                                                                 tmp_path: Path) -> None:
    grpc = free_hostport()
    master_log, worker_log = tmp_path / "master.log", tmp_path / "worker.log"
    master = await _spawn(nursery, [
        sys.executable, "-m", "leibrix", "master", "--name=m1", "--cluster=logs", f"--grpc-listen={grpc}",
        f"--http-listen={free_hostport()}", f"--etcd-endpoints={etcd_server.endpoint}", "--lease-ttl=1",
        "--log-format=json", "--log-level=info", f"--worker-heartbeat-interval={HEARTBEAT_S}",
    ], master_log)
    worker = await _spawn(nursery, worker_command([grpc], "w1", memory="256MiB",
                                                  extra=("--log-format", "json", "--log-level", "info")), worker_log)

    def registered() -> list[dict[str, Any]]:
        return [e for e in _lines(master_log) if e.get("worker") == "w1" and "registered" in e["msg"]]

    await eventually(registered, until=bool, timeout=30, what="the master logging w1's registration")
    await rpc(grpc, "upsert_tenant_quota", quota())  # w1 registered: m1 leads
    await rpc(grpc, "admit_dataset", admission(days=1))

    def ready() -> list[dict[str, Any]]:
        return [e for e in _lines(master_log) if e.get("to_state") == "READY"]

    [line] = await eventually(ready, until=bool, timeout=30, what="the epoch's READY transition logged")
    assert line["tenant"] == "acme" and line["dataset"] == "orders" and line["epoch"]
    assert line["from_state"] in ("LOADING", "VALIDATING") and line["logger"] == "leibrix.epochs"

    # many heartbeats later, the lines about w1 are the same: heartbeats are not logged
    about_w1 = [e for e in _lines(master_log) if e.get("worker") == "w1"]
    await trio.sleep(15 * HEARTBEAT_S)
    assert [e for e in _lines(master_log) if e.get("worker") == "w1"] == about_w1

    for proc in (worker, master):
        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(15):
            await proc.wait()
    master_lines, worker_lines = _lines(master_log), _lines(worker_log)  # every line, to the last, is JSON
    assert any(e["logger"] == "leibrix.master" and "shutting down" in e["msg"] for e in master_lines)
    assert worker_lines and all(e["level"] in ("debug", "info", "warning", "error") for e in worker_lines)
    assert any(e.get("term") and e["msg"].startswith("elected") for e in master_lines)
    # the worker's stream closing is one transition line (ACTIVE -> SUSPECT), with the worker field
    assert [e["msg"] for e in master_lines if e.get("worker") == "w1" and "SUSPECT" in e["msg"]] == [
        "worker w1: ACTIVE -> SUSPECT"]
