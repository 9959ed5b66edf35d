"""TLS for the gRPC port, with certificates reloaded without a restart.

grpclib hands the ``ssl.SSLContext`` given to ``Server.start`` to asyncio's
``create_server`` once, and offers no way to swap it. The swap happens one
level down instead: the listening context has an ``sni_callback``, which
OpenSSL runs during every handshake (with or without SNI from the client),
and the callback moves the connection onto the *current* context
(``ssl_object.context = current``). :meth:`ServerTls.reload` builds a whole
new ``SSLContext`` from the files (certificate chain, key, client CA) and
makes it current, so new connections use the new certificate and CA at once
while established ones keep theirs. A reload that fails (a half-written file,
a key that does not match) is logged and the previous context stays.

Reloads happen on SIGHUP (when the master runs in the main thread) and when
any of the files' modification time, size or inode changes (polled every
second). What is fixed at start-up: whether client certificates are required
(``--tls-client-ca`` given or not); the CA file's content reloads like the rest.

With a client CA, every connection must present a certificate it signed
(mTLS), the worker streams included.
"""

from __future__ import annotations

import logging
import os
import signal
import ssl
import threading
from pathlib import Path

import trio

__all__ = ["ServerTls"]

log = logging.getLogger(__name__)

#: Seconds between checks of the certificate files.
POLL_S = 1.0


def _server_context(cert: Path, key: Path, client_ca: Path | None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    if client_ca is not None:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=client_ca)
    ctx.set_alpn_protocols(["h2"])
    return ctx


class ServerTls:
    """The gRPC port's TLS: :attr:`context` goes to the server once; :meth:`reload` swaps what it serves.

    Raises ``OSError`` / ``ssl.SSLError`` from the constructor when the files
    cannot be used (the master then refuses to start).
    """

    def __init__(self, cert: str | os.PathLike[str], key: str | os.PathLike[str],
                 client_ca: str | os.PathLike[str] | None = None, *, poll_s: float = POLL_S) -> None:
        self.files = (Path(cert), Path(key), Path(client_ca) if client_ca else None)
        self.poll_s = poll_s
        self.current = _server_context(*self.files)
        self.context = _server_context(*self.files)
        self.context.sni_callback = self._select
        #: How many reloads succeeded (tests and logs).
        self.reloads = 0
        self._stamp = self._stat()

    def _select(self, ssl_object: ssl.SSLObject, _server_name: str | None, _ctx: ssl.SSLContext) -> None:
        ssl_object.context = self.current

    def _stat(self) -> tuple[tuple[int, int, int] | None, ...]:
        out = []
        for path in self.files:
            try:
                st = path.stat() if path is not None else None
                out.append((st.st_mtime_ns, st.st_size, st.st_ino) if st is not None else None)
            except OSError:
                out.append(None)
        return tuple(out)

    def reload(self) -> bool:
        """Build a new context from the files and serve it to new connections; False (logged) if it fails."""
        self._stamp = self._stat()
        try:
            self.current = _server_context(*self.files)
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.error("TLS reload failed, still serving the previous certificate: %s", exc)
            return False
        self.reloads += 1
        log.info("TLS certificate reloaded from %s", self.files[0])
        return True

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Reload on SIGHUP (main thread only) and when the files change, until cancelled."""
        async with trio.open_nursery() as nursery:
            if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGHUP"):
                nursery.start_soon(self._on_sighup)
            task_status.started()
            while True:
                await trio.sleep(self.poll_s)
                if self._stat() != self._stamp:
                    await trio.sleep(0.1)  # let a writer finish replacing the pair
                    self.reload()

    async def _on_sighup(self) -> None:
        with trio.open_signal_receiver(signal.SIGHUP) as signals:
            async for _ in signals:
                self.reload()
