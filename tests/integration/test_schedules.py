"""Periodic jobs: cron ticks become jobs exactly once, whatever the number of
workers; missed ticks follow the schedule's policy. Real SQLite files, real
worker processes (SIGKILLed in one test), a ManualClock where time is the point."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from sclib import HandlerRegistry, InvalidInput, JobQueue
from sclib.jobs.schedules import Scheduler, tick_key
from sclib.testing.clock import ManualClock

ROOT = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 1, 10, 0, 30, tzinfo=UTC)


def registry(**options: Any) -> HandlerRegistry:
    handlers = HandlerRegistry()
    handlers.register("report", lambda ctx: None)
    handlers.schedule("hourly", "0 * * * *", "report", {"kind": "h"}, **options)
    return handlers


def keys(queue: JobQueue) -> list[str]:
    return sorted(j.idempotency_key or "" for j in queue.list(limit=1000))


def test_ticks_become_jobs_once_each(tmp_path: Path) -> None:
    """Each tick is enqueued once, with scheduled_for; running the scheduler
    again, or a second scheduler, adds nothing."""
    clock = ManualClock(START)
    handlers = registry()
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db", handlers=handlers, clock=clock
    ) as q:
        one, two = Scheduler(q, handlers.schedules), Scheduler(q, handlers.schedules)
        first = one.run_pending()  # 'latest': the 10:00 tick, late
        assert [j.parameters["scheduled_for"] for j in first] == [
            "2026-03-01T10:00:00+00:00"
        ]
        assert first[0].parameters["kind"] == "h"
        assert two.run_pending()[0].id == first[0].id
        clock.advance(3 * 3600)  # 13:00:30
        made = one.run_pending()
        assert [j.parameters["scheduled_for"][11:16] for j in made] == [
            "11:00",
            "12:00",
            "13:00",
        ]
        two.run_pending()
        assert keys(q) == sorted(
            tick_key("hourly", START.replace(minute=0, second=0) + timedelta(hours=h))
            for h in range(4)
        )


@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        ("latest", ["15:00"]),  # only the most recent missed tick
        ("skip", []),  # nothing: 15:00 was 30 s before, past the 10 s grace
        ("all", ["11:00", "12:00", "13:00", "14:00", "15:00"]),
    ],
)
def test_missed_ticks_follow_the_policy(
    tmp_path: Path, missed: str, expected: list[str]
) -> None:
    """After five hours with no worker, a new scheduler applies `missed`."""
    clock = ManualClock(START)
    handlers = registry(missed=missed, grace=10)
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db", handlers=handlers, clock=clock
    ) as q:
        Scheduler(q, handlers.schedules).run_pending()
        before = set(keys(q))
        clock.advance(5 * 3600)  # the worker was down: 15:00:30
        Scheduler(q, handlers.schedules).run_pending()
        new = sorted(set(keys(q)) - before)
    assert [k.rsplit("T", 1)[1][:5] for k in new] == expected


def test_catch_up_is_capped(tmp_path: Path) -> None:
    """missed='all' enqueues at most max_catchup ticks, the most recent ones."""
    clock = ManualClock(START)
    handlers = registry(missed="all", max_catchup=3)
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db", handlers=handlers, clock=clock
    ) as q:
        made = Scheduler(q, handlers.schedules).run_pending()
    assert [j.parameters["scheduled_for"][11:16] for j in made] == [
        "08:00",
        "09:00",
        "10:00",
    ]


def test_time_zones_keep_local_time_across_daylight_saving(tmp_path: Path) -> None:
    """0 3 * * * in Europe/Berlin is 02:00 UTC in winter and 01:00 UTC in summer."""
    clock = ManualClock(datetime(2026, 3, 27, 12, 0, tzinfo=UTC))
    handlers = HandlerRegistry()
    handlers.register("report", lambda ctx: None)
    handlers.schedule("nightly", "0 3 * * *", "report", timezone="Europe/Berlin")
    with JobQueue.open(
        f"sqlite:///{tmp_path}/q.db", handlers=handlers, clock=clock
    ) as q:
        scheduler = Scheduler(q, handlers.schedules)
        scheduler.run_pending()
        clock.advance(3 * 86400)  # across the change of 29 March
        scheduler.run_pending()
        times = sorted(j.parameters["scheduled_for"] for j in q.list())
    assert times == [
        "2026-03-27T02:00:00+00:00",
        "2026-03-28T02:00:00+00:00",
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T01:00:00+00:00",
    ]


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        (("s", "61 * * * *", "report"), {}, "not a cron expression"),
        (("s", "0 * * * *", "report"), {"timezone": "Mars/Olympus"}, "time zone"),
        (("s", "0 * * * *", "report"), {"missed": "never"}, "missed must be"),
        (("bad name!", "0 * * * *", "report"), {}, "schedule names"),
        (("s", "0 * * * *", "report"), {"priority": 9}, "priority"),
    ],
)
def test_bad_schedules_are_refused_when_declared(
    args: tuple[str, str, str], options: dict[str, Any], message: str
) -> None:
    handlers = HandlerRegistry()
    with pytest.raises(InvalidInput, match=message):
        handlers.schedule(*args, **options)
    assert handlers.schedules == {}


def test_a_name_is_declared_once_and_the_type_must_exist(tmp_path: Path) -> None:
    handlers = registry()
    with pytest.raises(InvalidInput, match="exists already"):
        handlers.schedule("hourly", "0 * * * *", "report")
    handlers.schedule("orphan", "0 * * * *", "no_such_type")
    with (
        JobQueue.open(f"sqlite:///{tmp_path}/q.db", handlers=handlers) as q,
        pytest.raises(InvalidInput, match="no_such_type"),
    ):
        Scheduler(q, handlers.schedules)


def sclib_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "SCLIB_DATA_DIR": str(tmp_path)}


def test_several_worker_processes_enqueue_each_tick_exactly_once(
    tmp_path: Path,
) -> None:
    """Four `sclib worker` processes run an every-second schedule for about six
    seconds; one is SIGKILLed half way. Every second between the first and the
    last tick has exactly one job, and every job completed or is pending."""
    cmd = [
        sys.executable,
        "-m",
        "sclib",
        "worker",
        "--handlers",
        "tests.integration.schedule_handlers:handlers",
        "--poll-interval",
        "0.1",
    ]
    procs = [
        subprocess.Popen(
            cmd,
            env=sclib_env(tmp_path),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(4)
    ]
    try:
        time.sleep(3)
        procs[0].send_signal(signal.SIGKILL)
        time.sleep(3)
    finally:
        for proc in procs[1:]:
            proc.terminate()
        for proc in procs:
            proc.wait(60)
    with JobQueue.open(f"sqlite:///{tmp_path}/sclib.db") as q:
        jobs = [j for j in q.list(limit=1000) if j.type == "tick"]
    ticks = sorted(datetime.fromisoformat(j.parameters["scheduled_for"]) for j in jobs)
    print(f"{len(ticks)} ticks, {len(jobs)} jobs from 4 workers")
    assert len(ticks) >= 4
    assert len(set(ticks)) == len(ticks), "a tick was enqueued twice"
    span = int((ticks[-1] - ticks[0]).total_seconds()) + 1
    assert len(ticks) == span, f"missing ticks: {span - len(ticks)} of {span}"
    assert {j.status.value for j in jobs} <= {"completed", "pending", "running"}


def test_the_schedules_command_lists_them(tmp_path: Path) -> None:
    """`sclib jobs schedules --handlers ...` shows each schedule's next tick and
    its last tick's job."""
    with JobQueue.open(f"sqlite:///{tmp_path}/sclib.db") as q:
        q.count()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sclib",
            "jobs",
            "schedules",
            "--json",
            "--handlers",
            "tests.integration.schedule_handlers:handlers",
        ],
        env=sclib_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    found = {s["name"]: s for s in json.loads(done.stdout)}
    assert set(found) == {"tick", "nightly-check"}
    nightly = found["nightly-check"]
    assert nightly["timezone"] == "Europe/Berlin"
    assert nightly["job_type"] == "data_validation"
    assert nightly["last_job_status"] is None
    assert datetime.fromisoformat(nightly["next_tick"]) > datetime.now(UTC)
    text = subprocess.run(
        [
            sys.executable,
            "-m",
            "sclib",
            "jobs",
            "schedules",
            "--handlers",
            "tests.integration.schedule_handlers:handlers",
        ],
        env=sclib_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "nightly-check" in text.stdout and "not enqueued" in text.stdout
