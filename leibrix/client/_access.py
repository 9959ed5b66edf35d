"""Access reports: what queries read, sent to the masters in batches, feeding epoch heat.

Heat is the master's measure of demand, and queries are its only real source.
Every query adds, per epoch it read, one access and the bytes scanned; the
:class:`AccessReporter` sums them and a thread of its own sends the sums every
``interval`` seconds (and on :meth:`AccessReporter.close`) as ``ReportAccess``
calls, all on one channel, to any master (a follower's redirect leads to the
leader). A query never waits for a report.

``ReportAccessRequest`` carries a count and scanned bytes; rows read are kept
in :attr:`AccessReporter.totals` for the caller's statistics. A batch that
cannot be delivered is kept and retried with the next one, so a master
failover loses no heat; it is dropped only at close.
"""

from __future__ import annotations

import logging
import threading
import ssl as _ssl
from collections.abc import Mapping

import trio

from leibrix.client._call import call
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["AccessReporter"]

log = logging.getLogger("leibrix.client")


class AccessReporter:
    """Sums accesses per ``(tenant, dataset, epoch)`` and sends them in the background."""

    def __init__(self, masters: str, *, interval: float = 1.0, timeout: float = 10.0,
                 metadata: Mapping[str, str] | None = None, ssl: _ssl.SSLContext | None = None) -> None:
        self.masters = masters
        #: TLS to the masters (see :func:`leibrix.client._call.tls_context`), or plain text when None.
        self.ssl = ssl
        self.interval = interval
        self.timeout = timeout
        self.metadata = dict(metadata or {})
        self._pending: dict[tuple[str, str, str], list[int]] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closed = False
        self.sent_batches = 0
        self.totals = {"accesses": 0, "rows": 0, "bytes": 0}
        self._thread = threading.Thread(target=self._loop, name="leibrix-access-reports", daemon=True)
        self._thread.start()

    def add(self, tenant: str, dataset: str, epochs: Mapping[str, tuple[int, int]]) -> None:
        """Record one query reading ``epochs`` (epoch id -> (rows, bytes scanned))."""
        with self._lock:
            for epoch, (rows, scanned) in epochs.items():
                entry = self._pending.setdefault((tenant, dataset, epoch), [0, 0])
                entry[0] += 1
                entry[1] += int(scanned)
                self.totals["accesses"] += 1
                self.totals["rows"] += int(rows)
                self.totals["bytes"] += int(scanned)

    def flush(self) -> bool:
        """Send what is pending now (in the caller's thread); True when nothing is left."""
        with self._lock:
            batch, self._pending = self._pending, {}
        if not batch:
            return True
        requests = [cp.ReportAccessRequest(tenant_id=t, dataset_id=d, epoch_id=e, count=c, scanned_bytes=b)
                    for (t, d, e), (c, b) in batch.items()]

        async def send(stub: cp.ManagementServiceStub) -> int:
            for req in requests:
                await stub.report_access(req)
            return len(requests)

        try:
            trio.run(lambda: call(self.masters, send, timeout=self.timeout, metadata=self.metadata, ssl=self.ssl))
        except Exception as exc:  # a failed report is retried, never raised into queries
            log.warning("access report of %d epoch(s) not delivered (%s); kept for the next batch",
                        len(requests), exc)
            with self._lock:
                for key, (c, b) in batch.items():
                    entry = self._pending.setdefault(key, [0, 0])
                    entry[0] += c
                    entry[1] += b
            return False
        self.sent_batches += 1
        return True

    def close(self) -> None:
        """Stop the thread after one last delivery attempt."""
        if self._closed:
            return
        self._closed = True
        self._wake.set()
        self._thread.join()
        self.flush()

    def _loop(self) -> None:
        while not self._closed:
            self._wake.wait(self.interval)
            self.flush()
