"""Crash test with real processes: workers SIGKILLed at random, nothing lost.

4 ``sclib worker`` processes drain 2,000 jobs from one SQLite file while, about
every 0.5 s, a random worker is killed with SIGKILL and a new one started in its
place. At the end every job is ``completed``, none is left ``running``, each job's
side effect was committed exactly once, and some jobs demonstrably ran more than
once (so the test did exercise recovery).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from sclib import JobQueue

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
JOBS = 2000
WORKERS = 4


def _spawn(url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with open(log, "ab") as fh:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sclib",
                "--backend",
                url,
                "worker",
                "--handlers",
                "tests.integration.crash_handlers:handlers",
                "--concurrency",
                "2",
                "--lease-seconds",
                "2",
                "--poll-interval",
                "0.05",
                "--rescue-interval",
                "0.5",
                "--grace-period",
                "1",
            ],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
        )


def test_sigkilled_workers_lose_nothing_and_commit_once(tmp_path: Path) -> None:
    """Every job completes, none stays running, each effect is committed once."""
    url = f"sqlite:///{tmp_path}/jobs.db"
    out = tmp_path / "effects"
    out.mkdir()
    queue = JobQueue.open(url, max_crashes=20)
    jobs = [
        queue.enqueue("data_validation", {"i": i, "out": str(out)}) for i in range(JOBS)
    ]
    rng = random.Random(20261129)
    log = tmp_path / "workers.log"
    procs = [_spawn(url, log) for _ in range(WORKERS)]
    kills = 0
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            counts = queue.stats()["by_status"]
            if counts["completed"] + counts["failed"] + counts["cancelled"] == JOBS:
                break
            time.sleep(rng.uniform(0.3, 0.7))
            victim = rng.randrange(WORKERS)
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            kills += 1
            procs[victim] = _spawn(url, log)
        else:
            pytest.fail(f"jobs not done in time: {queue.stats()['by_status']}")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    stats = queue.stats()["by_status"]
    assert stats == {
        "pending": 0,
        "running": 0,
        "completed": JOBS,
        "failed": 0,
        "cancelled": 0,
    }, log.read_text()[-3000:]
    # exactly one committed effect per job, holding that job's own parameters
    effects = {
        p.name: json.loads(p.read_text())
        for p in out.iterdir()
        if not p.name.startswith(".") and p.name != "executions.log"
    }
    assert sorted(effects) == sorted(j.id for j in jobs)
    for i, job in enumerate(jobs):
        assert effects[job.id]["i"] == i
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    # the recovery really happened: workers died, and some jobs ran again
    runs = Counter(
        line.split()[0] for line in (out / "executions.log").read_text().splitlines()
    )
    assert kills >= 10
    assert len(runs) == JOBS
    rerun = [job_id for job_id, n in runs.items() if n > 1]
    assert rerun, "no job ran twice: the kills never hit a running job"
    crashed = [j for j in queue.list(limit=JOBS) if j.crashes]
    assert crashed
    print(
        f"\n{kills} kills, {len(rerun)} jobs ran more than once, "
        f"{len(crashed)} jobs rescued after a crash"
    )
    queue.close()
