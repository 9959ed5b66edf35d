"""The status page ``/``: rendered by a real headless Chromium against a running cluster, it shows the
workers and the READY epochs that ``/status.json`` reports (and the page fetched nothing from elsewhere)."""

from __future__ import annotations

import json
import os
import tempfile
import urllib.request
from html.parser import HTMLParser
from typing import Any

import pytest
import trio

from tests.support.admission import admission, all_ready, quota, rpc
from tests.support.cluster import leader_and_follower, workers

CHROMIUM = "/usr/bin/chromium"
needs_chromium = pytest.mark.skipif(not os.path.exists(CHROMIUM),
                                    reason="Debian chromium is not installed (make install installs it)")


class _Cells(HTMLParser):
    """Text of every ``<td>`` under each table id, row by row."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.links: list[str] = []
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self._table = a.get("id") or ""
            self.tables[self._table] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag == "td":
            self._cell = []
        for name in ("src", "href"):
            if a.get(name):
                self.links.append(a[name] or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _get_json(addr: str, path: str) -> Any:
    with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as answer:
        assert answer.headers["content-type"] == "application/json"
        return json.loads(answer.read())


async def render(addr: str) -> _Cells:
    """The DOM of ``http://addr/`` after its scripts ran, as headless Chromium dumps it."""
    with tempfile.TemporaryDirectory(prefix="leibrix-chromium-") as profile:
        done = await trio.run_process(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--virtual-time-budget=5000", "--dump-dom", f"http://{addr}/"],
            capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    cells = _Cells()
    cells.feed(done.stdout.decode())
    return cells


@needs_chromium
async def test_page_shows_workers_and_ready_epochs(etcd_server: Any, nursery: trio.Nursery) -> None:
    leader, follower = await leader_and_follower(nursery, etcd_server.endpoint)
    await workers(nursery, leader, "w1", "w2")
    await rpc(leader, "upsert_tenant_quota", quota(max_epochs=8))
    await rpc(leader, "admit_dataset", admission(days=2, regions=("eu", "us"), replication_factor=2))
    ready = set(await all_ready(leader, n=4))

    status = await trio.to_thread.run_sync(_get_json, leader.config.http_listen, "/status.json")
    assert {w["id"]: w["state"] for w in status["workers"]} == {"w1": "ACTIVE", "w2": "ACTIVE"}
    assert {e["epoch"] for e in status["epochs"]["ready"]} == ready
    assert status["epochs"]["by_state"] == {"READY": 4} and status["master"]["is_leader"] is True

    page = await render(leader.config.http_listen)
    rows = page.tables["workers"]
    assert sorted(r[0] for r in rows if r) == ["w1", "w2"] and all(r[1] == "ACTIVE" for r in rows if r)
    epochs = page.tables["ready"]
    assert {r[2] for r in epochs if r} == ready
    assert all(r[5] == "w1, w2" for r in epochs if r)  # two replicas each
    tenants = page.tables["tenants"]
    assert [r[0] for r in tenants if r] == ["acme"] and tenants[-1][3].startswith("4 / 8")
    assert {r[0] for r in page.tables["masters"] if r} == {leader.config.name, follower.config.name}
    assert all(link.startswith(("http://127.0.0.1", "http://localhost", "status.json")) for link in page.links)

    # a follower's page: the same epochs, the workers as recorded, and the leader named
    page = await render(follower.config.http_listen)
    assert {r[2] for r in page.tables["ready"] if r} == ready
    assert sorted(r[0] for r in page.tables["workers"] if r) == ["w1", "w2"]
