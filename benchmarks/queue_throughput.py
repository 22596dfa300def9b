"""Queue throughput and claim latency: sclib's SQLite store against huey's SqliteHuey.

Run from the repository root (sclib and huey installed)::

    python benchmarks/queue_throughput.py            # full run, a few minutes
    python benchmarks/queue_throughput.py --quick    # small sizes, under a minute
    python benchmarks/queue_throughput.py --json     # one JSON object on stdout

It measures, in one run:

1. enqueue: N no-op jobs, one at a time, from one process (sclib ``JobQueue.enqueue``
   against calling a ``@huey.task()`` function);
2. claim+complete: N pre-filled no-op jobs drained by 1 and by 4 worker processes:
   sclib's ``Worker`` (one per process, ``concurrency=1``), a raw
   ``claim()``/``complete()`` loop per process, and huey's own consumer with process
   workers;
3. claim latency of ``JobQueue.claim`` with a small and a large backlog of pending
   jobs (10,000 and 1,000,000; 100,000 with ``--quick``).

Progress goes to stderr; results to stdout. Every file lives in a temporary folder
that is removed at the end, and every child process is ended.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import multiprocessing as mp
import os
import platform
import pstats
import shutil
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import huey
from huey import SqliteHuey
from huey.consumer import ConsumerStopped
from huey.signals import SIGNAL_COMPLETE
from huey.storage import SqliteStorage

import sclib
from sclib import HandlerRegistry, JobQueue, Worker
from sclib.backends.sqlite import SQLiteJobStore
from sclib.models import new_job_id

JOB_TYPE = "data_validation"
POLL_SECONDS = 0.005  # how often the parent checks whether all jobs are done
START_TIMEOUT = 120.0  # seconds children get to start and report ready
RUN_TIMEOUT = 600.0  # seconds a drain may take before the run is abandoned

# huey consumer settings: poll an empty queue every 10 ms at first, never less
# often than every 50 ms (sclib's Worker below polls every 50 ms)
HUEY_CONSUMER = {
    "worker_type": "process",
    "periodic": False,
    "initial_delay": 0.01,
    "backoff": 1.15,
    "max_delay": 0.05,
}
# the batched configuration: claim this many jobs ahead (Worker(prefetch=...)),
# so claims and completions share one transaction per batch
PREFETCH = 32
SCLIB_WORKER = {
    "concurrency": 1,
    "poll_interval": 0.05,
    "lease_seconds": 30.0,
    "rescue_interval": 5.0,  # the default: expired leases are swept every 5 s
}

_children: list[mp.process.BaseProcess] = []
_grandchildren: list[tuple[int, str | None]] = []


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# -- the no-op work ------------------------------------------------------------------


def sclib_noop(ctx: Any) -> None:
    return None


def huey_noop(i: int) -> None:
    return None


class SyncSqliteStorage(SqliteStorage):
    """huey's SqliteStorage with an explicit ``synchronous`` pragma.

    huey only offers ``fsync=True`` (FULL) or ``False`` (OFF); ``None`` leaves
    SQLite's default, which is FULL. This sets the same mode as sclib's store.
    """

    synchronous = "NORMAL"

    def _create_connection(self) -> sqlite3.Connection:
        conn = super()._create_connection()
        conn.execute(f"pragma synchronous={self.synchronous}")
        return conn


def huey_app(path: str, sync: str) -> tuple[SqliteHuey, Any]:
    storage = type("BenchSqliteStorage", (SyncSqliteStorage,), {"synchronous": sync})
    app = SqliteHuey(
        "bench", filename=path, results=False, storage_class=storage, utc=True
    )
    return app, app.task(name="noop")(huey_noop)


def sclib_queue(path: str, sync: str) -> JobQueue:
    return JobQueue(SQLiteJobStore(path, synchronous=sync))


# -- filling a database quickly ------------------------------------------------------


def bulk_fill(path: str, count: int, sync: str) -> float:
    """Add ``count`` pending jobs to a new sclib database; return the seconds taken.

    One job is enqueued through ``JobQueue.enqueue``; its row and its events are the
    template for the rest, which go in with ``executemany`` in one transaction. So
    the rows carry exactly the columns (and defaults) that ``enqueue`` writes; only
    ids, parameters and times differ.
    """
    start = time.perf_counter()
    queue = sclib_queue(path, sync)
    template = queue.enqueue(JOB_TYPE, {"i": 0})
    queue.close()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.row_factory = sqlite3.Row
    try:
        row = dict(
            conn.execute("SELECT * FROM jobs WHERE id = ?", (template.id,)).fetchone()
        )
        events = [
            dict(r)
            for r in conn.execute(
                "SELECT * FROM job_events WHERE job_id = ?", (template.id,)
            )
        ]
        columns = list(row)
        event_columns = list(events[0]) if events else []
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("PRAGMA synchronous=OFF")
        conn.execute("PRAGMA cache_size=-262144")
        base = time.time() - 1.0

        def rows() -> Iterator[tuple[Any, ...]]:
            for i in range(1, count):
                t = base + i * 1e-7  # distinct, increasing, all in the past
                values = dict(row, id=new_job_id(), parameters=f'{{"i":{i}}}')
                values.update(run_at=t, created_at=t, updated_at=t)
                yield tuple(values[c] for c in columns)

        def event_rows() -> Iterator[tuple[Any, ...]]:
            for job_id, t in conn.execute(
                "SELECT id, created_at FROM jobs WHERE id != ?", (template.id,)
            ).fetchall():
                for event in events:
                    values = dict(event, job_id=job_id, at=t)
                    yield tuple(values[c] for c in event_columns)

        conn.execute("BEGIN")
        conn.executemany(
            f"INSERT INTO jobs ({', '.join(columns)}) "
            f"VALUES ({', '.join('?' * len(columns))})",
            rows(),
        )
        if events:
            conn.executemany(
                f"INSERT INTO job_events ({', '.join(event_columns)}) "
                f"VALUES ({', '.join('?' * len(event_columns))})",
                event_rows(),
            )
        conn.execute("COMMIT")
        conn.execute("PRAGMA journal_mode=WAL")
    finally:
        conn.close()
    return time.perf_counter() - start


def sqlite_rows(path: str, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux), to never signal a reused pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


# -- 1. enqueue ----------------------------------------------------------------------


def bench_enqueue(tmp: str, n: int, sync: str) -> dict[str, Any]:
    queue = sclib_queue(os.path.join(tmp, "enqueue-sclib.db"), sync)
    start = time.perf_counter()
    for i in range(n):
        queue.enqueue(JOB_TYPE, {"i": i})
    sclib_s = time.perf_counter() - start
    queue.close()

    many = sclib_queue(os.path.join(tmp, "enqueue-many-sclib.db"), sync)
    start = time.perf_counter()
    for batch in range(0, n, 100):  # batches of 100, as a fan-out would send
        many.enqueue_many(
            JOB_TYPE, [{"i": i} for i in range(batch, min(n, batch + 100))]
        )
    many_s = time.perf_counter() - start
    many.close()

    app, task = huey_app(os.path.join(tmp, "enqueue-huey.db"), sync)
    start = time.perf_counter()
    for i in range(n):
        task(i)
    huey_s = time.perf_counter() - start
    app.storage.close()
    return {
        "jobs": n,
        "sclib_jobs_per_s": n / sclib_s,
        "sclib_many_jobs_per_s": n / many_s,
        "huey_jobs_per_s": n / huey_s,
        "ratio": huey_s / sclib_s,
        "many_ratio": huey_s / many_s,
    }


# -- 2. claim + complete -------------------------------------------------------------


def _sclib_child(
    path: str, sync: str, mode: str, ready: Any, go: Any, out: Any
) -> None:
    queue = sclib_queue(path, sync)
    queue.stats()  # open the connection before the clock starts
    handlers = HandlerRegistry()
    handlers.register(JOB_TYPE, sclib_noop)
    ready.put(os.getpid())
    go.wait()
    if mode in ("worker", "prefetch"):
        options = dict(SCLIB_WORKER)
        if mode == "prefetch":
            options["prefetch"] = PREFETCH
        worker = Worker(queue, handlers, **options)
        stats = worker.run(until_idle=True)
        done = {
            "claimed": stats.claimed,
            "completed": stats.completed,
            "failed": stats.failed,
            "lost": stats.lost,
        }
    else:
        worker_id = f"raw-{os.getpid()}"
        done = {"claimed": 0, "completed": 0}
        while True:
            job = queue.claim(worker_id, [JOB_TYPE], lease_seconds=30)
            if job is None:
                break
            done["claimed"] += 1
            queue.complete(job.lease)
            done["completed"] += 1
    queue.close()
    out.put(done)


def _huey_child(
    path: str, sync: str, workers: int, n: int, ready: Any, go: Any, out: Any
) -> None:
    app, task = huey_app(path, sync)
    for i in range(n):
        task(i)
    executed = [0]

    # counted in memory in each worker process, reported when it shuts down, so
    # the parent can check that every task really ran (and ran once)
    @app.signal(SIGNAL_COMPLETE)
    def count(signal: str, task: Any) -> None:
        executed[0] += 1

    @app.on_shutdown()
    def report() -> None:
        out.put(("executed", executed[0]))

    consumer = app.create_consumer(workers=workers, **HUEY_CONSUMER)
    ready.put(os.getpid())
    go.wait()
    consumer.start()  # forks the worker processes (and the scheduler)
    pids = [p.pid for _, p in consumer.worker_threads] + [consumer.scheduler.pid]
    out.put(("pids", [(pid, _start_time(pid)) for pid in pids]))
    health_check = time.monotonic()
    while True:  # Consumer.run() without its restart handling
        try:
            health_check = consumer.loop(health_check)
        except ConsumerStopped:
            break


def _start(ctx: Any, target: Callable[..., None], args: tuple[Any, ...]) -> Any:
    process = ctx.Process(target=target, args=args)
    process.start()
    _children.append(process)
    return process


def _wait_ready(ready: Any, count: int) -> None:
    for _ in range(count):
        ready.get(timeout=START_TIMEOUT)


def _drain(
    path: str,
    sql: str,
    finished: Callable[[dict[str, int]], bool],
    procs: list[Any],
    go: Any,
) -> float:
    """Release the children, wait until ``finished(counts)``; return the seconds."""
    start = time.perf_counter()
    go.set()
    conn = sqlite3.connect(path)
    try:
        while True:
            counts = {str(k): v for k, v in conn.execute(sql).fetchall()}
            if finished(counts):
                return time.perf_counter() - start
            if time.perf_counter() - start > RUN_TIMEOUT:
                raise RuntimeError(f"drain of {path} timed out: {counts}")
            if not any(p.is_alive() for p in procs) and not finished(counts):
                time.sleep(0.2)  # a last look: the children may just have exited
                counts = {str(k): v for k, v in conn.execute(sql).fetchall()}
                if finished(counts):
                    return time.perf_counter() - start
                raise RuntimeError(f"workers exited before the drain ended: {counts}")
            time.sleep(POLL_SECONDS)
    finally:
        conn.close()


def bench_sclib_drain(tmp: str, n: int, procs: int, mode: str, sync: str) -> float:
    path = os.path.join(tmp, f"drain-sclib-{mode}-{procs}.db")
    bulk_fill(path, n, sync)
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    children = [
        _start(ctx, _sclib_child, (path, sync, mode, ready, go, out))
        for _ in range(procs)
    ]
    _wait_ready(ready, procs)
    sql = "SELECT status, COUNT(*) FROM jobs GROUP BY status"
    seconds = _drain(path, sql, lambda c: c.get("completed", 0) >= n, children, go)
    reports = [out.get(timeout=60) for _ in children]
    for child in children:
        child.join(timeout=30)
    counts = dict(sqlite_rows(path, sql))
    again = sqlite_rows(path, "SELECT COUNT(*) FROM jobs WHERE attempts != 1")[0][0]
    if counts.get("completed") != n or sum(r["completed"] for r in reports) != n:
        raise RuntimeError(f"sclib {mode} drain ended wrong: {counts} {reports}")
    if again:
        raise RuntimeError(f"sclib {mode}: {again} jobs were claimed more than once")
    return n / seconds


def bench_huey_drain(tmp: str, n: int, procs: int, sync: str) -> float:
    path = os.path.join(tmp, f"drain-huey-{procs}.db")
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    child = _start(ctx, _huey_child, (path, sync, procs, n, ready, go, out))
    _wait_ready(ready, 1)
    sql = "SELECT 'queued', COUNT(*) FROM task"
    # huey deletes a task's row when a worker takes it; with a no-op task and no
    # result storage nothing else is written, so an empty table means done (the
    # last task or two may still be inside a no-op call).
    seconds = _drain(path, sql, lambda c: c.get("queued", 1) == 0, [child], go)
    tag, pids = out.get(timeout=60)
    assert tag == "pids"
    _grandchildren.extend(pids)
    if child.is_alive():
        os.kill(child.pid, signal.SIGINT)  # huey: graceful stop, workers finish
    executed = 0
    for _ in range(procs):
        tag, count = out.get(timeout=60)
        assert tag == "executed"
        executed += count
    child.join(timeout=30)
    if executed != n:
        raise RuntimeError(f"huey ran {executed} tasks, expected {n}")
    return n / seconds


def bench_claim_complete(
    tmp: str, n: int, process_counts: list[int], sync: str
) -> list[dict[str, Any]]:
    rows = []
    for procs in process_counts:
        log(f"  {procs} process(es): sclib Worker ...")
        worker = bench_sclib_drain(tmp, n, procs, "worker", sync)
        log(f"  {procs} process(es): sclib Worker, prefetch={PREFETCH} ...")
        batched = bench_sclib_drain(tmp, n, procs, "prefetch", sync)
        log(f"  {procs} process(es): sclib raw claim/complete loop ...")
        raw = bench_sclib_drain(tmp, n, procs, "raw", sync)
        log(f"  {procs} process(es): huey consumer ...")
        hu = bench_huey_drain(tmp, n, procs, sync)
        rows.append(
            {
                "processes": procs,
                "jobs": n,
                "sclib_worker_jobs_per_s": worker,
                "sclib_worker_prefetch_jobs_per_s": batched,
                "sclib_raw_jobs_per_s": raw,
                "huey_jobs_per_s": hu,
                "ratio_worker": worker / hu,
                "ratio_worker_prefetch": batched / hu,
                "ratio_raw": raw / hu,
            }
        )
    return rows


# -- 3. claim latency ----------------------------------------------------------------


def _query_plans(path: str, sync: str) -> dict[str, str]:
    """The query plans SQLite uses for one claim and one complete (best effort).

    The statements are caught with a trace callback on the connections a fresh
    store opens, so this follows whatever SQL the store currently runs.
    """
    seen: list[str] = []
    real_connect = sqlite3.connect

    def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = real_connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    def statements() -> list[str]:
        found = [s for s in seen if s.lstrip().upper().startswith(("SELECT", "UPDATE"))]
        del seen[:]
        return found

    try:
        sqlite3.connect = connect  # type: ignore[assignment]
        try:
            queue = sclib_queue(path, sync)
            del seen[:]
            job = queue.claim("plan-probe", [JOB_TYPE], lease_seconds=30)
            traced = {"claim": statements()}
            if job is not None:
                queue.complete(job.lease)
                traced["complete"] = statements()
        finally:
            sqlite3.connect = real_connect  # type: ignore[assignment]
        queue.close()
        probe = real_connect(path)
        try:
            return {
                op: " | ".join(
                    "; ".join(
                        str(r[-1])
                        for r in probe.execute("EXPLAIN QUERY PLAN " + sql).fetchall()
                    )
                    for sql in sqls
                )
                for op, sqls in traced.items()
            }
        finally:
            probe.close()
    except Exception as exc:  # diagnostics only
        return {"error": f"unavailable ({type(exc).__name__}: {exc})"}


def bench_latency(
    tmp: str, pending: int, samples: int, budget: float, sync: str
) -> dict[str, Any]:
    path = os.path.join(tmp, f"latency-{pending}.db")
    log(f"  filling {pending:,} pending jobs ...")
    fill = bulk_fill(path, pending, sync)
    plans = _query_plans(path, sync)
    queue = sclib_queue(path, sync)
    for _ in range(3):  # warm up the connection and the cache
        job = queue.claim("bench", [JOB_TYPE], lease_seconds=30)
        assert job is not None
        queue.complete(job.lease)
    claims: list[float] = []
    completes: list[float] = []
    log(f"  timing up to {samples} claim+complete pairs (at most {budget:g} s) ...")
    end = time.perf_counter() + budget
    while len(claims) < samples and (time.perf_counter() < end or len(claims) < 5):
        t0 = time.perf_counter()
        job = queue.claim("bench", [JOB_TYPE], lease_seconds=30)
        t1 = time.perf_counter()
        assert job is not None
        queue.complete(job.lease)
        t2 = time.perf_counter()
        claims.append((t1 - t0) * 1e6)
        completes.append((t2 - t1) * 1e6)
    queue.close()
    claims.sort()
    return {
        "pending": pending,
        "samples": len(claims),
        "claim_median_us": statistics.median(claims),
        "claim_p95_us": claims[min(len(claims) - 1, int(len(claims) * 0.95))],
        "complete_median_us": statistics.median(completes),
        "fill_seconds": fill,
        "query_plans": plans,
    }


# -- profile -------------------------------------------------------------------------


def profile_raw_loop(tmp: str, n: int, sync: str) -> None:
    """cProfile of one process draining ``n`` jobs with claim()+complete()."""
    path = os.path.join(tmp, "profile.db")
    bulk_fill(path, n, sync)
    queue = sclib_queue(path, sync)
    queue.stats()
    profiler = cProfile.Profile()
    profiler.enable()
    while (job := queue.claim("profile", [JOB_TYPE], lease_seconds=30)) is not None:
        queue.complete(job.lease)
    profiler.disable()
    queue.close()
    text = io.StringIO()
    stats = pstats.Stats(profiler, stream=text).strip_dirs()
    stats.sort_stats("tottime").print_stats(20)
    stats.sort_stats("cumulative").print_stats(25)
    log(f"cProfile of one process draining {n} jobs (raw claim+complete):")
    log(text.getvalue())


# -- output --------------------------------------------------------------------------


def print_report(result: dict[str, Any]) -> None:
    s = result["settings"]
    print(
        f"sclib {s['sclib_version']} vs huey {s['huey_version']} | SQLite "
        f"{s['sqlite_version']} | Python {s['python']} | {s['cpus']} CPU(s)"
        + ("  [--quick: small sizes]" if s["quick"] else "")
    )
    print(
        f"durability: both WAL, synchronous={s['synchronous']} "
        f"(huey via a SqliteStorage subclass; sclib SQLiteJobStore(synchronous=...))"
    )
    print(f"huey: SqliteHuey(results=False), consumer {s['huey_consumer']}")
    print(f"sclib Worker: {s['sclib_worker']}, one per process, thread mode")
    print(f"done = polled in the database every {s['poll_seconds'] * 1000:g} ms")
    print()
    e = result["enqueue"]
    print(f"1. enqueue {e['jobs']:,} no-op jobs, one at a time, one process")
    print(f"   sclib enqueue       {e['sclib_jobs_per_s']:10,.0f} jobs/s")
    print(
        f"   sclib enqueue_many  {e['sclib_many_jobs_per_s']:10,.0f} jobs/s"
        "  (100 a call)"
    )
    print(f"   huey                {e['huey_jobs_per_s']:10,.0f} jobs/s")
    print(
        f"   enqueue/huey {e['ratio']:.2f}x (target >= 1)   "
        f"enqueue_many/huey {e['many_ratio']:.2f}x (target >= 3)"
    )
    print()
    rows = result["claim_complete"]
    print(f"2. claim+complete of {rows[0]['jobs']:,} pre-filled no-op jobs (jobs/s)")
    print(
        "   procs  sclib Worker  Worker+prefetch  sclib raw loop  huey consumer"
        "  Worker/huey  prefetch/huey  raw/huey"
    )
    for r in rows:
        print(
            f"   {r['processes']:>5}  {r['sclib_worker_jobs_per_s']:12,.0f}  "
            f"{r['sclib_worker_prefetch_jobs_per_s']:15,.0f}  "
            f"{r['sclib_raw_jobs_per_s']:14,.0f}  {r['huey_jobs_per_s']:13,.0f}  "
            f"{r['ratio_worker']:10.2f}x  {r['ratio_worker_prefetch']:12.2f}x  "
            f"{r['ratio_raw']:7.2f}x"
        )
    print(
        f"   (Worker: the defaults, prefetch auto (adapts to the jobs' run time); "
        f"Worker+prefetch: prefetch={PREFETCH}, one per batch; raw loop: "
        "claim() then complete(), two per job)"
    )
    print(
        "   (targets: default Worker >= 1x huey, Worker+prefetch >= 2x, with 1 and "
        "4 processes; more processes than CPUs oversubscribe)"
    )
    print()
    lat = result["claim_latency"]
    print("3. JobQueue.claim latency, one process, claim+complete pairs")
    print("   pending jobs  samples  claim median   claim p95  complete median  fill")
    for case in (lat["small"], lat["large"]):
        print(
            f"   {case['pending']:>12,}  {case['samples']:>7}  "
            f"{case['claim_median_us']:>10,.0f} us  {case['claim_p95_us']:>8,.0f} us"
            f"  {case['complete_median_us']:>12,.0f} us  {case['fill_seconds']:.1f} s"
        )
    print(
        f"   median ratio {lat['large']['pending']:,} / {lat['small']['pending']:,}: "
        f"{lat['ratio_median']:.2f}x (target <= 2)"
    )
    for op, plan in lat["large"]["query_plans"].items():
        print(f"   {op} query plan at {lat['large']['pending']:,} pending: {plan}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--jobs",
        type=int,
        default=None,
        help="jobs per enqueue and drain run (default 2000; 300 with --quick)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="small sizes (100,000 instead of 1,000,000 pending "
        "jobs for the latency case); under a minute",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object on stdout and nothing else",
    )
    parser.add_argument(
        "--processes",
        default="1,4",
        help="worker process counts for claim+complete (default 1,4)",
    )
    parser.add_argument(
        "--synchronous",
        default="NORMAL",
        choices=["OFF", "NORMAL", "FULL"],
        help="SQLite synchronous mode for both queues (default "
        "NORMAL, sclib's default)",
    )
    parser.add_argument("--latency-samples", type=int, default=500)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print (to stderr) a cProfile of one process "
        "draining --jobs jobs with claim()+complete()",
    )
    args = parser.parse_args(argv)
    quick = args.quick
    n = args.jobs or (300 if quick else 2000)
    small, large = 10_000, 100_000 if quick else 1_000_000
    samples = min(args.latency_samples, 200) if quick else args.latency_samples
    budget = 8.0 if quick else 60.0
    sync = args.synchronous
    process_counts = [int(p) for p in args.processes.split(",") if p.strip()]

    tmp = tempfile.mkdtemp(prefix="sclib-bench-")
    try:
        result: dict[str, Any] = {
            "settings": {
                "sclib_version": sclib.__version__,
                "huey_version": huey.__version__,
                "sqlite_version": sqlite3.sqlite_version,
                "python": platform.python_version(),
                "cpus": os.cpu_count(),
                "quick": quick,
                "synchronous": sync,
                "journal_mode": "WAL",
                "huey_consumer": HUEY_CONSUMER,
                "huey_results": False,
                "sclib_worker": SCLIB_WORKER,
                "poll_seconds": POLL_SECONDS,
                "job_type": JOB_TYPE,
            }
        }
        if args.profile:
            profile_raw_loop(tmp, n, sync)
        log(f"1. enqueue {n} jobs ...")
        result["enqueue"] = bench_enqueue(tmp, n, sync)
        log(f"2. claim+complete of {n} jobs ...")
        result["claim_complete"] = bench_claim_complete(tmp, n, process_counts, sync)
        log("3. claim latency ...")
        lat_small = bench_latency(tmp, small, samples, budget, sync)
        lat_large = bench_latency(tmp, large, samples, budget, sync)
        result["claim_latency"] = {
            "small": lat_small,
            "large": lat_large,
            "ratio_median": lat_large["claim_median_us"] / lat_small["claim_median_us"],
        }
    finally:
        _cleanup()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print_report(result)
    return 0


def _cleanup() -> None:
    """End every process this script started (and huey's forked workers)."""
    for child in _children:
        if child.is_alive():
            child.terminate()
            child.join(timeout=5)
        if child.is_alive():
            child.kill()
            child.join(timeout=5)
    for pid, started in _grandchildren:  # huey's forked workers, if still there
        if started is not None and _start_time(pid) == started:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    sys.exit(main())
