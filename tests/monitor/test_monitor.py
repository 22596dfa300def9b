"""JobMonitor numbers against queues with known contents and a manual clock.

Every test runs on a real SQLite file and on the MongoDB backend (through pymongo
against mongomock, the in-process stand-in: no MongoDB server can run here).
Time moves only when a test advances the clock, so ages, rates and percentiles
are exact.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from sclib.backends.base import JobStore
from sclib.datasets import Dataset, DatasetStore
from sclib.errors import InvalidInput, JobNotFound
from sclib.jobs.policy import RetryPolicy
from sclib.jobs.queue import JobQueue
from sclib.models import Job
from sclib.monitor import HealthThresholds, JobMonitor, percentile
from sclib.testing.clock import ManualClock
from sclib.transfers.sessions import SessionStore, TransferSession

LEASE = 30.0


@dataclass
class Env:
    queue: JobQueue
    clock: ManualClock
    sessions: SessionStore
    datasets: DatasetStore

    def monitor(self, **thresholds: Any) -> JobMonitor:
        return JobMonitor(
            self.queue,
            sessions=self.sessions,
            datasets=self.datasets,
            thresholds=HealthThresholds(**thresholds),
        )

    def run(
        self,
        job_type: str,
        seconds: float,
        *,
        ok: bool = True,
        worker: str = "w1",
        **kw: Any,
    ) -> Job:
        """Enqueue a job, claim it, let ``seconds`` pass, finish it."""
        job = self.queue.enqueue(job_type, max_attempts=1, **kw)
        claimed = self.queue.claim(worker, lease_seconds=LEASE)
        assert claimed is not None and claimed.id == job.id
        self.clock.advance(seconds)
        if ok:
            return self.queue.complete(claimed.lease)
        return self.queue.fail(claimed.lease, "boom")


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
def env(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Env]:
    clock = ManualClock()
    store: JobStore
    if request.param == "sqlite":
        from sclib.backends.sqlite import SQLiteJobStore
        from sclib.backends.sqlite_datasets import SQLiteDatasetStore
        from sclib.backends.sqlite_sessions import SQLiteSessionStore

        db = tmp_path / "sclib.db"
        store = SQLiteJobStore(db)
        sessions: SessionStore = SQLiteSessionStore(db)
        datasets: DatasetStore = SQLiteDatasetStore(db)
    else:
        mongomock = pytest.importorskip("mongomock")
        from sclib.backends.mongo import MongoJobStore
        from sclib.backends.mongo_datasets import MongoDatasetStore
        from sclib.backends.mongo_sessions import MongoSessionStore

        client = mongomock.MongoClient(tz_aware=True)
        store = MongoJobStore(client, write_concern={"w": 1})
        sessions = MongoSessionStore(client, write_concern={"w": 1})
        datasets = MongoDatasetStore(client, write_concern={"w": 1})
    policy = RetryPolicy(base_delay=10.0, jitter=0.0)
    queue = JobQueue(store, clock=clock, retry_policy=policy)
    yield Env(queue, clock, sessions, datasets)
    datasets.close()
    sessions.close()
    queue.close()


def _check(overview: dict[str, Any], name: str) -> dict[str, Any]:
    checks = {c["name"]: c for c in overview["health_status"]["checks"]}
    return checks[name]


def test_percentile_is_nearest_rank() -> None:
    """p50 of 1..10 is 5, p95 is 10, p100 the max; nothing gives None."""
    values = [float(v) for v in range(10, 0, -1)]
    assert (percentile(values, 50), percentile(values, 95)) == (5.0, 10.0)
    assert percentile(values, 100) == 10.0 and percentile([], 50) is None


def test_thresholds_refuse_nonsense() -> None:
    """Negative or inverted thresholds are refused, naming the field."""
    with pytest.raises(InvalidInput, match="stale_warning"):
        HealthThresholds(stale_warning=-1)
    with pytest.raises(InvalidInput, match="failure_rate_critical"):
        HealthThresholds(failure_rate_warning=0.5, failure_rate_critical=0.2)


def test_overview_counts_ages_and_workers(env: Env) -> None:
    """Counts by status and type, the oldest claimable job's exact wait (a
    scheduled or blocked job does not count), live workers with their current
    job and heartbeat age, and a healthy verdict."""
    q, clock = env.queue, env.clock
    a = q.enqueue("upload", owner="alice")
    q.enqueue("upload")
    q.enqueue("dataset_conversion", delay=3600)  # not due
    q.enqueue("data_validation", depends_on=[a.id])  # blocked on a
    clock.advance(120)
    q.store.record_worker("w1", clock(), {"pid": 7})
    q.store.record_worker("idle", clock() - timedelta(seconds=20), {})
    claimed = q.claim("w1", ["upload"], lease_seconds=LEASE)
    assert claimed is not None and claimed.id == a.id
    clock.advance(5)
    overview = env.monitor().get_queue_overview()
    assert overview["total"] == 4
    assert overview["by_status"]["pending"] == 3
    assert overview["by_status"]["running"] == 1
    assert overview["by_type"] == {
        "upload": 2,
        "dataset_conversion": 1,
        "data_validation": 1,
    }
    assert overview["oldest_pending_age_seconds"] == 125.0
    workers = {w["worker_id"]: w for w in overview["workers"]}
    assert workers["w1"]["live"] and workers["idle"]["live"]
    assert workers["w1"]["heartbeat_age_seconds"] == 5.0
    assert workers["idle"]["heartbeat_age_seconds"] == 25.0
    assert [j["job_id"] for j in workers["w1"]["current_jobs"]] == [a.id]
    assert workers["idle"]["current_jobs"] == []
    assert overview["live_workers"] == 2
    assert overview["active_uploads"] == 0
    assert overview["health_status"]["overall"] == "healthy"


def test_times_are_reported_in_utc_whatever_the_clock_zone(env: Env) -> None:
    """A clock in another zone (UTC+2) gives the same numbers, and every time the
    monitor reports (overview, report window, throughput slices) is UTC; a naive
    clock is refused, naming the problem."""
    env.run("upload", 30)
    env.queue.enqueue("upload")
    env.clock.advance(60)
    plus2 = timezone(timedelta(hours=2))
    monitor = JobMonitor(env.queue, clock=lambda: env.clock().astimezone(plus2))
    overview = monitor.get_queue_overview()
    assert overview["generated_at"] == env.clock().isoformat()
    assert overview["generated_at"].endswith("+00:00")
    assert overview["oldest_pending_age_seconds"] == 60.0
    report = monitor.get_performance_report(days=1)
    assert report["window"]["end"] == env.clock().isoformat()
    assert report["throughput_per_day"][0]["start"].endswith("+00:00")
    assert report["durations_by_type"]["upload"]["max"] == 30.0
    naive = JobMonitor(env.queue, clock=lambda: env.clock().replace(tzinfo=None))
    with pytest.raises(InvalidInput, match="aware"):
        naive.get_queue_overview()


def test_health_moves_healthy_warning_critical(env: Env) -> None:
    """Queue age crosses the warning line; then the worker goes silent, its job's
    lease expires (stale) and claimable work has no live worker: critical."""
    q, clock = env.queue, env.clock
    q.enqueue("upload")
    q.enqueue("upload")
    q.store.record_worker("w1", clock(), {})
    claimed = q.claim("w1", lease_seconds=LEASE)
    assert claimed is not None
    monitor = env.monitor()
    assert monitor.get_queue_overview()["health_status"]["overall"] == "healthy"

    clock.advance(600)  # the second job has waited 600 s; the worker keeps beating
    q.store.record_worker("w1", clock(), {})
    q.heartbeat(claimed.lease, lease_seconds=LEASE)
    overview = monitor.get_queue_overview()
    assert overview["health_status"]["overall"] == "warning"
    assert _check(overview, "queue_age")["status"] == "warning"
    assert _check(overview, "queue_age")["value"] == 600.0
    assert _check(overview, "stale_jobs")["status"] == "healthy"

    clock.advance(91)  # silent: worker record and lease both out of date
    overview = monitor.get_queue_overview()
    assert overview["health_status"]["overall"] == "critical"
    assert _check(overview, "stale_jobs")["status"] == "warning"
    assert _check(overview, "stale_jobs")["value"] == 1
    assert _check(overview, "workers")["status"] == "critical"
    assert "no worker is live" in _check(overview, "workers")["reason"]
    assert overview["live_workers"] == 0


def test_failure_rate_of_the_last_hour(env: Env) -> None:
    """8 completed + 2 failed in the hour is a warning (20%), one more failure is
    critical (27%); an hour later nothing is judged; too few jobs are not judged."""
    for _ in range(8):
        env.run("upload", 1)
    for _ in range(2):
        env.run("upload", 1, ok=False)
    monitor = env.monitor()
    check = _check(monitor.get_queue_overview(), "failure_rate")
    assert (check["status"], check["value"]) == ("warning", 0.2)
    env.run("upload", 1, ok=False)
    check = _check(monitor.get_queue_overview(), "failure_rate")
    assert check["status"] == "critical"
    assert check["value"] == pytest.approx(3 / 11)
    env.clock.advance(3601)
    check = _check(monitor.get_queue_overview(), "failure_rate")
    assert (check["status"], check["value"]) == ("healthy", None)
    env.run("upload", 1, ok=False)  # one failure out of one: too few to judge
    check = _check(monitor.get_queue_overview(), "failure_rate")
    assert check["status"] == "healthy" and "not judged" in check["reason"]


def test_stale_jobs_with_reasons(env: Env) -> None:
    """A job whose lease expired and one with a long lease but no heartbeat for
    longer than the threshold are stale, each with its reason; a fresh one is not;
    the health check's reason names both kinds."""
    q, clock = env.queue, env.clock
    expired = q.enqueue("upload")
    silent = q.enqueue("upload")
    fresh = q.enqueue("upload")
    c1 = q.claim("w1", lease_seconds=10)
    c2 = q.claim("w2", lease_seconds=3600)
    assert c1 is not None and c2 is not None
    clock.advance(301)
    c3 = q.claim("w3", lease_seconds=LEASE)
    assert c3 is not None and c3.id == fresh.id
    stale = {j["job_id"]: j for j in env.monitor().get_stale_jobs()}
    assert set(stale) == {expired.id, silent.id}
    assert "lease expired 291s ago" in stale[expired.id]["reason"]
    assert "no heartbeat for 301s" in stale[silent.id]["reason"]
    assert stale[silent.id]["heartbeat_age_seconds"] == 301.0
    # the health check counts both kinds and says so (not only "no live lease")
    check = _check(env.monitor().get_queue_overview(), "stale_jobs")
    assert check["value"] == 2 and "no heartbeat for 300s" in check["reason"]


def test_failed_jobs_retry_and_cancel(env: Env) -> None:
    """get_failed_jobs lists the window's final failures newest first with
    retry_available (false behind a failed dependency); retry and cancel say
    whether they worked; an unknown id is JobNotFound."""
    q, clock = env.queue, env.clock
    old = env.run("upload", 1, ok=False)
    clock.advance(3 * 3600)
    parent = env.run("data_validation", 1, ok=False)
    child = q.enqueue("upload", depends_on=[parent.id])  # cancelled at once
    monitor = env.monitor()
    failed = monitor.get_failed_jobs(hours=2)
    assert [j["job_id"] for j in failed] == [parent.id]
    assert failed[0]["retry_available"] is True
    assert [j["job_id"] for j in monitor.get_failed_jobs(hours=4)] == [
        parent.id,
        old.id,
    ]
    details = monitor.get_job_details(child.id)
    assert details["status"] == "cancelled"
    assert (details["retry_available"], details["retry_blocked_by"]) == (
        False,
        parent.id,
    )
    assert monitor.retry_failed_job(child.id) is False
    assert monitor.retry_failed_job(parent.id) is True
    assert q.get(parent.id).status.value == "pending"
    assert q.get(child.id).status.value == "pending"  # revived with its parent
    assert monitor.cancel_job(child.id) is True
    assert monitor.cancel_job(child.id) is False  # already cancelled
    with pytest.raises(JobNotFound):
        monitor.retry_failed_job("nope")
    with pytest.raises(InvalidInput, match="hours"):
        monitor.get_failed_jobs(hours=0)


def test_job_details_and_dataset_jobs(env: Env) -> None:
    """Details carry the job's fields, its events and its dataset record;
    get_dataset_jobs lists that dataset's jobs in creation order."""
    ds = env.datasets.create(Dataset(name="scan", owner="a@example.org", sensor="TIFF"))
    first = env.run("upload", 4, dataset_uuid=ds.uuid)
    second = env.queue.enqueue("dataset_conversion", dataset_uuid=ds.uuid)
    env.queue.enqueue("upload", dataset_uuid="f" * 32)
    monitor = env.monitor()
    details = monitor.get_job_details(first.id)
    assert details["status"] == "completed"
    assert [e["kind"] for e in details["events"]] == ["created", "claimed", "completed"]
    assert details["dataset"]["uuid"] == ds.uuid
    assert details["dataset"]["name"] == "scan"
    listed = monitor.get_dataset_jobs(ds.uuid)
    assert [j["job_id"] for j in listed] == [first.id, second.id]
    assert monitor.get_job_details(second.id)["retry_available"] is False


def test_performance_report_numbers(env: Env) -> None:
    """Counts, success rate, p50/p95/max/mean durations in seconds per type, and
    completed/failed per day over the window, all exact."""
    for seconds in range(10, 101, 10):  # ten uploads taking 10 s .. 100 s
        env.run("upload", seconds)
    env.run("data_validation", 7, ok=False)
    env.clock.advance(86400)  # a day later: two more validations
    env.run("data_validation", 3)
    env.run("data_validation", 5)
    report = env.monitor().get_performance_report(days=2)
    assert report["summary"] == {
        "completed": 12,
        "failed": 1,
        "cancelled": 0,
        "finished": 13,
        "success_rate": 12 / 13,
    }
    assert report["by_type"]["data_validation"]["failed"] == 1
    assert report["durations_by_type"]["upload"] == {
        "count": 10,
        "mean": 55.0,
        "p50": 50.0,
        "p95": 100.0,
        "max": 100.0,
    }
    assert report["durations_by_type"]["data_validation"]["max"] == 5.0
    assert [(d["completed"], d["failed"]) for d in report["throughput_per_day"]] == [
        (10, 1),
        (2, 0),
    ]
    assert report["durations_sampled"] is False
    metrics = env.monitor().get_performance_metrics(days=2)
    assert metrics["avg_duration_by_type"]["upload"] == 55.0
    with pytest.raises(InvalidInput, match="days"):
        env.monitor().get_performance_report(days=0)


def _codes(env: Env, days: int = 1) -> set[str]:
    report = env.monitor().get_performance_report(days=days)
    return {r["code"] for r in report["recommendations"]}


def test_failure_recommendations_fire_on_their_condition(env: Env) -> None:
    """At exactly 10% failed neither failure recommendation fires; at 2 of 11
    both do (overall and for the failing type)."""
    env.queue.store.record_worker("w1", env.clock(), {})
    for _ in range(9):
        env.run("upload", 1)
    env.run("upload", 1, ok=False)
    assert not {"high_failure_rate", "type_failing"} & _codes(env)
    env.run("upload", 1, ok=False)
    assert {"high_failure_rate", "type_failing"} <= _codes(env)


def test_type_failing_needs_enough_jobs(env: Env) -> None:
    """One failed validation among four finished jobs of its type is not judged;
    the fifth makes 1 of 5 (20%) and the recommendation fires."""
    for _ in range(20):
        env.run("upload", 1)
    env.run("data_validation", 1, ok=False)
    for _ in range(3):
        env.run("data_validation", 1)
    assert "type_failing" not in _codes(env)
    env.run("data_validation", 1)
    assert "type_failing" in _codes(env)


def test_raise_time_limit_fires_when_jobs_near_their_limit(env: Env) -> None:
    """With a 100 s limit, 1 of 10 jobs above 80 s (10%) is quiet; 2 of 11 fires."""
    for _ in range(9):
        env.run("upload", 50, timeout_seconds=100)
    env.run("upload", 90, timeout_seconds=100)
    assert "raise_time_limit" not in _codes(env)
    env.run("upload", 85, timeout_seconds=100)
    assert "raise_time_limit" in _codes(env)


def test_add_workers_fires_when_backlog_exceeds_a_days_work(env: Env) -> None:
    """Two completed in the day and two pending is quiet; three pending fires."""
    env.run("upload", 1)
    env.run("upload", 1)
    env.queue.enqueue("upload")
    env.queue.enqueue("upload")
    assert "add_workers" not in _codes(env)
    env.queue.enqueue("upload")
    assert "add_workers" in _codes(env)


def test_add_workers_is_quiet_when_no_pending_job_could_run(env: Env) -> None:
    """Pending jobs that are scheduled for later or wait on a running job cannot
    use another worker: 'add_workers' stays quiet; once one of them is due, it
    fires (nothing was completed in the window)."""
    q, clock = env.queue, env.clock
    q.store.record_worker("w1", clock(), {})
    blocker = q.enqueue("upload")
    assert q.claim("w1", lease_seconds=LEASE) is not None
    q.enqueue("data_validation", depends_on=[blocker.id])
    q.enqueue("upload", delay=7200)
    q.enqueue("upload", delay=7200)
    assert "add_workers" not in _codes(env)
    clock.advance(7201)
    q.store.record_worker("w1", clock(), {})
    assert "add_workers" in _codes(env)


def test_worker_recommendations_fire_on_their_condition(env: Env) -> None:
    """With a live worker and fresh leases, neither 'stale_jobs' nor
    'no_live_workers' fires; when the worker goes silent with work waiting,
    both do."""
    q, clock = env.queue, env.clock
    q.enqueue("upload")
    q.enqueue("upload")
    q.store.record_worker("w1", clock(), {})
    assert q.claim("w1", lease_seconds=LEASE) is not None
    clock.advance(10)
    assert not {"stale_jobs", "no_live_workers"} & _codes(env)
    clock.advance(100)
    assert {"stale_jobs", "no_live_workers"} <= _codes(env)


def _session(sid: str, status: str, at: Any, key: str | None = None) -> TransferSession:
    return TransferSession(
        id=sid,
        key=key or f"upload:{sid}",
        source_url=f"upload:tus/{sid}",
        dest_url="file:///nowhere",
        size=10,
        chunk_size=10,
        status=status,
        created_at=at,
        updated_at=at,
    )


def test_cleanup_is_a_dry_run_until_applied(env: Env) -> None:
    """Dry run reports the finished jobs, finished upload sessions and worker
    records older than the cut-off and deletes nothing; apply deletes exactly
    those; running, pending, recent and non-upload data stay."""
    q, clock = env.queue, env.clock
    old_done = env.run("upload", 1)
    old_failed = env.run("upload", 1, ok=False)
    old_at = clock()
    q.store.record_worker("gone", old_at, {})
    for sid, status in (("s1", "completed"), ("s2", "cancelled"), ("s3", "active")):
        env.sessions.create(_session(sid, status, old_at))
    env.sessions.create(_session("t1", "completed", old_at, key="transfer-key"))
    pending = q.enqueue("upload", delay=10**8)
    clock.advance(31 * 86400)
    recent = env.run("upload", 1)
    q.store.record_worker("w1", clock(), {})
    monitor = env.monitor()
    dry = monitor.cleanup_old_data(days=30)
    assert dry["applied"] is False
    assert dry["jobs"] == {"count": 2, "by_status": {"completed": 1, "failed": 1}}
    assert sorted(dry["upload_sessions"]["ids"]) == ["s1", "s2"]
    assert dry["workers"]["ids"] == ["gone"]
    assert dry["total"] == 5
    assert q.get(old_done.id) and env.sessions.get("s1")  # nothing deleted
    done = monitor.cleanup_old_data(days=30, apply=True)
    assert (done["applied"], done["total"]) == (True, 5)
    for job in (old_done, old_failed):
        with pytest.raises(JobNotFound):
            q.get(job.id)
    assert q.get(pending.id).status.value == "pending"
    assert q.get(recent.id).status.value == "completed"
    assert env.sessions.get("s3").status == "active"
    assert env.sessions.get("t1").status == "completed"
    assert [w.worker_id for w in q.store.list_workers()] == ["w1"]
    assert monitor.cleanup_old_data(days=30)["total"] == 0
    with pytest.raises(InvalidInput, match="days"):
        monitor.cleanup_old_data(days=0)
