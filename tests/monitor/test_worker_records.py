"""Workers report themselves, so a monitor sees idle workers too (real SQLite file,
real Worker threads)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sclib import HandlerRegistry, JobQueue, Worker
from sclib.jobs.context import JobContext
from sclib.monitor import JobMonitor


def test_idle_worker_is_live_and_removed_when_it_stops(tmp_path: Path) -> None:
    """A worker with nothing to do appears in the overview as live (record written
    by its heartbeat thread at start), with its types; after a clean stop its
    record is gone."""
    queue = JobQueue.open(f"sqlite:///{tmp_path}/jobs.db")
    seen: list[Any] = []
    registry = HandlerRegistry({"data_validation": lambda ctx: None})
    worker = Worker(queue, registry, poll_interval=0.05, worker_id="idle-1")
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end and not seen:
            seen = JobMonitor(queue).get_queue_overview()["workers"]
            time.sleep(0.02)
    finally:
        worker.stop()
        thread.join(10)
    assert [w["worker_id"] for w in seen] == ["idle-1"]
    assert seen[0]["live"] is True
    assert seen[0]["info"]["types"] == ["data_validation"]
    assert seen[0]["current_jobs"] == []
    assert queue.store.list_workers() == []
    queue.close()


def test_running_job_shows_under_its_worker(tmp_path: Path) -> None:
    """While a handler runs, the overview lists its job under the worker that
    holds it."""
    queue = JobQueue.open(f"sqlite:///{tmp_path}/jobs.db")
    views: list[dict[str, Any]] = []

    def handler(ctx: JobContext) -> None:
        views.extend(JobMonitor(queue).get_queue_overview()["workers"])

    job = queue.enqueue("data_validation")
    registry = HandlerRegistry({"data_validation": handler})
    Worker(queue, registry, poll_interval=0.05, worker_id="busy-1").run(until_idle=True)
    assert [w["worker_id"] for w in views] == ["busy-1"]
    assert [j["job_id"] for j in views[0]["current_jobs"]] == [job.id]
    assert queue.get(job.id).status.value == "completed"
    queue.close()
