"""JobMonitor: what the queue is doing, whether it is healthy, and cleanup.

It reads any :class:`~sclib.backends.base.JobStore` through bounded queries (counts
grouped in the database, index seeks, windows of finished jobs with a limit), so an
overview costs the same with a thousand jobs or a million. Method names follow the
seed's ``SCLib_JobMonitor``; every duration it reports is in **seconds**.

Health is the worst of four checks, each judged against :class:`HealthThresholds`:
stale jobs, the failure rate of the last hour, how long the oldest claimable job
has waited, and claimable work with no live worker. ``docs/operations.md`` explains
each one.

Workers are "live" when their heartbeat thread refreshed their record
(:meth:`JobStore.record_worker`) within ``worker_timeout_seconds``; a worker holding
a running job counts too, through the job's last heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sclib.backends.base import JobFilter, JobStore
from sclib.errors import InvalidInput, InvalidJobState, JobNotFound
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import JobStatus
from sclib.models import Job
from sclib.monitor.report import build_report
from sclib.monitor.stats import percentile
from sclib.monitor.stats import until as _until

if TYPE_CHECKING:
    from sclib.datasets import DatasetStore
    from sclib.transfers.sessions import SessionStore

__all__ = ["HealthThresholds", "JobMonitor", "percentile"]

log = logging.getLogger(__name__)

Health = Literal["healthy", "warning", "critical"]
_RANK: dict[str, int] = {"healthy": 0, "warning": 1, "critical": 2}
_UPLOAD_PREFIX = "upload:"
_MAX_RUNNING = 10_000  # running jobs read per overview (bounded by workers anyway)
_MAX_REPORT_DAYS = 366


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """When the monitor calls the system unhealthy, and what the report suggests.

    Health checks (each is ``healthy``, ``warning`` or ``critical``):

    :param worker_timeout_seconds: a worker is live if it reported within this
        long (its heartbeat thread reports every third of its lease, 10 s by
        default).
    :param stale_heartbeat_seconds: a running job whose last heartbeat is older
        than this is stale even if its lease has not expired yet; a running job
        whose lease expired is always stale (its worker is presumed gone and the
        next rescue sweep takes it back).
    :param stale_warning, stale_critical: that many stale jobs or more.
    :param failure_rate_warning, failure_rate_critical: share of the jobs that
        finished in the last hour (completed or failed; cancelled ones do not
        count) that failed for good.
    :param failure_rate_min_jobs: fewer finished jobs than this in the hour and
        the rate is not judged (two failures out of three say little).
    :param queue_age_warning_seconds, queue_age_critical_seconds: how long the
        oldest claimable job (pending, due, dependencies done) has waited.
    :param orphan_seconds: claimable work has waited this long and no worker is
        live: critical (nothing will ever run it).

    Report recommendations:

    :param report_min_jobs: a job type needs this many finished jobs in the
        report's window before its failure rate or time limits are judged.
    :param report_failure_rate: recommend looking at a type (or the whole queue)
        whose failure rate is above this.
    :param timeout_margin: recommend raising a type's time limit when more than
        ``timeout_share`` of its completed jobs took over this fraction of it.
    :param timeout_share: see ``timeout_margin``.
    """

    worker_timeout_seconds: float = 90.0
    stale_heartbeat_seconds: float = 300.0
    stale_warning: int = 1
    stale_critical: int = 5
    failure_rate_warning: float = 0.10
    failure_rate_critical: float = 0.25
    failure_rate_min_jobs: int = 5
    queue_age_warning_seconds: float = 600.0
    queue_age_critical_seconds: float = 3600.0
    orphan_seconds: float = 60.0
    report_min_jobs: int = 5
    report_failure_rate: float = 0.10
    timeout_margin: float = 0.8
    timeout_share: float = 0.10

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int | float) or value < 0:
                raise InvalidInput(f"HealthThresholds.{name} must be >= 0: {value!r}")
        if self.stale_critical < self.stale_warning:
            raise InvalidInput("stale_critical must not be below stale_warning")
        if self.failure_rate_critical < self.failure_rate_warning:
            raise InvalidInput(
                "failure_rate_critical must not be below failure_rate_warning"
            )
        if self.queue_age_critical_seconds < self.queue_age_warning_seconds:
            raise InvalidInput(
                "queue_age_critical_seconds must not be below the warning"
            )


def _iso(dt: datetime | None) -> str | None:
    return None if dt is None else dt.isoformat()


def _check(name: str, status: Health, value: Any, reason: str) -> dict[str, Any]:
    return {"name": name, "status": status, "value": value, "reason": reason}


class JobMonitor:
    """Monitoring and administration over a job queue (the seed's
    ``SCLib_JobMonitor``).

    :param queue_or_store: a :class:`~sclib.JobQueue` or a bare
        :class:`~sclib.backends.base.JobStore` (wrapped in a queue).
    :param sessions: the session store, for active uploads and upload cleanup.
    :param datasets: the dataset store, for :meth:`get_job_details`.
    :param clock: aware "now" (default: the queue's clock); whatever its zone,
        every time the monitor reports is in UTC.
    :param thresholds: see :class:`HealthThresholds`.
    """

    def __init__(
        self,
        queue_or_store: JobQueue | JobStore,
        *,
        sessions: SessionStore | None = None,
        datasets: DatasetStore | None = None,
        clock: Callable[[], datetime] | None = None,
        thresholds: HealthThresholds | None = None,
        data_dir: Path | None = None,
    ) -> None:
        if isinstance(queue_or_store, JobQueue):
            self.queue = queue_or_store
        elif isinstance(queue_or_store, JobStore):
            self.queue = JobQueue(queue_or_store, clock=clock or _utcnow)
        else:
            raise InvalidInput(
                "JobMonitor needs a JobQueue or a JobStore, got "
                f"{type(queue_or_store).__name__}"
            )
        self.store = self.queue.store
        self.sessions = sessions
        self.datasets = datasets
        #: the server's data folder: a cancelled upload's files are taken back
        self.data_dir = data_dir
        source = clock or self.queue.clock
        self.clock: Callable[[], datetime] = lambda: _as_utc(source())
        self.thresholds = thresholds or HealthThresholds()

    # -- the overview ------------------------------------------------------------

    def get_queue_overview(self) -> dict[str, Any]:
        """Counts, the oldest claimable job's wait, live workers and health."""
        now = self.clock()
        stats = self.queue.stats()
        oldest = self.store.oldest_claimable()
        age = None if oldest is None or oldest > now else (now - oldest).total_seconds()
        running = self._running()
        workers = self._workers(now, running)
        live = [w for w in workers if w["live"]]
        stale = self._stale(now, running)
        last_hour = self.store.finished_counts(now - timedelta(hours=1), _until(now))
        active_uploads = (
            None
            if self.sessions is None
            else self.sessions.count(status="active", key_prefix=_UPLOAD_PREFIX)
        )
        overview: dict[str, Any] = {
            "generated_at": now.isoformat(),
            "total": stats["total"],
            "by_status": stats["by_status"],
            "by_type": stats["by_type"],
            "by_type_status": stats["by_type_status"],
            "oldest_pending_age_seconds": age,
            "workers": workers,
            "live_workers": len(live),
            "stale_jobs": len(stale),
            "active_uploads": active_uploads,
        }
        overview["health_status"] = self._health(age, len(live), stale, last_hour)
        return overview

    def _running(self) -> list[Job]:
        return self.store.list_jobs(JobFilter(status="running"), limit=_MAX_RUNNING)

    def _workers(self, now: datetime, running: list[Job]) -> list[dict[str, Any]]:
        t = self.thresholds
        horizon = now - timedelta(seconds=t.worker_timeout_seconds)
        by_worker: dict[str, list[Job]] = {}
        for job in running:
            by_worker.setdefault(job.worker_id or "?", []).append(job)
        out: dict[str, dict[str, Any]] = {}
        for rec in self.store.list_workers(horizon - timedelta(days=1)):
            out[rec.worker_id] = {
                "worker_id": rec.worker_id,
                "last_heartbeat": rec.last_seen,
                "first_seen": _iso(rec.first_seen),
                "info": dict(rec.info),
            }
        for worker_id, jobs in by_worker.items():
            beat = max(j.updated_at for j in jobs)
            entry = out.setdefault(
                worker_id,
                {"worker_id": worker_id, "last_heartbeat": beat, "first_seen": None},
            )
            entry.setdefault("info", {})
            entry["last_heartbeat"] = max(entry["last_heartbeat"], beat)
        result = []
        for worker_id, entry in sorted(out.items()):
            last: datetime = entry["last_heartbeat"]
            entry["last_heartbeat"] = last.isoformat()
            entry["heartbeat_age_seconds"] = max(0.0, (now - last).total_seconds())
            entry["live"] = last >= horizon
            entry["current_jobs"] = [
                {
                    "job_id": j.id,
                    "job_type": j.type,
                    "dataset_uuid": j.dataset_uuid,
                    "progress": j.progress.percentage,
                    "last_heartbeat": j.updated_at.isoformat(),
                    "lease_until": _iso(j.lease_until),
                }
                for j in by_worker.get(worker_id, [])
            ]
            result.append(entry)
        return result

    def _stale(self, now: datetime, running: list[Job]) -> list[dict[str, Any]]:
        limit = timedelta(seconds=self.thresholds.stale_heartbeat_seconds)
        out = []
        for job in running:
            silent = (now - job.updated_at).total_seconds()
            if job.lease_until is not None and job.lease_until < now:
                late = (now - job.lease_until).total_seconds()
                reason = (
                    f"lease expired {late:.0f}s ago: worker {job.worker_id} is "
                    "presumed gone; the next rescue sweep takes the job back"
                )
            elif now - job.updated_at > limit:
                reason = (
                    f"no heartbeat for {silent:.0f}s (threshold "
                    f"{limit.total_seconds():.0f}s), though its lease still runs"
                )
            else:
                continue
            data = job.to_dict()
            data.update(reason=reason, heartbeat_age_seconds=silent)
            out.append(data)
        return out

    def _health(
        self,
        age: float | None,
        live_workers: int,
        stale: list[dict[str, Any]],
        last_hour: Mapping[tuple[str, str], int],
    ) -> dict[str, Any]:
        t = self.thresholds
        checks = []
        n = len(stale)
        status: Health = (
            "critical"
            if n >= t.stale_critical and n > 0
            else "warning"
            if n >= t.stale_warning and n > 0
            else "healthy"
        )
        checks.append(
            _check(
                "stale_jobs",
                status,
                n,
                f"{n} running job(s) whose lease expired or with no heartbeat for "
                f"{t.stale_heartbeat_seconds:.0f}s",
            )
        )
        failed = sum(v for (s, _), v in last_hour.items() if s == "failed")
        completed = sum(v for (s, _), v in last_hour.items() if s == "completed")
        finished = failed + completed
        rate = failed / finished if finished else None
        if rate is None or finished < t.failure_rate_min_jobs:
            status, reason = (
                "healthy",
                f"{finished} job(s) finished in the last hour (fewer than "
                f"{t.failure_rate_min_jobs}: not judged)",
            )
        else:
            status = (
                "critical"
                if rate >= t.failure_rate_critical
                else "warning"
                if rate >= t.failure_rate_warning
                else "healthy"
            )
            reason = f"{failed} of {finished} jobs finished in the last hour failed"
        checks.append(_check("failure_rate", status, rate, reason))
        if age is None:
            status, reason = "healthy", "no claimable job is waiting"
        else:
            status = (
                "critical"
                if age >= t.queue_age_critical_seconds
                else "warning"
                if age >= t.queue_age_warning_seconds
                else "healthy"
            )
            reason = f"the oldest claimable job has waited {age:.0f}s"
        checks.append(_check("queue_age", status, age, reason))
        orphaned = age is not None and age >= t.orphan_seconds and live_workers == 0
        checks.append(
            _check(
                "workers",
                "critical" if orphaned else "healthy",
                live_workers,
                f"claimable jobs have waited {age:.0f}s and no worker is live"
                if orphaned
                else f"{live_workers} live worker(s)",
            )
        )
        overall = max((c["status"] for c in checks), key=_RANK.__getitem__)
        return {"overall": overall, "checks": checks}

    # -- single jobs -------------------------------------------------------------

    def get_job_details(self, job_id: str) -> dict[str, Any]:
        """The job (its fields at the top level, as the seed reads
        ``details['status']``), its event history, and its dataset record."""
        job = self.queue.get(job_id)
        data = job.to_dict()
        data["events"] = [
            {
                "at": e.at.isoformat(),
                "kind": e.kind,
                "worker_id": e.worker_id,
                "attempt": e.attempt,
                "message": e.message,
            }
            for e in self.queue.events(job_id)
        ]
        data.update(self._retry_info(job))
        data["dataset"] = None
        if job.dataset_uuid and self.datasets is not None:
            from sclib.datasets.records import dataset_dict
            from sclib.errors import DatasetNotFound

            with contextlib.suppress(DatasetNotFound):  # the record may be gone
                data["dataset"] = dataset_dict(self.datasets.get(job.dataset_uuid))
        return data

    def get_dataset_jobs(
        self, dataset_uuid: str, *, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """A dataset's jobs in creation order (at most ``limit``), as dicts."""
        return [
            j.to_dict() for j in self.queue.list(dataset_uuid=dataset_uuid, limit=limit)
        ]

    def _retry_info(self, job: Job) -> dict[str, Any]:
        if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
            return {"retry_available": False, "retry_blocked_by": None}
        for dep in job.depends_on:
            try:
                dep_status = self.store.get(dep).status
            except JobNotFound:
                continue  # deleted by cleanup: it finished, so it cannot block
            if dep_status in (JobStatus.FAILED, JobStatus.CANCELLED):
                return {"retry_available": False, "retry_blocked_by": dep}
        return {"retry_available": True, "retry_blocked_by": None}

    def get_failed_jobs(
        self, hours: float = 24, *, owner: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Jobs that failed for good in the last ``hours``, newest first, each
        with ``retry_available`` (and ``retry_blocked_by``, a dead dependency)."""
        if not hours > 0:
            raise InvalidInput(f"hours must be positive, got {hours!r}")
        now = self.clock()
        jobs = self.store.finished_jobs(
            now - timedelta(hours=hours),
            _until(now),
            status="failed",
            owner=owner,
            limit=limit,
        )
        return [{**j.to_dict(), **self._retry_info(j)} for j in jobs]

    def retry_failed_job(self, job_id: str) -> bool:
        """Run a failed or cancelled job again; False if its state forbids it
        (:class:`~sclib.errors.JobNotFound` for an unknown id)."""
        try:
            self.queue.retry(job_id)
        except InvalidJobState as exc:
            log.info("retry of %s refused: %s", job_id, exc)
            return False
        return True

    def cancel_job(self, job_id: str, reason: str = "cancelled by an operator") -> bool:
        """Cancel a pending job or ask a running one to stop; False once finished
        (:class:`~sclib.errors.JobNotFound` for an unknown id)."""
        try:
            job = self.queue.cancel(job_id, reason)
        except InvalidJobState as exc:
            log.info("cancel of %s refused: %s", job_id, exc)
            return False
        if self.datasets is not None:
            from sclib.pipeline.flow import after_cancel

            after_cancel(self.queue, self.datasets, job, self.data_dir)
        return True

    def get_stale_jobs(self) -> list[dict[str, Any]]:
        """Running jobs whose lease expired or whose heartbeat is older than
        ``stale_heartbeat_seconds``, each with a ``reason``."""
        return self._stale(self.clock(), self._running())

    # -- the report --------------------------------------------------------------

    def get_performance_report(
        self, days: int = 7, *, sample_limit: int = 50_000
    ) -> dict[str, Any]:
        """Success rate, counts, durations by type and throughput per day.

        Counts and throughput are exact (grouped in the database). Durations are
        ``finished_at - started_at`` of completed jobs (first claim to the end,
        retries included), from the newest ``sample_limit`` of the window;
        ``durations_sampled`` says when the window held more.
        """
        if isinstance(days, bool) or not isinstance(days, int):
            raise InvalidInput(f"days must be an integer, got {days!r}")
        if not 1 <= days <= _MAX_REPORT_DAYS:
            raise InvalidInput(f"days must lie in 1..{_MAX_REPORT_DAYS}, got {days}")
        return build_report(self, days, sample_limit)

    def get_performance_metrics(self, days: int = 1) -> dict[str, Any]:
        """The seed's short form: ``avg_duration_by_type`` (seconds) and more."""
        report = self.get_performance_report(days)
        return {
            "avg_duration_by_type": {
                t: d["mean"] for t, d in report["durations_by_type"].items()
            },
            "success_rate": report["summary"]["success_rate"],
            "throughput_per_day": report["throughput_per_day"],
        }

    # -- cleanup -----------------------------------------------------------------

    def cleanup_old_data(
        self, days: float = 30, *, apply: bool = False
    ) -> dict[str, Any]:
        """Delete finished jobs, finished upload sessions and worker records
        older than ``days``; without ``apply`` only say what would go.

        Upload sessions that are ``completed``, ``cancelled`` (which includes the
        ones the server expired) or ``failed`` and untouched for ``days`` go;
        unfinished ones are the server's (``sclib uploads expire``).
        """
        if isinstance(days, bool) or not isinstance(days, int | float) or days < 1:
            raise InvalidInput(f"days must be at least 1, got {days!r}")
        now = self.clock()
        cutoff = now - timedelta(days=days)
        counts = self.store.finished_counts(None, cutoff)
        by_status: dict[str, int] = {}
        for (status, _), n in counts.items():
            by_status[status] = by_status.get(status, 0) + n
        sessions = self._old_sessions(cutoff)
        workers = [
            w.worker_id
            for w in self.store.list_workers(limit=100_000)
            if w.last_seen < cutoff
        ]
        deleted_jobs = sum(by_status.values())
        if apply:
            deleted_jobs = self.store.delete_finished(cutoff)
            assert self.sessions is not None or not sessions
            for sid in sessions:
                self.sessions.delete(sid)  # type: ignore[union-attr]
            self.store.delete_workers(cutoff)
            log.info(
                "cleanup: %d job(s), %d upload session(s), %d worker record(s)",
                deleted_jobs,
                len(sessions),
                len(workers),
            )
        return {
            "applied": apply,
            "cutoff": cutoff.isoformat(),
            "jobs": {"count": deleted_jobs, "by_status": by_status},
            "upload_sessions": {"count": len(sessions), "ids": sessions[:100]},
            "workers": {"count": len(workers), "ids": workers[:100]},
            "total": deleted_jobs + len(sessions) + len(workers),
        }

    def _old_sessions(self, cutoff: datetime) -> list[str]:
        if self.sessions is None:
            return []
        ids: list[str] = []
        for status in ("completed", "cancelled", "failed"):
            ids += [
                s.id
                for s in self.sessions.list(
                    status=status,
                    updated_before=cutoff,
                    key_prefix=_UPLOAD_PREFIX,
                    limit=10_000,
                )
            ]
        return ids


def _as_utc(now: datetime) -> datetime:
    """The clock's reading in UTC (what every time the monitor reports is in)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise InvalidInput(f"the monitor's clock must return aware times, got {now!r}")
    return now.astimezone(UTC)


def _utcnow() -> datetime:
    return datetime.now(UTC)
