"""The monitor API (``/api/v1/monitor/...``) and Prometheus metrics (``/metrics``).

Who sees what:

* ``overview``, ``stale`` and ``report`` describe the whole system (every user's
  jobs, every worker): admins only, 403 for anyone else. Users have
  ``/api/v1/jobs/queue/stats`` (counts only) and their own job list.
* ``failed`` is scoped: a user sees their own failed jobs, an admin everyone's
  (or one user's with ``?owner=``).
* ``jobs/{job_id}`` follows the jobs API: your own job, or any job for an admin;
  another user's id is a 404 as if it did not exist.
* ``/metrics`` needs an admin token unless ``SCLIB_METRICS_PUBLIC=true`` (for a
  scraper on a closed network). Give Prometheus a static admin token from
  ``SCLIB_API_TOKENS`` (``authorization: {credentials: ...}`` in its scrape config).

Metrics are computed when scraped, from the same bounded queries as the overview.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import Response

from sclib.errors import Forbidden, MissingDependency
from sclib.monitor import JobMonitor
from sclib.server.auth import Identity
from sclib.server.deps import (
    IdentityDep,
    ServerState,
    StateDep,
    current_identity,
    public_job,
    visible_job,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["metrics_router", "router"]

router = APIRouter(prefix="/api/v1/monitor", tags=["monitor"])
metrics_router = APIRouter(tags=["monitor"])

_HEALTH_VALUE = {"healthy": 0, "warning": 1, "critical": 2}
_DURATION_WINDOW_SECONDS = 3600
_MAX_ACTIVE_UPLOADS = 1000


def _monitor(state: ServerState) -> JobMonitor:
    return JobMonitor(
        state.queue,
        sessions=state.sessions,
        datasets=state.datasets,
        data_dir=state.settings.data_dir,
    )


def _require_admin(identity: Identity, what: str) -> None:
    if not identity.is_admin:
        raise Forbidden(
            f"{what} shows every user's jobs: it needs the "
            "admin role (users have /api/v1/jobs and /api/v1/jobs/queue/stats)"
        )


def _public(data: dict[str, Any]) -> dict[str, Any]:
    """Mask sealed credentials in a job dict, as the jobs API does."""
    params = dict(data.get("parameters") or {})
    if "sealed" in params:
        params["sealed"] = "***"
    return {**data, "parameters": params}


@router.get("/overview")
def overview(
    identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Counts by status and type, the oldest claimable job's wait, live workers
    with their current jobs, and ``health_status`` (admins only)."""
    _require_admin(identity, "the overview")
    return _monitor(state).get_queue_overview()


@router.get("/stale")
def stale(
    identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Running jobs whose lease expired or whose heartbeat is old (admins only)."""
    _require_admin(identity, "the stale job list")
    jobs = [_public(j) for j in _monitor(state).get_stale_jobs()]
    return {"jobs": jobs, "count": len(jobs)}


@router.get("/report")
def report(
    days: int = Query(7, ge=1, le=366),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Success rate, counts, durations by type (seconds), throughput per day and
    recommendations over the last ``days`` (admins only)."""
    _require_admin(identity, "the performance report")
    return _monitor(state).get_performance_report(days)


@router.get("/failed")
def failed(
    hours: float = Query(24, gt=0, le=24 * 366),
    limit: int = Query(100, ge=1, le=1000),
    owner: str | None = None,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Jobs that failed for good in the last ``hours``, newest first, each with
    ``retry_available``: the caller's own (admins: everyone's, or ``owner``'s)."""
    if not identity.is_admin:
        if owner is not None and owner != identity.email:
            raise Forbidden("owner: only admins may list another user's jobs")
        owner = identity.email
    jobs = _monitor(state).get_failed_jobs(hours, owner=owner, limit=limit)
    return {"jobs": [_public(j) for j in jobs], "count": len(jobs), "hours": hours}


@router.get("/jobs/{job_id}")
def job_details(
    job_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """One job with its event history, ``retry_available`` and its dataset."""
    job = visible_job(state, identity, job_id)
    details = _monitor(state).get_job_details(job_id)
    masked = public_job(job)["parameters"]
    return {**details, "parameters": masked}


@metrics_router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}}},
)
def metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format (an admin token unless
    ``SCLIB_METRICS_PUBLIC``)."""
    state: ServerState = request.app.state.sclib
    if not state.settings.metrics_public:
        _require_admin(current_identity(request), "/metrics")
    try:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.exposition import CONTENT_TYPE_LATEST
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise MissingDependency("prometheus_client", "server", "/metrics") from exc

    families = collect(state)

    class _Snapshot:
        def collect(self) -> list[Metric]:
            return families

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot())
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def collect(state: ServerState) -> list[Metric]:
    """The metric families, computed now."""
    from datetime import timedelta

    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.metrics_core import Metric

    monitor = _monitor(state)
    o = monitor.get_queue_overview()
    out: list[Metric] = []

    jobs = GaugeMetricFamily(
        "sclib_jobs", "Jobs in the store by status and type.", labels=["status", "type"]
    )
    for job_type, per in sorted(o["by_type_status"].items()):
        for status in o["by_status"]:
            jobs.add_metric([status, job_type], per.get(status, 0))
    out.append(jobs)
    age = o["oldest_pending_age_seconds"]
    out.append(
        GaugeMetricFamily(
            "sclib_oldest_pending_age_seconds",
            "How long the oldest claimable job has waited (0 if none waits).",
            value=age or 0.0,
        )
    )
    out.append(
        GaugeMetricFamily(
            "sclib_jobs_stale",
            "Running jobs whose lease expired or whose last heartbeat is older "
            "than the stale threshold.",
            o["stale_jobs"],
        )
    )

    now = monitor.clock()
    recent = monitor.store.finished_jobs(
        now - timedelta(seconds=_DURATION_WINDOW_SECONDS),
        now + timedelta(milliseconds=1),
        status="completed",
        limit=10_000,
    )
    by_type: dict[str, list[float]] = {}
    for job in recent:
        if job.started_at is not None and job.finished_at is not None:
            seconds = (job.finished_at - job.started_at).total_seconds()
            by_type.setdefault(job.type, []).append(seconds)
    from sclib.monitor import percentile

    summary = Metric(
        "sclib_job_duration_seconds",
        "Durations (first claim to completion) of the jobs completed in the last "
        "hour, by type: quantiles 0.5, 0.95 and 1 (max); _count and _sum cover "
        "the same window, so they are not cumulative.",
        "summary",
    )
    for job_type, values in sorted(by_type.items()):
        for q in (50, 95, 100):
            summary.add_sample(
                "sclib_job_duration_seconds",
                {"type": job_type, "quantile": str(q / 100)},
                float(percentile(values, q) or 0.0),
            )
        summary.add_sample(
            "sclib_job_duration_seconds_count", {"type": job_type}, len(values)
        )
        summary.add_sample(
            "sclib_job_duration_seconds_sum", {"type": job_type}, sum(values)
        )
    out.append(summary)

    active = state.sessions.list(
        status="active", key_prefix="upload:", limit=_MAX_ACTIVE_UPLOADS
    )
    received = 0
    for session in active:
        # what UploadManager's view computes: tus and standard keep an offset,
        # the chunk protocol the verified chunks
        if session.state.get("protocol") == "large":
            received += session.bytes_verified
        else:
            received += int(session.state.get("offset", 0))
    out.append(
        GaugeMetricFamily(
            "sclib_uploads_active", "Unfinished uploads.", o["active_uploads"] or 0
        )
    )
    out.append(
        GaugeMetricFamily(
            "sclib_upload_bytes_received",
            "Bytes received so far by unfinished uploads (the oldest "
            f"{_MAX_ACTIVE_UPLOADS} of them).",
            received,
        )
    )

    out.append(
        GaugeMetricFamily(
            "sclib_workers_live", "Workers that reported recently.", o["live_workers"]
        )
    )
    beats = GaugeMetricFamily(
        "sclib_worker_heartbeat_age_seconds",
        "Seconds since each known worker last reported.",
        labels=["worker_id"],
    )
    for w in o["workers"]:
        beats.add_metric([w["worker_id"]], w["heartbeat_age_seconds"])
    out.append(beats)

    health = o["health_status"]
    overall = GaugeMetricFamily(
        "sclib_health", "Overall health: 0 healthy, 1 warning, 2 critical."
    )
    overall.add_metric([], _HEALTH_VALUE[health["overall"]])
    out.append(overall)
    checks = GaugeMetricFamily(
        "sclib_health_check",
        "Each health check: 0 healthy, 1 warning, 2 critical.",
        labels=["check"],
    )
    for c in health["checks"]:
        checks.add_metric([c["name"]], _HEALTH_VALUE[c["status"]])
    out.append(checks)
    return out
