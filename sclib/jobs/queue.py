"""JobQueue: the policy above a :class:`~sclib.backends.base.JobStore`.

The store executes atomic operations; the queue validates input, fills in per-type
defaults (priority, attempts, time limit), owns the clock and the retry policy, and,
in *immediate* mode, runs jobs inline in the caller (for notebooks and tests).
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from math import isfinite
from typing import TYPE_CHECKING, Any

from sclib.backends import open_store
from sclib.backends.base import ClaimedJob, JobFilter, JobStore, Settlement
from sclib.errors import (
    InvalidInput,
    JobCancelled,
    JobFailed,
    LeaseLost,
    WaitTimeout,
)
from sclib.jobs.policy import RetryPolicies, RetryPolicy
from sclib.jobtypes import (
    DatasetStatus,
    JobStatus,
    JobTypes,
    check_priority,
    dataset_status_trail,
)
from sclib.models import ErrorRecord, Job, JobEvent, Lease, Progress, new_job_id
from sclib.models.job import JOB_FIELDS, build_job

if TYPE_CHECKING:
    from sclib.jobs.registry import HandlerRegistry

__all__ = ["JobQueue", "QueueStats"]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]
QueueStats = dict[str, Any]


def utcnow() -> datetime:
    return datetime.now(UTC)


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"{what} must be JSON-serialisable: {exc}") from None


_ID = JOB_FIELDS.index("id")
_PARAMETERS = JOB_FIELDS.index("parameters")


def _flat_json(params: dict[Any, Any]) -> bool:
    """Whether ``params`` is plainly JSON: string keys and scalar values (most
    jobs' parameters), checked without encoding them."""
    for key, value in params.items():
        if type(key) is not str:
            return False
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, int):  # bool too
            if value.bit_length() > 2000:  # int-to-str digit limit: 640 at least
                return False  # let json.dumps say whether it can
            continue
        if type(value) is not float or not isfinite(value):
            return False
    return True


def _job_parameters(parameters: Mapping[str, Any] | None) -> dict[str, Any]:
    """A job's parameters, checked: a mapping (or nothing) of JSON values."""
    if parameters is None:
        return {}
    if not isinstance(parameters, Mapping):
        raise InvalidInput(f"parameters must be a mapping, got {type(parameters)}")
    params = dict(parameters)
    if not _flat_json(params):
        _check_json(params, "parameters")
    return params


class JobQueue:
    """Create, claim, finish and inspect jobs.

    :param store: where jobs live; see :func:`~sclib.backends.open_store`.
    :param job_types: the known job types (the seed's built-ins by default).
    :param retry_policy: backoff after errors and the crash cap.
    :param max_crashes: how many times a job's worker may vanish before the job is
        failed as a crash loop.
    :param clock: returns the current aware UTC time; injected in tests.
    :param handlers: the handlers of this application: the job types they define
        (``@handlers.register("thumbnail")``) are accepted by :meth:`enqueue`;
        with ``immediate=True`` they run jobs inline.
    :param immediate: run each job inline when it is enqueued (no worker needed).
    """

    def __init__(
        self,
        store: JobStore,
        *,
        job_types: JobTypes | None = None,
        retry_policy: RetryPolicy | None = None,
        max_crashes: int = 3,
        clock: Clock = utcnow,
        handlers: HandlerRegistry | None = None,
        immediate: bool = False,
    ) -> None:
        if max_crashes < 1:
            raise InvalidInput(f"max_crashes must be >= 1, got {max_crashes}")
        if immediate and handlers is None:
            raise InvalidInput("immediate mode needs handlers=HandlerRegistry(...)")
        self.store = store
        self.job_types = job_types or JobTypes()
        if retry_policy is None:
            # inline runs must not wait: retries are due at once in immediate mode
            retry_policy = RetryPolicy(base_delay=0.0) if immediate else RetryPolicy()
        self._default_policy = retry_policy
        self.retry_policy = retry_policy
        if handlers is not None:
            self.adopt(handlers)
        else:
            self._policies_changed()
        self.max_crashes = max_crashes
        self.clock = clock
        self.handlers = handlers
        self.immediate = immediate
        # inline drains (immediate mode): one at a time, see worker.run_inline
        self._inline: dict[str, Any] = {
            "lock": threading.Lock(),
            "active": False,
            "dirty": False,
        }

    def adopt(self, handlers: HandlerRegistry) -> None:
        """Accept the job types ``handlers`` defines (and their options)."""
        for name, config in handlers.job_types.items():
            self.job_types.register(name, config)
        self._policies_changed()

    def _policies_changed(self) -> None:
        own = self.job_types.retry_policies()
        self.retry_policy = (
            RetryPolicies(self._default_policy, own) if own else self._default_policy
        )

    @classmethod
    def open(
        cls,
        url: str,
        *,
        job_types: JobTypes | None = None,
        retry_policy: RetryPolicy | None = None,
        max_crashes: int = 3,
        clock: Clock = utcnow,
        handlers: HandlerRegistry | None = None,
        immediate: bool = False,
        **store_options: Any,
    ) -> JobQueue:
        """A queue over the store at ``url`` (``sqlite:///...`` or
        ``mongodb://...``); ``store_options`` go to :func:`~sclib.open_store`,
        the rest as in the constructor."""
        return cls(
            open_store(url, **store_options),
            job_types=job_types,
            retry_policy=retry_policy,
            max_crashes=max_crashes,
            clock=clock,
            handlers=handlers,
            immediate=immediate,
        )

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> JobQueue:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JobQueue({self.store!r})"

    # -- producing -------------------------------------------------------------

    def enqueue(
        self,
        job_type: str,
        parameters: Mapping[str, Any] | None = None,
        *,
        dataset_uuid: str | None = None,
        owner: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        idempotency_key: str | None = None,
        depends_on: Iterable[str] = (),
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
    ) -> Job:
        """Add a job and return it as stored.

        With an ``idempotency_key`` that was used before, nothing new is created and
        the existing job is returned. ``run_at`` (or ``delay``) schedules the job;
        ``depends_on`` holds it back until every listed job has completed (and
        cancels it if one of them fails or is cancelled).
        """
        job = self._new_job(
            job_type,
            parameters,
            self.clock(),
            dataset_uuid=dataset_uuid,
            owner=owner,
            priority=priority,
            run_at=run_at,
            delay=delay,
            idempotency_key=idempotency_key,
            depends_on=depends_on,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
        )
        stored, created = self.store.enqueue(job)
        if created:
            log.debug("enqueued %s job %s", job_type, stored.id)
        if self.immediate and created:
            self.run_until_idle()
            return self.store.get(stored.id)
        return stored

    def enqueue_many(
        self,
        job_type: str,
        parameters: Iterable[Mapping[str, Any] | None],
        *,
        dataset_uuid: str | None = None,
        owner: str | None = None,
        priority: int | None = None,
        run_at: datetime | None = None,
        delay: float | timedelta | None = None,
        depends_on: Iterable[str] = (),
        max_attempts: int | None = None,
        timeout_seconds: float | None = None,
    ) -> list[Job]:
        """One job of ``job_type`` per item of ``parameters``, with the options
        :meth:`enqueue` takes (the same for every job), stored together: on
        SQLite in one transaction, so all are added or none, at a fraction of
        the cost of one call each. Every job is checked before any is stored.
        Returns the jobs as stored, in order."""
        if isinstance(parameters, Mapping):
            raise InvalidInput(
                "parameters must be an iterable of mappings, one per job; for one "
                "job, call enqueue"
            )
        if isinstance(depends_on, str):
            raise InvalidInput(
                f"depends_on must be a list of job ids, got {depends_on!r}"
            )
        now = self.clock()
        deps = tuple(depends_on)
        items = iter(parameters)
        try:
            first = next(items)
        except StopIteration:
            return []
        # the first job is checked against every rule; the others differ from it
        # only in id and parameters, so they are copies with those two checked
        template = self._new_job(
            job_type,
            first,
            now,
            dataset_uuid=dataset_uuid,
            owner=owner,
            priority=priority,
            run_at=run_at,
            delay=delay,
            idempotency_key=None,
            depends_on=deps,
            max_attempts=max_attempts,
            timeout_seconds=timeout_seconds,
        )
        jobs = [template]
        values = [getattr(template, name) for name in JOB_FIELDS]
        for item in items:
            values[_ID] = new_job_id()
            values[_PARAMETERS] = _job_parameters(item)
            jobs.append(build_job(*values))
        stored = self.store.enqueue_many(jobs)
        log.debug("enqueued %d %s jobs", len(stored), job_type)
        if self.immediate:
            self.run_until_idle()
            return [self.store.get(job.id) for job in stored]
        return stored

    def _new_job(
        self,
        job_type: str,
        parameters: Mapping[str, Any] | None,
        now: datetime,
        *,
        dataset_uuid: str | None,
        owner: str | None,
        priority: int | None,
        run_at: datetime | None,
        delay: float | timedelta | None,
        idempotency_key: str | None,
        depends_on: Iterable[str],
        max_attempts: int | None,
        timeout_seconds: float | None,
    ) -> Job:
        """A new job checked against every rule :meth:`enqueue` states."""
        config = self.job_types.require(job_type)
        params = _job_parameters(parameters)
        prio = config.priority if priority is None else check_priority(priority)
        attempts = config.max_attempts if max_attempts is None else max_attempts
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise InvalidInput(
                f"max_attempts must be an integer >= 1, got {attempts!r}"
            )
        timeout = config.timeout_seconds if timeout_seconds is None else timeout_seconds
        if not isinstance(timeout, int | float) or not timeout > 0:
            raise InvalidInput(f"timeout_seconds must be positive, got {timeout!r}")
        for name, value in (
            ("dataset_uuid", dataset_uuid),
            ("owner", owner),
            ("idempotency_key", idempotency_key),
        ):
            if value is not None and (not isinstance(value, str) or not value):
                raise InvalidInput(f"{name} must be a non-empty string, got {value!r}")
        deps = tuple(depends_on)
        if isinstance(depends_on, str) or not all(
            isinstance(d, str) and d for d in deps
        ):
            raise InvalidInput(
                f"depends_on must be a list of job ids, got {depends_on!r}"
            )
        if run_at is not None and delay is not None:
            raise InvalidInput("give run_at or delay, not both")
        if run_at is not None:
            if run_at.tzinfo is None:
                raise InvalidInput(
                    "run_at must be timezone-aware (e.g. datetime.now(timezone.utc))"
                )
            when = run_at.astimezone(UTC)
        elif delay is not None:
            seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
            if seconds < 0:
                raise InvalidInput(f"delay must not be negative, got {delay!r}")
            when = now + timedelta(seconds=seconds)
        else:
            when = now
        text = str.__str__  # plain str and int, as a store gives them back
        return Job(
            id=new_job_id(),
            type=text(job_type),
            status=JobStatus.PENDING,
            priority=int.__int__(prio),
            parameters=params,
            dataset_uuid=None if dataset_uuid is None else text(dataset_uuid),
            owner=None if owner is None else text(owner),
            max_attempts=int.__int__(attempts),
            max_crashes=self.max_crashes,
            timeout_seconds=float(timeout),
            run_at=when,
            idempotency_key=None if idempotency_key is None else text(idempotency_key),
            depends_on=tuple(dict.fromkeys(deps)),
            created_at=now,
            updated_at=now,
        )

    def create_job(
        self,
        dataset_uuid: str,
        job_type: str,
        parameters: Mapping[str, Any] | None = None,
        priority: int | None = None,
        **kwargs: Any,
    ) -> str:
        """The seed's ``create_job(dataset_uuid, job_type, parameters, priority)``.

        Returns the new job's id; see :meth:`enqueue` for the other options.
        """
        return self.enqueue(
            job_type, parameters, dataset_uuid=dataset_uuid, priority=priority, **kwargs
        ).id

    # -- consuming (used by Worker; fenced by the lease) -----------------------

    def claim(
        self,
        worker_id: str,
        types: Sequence[str] | None = None,
        *,
        lease_seconds: float = 30.0,
    ) -> Job | None:
        """Take the next claimable job for ``worker_id``, or ``None``."""
        now = self.clock()
        return self.store.claim(
            worker_id, types, now, now + timedelta(seconds=lease_seconds)
        )

    def heartbeat(
        self, lease: Lease, progress: Progress | None = None, *, lease_seconds: float
    ) -> bool:
        """Extend the lease; returns True if cancellation was requested."""
        now = self.clock()
        return self.store.heartbeat(
            lease, now, now + timedelta(seconds=lease_seconds), progress
        )

    def complete(self, lease: Lease, result: Any = None) -> Job:
        _check_json(result, "a job's result")
        return self.store.complete(lease, self.clock(), result)

    def fail(
        self, lease: Lease, error: str | BaseException, *, kind: str = "error"
    ) -> Job:
        """Record a failed attempt; retried with backoff until ``max_attempts``."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        now = self.clock()
        record = ErrorRecord(lease.attempt, now, text, lease.worker_id, kind)
        return self.store.fail(lease, now, record, self.retry_policy)

    def cancel_running(self, lease: Lease, message: str = "cancelled") -> Job:
        return self.store.cancel_running(lease, self.clock(), message)

    def release(self, lease: Lease, message: str = "worker shutting down") -> Job:
        return self.store.release(lease, self.clock(), message)

    def settle_and_claim(
        self,
        settlements: Sequence[Settlement],
        worker_id: str,
        types: Sequence[str] | None = None,
        *,
        lease_seconds: float = 30.0,
        limit: int = 1,
        held: bool = False,
    ) -> tuple[builtins.list[LeaseLost | None], builtins.list[ClaimedJob]]:
        """Record finished attempts and claim up to ``limit`` jobs, in one step.

        This is a worker's hot path: on SQLite it is one transaction however many
        jobs it settles and claims. With ``held``, the jobs are claimed *held*:
        until :meth:`record_started` is called for one, a rescue of it counts no
        crash (see :meth:`JobStore.claim_held`).
        """
        now = self.clock()
        return self.store.settle_and_claim(
            settlements,
            now,
            self.retry_policy,
            worker_id,
            types,
            now + timedelta(seconds=lease_seconds),
            limit,
            held=held,
        )

    def record_started(
        self, leases: Sequence[Lease], *, lease_seconds: float
    ) -> builtins.list[LeaseLost | None]:
        """End the hold of these held attempts, whose handlers start now, and
        renew their leases; per lease ``None`` or the :class:`LeaseLost` it met."""
        now = self.clock()
        return self.store.record_started(
            leases, now, now + timedelta(seconds=lease_seconds)
        )

    def heartbeat_many(
        self,
        beats: Sequence[tuple[Lease, Progress | None]],
        *,
        lease_seconds: float,
    ) -> builtins.list[bool | LeaseLost]:
        """Heartbeat several leases at once; see :meth:`heartbeat`."""
        now = self.clock()
        return self.store.heartbeat_many(
            beats, now, now + timedelta(seconds=lease_seconds)
        )

    def failure(
        self, lease: Lease, error: str | BaseException, *, kind: str = "error"
    ) -> Settlement:
        """A ``fail`` settlement for :meth:`settle_and_claim`."""
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        record = ErrorRecord(lease.attempt, self.clock(), text, lease.worker_id, kind)
        return Settlement(lease, "fail", error=record)

    def rescue_expired(self, limit: int = 100) -> builtins.list[Job]:
        """Take back jobs whose worker stopped renewing its lease."""
        rescued = self.store.rescue_expired(self.clock(), self.retry_policy, limit)
        for job in rescued:
            log.warning(
                "rescued job %s (%s) from a vanished worker: now %s",
                job.id,
                job.type,
                job.status.value,
            )
        return rescued

    # -- operating -------------------------------------------------------------

    def cancel(self, job_id: str, reason: str = "cancelled by request") -> Job:
        """Cancel a pending job now; ask the worker of a running job to stop."""
        return self.store.request_cancel(job_id, self.clock(), reason)

    def retry(self, job_id: str) -> Job:
        """Run a failed or cancelled job again, with a fresh attempt budget."""
        job = self.store.retry(job_id, self.clock())
        if self.immediate:
            self.run_until_idle()
            return self.store.get(job_id)
        return job

    def get(self, job_id: str) -> Job:
        return self.store.get(job_id)

    def wait(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        raise_on_failure: bool = True,
    ) -> Job:
        """Block until the job has finished; return it once completed.

        A failed job raises :class:`~sclib.errors.JobFailed` (its last error in the
        message, the job in ``.job``), a cancelled one
        :class:`~sclib.errors.JobCancelled`; with ``raise_on_failure=False`` the
        job is returned whatever its final status. Past ``timeout`` seconds,
        :class:`~sclib.errors.WaitTimeout` (a ``TimeoutError``); the job goes on.
        The store is polled, first every 50 ms, then less often up to
        ``poll_interval``.
        """
        deadline = self._wait_deadline(timeout, poll_interval)
        delay = min(0.05, poll_interval)
        while True:
            job = self.store.get(job_id)
            if job.status.finished:
                return self._waited(job, raise_on_failure)
            pause = self._wait_pause(job_id, deadline, delay)
            time.sleep(pause)
            delay = min(poll_interval, delay * 2)

    async def wait_async(
        self,
        job_id: str,
        *,
        timeout: float | None = None,
        poll_interval: float = 1.0,
        raise_on_failure: bool = True,
    ) -> Job:
        """:meth:`wait` for code in an event loop: the store is read in a worker
        thread and the loop sleeps between reads, so other tasks run meanwhile."""
        import asyncio

        deadline = self._wait_deadline(timeout, poll_interval)
        delay = min(0.05, poll_interval)
        while True:
            job = await asyncio.to_thread(self.store.get, job_id)
            if job.status.finished:
                return self._waited(job, raise_on_failure)
            await asyncio.sleep(self._wait_pause(job_id, deadline, delay))
            delay = min(poll_interval, delay * 2)

    @staticmethod
    def _wait_deadline(timeout: float | None, poll_interval: float) -> float | None:
        if poll_interval <= 0:
            raise InvalidInput(f"poll_interval must be positive, got {poll_interval}")
        if timeout is not None and timeout < 0:
            raise InvalidInput(f"timeout must not be negative, got {timeout}")
        return None if timeout is None else time.monotonic() + timeout

    @staticmethod
    def _wait_pause(job_id: str, deadline: float | None, delay: float) -> float:
        if deadline is None:
            return delay
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeout(f"job {job_id} has not finished yet")
        return min(delay, left)

    @staticmethod
    def _waited(job: Job, raise_on_failure: bool) -> Job:
        if raise_on_failure and job.status == JobStatus.FAILED:
            raise JobFailed(job)
        if raise_on_failure and job.status == JobStatus.CANCELLED:
            raise JobCancelled(f"job {job.id} ({job.type}) was cancelled", job)
        return job

    def list(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        dataset_uuid: str | None = None,
        owner: str | None = None,
        limit: int = 50,
        offset: int = 0,
        after: str | None = None,
    ) -> builtins.list[Job]:
        """Jobs in creation order (oldest first), filtered and paginated: by
        ``offset``, or, at the same cost on any page, by ``after`` (the id of
        the last job of the previous page)."""
        if status is not None:
            self._check_status(status)
        if not 1 <= limit <= 10_000:
            raise InvalidInput(f"limit must lie in 1..10000, got {limit}")
        if offset < 0:
            raise InvalidInput(f"offset must not be negative, got {offset}")
        if after is not None and (not isinstance(after, str) or not after):
            raise InvalidInput(f"after must be a job id, got {after!r}")
        return self.store.list_jobs(
            JobFilter(status, job_type, dataset_uuid, owner, after=after),
            limit=limit,
            offset=offset,
        )

    @staticmethod
    def _check_status(status: str) -> None:
        try:
            JobStatus(status)
        except ValueError:
            known = ", ".join(s.value for s in JobStatus)
            raise InvalidInput(
                f"unknown job status {status!r}; known: {known}"
            ) from None

    def count(
        self,
        *,
        status: str | None = None,
        job_type: str | None = None,
        dataset_uuid: str | None = None,
        owner: str | None = None,
    ) -> int:
        """How many jobs :meth:`list` would page through with these filters."""
        if status is not None:
            self._check_status(status)
        return self.store.count_jobs(JobFilter(status, job_type, dataset_uuid, owner))

    def dataset_status(self, dataset_uuid: str) -> DatasetStatus | None:
        """The legacy status string of a dataset, derived from its jobs.

        ``None`` if the dataset has no jobs. Raises
        :class:`~sclib.errors.InvalidTransition` if its jobs describe a history the
        legacy statuses cannot represent (see :func:`~sclib.jobtypes.
        dataset_status_trail`).
        """
        jobs: builtins.list[Job] = []
        while True:
            page = self.list(dataset_uuid=dataset_uuid, limit=1000, offset=len(jobs))
            jobs += page
            if len(page) < 1000:
                break
        if not jobs:
            return None
        trail = dataset_status_trail(
            (j.type, j.status.value, j.failures + j.crashes) for j in jobs
        )
        return trail[-1]

    def events(self, job_id: str) -> builtins.list[JobEvent]:
        return self.store.events(job_id)

    def stats(self) -> QueueStats:
        """Counts by status, by type, and by type then status."""
        by_status = {s.value: 0 for s in JobStatus}
        by_type: dict[str, int] = {}
        by_type_status: dict[str, dict[str, int]] = {}
        total = 0
        for (status, job_type), n in self.store.counts().items():
            by_status[status] = by_status.get(status, 0) + n
            by_type[job_type] = by_type.get(job_type, 0) + n
            by_type_status.setdefault(job_type, {})[status] = n
            total += n
        return {
            "total": total,
            "by_status": by_status,
            "by_type": by_type,
            "by_type_status": by_type_status,
        }

    def delete_finished(
        self, older_than: timedelta, *, limit: int | None = None
    ) -> int:
        """Delete jobs that finished more than ``older_than`` ago (at most
        ``limit``, the oldest first); return how many."""
        if older_than < timedelta(0):
            raise InvalidInput(f"older_than must not be negative, got {older_than}")
        if limit is not None and limit < 1:
            raise InvalidInput(f"limit must be >= 1, got {limit}")
        return self.store.delete_finished(self.clock() - older_than, limit=limit)

    # -- immediate mode ----------------------------------------------------------

    def run_until_idle(self, *, max_jobs: int | None = None) -> int:
        """Run claimable jobs inline in this thread until none is left.

        Returns how many jobs ran. This is what immediate mode calls after each
        enqueue; it also serves tests and notebooks that want to drain a queue
        without a worker. Time limits are not enforced inline.
        """
        if self.handlers is None:
            raise InvalidInput("run_until_idle needs handlers=HandlerRegistry(...)")
        from sclib.jobs.execute import run_inline

        return run_inline(self, self.handlers, max_jobs=max_jobs)
