"""``leibrix master``: run one master until SIGTERM/SIGINT.

Exit status: 0 after a clean shutdown, 2 for an invalid configuration, 1 when
the master cannot start (port in use, unusable data dir, missing or unsafe etcd
binary) or its embedded etcd member keeps dying. Every failure prints one
``leibrix master: error: ...`` line saying what to fix. Logs go to stderr as
``--log-format`` says (``text`` or one JSON object per line, see
:mod:`leibrix.domain._logging`), from ``--log-level`` up.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from leibrix.cli._logging import setup_logging
from leibrix.master._config import ConfigError, MasterConfig, add_arguments, load_config


log = logging.getLogger("leibrix.master")


def configure(parser: argparse.ArgumentParser) -> None:
    """Add every master option (see :data:`leibrix.master._config.OPTIONS`)."""
    parser.description = (
        f"{parser.description}. Options come from flags, then LEIBRIX_* environment variables, then the "
        "--config TOML file, then defaults (listening on loopback only)."
    )
    add_arguments(parser)


async def serve(config: MasterConfig, *, task_status: trio.TaskStatus[object] = trio.TASK_STATUS_IGNORED) -> None:
    """Run a master until SIGTERM/SIGINT, then shut it down gracefully; ``started(master)`` once serving.

    The first signal starts :meth:`Master.shutdown`; a second signal, or the
    shutdown taking longer than ``shutdown_timeout``, cancels whatever is left
    (the etcd member is still stopped and reaped).
    """
    from leibrix.master._master import Master

    master = Master(config)
    async with trio.open_nursery() as nursery:

        async def on_signals() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                signum = await signals.__anext__()
                log.info("received %s: shutting down", signal.Signals(signum).name)
                nursery.start_soon(master.shutdown)
                with trio.move_on_after(config.shutdown_timeout):
                    await signals.__anext__()
                log.warning("shutdown did not finish in time (or a second signal): cancelling")
                nursery.cancel_scope.cancel()

        async def run_master(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await master.run(task_status=task_status)
            finally:
                nursery.cancel_scope.cancel()

        nursery.start_soon(on_signals)
        await nursery.start(run_master)
        task_status.started(master)


def _explain(exc: BaseException) -> str | None:
    """The operator-facing message for a start-up failure, or None for a bug."""
    from leibrix.store._etcd import EtcdUnavailable
    from leibrix.store._member import EtcdBinaryError, MemberFailed
    from leibrix.master._master import StartupError

    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            text = _explain(inner)
            if text is not None:
                return text
        return None
    if isinstance(exc, (ConfigError, StartupError, EtcdBinaryError, MemberFailed)):
        return str(exc)
    if isinstance(exc, EtcdUnavailable):
        return f"etcd did not become ready: {exc}"
    if isinstance(exc, OSError):
        return f"cannot listen: {exc}"
    return None


def run(args: argparse.Namespace) -> int:
    """Entry point of ``leibrix master``; returns the exit status."""
    try:
        config = load_config(args)
    except ConfigError as exc:
        print(f"leibrix master: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.log_level, config.log_format)
    try:
        trio.run(serve, config)
    except BaseException as exc:  # noqa: BLE001 - every failure gets one clear line and a status
        text = _explain(exc)
        if text is None:
            raise
        print(f"leibrix master: error: {text}", file=sys.stderr)
        return 1
    return 0
