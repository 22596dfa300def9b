"""Process mode: the side of a job that runs in its own process (its context
reports progress up a pipe, it dies with its worker) and how a worker kills one.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import sys
import threading
import time
from multiprocessing.connection import Connection
from typing import Any

from sclib.jobs.context import JobContext
from sclib.jobs.execute import PARENT_CHECK_SECONDS, _execute
from sclib.jobs.registry import Handler
from sclib.models import Job

__all__: list[str] = []

log = logging.getLogger("sclib.jobs.worker")


class _ChildContext(JobContext):
    """The context inside a child process: progress goes up a pipe."""

    def __init__(self, job: Job, conn: Connection, deadline: float | None) -> None:
        super().__init__(job, deadline=deadline)
        self._conn = conn
        self._send_lock = threading.Lock()
        self._last_sent = 0.0

    def report(self, percentage: float | None = None, **kwargs: Any) -> None:
        super().report(percentage, **kwargs)
        now = time.monotonic()
        if now - self._last_sent < 0.2:  # the heartbeat sends at most this often
            return
        progress = self.take_progress()
        if progress is not None:
            self._last_sent = now
            with self._send_lock:
                self._conn.send(("progress", progress))


_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Make this job process die with the worker that started it.

    It leads its own process group (what the handler starts joins it, and the
    worker kills the whole group). On Linux the kernel sends it SIGKILL as soon
    as the worker's thread that started it exits, the worker's death included
    (``prctl(PR_SET_PDEATHSIG)``). Everywhere, a thread checks ``os.getppid()``
    every :data:`PARENT_CHECK_SECONDS` and kills the group once the worker is no
    longer the parent. A worker that died while this interpreter was starting
    is caught by the first check, before any handler code is imported.
    """
    with contextlib.suppress(OSError):
        os.setpgid(0, 0)
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no usable libc
            pass
    if os.getppid() != parent_pid:
        os._exit(70)
    threading.Thread(
        target=_watch_parent, args=(parent_pid,), daemon=True, name="sclib-parent"
    ).start()


def _watch_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    if os.getpgid(0) == os.getpid():  # never the group this process was born in
        with contextlib.suppress(OSError):
            os.killpg(0, signal.SIGKILL)
    os._exit(70)


def _child_main(
    handler_ref: bytes, job: Job, conn: Connection, budget: float, parent_pid: int
) -> None:
    """A job process: tie its life to the worker, say it is ready, wait for the
    worker to record the start (``go``), then run the handler."""
    _die_with_parent(parent_pid)
    # the worker pickled this reference to a module-level function itself;
    # loading it imports the handler's module
    handler: Handler = pickle.loads(handler_ref)  # noqa: S301
    ctx = _ChildContext(job, conn, time.monotonic() + budget)
    conn.send(("ready",))
    while True:  # a cancel request may come before the go-ahead
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message == "go":
            break
        if message == "cancel":
            ctx.request_cancel("cancellation requested")
        else:  # "stop": the worker could not record the start
            return

    def listen() -> None:
        try:
            while True:
                message = conn.recv()
                if message == "cancel":
                    ctx.request_cancel("cancellation requested")
        except (EOFError, OSError):
            return

    threading.Thread(target=listen, daemon=True).start()
    outcome = _execute(handler, ctx)
    last = ctx.take_progress()  # a report the throttle held back
    with ctx._send_lock:
        if last is not None:
            conn.send(("progress", last))
        conn.send(("outcome", outcome))


def _kill_job_process(process: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL a job process and its group (what its handler started), and wait
    briefly until it is gone. Only while it is not yet reaped, so its pid (and
    group id) still name it."""
    if process.is_alive() and process.pid is not None:
        with contextlib.suppress(OSError):
            os.killpg(process.pid, signal.SIGKILL)  # ESRCH before its setpgid
        with contextlib.suppress(OSError):
            process.kill()
    process.join(timeout=5)
