"""Operations at scale: how the job store's reads grow with the number of jobs.

Run from the repository root::

    python benchmarks/scale.py                  # 10k and 1M finished jobs
    python benchmarks/scale.py --large 200000   # a smaller second size
    python benchmarks/scale.py --json

For each size it fills a fresh SQLite job store with that many finished jobs
(completed, one in ten failed, four owners, four types) plus 10,000 pending
ones, then times each operation a user or operator runs (the median of several
calls) and prints the time at both sizes and their ratio. The last 30 days hold
the same 10,000 finished jobs (on a thousand datasets) at both sizes; the rest
is older history, as a queue that has run for years accumulates it. A ratio near
1 means the operation does not grow with that history; the target is at most 2.

The fill is a bulk path of the benchmark's own: rows go straight into the
``jobs`` table with ``executemany`` in one transaction per 50,000 (enqueueing a
million jobs one by one through the queue would take most of an hour and
measures something else, see queue_throughput.py). The pending jobs are
enqueued through :class:`~sclib.JobQueue`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sclib import JobQueue
from sclib.backends.base import JobFilter
from sclib.backends.sqlite import SQLiteJobStore
from sclib.models import new_job_id
from sclib.monitor import JobMonitor

PENDING = 10_000
RECENT = 10_000  # finished jobs in the last 30 days, at every size
TYPES = ["upload", "dataset_conversion", "data_validation", "backup_creation"]
OWNERS = ["ada@lab.org", "bo@lab.org", "cy@lab.org", "di@lab.org"]


def fill(store: SQLiteJobStore, finished: int) -> None:
    now = datetime.now(UTC).timestamp()
    recent = min(finished, RECENT)
    old = finished - recent
    month = timedelta(days=30).total_seconds()
    batch: list[tuple[Any, ...]] = []

    def flush() -> None:
        with store.db.write() as db:
            db.executemany(
                "INSERT INTO jobs (id, type, status, priority, parameters, "
                "dataset_uuid, owner, attempts, max_attempts, max_crashes, "
                "timeout_seconds, run_at, created_at, updated_at, started_at, "
                "finished_at, error) VALUES "
                "(?, ?, ?, 5, '{}', ?, ?, 1, 3, 3, 3600, ?, ?, ?, ?, ?, ?)",
                batch,
            )
        batch.clear()

    for i in range(finished):
        if i < old:  # history: 30 to 395 days ago
            created = now - 13 * month + 12 * month * i / old
        else:  # the last 30 days
            created = now - month + month * (i - old) / recent
        failed = i % 10 == 9
        batch.append(
            (
                new_job_id(),
                TYPES[i % 4],
                "failed" if failed else "completed",
                f"{i % 1000:032x}" if i >= old else f"{1000 + i % 100_000:032x}",
                OWNERS[i % 4],
                created,
                created,
                created + 2,
                created + 1,
                created + 2,
                '{"kind": "error", "message": "boom"}' if failed else None,
            )
        )
        if len(batch) == 50_000:
            flush()
    if batch:
        flush()
    queue = JobQueue(store)
    for i in range(PENDING):
        queue.enqueue(TYPES[i % 4], owner=OWNERS[i % 4])


def operations(store: SQLiteJobStore, finished: int) -> dict[str, Callable[[], Any]]:
    monitor = JobMonitor(store)
    queue = JobQueue(store)
    # the id halfway through, as a client paging by key would hold it
    middle = [j.id for j in store.list_jobs(limit=1, offset=finished // 2)]
    return {
        "list, no filter": lambda: store.list_jobs(limit=50),
        "list status=completed": lambda: store.list_jobs(
            JobFilter(status="completed"), limit=50
        ),
        "list status=failed": lambda: store.list_jobs(
            JobFilter(status="failed"), limit=50
        ),
        "list owner": lambda: store.list_jobs(JobFilter(owner=OWNERS[1]), limit=50),
        "list owner+status": lambda: store.list_jobs(
            JobFilter(owner=OWNERS[1], status="completed"), limit=50
        ),
        "list type": lambda: store.list_jobs(JobFilter(type=TYPES[2]), limit=50),
        "list dataset": lambda: store.list_jobs(
            JobFilter(dataset_uuid=f"{7:032x}"), limit=50
        ),
        "list offset=half": lambda: store.list_jobs(limit=50, offset=finished // 2),
        "list after=half": lambda: store.list_jobs(
            JobFilter(after=middle[0]), limit=50
        ),
        "claim": lambda: queue.claim("bench", lease_seconds=60),
        "queue stats": queue.stats,
        "overview": monitor.get_queue_overview,
        "report, 30 days": lambda: monitor.get_performance_report(days=30),
        "failed jobs": lambda: monitor.get_failed_jobs(),
        "cleanup dry run": lambda: monitor.cleanup_old_data(days=7),
    }


def measure(finished: int, repeat: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        store = SQLiteJobStore(os.path.join(tmp, "jobs.db"))
        try:
            start = time.perf_counter()
            fill(store, finished)
            print(
                f"filled {finished:,} finished + {PENDING:,} pending jobs in "
                f"{time.perf_counter() - start:.1f} s",
                file=sys.stderr,
            )
            out: dict[str, float] = {}
            for name, op in operations(store, finished).items():
                op()  # warm the page cache and the statement cache
                times = []
                for _ in range(repeat):
                    t0 = time.perf_counter()
                    op()
                    times.append(time.perf_counter() - t0)
                out[name] = statistics.median(times) * 1000
            return out
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=10_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    small = measure(args.small, args.repeat)
    large = measure(args.large, args.repeat)
    rows = {
        name: {
            "small_ms": small[name],
            "large_ms": large[name],
            "ratio": large[name] / small[name] if small[name] else float("inf"),
        }
        for name in small
    }
    if args.json:
        print(json.dumps({"small": args.small, "large": args.large, "ops": rows}))
        return
    print(f"{'operation':<24} {args.small:>10,} {args.large:>12,}   ratio  target <= 2")
    for name, row in rows.items():
        verdict = "met" if row["ratio"] <= 2 else "NOT met"
        print(
            f"{name:<24} {row['small_ms']:>8.2f}ms {row['large_ms']:>10.2f}ms "
            f"{row['ratio']:>7.1f}  {verdict}"
        )


if __name__ == "__main__":
    main()
