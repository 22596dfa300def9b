"""The default worker adapts how many jobs it claims ahead to how long they take."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from sclib import HandlerRegistry, JobContext, JobQueue, Worker
from sclib.errors import InvalidInput
from sclib.jobs.worker import AUTO_PREFETCH_MAX


def _queue(tmp_path: Path) -> JobQueue:
    return JobQueue.open(f"sqlite:///{tmp_path / 'jobs.db'}")


def test_auto_prefetch_grows_for_short_jobs_and_stays_zero_for_long_ones(
    tmp_path: Path,
) -> None:
    """Jobs that take about a millisecond: the worker soon claims up to the cap
    ahead; jobs that take half a second: it never holds one ahead."""
    handlers = HandlerRegistry()

    @handlers.register("quick")
    def quick(ctx: JobContext) -> None:
        time.sleep(0.001)

    @handlers.register("slow")
    def slow(ctx: JobContext) -> None:
        time.sleep(0.5)

    queue = _queue(tmp_path)
    try:
        queue.adopt(handlers)
        queue.enqueue_many("quick", [{} for _ in range(300)])
        worker = Worker(queue, handlers, types=["quick"], poll_interval=0.05)
        assert worker.prefetch == 0  # nothing observed yet
        worker.run(until_idle=True)
        assert worker.stats.completed == 300
        assert 8 <= worker.prefetch <= AUTO_PREFETCH_MAX  # ~1 ms each: many

        queue.enqueue_many("slow", [{} for _ in range(3)])
        slow_worker = Worker(queue, handlers, types=["slow"], poll_interval=0.05)
        seen: list[int] = []
        original = slow_worker._settle

        def spy(**kw: object) -> tuple[int, int]:
            seen.append(slow_worker.prefetch)
            return original(**kw)  # type: ignore[arg-type]

        slow_worker._settle = spy  # type: ignore[method-assign]
        slow_worker.run(until_idle=True)
        assert slow_worker.stats.completed == 3
        assert set(seen[1:]) == {0}  # after the first job: never ahead
        assert slow_worker.prefetch == 0
    finally:
        queue.close()


@pytest.mark.parametrize("bad", [-1, "many", 1.5, True])
def test_prefetch_is_auto_or_a_count(tmp_path: Path, bad: object) -> None:
    handlers = HandlerRegistry()
    handlers.register("quick", lambda ctx: None)
    queue = _queue(tmp_path)
    try:
        with pytest.raises(InvalidInput, match="prefetch must be 'auto' or a number"):
            Worker(queue, handlers, prefetch=bad)  # type: ignore[arg-type]
        assert Worker(queue, handlers, prefetch=4).prefetch == 4
    finally:
        queue.close()


def test_jobs_held_behind_a_slow_one_go_back_to_an_idle_worker(
    tmp_path: Path,
) -> None:
    """After a run of quick jobs a worker claims many ahead; slow jobs of
    another type claimed with them do not wait behind each other while a
    second worker is idle: a job held unstarted for AUTO_HOLD_SECONDS goes back
    to the queue, so both workers run slow jobs (before: one ran all of them)."""
    handlers = HandlerRegistry()
    ran: Counter[str] = Counter()

    @handlers.register("quick")
    def quick(ctx: JobContext) -> None:
        time.sleep(0.001)

    @handlers.register("slow")
    def slow(ctx: JobContext) -> None:
        ran[threading.current_thread().name] += 1
        time.sleep(0.8)

    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    queue = JobQueue.open(url)
    queue.adopt(handlers)
    queue.enqueue_many("quick", [{} for _ in range(150)])
    queue.enqueue_many("slow", [{} for _ in range(6)])
    workers = [
        Worker(JobQueue.open(url), handlers, poll_interval=0.05) for _ in range(2)
    ]
    threads = [
        threading.Thread(target=w.run, name=f"sclib-test-{n}")
        for n, w in enumerate(workers)
    ]
    try:
        threads[0].start()
        time.sleep(0.1)  # the second worker joins late
        threads[1].start()
        deadline = time.monotonic() + 60
        while sum(w.stats.completed for w in workers) < 156:
            assert time.monotonic() < deadline, [w.stats for w in workers]
            time.sleep(0.02)
    finally:
        for w in workers:
            w.stop()
        for t in threads:
            t.join()
        for w in workers:
            w.queue.close()
        queue.close()
    assert sum(ran.values()) == 6
    assert len(ran) >= 2 and max(ran.values()) <= 4, ran
