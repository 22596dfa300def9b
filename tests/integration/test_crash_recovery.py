"""Crash test with real processes: a worker's death costs only the jobs it was running.

For each way of running jobs (threads; threads with ``--prefetch``; ``--mode
process`` with a prefetched job), 3 ``sclib worker`` processes drain jobs from one
SQLite file while, every 0.2-0.4 s (seeded), a random worker is killed with SIGKILL
and a new one started in its place. Among the jobs is one whose handler SIGKILLs
its own worker every time it runs.

At the end every job is ``completed`` except that one, which is ``failed`` as a
crash loop after its handler ran SCLIB_MAX_CRASHES (+1 in thread mode, see
docs/guarantees.md) times, and any job the random kills happened to hit that many
times while it ran (failed as a crash loop too, rightly: every crash it was
charged was a recorded start and a handler that ran); none is left ``running``;
each other job's side effect was committed exactly once. From the handlers' log
of starts and ends: no crash was charged to an attempt whose handler never
started, no two executions of one job overlapped in time, no handler process
outlived its killed worker by more than ``GRACE`` seconds (checked in /proc), and
some jobs did run more than once (so the test exercised recovery).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sclib import JobQueue
from tests.integration.crash_handlers import process_start_ticks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
WORKERS = 3
SEED = 20261129
MAX_CRASHES = 3  # SCLIB_MAX_CRASHES' default
#: seconds a handler process may outlive its SIGKILLed worker
GRACE = 1.5


@dataclass(frozen=True)
class Scenario:
    jobs: int
    #: SIGKILLs sent, one every 0.2-0.4 s; then the workers drain the queue
    kills: int
    options: tuple[str, ...]
    #: runs of the crash-loop job before it is failed (thread mode gives every job
    #: one uncharged vanishing before it records starts; process mode records all)
    crasher_runs: tuple[int, ...]


SCENARIOS = {
    "thread": Scenario(200, 20, ("--concurrency", "2"), (MAX_CRASHES, MAX_CRASHES + 1)),
    "prefetch": Scenario(
        250,
        20,
        ("--concurrency", "2", "--prefetch", "8"),
        (MAX_CRASHES, MAX_CRASHES + 1),
    ),
    "process": Scenario(
        24,
        12,
        ("--mode", "process", "--concurrency", "2", "--prefetch", "1"),
        (MAX_CRASHES,),
    ),
}


def _spawn(
    url: str, log: Path, scenario: Scenario, mark: str
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "SCLIB_CRASH_TEST": mark}
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
                *scenario.options,
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


@dataclass
class Execution:
    """One run of a handler, as its log lines tell it."""

    job_id: str
    attempt: int
    pid: int
    worker: int
    ticks: int
    start: float
    end: float | None = None


@dataclass
class Executions:
    by_job: dict[str, list[Execution]] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> Executions:
        found = cls()
        running: dict[tuple[str, int, int], Execution] = {}
        if not path.exists():
            return found
        for line in path.read_text().splitlines():
            kind, job_id, attempt, pid, *rest = line.split()
            key = (job_id, int(attempt), int(pid))
            if kind == "start":
                run = Execution(
                    job_id,
                    int(attempt),
                    int(pid),
                    int(rest[0]),
                    int(rest[1]),
                    float(rest[2]),
                )
                running[key] = run
                found.by_job.setdefault(job_id, []).append(run)
            else:
                running[key].end = float(rest[0])
        return found

    def of_worker(self, worker: int) -> list[Execution]:
        return [r for runs in self.by_job.values() for r in runs if r.worker == worker]


def _starts(out: Path) -> list[Execution]:
    return [
        r
        for runs in Executions.read(out / "executions.log").by_job.values()
        for r in runs
    ]


def _holder(queue: JobQueue, job_id: str) -> int | None:
    """The pid of the worker running the job, if one is (from its worker id)."""
    job = queue.get(job_id)
    if job.status.value != "running" or job.worker_id is None:
        return None
    return int(job.worker_id.rsplit("-", 2)[1])


def _alive(run: Execution) -> str | None:
    """How the process of this execution still runs (``None`` if it does not).

    A zombie does not run, nor does a process with SIGKILL pending: it runs no
    more of its own code, it only waits to be scheduled or for a disk write
    (``fsync``) it is in to end before it exits.
    """
    if process_start_ticks(run.pid) != run.ticks:
        return None  # gone, or the pid now names another process
    try:
        status = dict(
            line.split(":", 1)
            for line in Path(f"/proc/{run.pid}/status").read_text().splitlines()
            if ":" in line
        )
        wchan = Path(f"/proc/{run.pid}/wchan").read_text()
    except OSError:
        return None
    state = status["State"].strip()
    kill_bit = 1 << (signal.SIGKILL - 1)
    pending = int(status["SigPnd"], 16) | int(status["ShdPnd"], 16)
    if state[0] in "ZX" or pending & kill_bit:
        return None
    return f"{state} in {wchan or '?'}"


def _leftover_job_processes(mark: str) -> list[int]:
    """Pids of job processes (multiprocessing children) of this test's workers."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if (
            b"spawn_main" in cmdline
            and f"SCLIB_CRASH_TEST={mark}".encode() in environ.split(b"\0")
            and state not in ("Z", "X")
        ):
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize("mode", list(SCENARIOS))
def test_a_dead_worker_costs_only_the_jobs_it_was_running(
    tmp_path: Path, mode: str
) -> None:
    """Under random SIGKILLs every job completes (but the one that kills its
    worker, failed as a crash loop), each effect is committed once, no crash is
    charged to an attempt that never started, no two executions of a job overlap,
    and no handler process outlives its worker by more than GRACE seconds."""
    scenario = SCENARIOS[mode]
    url = f"sqlite:///{tmp_path}/jobs.db"
    out = tmp_path / "effects"
    out.mkdir()
    mark = str(tmp_path)
    queue = JobQueue.open(url, max_crashes=MAX_CRASHES)
    rng = random.Random(f"{SEED}-{mode}")
    jobs = []
    for i in range(scenario.jobs):
        # mostly short jobs, some long enough that a kill finds them running
        work = rng.choice([0.005, 0.02, 0.05, 0.1, 0.4])
        jobs.append(
            queue.enqueue(
                "data_validation", {"i": i, "out": str(out), "work_seconds": work}
            )
        )
        if i == scenario.jobs // 3:
            crasher = queue.enqueue("file_extraction", {"out": str(out)})
    total = scenario.jobs + 1
    log = tmp_path / "workers.log"
    procs = [_spawn(url, log, scenario, mark) for _ in range(WORKERS)]
    kills = self_kills = 0
    deaths: dict[int, float] = {}  # worker pid -> when it was killed (monotonic)
    checks: list[tuple[float, int]] = []  # (when, worker pid) to look for survivors
    survivors: list[tuple[Execution, str]] = []

    def look_for_survivors(until: float) -> None:
        due = [c for c in checks if c[0] <= until]
        if not due:
            return
        runs = Executions.read(out / "executions.log")
        for check in due:
            checks.remove(check)
            for run in runs.of_worker(check[1]):
                how = _alive(run)
                if how is not None:
                    survivors.append((run, how))

    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            counts = queue.stats()["by_status"]
            if counts["completed"] + counts["failed"] + counts["cancelled"] == total:
                break
            time.sleep(rng.uniform(0.2, 0.4) if kills < scenario.kills else 0.1)
            for n, p in enumerate(procs):
                if p.poll() is not None:  # killed by the crash-loop job
                    deaths[p.pid] = time.monotonic()
                    checks.append((time.monotonic() + GRACE, p.pid))
                    self_kills += 1
                    procs[n] = _spawn(url, log, scenario, mark)
            look_for_survivors(time.monotonic())
            if kills == scenario.kills:
                continue  # the workers now drain the queue undisturbed
            # a worker still starting up has nothing to lose: pick among those
            # that have started a handler, but leave the crash-loop job's worker
            # to it (its crashes are its own)
            working = {r.worker for r in _starts(out)} - {_holder(queue, crasher.id)}
            candidates = [n for n, p in enumerate(procs) if p.pid in working]
            if not candidates:
                continue
            victim = rng.choice(candidates)
            deaths[procs[victim].pid] = time.monotonic()
            procs[victim].send_signal(signal.SIGKILL)
            procs[victim].wait()
            checks.append((time.monotonic() + GRACE, procs[victim].pid))
            kills += 1
            procs[victim] = _spawn(url, log, scenario, mark)
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
    while checks:
        time.sleep(0.1)
        look_for_survivors(time.monotonic())

    runs = Executions.read(out / "executions.log")
    final = {j.id: j for j in queue.list(limit=total)}
    # the attempts whose start a worker recorded (just before their handlers ran)
    recorded = {
        job_id: {e.attempt for e in queue.events(job_id) if e.kind == "started"}
        for job_id in final
    }
    queue.close()
    leftovers = _leftover_job_processes(mark)

    # every job but the crash-loop one completed, none is left running; a job
    # the random kills hit while it ran MAX_CRASHES times is failed as a crash
    # loop, rightly: each of its charged crashes was a start the worker recorded
    # and a handler that really ran (checked below for every charge)
    unlucky = {
        j.id
        for j in final.values()
        if j.status.value == "failed"
        and j.id != crasher.id
        and j.error is not None
        and "crash loop" in j.error
        and len(recorded[j.id]) >= MAX_CRASHES
        and len(runs.by_job.get(j.id, ())) >= MAX_CRASHES
    }
    stats = Counter(j.status.value for j in final.values())
    assert stats == {
        "completed": scenario.jobs - len(unlucky),
        "failed": 1 + len(unlucky),
    }, f"{stats}\n{log.read_text()[-3000:]}"
    assert len(unlucky) <= kills // MAX_CRASHES
    dead = final[crasher.id]
    assert dead.error is not None and "crash loop" in dead.error
    assert len(runs.by_job[crasher.id]) in scenario.crasher_runs
    # exactly one committed effect per job, holding that job's own parameters
    effects = {
        p.name: json.loads(p.read_text())
        for p in out.iterdir()
        if not p.name.startswith(".") and p.name != "executions.log"
    }
    # (an unlucky job may have committed its effect before a kill: once at most)
    assert {j.id for j in jobs} - unlucky <= set(effects) <= {j.id for j in jobs}
    for i, job in enumerate(jobs):
        if job.id in effects:
            assert effects[job.id]["i"] == i
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]

    # a crash is charged only to an attempt whose start was recorded, which a
    # worker does just before it runs the handler: never to a prefetched job
    # still waiting (the few it charges to an attempt whose handler has no start
    # line were killed in the moment between the record and the handler's call)
    handler_started = {
        job_id: {r.attempt for r in job_runs}
        for job_id, job_runs in runs.by_job.items()
    }
    charges = [
        (job.id, e.attempt)
        for job in final.values()
        for e in job.error_history
        if e.kind == "crash"
    ]
    charged_held = [c for c in charges if c[1] not in recorded[c[0]]]
    charged_unstarted = [
        c for c in charges if c[1] not in handler_started.get(c[0], ())
    ]
    never_started_failed = [
        j
        for j in final.values()
        if j.error and "crash loop" in j.error and not runs.by_job.get(j.id)
    ]
    # no two executions of one job overlap in time; an execution without an end
    # ended when its worker was killed (or, at the final stop, at the latest)
    overlaps = []
    for job_runs in runs.by_job.values():
        spans = sorted(job_runs, key=lambda r: r.start)
        overlaps += [
            (a, b)
            for a, b in itertools.pairwise(spans)
            if b.start < (a.end if a.end is not None else deaths.get(a.worker, 1e18))
        ]
    rerun = [job_id for job_id, job_runs in runs.by_job.items() if len(job_runs) > 1]
    print(
        f"\n{mode}: {total} jobs, {kills} kills (+{self_kills} by the crash-loop "
        f"job), {len(rerun)} jobs ran more than once, {len(overlaps)} overlaps, "
        f"{len(never_started_failed)} crash-loop failures of never-started jobs, "
        f"{len(charges)} crashes charged ({len(charged_held)} to held attempts, "
        f"{len(charged_unstarted)} before the handler's first line), "
        f"{len(survivors)} handlers outlived their worker, {len(unlucky)} jobs "
        f"failed after {MAX_CRASHES} real crashes"
    )
    assert never_started_failed == []
    assert charged_held == []
    assert overlaps == []
    assert survivors == []
    assert leftovers == []
    # the recovery really happened: workers died, and some jobs ran again
    assert kills >= 10
    assert rerun, "no job ran twice: the kills never hit a running job"
