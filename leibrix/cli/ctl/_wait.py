"""``--wait``: follow epochs until READY, or a drain until the worker is DRAINED, showing progress.

On a terminal the progress is a rich progress bar; otherwise (a pipe, a CI
log) one plain line is printed each time the counts change, so logs stay
readable. Both loops poll the masters (every ``POLL_S``); a FAILED epoch ends
the wait at once with its reason (exit 1), and running out of time ends it
with what was still missing (exit 4).
"""

from __future__ import annotations

from collections import Counter

import trio
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from leibrix.cli.ctl._common import SERVER, UNAVAILABLE, Ctx, CtlError
from leibrix.wire._proto import leibrix_cp as cp

__all__ = ["wait_drained", "wait_ready"]

POLL_S = 0.5
_GONE = (cp.EpochState.RETIRING, cp.EpochState.RETIRED)


class _Report:
    """A progress bar on a terminal, else a plain line whenever the text changes."""

    def __init__(self, ctx: Ctx, what: str, total: int) -> None:
        self.ctx = ctx
        self.last = ""
        self.bar: Progress | None = None
        if ctx.console.is_terminal:
            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=ctx.console)
            self.task = self.bar.add_task(what, total=total, note="")
            self.bar.start()

    def update(self, line: str, done: int, total: int, note: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, completed=done, total=total, note=note)
        elif line != self.last:
            self.ctx.print(line)
            self.last = line

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def _failure(e: cp.EpochStatus) -> str:
    reasons = [t.reason for t in e.history if t.to_state == cp.EpochState.FAILED and t.reason]
    return f"epoch {e.info.epoch_id} FAILED" + (f": {reasons[-1]}" if reasons else "")


async def wait_ready(ctx: Ctx, tenant: str, dataset: str, epoch_ids: list[str], timeout: float) -> int:
    """Wait until every epoch of ``epoch_ids`` is READY (retired ones are not waited for)."""
    wanted = set(epoch_ids)
    report = _Report(ctx, f"{tenant}/{dataset}", len(wanted))
    ready, total, others = 0, len(wanted), ""
    try:
        with trio.move_on_after(timeout):
            while True:
                epochs = await ctx.pages("list_epochs", cp.ListEpochsRequest(tenant_id=tenant, dataset_id=dataset),
                                         "epochs")
                mine = [e for e in epochs if e.info.epoch_id in wanted and e.state not in _GONE]
                states = Counter(e.state.name for e in mine)
                ready, total = states.get("READY", 0), len(mine)
                others = ", ".join(f"{n} {s}" for s, n in sorted(states.items()) if s != "READY")
                report.update(f"epochs READY {ready}/{total}" + (f" ({others})" if others else ""),
                              ready, total, others)
                failed = [e for e in mine if e.state == cp.EpochState.FAILED]
                if failed:
                    raise CtlError(SERVER, "; ".join(_failure(e) for e in failed[:5])
                                   + (f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""))
                if ready == total:
                    return 0
                await trio.sleep(POLL_S)
        raise CtlError(UNAVAILABLE, f"timed out after {timeout:g}s: epochs READY {ready}/{total}"
                       + (f"; still {others}" if others else ""))
    finally:
        report.close()


async def wait_drained(ctx: Ctx, worker_id: str, start: int, timeout: float) -> int:
    """Wait until the worker is DRAINED, showing replicas moved of the ``start`` it held."""
    report = _Report(ctx, f"drain {worker_id}", start)
    left = start
    try:
        with trio.move_on_after(timeout):
            while True:
                info = await ctx.rpc("get_worker", cp.GetWorkerRequest(worker_id=worker_id))
                left = info.replicas
                moved = max(0, start - left)
                report.update(f"replicas moved {moved}/{start} (worker {info.state.name})", moved, start,
                              info.state.name)
                if info.state == cp.WorkerState.DRAINED:
                    return 0
                if info.state in (cp.WorkerState.DEAD, cp.WorkerState.ACTIVE):
                    raise CtlError(SERVER, f"worker {worker_id} became {info.state.name} before it was drained "
                                   f"({left} replica(s) left on it)")
                await trio.sleep(POLL_S)
        raise CtlError(UNAVAILABLE, f"timed out after {timeout:g}s: {left} replica(s) still on worker {worker_id} "
                       "(no eligible destination?)")
    finally:
        report.close()
