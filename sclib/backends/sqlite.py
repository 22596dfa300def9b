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
import sqlite3
from collections import Counter
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sclib.backends.base import (
    ClaimedJob,
    Settlement,
)
from sclib.errors import (
    JobNotFound,
    LeaseLost,
)
from sclib.models import (
    ErrorRecord,
    Job,
    Lease,
    Progress,
    to_timestamp,
)

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy
from sclib.backends.sqlite_ops import SQLiteJobBase
from sclib.backends.sqlite_schema import (
    _ADD_COUNTS,
    _CLAIM_ORDER,
    _COLUMNS,
    _dumps,
    _move_counts,
    _row_to_claimed,
    _row_to_job,
)

__all__ = ["SQLiteJobStore"]


#: the columns an enqueue writes, in the order of ``_row_values``; the others
#: take their defaults (``_UNWRITTEN``)
_WRITTEN = (
    "id", "type", "status", "priority", "parameters", "dataset_uuid", "owner",
    "max_attempts", "max_crashes", "timeout_seconds", "run_at", "idempotency_key",
    "depends_on", "waiting_on", "error", "created_at", "updated_at", "finished_at",
)  # fmt: skip
_UNWRITTEN: dict[str, Any] = {
    "attempts": 0, "failures": 0, "crashes": 0, "worker_id": None,
    "lease_until": None, "cancel_requested": 0, "progress": None, "result": None,
    "error_history": "[]", "started_at": None, "held": 0, "held_rescues": 0,
    "self_counted": 0,
}  # fmt: skip
_INSERT_JOB = (
    f"INSERT INTO jobs ({', '.join(_WRITTEN)}) "
    f"VALUES ({', '.join('?' * len(_WRITTEN))})"
)
_INSERT_COUNTED_JOB = (
    f"INSERT INTO jobs ({', '.join(_WRITTEN)}, self_counted) "
    f"VALUES ({', '.join('?' * len(_WRITTEN))}, 1)"
)
# for each column of a row, where its value comes from: (True, position in the
# written values) or (False, its default)
_ROW_FROM: tuple[tuple[bool, Any], ...] = tuple(
    (True, _WRITTEN.index(c)) if c in _WRITTEN else (False, _UNWRITTEN[c])
    for c in _COLUMNS
)


def _stored(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """The ``jobs`` row (in column order) that ``_INSERT_JOB`` with ``values``
    stores."""
    return tuple(values[x] if written else x for written, x in _ROW_FROM)


class SQLiteJobStore(SQLiteJobBase):
    """A :class:`~sclib.backends.base.JobStore` in one SQLite file (see the module
    docstring); :class:`~sclib.backends.sqlite_ops.SQLiteJobBase` holds the file,
    the helpers and the calls off the hot path."""

    # -- producing -------------------------------------------------------------

    def enqueue(self, job: Job) -> tuple[Job, bool]:
        with self.db.write() as db:
            return self._enqueue_in(db, job)

    def enqueue_many(self, jobs: Sequence[Job]) -> list[Job]:
        """Every job in one write transaction: all are stored or none. Jobs
        without idempotency keys that share their dependencies (what
        :meth:`JobQueue.enqueue_many` makes) go in with one statement per table."""
        if not jobs:
            return []
        shared = jobs[0].depends_on
        if any(j.idempotency_key is not None or j.depends_on != shared for j in jobs):
            with self.db.write() as db:
                return [self._enqueue_in(db, job)[0] for job in jobs]
        with self.db.write() as db:
            waiting, dead = self._dependencies(db, shared)
            deps = _dumps(list(shared))  # the same for every job
            rows = [
                self._row_values(job, waiting, dead, to_timestamp(job.created_at), deps)
                for job in jobs
            ]
            db.executemany(_INSERT_COUNTED_JOB, rows)
            # the rows skip the count trigger: counted here once per (status, type)
            db.executemany(
                _ADD_COUNTS,
                [(*key, n) for key, n in Counter((r[2], r[1]) for r in rows).items()],
            )
            if shared:
                db.executemany(
                    "INSERT OR IGNORE INTO job_deps (dep_id, job_id) VALUES (?, ?)",
                    [(dep, job.id) for job in jobs for dep in shared],
                )
            # the rows _event writes, one statement for all
            events = [
                (job.id, to_timestamp(job.created_at), "created", None, None, "")
                for job in jobs
            ]
            if dead:
                events += [(e[0], e[1], "cancelled", None, None, dead) for e in events]
            db.executemany(
                "INSERT INTO job_events (job_id, at, kind, worker_id, attempt, "
                "message) VALUES (?, ?, ?, ?, ?, ?)",
                events,
            )
        # each job as stored, from the values written (no read back)
        return [_row_to_job(_stored(r)) for r in rows]

    @staticmethod
    def _dependencies(
        db: sqlite3.Connection, deps: Sequence[str]
    ) -> tuple[int, str | None]:
        """How many of ``deps`` are not finished yet, and the first that failed
        or was cancelled (the new job is then born cancelled)."""
        waiting = 0
        dead: str | None = None
        for dep in deps:
            dep_row = db.execute(
                "SELECT status FROM jobs WHERE id = ?", (dep,)
            ).fetchone()
            if dep_row is None:
                raise JobNotFound(dep)
            if dep_row["status"] in ("failed", "cancelled"):
                dead = dead or f"dependency {dep} {dep_row['status']}"
            elif dep_row["status"] != "completed":
                waiting += 1
        return waiting, dead

    @staticmethod
    def _row_values(
        job: Job, waiting: int, dead: str | None, now: float, deps: str | None = None
    ) -> tuple[Any, ...]:
        return (
            job.id,
            job.type,
            "cancelled" if dead else job.status.value,
            job.priority,
            _dumps(job.parameters),
            job.dataset_uuid,
            job.owner,
            job.max_attempts,
            job.max_crashes,
            job.timeout_seconds,
            to_timestamp(job.run_at),
            job.idempotency_key,
            _dumps(list(job.depends_on)) if deps is None else deps,
            waiting,
            dead,
            now,
            now,
            now if dead else None,
        )

    def _enqueue_in(self, db: sqlite3.Connection, job: Job) -> tuple[Job, bool]:
        now = to_timestamp(job.created_at)
        if job.idempotency_key is not None:
            found = db.execute(
                "SELECT * FROM jobs WHERE idempotency_key = ?",
                (job.idempotency_key,),
            ).fetchone()
            if found is not None:
                return _row_to_job(found), False
        waiting, dead = self._dependencies(db, job.depends_on)
        # RETURNING: the row as stored, without reading it again
        row = db.execute(
            _INSERT_JOB + " RETURNING *", self._row_values(job, waiting, dead, now)
        ).fetchone()
        if job.depends_on:
            db.executemany(
                "INSERT OR IGNORE INTO job_deps (dep_id, job_id) VALUES (?, ?)",
                [(dep, job.id) for dep in job.depends_on],
            )
        self._event(db, job.id, now, "created")
        if dead:
            self._event(db, job.id, now, "cancelled", message=dead)
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
        # INDEXED BY: the planner would otherwise pick jobs_status_id and sort
        # every pending job on each claim (a cost that grows with the queue)
        rows = db.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, "
            "worker_id = ?, lease_until = ?, updated_at = ?, "
            "started_at = COALESCE(started_at, ?), cancel_requested = 0, held = ?, "
            "self_counted = self_counted + 1 "
            "WHERE id IN (SELECT id FROM jobs INDEXED BY jobs_claimable "
            "WHERE status = 'pending' AND waiting_on = 0 AND run_at <= ?"
            + type_clause
            + " ORDER BY priority, run_at, id LIMIT ?) RETURNING *",
            params,
        ).fetchall()
        _move_counts(db, "pending", "running", [r[1] for r in rows])
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
        # pending job through jobs_status_id
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
                "lease_until = NULL, updated_at = ?, finished_at = ?, "
                "self_counted = self_counted + 1 FROM v "
                "WHERE jobs.id = v.id AND jobs.worker_id = v.worker "
                "AND jobs.attempts = v.attempt AND jobs.status = 'running' "
                "RETURNING jobs.id, jobs.worker_id, jobs.attempts, jobs.type",
                [*params, t, t],
            ).fetchall()
            _move_counts(db, "running", "completed", [r[3] for r in rows])
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
