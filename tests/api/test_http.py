"""The HTTP side: /healthz on every healthy master, /primary only on the leader, /replica only on followers."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import trio

from tests.support.cluster import leader_and_follower
from tests.support.poll import eventually


def _get(addr: str, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


async def test_primary_and_replica_follow_leadership(etcd_server, nursery) -> None:
    leader, follower = await leader_and_follower(nursery, etcd_server.endpoint)

    async def codes(master) -> dict[str, int]:
        return {path: (await trio.to_thread.run_sync(_get, master.config.http_listen, path))[0]
                for path in ("/healthz", "/primary", "/replica")}

    assert await eventually(lambda: codes(leader), until=lambda c: c == {"/healthz": 200, "/primary": 200,
                                                                        "/replica": 503}, what="leader codes")
    assert await eventually(lambda: codes(follower), until=lambda c: c == {"/healthz": 200, "/primary": 503,
                                                                          "/replica": 200}, what="follower codes")
    status, body = await eventually(lambda: trio.to_thread.run_sync(_get, follower.config.http_listen, "/primary"),
                                    until=lambda answer: answer[1].get("leader") == leader.config.name,
                                    what="the follower naming the leader")
    assert status == 503 and body["is_leader"] is False
    await leader.shutdown()  # resigns: the follower takes over and /primary moves with it
    assert await eventually(lambda: codes(follower), until=lambda c: c["/primary"] == 200,
                            what="/primary on the new leader")
