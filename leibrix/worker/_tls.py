"""The reference worker's TLS: one certificate for its master stream and its Arrow Flight server.

The flags are the Rust leibrix-worker's: ``--tls-ca``, ``--tls-cert`` and
``--tls-key`` (all three or none) and ``--tls-server-name``. With them the
worker

* dials the master over TLS, trusting only ``--tls-ca`` and presenting its
  certificate (a master with ``--tls-client-ca`` requires one, and holds the
  registration to the id and pools the certificate names);
* checks the master's certificate against ``--tls-server-name`` when given
  (a master reached by an address its certificate does not name), else
  against the host it dials;
* serves Arrow Flight over TLS (``grpc+tls://``) with the same certificate and
  key; query clients then dial ``grpc+tls://`` trusting the same CA. Flight
  clients are not asked for a certificate.

One certificate therefore serves as a client certificate (the master stream)
and as a server certificate (Flight): it names the worker id (SAN URI
``leibrix://worker/<id>``, a SAN DNS name or the CN), the host clients reach
its Flight address by (SAN DNS or IP), and, if it carries an extended key
usage, both ``clientAuth`` and ``serverAuth``.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["WorkerTls"]


@dataclass(frozen=True)
class WorkerTls:
    """The worker's CA, certificate and key files, and the name the master's certificate must carry."""

    ca: str
    cert: str
    key: str
    server_name: str = ""

    @classmethod
    def from_flags(cls, ca: str | None, cert: str | None, key: str | None,
                   server_name: str | None = None) -> WorkerTls | None:
        """None when no TLS flag is given; ValueError naming the missing flags when only some are."""
        given = {"--tls-ca": ca, "--tls-cert": cert, "--tls-key": key}
        if not any(given.values()):
            if server_name:
                raise ValueError("--tls-server-name needs --tls-ca, --tls-cert and --tls-key")
            return None
        missing = [flag for flag, value in given.items() if not value]
        if missing:
            raise ValueError(f"--tls-ca, --tls-cert and --tls-key go together: {', '.join(missing)} missing")
        tls = cls(str(ca), str(cert), str(key), server_name or "")
        tls.client_context()  # unreadable files, a key that does not match: refused at start-up
        return tls

    def client_context(self) -> ssl.SSLContext:
        """The context the master stream dials with: trusts the CA only, presents the worker's certificate."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=self.ca)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(self.cert, self.key)
        ctx.set_alpn_protocols(["h2"])
        return ctx

    def flight_certificates(self) -> list[tuple[bytes, bytes]]:
        """``(certificate chain PEM, key PEM)`` for the Flight server's ``tls_certificates``."""
        return [(Path(self.cert).read_bytes(), Path(self.key).read_bytes())]
