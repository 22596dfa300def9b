"""The embedded default: one SQLite file, shared by threads and processes.

Each operation is one ``BEGIN IMMEDIATE`` write transaction, so SQLite's single
writer lock makes it atomic across every thread and process using the file. The
file runs in WAL mode so readers never block the writer. A claim is one
``UPDATE ... WHERE id = (SELECT ... ORDER BY priority, run_at, id LIMIT 1)
RETURNING *`` served by a partial index over claimable rows, so its cost does not
grow with the number of pending jobs.

Times are stored as POSIX seconds (REAL); JSON-valued fields as TEXT.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sclib.backends.base import (
    ClaimedJob,
    JobFilter,
    JobStore,
    Settlement,
    WorkerRecord,
)
from sclib.backends.sqlite_db import SQLiteDatabase
from sclib.errors import (
    BackendError,
    InvalidJobState,
    JobNotFound,
    LeaseLost,
)
from sclib.jobtypes import PRIORITY_HIGH, PRIORITY_LOW, JobStatus
from sclib.models import (
    ErrorRecord,
    Job,
    JobEvent,
    Lease,
    Progress,
    from_timestamp,
    to_timestamp,
)

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy

__all__ = ["SQLiteJobStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    type             TEXT NOT NULL,
    status           TEXT NOT NULL,
    priority         INTEGER NOT NULL,
    parameters       TEXT NOT NULL DEFAULT '{}',
    dataset_uuid     TEXT,
    owner            TEXT,
    attempts         INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    failures         INTEGER NOT NULL DEFAULT 0,
    crashes          INTEGER NOT NULL DEFAULT 0,
    max_crashes      INTEGER NOT NULL,
    timeout_seconds  REAL NOT NULL,
    run_at           REAL NOT NULL,
    worker_id        TEXT,
    lease_until      REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress         TEXT,
    result           TEXT,
    error            TEXT,
    error_history    TEXT NOT NULL DEFAULT '[]',
    idempotency_key  TEXT,
    depends_on       TEXT NOT NULL DEFAULT '[]',
    waiting_on       INTEGER NOT NULL DEFAULT 0,
    created_at       REAL NOT NULL,
    updated_at       REAL NOT NULL,
    started_at       REAL,
    finished_at      REAL,
    held             INTEGER NOT NULL DEFAULT 0,
    held_rescues     INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_claimable
    ON jobs (priority, run_at, id) WHERE status = 'pending' AND waiting_on = 0;
CREATE INDEX IF NOT EXISTS jobs_leases
    ON jobs (lease_until) WHERE status = 'running';
CREATE INDEX IF NOT EXISTS jobs_status_type ON jobs (status, type);
-- lists filter on one or two columns and sort by id: each index ends with id so
-- that a page is an index range read in order, whatever the number of jobs
CREATE INDEX IF NOT EXISTS jobs_status_id ON jobs (status, id);
CREATE INDEX IF NOT EXISTS jobs_type_id ON jobs (type, id);
CREATE INDEX IF NOT EXISTS jobs_dataset_id ON jobs (dataset_uuid, id);
CREATE INDEX IF NOT EXISTS jobs_owner_status_id ON jobs (owner, status, id);
CREATE INDEX IF NOT EXISTS jobs_owner_id ON jobs (owner, id);
DROP INDEX IF EXISTS jobs_dataset;
DROP INDEX IF EXISTS jobs_owner;
CREATE INDEX IF NOT EXISTS jobs_finished
    ON jobs (finished_at) WHERE finished_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_deps (
    dep_id TEXT NOT NULL,
    job_id TEXT NOT NULL,
    PRIMARY KEY (dep_id, job_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS job_events (
    job_id    TEXT NOT NULL,
    at        REAL NOT NULL,
    kind      TEXT NOT NULL,
    worker_id TEXT,
    attempt   INTEGER,
    message   TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS job_events_job ON job_events (job_id);
CREATE TABLE IF NOT EXISTS workers (
    id         TEXT PRIMARY KEY,
    info       TEXT NOT NULL DEFAULT '{}',
    first_seen REAL NOT NULL,
    last_seen  REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS workers_seen ON workers (last_seen);
"""

_FINISHED = ("completed", "failed", "cancelled")


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _ts(dt: datetime | None) -> float | None:
    return None if dt is None else to_timestamp(dt)


def _dt(ts: float | None) -> datetime | None:
    return None if ts is None else from_timestamp(ts)


_EMPTY_PROGRESS = Progress()
_STATUSES: Mapping[str, JobStatus] = {s.value: s for s in JobStatus}
# jobs per (status, type), kept by triggers in the transaction of every change
_COUNTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS job_counts (status TEXT NOT NULL, type TEXT NOT "
    "NULL, n INTEGER NOT NULL, PRIMARY KEY (status, type)) WITHOUT ROWID",
    "DELETE FROM job_counts",
    "INSERT INTO job_counts (status, type, n) "
    "SELECT status, type, COUNT(*) FROM jobs GROUP BY status, type",
    "CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs BEGIN "
    "INSERT INTO job_counts (status, type, n) VALUES (NEW.status, NEW.type, 1) "
    "ON CONFLICT (status, type) DO UPDATE SET n = n + 1; END",
    "CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN "
    "UPDATE job_counts SET n = n - 1 WHERE status = OLD.status AND type = OLD.type; "
    "END",
    "CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF status, type "
    "ON jobs WHEN OLD.status IS NOT NEW.status OR OLD.type IS NOT NEW.type BEGIN "
    "UPDATE job_counts SET n = n - 1 WHERE status = OLD.status AND type = OLD.type; "
    "INSERT INTO job_counts (status, type, n) VALUES (NEW.status, NEW.type, 1) "
    "ON CONFLICT (status, type) DO UPDATE SET n = n + 1; END",
)

_COLUMNS = (
    "id",
    "type",
    "status",
    "priority",
    "parameters",
    "dataset_uuid",
    "owner",
    "attempts",
    "max_attempts",
    "failures",
    "crashes",
    "max_crashes",
    "timeout_seconds",
    "run_at",
    "worker_id",
    "lease_until",
    "cancel_requested",
    "progress",
    "result",
    "error",
    "error_history",
    "idempotency_key",
    "depends_on",
    "waiting_on",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "held",
    "held_rescues",
)
#: columns files made by an older sclib lack (added when such a file is opened)
_ADDED_COLUMNS = (
    ("jobs", "held", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "held_rescues", "INTEGER NOT NULL DEFAULT 0"),
)


# positions in a ``jobs`` row (checked against the table in SQLiteJobStore)
_CLAIM_ORDER = itemgetter(3, 13, 0)  # priority, run_at, id


def _row_to_claimed(row: sqlite3.Row) -> ClaimedJob:
    """A just-claimed row: lease, type and time limit now, the Job when asked."""
    return ClaimedJob(
        Lease(row[0], row[14], row[7]),
        row[1],
        row[12],
        build=_row_to_job,
        source=row,
        held=bool(row[28]),
        held_rescues=row[29],
    )


def _row_to_job(row: sqlite3.Row) -> Job:
    """A Job from a ``jobs`` row (a claim builds one per job: kept lean)."""
    (
        id_,
        type_,
        status,
        priority,
        parameters,
        dataset_uuid,
        owner,
        attempts,
        max_attempts,
        failures,
        crashes,
        max_crashes,
        timeout,
        run_at,
        worker_id,
        lease_until,
        cancel_requested,
        progress,
        result,
        error,
        error_history,
        idempotency_key,
        depends_on,
        waiting_on,
        created_at,
        updated_at,
        started_at,
        finished_at,
    ) = tuple(row)[:28]
    fromts = datetime.fromtimestamp
    return Job(
        id_,
        type_,
        _STATUSES[status],
        priority,
        {} if parameters == "{}" else json.loads(parameters),
        dataset_uuid,
        owner,
        attempts,
        max_attempts,
        failures,
        crashes,
        max_crashes,
        timeout,
        fromts(run_at, UTC),
        worker_id,
        None if lease_until is None else fromts(lease_until, UTC),
        bool(cancel_requested),
        _EMPTY_PROGRESS
        if progress is None
        else Progress.from_dict(json.loads(progress)),
        None if result is None else json.loads(result),
        error,
        ()
        if error_history == "[]"
        else tuple(ErrorRecord.from_dict(e) for e in json.loads(error_history)),
        idempotency_key,
        () if depends_on == "[]" else tuple(json.loads(depends_on)),
        waiting_on,
        fromts(created_at, UTC),
        fromts(updated_at, UTC),
        None if started_at is None else fromts(started_at, UTC),
        None if finished_at is None else fromts(finished_at, UTC),
    )


class SQLiteJobStore(JobStore):
    """Jobs in one SQLite file (``sqlite:///path/to/file.db``).

    :param path: the database file; its folder is created if missing.
    :param synchronous: SQLite's ``synchronous`` pragma. ``"NORMAL"`` (default) in WAL
        mode survives any process crash, SIGKILL included; after a power loss or an
        OS crash the last few transactions may roll back. ``"FULL"`` syncs every
        commit to disk and survives those too, at a cost in throughput.
    :param busy_timeout: seconds a write waits for the lock before failing.
    """

    schemes = ("sqlite",)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 10.0,
    ) -> None:
        self.db = SQLiteDatabase(
            path,
            _SCHEMA,
            synchronous=synchronous,
            busy_timeout=busy_timeout,
            added_columns=_ADDED_COLUMNS,
        )
        self.path = self.db.path
        names = tuple(r[1] for r in self.db.read("PRAGMA table_info(jobs)"))
        if names[: len(_COLUMNS)] != _COLUMNS:  # _row_to_job reads by position
            self.db.close()
            raise BackendError(
                f"{self.path} has a jobs table this version of sclib does not know "
                f"(columns {', '.join(names)})"
            )
        self._ensure_counts()

    def _ensure_counts(self) -> None:
        """Keep ``job_counts`` (jobs per status and type) exact with triggers,
        so counts cost the same at a thousand jobs or a million. A file made
        before them gets the table filled from its jobs and the triggers in the
        same write transaction, so no concurrent write is missed."""
        if self.db.read(
            "SELECT 1 FROM sqlite_master WHERE type = 'trigger' "
            "AND name = 'job_counts_update'"
        ):
            return
        with self.db.write() as db:
            if db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'trigger' "
                "AND name = 'job_counts_update'"
            ).fetchone():
                return  # another process did it meanwhile
            for statement in _COUNTS_SCHEMA:
                db.execute(statement)

    def __repr__(self) -> str:
        return f"SQLiteJobStore({str(self.path)!r})"

    def close(self) -> None:
        self.db.close()

    # -- helpers inside a transaction -----------------------------------------

    @staticmethod
    def _event(
        db: sqlite3.Connection,
        job_id: str,
        at: float,
        kind: str,
        worker_id: str | None = None,
        attempt: int | None = None,
        message: str = "",
    ) -> None:
        db.execute(
            "INSERT INTO job_events (job_id, at, kind, worker_id, attempt, message) "
            "VALUES (?, ?, ?, ?, ?, ?)",
            (job_id, at, kind, worker_id, attempt, message),
        )

    @staticmethod
    def _fenced(db: sqlite3.Connection, lease: Lease) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM jobs WHERE id = ? AND worker_id = ? AND attempts = ? "
            "AND status = 'running'",
            (lease.job_id, lease.worker_id, lease.attempt),
        ).fetchone()
        if row is None:
            raise LeaseLost(lease.job_id, lease.worker_id, lease.attempt)
        return row

    @staticmethod
    def _get_row(db: sqlite3.Connection, job_id: str) -> sqlite3.Row:
        row: sqlite3.Row | None = db.execute(
            "SELECT * FROM jobs WHERE id = ?", (job_id,)
        ).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return row

    def _cascade_cancel(
        self, db: sqlite3.Connection, job_id: str, now: float, why: str
    ) -> None:
        """Cancel every pending job that (transitively) depends on ``job_id``."""
        todo = [job_id]
        while todo:
            dep = todo.pop()
            rows = db.execute(
                "SELECT j.id FROM job_deps d JOIN jobs j ON j.id = d.job_id "
                "WHERE d.dep_id = ? AND j.status = 'pending'",
                (dep,),
            ).fetchall()
            for (child,) in rows:
                message = f"dependency {dep} {why}"
                db.execute(
                    "UPDATE jobs SET status = 'cancelled', error = ?, updated_at = ?, "
                    "finished_at = ? WHERE id = ?",
                    (message, now, now, child),
                )
                self._event(db, child, now, "cancelled", message=message)
                todo.append(child)

    # -- producing -------------------------------------------------------------

    def enqueue(self, job: Job) -> tuple[Job, bool]:
        now = to_timestamp(job.created_at)
        with self.db.write() as db:
            if job.idempotency_key is not None:
                row = db.execute(
                    "SELECT * FROM jobs WHERE idempotency_key = ?",
                    (job.idempotency_key,),
                ).fetchone()
                if row is not None:
                    return _row_to_job(row), False
            waiting = 0
            dead: str | None = None
            for dep in job.depends_on:
                dep_row = db.execute(
                    "SELECT status FROM jobs WHERE id = ?", (dep,)
                ).fetchone()
                if dep_row is None:
                    raise JobNotFound(dep)
                if dep_row["status"] in ("failed", "cancelled"):
                    dead = dead or f"dependency {dep} {dep_row['status']}"
                elif dep_row["status"] != "completed":
                    waiting += 1
            status = "cancelled" if dead else job.status.value
            db.execute(
                "INSERT INTO jobs (id, type, status, priority, parameters, "
                "dataset_uuid, owner, max_attempts, max_crashes, timeout_seconds, "
                "run_at, idempotency_key, depends_on, waiting_on, error, created_at, "
                "updated_at, finished_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.id,
                    job.type,
                    status,
                    job.priority,
                    _dumps(job.parameters),
                    job.dataset_uuid,
                    job.owner,
                    job.max_attempts,
                    job.max_crashes,
                    job.timeout_seconds,
                    to_timestamp(job.run_at),
                    job.idempotency_key,
                    _dumps(list(job.depends_on)),
                    waiting,
                    dead,
                    now,
                    now,
                    now if dead else None,
                ),
            )
            db.executemany(
                "INSERT OR IGNORE INTO job_deps (dep_id, job_id) VALUES (?, ?)",
                [(dep, job.id) for dep in job.depends_on],
            )
            self._event(db, job.id, now, "created")
            if dead:
                self._event(db, job.id, now, "cancelled", message=dead)
            row = self._get_row(db, job.id)
        return _row_to_job(row), True

    # -- consuming -------------------------------------------------------------
    #
    # Each operation has an ``_x_in(db, ...)`` form that runs inside a transaction
    # the caller holds, so the worker's batched ``settle_and_claim`` and the single
    # calls share one implementation.

    def _claim_in(
        self,
        db: sqlite3.Connection,
        worker_id: str,
        types: Sequence[str] | None,
        t: float,
        lease_until: float,
        limit: int,
        held: bool = False,
    ) -> list[sqlite3.Row]:
        if limit <= 0 or (types is not None and not types):
            return []
        type_clause = ""
        params: list[Any] = [worker_id, lease_until, t, t, int(held), t]
        if types is not None:
            type_clause = f" AND type IN ({', '.join('?' * len(types))})"
            params.extend(types)
        params.append(limit)
        # INDEXED BY: the planner would otherwise pick jobs_status_type and sort
        # every pending job on each claim (a cost that grows with the queue)
        rows = db.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
            "worker_id = ?, lease_until = ?, updated_at = ?, "
            "started_at = COALESCE(started_at, ?), cancel_requested = 0, held = ? "
            "WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_claimable "
            "WHERE status = 'pending' AND waiting_on = 0 AND run_at <= ?"
            + type_clause
            + " ORDER BY priority, run_at, id LIMIT ?) RETURNING *",
            params,
        ).fetchall()
        if len(rows) > 1:
            rows.sort(key=_CLAIM_ORDER)
        db.executemany(
            "INSERT INTO job_events (job_id, at, kind, worker_id, attempt, message) "
            "VALUES (?, ?, 'claimed', ?, ?, '')",
            [(r[0], t, worker_id, r[7]) for r in rows],
        )
        return rows

    def claim(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
    ) -> Job | None:
        jobs = self.claim_many(worker_id, types, now, lease_until, 1)
        return jobs[0] if jobs else None

    def claim_many(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
        limit: int,
    ) -> list[Job]:
        with self.db.write() as db:
            rows = self._claim_in(
                db,
                worker_id,
                types,
                to_timestamp(now),
                to_timestamp(lease_until),
                limit,
            )
        return [_row_to_job(r) for r in rows]

    @staticmethod
    def _heartbeat_in(
        db: sqlite3.Connection,
        lease: Lease,
        t: float,
        lease_until: float,
        progress: Progress | None,
    ) -> bool:
        params: list[Any] = [lease_until, t]
        progress_sql = ""
        if progress is not None:
            progress_sql = ", progress = ?"
            params.append(_dumps(progress.to_dict()))
        params.extend([lease.job_id, lease.worker_id, lease.attempt])
        row = db.execute(
            "UPDATE jobs SET lease_until = ?, updated_at = ?"
            + progress_sql
            + " WHERE id = ? AND worker_id = ? AND attempts = ? "
            "AND status = 'running' RETURNING cancel_requested",
            params,
        ).fetchone()
        if row is None:
            raise LeaseLost(lease.job_id, lease.worker_id, lease.attempt)
        return bool(row[0])

    def heartbeat(
        self,
        lease: Lease,
        now: datetime,
        lease_until: datetime,
        progress: Progress | None = None,
    ) -> bool:
        with self.db.write() as db:
            return self._heartbeat_in(
                db, lease, to_timestamp(now), to_timestamp(lease_until), progress
            )

    def heartbeat_many(
        self,
        beats: Sequence[tuple[Lease, Progress | None]],
        now: datetime,
        lease_until: datetime,
    ) -> list[bool | LeaseLost]:
        t, until = to_timestamp(now), to_timestamp(lease_until)
        out: list[bool | LeaseLost] = []
        with self.db.write() as db:
            for lease, progress in beats:
                try:
                    out.append(self._heartbeat_in(db, lease, t, until, progress))
                except LeaseLost as exc:
                    out.append(exc)
        return out

    def claim_held(
        self,
        worker_id: str,
        types: Sequence[str] | None,
        now: datetime,
        lease_until: datetime,
        limit: int,
    ) -> list[ClaimedJob]:
        with self.db.write() as db:
            rows = self._claim_in(
                db,
                worker_id,
                types,
                to_timestamp(now),
                to_timestamp(lease_until),
                limit,
                held=True,
            )
        return [_row_to_claimed(r) for r in rows]

    def record_started(
        self, leases: Sequence[Lease], now: datetime, lease_until: datetime
    ) -> list[LeaseLost | None]:
        t, until = to_timestamp(now), to_timestamp(lease_until)
        out: list[LeaseLost | None] = []
        with self.db.write() as db:
            for lease in leases:
                row = db.execute(
                    "UPDATE jobs SET held = 0, lease_until = ?, updated_at = ? "
                    "WHERE id = ? AND worker_id = ? AND attempts = ? "
                    "AND status = 'running' RETURNING id",
                    (until, t, lease.job_id, lease.worker_id, lease.attempt),
                ).fetchone()
                if row is None:
                    out.append(LeaseLost(lease.job_id, lease.worker_id, lease.attempt))
                    continue
                self._event(
                    db, lease.job_id, t, "started", lease.worker_id, lease.attempt
                )
                out.append(None)
        return out

    def _finish_in(
        self,
        db: sqlite3.Connection,
        lease: Lease,
        sets: str,
        params: Sequence[Any],
        returning: str = "*",
    ) -> sqlite3.Row:
        """A fenced UPDATE: the lease is part of the WHERE clause."""
        row: sqlite3.Row | None = db.execute(
            f"UPDATE jobs SET {sets} WHERE id = ? AND worker_id = ? AND attempts = ? "
            f"AND status = 'running' RETURNING {returning}",
            (*params, lease.job_id, lease.worker_id, lease.attempt),
        ).fetchone()
        if row is None:
            raise LeaseLost(lease.job_id, lease.worker_id, lease.attempt)
        return row

    def _complete_in(
        self,
        db: sqlite3.Connection,
        lease: Lease,
        t: float,
        result: Any,
        returning: str = "*",
    ) -> sqlite3.Row:
        row = self._finish_in(
            db,
            lease,
            "status = 'completed', result = ?, lease_until = NULL, updated_at = ?, "
            "finished_at = ?",
            ("null" if result is None else _dumps(result), t, t),
            returning,
        )
        # '+status' keeps the planner on job_deps' key instead of scanning every
        # pending job through jobs_status_type
        db.execute(
            "UPDATE jobs SET waiting_on = waiting_on - 1 WHERE id IN "
            "(SELECT job_id FROM job_deps WHERE dep_id = ?) AND +status = 'pending' "
            "AND waiting_on > 0",
            (lease.job_id,),
        )
        self._event(db, lease.job_id, t, "completed", lease.worker_id, lease.attempt)
        return row

    def _complete_many_in(
        self,
        db: sqlite3.Connection,
        items: Sequence[tuple[Lease, Any]],
        t: float,
    ) -> set[tuple[str, str, int]]:
        """Complete many jobs with a few statements; return the leases (id, worker,
        attempt) that matched their fence (the others' were lost: nothing changed
        for them)."""
        done: set[tuple[str, str, int]] = set()
        for start in range(0, len(items), 200):  # well under SQLite's variable cap
            part = items[start : start + 200]
            params: list[Any] = []
            for lease, result in part:
                params += [
                    lease.job_id,
                    lease.worker_id,
                    lease.attempt,
                    "null" if result is None else _dumps(result),
                ]
            rows = db.execute(
                "WITH v(id, worker, attempt, result) AS (VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(part))
                + ") UPDATE jobs SET status = 'completed', result = v.result, "
                "lease_until = NULL, updated_at = ?, finished_at = ? FROM v "
                "WHERE jobs.id = v.id AND jobs.worker_id = v.worker "
                "AND jobs.attempts = v.attempt AND jobs.status = 'running' "
                "RETURNING jobs.id, jobs.worker_id, jobs.attempts",
                [*params, t, t],
            ).fetchall()
            ids = [r[0] for r in rows]
            done.update((r[0], r[1], r[2]) for r in rows)
            if not ids:
                continue
            marks = ", ".join("?" * len(ids))
            if db.execute(
                f"SELECT 1 FROM job_deps WHERE dep_id IN ({marks}) LIMIT 1", ids
            ).fetchone():
                db.execute(
                    "UPDATE jobs SET waiting_on = waiting_on - (SELECT COUNT(*) "
                    "FROM job_deps d WHERE d.job_id = jobs.id AND d.dep_id IN "
                    f"({marks})) WHERE id IN (SELECT job_id FROM job_deps WHERE "
                    f"dep_id IN ({marks})) AND +status = 'pending' AND waiting_on > 0",
                    [*ids, *ids],
                )
            db.executemany(
                "INSERT INTO job_events (job_id, at, kind, worker_id, attempt, "
                "message) VALUES (?, ?, 'completed', ?, ?, '')",
                [(r[0], t, r[1], r[2]) for r in rows],
            )
        return done

    def complete(self, lease: Lease, now: datetime, result: Any = None) -> Job:
        with self.db.write() as db:
            row = self._complete_in(db, lease, to_timestamp(now), result)
        return _row_to_job(row)

    def _fail_in(
        self,
        db: sqlite3.Connection,
        lease: Lease,
        now: datetime,
        error: ErrorRecord,
        policy: RetryPolicy,
    ) -> sqlite3.Row:
        t = to_timestamp(now)
        current = self._fenced(db, lease)
        failures = current["failures"] + 1
        history = json.loads(current["error_history"])
        history.append(error.to_dict())
        retry_at = policy.after_error(
            failures,
            current["max_attempts"],
            now,
            retryable=error.kind != "fatal",
            job_type=current["type"],
        )
        if retry_at is not None and current["cancel_requested"]:
            # cancelled while running, then it failed: no retry
            self._finish_in(
                db,
                lease,
                "failures = ?, error_history = ?",
                (failures, _dumps(history)),
                "id",
            )
            return self._cancel_in(
                db, lease, t, f"cancelled; its last attempt failed: {error.error}"
            )
        if retry_at is None:
            row = self._finish_in(
                db,
                lease,
                "status = 'failed', failures = ?, error = ?, error_history = ?, "
                "lease_until = NULL, updated_at = ?, finished_at = ?",
                (failures, error.error, _dumps(history), t, t),
            )
            self._event(
                db,
                lease.job_id,
                t,
                "failed",
                lease.worker_id,
                lease.attempt,
                error.error,
            )
            self._cascade_cancel(db, lease.job_id, t, "failed")
            return row
        row = self._finish_in(
            db,
            lease,
            "status = 'pending', failures = ?, error = ?, error_history = ?, "
            "lease_until = NULL, run_at = ?, updated_at = ?",
            (failures, error.error, _dumps(history), to_timestamp(retry_at), t),
        )
        self._event(
            db,
            lease.job_id,
            t,
            "retried",
            lease.worker_id,
            lease.attempt,
            f"{error.error} (failure {failures} of {current['max_attempts']}; "
            f"next try at {retry_at.isoformat()})",
        )
        return row

    def fail(
        self, lease: Lease, now: datetime, error: ErrorRecord, policy: RetryPolicy
    ) -> Job:
        with self.db.write() as db:
            row = self._fail_in(db, lease, now, error, policy)
        return _row_to_job(row)

    def _cancel_in(
        self, db: sqlite3.Connection, lease: Lease, t: float, message: str
    ) -> sqlite3.Row:
        row = self._finish_in(
            db,
            lease,
            "status = 'cancelled', error = ?, lease_until = NULL, updated_at = ?, "
            "finished_at = ?",
            (message, t, t),
        )
        self._event(
            db, lease.job_id, t, "cancelled", lease.worker_id, lease.attempt, message
        )
        self._cascade_cancel(db, lease.job_id, t, "cancelled")
        return row

    def cancel_running(self, lease: Lease, now: datetime, message: str) -> Job:
        with self.db.write() as db:
            row = self._cancel_in(db, lease, to_timestamp(now), message)
        return _row_to_job(row)

    def _release_in(
        self, db: sqlite3.Connection, lease: Lease, t: float, message: str
    ) -> sqlite3.Row:
        if self._fenced(db, lease)["cancel_requested"]:
            # cancelled while running: do not hand it to another worker
            return self._cancel_in(db, lease, t, f"cancelled ({message})")
        row = self._finish_in(
            db,
            lease,
            "status = 'pending', lease_until = NULL, run_at = ?, updated_at = ?",
            (t, t),
        )
        self._event(
            db, lease.job_id, t, "released", lease.worker_id, lease.attempt, message
        )
        return row

    def release(self, lease: Lease, now: datetime, message: str) -> Job:
        with self.db.write() as db:
            row = self._release_in(db, lease, to_timestamp(now), message)
        return _row_to_job(row)

    def settle_and_claim(
        self,
        settlements: Sequence[Settlement],
        now: datetime,
        policy: RetryPolicy,
        worker_id: str,
        types: Sequence[str] | None,
        lease_until: datetime,
        limit: int,
        *,
        held: bool = False,
    ) -> tuple[list[LeaseLost | None], list[ClaimedJob]]:
        outcomes, rows = self._settle_and_claim_rows(
            settlements, now, policy, worker_id, types, lease_until, limit, held
        )
        return outcomes, [_row_to_claimed(r) for r in rows]

    def _settle_and_claim_rows(
        self,
        settlements: Sequence[Settlement],
        now: datetime,
        policy: RetryPolicy,
        worker_id: str,
        types: Sequence[str] | None,
        lease_until: datetime,
        limit: int,
        held: bool = False,
    ) -> tuple[list[LeaseLost | None], list[sqlite3.Row]]:
        t = to_timestamp(now)
        outcomes: list[LeaseLost | None] = []
        with self.db.write() as db:
            completed = self._complete_many_in(
                db,
                [(i.lease, i.result) for i in settlements if i.kind == "complete"],
                t,
            )
            for item in settlements:
                try:
                    if item.kind == "complete":
                        lease = item.lease
                        if (
                            lease.job_id,
                            lease.worker_id,
                            lease.attempt,
                        ) not in completed:
                            raise LeaseLost(
                                item.lease.job_id,
                                item.lease.worker_id,
                                item.lease.attempt,
                            )
                    elif item.kind == "fail":
                        assert item.error is not None
                        self._fail_in(db, item.lease, now, item.error, policy)
                    elif item.kind == "cancel":
                        self._cancel_in(db, item.lease, t, item.message)
                    else:
                        self._release_in(db, item.lease, t, item.message)
                    outcomes.append(None)
                except LeaseLost as exc:
                    outcomes.append(exc)
            rows = self._claim_in(
                db, worker_id, types, t, to_timestamp(lease_until), limit, held
            )
        return outcomes, rows

    # -- operating -------------------------------------------------------------

    def request_cancel(self, job_id: str, now: datetime, reason: str) -> Job:
        t = to_timestamp(now)
        with self.db.write() as db:
            current = self._get_row(db, job_id)
            status = current["status"]
            if status == "pending":
                row = db.execute(
                    "UPDATE jobs SET status = 'cancelled', error = ?, updated_at = ?, "
                    "finished_at = ? WHERE id = ? RETURNING *",
                    (reason, t, t, job_id),
                ).fetchone()
                self._event(db, job_id, t, "cancelled", message=reason)
                self._cascade_cancel(db, job_id, t, "cancelled")
            elif status == "running":
                row = db.execute(
                    "UPDATE jobs SET cancel_requested = 1, updated_at = ? "
                    "WHERE id = ? RETURNING *",
                    (t, job_id),
                ).fetchone()
                self._event(db, job_id, t, "cancel_requested", message=reason)
            else:
                raise InvalidJobState(
                    f"job {job_id} is already {status}; only pending or running "
                    "jobs can be cancelled"
                )
        return _row_to_job(row)

    def retry(self, job_id: str, now: datetime) -> Job:
        t = to_timestamp(now)
        with self.db.write() as db:
            current = self._get_row(db, job_id)
            if current["status"] not in ("failed", "cancelled"):
                raise InvalidJobState(
                    f"job {job_id} is {current['status']}; only failed or cancelled "
                    "jobs can be retried"
                )
            dead = self._dead_dependency(db, job_id)
            if dead is not None:
                raise InvalidJobState(
                    f"job {job_id} depends on job {dead[0]}, which is {dead[1]}; "
                    "retry that one first (its dependents come back with it)"
                )
            waiting = db.execute(
                "SELECT COUNT(*) FROM job_deps d JOIN jobs j ON j.id = d.dep_id "
                "WHERE d.job_id = ? AND j.status != 'completed'",
                (job_id,),
            ).fetchone()[0]
            row = db.execute(
                "UPDATE jobs SET status = 'pending', failures = 0, crashes = 0, "
                "held_rescues = 0, cancel_requested = 0, worker_id = NULL, "
                "lease_until = NULL, "
                "run_at = ?, waiting_on = ?, updated_at = ?, finished_at = NULL, "
                # a run's duration starts at its next claim, not the first one
                "started_at = NULL WHERE id = ? RETURNING *",
                (t, waiting, t, job_id),
            ).fetchone()
            self._event(db, job_id, t, "retried", message="retried by an operator")
            self._revive_dependents(db, job_id, t)
        return _row_to_job(row)

    @staticmethod
    def _dead_dependency(db: sqlite3.Connection, job_id: str) -> tuple[str, str] | None:
        """A dependency of ``job_id`` that failed or was cancelled, if any."""
        row = db.execute(
            "SELECT j.id, j.status FROM job_deps d JOIN jobs j ON j.id = d.dep_id "
            "WHERE d.job_id = ? AND j.status IN ('failed', 'cancelled') LIMIT 1",
            (job_id,),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def _revive_dependents(
        self, db: sqlite3.Connection, job_id: str, now: float
    ) -> None:
        """Re-queue the jobs that were cancelled only because ``job_id`` ended
        (those still behind another dead dependency stay cancelled, saying so)."""
        todo = [job_id]
        while todo:
            dep = todo.pop()
            rows = db.execute(
                "SELECT j.id FROM job_deps d JOIN jobs j ON j.id = d.job_id "
                "WHERE d.dep_id = ? AND j.status = 'cancelled' AND j.error LIKE ?",
                (dep, f"dependency {dep} %"),
            ).fetchall()
            for (child,) in rows:
                dead = self._dead_dependency(db, child)
                if dead is not None:
                    db.execute(
                        "UPDATE jobs SET error = ?, updated_at = ? WHERE id = ?",
                        (f"dependency {dead[0]} {dead[1]}", now, child),
                    )
                    continue
                db.execute(
                    "UPDATE jobs SET status = 'pending', error = NULL, run_at = ?, "
                    "updated_at = ?, finished_at = NULL, waiting_on = ("
                    "SELECT COUNT(*) FROM job_deps d JOIN jobs j ON j.id = d.dep_id "
                    "WHERE d.job_id = ? AND j.status != 'completed') WHERE id = ?",
                    (now, now, child, child),
                )
                self._event(
                    db, child, now, "retried", message=f"dependency {dep} retried"
                )
                todo.append(child)

    def rescue_expired(
        self, now: datetime, policy: RetryPolicy, limit: int = 100
    ) -> list[Job]:
        t = to_timestamp(now)
        rescued: list[Job] = []
        with self.db.write() as db:
            rows = db.execute(
                "SELECT * FROM jobs WHERE status = 'running' AND lease_until < ? "
                "ORDER BY lease_until LIMIT ?",
                (t, limit),
            ).fetchall()
            for cur in rows:
                if cur["held"]:
                    rescued.append(self._rescue_held_in(db, cur, t))
                    continue
                crashes = cur["crashes"] + 1
                message = (
                    f"worker {cur['worker_id']} stopped renewing its lease "
                    f"(attempt {cur['attempts']}); presumed crashed"
                )
                history = json.loads(cur["error_history"])
                history.append(
                    ErrorRecord(
                        cur["attempts"], now, message, cur["worker_id"], "crash"
                    ).to_dict()
                )
                if cur["cancel_requested"]:
                    status, run_at, why = "cancelled", cur["run_at"], "cancelled"
                    event_message = message + "; cancellation had been requested"
                else:
                    retry_at = policy.after_crash(crashes, cur["max_crashes"], now)
                    if retry_at is None:
                        status, run_at, why = "failed", cur["run_at"], "failed"
                        message = (
                            f"crash loop: the job's worker vanished {crashes} times "
                            f"(cap {cur['max_crashes']}); last: {message}"
                        )
                    else:
                        status, run_at, why = "pending", to_timestamp(retry_at), ""
                    event_message = message
                finished = t if status != "pending" else None
                row = db.execute(
                    "UPDATE jobs SET status = ?, crashes = ?, error = ?, "
                    "error_history = ?, lease_until = NULL, run_at = ?, "
                    "updated_at = ?, finished_at = ? WHERE id = ? AND worker_id = ? "
                    "AND attempts = ? AND status = 'running' AND lease_until < ? "
                    "RETURNING *",
                    (
                        status,
                        crashes,
                        message,
                        _dumps(history),
                        run_at,
                        t,
                        finished,
                        cur["id"],
                        cur["worker_id"],
                        cur["attempts"],
                        t,
                    ),
                ).fetchone()
                if row is None:  # pragma: no cover - cannot race inside one txn
                    continue
                self._event(
                    db,
                    cur["id"],
                    t,
                    "rescued",
                    cur["worker_id"],
                    cur["attempts"],
                    event_message,
                )
                if why:
                    self._event(db, cur["id"], t, why, message=message)
                    self._cascade_cancel(db, cur["id"], t, why)
                rescued.append(_row_to_job(row))
        return rescued

    def _rescue_held_in(
        self, db: sqlite3.Connection, cur: sqlite3.Row, t: float
    ) -> Job:
        """Take back an expired *held* attempt: its handler never started, so no
        crash is counted; pending again (``cancelled`` if that was requested)."""
        message = (
            f"worker {cur['worker_id']} stopped renewing its lease before the "
            f"handler of attempt {cur['attempts']} started; not counted as a crash"
        )
        cancel = bool(cur["cancel_requested"])
        row = db.execute(
            "UPDATE jobs SET status = ?, held = 0, held_rescues = held_rescues + 1, "
            "lease_until = NULL, run_at = ?, updated_at = ?, finished_at = ?, "
            "error = CASE WHEN ? THEN ? ELSE error END WHERE id = ? RETURNING *",
            (
                "cancelled" if cancel else "pending",
                cur["run_at"] if cancel else t,
                t,
                t if cancel else None,
                cancel,
                message,
                cur["id"],
            ),
        ).fetchone()
        self._event(
            db,
            cur["id"],
            t,
            "rescued",
            cur["worker_id"],
            cur["attempts"],
            message + ("; cancellation had been requested" if cancel else ""),
        )
        if cancel:
            self._event(db, cur["id"], t, "cancelled", message=message)
            self._cascade_cancel(db, cur["id"], t, "cancelled")
        return _row_to_job(row)

    # -- reading ---------------------------------------------------------------

    def get(self, job_id: str) -> Job:
        rows = self.db.read("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise JobNotFound(job_id)
        return _row_to_job(rows[0])

    @staticmethod
    def _where(filter: JobFilter | None) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        f = filter or JobFilter()
        for column, value in (
            ("status", f.status),
            ("type", f.type),
            ("dataset_uuid", f.dataset_uuid),
            ("owner", f.owner),
            ("idempotency_key", f.idempotency_key),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_jobs(
        self, filter: JobFilter | None = None, *, limit: int = 50, offset: int = 0
    ) -> list[Job]:
        where, params = self._where(filter)
        params.extend([limit, offset])
        rows = self.db.read(
            f"SELECT * FROM jobs{where} ORDER BY id LIMIT ? OFFSET ?", params
        )
        return [_row_to_job(r) for r in rows]

    def count_jobs(self, filter: JobFilter | None = None) -> int:
        where, params = self._where(filter)
        return int(self.db.read(f"SELECT COUNT(*) FROM jobs{where}", params)[0][0])

    def counts(self) -> Mapping[tuple[str, str], int]:
        rows = self.db.read("SELECT status, type, n FROM job_counts WHERE n > 0")
        return {(r[0], r[1]): r[2] for r in rows}

    def events(self, job_id: str) -> list[JobEvent]:
        rows = self.db.read(
            "SELECT * FROM job_events WHERE job_id = ? ORDER BY rowid", (job_id,)
        )
        if not rows:
            self.get(job_id)  # raises JobNotFound for unknown ids
        return [
            JobEvent(
                r["kind"],
                from_timestamp(r["at"]),
                r["worker_id"],
                r["attempt"],
                r["message"],
            )
            for r in rows
        ]

    def delete_finished(self, before: datetime, *, limit: int | None = None) -> int:
        t = to_timestamp(before)
        deleted = 0
        while limit is None or deleted < limit:
            # 500 jobs per write transaction: a big cleanup never holds the write
            # lock for long, so workers keep claiming in between
            batch = 500 if limit is None else min(500, limit - deleted)
            with self.db.write() as db:
                chunk = [
                    r[0]
                    for r in db.execute(
                        "SELECT id FROM jobs WHERE finished_at IS NOT NULL "
                        "AND finished_at < ? AND status IN (?, ?, ?) "
                        "ORDER BY finished_at LIMIT ?",
                        (t, *_FINISHED, batch),
                    ).fetchall()
                ]
                if not chunk:
                    return deleted
                marks = ", ".join("?" * len(chunk))
                db.execute(f"DELETE FROM job_events WHERE job_id IN ({marks})", chunk)
                db.execute(
                    f"DELETE FROM job_deps WHERE job_id IN ({marks}) "
                    f"OR dep_id IN ({marks})",
                    [*chunk, *chunk],
                )
                db.execute(f"DELETE FROM jobs WHERE id IN ({marks})", chunk)
                deleted += len(chunk)
        return deleted

    def delete_jobs(self, job_ids: Sequence[str]) -> list[str]:
        ids = list(dict.fromkeys(job_ids))
        gone: list[str] = []
        with self.db.write() as db:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                found = [
                    r[0]
                    for r in db.execute(
                        f"SELECT id FROM jobs WHERE id IN ({marks}) "
                        "AND status != 'running'",
                        chunk,
                    ).fetchall()
                ]
                if not found:
                    continue
                gm = ", ".join("?" * len(found))
                db.execute(f"DELETE FROM job_events WHERE job_id IN ({gm})", found)
                db.execute(
                    f"DELETE FROM job_deps WHERE job_id IN ({gm}) OR dep_id IN ({gm})",
                    [*found, *found],
                )
                db.execute(f"DELETE FROM jobs WHERE id IN ({gm})", found)
                gone.extend(found)
        return gone

    # -- monitoring --------------------------------------------------------------

    def oldest_claimable(self) -> datetime | None:
        # one index seek per priority: MIN over jobs_claimable's (priority, run_at)
        parts = " UNION ALL ".join(
            "SELECT MIN(run_at) AS m FROM jobs INDEXED BY jobs_claimable "
            f"WHERE status = 'pending' AND waiting_on = 0 AND priority = {p}"
            for p in range(PRIORITY_HIGH, PRIORITY_LOW + 1)
        )
        rows = self.db.read(f"SELECT MIN(m) FROM ({parts})")
        return _dt(rows[0][0])

    def finished_counts(
        self, start: datetime | None, end: datetime
    ) -> Mapping[tuple[str, str], int]:
        lower = "" if start is None else " AND finished_at >= ?"
        params = [to_timestamp(end)] + ([] if start is None else [to_timestamp(start)])
        rows = self.db.read(
            "SELECT status, type, COUNT(*) FROM jobs INDEXED BY jobs_finished "
            "WHERE finished_at < ?" + lower + " GROUP BY status, type",
            params,
        )
        return {(r[0], r[1]): r[2] for r in rows if r[0] in _FINISHED}

    def finished_jobs(
        self,
        start: datetime,
        end: datetime,
        *,
        status: str | None = None,
        owner: str | None = None,
        limit: int = 1000,
    ) -> list[Job]:
        clauses = ""
        params: list[Any] = [to_timestamp(start), to_timestamp(end)]
        for column, value in (("status", status), ("owner", owner)):
            if value is not None:
                clauses += f" AND {column} = ?"
                params.append(value)
        rows = self.db.read(
            "SELECT * FROM jobs INDEXED BY jobs_finished WHERE finished_at >= ? "
            "AND finished_at < ?" + clauses + " ORDER BY finished_at DESC, id DESC "
            "LIMIT ?",
            [*params, limit],
        )
        return [_row_to_job(r) for r in rows]

    tracks_workers = True

    def record_worker(
        self, worker_id: str, now: datetime, info: Mapping[str, Any]
    ) -> None:
        t = to_timestamp(now)
        with self.db.write() as db:
            db.execute(
                "INSERT INTO workers (id, info, first_seen, last_seen) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
                "info = excluded.info, last_seen = excluded.last_seen",
                (worker_id, _dumps(dict(info)), t, t),
            )

    def remove_worker(self, worker_id: str) -> None:
        with self.db.write() as db:
            db.execute("DELETE FROM workers WHERE id = ?", (worker_id,))

    def list_workers(
        self, seen_since: datetime | None = None, *, limit: int = 1000
    ) -> list[WorkerRecord]:
        since = -1.0 if seen_since is None else to_timestamp(seen_since)
        rows = self.db.read(
            "SELECT id, info, first_seen, last_seen FROM workers "
            "WHERE last_seen >= ? ORDER BY last_seen DESC, id LIMIT ?",
            (since, limit),
        )
        return [
            WorkerRecord(
                r[0], from_timestamp(r[2]), from_timestamp(r[3]), json.loads(r[1])
            )
            for r in rows
        ]

    def delete_workers(self, seen_before: datetime) -> int:
        with self.db.write() as db:
            cur = db.execute(
                "DELETE FROM workers WHERE last_seen < ?", (to_timestamp(seen_before),)
            )
            return cur.rowcount
