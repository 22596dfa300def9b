"""The performance report of :meth:`sclib.monitor.JobMonitor.get_performance_report`.

Kept apart from the monitor so each module holds one concern. Every number is
computed from bounded queries: exact counts grouped in the database (one query
for the window, one per day of throughput) and durations from the newest
``sample_limit`` finished jobs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from sclib.monitor.stats import percentile
from sclib.monitor.stats import until as _until

if TYPE_CHECKING:
    from sclib.monitor.core import JobMonitor

__all__ = ["build_report"]


def _rate(completed: int, failed: int) -> float | None:
    finished = completed + failed
    return completed / finished if finished else None


def _tally(counts: Mapping[tuple[str, str], int]) -> dict[str, dict[str, int]]:
    by_type: dict[str, dict[str, int]] = {}
    for (status, job_type), n in counts.items():
        row = by_type.setdefault(
            job_type, {"completed": 0, "failed": 0, "cancelled": 0}
        )
        row[status] = row.get(status, 0) + n
    return by_type


def build_report(monitor: JobMonitor, days: int, sample_limit: int) -> dict[str, Any]:
    """See :meth:`JobMonitor.get_performance_report`."""
    t = monitor.thresholds
    store = monitor.store
    now = monitor.clock()
    end = _until(now)  # the window includes now
    start = now - timedelta(days=days)
    by_type = _tally(store.finished_counts(start, end))
    completed = sum(r["completed"] for r in by_type.values())
    failed = sum(r["failed"] for r in by_type.values())
    cancelled = sum(r["cancelled"] for r in by_type.values())
    summary = {
        "completed": completed,
        "failed": failed,
        "cancelled": cancelled,
        "finished": completed + failed + cancelled,
        "success_rate": _rate(completed, failed),
    }
    types_out = {
        name: {**row, "success_rate": _rate(row["completed"], row["failed"])}
        for name, row in sorted(by_type.items())
    }

    durations: dict[str, list[float]] = {}
    near_limit: dict[str, int] = {}
    sample = store.finished_durations(start, end, limit=sample_limit)
    for job_type, seconds, limit in sample:
        durations.setdefault(job_type, []).append(seconds)
        if seconds > t.timeout_margin * limit:
            near_limit[job_type] = near_limit.get(job_type, 0) + 1
    durations_out = {
        name: {
            "count": len(values),
            "mean": sum(values) / len(values),
            "p50": percentile(values, 50),
            "p95": percentile(values, 95),
            "max": max(values),
        }
        for name, values in sorted(durations.items())
    }

    throughput = []
    for day in range(days):
        day_start = start + timedelta(days=day)
        day_end = end if day == days - 1 else day_start + timedelta(days=1)
        day_counts = _tally(store.finished_counts(day_start, day_end))
        throughput.append(
            {
                "start": day_start.isoformat(),
                "completed": sum(r["completed"] for r in day_counts.values()),
                "failed": sum(r["failed"] for r in day_counts.values()),
            }
        )

    overview = monitor.get_queue_overview()
    recommendations = _recommend(
        monitor, summary, types_out, durations, near_limit, overview, days
    )
    return {
        "window": {"days": days, "start": start.isoformat(), "end": now.isoformat()},
        "summary": summary,
        "by_type": types_out,
        "durations_by_type": durations_out,
        "durations_sampled": len(sample) >= sample_limit,
        "throughput_per_day": throughput,
        "recommendations": recommendations,
    }


def _recommend(
    monitor: JobMonitor,
    summary: Mapping[str, Any],
    by_type: Mapping[str, Mapping[str, Any]],
    durations: Mapping[str, list[float]],
    near_limit: Mapping[str, int],
    overview: Mapping[str, Any],
    days: int,
) -> list[dict[str, str]]:
    """Each recommendation fires only on the condition its message states."""
    t = monitor.thresholds
    out: list[dict[str, str]] = []

    def add(code: str, message: str) -> None:
        out.append({"code": code, "message": message})

    judged = summary["completed"] + summary["failed"]
    if judged >= t.report_min_jobs and summary["success_rate"] is not None:
        fail_rate = 1 - summary["success_rate"]
        if fail_rate > t.report_failure_rate:
            add(
                "high_failure_rate",
                f"{fail_rate:.0%} of the {judged} jobs that finished failed "
                f"(above {t.report_failure_rate:.0%}); see `sclib monitor failed`",
            )
    for name, row in by_type.items():
        n = row["completed"] + row["failed"]
        if n >= t.report_min_jobs and row["failed"] / n > t.report_failure_rate:
            add(
                "type_failing",
                f"{row['failed']} of {n} {name} jobs failed; look at their errors "
                f"with `sclib monitor failed`",
            )
    for name, values in durations.items():
        slow = near_limit.get(name, 0)
        if len(values) >= t.report_min_jobs and slow / len(values) > t.timeout_share:
            add(
                "raise_time_limit",
                f"{slow} of {len(values)} completed {name} jobs used over "
                f"{t.timeout_margin:.0%} of their time limit; raise the type's "
                "timeout before they start timing out",
            )
    pending = int(overview["by_status"].get("pending", 0))
    per_day = summary["completed"] / days
    # only if some pending job could run now: jobs scheduled for later or
    # waiting on another job would not go faster with more workers
    waiting = overview["oldest_pending_age_seconds"] is not None
    if waiting and pending > 0 and pending > per_day:
        add(
            "add_workers",
            f"{pending} jobs are pending, more than a day's throughput "
            f"({per_day:.1f} completed per day); add workers or concurrency",
        )
    if overview["stale_jobs"]:
        add(
            "stale_jobs",
            f"{overview['stale_jobs']} running job(s) are stale (lease expired or "
            "no recent heartbeat); see "
            "`sclib monitor stale` (a rescue sweep in any worker takes them back)",
        )
    if overview["live_workers"] == 0 and waiting:
        add(
            "no_live_workers",
            "jobs are waiting and no worker has reported in the last "
            f"{t.worker_timeout_seconds:.0f}s; start `sclib worker` or `sclib serve`",
        )
    return out
