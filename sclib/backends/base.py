"""The storage seam: what a job store must do, and nothing more.

A :class:`JobStore` carries out single atomic operations on stored jobs. It decides
nothing by itself: priorities, backoff and crash caps come from the caller
(:class:`~sclib.JobQueue` and its :class:`~sclib.jobs.policy.RetryPolicy`). The
semantics every implementation must keep are written down as executable tests in
:mod:`sclib.testing.jobstore`; a new backend passes that suite or it is not done.

Two rules hold for every method:

* **Atomic**: each call is one state-guarded write (one SQLite write transaction, one
  MongoDB ``find_one_and_update`` where it can be one). Two callers racing for the
  same job cannot both win.
* **Fenced**: every write a worker makes after its claim (heartbeat, record_started,
  complete, fail, cancel, release) is conditioned on job id + worker id + attempt +
  ``running``. A worker that lost its lease gets :class:`~sclib.errors.LeaseLost` and
  nothing changes.

A worker claims jobs *held* (``settle_and_claim(..., held=True)``): the attempt is
``running`` under its lease, but its handler is not known to have started. A held
attempt whose lease expires goes back to ``pending`` without a crash charge (the
job's ``held_rescues`` grows instead); :meth:`JobStore.record_started` ends the hold
before a handler runs, and from then on an expired lease counts as a crash.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from sclib.errors import LeaseLost, SclibError
from sclib.models import ErrorRecord, Job, JobEvent, Lease, Progress

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy

__all__ = ["ClaimedJob", "JobFilter", "JobStore", "Settlement", "WorkerRecord"]

_FINISHED_STATUSES = ("completed", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Which jobs :meth:`JobStore.list_jobs` returns; ``None`` means any.

    ``after`` is a job id: only jobs created after it (ids grow with creation),
    so that the next page starts where the last one ended at the cost of one
    index seek, whatever the number of jobs before it (keyset pagination; an
    offset must count every job it skips).
    """

    status: str | None = None
    type: str | None = None
    dataset_uuid: str | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    after: str | None = None


@dataclass(frozen=True, slots=True)
class Settlement:
    """How a worker's attempt ended, to be written by :meth:`JobStore.settle_and_claim`.

    ``complete`` takes ``result``; ``fail`` takes ``error``; ``cancel`` and
    ``release`` take ``message``.
    """

    lease: Lease
    kind: Literal["complete", "fail", "cancel", "release"]
    result: Any = None
    error: ErrorRecord | None = None
    message: str = ""


@dataclass(frozen=True, slots=True)
class WorkerRecord:
    """A worker's last sign of life, written by its heartbeat thread.

    ``info`` holds what the worker says about itself (host, pid, types,
    concurrency, mode); ``first_seen`` is when this worker id first reported.
    """

    worker_id: str
    first_seen: datetime
    last_seen: datetime
    info: Mapping[str, Any]


class ClaimedJob:
    """A job a worker has just claimed: its lease, type and time limit at once, the
    full :class:`~sclib.models.Job` (as read by the claim) only when asked for.

    A worker needs only the first three to run a job and fence its outcome; most
    short jobs never look at the rest, so a store may defer building it.

    ``held`` says the claim was made held (see :meth:`JobStore.settle_and_claim`):
    a rescue of this attempt costs the job no crash until
    :meth:`JobStore.record_started` is called for it. ``held_rescues`` is how many
    earlier held attempts of the job were taken back that way.
    """

    __slots__ = (
        "_build",
        "_job",
        "_source",
        "held",
        "held_rescues",
        "lease",
        "timeout_seconds",
        "type",
    )

    def __init__(
        self,
        lease: Lease,
        type: str,
        timeout_seconds: float,
        job: Job | None = None,
        build: Callable[[Any], Job] | None = None,
        source: Any = None,
        *,
        held: bool = False,
        held_rescues: int = 0,
    ) -> None:
        if job is None and build is None:
            raise ValueError("a ClaimedJob needs the job or a way to build it")
        self.lease = lease
        self.type = type
        self.timeout_seconds = timeout_seconds
        self.held = held
        self.held_rescues = held_rescues
        self._job = job
        self._build = build
        self._source = source

    @classmethod
    def of(cls, job: Job) -> ClaimedJob:
        return cls(job.lease, job.type, job.timeout_seconds, job=job)

    @property
    def id(self) -> str:
        return self.lease.job_id

    @property
    def attempts(self) -> int:
        return self.lease.attempt

    @property
    def job(self) -> Job:
        """The job as the claim read it (built on first use)."""
        job = self._job
        if job is None:
            assert self._build is not None
            job = self._job = self._build(self._source)
            self._build = self._source = None
        return job

    def __repr__(self) -> str:
        held = ", held" if self.held else ""
        return f"ClaimedJob({self.lease!r}, type={self.type!r}{held})"


class JobStore(ABC):
    """Durable storage for jobs. See the module docstring for the rules."""

    #: Several processes may share this store (a file or a server, not memory).
    shared_between_processes: ClassVar[bool] = True
    #: The URL scheme(s) this store is opened with.
    schemes: ClassVar[tuple[str, ...]] = ()

    # -- producing -------------------------------------------------------------

    @abstractmethod
    def enqueue(self, job: Job) -> tuple[Job, bool]:
        """Store a new ``pending`` job; return ``(job, created)``.

        If ``job.idempotency_key`` is already used, nothing is written and the
        existing job is returned with ``created=False``. ``depends_on`` ids must
        exist (else :class:`~sclib.errors.JobNotFound`, nothing written); a job whose
        dependency already failed or was cancelled is stored as ``cancelled``.
        """

    def enqueue_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Store several new jobs as :meth:`enqueue` does; the stored jobs, in
        order (for a reused idempotency key, the existing job). The default calls
        :meth:`enqueue` for each; a store that can should write them in one
        transaction, all or none (SQLite does)."""
        return [self.enqueue(job)[0] for job in jobs]

    # -- consuming (fenced) ----------------------------------------------------

    @abstractmethod
    def claim(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
    ) -> Job | None:
        """Atomically take the next claimable job, or return ``None``.

        Claimable: ``pending``, ``run_at <= now``, every dependency completed, type in
        ``types`` (any type if ``None``). Order: priority (1 first), then ``run_at``,
        then id. The job comes back as it is after the claim: ``running``, held by
        ``worker_id`` until ``lease_until``, ``attempts`` one higher.
        """

    @abstractmethod
    def heartbeat(
        self,
        lease: Lease,
        now: datetime,
        lease_until: datetime,
        progress: Progress | None = None,
    ) -> bool:
        """Extend the lease (and store progress); return whether cancel was asked."""

    @abstractmethod
    def complete(self, lease: Lease, now: datetime, result: Any = None) -> Job:
        """Mark the job ``completed`` with ``result``; unblocks its dependents."""

    @abstractmethod
    def fail(
        self, lease: Lease, now: datetime, error: ErrorRecord, policy: RetryPolicy
    ) -> Job:
        """Record an error; retry after the policy's backoff or end in ``failed``.

        A final failure cancels the jobs that depend on this one.
        """

    @abstractmethod
    def cancel_running(self, lease: Lease, now: datetime, message: str) -> Job:
        """The worker stopped a job whose cancellation was requested: ``cancelled``."""

    @abstractmethod
    def release(self, lease: Lease, now: datetime, message: str) -> Job:
        """Give a running job back (graceful shutdown): ``pending``, claimable now.

        ``attempts`` stays as it is, so the lease of the released attempt stays dead.
        """

    # -- batched forms (a worker's hot path) -----------------------------------
    #
    # The defaults loop over the single operations; a store that can do better
    # (SQLite: one transaction) overrides them. The semantics are the same.

    def claim_many(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
        limit: int,
    ) -> list[Job]:
        """Claim up to ``limit`` jobs, in claim order."""
        jobs: list[Job] = []
        while len(jobs) < limit:
            try:
                job = self.claim(worker_id, types, now, lease_until)
            except SclibError:
                if not jobs:
                    raise
                break  # keep what was claimed: dropping it would strand those jobs
            if job is None:
                break
            jobs.append(job)
        return jobs

    def heartbeat_many(
        self,
        beats: Sequence[tuple[Lease, Progress | None]],
        now: datetime,
        lease_until: datetime,
    ) -> list[bool | LeaseLost]:
        """Heartbeat each lease; per lease: cancel requested, or the LeaseLost."""
        out: list[bool | LeaseLost] = []
        for lease, progress in beats:
            try:
                out.append(self.heartbeat(lease, now, lease_until, progress))
            except LeaseLost as exc:
                out.append(exc)
        return out

    def settle_and_claim(
        self,
        settlements: Sequence[Settlement],
        now: datetime,
        policy: RetryPolicy,
        worker_id: str,
        types: Sequence[str] | None,
        lease_until: datetime,
        limit: int,
        *,
        held: bool = False,
    ) -> tuple[list[LeaseLost | None], list[ClaimedJob]]:
        """Record finished attempts, then claim up to ``limit`` new jobs.

        Returns, per settlement, ``None`` or the :class:`LeaseLost` it met (that
        one changed nothing), and the claimed jobs as :class:`ClaimedJob` s (a
        store may build each full :class:`Job` only when it is asked for). With
        ``held``, the jobs are claimed as :meth:`claim_held` claims them.
        """
        outcomes = [self.settle(item, now, policy) for item in settlements]
        if held:
            return outcomes, self.claim_held(worker_id, types, now, lease_until, limit)
        jobs = self.claim_many(worker_id, types, now, lease_until, limit)
        return outcomes, [ClaimedJob.of(job) for job in jobs]

    def claim_held(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
        limit: int,
    ) -> list[ClaimedJob]:
        """Claim up to ``limit`` jobs like :meth:`claim_many`, but *held*: each
        attempt is ``running`` under its lease, and its handler is not known to
        have started. If the lease of a held attempt expires, :meth:`rescue_expired`
        makes the job pending again without counting a crash (and adds one to its
        ``held_rescues``); :meth:`record_started` ends the hold. Each
        :class:`ClaimedJob` says ``held=True`` and the job's ``held_rescues``.

        The default cannot hold: it claims as :meth:`claim_many` does
        (``held=False``), so every rescue counts as a crash, as it always did.
        """
        jobs = self.claim_many(worker_id, types, now, lease_until, limit)
        return [ClaimedJob.of(job) for job in jobs]

    def record_started(
        self, leases: Sequence[Lease], now: datetime, lease_until: datetime
    ) -> list[LeaseLost | None]:
        """A worker is about to start the handlers of these held attempts: end
        their hold (from now on an expired lease counts as a crash), renew their
        leases to ``lease_until`` and add a ``started`` event to each job's
        history. Fenced per lease; returns, per lease, ``None`` or the
        :class:`LeaseLost` it met (that one changed nothing).

        The default renews the leases (a store that cannot hold has nothing
        more to record).
        """
        out: list[LeaseLost | None] = []
        for lease in leases:
            try:
                self.heartbeat(lease, now, lease_until)
                out.append(None)
            except LeaseLost as exc:
                out.append(exc)
        return out

    def settle(
        self, item: Settlement, now: datetime, policy: RetryPolicy
    ) -> LeaseLost | None:
        """Write one settlement; return the LeaseLost it met, if any."""
        try:
            if item.kind == "complete":
                self.complete(item.lease, now, item.result)
            elif item.kind == "fail":
                assert item.error is not None
                self.fail(item.lease, now, item.error, policy)
            elif item.kind == "cancel":
                self.cancel_running(item.lease, now, item.message)
            else:
                self.release(item.lease, now, item.message)
        except LeaseLost as exc:
            return exc
        return None

    # -- operating -------------------------------------------------------------

    @abstractmethod
    def request_cancel(self, job_id: str, now: datetime, reason: str) -> Job:
        """Cancel a pending job at once, or ask the worker of a running one to stop.

        Raises :class:`~sclib.errors.InvalidJobState` for finished jobs.
        """

    @abstractmethod
    def retry(self, job_id: str, now: datetime) -> Job:
        """Operator retry of a ``failed`` or ``cancelled`` job: a fresh budget, now."""

    @abstractmethod
    def rescue_expired(
        self, now: datetime, policy: RetryPolicy, limit: int = 100
    ) -> list[Job]:
        """Take back running jobs whose lease expired before ``now``.

        Each rescue is a compare-and-set on the expired lease and counts as a crash:
        pending again (claimable now), ``cancelled`` if cancellation was requested,
        or ``failed`` once the crash cap is reached. The rescue of a *held* attempt
        (see :meth:`claim_held`) counts no crash: the job is pending again (or
        ``cancelled`` if cancellation was requested) and its ``held_rescues`` grows
        by one.
        """

    # -- reading ---------------------------------------------------------------

    @abstractmethod
    def get(self, job_id: str) -> Job:
        """The job with this id; :class:`~sclib.errors.JobNotFound` if there is none."""

    @abstractmethod
    def list_jobs(
        self, filter: JobFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        """Jobs matching ``filter`` in creation order (oldest first), paginated."""

    @abstractmethod
    def counts(self) -> Mapping[tuple[str, str], int]:
        """Number of jobs by ``(status, type)``."""

    def count_jobs(self, filter: JobFilter | None = None) -> int:
        """How many jobs match ``filter``.

        The default pages through :meth:`list_jobs`; the SQLite and MongoDB
        stores count with one query.
        """
        total, offset = 0, 0
        while True:
            page = self.list_jobs(filter, limit=1000, offset=offset)
            total += len(page)
            if len(page) < 1000:
                return total
            offset += 1000

    @abstractmethod
    def events(self, job_id: str) -> list[JobEvent]:
        """The job's history, oldest first."""

    @abstractmethod
    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        """Delete finished jobs that finished before ``before`` (at most ``limit``
        of them, the oldest first, if given); return how many."""

    def delete_jobs(self, job_ids: Sequence[str]) -> list[str]:
        """Delete the given jobs, with their history, unless they are running;
        return the ids actually deleted (unknown and running ids are skipped).

        Optional: the built-in stores implement it; the default refuses.
        """
        from sclib.errors import ConfigurationError

        raise ConfigurationError(f"{type(self).__name__} cannot delete single jobs")

    # -- monitoring (bounded queries; the defaults are slow fallbacks) ----------
    #
    # The SQLite and MongoDB stores answer each of these with indexed queries; the
    # defaults below page through list_jobs so a third-party store is correct
    # before it is fast.

    def oldest_claimable(self) -> datetime | None:
        """The earliest ``run_at`` among pending jobs with no unfinished
        dependency (``None`` if there is none). It may lie in the future."""
        best: datetime | None = None
        for job in self._all(JobFilter(status="pending")):
            if job.waiting_on == 0 and (best is None or job.run_at < best):
                best = job.run_at
        return best

    def finished_counts(
        self, start: datetime | None, end: datetime
    ) -> Mapping[tuple[str, str], int]:
        """Jobs by ``(status, type)`` that finished in ``[start, end)``
        (``start=None``: no lower bound)."""
        out: dict[tuple[str, str], int] = {}
        for status in _FINISHED_STATUSES:
            for job in self._all(JobFilter(status=status)):
                at = job.finished_at
                if at is not None and at < end and (start is None or at >= start):
                    key = (status, job.type)
                    out[key] = out.get(key, 0) + 1
        return out

    def finished_jobs(
        self,
        start: datetime,
        end: datetime,
        *,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        """Jobs that finished in ``[start, end)``, newest first, at most ``limit``."""
        found = [
            job
            for s in ((status,) if status else _FINISHED_STATUSES)
            for job in self._all(JobFilter(status=s, owner=owner))
            if job.finished_at is not None and start <= job.finished_at < end
        ]
        found.sort(key=lambda j: (j.finished_at, j.id), reverse=True)
        return found[:limit]

    def finished_durations(
        self, start: datetime, end: datetime, *, limit: int = 50_000
    ) -> list[tuple[str, float, float]]:
        """``(type, seconds it ran, its time limit)`` of the jobs that completed
        in ``[start, end)``, newest first, at most ``limit``: what the monitor's
        performance report needs, without building whole jobs. The default
        reads :meth:`finished_jobs`; the SQLite and MongoDB stores read only
        these fields."""
        return [
            (j.type, (j.finished_at - j.started_at).total_seconds(), j.timeout_seconds)
            for j in self.finished_jobs(start, end, status="completed", limit=limit)
            if j.started_at is not None and j.finished_at is not None
        ]

    def _all(self, f: JobFilter) -> list[Job]:
        out: list[Job] = []
        while True:
            page = self.list_jobs(f, limit=1000, offset=len(out))
            out += page
            if len(page) < 1000:
                return out

    #: whether this store keeps worker records (:meth:`record_worker`)
    tracks_workers: ClassVar[bool] = False

    def record_worker(  # noqa: B027 - optional: a store without records ignores it
        self, worker_id: str, now: datetime, info: Mapping[str, Any]
    ) -> None:
        """Create or refresh this worker's record (its heartbeat thread calls it)."""

    def remove_worker(self, worker_id: str) -> None:  # noqa: B027 - optional
        """Forget a worker that stopped cleanly."""

    def list_workers(
        self, seen_since: datetime | None = None, *, limit: int = 1000
    ) -> list[WorkerRecord]:
        """Worker records seen at or after ``seen_since``, most recent first."""
        return []

    def delete_workers(self, seen_before: datetime) -> int:
        """Delete worker records last seen before ``seen_before``; return how many."""
        return 0

    def close(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Release connections. The store must not be used afterwards."""

    def __enter__(self) -> JobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
