"""``leibrix ctl`` end to end: a real master on a real etcd, the CLI run as a real process.

Each command is checked in table and JSON output, with its exit status; the
dataset file round trip (``get -o yaml`` -> ``apply``) and ``--wait`` run
against real reference workers loading real epochs.

The example files in ``docs/examples`` are applied as a user would, against
real sources: the ``make run`` sample (:func:`leibrix.cli._sample.ensure`,
written once for this module in a temporary directory whose ``sample/`` stands
for the examples' ``data/sample``, holding the days around the examples'
2026-11-01 .. 03) and, for the StarRocks example, a real MariaDB (the same
MySQL protocol; the connector's generic path) holding ``web.sessions``.
"""

from __future__ import annotations

import json
import re
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest
import trio
import yaml

from leibrix.cli import _sample
from tests.support import databases
from tests.support.admission import leading, start_master, workers

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "docs" / "examples").glob("*.yaml"))


@dataclass(frozen=True)
class Sources:
    """Where the examples' sources really are for this module."""

    #: What ``data/sample`` in the examples becomes (``leibrix local``'s sample, written here).
    sample: Path
    #: Snapshot ids of ``sample.events``, oldest first (one append per day).
    snapshots: tuple[str, ...]
    #: ``host:port`` of the MariaDB holding ``web.sessions``, or ``None`` (the example keeps its frontend).
    starrocks: str | None = None


def _sample_sources(root: Path) -> Sources:
    from pyiceberg.catalog.sql import SqlCatalog

    # the 7 days before 2026-11-06: 2026-10-30 .. 2026-11-05, around the examples' days
    sample, _ = _sample.ensure(root, today=datetime(2026, 11, 6, tzinfo=timezone.utc))
    catalog = SqlCatalog("default", uri=sample.iceberg_uri)
    table = catalog.load_table(f"{sample.namespace}.{sample.events_table}")
    return Sources(Path(sample.directory), tuple(str(s.snapshot_id) for s in table.snapshots()))


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> Sources:
    """The ``make run`` sample under a temporary directory (written once for the module: a few seconds)."""
    return _sample_sources(tmp_path_factory.mktemp("ctl-data"))


@pytest.fixture(scope="module")
def mariadb() -> Iterator[databases.Server]:
    """A real MariaDB holding ``web.sessions`` (dt DATE, app, user_id, seconds): 3 sessions a day and app."""
    import pymysql

    with databases.running_mariadb() as server:
        conn = pymysql.connect(host=server.host, port=server.port, user=server.user, password=server.password,
                               autocommit=True)
        with conn.cursor() as cur:
            cur.execute("CREATE DATABASE web")
            cur.execute("CREATE TABLE web.sessions (id INT PRIMARY KEY, dt DATE NOT NULL, app VARCHAR(16) NOT NULL, "
                        "user_id BIGINT NOT NULL, seconds INT NOT NULL)")
            days = [date(2026, 10, 31) + timedelta(days=d) for d in range(4)]
            keys = [(day, app) for day in days for app in ("ios", "android", "web") for _ in range(3)]
            rows = [(n, day, app, 1000 + n, 30 * n) for n, (day, app) in enumerate(keys, 1)]
            cur.executemany("INSERT INTO web.sessions VALUES (%s, %s, %s, %s, %s)", rows)
        conn.close()
        yield server


def example(name: str, sources: Sources) -> str:
    """``docs/examples/NAME`` as applied here: the sample's paths, and the MariaDB's address when given.

    The StarRocks example's user (``leibrix``) is the MariaDB's; its password
    stays the example's ``${env:STARROCKS_PASSWORD}`` (set by the test).
    """
    text = (ROOT / "docs" / "examples" / name).read_text().replace("data/sample", str(sources.sample))
    if sources.starrocks is not None:
        text = text.replace("@starrocks-fe:9030/", f"@{sources.starrocks}/")
    return text


def examples(tmp: Path, sources: Sources) -> list[Path]:
    """Every example rewritten by :func:`example` into ``tmp`` (same file names)."""
    out = []
    for path in EXAMPLES:
        (tmp / path.name).write_text(example(path.name, sources))
        out.append(tmp / path.name)
    return out


async def ctl(*args: str, master: str | None = None, env: dict[str, str] | None = None,
              stdin: bytes = b"") -> tuple[int, str, str]:
    """Run ``python -m leibrix ctl ARGS`` to completion: (exit status, stdout, stderr)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LEIBRIX_")}
    base["LEIBRIX_CONFIG"] = "/nonexistent/leibrix-config.yaml"
    base.pop("COLUMNS", None)
    cmd = [sys.executable, "-m", "leibrix", "ctl", *args]
    if master:
        cmd += ["--master", master]
    proc = await trio.run_process(cmd, stdin=stdin, capture_stdout=True, capture_stderr=True, check=False,
                                  env={**base, **(env or {})}, cwd=ROOT)
    return proc.returncode, proc.stdout.decode(), proc.stderr.decode()


async def ok(*args: str, master: str) -> str:
    code, out, err = await ctl(*args, master=master)
    assert code == 0, (args, out, err)
    return out


def dead_addr() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{s.getsockname()[1]}"


async def test_help_and_version_are_plain_text() -> None:
    proc = await trio.run_process([sys.executable, "-m", "leibrix", "--version"], capture_stdout=True)
    from leibrix import __version__

    assert proc.stdout.decode().strip() == f"leibrix {__version__}"
    for args in (["--help"], ["ctl", "--help"], ["ctl", "datasets", "apply", "--help"],
                 ["ctl", "workers", "undrain", "--help"], ["ctl", "tenants", "set-quota", "--help"]):
        proc = await trio.run_process([sys.executable, "-m", "leibrix", *args], capture_stdout=True)
        text = proc.stdout.decode()
        assert "``" not in text and ":class:" not in text and ":func:" not in text, args
    assert "exit status:" in text and "3  not found" in text
    code, _, err = await ctl("tenants", "frobnicate")
    assert code == 2 and "invalid choice" in err


async def test_status_tenants_and_addresses(nursery, etcd_server, tmp_path) -> None:
    master = await start_master(nursery, etcd_server.endpoint)
    await leading(master)
    addr = master.config.grpc_listen

    out = await ok("status", master=addr)
    assert "healthy" in out and "m1" in out and "leader" in out
    status = json.loads(await ok("status", "-o", "json", master=addr))
    assert status["leader"]["id"] == "m1" and status["healthy"] is True

    # several masters: the unreachable one is skipped; none reachable = 4
    out = await ok("status", master=f"{dead_addr()},{addr}")
    assert "m1" in out
    code, _, err = await ctl("status", master=dead_addr())
    assert code == 4 and "no master reachable" in err

    # the address from the environment, then from the config file (no flags)
    code, out, _ = await ctl("status", env={"LEIBRIX_MASTER": addr})
    assert code == 0 and "m1" in out
    cfg = tmp_path / "config.yaml"
    cfg.write_text(f"master: [{dead_addr()}, {addr}]\ntimeout: 3\ntenant: acme\n")
    code, out, _ = await ctl("status", env={"LEIBRIX_CONFIG": str(cfg)})
    assert code == 0 and "m1" in out
    cfg.write_text("masters: x\n")
    code, _, err = await ctl("status", env={"LEIBRIX_CONFIG": str(cfg)})
    assert code == 2 and "unknown key 'masters'" in err

    # tenants: set-quota creates, then changes only the limits given
    out = await ok("tenants", "set-quota", "acme", "--max-datasets", "5", "--max-memory", "1GiB", master=addr)
    assert "created" in out
    await ok("tenants", "set-quota", "beta", "--policy", "QUEUE", master=addr)
    out = await ok("tenants", "set-quota", "acme", "--max-epochs", "100", master=addr)
    assert "updated" in out
    got = json.loads(await ok("tenants", "get", "acme", "-o", "json", master=addr))
    assert got["quota"]["max_datasets"] == 5 and got["quota"]["max_epochs"] == 100
    assert int(got["quota"]["max_memory_bytes"]) == 1 << 30

    table = await ok("tenants", "list", master=addr)
    lines = table.strip().splitlines()
    assert lines[0].split()[:3] == ["TENANT", "DATASETS", "EPOCHS"]
    assert any(line.split()[:2] == ["acme", "0/5"] for line in lines)
    assert all(len(line) <= 80 for line in lines) and "\x1b[" not in table
    listed = json.loads(await ok("tenants", "list", "-o", "json", "--sort-by", "tenant", master=addr))
    assert [t["quota"]["tenant_id"] for t in listed] == ["acme", "beta"]
    assert "QUEUE" in await ok("tenants", "list", "-o", "wide", "--tenant", "beta", master=addr)
    assert yaml.safe_load(await ok("tenants", "get", "beta", "-o", "yaml", master=addr))["quota"]["tenant_id"] == "beta"
    code, _, err = await ctl("tenants", "list", "--sort-by", "colour", master=addr)
    assert code == 2 and "no such column" in err

    code, _, err = await ctl("tenants", "get", "nobody", master=addr)
    assert code == 3 and "NOT_FOUND" in err
    code, _, err = await ctl("tenants", "set-quota", "acme", "--max-datasets", "-1", master=addr)
    assert code == 2 and "INVALID_ARGUMENT" in err
    out = await ok("tenants", "delete", "beta", master=addr)
    assert "deleted" in out
    code, _, _ = await ctl("tenants", "delete", "beta", master=addr)
    assert code == 3


async def test_datasets_files_epochs_and_round_trip(nursery, etcd_server, tmp_path, sources, mariadb,
                                                    monkeypatch) -> None:
    monkeypatch.setenv("STARROCKS_PASSWORD", mariadb.password)  # the master runs in this process
    sources = replace(sources, starrocks=f"{mariadb.host}:{mariadb.port}")
    master = await start_master(nursery, etcd_server.endpoint)
    await leading(master)
    addr = master.config.grpc_listen
    await ok("tenants", "set-quota", "acme", master=addr)

    # every example parses and applies to its real table; applying it again changes nothing
    files = examples(tmp_path, sources)
    for file in files:
        out = await ok("datasets", "apply", "-f", str(file), master=addr)
        assert "configured" in out and "admitted" in out, out
        out = await ok("datasets", "apply", "-f", str(file), master=addr)
        assert "unchanged" in out, out
    assert len(files) == 3

    listed = json.loads(await ok("datasets", "list", "-o", "json", master=addr))
    assert sorted(d["dataset"] for d in listed) == ["events", "orders", "sessions"]
    table = await ok("datasets", "list", "--tenant", "acme", "--sort-by", "dataset", master=addr)
    rows = [line.split() for line in table.strip().splitlines()[2:]]
    assert [r[0] for r in rows] == ["acme/events", "acme/orders", "acme/sessions"]
    assert rows[0][1:4] == ["iceberg", "sample.events", "-"]  # no version pinned: the current snapshot
    assert rows[1][1:3] == ["jdbc", "orders"]
    assert "0/4" in table  # events: 2 days x 2 regions, none READY without workers

    # round trip: get -o yaml is a file apply accepts, and applying it changes nothing
    for name in ("events", "orders", "sessions"):
        exported = await ok("datasets", "get", f"acme/{name}", "-o", "yaml", master=addr)
        path = tmp_path / f"{name}.yaml"
        path.write_text(exported)
        out = await ok("datasets", "apply", "-f", str(path), master=addr)
        if name != "sessions":  # these files have estimator hints, which the master does not report back
            assert "configured: admitted 0 new epoch(s) of 4" in out, out
        else:
            assert "unchanged" in out, out
        again = await ok("datasets", "get", f"acme/{name}", "-o", "yaml", master=addr)
        assert yaml.safe_load(again)["source"] == yaml.safe_load(exported)["source"]
    doc = yaml.safe_load((tmp_path / "events.yaml").read_text())
    assert doc["epoch_granularity"] == {"value": 1, "unit": "DAY"}
    assert yaml.safe_load((tmp_path / "orders.yaml").read_text())["epoch_granularity"] == {"value": 6, "unit": "HOUR"}
    assert doc["source"]["partition"]["dimensions"] == {"region": ["eu", "us"]}
    # JSON output of get is the same document (and apply reads .json files)
    (tmp_path / "events.json").write_text(await ok("datasets", "get", "events", "--tenant", "acme", "-o", "json",
                                                   master=addr))
    assert "unchanged" in await ok("datasets", "apply", "-f", str(tmp_path / "events.json"), master=addr)

    # a changed file is an update: a new version (an older snapshot, which still holds both days) refreshes every epoch
    changed = example("iceberg-events.yaml", sources).replace(
        "  table: events\n", f'  table: events\n  version: "{sources.snapshots[-2]}"\n')
    assert sources.snapshots[-2] in changed
    code, out, err = await ctl("datasets", "apply", "-f", "-", master=addr, stdin=changed.encode())
    assert code == 0 and "refreshed" in out, (out, err)

    # bad files are usage errors naming the key; unknown datasets are not found
    bad = tmp_path / "bad.yaml"
    bad.write_text("tenant: acme\ndataset: x\nsource: {iceberg: {uri: u}, table: t, partiton: {}}\n")
    code, _, err = await ctl("datasets", "apply", "-f", str(bad), master=addr)
    assert code == 2 and "source.partiton: unknown key" in err
    code, _, err = await ctl("datasets", "get", "acme/nope", master=addr)
    assert code == 3
    code, _, err = await ctl("datasets", "get", "orders", master=addr)
    assert code == 2 and "--tenant" in err

    # epochs
    epochs = json.loads(await ok("epochs", "list", "acme/orders", "-o", "json", master=addr))
    assert len(epochs) == 4 and all(e["state"] == "PENDING" for e in epochs)
    table = await ok("epochs", "list", "acme/orders", master=addr)
    assert table.splitlines()[0].split() == ["EPOCH", "STATE", "START", "DIMS", "REPLICAS"]
    first = epochs[0]["info"]["epoch_id"]
    out = await ok("epochs", "get", "acme/orders", first, master=addr)
    assert first in out and "PENDING" in out
    assert json.loads(await ok("epochs", "get", "acme/orders", first, "-o", "json",
                               master=addr))["info"]["epoch_id"] == first
    code, _, _ = await ctl("epochs", "get", "acme/orders", "0_000000", master=addr)
    assert code == 3
    out = await ok("epochs", "retire", "acme/orders", first, master=addr)
    assert "retired" in out
    states = {e["info"]["epoch_id"]: e["state"] for e in
              json.loads(await ok("epochs", "list", "acme/orders", "-o", "json", master=addr))}
    assert states[first] in ("RETIRING", "RETIRED")

    # routes: nothing READY yet
    out = await ok("routes", "resolve", "acme/events", master=addr)
    assert "No resources found" in out
    assert json.loads(await ok("routes", "resolve", "acme/events", "-o", "json", master=addr)) == []

    out = await ok("datasets", "drop", "acme/sessions", master=addr)
    assert "dropped" in out
    code, _, _ = await ctl("datasets", "drop", "acme/sessions", master=addr)
    assert code == 3

    # an inline password is redacted by the master, so refresh cannot send the stored request back: it says so
    inline = example("starrocks-sessions.yaml", sources).replace("${env:STARROCKS_PASSWORD}", mariadb.password) \
        .replace("dataset: sessions", "dataset: inline")
    code, out, err = await ctl("datasets", "apply", "-f", "-", master=addr, stdin=inline.encode())
    assert code == 0 and "configured" in out, (out, err)
    code, out, err = await ctl("datasets", "refresh", "acme/inline", master=addr)
    assert code == 2 and "inline password" in err and "datasets apply" in err, (out, err)
    assert mariadb.password not in err

    code, _, err = await ctl("tenants", "delete", "acme", master=addr)
    assert code == 1 and "FAILED_PRECONDITION" in err


async def test_wait_with_real_workers(nursery, etcd_server, tmp_path, sources) -> None:
    master = await start_master(nursery, etcd_server.endpoint)
    await leading(master)
    addr = master.config.grpc_listen
    await workers(nursery, master, "w1", "w2")
    await ok("tenants", "set-quota", "acme", master=addr)

    path = tmp_path / "iceberg-events.yaml"
    path.write_text(example(path.name, sources))
    out = await ok("datasets", "apply", "-f", str(path), "--wait", "--wait-timeout", "60", master=addr)
    assert "epochs READY 4/4" in out, out
    assert "\x1b[" not in out  # not a terminal: plain lines, no progress bar

    table = await ok("workers", "list", master=addr)
    assert table.splitlines()[0].split()[:4] == ["WORKER", "STATE", "ADDR", "REPLICAS"]
    listed = json.loads(await ok("workers", "list", "-o", "json", "--sort-by", "worker", master=addr))
    assert [w["worker_id"] for w in listed] == ["w1", "w2"]
    assert sum(w["replicas"] for w in listed) == 4
    assert "ACTIVE" in await ok("workers", "get", "w1", master=addr)
    code, _, _ = await ctl("workers", "get", "w9", master=addr)
    assert code == 3

    routes = json.loads(await ok("routes", "resolve", "acme/events", "--where", "region=eu", "-o", "json",
                                 master=addr))
    assert len(routes) == 2 and all(r["worker_ids"] for r in routes)
    out = await ok("routes", "resolve", "acme/events", "--from", "2026-11-02T00:00:00Z", master=addr)
    assert len(out.strip().splitlines()) == 2 + 2  # header, rule, 2 regions of the second day

    # refresh with --wait: new version (an older snapshot, still holding both days), every epoch reloaded
    older = sources.snapshots[-2]
    out = await ok("datasets", "refresh", "acme/events", "--version", older, "--wait", "--wait-timeout", "60",
                   master=addr)
    assert "refreshed" in out and "epochs READY 4/4" in out, out
    assert json.loads(await ok("datasets", "get", "acme/events", "-o", "json", master=addr))["source"]["version"] == older

    # drain w1 with --wait: its replicas move to w2; the progress reaches the total the drain started with (the
    # rebalancer may still move replicas until the drain begins, so that total is read from the drain itself)
    out = await ok("workers", "drain", "w1", "--wait", "--wait-timeout", "60", master=addr)
    total = re.search(r"draining: (\d+) replica\(s\) to move", out)
    assert total is not None, out
    assert f"replicas moved {total[1]}/{total[1]}" in out and "drained" in out, out
    w1 = json.loads(await ok("workers", "get", "w1", "-o", "json", master=addr))
    assert w1["state"] == "DRAINED" and w1["replicas"] == 0
    out = await ok("workers", "undrain", "w1", master=addr)
    assert out.startswith("worker w1 ") and "drained" not in out, out
    assert json.loads(await ok("workers", "get", "w1", "-o", "json", master=addr))["state"] != "DRAINED"


async def test_wait_reports_timeout(nursery, etcd_server, sources) -> None:
    """No worker can load: --wait gives up with exit 4 and says how far it got."""
    master = await start_master(nursery, etcd_server.endpoint)
    await leading(master)
    addr = master.config.grpc_listen
    await ok("tenants", "set-quota", "acme", master=addr)
    code, out, err = await ctl("datasets", "apply", "-f", "-", "--wait", "--wait-timeout", "2", master=addr,
                               stdin=example("jdbc-orders.yaml", sources).encode())
    assert code == 4 and "timed out after 2s: epochs READY 0/4" in err, (out, err)
    assert "epochs READY 0/4" in out


async def test_refresh_without_version_follows_the_current_snapshot(nursery, etcd_server) -> None:
    """``datasets refresh`` without ``--version`` re-admits the stored request unpinned: the master plans the
    test Iceberg table's current snapshot and reloads only the epoch whose files changed; ``--version`` still
    refreshes to a named snapshot."""
    from tests.support.admission import admission, rpc
    from tests.support.sample_source import SECOND_APPEND, sample_source

    master = await start_master(nursery, etcd_server.endpoint)
    await leading(master)
    addr = master.config.grpc_listen
    await ok("tenants", "set-quota", "acme", master=addr)
    first, *_, current = sample_source().versions
    # the day before the second append (its rows are in the first snapshot) and the day it starts (no file in
    # the first snapshot, written by the second append), pinned to the first snapshot
    await rpc(addr, "admit_dataset", admission(start=SECOND_APPEND - timedelta(days=1), days=2, version=str(first)))

    def epochs(listed: str) -> dict[str, str]:
        return {e["info"]["time_range"]["start_inclusive"][:10]: e["version"] for e in json.loads(listed)
                if e["state"] not in ("RETIRING", "RETIRED")}

    before = epochs(await ok("epochs", "list", "acme/orders", "-o", "json", master=addr))
    assert before == {"2027-12-31": str(first), "2028-01-01": str(first)}, before

    out = await ok("datasets", "refresh", "acme/orders", master=addr)
    assert "refreshed" in out and "admitted 1 new epoch(s) of 2 (refresh)" in out, out
    after = epochs(await ok("epochs", "list", "acme/orders", "-o", "json", master=addr))
    assert after["2028-01-01"] == str(current), after  # the changed epoch is planned at the current snapshot
    assert after["2027-12-31"] == str(first), after  # the unchanged one is kept, not reloaded
    got = json.loads(await ok("datasets", "get", "acme/orders", "-o", "json", master=addr))
    assert got["source"].get("version", "") == "", got["source"]  # unpinned: it follows the table from now on

    # nothing changed since: the same request again is no change, not a refresh
    out = await ok("datasets", "refresh", "acme/orders", master=addr)
    assert "unchanged" in out and "no change" in out, out

    # an explicit snapshot id is still a refresh to that snapshot; the current version again is refused
    out = await ok("datasets", "refresh", "acme/orders", "--version", str(first), master=addr)
    assert "refreshed" in out, out
    got = json.loads(await ok("datasets", "get", "acme/orders", "-o", "json", master=addr))
    assert got["source"]["version"] == str(first)
    code, _, err = await ctl("datasets", "refresh", "acme/orders", "--version", str(first), master=addr)
    assert code == 2 and "current version" in err, err


async def test_tokens_issue_list_and_revoke(nursery, etcd_server) -> None:
    """Admin-only token verbs against a master with authentication on; a revoked token stops working."""
    admin = "admin-" + "y" * 40
    master = await leading(await start_master(nursery, etcd_server.endpoint, admin_token=admin))
    addr = master.config.grpc_listen
    as_admin = {"LEIBRIX_TOKEN": admin}
    code, _, err = await ctl("tokens", "list", master=addr)
    assert code == 1 and "UNAUTHENTICATED" in err.upper(), err  # no token
    code, out, err = await ctl("tenants", "set-quota", "acme", master=addr, env=as_admin)
    assert code == 0, err
    code, out, err = await ctl("tokens", "issue", "acme", "--description", "ci", "-o", "json", master=addr,
                               env=as_admin)
    assert code == 0, err
    issued = json.loads(out)
    assert issued["token"] and issued["tenant_id"] == "acme" and issued["description"] == "ci"
    code, out, _ = await ctl("tokens", "list", "-o", "json", master=addr, env=as_admin)
    listed = json.loads(out)
    assert [t["token_id"] for t in listed if t.get("tenant_id") == "acme"] == [issued["token_id"]]
    assert issued["token"] not in out  # secrets are never listed
    as_tenant = {"LEIBRIX_TOKEN": issued["token"]}
    code, out, err = await ctl("tenants", "get", "acme", "-o", "json", master=addr, env=as_tenant)
    assert code == 0 and json.loads(out)["quota"]["tenant_id"] == "acme", err
    code, _, err = await ctl("tokens", "list", master=addr, env=as_tenant)
    assert code == 1 and "PERMISSION_DENIED" in err.upper(), err  # admin only
    code, out, err = await ctl("tokens", "revoke", issued["token_id"], master=addr, env=as_admin)
    assert code == 0, err
    code, _, err = await ctl("tenants", "get", "acme", master=addr, env=as_tenant)
    assert code == 1 and "UNAUTHENTICATED" in err.upper(), err
