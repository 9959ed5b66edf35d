"""TLS on the gRPC port: certificates minted here with ``cryptography``, real masters on loopback."""

from __future__ import annotations

import os
import ssl
import sys
from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpclib.const import Status

from leibrix.client._call import call, tls_context
from leibrix.master._config import ConfigError, load_config
from leibrix.wire._proto import leibrix_cp as cp
from tests.api.test_auth import ADMIN
from tests.support.cluster import leading, start_master
from tests.support.poll import eventually


class Ca:
    """A throwaway certificate authority that writes PEM files into ``directory``."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir, self.name = directory, name
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.cert = self._build(subject, self.key.public_key(), ca=True)
        self.pem = self._write(f"{name}-ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    def _build(self, subject: x509.Name, public_key, *, ca: bool = False, ip: bool = False) -> x509.Certificate:
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject)
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, self.name)]))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ip:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]),
                                            critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def issue(self, name: str, *, server: bool = False) -> tuple[str, str, x509.Certificate]:
        """(cert file, key file, certificate) for ``name``, signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        cert = self._build(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]), key.public_key(), ip=server)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return (self._write(f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                self._write(f"{name}.key", key_pem), cert)


async def status(addr: str, context: ssl.SSLContext | None) -> Status | BaseException:
    """The status of GetClusterStatus over ``context`` (or the exception a failed connection raised)."""
    try:
        await call(addr, lambda stub: stub.get_cluster_status(cp.GetClusterStatusRequest()), timeout=5, ssl=context)
    except BaseException as exc:  # noqa: BLE001 - classified by the caller
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return getattr(exc, "status", exc)
    return Status.OK


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if not k.startswith("LEIBRIX_")}, **extra}


def _served_cert(port: int) -> x509.Certificate:
    pem = ssl.get_server_certificate(("127.0.0.1", port))
    return x509.load_pem_x509_certificate(pem.encode())


async def test_tls_serves_verified_clients_refuses_plain_text_and_reloads_certificates(etcd_server, nursery,
                                                                                         tmp_path) -> None:
    ca = Ca(tmp_path, "ca")
    cert, key, first = ca.issue("master", server=True)
    master = await leading(await start_master(nursery, etcd_server.endpoint, tls_cert=cert, tls_key=key))
    addr = master.config.grpc_listen
    assert await status(addr, tls_context(ca.pem)) is Status.OK
    # plain text to the TLS port fails at once, and the port keeps serving TLS afterwards
    with trio.fail_after(5):
        plain = await status(addr, None)
    assert isinstance(plain, Exception), plain  # the connection ends; no status, no hang
    # a client that does not trust the master's CA refuses it
    stranger = Ca(tmp_path, "stranger")
    assert isinstance(await status(addr, tls_context(stranger.pem)), ssl.SSLCertVerificationError)
    assert await status(addr, tls_context(ca.pem)) is Status.OK
    # replace the pair on disk: new connections get the new certificate, no restart
    port = int(addr.rsplit(":", 1)[1])
    assert (await trio.to_thread.run_sync(_served_cert, port)).serial_number == first.serial_number
    _, _, second = ca.issue("master", server=True)
    await eventually(lambda: trio.to_thread.run_sync(_served_cert, port),
                     until=lambda c: c.serial_number == second.serial_number, what="the new certificate served")
    assert master.parts.tls.reloads >= 1
    assert await status(addr, tls_context(ca.pem)) is Status.OK


async def test_mtls_refuses_clients_without_a_certificate_from_the_client_ca(etcd_server, nursery, tmp_path) -> None:
    ca, other = Ca(tmp_path, "ca"), Ca(tmp_path, "other")
    cert, key, _ = ca.issue("master", server=True)
    master = await leading(await start_master(nursery, etcd_server.endpoint, tls_cert=cert, tls_key=key,
                                              tls_client_ca=ca.pem, admin_token=ADMIN))
    addr = master.config.grpc_listen
    good_cert, good_key, _ = ca.issue("operator")
    bad_cert, bad_key, _ = other.issue("intruder")
    assert await status(addr, tls_context(ca.pem, good_cert, good_key)) is Status.UNAUTHENTICATED, \
        "the certificate opens the connection; the RPC still needs a token"
    for context in (tls_context(ca.pem), tls_context(ca.pem, bad_cert, bad_key)):
        refused = await status(addr, context)
        assert not isinstance(refused, Status), refused
    # with a certificate and a token, the call goes through
    ok, _ = await call(addr, lambda stub: stub.get_cluster_status(cp.GetClusterStatusRequest()), timeout=5,
                       ssl=tls_context(ca.pem, good_cert, good_key), metadata={"authorization": f"Bearer {ADMIN}"})
    assert ok.self_id == "m1"


def test_listening_beyond_loopback_needs_tls_and_tokens_or_insecure(tmp_path) -> None:
    ca = Ca(tmp_path, "ca")
    cert, key, _ = ca.issue("master", server=True)
    with pytest.raises(ConfigError, match="beyond loopback without TLS and tokens.*--insecure"):
        load_config({"grpc_listen": "0.0.0.0:50051"}, environ={})
    with pytest.raises(ConfigError, match="beyond loopback"):
        load_config({"grpc_listen": "0.0.0.0:50051", "tls_cert": cert, "tls_key": key}, environ={})
    assert load_config({"grpc_listen": "0.0.0.0:50051", "insecure": True}, environ={}).insecure
    secured = load_config({"grpc_listen": "0.0.0.0:50051", "tls_cert": cert, "tls_key": key},
                          environ={"LEIBRIX_ADMIN_TOKEN": ADMIN})
    assert secured.auth_enabled and secured.read_admin_token() == ADMIN and ADMIN not in repr(secured)
    with pytest.raises(ConfigError, match="at least 24 characters"):
        load_config({}, environ={"LEIBRIX_ADMIN_TOKEN": "short"})
    with pytest.raises(ConfigError, match="give both or neither"):
        load_config({"tls_cert": cert}, environ={})


async def test_the_master_command_refuses_in_one_line_and_ctl_speaks_tls(etcd_server, nursery, tmp_path) -> None:
    refused = await trio.run_process([sys.executable, "-m", "leibrix", "master", "--grpc-listen", "0.0.0.0:50999",
                                      "--etcd-endpoints", etcd_server.endpoint], capture_stderr=True, check=False,
                                     env=_env())
    lines = refused.stderr.decode().strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1 and "--insecure" in lines[0], lines
    ca = Ca(tmp_path, "ca")
    cert, key, _ = ca.issue("master", server=True)
    master = await leading(await start_master(nursery, etcd_server.endpoint, tls_cert=cert, tls_key=key,
                                              admin_token=ADMIN))
    env = _env(LEIBRIX_TOKEN=ADMIN, LEIBRIX_CONFIG=str(tmp_path / "none.yaml"))
    ctl = [sys.executable, "-m", "leibrix", "ctl", "--master", master.config.grpc_listen, "tenants", "list"]
    done = await trio.run_process([*ctl, "--tls-ca", ca.pem], capture_stdout=True, capture_stderr=True,
                                  check=False, env=env)
    assert done.returncode == 0, done.stderr.decode()
    plain = await trio.run_process(ctl, capture_stdout=True, capture_stderr=True, check=False, env=env)
    assert plain.returncode != 0, "plain text is refused by the TLS port"
