"""The Worker on a real SQLite file: outcomes, timeouts, cancel, stop, inline mode."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from sclib import (
    HandlerRegistry,
    InvalidInput,
    JobQueue,
    JobStatus,
    RetryPolicy,
    Worker,
)
from sclib.backends import open_store
from sclib.errors import BackendError, LeaseLost
from sclib.models import Lease, Progress
from tests.integration.handlers import handlers

pytestmark = pytest.mark.integration


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    q = JobQueue.open(
        f"sqlite:///{tmp_path}/jobs.db",
        retry_policy=RetryPolicy(base_delay=0.0, jitter=0.0),
    )
    yield q
    q.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached in time")


def start(worker: Worker) -> threading.Thread:
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return thread


def test_worker_completes_jobs_and_stores_results(queue: JobQueue) -> None:
    """until_idle drains the queue; each result and the progress are stored."""
    jobs = [queue.enqueue("data_validation", {"i": i}) for i in range(20)]
    stats = Worker(queue, handlers, concurrency=4, poll_interval=0.05).run(
        until_idle=True
    )
    assert stats.completed == 20 and stats.claimed == 20
    for i, job in enumerate(jobs):
        done = queue.get(job.id)
        assert done.status is JobStatus.COMPLETED
        assert done.result == {"echo": {"i": i}, "attempt": 1}


def test_handler_error_is_retried_then_recorded(queue: JobQueue) -> None:
    """A raising handler is retried; the error text and history are kept."""
    ok = queue.enqueue("file_extraction", {"ok_on": 2}, max_attempts=3)
    bad = queue.enqueue("file_extraction", {}, max_attempts=2)
    Worker(queue, handlers, poll_interval=0.05).run(until_idle=True)
    assert queue.get(ok.id).status is JobStatus.COMPLETED
    assert queue.get(ok.id).result == {"attempt": 2}
    failed = queue.get(bad.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error == "OSError: transient failure on attempt 2"
    assert len(failed.error_history) == 2


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_error_that_a_retry_cannot_help_is_not_retried(
    queue: JobQueue, mode: str
) -> None:
    """A handler raising an SclibError with retryable=False (InvalidInput) fails
    its job on the first attempt, with the error kind `fatal`."""
    job = queue.enqueue("file_extraction", {"fatal": True}, max_attempts=3)
    Worker(queue, handlers, poll_interval=0.05, mode=mode).run(until_idle=True)
    failed = queue.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.attempts == 1
    assert failed.error == "sclib.errors.InvalidInput: bad parameters on attempt 1"
    assert [e.kind for e in failed.error_history] == ["fatal"]


@pytest.mark.parametrize("unready", ["configuration", "dataset"])
def test_worker_setup_and_dataset_state_errors_are_retried(
    queue: JobQueue, unready: str
) -> None:
    """A ConfigurationError (a worker without SECRET_KEY or an extra, fixed by an
    operator or run by another worker) and a DatasetConflict (the dataset was busy
    with another step) are about the moment, not the job: they are retried like
    any error (kind `error`, not `fatal`), and the job completes once they pass."""
    job = queue.enqueue(
        "file_extraction", {"unready": unready, "ok_on": 2}, max_attempts=3
    )
    Worker(queue, handlers, poll_interval=0.05).run(until_idle=True)
    done = queue.get(job.id)
    assert done.status is JobStatus.COMPLETED, done.error_history
    assert done.result == {"attempt": 2}
    assert [e.kind for e in done.error_history] == ["error"]


def test_unusable_result_fails_with_clear_error(queue: JobQueue) -> None:
    """A handler returning something that is not JSON fails its job, saying why."""
    job = queue.enqueue("backup_creation", max_attempts=1)
    Worker(queue, handlers, poll_interval=0.05).run(until_idle=True)
    failed = queue.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and "unusable result" in failed.error


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_hanging_handler_times_out_and_is_retried(queue: JobQueue, mode: str) -> None:
    """Past its time limit a job is failed as a timeout and retried per policy."""
    job = queue.enqueue(
        "dataset_conversion", {"seconds": 3.0}, timeout_seconds=0.3, max_attempts=2
    )
    worker = Worker(
        queue,
        handlers,
        mode=mode,  # type: ignore[arg-type]
        poll_interval=0.05,
    )
    started = time.monotonic()
    stats = worker.run(until_idle=True)
    elapsed = time.monotonic() - started
    final = queue.get(job.id)
    assert final.status is JobStatus.FAILED
    assert [e.kind for e in final.error_history] == ["timeout", "timeout"]
    assert "timed out after 0.3s" in (final.error or "")
    assert stats.timed_out == 2
    assert elapsed < 2.9  # neither attempt waited for the 3 s handler


def test_running_job_is_cancelled_through_heartbeat(
    queue: JobQueue, tmp_path: Path
) -> None:
    """cancel() on a running job reaches the handler, which stops; job: cancelled."""
    marker = tmp_path / "started"
    job = queue.enqueue("data_compression", {"marker": str(marker), "steps": 400})
    worker = Worker(queue, handlers, poll_interval=0.05, lease_seconds=0.6)
    thread = start(worker)
    wait_for(marker.exists)
    queue.cancel(job.id, "user pressed stop")
    wait_for(lambda: queue.get(job.id).finished, timeout=10)
    worker.stop()
    thread.join(10)
    done = queue.get(job.id)
    assert done.status is JobStatus.CANCELLED
    assert done.progress.percentage is not None and done.progress.percentage < 100
    assert worker.stats.cancelled == 1


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_graceful_stop_releases_unfinished_jobs(
    queue: JobQueue, tmp_path: Path, mode: str
) -> None:
    """stop(): running jobs get the grace period, then go back to pending at once."""
    marker = tmp_path / "started"
    job = queue.enqueue("data_compression", {"marker": str(marker), "steps": 1000})
    worker = Worker(queue, handlers, poll_interval=0.05, grace_period=0.2, mode=mode)  # type: ignore[arg-type]
    thread = start(worker)
    wait_for(marker.exists)
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    back = queue.get(job.id)
    assert back.status is JobStatus.PENDING and back.worker_id == worker.worker_id
    assert worker.stats.released == 1
    again = queue.claim("next-worker")  # claimable at once, no lease to wait out
    assert again is not None and again.id == job.id


def test_progress_reaches_the_store(queue: JobQueue) -> None:
    """Progress reported by a handler is visible while the job runs."""
    job = queue.enqueue("data_compression", {"steps": 60, "step_seconds": 0.05})
    worker = Worker(
        queue, handlers, poll_interval=0.05, heartbeat_interval=0.1, lease_seconds=5
    )
    thread = start(worker)
    wait_for(lambda: (queue.get(job.id).progress.percentage or 0) > 0)
    seen = queue.get(job.id).progress
    assert seen.message.startswith("step ")
    wait_for(lambda: queue.get(job.id).finished)
    worker.stop()
    thread.join(10)
    assert queue.get(job.id).result == {"steps": 60}


def test_worker_rejects_bad_configuration(queue: JobQueue) -> None:
    """Unknown types, missing handlers and bad numbers are refused up front."""
    with pytest.raises(InvalidInput, match="no handler for job type"):
        Worker(queue, handlers, types=["upload"])
    with pytest.raises(InvalidInput, match="concurrency"):
        Worker(queue, handlers, concurrency=0)
    with pytest.raises(InvalidInput, match="at least one handler"):
        Worker(queue, HandlerRegistry())
    with pytest.raises(InvalidInput, match="mode"):
        Worker(queue, handlers, mode="fiber")  # type: ignore[arg-type]


def test_immediate_mode_runs_jobs_inline(tmp_path: Path) -> None:
    """With immediate=True, enqueue returns the finished job, retries included."""
    q = JobQueue.open(
        f"sqlite:///{tmp_path}/inline.db", handlers=handlers, immediate=True
    )
    try:
        done = q.enqueue("data_validation", {"x": 1})
        assert done.status is JobStatus.COMPLETED
        assert done.result == {"echo": {"x": 1}, "attempt": 1}
        flaky = q.enqueue("file_extraction", {"ok_on": 3}, max_attempts=3)
        assert flaky.status is JobStatus.COMPLETED and flaky.attempts == 3
        first = q.enqueue("data_validation", {"step": 1})
        second = q.enqueue("data_validation", {"step": 2}, depends_on=[first.id])
        assert second.status is JobStatus.COMPLETED
    finally:
        q.close()
    with pytest.raises(InvalidInput, match="immediate mode needs handlers"):
        JobQueue.open(f"sqlite:///{tmp_path}/x.db", immediate=True)


def test_dataset_status_follows_its_jobs(queue: JobQueue) -> None:
    """The legacy dataset status is derived from the dataset's jobs as they run."""
    assert queue.dataset_status("d1") is None
    up = queue.enqueue("upload", dataset_uuid="d1")
    conv = queue.enqueue("dataset_conversion", dataset_uuid="d1", depends_on=[up.id])
    assert queue.dataset_status("d1") == "upload queued"
    claimed = queue.claim("w", ["upload"])
    assert claimed is not None
    assert queue.dataset_status("d1") == "uploading"
    queue.complete(claimed.lease)
    assert queue.dataset_status("d1") == "conversion queued"
    claimed = queue.claim("w", ["dataset_conversion"])
    assert claimed is not None and claimed.id == conv.id
    assert queue.dataset_status("d1") == "converting"
    queue.complete(claimed.lease)
    assert queue.dataset_status("d1") == "done"


def test_many_jobs_do_not_leak_connections(queue: JobQueue) -> None:
    """Each job runs in a new thread; open file descriptors must not grow per job."""
    fds = Path("/proc/self/fd")
    if not fds.exists():
        pytest.skip("needs /proc")
    Worker(queue, handlers, poll_interval=0.05).run(until_idle=True)  # warm up
    before = len(list(fds.iterdir()))
    for i in range(300):
        queue.enqueue("data_validation", {"i": i})
    stats = Worker(queue, handlers, concurrency=4, poll_interval=0.05).run(
        until_idle=True
    )
    assert stats.completed == 300
    assert len(list(fds.iterdir())) - before < 20


def test_prefetch_drains_the_queue(queue: JobQueue) -> None:
    """With prefetch, jobs are claimed in batches and every one completes once."""
    jobs = [queue.enqueue("data_validation", {"i": i}) for i in range(200)]
    stats = Worker(queue, handlers, concurrency=2, prefetch=16, poll_interval=0.05).run(
        until_idle=True
    )
    assert (stats.claimed, stats.completed, stats.lost) == (200, 200, 0)
    assert all(queue.get(j.id).attempts == 1 for j in jobs)


def test_stop_releases_prefetched_jobs_at_once(queue: JobQueue, tmp_path: Path) -> None:
    """Prefetched jobs that never started go back to pending when the worker stops."""
    marker = tmp_path / "started"
    jobs = [
        queue.enqueue("data_compression", {"marker": str(marker), "steps": 1000})
        for _ in range(4)
    ]
    worker = Worker(
        queue, handlers, concurrency=1, prefetch=3, poll_interval=0.05, grace_period=0.2
    )
    thread = start(worker)
    wait_for(marker.exists)
    wait_for(lambda: worker.stats.claimed == 4)
    worker.stop()
    thread.join(10)
    assert not thread.is_alive()
    assert worker.stats.released == 4
    assert {queue.get(j.id).status for j in jobs} == {JobStatus.PENDING}


def test_a_handler_raising_systemexit_does_not_kill_the_worker(queue: JobQueue) -> None:
    """BaseException from a handler fails that job; the runner lives on."""
    bad = queue.enqueue("google_sync", max_attempts=1)
    good = queue.enqueue("data_validation", {"after": True})
    stats = Worker(queue, handlers, poll_interval=0.05).run(until_idle=True)
    assert queue.get(bad.id).status is JobStatus.FAILED
    assert "SystemExit" in (queue.get(bad.id).error or "")
    assert queue.get(good.id).status is JobStatus.COMPLETED
    assert stats.completed == 1


def test_process_mode_needs_picklable_handlers(queue: JobQueue) -> None:
    """A lambda cannot cross into a fresh interpreter: refused up front."""
    local = HandlerRegistry({"data_validation": lambda ctx: None})
    with pytest.raises(InvalidInput, match="cannot be pickled"):
        Worker(queue, local, mode="process")


def test_immediate_mode_from_several_threads(tmp_path: Path) -> None:
    """Jobs enqueued from several threads in immediate mode all run."""
    q = JobQueue.open(
        f"sqlite:///{tmp_path}/inline.db", handlers=handlers, immediate=True
    )
    ids: list[str] = []
    lock = threading.Lock()

    def produce() -> None:
        for i in range(25):
            job = q.enqueue("data_validation", {"i": i})
            with lock:
                ids.append(job.id)

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(ids) == 100  # no final drain: every job ran inside some enqueue
    assert {q.get(i).status for i in ids} == {JobStatus.COMPLETED}
    q.close()


class _NoHeartbeats(JobQueue):
    """A queue whose heartbeats never reach the store (claims and outcomes do)."""

    def heartbeat_many(
        self,
        beats: Sequence[tuple[Lease, Progress | None]],
        *,
        lease_seconds: float,
    ) -> list[bool | LeaseLost]:
        raise BackendError("store unreachable (test)")


@pytest.mark.parametrize("mode", ["thread", "process"])
def test_a_job_whose_lease_cannot_be_renewed_stops_before_the_lease_ends(
    tmp_path: Path, mode: str
) -> None:
    """With heartbeats failing, the worker stops a running job before its lease
    can expire (process mode: kills its process; thread mode: the handler sees
    LeaseLost) and releases it, so no rescued attempt can run beside it."""
    queue = _NoHeartbeats(open_store(f"sqlite:///{tmp_path}/jobs.db"))
    marker = tmp_path / "started"
    job = queue.enqueue("data_compression", {"marker": str(marker), "steps": 1000})
    lease = 3.0
    worker = Worker(
        queue,
        handlers,
        mode=mode,  # type: ignore[arg-type]
        lease_seconds=lease,
        poll_interval=0.05,
        rescue_interval=None,
    )
    thread = start(worker)
    try:
        wait_for(marker.exists)
        pid = int(marker.read_text())
        wait_for(lambda: "released" in [e.kind for e in queue.events(job.id)])
    finally:
        worker.stop(hurry=True)
        thread.join(10)
    events = queue.events(job.id)
    released = next(e for e in events if e.kind == "released")
    assert "could not renew the lease" in released.message
    # released while the lease still held: it was last renewed by the claim or
    # (process mode) by the recorded start, never by a heartbeat
    renewed = max(
        e.at
        for e in events
        if e.kind in ("claimed", "started") and e.attempt == released.attempt
    )
    assert (released.at - renewed).total_seconds() < lease
    assert queue.get(job.id).crashes == 0
    if mode == "process":
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    queue.close()
