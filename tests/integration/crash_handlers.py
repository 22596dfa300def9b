"""The handlers the crash test's worker processes run.

``data_validation``'s side effect is a file ``<out>/<job id>`` holding the job's
parameters. It follows the pattern a handler needs to be idempotent under
at-least-once execution: write to an attempt-scoped temp file, make it durable,
then commit with ``os.link``, which fails if the final file already exists. So
whatever happens to a worker, a job's effect is committed at most once, and the
queue's retries make it at least once.

Every start and every end of a handler is appended to ``<out>/executions.log``
(one ``write`` of one line on an ``O_APPEND`` file, so lines from many processes
never mix), with the handler's pid, its worker's pid, the process's start time in
clock ticks (so a reused pid is not mistaken for it) and ``time.monotonic()``,
which is one clock for every process on the machine. The test reads it to show
that some jobs ran more than once, that no two executions of a job overlapped,
and that no handler outlived its worker.

``file_extraction`` kills its own worker with SIGKILL, every time: the crash loop
the queue's crash cap is there for.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

from sclib import HandlerRegistry, JobContext

handlers = HandlerRegistry()


def process_start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot), or ``None`` if there
    is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the fields after "pid (comm)"; starttime is field 22 of the whole line
    return int(stat.rsplit(")", 1)[1].split()[19])


def worker_pid() -> int:
    """The pid of the worker running this handler (its parent in process mode)."""
    return os.getppid() if multiprocessing.parent_process() else os.getpid()


def _log(out: Path, line: str) -> None:
    fd = os.open(out / "executions.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def _log_start(ctx: JobContext, out: Path) -> None:
    me = os.getpid()
    _log(
        out,
        f"start {ctx.job.id} {ctx.attempt} {me} {worker_pid()} "
        f"{process_start_ticks(me)} {time.monotonic():.6f}\n",
    )


def _log_end(ctx: JobContext, out: Path) -> None:
    _log(out, f"end {ctx.job.id} {ctx.attempt} {os.getpid()} {time.monotonic():.6f}\n")


@handlers.register("data_validation")
def effect(ctx: JobContext) -> dict[str, Any]:
    out = Path(ctx.parameters["out"])
    _log_start(ctx, out)
    for stale in out.glob(f".{ctx.job.id}.*.tmp"):  # left by a killed attempt
        stale.unlink(missing_ok=True)
    time.sleep(float(ctx.parameters.get("work_seconds", 0.005)))
    final = out / ctx.job.id
    tmp = out / f".{ctx.job.id}.{ctx.attempt}.{os.getpid()}.tmp"
    payload = json.dumps({"i": ctx.parameters["i"], "attempt": ctx.attempt})
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(payload)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, final)
        committed = True
    except FileExistsError:
        committed = False  # an earlier attempt committed it; do not do it again
    finally:
        tmp.unlink(missing_ok=True)
    _log_end(ctx, out)
    return {"committed": committed}


@handlers.register("file_extraction")
def kill_worker(ctx: JobContext) -> None:
    """SIGKILL this handler's worker. In process mode this process must die with
    it; one that does not would still run when the job's next attempt starts."""
    out = Path(ctx.parameters["out"])
    _log_start(ctx, out)
    os.kill(worker_pid(), signal.SIGKILL)
    time.sleep(10.0)
    _log_end(ctx, out)
