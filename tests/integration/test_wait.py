"""JobQueue.wait and wait_async: the finished job, or its failure as an
exception; real SQLite files and a real worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import sclib
from sclib import (
    HandlerRegistry,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobQueue,
    RetryPolicy,
    WaitTimeout,
    Worker,
)

handlers = HandlerRegistry()


@handlers.register("square", max_attempts=1)
def square(ctx: sclib.JobContext) -> dict[str, Any]:
    time.sleep(ctx.parameters.get("sleep", 0.2))
    if ctx.parameters.get("fail"):
        raise ValueError("the input is not a number")
    return {"square": ctx.parameters["n"] ** 2}


@handlers.register("forever")
def forever(ctx: sclib.JobContext) -> None:
    while True:
        ctx.check()
        time.sleep(0.02)


@pytest.fixture
def queue(tmp_path: Path) -> Iterator[JobQueue]:
    """A queue with a worker thread running it."""
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db",
        handlers=handlers,
        retry_policy=RetryPolicy(base_delay=0),
    ) as q:
        worker = Worker(
            q, handlers, poll_interval=0.02, concurrency=2, lease_seconds=1.5
        )
        thread = threading.Thread(target=worker.run, daemon=True)
        thread.start()
        yield q
        worker.stop()
        thread.join(30)


def test_wait_returns_the_completed_job(queue: JobQueue) -> None:
    job = queue.enqueue("square", {"n": 7})
    done = queue.wait(job.id, timeout=30)
    assert done.status == "completed"
    assert done.result == {"square": 49}


def test_a_failed_job_raises_job_failed_with_its_error(queue: JobQueue) -> None:
    job = queue.enqueue("square", {"n": 1, "fail": True})
    with pytest.raises(JobFailed, match="the input is not a number") as excinfo:
        queue.wait(job.id, timeout=30)
    assert excinfo.value.job.id == job.id
    assert excinfo.value.kind == "error"
    again = queue.wait(job.id, timeout=30, raise_on_failure=False)
    assert again.status == "failed"


def test_a_cancelled_job_raises_job_cancelled(queue: JobQueue) -> None:
    job = queue.enqueue("forever")
    deadline = time.monotonic() + 30
    while queue.get(job.id).status != "running" and time.monotonic() < deadline:
        time.sleep(0.02)
    queue.cancel(job.id)
    with pytest.raises(JobCancelled) as excinfo:
        queue.wait(job.id, timeout=30)
    assert excinfo.value.job.status == "cancelled"


def test_waiting_too_long_is_a_timeout_error_and_the_job_goes_on(
    queue: JobQueue,
) -> None:
    job = queue.enqueue("square", {"n": 3, "sleep": 1.5})
    started = time.monotonic()
    with pytest.raises(WaitTimeout):
        queue.wait(job.id, timeout=0.3)
    assert time.monotonic() - started < 1.2
    with pytest.raises(TimeoutError):  # the builtin, for generic code
        queue.wait(job.id, timeout=0)
    assert queue.wait(job.id, timeout=30).result == {"square": 9}


def test_wait_async_lets_other_tasks_run(queue: JobQueue) -> None:
    """Three waits and a ticker share one event loop."""
    jobs = [queue.enqueue("square", {"n": n, "sleep": 0.3}) for n in range(3)]
    ticks = 0

    async def ticker(stop: asyncio.Event) -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0.01)

    async def main() -> list[sclib.Job]:
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stop))
        done = await asyncio.gather(
            *(queue.wait_async(j.id, timeout=30, poll_interval=0.1) for j in jobs)
        )
        stop.set()
        await tick
        return list(done)

    done = asyncio.run(main())
    assert [d.result for d in done] == [{"square": n * n} for n in range(3)]
    assert ticks > 10


def test_bad_arguments_are_refused(queue: JobQueue) -> None:
    job = queue.enqueue("square", {"n": 2})
    with pytest.raises(InvalidInput, match="poll_interval"):
        queue.wait(job.id, poll_interval=0)
    with pytest.raises(InvalidInput, match="timeout"):
        queue.wait(job.id, timeout=-1)
    with pytest.raises(sclib.JobNotFound):
        queue.wait("0" * 32, timeout=1)
