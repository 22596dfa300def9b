"""The SQLite job store's tables, indexes and triggers, and how a row becomes a
:class:`~sclib.models.Job` (see :mod:`sclib.backends.sqlite`)."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from sclib.backends.base import (
    ClaimedJob,
)
from sclib.jobtypes import JobStatus
from sclib.models import (
    ErrorRecord,
    Job,
    Lease,
    Progress,
    from_timestamp,
    to_timestamp,
)
from sclib.models.job import build_job

if TYPE_CHECKING:
    pass


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
    held_rescues     INTEGER NOT NULL DEFAULT 0,
    self_counted     INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency
    ON jobs (idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_claimable
    ON jobs (priority, run_at, id) WHERE status = 'pending' AND waiting_on = 0;
CREATE INDEX IF NOT EXISTS jobs_leases
    ON jobs (lease_until) WHERE status = 'running';
-- lists filter on one or two columns and sort by id: each index ends with id so
-- that a page is an index range read in order, whatever the number of jobs
CREATE INDEX IF NOT EXISTS jobs_status_id ON jobs (status, id);
-- (partial: a job without a dataset or an owner, as most jobs an embedding
-- program makes, costs no write in them; `x = ?` implies x IS NOT NULL)
CREATE INDEX IF NOT EXISTS jobs_by_dataset
    ON jobs (dataset_uuid, id) WHERE dataset_uuid IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_owner_status
    ON jobs (owner, status, id) WHERE owner IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, id) WHERE owner IS NOT NULL;
DROP INDEX IF EXISTS jobs_dataset_id;
DROP INDEX IF EXISTS jobs_owner_status_id;
DROP INDEX IF EXISTS jobs_owner_id;
DROP INDEX IF EXISTS jobs_dataset;
-- counts come from job_counts now; a type filter scans ids in order
DROP INDEX IF EXISTS jobs_status_type;
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
# jobs per (status, type), kept by triggers in the transaction of every change.
# A trigger runs once per row (about a third of the cost of a bulk insert, a
# tenth of a worker's batch), so the statements that write many rows (enqueue_many,
# a worker's batched claim and completion) count them themselves, once per
# (status, type) in the same transaction, and tell the triggers so through
# ``self_counted``: a row inserted with 1, or an update that changes it (adds
# 1), is not counted by them. A statement that leaves the column alone (every
# other one, and every statement of an older sclib) is.
_COUNT_INSERTS = (
    "CREATE TRIGGER IF NOT EXISTS job_counts_insert AFTER INSERT ON jobs "
    "WHEN NEW.self_counted = 0 BEGIN "
    "INSERT INTO job_counts (status, type, n) VALUES (NEW.status, NEW.type, 1) "
    "ON CONFLICT (status, type) DO UPDATE SET n = n + 1; END"
)
_COUNT_UPDATES = (
    "CREATE TRIGGER IF NOT EXISTS job_counts_update AFTER UPDATE OF status, type "
    "ON jobs WHEN (OLD.status IS NOT NEW.status OR OLD.type IS NOT NEW.type) "
    "AND OLD.self_counted IS NEW.self_counted BEGIN "
    "UPDATE job_counts SET n = n - 1 WHERE status = OLD.status AND type = OLD.type; "
    "INSERT INTO job_counts (status, type, n) VALUES (NEW.status, NEW.type, 1) "
    "ON CONFLICT (status, type) DO UPDATE SET n = n + 1; END"
)
_ADD_COUNTS = (
    "INSERT INTO job_counts (status, type, n) VALUES (?, ?, ?) "
    "ON CONFLICT (status, type) DO UPDATE SET n = n + excluded.n"
)
_TAKE_COUNTS = "UPDATE job_counts SET n = n - ? WHERE status = ? AND type = ?"
_COUNTS_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS job_counts (status TEXT NOT NULL, type TEXT NOT "
    "NULL, n INTEGER NOT NULL, PRIMARY KEY (status, type)) WITHOUT ROWID",
    "DELETE FROM job_counts",
    "INSERT INTO job_counts (status, type, n) "
    "SELECT status, type, COUNT(*) FROM jobs GROUP BY status, type",
    _COUNT_INSERTS,
    "CREATE TRIGGER IF NOT EXISTS job_counts_delete AFTER DELETE ON jobs BEGIN "
    "UPDATE job_counts SET n = n - 1 WHERE status = OLD.status AND type = OLD.type; "
    "END",
    _COUNT_UPDATES,
)


def _move_counts(
    db: sqlite3.Connection, before: str, after: str, types: Iterable[str]
) -> None:
    """Record in ``job_counts`` that jobs of ``types`` (one item per job) went
    from status ``before`` to ``after`` (for a statement that bumped their
    ``self_counted``, so the trigger did not)."""
    moved = Counter(types)
    if moved:
        db.executemany(_TAKE_COUNTS, [(n, before, t) for t, n in moved.items()])
        db.executemany(_ADD_COUNTS, [(after, t, n) for t, n in moved.items()])


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
    "self_counted",
)
#: columns files made by an older sclib lack (added when such a file is opened)
_ADDED_COLUMNS = (
    ("jobs", "held", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "held_rescues", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "self_counted", "INTEGER NOT NULL DEFAULT 0"),
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


def _row_to_job(row: sqlite3.Row | tuple[Any, ...]) -> Job:
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
    return build_job(
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
        float(timeout),  # RETURNING gives a whole REAL as an int
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
