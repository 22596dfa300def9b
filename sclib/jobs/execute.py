"""Running one job's handler and recording how it ended: the shared core of the
worker's thread mode and of a queue's immediate mode (:func:`run_inline`).

It imports the queue only for annotations; :meth:`JobQueue.run_until_idle` calls
:func:`run_inline`, and the worker builds on :func:`execute_job` and
:func:`record_outcome`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import socket
import traceback
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from sclib.errors import (
    ConfigurationError,
    DatasetConflict,
    InvalidInput,
    JobCancelled,
    JobTimeout,
    LeaseLost,
    SclibError,
)
from sclib.jobs.context import JobContext
from sclib.jobs.registry import Handler, HandlerRegistry
from sclib.logs import log_context
from sclib.models import Job

if TYPE_CHECKING:
    from sclib.jobs.queue import JobQueue

__all__ = ["OutcomeKind", "new_worker_id", "run_inline"]

# the worker's logger: one name for everything a worker does
log = logging.getLogger("sclib.jobs.worker")

OutcomeKind = Literal["ok", "error", "timeout", "cancelled", "lost", "release"]

#: share of the lease a worker keeps in hand: a job whose lease it could not renew
#: for ``lease_seconds * (1 - LEASE_MARGIN)`` is stopped (process mode: killed)
LEASE_MARGIN = 1 / 6
#: how often a job's process checks that its worker is still its parent
PARENT_CHECK_SECONDS = 0.1


def new_worker_id() -> str:
    """Unique per process start: host, pid and a random suffix."""
    return f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class _Outcome:
    kind: OutcomeKind
    result: Any = None
    message: str = ""
    fatal: bool = False  # an error a retry cannot help (SclibError.retryable False)

    @property
    def error_kind(self) -> str:
        if self.kind == "timeout":
            return "timeout"
        return "fatal" if self.fatal else "error"


def _is_fatal(exc: Exception) -> bool:
    """Whether a retry of the job cannot help: an SclibError that says so, except
    the worker's own setup (ConfigurationError, MissingDependency: an operator
    fixes it, or another worker has the extra) and a dataset found in another
    status (DatasetConflict: the next attempt reads it again)."""
    if isinstance(exc, ConfigurationError | DatasetConflict):
        return False
    return isinstance(exc, SclibError) and not exc.retryable


def _execute(handler: Handler, ctx: JobContext) -> _Outcome:
    """Run one handler call and classify how it ended. Never raises."""
    with job_log_context(ctx.job):
        return _classify(handler, ctx)


def job_log_context(job: Job) -> AbstractContextManager[None]:
    """Log records inside carry the job's id, type, dataset and owner."""
    return log_context(
        job_id=job.id, job_type=job.type, dataset=job.dataset_uuid, user=job.owner
    )


def _classify(handler: Handler, ctx: JobContext) -> _Outcome:
    try:
        result = handler(ctx)
    except JobCancelled as exc:
        return _Outcome("cancelled", message=str(exc) or "cancelled")
    except JobTimeout as exc:
        return _Outcome("timeout", message=str(exc))
    except LeaseLost as exc:
        return _Outcome("lost", message=str(exc))
    except Exception as exc:
        if ctx.cancelled:
            return _Outcome("cancelled", message=f"cancelled ({type(exc).__name__})")
        log.warning(
            "job %s (%s) attempt %s raised %s",
            ctx.job.id,
            ctx.job.type,
            ctx.attempt,
            type(exc).__name__,
            exc_info=True,
        )
        tb = traceback.format_exception_only(type(exc), exc)[-1].strip()
        return _Outcome("error", message=tb, fatal=_is_fatal(exc))
    if ctx.timed_out:
        return _Outcome("timeout", message="finished after its time limit")
    return _Outcome("ok", result=result)


def _check_result(result: Any) -> None:
    try:
        json.dumps(result, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"a job's result must be JSON-serialisable: {exc}") from None


def _record(queue: JobQueue, ctx: JobContext, outcome: _Outcome) -> str:
    """Write the outcome, fenced by the lease. Returns what happened."""
    lease = ctx.lease
    try:
        if outcome.kind == "ok":
            try:
                queue.complete(lease, outcome.result)
            except InvalidInput as exc:  # result not JSON: a handler bug
                queue.fail(lease, f"handler returned an unusable result: {exc}")
                return "failed"
            return "completed"
        if outcome.kind == "cancelled":
            queue.cancel_running(lease, outcome.message)
            return "cancelled"
        if outcome.kind == "lost":
            return "lost"
        if outcome.kind == "release":
            queue.release(lease, outcome.message)
            return "released"
        queue.fail(lease, outcome.message, kind=outcome.error_kind)
        return "timed_out" if outcome.kind == "timeout" else "failed"
    except LeaseLost:
        log.info(
            "job %s: lease lost before its outcome was stored; dropped", lease.job_id
        )
        return "lost"
    except SclibError as exc:
        # the store is unreachable: the lease will expire and the job be rescued
        log.error(
            "job %s: could not store its outcome (%s): %s",
            lease.job_id,
            outcome.kind,
            exc,
        )
        return "lost"


def run_inline(
    queue: JobQueue, handlers: HandlerRegistry, *, max_jobs: int | None = None
) -> int:
    """Claim and run jobs in this thread until none is claimable. Returns the count.

    One drain runs at a time per queue. A call made while another drain runs (a
    handler enqueueing, or another thread) marks the queue dirty and returns at
    once; the running drain then looks again before it stops, so no job is left
    behind.
    """
    state = queue._inline
    with state["lock"]:
        if state["active"]:
            state["dirty"] = True
            return 0
        state["active"] = True
    worker_id = f"inline-{new_worker_id()}"
    types = list(handlers)
    ran = 0
    try:
        while True:
            while max_jobs is None or ran < max_jobs:
                job = queue.claim(worker_id, types, lease_seconds=600)
                if job is None:
                    break
                queue.heartbeat(job.lease, lease_seconds=job.timeout_seconds + 60)
                ctx = JobContext(job)
                _record(queue, ctx, _execute(handlers[job.type], ctx))
                ran += 1
            with state["lock"]:
                if state["dirty"] and (max_jobs is None or ran < max_jobs):
                    state["dirty"] = False
                    continue
                state["active"] = False
                state["dirty"] = False
                return ran
    except BaseException:
        with state["lock"]:
            state["active"] = False
        raise
