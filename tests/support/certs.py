"""Certificates minted in the test with ``cryptography``: a throwaway CA writing PEM files.

:meth:`Ca.issue` signs a leaf naming whatever the test needs: a common name,
SAN DNS names, SAN URIs (``leibrix://worker/<id>``, ``leibrix://tenant/<t>``)
and the loopback IP (a server reached at 127.0.0.1: a master, an etcd member,
a worker's Flight port). Leaves carry no extended key usage, so one
certificate serves as a client and as a server certificate (etcd peers and
workers use theirs both ways).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from ipaddress import IPv4Address
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["Ca", "Leaf"]


class Leaf(NamedTuple):
    """A signed certificate's files."""

    cert: str
    key: str


class Ca:
    """A certificate authority whose PEM files go into ``directory`` (``<name>-ca.pem``, ``<leaf>.pem/.key``)."""

    def __init__(self, directory: Path, name: str) -> None:
        self.dir, self.name = directory, name
        directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.cert = self._sign(self._name(name), self.key.public_key(), ca=True, sans=[])
        self.pem = self._write(f"{name}-ca.pem", self.cert.public_bytes(serialization.Encoding.PEM))

    @staticmethod
    def _name(cn: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)] if cn else [])

    def _sign(self, subject: x509.Name, public_key, *, ca: bool, sans: list[x509.GeneralName]) -> x509.Certificate:
        now = datetime.now(timezone.utc)
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(self._name(self.name))
                   .public_key(public_key).serial_number(x509.random_serial_number())
                   .not_valid_before(now - timedelta(minutes=1)).not_valid_after(now + timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def _write(self, name: str, data: bytes) -> str:
        path = self.dir / name
        path.write_bytes(data)
        return str(path)

    def issue(self, file: str, *, cn: str = "", dns: tuple[str, ...] = (), uris: tuple[str, ...] = (),
              loopback: bool = True) -> Leaf:
        """A leaf signed by this CA, written to ``<file>.pem`` and ``<file>.key``."""
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
        sans += [x509.UniformResourceIdentifier(u) for u in uris]
        if loopback:
            sans.append(x509.IPAddress(IPv4Address("127.0.0.1")))
        cert = self._sign(self._name(cn), key.public_key(), ca=False, sans=sans)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        return Leaf(self._write(f"{file}.pem", cert.public_bytes(serialization.Encoding.PEM)),
                    self._write(f"{file}.key", key_pem))

    def worker(self, worker_id: str, *pools: str, file: str = "") -> Leaf:
        """A worker's certificate: SAN URI ``leibrix://worker/<id>`` (+ ``leibrix://tenant/<pool>`` each), loopback IP."""
        uris = (f"leibrix://worker/{worker_id}", *(f"leibrix://tenant/{p}" for p in pools))
        return self.issue(file or f"worker-{worker_id}", uris=uris)
