"""JobContext: what a handler gets, and how it talks back to its worker.

The handler reports progress with :meth:`JobContext.report` (cheap: it only stores
the latest value; the worker's heartbeat thread sends it) and calls
:meth:`JobContext.check` between steps, which raises :class:`~sclib.errors.
JobCancelled` once cancellation was requested, :class:`~sclib.errors.JobTimeout`
past the time limit, and :class:`~sclib.errors.LeaseLost` if the job was taken
back from this worker.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sclib.errors import JobCancelled, JobTimeout, LeaseLost
from sclib.models import Job, Lease, Progress

if TYPE_CHECKING:
    from sclib.backends.base import ClaimedJob

__all__ = ["JobContext"]


class JobContext:
    """The running job, as its handler sees it."""

    def __init__(self, job: Job | ClaimedJob, *, deadline: float | None = None) -> None:
        # a worker passes the ClaimedJob: the full Job is built on first use
        if isinstance(job, Job):
            self._job: Job | None = job
            self._claimed: ClaimedJob | None = None
        else:
            self._job, self._claimed = None, job
        self.lease: Lease = job.lease
        #: ``time.monotonic()`` value past which the job has timed out
        self.deadline = deadline
        self._progress: Progress | None = None
        self._lock = threading.Lock()
        # plain flags: set once by the worker, read by the handler (a bool store
        # is atomic in CPython); an Event is made only if the handler sleeps
        self._cancelled = False
        self._wakeup: threading.Event | None = None
        self._timed_out = False
        self._lost = False
        self._stop_reason = ""

    # -- what the handler reads -------------------------------------------------

    @property
    def job(self) -> Job:
        """The job as it was claimed."""
        job = self._job
        if job is None:
            assert self._claimed is not None
            job = self._job = self._claimed.job
        return job

    @property
    def parameters(self) -> Mapping[str, Any]:
        return self.job.parameters

    @property
    def attempt(self) -> int:
        return self.lease.attempt

    @property
    def cancelled(self) -> bool:
        """True once cancellation was requested (or the worker is shutting down)."""
        return self._cancelled

    @property
    def should_stop(self) -> bool:
        return self._cancelled or self._timed_out or self._lost

    def check(self) -> None:
        """Raise if the handler should stop now; call it between steps."""
        if self._lost:
            raise LeaseLost(self.lease.job_id, self.lease.worker_id, self.lease.attempt)
        if self._timed_out or (
            self.deadline is not None and time.monotonic() > self.deadline
        ):
            self._timed_out = True
            raise JobTimeout(
                f"job {self.job.id} ran past its time limit of "
                f"{self.job.timeout_seconds:g}s"
            )
        if self._cancelled:
            raise JobCancelled(self._stop_reason or f"job {self.job.id} was cancelled")

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early (and raising through :meth:`check`) if told to stop."""
        end = time.monotonic() + seconds
        while True:
            self.check()
            left = end - time.monotonic()
            if left <= 0:
                return
            self._event().wait(min(left, 0.05))

    def report(
        self,
        percentage: float | None = None,
        *,
        bytes_done: int | None = None,
        bytes_total: int | None = None,
        message: str = "",
    ) -> None:
        """Record progress; the next heartbeat stores it."""
        if percentage is None and bytes_done is not None and bytes_total:
            percentage = 100.0 * bytes_done / bytes_total
        with self._lock:
            self._progress = Progress(percentage, bytes_done, bytes_total, message)

    def _event(self) -> threading.Event:
        with self._lock:
            if self._wakeup is None:
                self._wakeup = threading.Event()
                if self.should_stop:
                    self._wakeup.set()
            return self._wakeup

    def _wake(self) -> None:
        event = self._wakeup
        if event is not None:
            event.set()

    # -- what the worker drives -------------------------------------------------

    def take_progress(self) -> Progress | None:
        """The progress reported since the last call, if any."""
        with self._lock:
            progress, self._progress = self._progress, None
        return progress

    def request_cancel(self, reason: str = "") -> None:
        self._stop_reason = reason
        self._cancelled = True
        self._wake()

    def mark_timed_out(self) -> None:
        self._timed_out = True
        self._wake()  # a handler sleeping in ctx.sleep() notices at once

    def mark_lost(self) -> None:
        self._lost = True
        self._wake()

    @property
    def timed_out(self) -> bool:
        return self._timed_out

    @property
    def lost(self) -> bool:
        return self._lost
