"""``python -m bench.security [--quick] [--json PATH]``: what tokens and TLS cost a unary RPC.

Two in-process masters share one private etcd member (production timings):
one plain (no tokens, plain-text gRPC), one secured (an admin token, a tenant
token and TLS with a certificate minted here). The client (grpclib, one
long-lived channel per master, as a gateway keeps) sends ``GetTenant``
sequentially, alternating blocks of 100 between the two masters so both see
the same machine load; the tenant token goes through the authorization table
(a TENANT rule) on every call.

Measured: ``get_tenant.plain_p50_us`` / ``.secured_p50_us`` (2,000 calls each;
300 with ``--quick``), their p99, and the ratio secured/plain; plus
``connect.tls_handshake_ms``, a fresh channel's first call minus a warm
call's, the one-off price of a TLS connection. Needs the ``test`` extra
(``cryptography``) to mint the certificate.
"""

from __future__ import annotations

import tempfile
import time
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path

import trio
import trio_asyncio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.client import Channel

from bench._report import Report, options
from leibrix.store._ports import free_hostport, free_port_url
from leibrix.client._call import call, tls_context
from leibrix.master._config import MasterConfig
from leibrix.master._master import Master
from leibrix.store._member import PRODUCTION_TIMINGS, MemberConfig, run_member
from leibrix.wire._proto import leibrix_cp as cp

ADMIN = "bench-admin-token-0123456789abcdef"


def _certificate(directory: Path) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (it is its own CA): (cert file, key file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "bench")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=1))
            .not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_file), str(key_file)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


async def _master(nursery: trio.Nursery, endpoint: str, cluster: str, **options: object) -> Master:
    config = MasterConfig(name=cluster, cluster=cluster, grpc_listen=free_hostport(), http_listen=free_hostport(),
                          etcd_endpoints=[endpoint], **options).validate()
    master = Master(config)
    await nursery.start(master.run)
    while not master.is_leader:
        await trio.sleep(0.05)
    return master


async def _until(addr: str, fn, **kw: object):
    """Retry ``fn`` (a stub call) until it succeeds: the bootstrap admin token is stored at the term's start."""
    for _ in range(200):
        try:
            return (await call(addr, fn, **kw))[0]
        except BaseException:  # noqa: BLE001 - retried, then re-raised below
            await trio.sleep(0.05)
    return (await call(addr, fn, **kw))[0]


async def _measure(channels: dict[str, tuple[Channel, dict[str, str]]], n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in channels}
    request = cp.GetTenantRequest(tenant_id="acme")
    for _ in range(0, n, 100):
        for name, (channel, metadata) in channels.items():
            stub = cp.ManagementServiceStub(channel, metadata=metadata or None)
            for _ in range(100):
                t = time.perf_counter()
                await stub.get_tenant(request)
                out[name].append(time.perf_counter() - t)
    return out


async def main(quick: bool, json_path: Path | None) -> None:
    n = 300 if quick else 2000
    with tempfile.TemporaryDirectory() as d:
        member = MemberConfig(name="b", data_dir=Path(d) / "etcd", client_url=free_port_url(),
                              peer_url=free_port_url(), timings=PRODUCTION_TIMINGS)
        cert, key = _certificate(Path(d))
        async with trio.open_nursery() as nursery:
            await nursery.start(run_member, member)
            plain = await _master(nursery, member.client_url, "plain")
            secured = await _master(nursery, member.client_url, "secured", tls_cert=cert, tls_key=key,
                                    admin_token=ADMIN)
            admin = {"authorization": f"Bearer {ADMIN}"}
            ssl = tls_context(cert)
            await call(plain.config.grpc_listen, lambda s: s.upsert_tenant_quota(cp.TenantQuota(tenant_id="acme")))
            await _until(secured.config.grpc_listen, lambda s: s.upsert_tenant_quota(cp.TenantQuota(tenant_id="acme")),
                         metadata=admin, ssl=ssl)
            issued = await _until(secured.config.grpc_listen,
                                  lambda s: s.issue_token(cp.IssueTokenRequest(tenant_id="acme")),
                                  metadata=admin, ssl=ssl)
            tenant = {"authorization": f"Bearer {issued.token}"}

            async def run() -> tuple[dict[str, list[float]], float]:
                host, port = plain.config.grpc_listen.rsplit(":", 1)
                shost, sport = secured.config.grpc_listen.rsplit(":", 1)
                channels = {"plain": (Channel(host, int(port)), {}),
                            "secured": (Channel(shost, int(sport), ssl=ssl), tenant)}
                try:
                    await _measure(channels, 200)  # warm up both connections and code paths
                    lat = await _measure(channels, n)
                    handshakes = []
                    for _ in range(20 if quick else 50):
                        fresh = Channel(shost, int(sport), ssl=ssl)
                        try:
                            t = time.perf_counter()
                            await cp.ManagementServiceStub(fresh, metadata=tenant).get_tenant(
                                cp.GetTenantRequest(tenant_id="acme"))
                            handshakes.append(time.perf_counter() - t)
                        finally:
                            fresh.close()
                    return lat, _pct(handshakes, 50)
                finally:
                    for channel, _ in channels.values():
                        channel.close()

            async with trio_asyncio.open_loop():
                lat, first_call = await trio_asyncio.aio_as_trio(run)()
            nursery.cancel_scope.cancel()
    report = Report("tokens + TLS on a unary RPC (GetTenant, one warm channel per master)", quick=quick)
    plain_p50 = report.add("get_tenant.plain_p50_us", _pct(lat["plain"], 50) * 1e6, "us")
    report.add("get_tenant.plain_p99_us", _pct(lat["plain"], 99) * 1e6, "us")
    secured_p50 = report.add("get_tenant.secured_p50_us", _pct(lat["secured"], 50) * 1e6, "us",
                             "tenant token + TLS")
    report.add("get_tenant.secured_p99_us", _pct(lat["secured"], 99) * 1e6, "us")
    report.add("get_tenant.secured_over_plain", secured_p50 / plain_p50, "x")
    report.add("connect.tls_handshake_ms", max(0.0, first_call - _pct(lat["secured"], 50)) * 1e3, "ms",
               "a fresh TLS channel's first call minus a warm call")
    report.note(f"{n:,} sequential calls per master, alternating blocks of 100; same process, same etcd")
    report.emit(json_path)


if __name__ == "__main__":
    args = options(__doc__.splitlines()[0])
    trio.run(main, args.quick, args.json)
