"""The SQLite job store's file and helpers, and every call that is not the
queue's hot path: operators' changes (cancel, retry, rescue), reads, lists,
counts, deletions and the monitor's queries. :class:`SQLiteJobStore` adds
enqueueing and the worker's calls (see :mod:`sclib.backends.sqlite`)."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sclib.backends.base import (
    JobFilter,
    JobStore,
    WorkerRecord,
)
from sclib.backends.sqlite_db import SQLiteDatabase
from sclib.errors import (
    BackendError,
    InvalidJobState,
    JobNotFound,
    LeaseLost,
)
from sclib.jobtypes import PRIORITY_HIGH, PRIORITY_LOW
from sclib.models import (
    ErrorRecord,
    Job,
    JobEvent,
    Lease,
    from_timestamp,
    to_timestamp,
)

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy
from sclib.backends.sqlite_schema import (
    _ADDED_COLUMNS,
    _COLUMNS,
    _COUNT_INSERTS,
    _COUNT_UPDATES,
    _COUNTS_SCHEMA,
    _FINISHED,
    _SCHEMA,
    _dt,
    _dumps,
    _row_to_job,
)

__all__ = ["SQLiteJobBase"]


class SQLiteJobBase(JobStore):
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
        same write transaction, so no concurrent write is missed; a file whose
        triggers predate ``self_counted`` gets them replaced, in one transaction
        too (an older sclib writing to the file meanwhile never sets
        ``self_counted``, so the new triggers count its rows)."""
        if self._counts_state(self.db.read) == "current":
            return
        with self.db.write() as db:
            state = self._counts_state(lambda sql: db.execute(sql).fetchall())
            if state == "missing":
                db.execute("DROP TRIGGER IF EXISTS job_counts_insert")
                for statement in _COUNTS_SCHEMA:
                    db.execute(statement)
            elif state == "older triggers":
                db.execute("DROP TRIGGER IF EXISTS job_counts_insert")
                db.execute("DROP TRIGGER IF EXISTS job_counts_update")
                db.execute(_COUNT_INSERTS)
                db.execute(_COUNT_UPDATES)

    @staticmethod
    def _counts_state(read: Callable[[str], list[Any]]) -> str:
        found = dict(
            read(
                "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' "
                "AND name IN ('job_counts_update', 'job_counts_insert')"
            )
        )
        if "job_counts_update" not in found:
            return "missing"
        if any(
            "self_counted" not in (found.get(name) or "")
            for name in ("job_counts_insert", "job_counts_update")
        ):
            return "older triggers"
        return "current"

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
        if f.after is not None:
            clauses.append("id > ?")
            params.append(f.after)
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
        if start is None:
            # everything finished before `end`: the count table less what
            # finished since, in one statement (one snapshot), so the cost is
            # the recent jobs', not the whole history's (every finished job has
            # a finished_at)
            rows = self.db.read(
                "SELECT c.status, c.type, c.n - COALESCE(r.n, 0) FROM job_counts c "
                "LEFT JOIN (SELECT status, type, COUNT(*) AS n FROM jobs "
                "INDEXED BY jobs_finished WHERE finished_at >= ? "
                "GROUP BY status, type) r USING (status, type) "
                "WHERE c.status IN ('completed', 'failed', 'cancelled')",
                (to_timestamp(end),),
            )
            return {(r[0], r[1]): r[2] for r in rows if r[2] > 0}
        rows = self.db.read(
            "SELECT status, type, COUNT(*) FROM jobs INDEXED BY jobs_finished "
            "WHERE finished_at < ? AND finished_at >= ? GROUP BY status, type",
            (to_timestamp(end), to_timestamp(start)),
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

    def finished_durations(
        self, start: datetime, end: datetime, *, limit: int = 50_000
    ) -> list[tuple[str, float, float]]:
        rows = self.db.read(
            "SELECT type, finished_at - started_at, timeout_seconds FROM jobs "
            "INDEXED BY jobs_finished WHERE finished_at >= ? AND finished_at < ? "
            "AND status = 'completed' AND started_at IS NOT NULL "
            "ORDER BY finished_at DESC, id DESC LIMIT ?",
            (to_timestamp(start), to_timestamp(end), limit),
        )
        return [(r[0], float(r[1]), float(r[2])) for r in rows]

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
