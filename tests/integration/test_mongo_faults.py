"""The MongoDB backends through a few hundred injected faults.

A job-queue workload (enqueue, claim, heartbeat, complete, fail and retry) and an
upload-session workload (create, record chunks, complete) run through the real
pymongo against a mongowire test server of their own (:mod:`tests.mongowire`),
whose fault schedule, set with its ``sclibFault`` command, drops connections
before and after applying commands, answers NotWritablePrimary,
PrimarySteppedDown and InterruptedAtShutdown, adds write concern errors (a
retryable ShutdownInProgress and a WriteConcernFailed timeout) and delays
commands, each with a seeded probability.

pymongo retries single-document writes and reads once (the server answers a
retried write that was already applied from its record, as MongoDB does); the
stores send createIndexes, update_many and delete_many once more themselves. What
is still uncertain after that reaches the workload as sclib's BackendError naming
the operation, and the workload does what a careful caller does: it retries (with
the same idempotency key, or the same session) or reads back what happened.

Afterwards: nothing lost (every job completed, every session complete with all its
chunks), nothing doubled (one job per idempotency key, no job completed twice, no
attempt claimed twice, one document per session, no chunk but the recorded ones).
The counts are printed (``-s``) and kept as the test's ``record_property``.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from pymongo import monitoring

from sclib.backends.mongo import MongoJobStore
from sclib.backends.mongo_sessions import MongoSessionStore
from sclib.errors import BackendError, LeaseLost
from sclib.jobs.policy import RetryPolicy
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import JobStatus
from sclib.models import Job, Progress
from sclib.testing.clock import ManualClock
from sclib.transfers.sessions import ChunkRecord, TransferSession
from tests.mongowire.process import WireServerProcess, start_server

pytestmark = [pytest.mark.mongo, pytest.mark.integration]

T = TypeVar("T")

#: per rule and command: about 15% of the commands get a fault of some kind
P = 0.02
KINDS = [
    "close_before",
    "close_after",
    "not_writable_primary",
    "primary_stepped_down",
    "interrupted_at_shutdown",
]
JOBS = 120
SESSIONS = 60
CHUNKS = 16
#: a bound on every loop, far above what a run needs
DEADLINE_S = 120


def _rules(database: str) -> list[dict[str, Any]]:
    only = {"databases": [database]}
    return [
        *({"kind": kind, "probability": P, **only} for kind in KINDS),
        {"kind": "write_concern_error", "code": 91, "probability": P, **only},
        {"kind": "write_concern_error", "code": 64, "probability": P / 2, **only},
        {"kind": "slow", "delay_ms": 5, "probability": P, **only},
    ]


class _Commands(monitoring.CommandListener):
    """Counts what pymongo sends: commands, failures, and retried writes (a
    second start with the same lsid and txnNumber)."""

    def __init__(self) -> None:
        self.sent: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.write_retries = 0
        self._seen: set[tuple[bytes, int]] = set()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent[event.command_name] += 1
        txn = event.command.get("txnNumber")
        if txn is not None:
            key = (bytes(event.command["lsid"]["id"]), int(txn))
            if key in self._seen:
                self.write_retries += 1
            self._seen.add(key)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures[event.command_name] += 1


class _Resends(logging.Handler):
    """Counts the stores' own second tries (``mongo._again``)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "sending it once more" in record.getMessage():
            self.count += 1


class _Caller:
    """Runs store operations as a careful caller: a BackendError must name the
    operation; the call is then repeated until it succeeds."""

    def __init__(self) -> None:
        self.surfaced: Counter[str] = Counter()
        self.start = time.monotonic()

    def check_time(self) -> None:
        assert time.monotonic() - self.start < DEADLINE_S, "workload did not finish"

    def note(self, operation: str, exc: BackendError) -> None:
        assert operation in str(exc), f"{exc} does not name {operation}"
        assert str(exc).startswith("MongoDB "), exc
        self.surfaced[operation] += 1
        self.check_time()

    def until_done(self, operation: str, call: Callable[[], T]) -> T:
        while True:
            try:
                return call()
            except BackendError as exc:
                self.note(operation, exc)


@pytest.fixture(scope="module")
def fault_server() -> Iterator[WireServerProcess]:
    """A wire server of this module's own: its fault schedule is global."""
    server = start_server()
    yield server
    server.stop()


@pytest.fixture
def watched(fault_server: WireServerProcess) -> Iterator[tuple[Any, _Commands]]:
    commands = _Commands()
    client = fault_server.client(event_listeners=[commands])
    yield client, commands
    client.close()


@pytest.fixture
def resends() -> Iterator[_Resends]:
    handler = _Resends()
    logger = logging.getLogger("sclib.backends.mongo")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def _report(
    name: str,
    fault_server: WireServerProcess,
    commands: _Commands,
    resends: _Resends,
    caller: _Caller,
    record_property: Callable[[str, object], None],
    **outcome: int,
) -> dict[str, Any]:
    stats = fault_server.faults("stats")
    fault_server.faults("reset")
    counts = {
        "commands_run": stats["commandsTotal"],
        "faults_by_kind": dict(sorted(stats["faults"].items())),
        "faults_total": stats["faultsTotal"],
        "retries": {
            "pymongo_write_retries": commands.write_retries,
            "pymongo_failed_commands": sum(commands.failures.values()),
            "server_replays_of_applied_writes": stats["replays"],
            "store_resends": resends.count,
            "caller_retries_after_backend_error": sum(caller.surfaced.values()),
        },
        "backend_errors_by_operation": dict(sorted(caller.surfaced.items())),
        **outcome,
    }
    print(f"\n{name}: {counts}")
    record_property(name, counts)
    return counts


def test_job_queue_survives_injected_faults(
    fault_server: WireServerProcess,
    watched: tuple[Any, _Commands],
    resends: _Resends,
    record_property: Callable[[str, object], None],
) -> None:
    """Enqueue, claim, heartbeat, complete, fail (with retry) and operator retry
    through a few hundred faults of every kind: every job ends completed, exactly
    once; no idempotency key makes two jobs; no attempt is handed to two claims;
    each claim that raised either never happened or is rescued after its lease.
    Errors that reach the caller are BackendErrors naming the operation."""
    client, commands = watched
    caller = _Caller()
    fault_server.faults("reset")
    fault_server.faults("set", rules=_rules("faultjobs"), seed=20261207)
    store = caller.until_done(
        "create indexes", lambda: MongoJobStore(client, database="faultjobs")
    )
    clock = ManualClock()
    queue = JobQueue(
        store, clock=clock, retry_policy=RetryPolicy(base_delay=1, jitter=0.0)
    )
    for i in range(JOBS):
        caller.until_done(
            "enqueue",
            lambda i=i: queue.enqueue(
                "upload",
                {"i": i},
                idempotency_key=f"job-{i}",
                # every tenth job fails for good once, and an operator retries it
                max_attempts=1 if i % 10 == 0 else 3,
            ),
        )

    claims: list[tuple[str, int]] = []
    unsure_claims = 0
    completions: Counter[str] = Counter()
    retried_by_operator: set[str] = set()

    def settle(job: Job, operation: str, call: Callable[[], Job]) -> None:
        """Complete or fail ``job``; after a BackendError, read what happened and
        call again only if the attempt is still this worker's and unsettled."""
        while True:
            try:
                call()
            except LeaseLost:
                return  # rescued meanwhile: another attempt will settle it
            except BackendError as exc:
                caller.note(operation, exc)
                now = caller.until_done("get", lambda: queue.get(job.id))
                if now.status is not JobStatus.RUNNING or now.attempts != job.attempts:
                    # it was applied (or the lease went): never call it twice
                    if operation == "complete" and now.status is JobStatus.COMPLETED:
                        completions[job.id] += now.attempts == job.attempts
                    return
                continue
            if operation == "complete":
                completions[job.id] += 1
            return

    while True:
        caller.check_time()
        try:
            job = queue.claim("w")
        except BackendError as exc:
            caller.note("claim", exc)
            unsure_claims += 1
            continue
        if job is None:
            jobs = caller.until_done("list_jobs", lambda: queue.list(limit=1000))
            failed = [j for j in jobs if j.status is JobStatus.FAILED]
            for j in failed:
                retried_by_operator.add(j.id)
                caller.until_done("retry", lambda j=j: queue.retry(j.id))
            if all(j.status is JobStatus.COMPLETED for j in jobs):
                break
            # leases of claims whose answer was lost expire; backoffs pass
            clock.advance(60)
            caller.until_done("rescue_expired", queue.rescue_expired)
            continue
        claims.append((job.id, job.attempts))
        try:
            queue.heartbeat(job.lease, Progress(1, 2), lease_seconds=30)
        except BackendError as exc:
            caller.note("heartbeat", exc)  # the lease stands until it expires
        i = job.parameters["i"]
        if job.attempts == 1 and i % 3 == 0:
            settle(job, "fail", lambda job=job: queue.fail(job.lease, "first try"))
        else:
            settle(
                job,
                "complete",
                lambda job=job: queue.complete(job.lease, {"i": job.parameters["i"]}),
            )

    fault_server.faults("clear")
    jobs = queue.list(limit=1000)
    keys = Counter(j.idempotency_key for j in jobs)
    completed_events = {
        j.id: sum(e.kind == "completed" for e in queue.events(j.id)) for j in jobs
    }
    claimed_events = Counter(
        (j.id, e.attempt)
        for j in jobs
        for e in queue.events(j.id)
        if e.kind == "claimed"
    )
    attempts = sum(j.attempts for j in jobs)
    lost = sum(j.status is not JobStatus.COMPLETED for j in jobs) + JOBS - len(keys)
    doubled = (
        sum(n - 1 for n in keys.values() if n > 1)
        + sum(n - 1 for n in completed_events.values() if n > 1)
        + sum(n - 1 for n in completions.values() if n > 1)
        + len(claims)
        - len(set(claims))
        + sum(n - 1 for n in claimed_events.values() if n > 1)
    )
    counts = _report(
        "job_queue_faults",
        fault_server,
        commands,
        resends,
        caller,
        record_property,
        jobs=len(jobs),
        claims=len(claims),
        claims_that_raised=unsure_claims,
        operator_retries=len(retried_by_operator),
        lost=lost,
        doubled=doubled,
    )
    assert (lost, doubled) == (0, 0)
    assert len(jobs) == JOBS and set(completed_events.values()) == {1}
    # a claim that raised was applied at most once, and then rescued
    assert len(claims) <= attempts <= len(claims) + unsure_claims
    assert retried_by_operator
    assert counts["faults_total"] >= 150
    assert set(counts["faults_by_kind"]) == {*KINDS, "write_concern_error", "slow"}


def test_upload_sessions_survive_injected_faults(
    fault_server: WireServerProcess,
    watched: tuple[Any, _Commands],
    resends: _Resends,
    record_property: Callable[[str, object], None],
) -> None:
    """Upload session records (create, record each chunk, complete) through a few
    hundred faults of every kind: every session ends completed with exactly its
    chunks and their digests, one document per session, none left active; errors
    that reach the caller are BackendErrors naming the operation."""
    client, commands = watched
    caller = _Caller()
    fault_server.faults("reset")
    fault_server.faults("set", rules=_rules("faultsessions"), seed=7)
    sessions = caller.until_done(
        "create indexes", lambda: MongoSessionStore(client, database="faultsessions")
    )
    expected: dict[str, dict[int, ChunkRecord]] = {}
    for n in range(SESSIONS):
        session = TransferSession(
            id=f"upload-{n:04d}",
            key=f"up:{n}",
            source_url=f"upload:tus/{n}",
            dest_url=f"file:///staging/{n}",
            size=CHUNKS * 1024,
            chunk_size=1024,
            state={"owner": "ana@example.org", "offset": 0},
        )
        caller.until_done("create", lambda s=session: sessions.create(s))
        expected[session.id] = {}
        for i in range(CHUNKS):
            record = ChunkRecord(f"{n}:{i}", f'"etag-{i}"')
            expected[session.id][i] = record
            caller.until_done(
                "record_chunk",
                lambda s=session, i=i, r=record: sessions.record_chunk(s.id, i, r),
            )
        caller.until_done(
            "update",
            lambda s=session: sessions.update(
                s.id, status="completed", digest="b3" * 32, state={"offset": s.size}
            ),
        )

    fault_server.faults("clear")
    stored = {s.id: s for s in sessions.list(limit=10_000)}
    lost = sum(
        sid not in stored
        or stored[sid].status != "completed"
        or not set(chunks) <= set(stored[sid].chunks)
        for sid, chunks in expected.items()
    )
    # a chunk not recorded, or recorded with another digest, or a second session
    doubled = (
        len(stored)
        - len(expected)
        + sessions.count(status="active")
        + sum(
            len(set(stored[sid].chunks) - set(chunks))
            for sid, chunks in expected.items()
            if sid in stored
        )
    )
    wrong = [
        sid
        for sid, chunks in expected.items()
        if sid in stored and stored[sid].chunks != chunks
    ]
    counts = _report(
        "upload_session_faults",
        fault_server,
        commands,
        resends,
        caller,
        record_property,
        sessions=len(stored),
        chunks=sum(len(s.chunks) for s in stored.values()),
        lost=lost,
        doubled=doubled,
    )
    assert (lost, doubled, wrong) == (0, 0, [])
    assert counts["chunks"] == SESSIONS * CHUNKS
    assert counts["faults_total"] >= 150
    assert set(counts["faults_by_kind"]) == {*KINDS, "write_concern_error", "slow"}
