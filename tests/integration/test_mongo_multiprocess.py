"""Several processes on one MongoDB database: two servers, four workers.

One deployment, as docs/deploy.md describes it, on the mongowire test server
(:mod:`tests.mongowire`: MongoDB's wire protocol over an in-memory stand-in, in a
process of its own, reached through the real pymongo over TCP on 127.0.0.1):

* two ``sclib serve`` processes (uvicorn, token auth, no in-process worker),
* four ``sclib worker`` processes running the server's handlers and the handler
  of :mod:`tests.integration.mongo_handlers`, two of them claiming ahead
  (``--prefetch 4``),

all with ``SCLIB_BACKEND=mongodb://127.0.0.1:PORT/<db>?replicaSet=rs0``, one
``SCLIB_SECRET_KEY`` and one shared ``SCLIB_DATA_DIR``, and this test process as
a client (HTTP) and an operator (the library, on the same database).

``test_parallel_chunked_uploads_alternate_between_two_servers``: uploads sent in
parallel with the large-file protocol, each chunk to the other server than the
one before, into four datasets shared by two uploads each, while the second server
goes through a rolling restart (SIGTERM with chunks in flight; its chunks go to
the first server until it is back), each chunk then sent once more, and every
upload completed on both servers at once. Every upload completes, its stored
file's BLAKE3 is the source's, its one job completes once, and each dataset
lists each of its files once and has a number of its own.

``test_sigkilled_workers_on_mongodb_lose_nothing_and_commit_once``: jobs whose
handler commits a marker keyed by the job id, while workers are SIGKILLed at
random (seeded) and restarted. Every job completes, each marker is committed
once, no attempt runs twice, no two runs of a job overlap, nothing is left
running, and some jobs demonstrably ran again after a kill.

``test_a_database_outage_costs_no_job_and_no_upload``: for a few seconds the
database refuses every command, as during an election, while jobs run and an
upload arrives: 503s naming MongoDB, no worker dies, nothing lost or doubled.

``test_each_tick_of_a_schedule_is_one_job_on_mongodb``: the every-second
schedule all workers check through all of the above has one job per tick.

The module starts a wire server of its own (the outage test sets its fault
schedule), and takes about a minute.

Counts are printed (``-s``) and kept with ``record_property``.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib import JobQueue
from sclib.jobtypes import JobStatus
from tests.integration import mongo_handlers
from tests.mongowire.process import WireServerProcess, start_server
from tests.server.live import LiveServer

pytestmark = [pytest.mark.mongo, pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
SERVERS = 2
WORKERS = 4
#: a bound on every wait, far above what a run needs (a hang fails, not blocks)
PATIENCE = 120.0

UPLOADS = 8
DATASETS = 4
CHUNK = 256 * 1024
#: six whole chunks and a short last one
CHUNKS = 7
#: the chunks go in four parts: before the second server's rolling restart,
#: while it stops, while it is down and starts, after it is back
PHASES = ("before", "stopping", "down", "after")

JOBS = 48
#: kills stop after this many, so the run ends however the dice fall
MAX_KILLS = 14

#: seconds the database refuses everything, and the jobs running through it
OUTAGE = 3.0
OUTAGE_JOBS = 16


@dataclass
class Deployment:
    """The processes of one deployment and what they share."""

    wire: WireServerProcess
    database: str
    data_dir: Path
    out: Path
    servers: list[LiveServer] = field(default_factory=list)
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.wire.port}/{self.database}?replicaSet=rs0"

    @property
    def worker_log(self) -> Path:
        return self.data_dir.parent / "workers.log"

    def env(self) -> dict[str, str]:
        """What every process of the deployment is given."""
        return {
            "PYTHONPATH": os.pathsep.join(
                [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
            "SCLIB_BACKEND": self.url,
            "SCLIB_DATA_DIR": str(self.data_dir),
            "SCLIB_MONGO_WRITE_CONCERN": "majority",
            "SCLIB_LOG_FORMAT": "json",
        }

    def spawn_worker(self, slot: int) -> subprocess.Popen[bytes]:
        """The worker of ``slot``: odd slots claim four jobs ahead (``--prefetch``),
        so both ways of claiming run on the database."""
        from tests.server.live import SECRET

        env = {**os.environ, **self.env(), "SCLIB_SECRET_KEY": SECRET}
        with open(self.worker_log, "ab") as log:
            return subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sclib",
                    "worker",
                    "--handlers",
                    "sclib.pipeline:handlers_from_settings",
                    "--handlers",
                    "tests.integration.mongo_handlers:handlers",
                    "--concurrency",
                    "2",
                    *(["--prefetch", "4"] if slot % 2 else []),
                    "--lease-seconds",
                    "3",
                    "--poll-interval",
                    "0.1",
                    "--rescue-interval",
                    "0.5",
                    "--grace-period",
                    "1",
                ],
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_for_workers(self) -> None:
        """Until every current worker process has recorded itself in the store
        (so it started, on this database), or one exited."""
        pids = {p.pid for p in self.workers}
        client = self.wire.client()
        try:
            records = client[self.database]["jobs_workers"]
            deadline = time.monotonic() + PATIENCE / 2
            while True:
                exited = [p.args for p in self.workers if p.poll() is not None]
                assert not exited, self.logs()
                seen = {_worker_pid(d["_id"]) for d in records.find({}, {"_id": 1})}
                if pids <= seen:
                    return
                assert time.monotonic() < deadline, (pids, seen, self.logs())
                time.sleep(0.1)
        finally:
            client.close()

    def logs(self) -> str:
        text = "".join(f"--- server {s.port}:\n{s.log()}\n" for s in self.servers)
        if self.worker_log.exists():
            text += "--- workers:\n" + self.worker_log.read_text(errors="replace")
        return text[-6000:]


def _stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    return process.returncode


@pytest.fixture(scope="module")
def wire() -> Iterator[WireServerProcess]:
    """A wire server of this module's own: the outage test sets its (global)
    fault schedule."""
    pytest.importorskip("pymongo")
    pytest.importorskip("mongomock")
    server = start_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def deployment(
    wire: WireServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("mongo-deployment")
    dep = Deployment(
        wire=wire,
        database=f"sclib_multi_{uuid.uuid4().hex[:10]}",
        data_dir=root / "data",
        out=root / "effects",
    )
    dep.data_dir.mkdir()
    dep.out.mkdir()
    try:
        # every process at once, on a database that does not exist yet: each
        # builds the indexes, as replicas starting together do
        dep.servers = [
            LiveServer(dep.data_dir, backend=dep.url, workers=0, env=dep.env())
            for _ in range(SERVERS)
        ]
        with ThreadPoolExecutor(SERVERS) as pool:
            starting = [pool.submit(s.start, timeout=PATIENCE / 2) for s in dep.servers]
            dep.workers = [dep.spawn_worker(n) for n in range(WORKERS)]
            for future in starting:
                future.result()
        dep.wait_for_workers()
        yield dep
    finally:
        codes = [_stop(p) for p in dep.workers]
        for server in dep.servers:
            server.stop()
        client = wire.client()
        try:
            client.drop_database(dep.database)
        finally:
            client.close()
    assert codes == [0] * len(codes), dep.logs()


# -- parallel chunked uploads over two servers ------------------------------------


class Http:
    """Counts every answer by server and route; a 5xx fails the test."""

    def __init__(self, servers: list[LiveServer]) -> None:
        self.servers = servers
        self.client = httpx.Client(timeout=60)
        self.codes: Counter[tuple[int, str, int]] = Counter()
        self.lock = threading.Lock()

    def send(
        self,
        n: int,
        method: str,
        path: str,
        route: str,
        *,
        unavailable: bool = False,
        **kw: Any,
    ) -> httpx.Response:
        """``unavailable``: the database is down, so a 503 naming the failed
        MongoDB operation is the right answer (any other 5xx still fails)."""
        server = self.servers[n]
        headers = {**server.headers(), **kw.pop("headers", {})}
        r = self.client.request(method, server.url + path, headers=headers, **kw)
        with self.lock:
            self.codes[(n, route, r.status_code)] += 1
        if unavailable and r.status_code == 503:
            assert "MongoDB" in r.text, r.text
        else:
            assert r.status_code < 500, (route, r.status_code, r.text)
        return r

    def until_not_busy(
        self, n: int, method: str, path: str, route: str, **kw: Any
    ) -> httpx.Response:
        """Send again while the answer is 423 (another request holds the lock)."""
        deadline = time.monotonic() + PATIENCE
        while True:
            r = self.send(n, method, path, route, **dict(kw))
            if r.status_code != 423 or time.monotonic() > deadline:
                return r
            time.sleep(0.02)

    def failed(self, n: int, route: str) -> None:
        """A request server ``n`` did not answer (refused, or cut)."""
        with self.lock:
            self.codes[(n, route, 0)] += 1

    def count(self, route: str, status: int = 200) -> list[int]:
        return [self.codes[(n, route, status)] for n in range(len(self.servers))]


@pytest.fixture
def http(deployment: Deployment) -> Iterator[Http]:
    client = Http(deployment.servers)
    yield client
    client.client.close()


def test_parallel_chunked_uploads_alternate_between_two_servers(
    deployment: Deployment, http: Http, record_property: Any
) -> None:
    """Every upload completes once, exact, whichever server got which chunk,
    through a rolling restart of one server."""
    started = time.monotonic()
    rng = random.Random(20261208)
    datasets = [uuid.uuid4().hex for _ in range(DATASETS)]
    sources = [rng.randbytes((CHUNKS - 1) * CHUNK + 1000 + k) for k in range(UPLOADS)]
    digests = [blake3.blake3(data).hexdigest() for data in sources]

    def initiate(k: int) -> dict[str, Any]:
        r = http.send(
            k % SERVERS,
            "POST",
            "/api/upload/large/initiate",
            "initiate",
            json={
                "filename": f"part-{k}.raw",
                "file_size": len(sources[k]),
                "chunk_size": CHUNK,
                "file_blake3": digests[k],
                "dataset_name": f"multi {k % DATASETS}",
                "dataset_identifier": datasets[k % DATASETS],
                "sensor": "OTHER",
                "convert": False,
            },
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        assert body["total_chunks"] == CHUNKS
        assert body["dataset_uuid"] == datasets[k % DATASETS]
        return body

    def chunk(k: int, i: int, n: int, route: str) -> None:
        """Chunk ``i`` of upload ``k`` to server ``n``; to the other one when ``n``
        does not answer (restarting), as a proxy or a retrying client would."""
        data = sources[k][i * CHUNK : (i + 1) * CHUNK]
        for _ in range(2 * SERVERS):
            try:
                r = http.until_not_busy(
                    n,
                    "POST",
                    f"/api/upload/large/chunk/{ups[k]}/{i}",
                    route,
                    content=data,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "X-Chunk-Hash": "blake3:" + blake3.blake3(data).hexdigest(),
                    },
                )
                break
            except httpx.TransportError:
                http.failed(n, route)
                n = (n + 1) % SERVERS
        assert r.status_code == 200, r.text

    def send(work: list[tuple[int, int]], phase: str) -> None:
        list(pool.map(lambda w: chunk(w[0], w[1], sum(w) % SERVERS, phase), work))

    restarted = deployment.servers[1]
    with ThreadPoolExecutor(8) as pool:
        ups = [b["upload_id"] for b in pool.map(initiate, range(UPLOADS))]
        # every chunk of every upload, eight at a time, in a seeded order; chunk
        # i of upload k goes to server (k + i) % 2, so each upload alternates
        work = [(k, i) for k in range(UPLOADS) for i in range(CHUNKS)]
        rng.shuffle(work)
        part = len(work) // len(PHASES)
        parts = [work[n * part : (n + 1) * part] for n in range(len(PHASES))]
        parts[-1] += work[len(PHASES) * part :]
        send(parts[0], "before")
        # a rolling restart of the second server: SIGTERM while chunks arrive;
        # chunks while it is down and starting again go to the first one
        with ThreadPoolExecutor(1) as admin:
            stopping = admin.submit(restarted.stop)
            send(parts[1], "stopping")
            stopping.result()
            starting = admin.submit(restarted.start, timeout=PATIENCE / 2)
            send(parts[2], "down")
            starting.result()
        send(parts[3], "after")
        # a chunk sent again, to the other server: idempotent
        list(
            pool.map(lambda k: chunk(k, 0, (k + 1) % SERVERS, "again"), range(UPLOADS))
        )

    for k, up in enumerate(ups):
        status = http.send(
            (k + 1) % SERVERS, "GET", f"/api/upload/large/status/{up}", "status"
        ).json()
        assert status["uploaded_chunks"] == list(range(CHUNKS)), status
        assert status["is_complete"] and not status["committed"]

    # complete every upload on both servers at once: one commit, one job
    answers: dict[tuple[int, int], dict[str, Any]] = {}

    def complete(k: int, n: int) -> None:
        r = http.until_not_busy(
            n,
            "POST",
            f"/api/upload/large/complete/{ups[k]}",
            "complete",
            json={"file_blake3": digests[k]},
        )
        assert r.status_code == 200, r.text
        answers[(k, n)] = r.json()

    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda kn: complete(*kn),
                [(k, n) for k in range(UPLOADS) for n in range(SERVERS)],
            )
        )
    job_ids = []
    for k in range(UPLOADS):
        first, second = answers[(k, 0)], answers[(k, 1)]
        for key in ("job_id", "file_blake3", "dataset_uuid", "path", "file_size"):
            assert first[key] == second[key], (k, key, first, second)
        assert first["file_blake3"] == digests[k]
        job_ids.append(first["job_id"])
    assert len(set(job_ids)) == UPLOADS

    # the workers run the upload jobs; each is followed from the other server
    finished: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + PATIENCE
    while len(finished) < UPLOADS:
        assert time.monotonic() < deadline, (finished.keys(), deployment.logs())
        for k, job_id in enumerate(job_ids):
            if job_id in finished:
                continue
            job = http.send(
                (k + 1) % SERVERS, "GET", f"/api/v1/jobs/{job_id}", "job"
            ).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                finished[job_id] = job
        time.sleep(0.1)

    lost = doubled = 0
    for k, job_id in enumerate(job_ids):
        job = finished[job_id]
        kinds = Counter(e["kind"] for e in job["events"])
        lost += job["status"] != "completed"
        doubled += max(0, kinds["completed"] - 1)
        stored = (
            deployment.data_dir / "upload" / datasets[k % DATASETS] / f"part-{k}.raw"
        )
        assert blake3.blake3(stored.read_bytes()).hexdigest() == digests[k]
        assert job["status"] == "completed", job
        assert kinds["completed"] == 1, job["events"]
    jobs = http.send(
        0,
        "GET",
        "/api/v1/jobs?job_type=upload&limit=1000",
        "jobs",
        headers=deployment.servers[0].headers(admin=True),
    ).json()["jobs"]
    assert sorted(j["job_id"] for j in jobs) == sorted(job_ids)
    doubled += len(jobs) - UPLOADS
    numbers = []
    for d, dataset in enumerate(datasets):
        record = http.send(
            d % SERVERS, "GET", f"/api/v1/datasets/{dataset}", "dataset"
        ).json()
        numbers.append(record["number"])
        files = {f["path"]: f["blake3"] for f in record["files"]}
        assert files == {
            f"part-{k}.raw": digests[k] for k in range(d, UPLOADS, DATASETS)
        }, record
        assert record["file_count"] == UPLOADS // DATASETS
        assert record["status"] == "done", record
    # the datasets, made by both servers at once, each have their own number
    assert len(set(numbers)) == DATASETS, numbers
    assert not list((deployment.data_dir / "tmp" / "uploads").iterdir())
    client = deployment.wire.client()
    try:
        sessions = list(client[deployment.database]["upload_sessions"].find())
    finally:
        client.close()
    assert sorted(s["_id"] for s in sessions) == sorted(ups)
    assert {s["status"] for s in sessions} == {"completed"}
    assert {len(s["chunks"]) for s in sessions} == {CHUNKS}
    counts: dict[str, Any] = {
        "uploads": UPLOADS,
        "datasets": DATASETS,
        "chunks_per_upload": CHUNKS,
        "chunks_by_server": [
            sum(http.count(phase)[n] for phase in PHASES) for n in range(SERVERS)
        ],
        "chunks_by_phase_and_server": {phase: http.count(phase) for phase in PHASES},
        "chunks_refused_during_the_restart": sum(
            sum(http.count(phase, 0)) for phase in PHASES
        ),
        "chunks_sent_again_by_server": http.count("again"),
        "completes_by_server": http.count("complete"),
        "busy_answers_423": sum(
            v for (_, _, code), v in http.codes.items() if code == 423
        ),
        "bytes": sum(len(d) for d in sources),
        "lost": lost,
        "doubled": doubled,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"\nmongo_multiprocess_uploads: {counts}")
    record_property("mongo_multiprocess_uploads", counts)
    assert (lost, doubled) == (0, 0)
    assert sum(counts["chunks_by_server"]) == UPLOADS * CHUNKS
    # the second server took chunks before and after its restart, and was down
    # for part of it: its chunks went to the first one then
    assert http.count("before")[1] > 0 and http.count("after")[1] > 0
    assert counts["chunks_refused_during_the_restart"] > 0


# -- SIGKILLed workers ----------------------------------------------------------------


@dataclass
class Execution:
    """One run of the handler, from its start and end lines."""

    job_id: str
    attempt: int
    pid: int
    start: float
    end: float | None = None


def _executions(out: Path) -> list[Execution]:
    path = out / "executions.log"
    runs: dict[tuple[str, int, int], Execution] = {}
    if not path.exists():
        return []
    for line in path.read_text().splitlines():
        kind, job_id, attempt, pid, at = line.split()
        key = (job_id, int(attempt), int(pid))
        if kind == "start":
            runs[key] = Execution(job_id, int(attempt), int(pid), float(at))
        else:
            runs[key].end = float(at)
    return list(runs.values())


def _worker_pid(worker_id: str | None) -> int | None:
    """The pid in a worker id (``host-pid-random``)."""
    return None if worker_id is None else int(worker_id.rsplit("-", 2)[1])


def test_sigkilled_workers_on_mongodb_lose_nothing_and_commit_once(
    deployment: Deployment, record_property: Any
) -> None:
    """Every job completes once, each marker is committed once, no attempt runs
    twice, no two runs of a job overlap, no crash is charged to an attempt whose
    start was not recorded, nothing is left running; some jobs ran again."""
    started = time.monotonic()
    queue = JobQueue.open(
        deployment.url, max_crashes=20, handlers=mongo_handlers.handlers
    )
    deaths: dict[int, float] = {}  # worker pid -> when it was killed (monotonic)
    try:
        jobs = [
            queue.enqueue(
                mongo_handlers.EFFECT,
                {
                    "i": i,
                    "out": str(deployment.out),
                    "mongo_url": deployment.url,
                    "database": deployment.database,
                    "work_seconds": 0.6,
                    "after_seconds": 0.15,
                },
            )
            for i in range(JOBS)
        ]
        ids = {j.id for j in jobs}
        rng = random.Random(20261209)
        kills = busy_kills = 0
        deadline = time.monotonic() + PATIENCE
        while True:
            assert time.monotonic() < deadline, (
                queue.stats()["by_status"],
                deployment.logs(),
            )
            by_type = queue.stats()["by_type_status"].get(mongo_handlers.EFFECT, {})
            if sum(by_type.get(s, 0) for s in ("completed", "failed", "cancelled")) == (
                JOBS
            ):
                break
            time.sleep(rng.uniform(0.4, 0.9))
            if kills >= MAX_KILLS:
                continue  # the workers now drain the queue undisturbed
            # a random worker, among those holding a job when there are some
            slots = {p.pid: slot for slot, p in enumerate(deployment.workers)}
            holding = sorted(
                {
                    slots[pid]
                    for j in queue.list(status="running", limit=1000)
                    if (pid := _worker_pid(j.worker_id)) in slots
                }
            )
            victim = rng.choice(holding) if holding else rng.randrange(WORKERS)
            busy_kills += bool(holding)
            process = deployment.workers[victim]
            deaths[process.pid] = time.monotonic()
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills += 1
            deployment.workers[victim] = deployment.spawn_worker(victim)

        final = {j.id: queue.get(j.id) for j in jobs}
        events = {job_id: queue.events(job_id) for job_id in ids}
        stats = queue.stats()["by_status"]
    finally:
        queue.close()
    client = deployment.wire.client()
    try:
        effects = client[deployment.database]["effects"]
        mine = {"_id": {"$in": sorted(ids)}}
        markers = {m["_id"]: m for m in effects.find(mine)}
        marker_docs = effects.count_documents(mine)
    finally:
        client.close()

    runs = _executions(deployment.out)
    by_job: dict[str, list[Execution]] = {}
    for run in runs:
        by_job.setdefault(run.job_id, []).append(run)
    attempts_run = Counter((r.job_id, r.attempt) for r in runs)
    lost = sum(j.status is not JobStatus.COMPLETED for j in final.values()) + len(
        ids - set(markers)
    )
    doubled = (
        marker_docs
        - len(markers)
        + sum(
            max(0, sum(e.kind == "completed" for e in ev) - 1) for ev in events.values()
        )
        + sum(n - 1 for n in attempts_run.values())  # an attempt that ran twice
    )
    # no two runs of one job overlap in time; a run without an end ended when
    # its worker was killed
    overlaps = []
    for job_runs in by_job.values():
        spans = sorted(job_runs, key=lambda r: r.start)
        overlaps += [
            (a, b)
            for a, b in itertools.pairwise(spans)
            if b.start < (a.end if a.end is not None else deaths.get(a.pid, 1e18))
        ]
    # a crash is charged only to an attempt whose start a worker recorded
    recorded = {
        job_id: {e.attempt for e in ev if e.kind == "started"}
        for job_id, ev in events.items()
    }
    charges = [
        (job.id, e.attempt)
        for job in final.values()
        for e in job.error_history
        if e.kind == "crash"
    ]
    charged_held = [c for c in charges if c[1] not in recorded[c[0]]]
    rerun = [job_id for job_id, job_runs in by_job.items() if len(job_runs) > 1]
    counts: dict[str, Any] = {
        "jobs": JOBS,
        "workers": WORKERS,
        "kills": kills,
        "kills_of_a_worker_holding_a_job": busy_kills,
        "executions": len(runs),
        "jobs_run_more_than_once": len(rerun),
        "rescues": sum(e.kind == "rescued" for ev in events.values() for e in ev),
        "crashes_charged": len(charges),
        "held_rescues": sum(
            e.kind == "rescued" and "not counted as a crash" in e.message
            for ev in events.values()
            for e in ev
        ),
        "markers": marker_docs,
        "overlaps": len(overlaps),
        "lost": lost,
        "doubled": doubled,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"\nmongo_multiprocess_crashes: {counts}")
    record_property("mongo_multiprocess_crashes", counts)
    assert (lost, doubled) == (0, 0), deployment.logs()
    assert stats["running"] == 0 and stats["pending"] == 0, stats
    assert {k: m["i"] for k, m in markers.items()} == {
        j.id: i for i, j in enumerate(jobs)
    }
    assert overlaps == []
    assert charged_held == []
    for job in final.values():
        # every run is of an attempt that was claimed
        assert {r.attempt for r in by_job[job.id]} <= set(range(1, job.attempts + 1))
        # the completing attempt committed the marker, or found an earlier one's
        assert job.result["committed"] == (markers[job.id]["attempt"] == job.attempts)
    # the recovery really happened: workers died holding jobs, and jobs ran again
    assert kills >= 8 and busy_kills >= 4
    assert rerun, "no job ran twice: the kills never hit a running job"
    assert counts["rescues"] >= kills // 2


# -- a database outage --------------------------------------------------------------


def test_a_database_outage_costs_no_job_and_no_upload(
    deployment: Deployment, http: Http, record_property: Any
) -> None:
    """For OUTAGE seconds the database refuses every command (NotWritablePrimary,
    as while a replica set elects a primary), and drops a fifth of the
    connections, some after running the command, while jobs run and an upload's
    chunks arrive. The servers answer 503 naming the MongoDB operation (never
    another 5xx), every worker process lives on, and afterwards every job
    completes once with one marker and the upload completes exact."""
    started = time.monotonic()
    rng = random.Random(20261210)
    data = rng.randbytes(3 * CHUNK + 77)
    digest = blake3.blake3(data).hexdigest()
    r = http.send(
        0,
        "POST",
        "/api/upload/large/initiate",
        "initiate",
        json={
            "filename": "outage.raw",
            "file_size": len(data),
            "chunk_size": CHUNK,
            "dataset_name": "outage",
            "sensor": "OTHER",
            "convert": False,
        },
    )
    assert r.status_code == 200, r.text
    up, dataset = r.json()["upload_id"], r.json()["dataset_uuid"]
    total = -(-len(data) // CHUNK)

    def chunk(i: int, *, unavailable: bool = False) -> int:
        piece = data[i * CHUNK : (i + 1) * CHUNK]
        return http.send(
            i % SERVERS,
            "POST",
            f"/api/upload/large/chunk/{up}/{i}",
            "outage chunk",
            unavailable=unavailable,
            content=piece,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Chunk-Hash": "blake3:" + blake3.blake3(piece).hexdigest(),
            },
        ).status_code

    assert chunk(0) == 200
    queue = JobQueue.open(
        deployment.url, max_crashes=20, handlers=mongo_handlers.handlers
    )
    try:
        jobs = [
            queue.enqueue(
                mongo_handlers.EFFECT,
                {
                    "i": 1000 + i,
                    "out": str(deployment.out),
                    "mongo_url": deployment.url,
                    "database": deployment.database,
                    "work_seconds": 0.3,
                    "after_seconds": 0.05,
                },
            )
            for i in range(OUTAGE_JOBS)
        ]
        ids = {j.id for j in jobs}
        deadline = time.monotonic() + PATIENCE
        while not queue.list(status="running", limit=1):
            assert time.monotonic() < deadline, deployment.logs()
            time.sleep(0.05)
        deployment.wire.faults("reset")
        deployment.wire.faults(
            "set",
            seed=20261210,
            rules=[
                {
                    "kind": "close_after",
                    "databases": [deployment.database],
                    "probability": 0.1,
                },
                {
                    "kind": "close_before",
                    "databases": [deployment.database],
                    "probability": 0.1,
                },
                {"kind": "not_writable_primary", "databases": [deployment.database]},
            ],
        )
        down = time.monotonic()
        answers: Counter[int] = Counter()
        try:
            while time.monotonic() - down < OUTAGE:
                for n in range(SERVERS):
                    health = http.client.get(deployment.servers[n].url + "/health")
                    answers[health.status_code] += 1
                answers[chunk(1, unavailable=True)] += 1
                time.sleep(0.2)
        finally:
            stats = deployment.wire.faults("stats")
            deployment.wire.faults("clear")
        assert all(p.poll() is None for p in deployment.workers), deployment.logs()
        # after the outage: the rest of the upload, on both servers
        for i in range(1, total):
            assert chunk(i) == 200
        done = http.send(
            1,
            "POST",
            f"/api/upload/large/complete/{up}",
            "outage complete",
            json={"file_blake3": digest},
        )
        assert done.status_code == 200, done.text
        upload_job = done.json()["job_id"]
        deadline = time.monotonic() + PATIENCE
        while True:
            assert time.monotonic() < deadline, (
                queue.stats()["by_status"],
                deployment.logs(),
            )
            final = {j: queue.get(j) for j in [*ids, upload_job]}
            if all(j.status.finished for j in final.values()):
                break
            time.sleep(0.2)
        events = {job_id: queue.events(job_id) for job_id in final}
    finally:
        queue.close()
    client = deployment.wire.client()
    try:
        markers = {
            m["_id"]: m
            for m in client[deployment.database]["effects"].find(
                {"_id": {"$in": sorted(ids)}}
            )
        }
    finally:
        client.close()
    stored = deployment.data_dir / "upload" / dataset / "outage.raw"
    runs = [r for r in _executions(deployment.out) if r.job_id in ids]
    attempts_run = Counter((r.job_id, r.attempt) for r in runs)
    lost = sum(j.status is not JobStatus.COMPLETED for j in final.values()) + len(
        ids - set(markers)
    )
    doubled = sum(
        max(0, sum(e.kind == "completed" for e in ev) - 1) for ev in events.values()
    ) + sum(n - 1 for n in attempts_run.values())
    counts: dict[str, Any] = {
        "outage_seconds": OUTAGE,
        "jobs": OUTAGE_JOBS,
        "commands_faulted_by_kind": dict(sorted(stats["faults"].items())),
        "answers_during_the_outage": dict(sorted(answers.items())),
        "executions": len(runs),
        "failed_attempts": sum(
            e.kind == "retried" for ev in events.values() for e in ev
        ),
        "rescues": sum(e.kind == "rescued" for ev in events.values() for e in ev),
        "lost": lost,
        "doubled": doubled,
        "seconds": round(time.monotonic() - started, 1),
    }
    print(f"\nmongo_multiprocess_outage: {counts}")
    record_property("mongo_multiprocess_outage", counts)
    assert (lost, doubled) == (0, 0), deployment.logs()
    assert blake3.blake3(stored.read_bytes()).hexdigest() == digest
    for job_id in ids:
        job = final[job_id]
        assert job.result["committed"] == (markers[job_id]["attempt"] == job.attempts)
    # the outage was real: the servers said so, and commands were refused
    assert answers[503] > 0 and stats["faults"].get("not_writable_primary", 0) > 0
    assert set(answers) <= {200, 503}
    for n in range(SERVERS):
        assert http.client.get(deployment.servers[n].url + "/health").status_code == 200


# -- a periodic job scheduled by every worker --------------------------------------


def test_each_tick_of_a_schedule_is_one_job_on_mongodb(
    deployment: Deployment, record_property: Any
) -> None:
    """Every worker process (the SIGKILLed ones' replacements too) checks the
    every-second schedule of mongo_handlers on the one database, and each new
    one enqueues the ticks missed since the last enqueued one: every second
    between the first tick and the last has exactly one job, and no tick job
    failed."""
    queue = JobQueue.open(deployment.url, handlers=mongo_handlers.handlers)
    try:
        deadline = time.monotonic() + PATIENCE
        while True:
            jobs = queue.list(job_type=mongo_handlers.TICK, limit=10_000)
            if len(jobs) >= 5:
                break
            assert time.monotonic() < deadline, deployment.logs()
            time.sleep(0.5)
    finally:
        queue.close()
    ticks = sorted(datetime.fromisoformat(j.parameters["scheduled_for"]) for j in jobs)
    span = int((ticks[-1] - ticks[0]).total_seconds()) + 1
    keys = Counter(j.idempotency_key for j in jobs)
    counts = {
        "ticks": len(ticks),
        "seconds_spanned": span,
        "doubled": len(ticks) - len(set(ticks)) + sum(n - 1 for n in keys.values()),
        "missing": span - len(set(ticks)),
        "by_status": dict(Counter(j.status.value for j in jobs)),
    }
    print(f"\nmongo_multiprocess_ticks: {counts}")
    record_property("mongo_multiprocess_ticks", counts)
    assert counts["doubled"] == 0, "a tick was enqueued twice"
    assert counts["missing"] == 0, counts
    assert {j.status.value for j in jobs} <= {"completed", "pending", "running"}
