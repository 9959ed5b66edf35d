"""Worker mTLS: real ``leibrix worker`` processes against a master with ``--tls-client-ca``.

Certificates are minted here (:mod:`tests.support.certs`). A worker's stream
is accepted only when its client certificate names its id and allows its
pool; the right certificate joins, loads and serves Arrow Flight over TLS,
which the query client (and ``leibrix query``) dials with the CA it is given.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pyarrow.flight as fl
import trio

from leibrix.client._call import call, tls_context
from leibrix.client._query import Client
from leibrix.master._master import Master
from leibrix.wire._proto import leibrix_cp as cp
from tests.support.admission import admission, all_ready, quota
from tests.support.certs import Ca
from tests.support.cluster import leading, start_master
from tests.support.hub import run_process, worker_cmd
from tests.support.poll import eventually
from tests.support.sample_source import ROWS_PER_DAY


async def _mtls_master(nursery: trio.Nursery, etcd_endpoint: str, ca: Ca) -> Master:
    server = ca.issue("master", cn="master", dns=("localhost",))
    return await leading(await start_master(nursery, etcd_endpoint, tls_cert=server.cert, tls_key=server.key,
                                            tls_client_ca=ca.pem))


def _tls_flags(ca: Ca, leaf) -> tuple[str, ...]:
    return ("--tls-ca", ca.pem, "--tls-cert", leaf.cert, "--tls-key", leaf.key)


async def _refused(master: Master, wid: str, *extra: str) -> str:
    """Run a worker that must be refused for good: its exit code is 2; returns its stderr."""
    with trio.fail_after(60):
        done = await trio.run_process(worker_cmd(master.config.grpc_listen, wid, *extra), capture_stderr=True,
                                      check=False)
    err = done.stderr.decode(errors="replace")
    assert done.returncode == 2, (done.returncode, err)
    return err


async def test_a_worker_joins_only_with_a_certificate_naming_its_id_and_pool(etcd_server, nursery,
                                                                              tmp_path: Path) -> None:
    ca, stranger = Ca(tmp_path / "ca", "ca"), Ca(tmp_path / "stranger", "stranger")
    master = await _mtls_master(nursery, etcd_server.endpoint, ca)
    addr = master.config.grpc_listen
    operator = ca.issue("operator", cn="operator")
    ssl = tls_context(ca.pem, operator.cert, operator.key)

    async def rpc(name: str, request):
        reply, _ = await call(addr, lambda stub: getattr(stub, name)(request), timeout=10, ssl=ssl)
        return reply

    await rpc("upsert_tenant_quota", quota("acme", admission_policy=cp.AdmissionPolicy.QUEUE))
    await rpc("upsert_tenant_quota", quota("other", admission_policy=cp.AdmissionPolicy.QUEUE))

    # from another CA, and in plain text: the TLS handshake fails, the worker keeps trying, never registers
    await nursery.start(run_process, worker_cmd(addr, "w-foreign", *_tls_flags(ca, stranger.worker("w-foreign"))))
    await nursery.start(run_process, worker_cmd(addr, "w-plain"))

    async with trio.open_nursery() as refusals:
        errors: dict[str, str] = {}

        async def refuse(name: str, wid: str, *extra: str) -> None:
            errors[name] = await _refused(master, wid, *extra)

        # a certificate for another id; a pool the certificate does not allow; the shared pool for a tenant's machine
        refusals.start_soon(refuse, "id", "w1", *_tls_flags(ca, ca.worker("w2", file="w2-for-w1")))
        refusals.start_soon(refuse, "pool", "w3", "--pool", "acme", *_tls_flags(ca, ca.worker("w3", "other")))
        refusals.start_soon(refuse, "shared", "w4", *_tls_flags(ca, ca.worker("w4", "acme")))
    assert "PERMISSION_DENIED" in errors["id"] and "worker id 'w1' is not named by the client certificate" in \
        errors["id"] and "'w2'" in errors["id"], errors["id"]
    assert "pool 'acme' is not allowed by the client certificate" in errors["pool"] and "'other'" in \
        errors["pool"], errors["pool"]
    assert "allows only the pools of 'acme'" in errors["shared"], errors["shared"]

    # the right certificates: a shared worker named by its SAN URI, a dedicated one allowed its pool
    good = ca.worker("w-good")
    await nursery.start(run_process, worker_cmd(addr, "w-good", *_tls_flags(ca, good)))
    await nursery.start(run_process, worker_cmd(addr, "w-acme", "--pool", "acme",
                                                *_tls_flags(ca, ca.worker("w-acme", "acme"))))
    hub = master.parts.hub
    await eventually(lambda: (hub.state("w-good"), hub.state("w-acme")),
                     until=lambda s: s == (cp.WorkerState.ACTIVE, cp.WorkerState.ACTIVE), timeout=30,
                     what="w-good and w-acme ACTIVE")
    listed = {w.worker_id: w for w in (await rpc("list_workers", cp.ListWorkersRequest())).workers}
    assert set(listed) == {"w-good", "w-acme"}, "no refused, foreign or plain-text worker ever registered"

    # the right certificate loads: the tenant's epochs become READY on its workers
    await rpc("admit_dataset", admission("other", "orders", days=1, regions=("eu",), rows=100))
    await all_ready(master, "other", "orders", n=1)

    # its Arrow Flight server speaks TLS with the same certificate: grpc+tls trusting the CA lists the table
    flight_addr = listed["w-good"].labels["flight_addr"]
    ca_pem = Path(ca.pem).read_bytes()

    def flights() -> dict[tuple[str, ...], int]:
        with fl.FlightClient(f"grpc+tls://{flight_addr}", tls_root_certs=ca_pem) as client:
            infos = client.list_flights(json.dumps({"tenant_id": "other"}).encode(),
                                        options=fl.FlightCallOptions(timeout=10))
            return {tuple(p.decode() for p in f.descriptor.path): f.total_records for f in infos}

    def plain() -> BaseException | None:
        with fl.FlightClient(f"grpc://{flight_addr}") as client:
            try:
                list(client.list_flights(options=fl.FlightCallOptions(timeout=3)))
            except fl.FlightError as exc:
                return exc
        return None

    assert await trio.to_thread.run_sync(flights) == {("orders",): ROWS_PER_DAY}
    assert isinstance(await trio.to_thread.run_sync(plain), fl.FlightError), "plain text to the TLS Flight port"

    # the query client: TLS (with the operator's certificate) to the master, grpc+tls trusting the CA to the worker
    def query() -> tuple[int, list[str], int]:
        with Client(addr, tls_ca=ca.pem, tls_cert=operator.cert, tls_key=operator.key, timeout=20) as client:
            table = client.query("other", "orders", "SELECT count(*) AS n FROM orders", resident_only=True)
            answered = client.last.workers
        return table.column("n")[0].as_py(), answered, client.reporter.sent_batches

    n, answered, reports = await trio.to_thread.run_sync(query)
    assert (n, answered) == (ROWS_PER_DAY, ["w-good"])
    assert reports >= 1, "the access report reached the master over TLS"

    # leibrix query: --tls-ca, and the client certificate from the client config file
    config = tmp_path / "client.yaml"
    config.write_text(f"tls_cert: {operator.cert}\ntls_key: {operator.key}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEIBRIX_")}
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "leibrix", "query", "SELECT count(*) AS n FROM orders", "--master", addr,
             "--tls-ca", ca.pem, "--tenant", "other", "--dataset", "orders", "--resident-only", "-o", "json"],
            env={**env, "LEIBRIX_CONFIG": str(config)}, capture_stdout=True, capture_stderr=True, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    assert json.loads(done.stdout) == {"n": ROWS_PER_DAY}
    assert "from w-good" in done.stderr.decode(errors="replace")
