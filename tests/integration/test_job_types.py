"""A custom job type in one line: @handlers.register("thumbnail"), with keyword
options, on real SQLite queues and a real worker thread."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import sclib
from sclib import (
    HandlerRegistry,
    InvalidInput,
    JobQueue,
    RetryPolicy,
    UnknownJobType,
    Worker,
)
from sclib.testing.clock import ManualClock


def test_one_line_makes_a_usable_type(tmp_path: Path) -> None:
    """register("thumbnail") with nothing more: enqueue works, with the
    documented defaults and the docstring as description; a worker runs it."""
    handlers = HandlerRegistry()

    @handlers.register("thumbnail")
    def thumbnail(ctx: sclib.JobContext) -> dict[str, Any]:
        """Make a thumbnail."""
        return {"size": ctx.parameters["size"]}

    with JobQueue.open(f"sqlite:///{tmp_path}/q.db", handlers=handlers) as queue:
        job = queue.enqueue("thumbnail", {"size": 128})
        assert job.max_attempts == 3
        assert job.priority == 2
        assert job.timeout_seconds == 3600
        assert queue.job_types["thumbnail"].description == "Make a thumbnail."
        # the seed's table is untouched
        assert queue.job_types["dataset_conversion"].timeout_minutes == 120
        Worker(queue, handlers, poll_interval=0.05).run(until_idle=True)
        done = queue.get(job.id)
    assert done.status == "completed"
    assert done.result == {"size": 128}


def test_a_worker_teaches_its_queue_the_types(tmp_path: Path) -> None:
    """A queue opened without handlers learns the types when a worker with them
    is made on it (the `sclib worker --handlers` case)."""
    handlers = HandlerRegistry()
    handlers.register("thumbnail", lambda ctx: None)
    with JobQueue.open(f"sqlite:///{tmp_path}/q.db") as queue:
        with pytest.raises(UnknownJobType):
            queue.enqueue("thumbnail")
        Worker(queue, handlers)
        assert queue.enqueue("thumbnail").type == "thumbnail"


def test_options_are_keywords(tmp_path: Path) -> None:
    """timeout (seconds or timedelta), max_attempts, priority (1-3 or a name)
    and description become the type's defaults; a job may still override."""
    handlers = HandlerRegistry()
    handlers.register(
        "fetch",
        lambda ctx: None,
        timeout=90,
        max_attempts=5,
        priority="high",
        description="Fetch metadata",
    )
    handlers.register("slow", lambda ctx: None, timeout=timedelta(hours=2), priority=3)
    with JobQueue.open(f"sqlite:///{tmp_path}/q.db", handlers=handlers) as queue:
        fetch = queue.enqueue("fetch")
        assert (fetch.timeout_seconds, fetch.max_attempts, fetch.priority) == (90, 5, 1)
        assert queue.job_types["fetch"].description == "Fetch metadata"
        slow = queue.enqueue("slow")
        assert (slow.timeout_seconds, slow.priority) == (7200, 3)
        assert queue.enqueue("fetch", max_attempts=1).max_attempts == 1


def test_a_built_in_keeps_the_seed_table_unless_options_are_given(
    tmp_path: Path,
) -> None:
    """Registering a built-in without options changes nothing; with options, the
    queues using the registry take them."""
    plain = HandlerRegistry()
    plain.register("data_validation", lambda ctx: None)
    assert plain.job_types == {}
    tuned = HandlerRegistry()
    tuned.register("data_validation", lambda ctx: None, max_attempts=7)
    with JobQueue.open(f"sqlite:///{tmp_path}/q.db", handlers=tuned) as queue:
        job = queue.enqueue("data_validation")
    assert job.max_attempts == 7
    assert job.timeout_seconds == 60 * 60  # the seed's, kept


def test_a_type_retries_by_its_own_policy(tmp_path: Path) -> None:
    """retry=RetryPolicy(...) sets this type's backoff after errors; other types
    keep the queue's."""
    clock = ManualClock()
    handlers = HandlerRegistry()
    handlers.register(
        "quick", lambda ctx: None, retry=RetryPolicy(base_delay=2, jitter=0)
    )
    handlers.register("other", lambda ctx: None)
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db",
        handlers=handlers,
        clock=clock,
        retry_policy=RetryPolicy(base_delay=500, jitter=0),
    ) as queue:
        waits = {}
        for job_type in ("quick", "other"):
            queue.enqueue(job_type)
            claimed = queue.claim("w1", [job_type])
            assert claimed is not None
            lease = sclib.Lease(claimed.id, "w1", claimed.attempts)
            failed = queue.fail(lease, "boom")
            assert failed.run_at is not None
            waits[job_type] = (failed.run_at - clock()).total_seconds()
    assert waits == {"quick": 2, "other": 500}


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("thumb nail", {}, "letters, digits and '_'"),
        ("t", {"timeout": -1}, "timeout must be positive"),
        ("t", {"timeout": "1h"}, "seconds or a timedelta"),
        ("t", {"priority": "urgent"}, "'high', 'normal', 'low'"),
        ("t", {"priority": 4}, "priority must be 1"),
        ("t", {"max_attempts": 0}, "max_attempts must be >= 1"),
        ("t", {"retry": 3}, "must be a RetryPolicy"),
    ],
)
def test_bad_options_fail_at_the_decorator(
    name: str, options: dict[str, Any], message: str
) -> None:
    """A bad name or option is an InvalidInput naming it, when registering."""
    handlers = HandlerRegistry()
    with pytest.raises(InvalidInput, match=message):
        handlers.register(name, lambda ctx: None, **options)
    assert name not in handlers


def test_unknown_type_says_how_to_add_one(tmp_path: Path) -> None:
    """UnknownJobType lists the known types and how to add one."""
    with (
        JobQueue.open(f"sqlite:///{tmp_path}/q.db") as queue,
        pytest.raises(UnknownJobType) as excinfo,
    ):
        queue.enqueue("thumbnail")
    message = str(excinfo.value)
    assert "@handlers.register('thumbnail')" in message
    assert "handlers=handlers" in message and "data_validation" in message


def test_workers_delete_old_finished_jobs_in_batches(tmp_path: Path) -> None:
    """A worker deletes jobs finished longer ago than keep_finished, a batch at
    a time; recent and unfinished jobs stay; keep_finished=None keeps all."""
    from sclib.testing.clock import ManualClock

    clock = ManualClock()
    handlers = HandlerRegistry()
    handlers.register("thumbnail", lambda ctx: None)
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db", handlers=handlers, clock=clock
    ) as queue:
        Worker(queue, handlers, poll_interval=0.01).run(until_idle=True)
        for _ in range(7):
            queue.enqueue("thumbnail")
        Worker(queue, handlers, poll_interval=0.01, keep_finished=None).run(
            until_idle=True
        )
        clock.advance(86400 * 31)
        recent = queue.enqueue("thumbnail")
        waiting = queue.enqueue("thumbnail", delay=10**6)
        keeper = Worker(queue, handlers, poll_interval=0.01, keep_finished=None)
        keeper.run(until_idle=True)
        assert queue.count() == 9
        worker = Worker(
            queue, handlers, poll_interval=0.01, keep_finished=timedelta(days=30)
        )
        worker.EXPIRY_BATCH = 3
        worker.run(until_idle=True)  # one sweep: one batch
        assert queue.count() == 6
        worker = Worker(
            queue, handlers, poll_interval=0.01, keep_finished=timedelta(days=30)
        )
        worker.EXPIRY_BATCH = 100
        worker.run(until_idle=True)
        left = {j.id for j in queue.list(limit=20)}
    assert left == {recent.id, waiting.id}
    with pytest.raises(InvalidInput, match="keep_finished"):
        Worker(queue, handlers, keep_finished=timedelta(days=-1))
