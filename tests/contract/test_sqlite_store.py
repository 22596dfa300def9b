"""The JobStore contract on SQLite (a real file in a temporary folder)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import timedelta
from pathlib import Path

import pytest

from sclib.backends.base import JobFilter, Settlement
from sclib.backends.sqlite import SQLiteJobStore
from sclib.errors import JobNotFound
from sclib.jobs.queue import JobQueue
from sclib.models import Lease
from sclib.testing.clock import ManualClock
from sclib.testing.jobstore import JobStoreContract


class TestSQLiteJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteJobStore]:
        s = SQLiteJobStore(tmp_path / "jobs.db")
        yield s
        s.close()


def test_a_file_from_an_older_sclib_gains_the_hold_columns(tmp_path: Path) -> None:
    """A jobs file made before held claims opens: the columns are added, and a
    job an older worker was running counts a crash when rescued (its claim was
    not held)."""
    path = tmp_path / "jobs.db"
    queue = JobQueue(SQLiteJobStore(path), clock=ManualClock())
    job = queue.enqueue("upload")
    assert queue.claim("old-worker", lease_seconds=10) is not None
    queue.close()
    with closing(sqlite3.connect(path)) as db:
        _older_count_triggers(db)
        db.execute("ALTER TABLE jobs DROP COLUMN self_counted")
        db.execute("ALTER TABLE jobs DROP COLUMN held_rescues")
        db.execute("ALTER TABLE jobs DROP COLUMN held")
        db.commit()
    clock = ManualClock()
    clock.advance(11)
    queue = JobQueue(SQLiteJobStore(path), clock=clock)
    try:
        assert [j.id for j in queue.rescue_expired()] == [job.id]
        assert queue.get(job.id).crashes == 1
    finally:
        queue.close()


def _older_count_triggers(db: sqlite3.Connection) -> None:
    """The count triggers sclib made before ``self_counted``: they count every
    row."""
    db.executescript(
        "DROP TRIGGER job_counts_insert; DROP TRIGGER job_counts_update; "
        "CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN "
        "INSERT INTO job_counts (status, type, n) VALUES (NEW.status, NEW.type, 1) "
        "ON CONFLICT (status, type) DO UPDATE SET n = n + 1; END; "
        "CREATE TRIGGER job_counts_update AFTER UPDATE OF status, type "
        "ON jobs WHEN OLD.status IS NOT NEW.status OR OLD.type IS NOT NEW.type BEGIN "
        "UPDATE job_counts SET n = n - 1 "
        "WHERE status = OLD.status AND type = OLD.type; "
        "INSERT INTO job_counts (status, type, n) VALUES (NEW.status, NEW.type, 1) "
        "ON CONFLICT (status, type) DO UPDATE SET n = n + 1; END;"
    )


def _count_triggers(path: Path) -> list[str]:
    with closing(sqlite3.connect(path)) as db:
        rows = db.execute(
            "SELECT sql FROM sqlite_master WHERE name IN "
            "('job_counts_insert', 'job_counts_update')"
        ).fetchall()
    assert len(rows) == 2
    return [str(r[0]) for r in rows]


def _settle_in_batches(queue: JobQueue, worker: str, rounds: int) -> None:
    """What a Worker does: claim a batch, then complete it while claiming the
    next, one transaction each (the batched statements count their own rows)."""
    _, claimed = queue.settle_and_claim([], worker, limit=3)
    for _ in range(rounds):
        first, *rest = claimed
        stale = Lease(first.lease.job_id, worker, first.lease.attempt + 1)
        done = [Settlement(stale, "complete")]  # a lost lease: changes nothing
        done += [Settlement(c.lease, "complete", result={"ok": 1}) for c in rest]
        lost, claimed = queue.settle_and_claim(done, worker, limit=3)
        assert lost[0] is not None and lost[1:] == [None] * len(rest)


def _grouped(path: Path) -> dict[tuple[str, str], int]:
    with closing(sqlite3.connect(path)) as conn:
        rows = conn.execute(
            "SELECT status, type, COUNT(*) FROM jobs GROUP BY status, type"
        ).fetchall()
    return {(s, t): n for s, t, n in rows}


def test_counts_kept_by_triggers_match_the_jobs(tmp_path: Path) -> None:
    """The per-status counts are a table kept by triggers (so stats cost the
    same at a million jobs): after enqueues, claims, completions, failures,
    cancellations, retries and deletions they equal a GROUP BY over the jobs,
    and a file made before the triggers is counted when opened."""
    path = tmp_path / "jobs.db"
    clock = ManualClock()
    store = SQLiteJobStore(path)
    queue = JobQueue(store, clock=clock)
    ids = [queue.enqueue(t).id for t in ["upload", "data_validation"] * 6]
    # enqueue_many counts its rows itself, once per batch, not through the trigger
    queue.enqueue_many("upload", [{"i": i} for i in range(7)])
    dead = queue.enqueue("upload")
    queue.cancel(dead.id)
    born_cancelled = queue.enqueue_many("upload", [{}, {}], depends_on=[dead.id])
    assert {j.status.value for j in born_cancelled} == {"cancelled"}
    assert dict(store.counts()) == _grouped(path)
    # a worker's batches (claim and complete count their rows themselves), with
    # a lease lost in each (its completion changes nothing)
    _settle_in_batches(queue, "batcher", 2)
    assert dict(store.counts()) == _grouped(path)
    for n in range(5):
        job = queue.claim("w", lease_seconds=60)
        assert job is not None
        if n % 2:
            queue.complete(job.lease, result={})
        else:
            queue.fail(job.lease, RuntimeError("boom"), kind="fatal")
    queue.cancel(ids[-1])
    failed = [j.id for j in queue.list(status="failed")]
    queue.retry(failed[0])
    clock.advance(3600)
    queue.delete_finished(older_than=timedelta(0))
    assert dict(store.counts()) == _grouped(path)
    store.close()

    # an older file: no count table, no triggers, jobs already there
    with closing(sqlite3.connect(path)) as conn:
        conn.executescript(
            "DROP TRIGGER job_counts_insert; DROP TRIGGER job_counts_delete; "
            "DROP TRIGGER job_counts_update; DROP TABLE job_counts;"
        )
        conn.execute("UPDATE jobs SET status = 'cancelled' WHERE status = 'pending'")
        conn.commit()
    reopened = SQLiteJobStore(path)
    try:
        assert dict(reopened.counts()) == _grouped(path) != {}
    finally:
        reopened.close()

    # a file whose triggers predate self_counted: replaced when opened, and the
    # counts stay exact through single and bulk writes, and through the writes
    # of an older sclib (plain statements that never set self_counted)
    with closing(sqlite3.connect(path)) as conn:
        _older_count_triggers(conn)
        conn.commit()
    assert not any("self_counted" in sql for sql in _count_triggers(path))
    reopened = SQLiteJobStore(path)
    try:
        assert all("self_counted" in sql for sql in _count_triggers(path))
        again = JobQueue(reopened, clock=clock)
        again.enqueue("upload")
        again.enqueue_many("data_validation", [{}, {}, {}, {}])
        _settle_in_batches(again, "batcher-2", 1)
        with closing(sqlite3.connect(path)) as older:
            older.execute(
                "UPDATE jobs SET status = 'running' WHERE id IN (SELECT id FROM "
                "jobs WHERE status = 'pending' LIMIT 2)"
            )
            older.execute(
                "UPDATE jobs SET status = 'completed' WHERE status = 'running'"
            )
            older.execute(
                "INSERT INTO jobs (id, type, status, priority, max_attempts, "
                "max_crashes, timeout_seconds, run_at, created_at, updated_at) "
                "VALUES ('older-1', 'upload', 'pending', 3, 3, 3, 60, 0, 0, 0)"
            )
            older.commit()
        assert dict(reopened.counts()) == _grouped(path)
    finally:
        reopened.close()


def test_enqueue_many_is_all_or_nothing(tmp_path: Path) -> None:
    """On SQLite the jobs of one enqueue_many share a transaction: a missing
    dependency met after some rows were written leaves none of them."""
    store = SQLiteJobStore(tmp_path / "jobs.db")
    queue = JobQueue(store)
    try:
        ok = queue._new_job(
            "upload",
            {},
            queue.clock(),
            dataset_uuid=None,
            owner=None,
            priority=None,
            run_at=None,
            delay=None,
            idempotency_key=None,
            depends_on=(),
            max_attempts=None,
            timeout_seconds=None,
        )
        orphan = queue._new_job(
            "upload",
            {},
            queue.clock(),
            dataset_uuid=None,
            owner=None,
            priority=None,
            run_at=None,
            delay=None,
            idempotency_key=None,
            depends_on=("missing",),
            max_attempts=None,
            timeout_seconds=None,
        )
        with pytest.raises(JobNotFound):
            store.enqueue_many([ok, orphan])
        assert store.count_jobs() == 0 and dict(store.counts()) == {}
        assert [j.id for j in store.enqueue_many([ok])] == [ok.id]
    finally:
        store.close()


def test_counts_before_a_time_come_from_the_count_table(tmp_path: Path) -> None:
    """finished_counts(None, t) (what the cleanup dry run asks) is the count
    table less what finished since t, read in one statement: equal to
    counting the old jobs themselves, over completions, failures and cancels
    spread over time."""
    path = tmp_path / "jobs.db"
    clock = ManualClock()
    store = SQLiteJobStore(path)
    queue = JobQueue(store, clock=clock)
    try:
        cuts = []
        for n in range(30):
            kind = ("upload", "data_validation", "backup_creation")[n % 3]
            job = queue.enqueue(kind, max_attempts=1)
            if n % 5 == 4:
                queue.cancel(job.id)
            else:
                claimed = queue.claim("w")
                assert claimed is not None
                if n % 4 == 3:
                    queue.fail(claimed.lease, "boom")
                else:
                    queue.complete(claimed.lease)
            clock.advance(60)
            cuts.append(clock())
        queue.enqueue("upload")  # pending: never counted
        with closing(sqlite3.connect(path)) as conn:
            for cut in cuts[::4]:
                rows = conn.execute(
                    "SELECT status, type, COUNT(*) FROM jobs WHERE finished_at < ? "
                    "GROUP BY status, type",
                    (cut.timestamp(),),
                ).fetchall()
                expected = {(s, t): n for s, t, n in rows}
                assert dict(store.finished_counts(None, cut)) == expected
    finally:
        store.close()


@pytest.mark.parametrize(
    ("filter_", "index"),
    [
        (JobFilter(owner="ana"), "jobs_by_owner"),
        (JobFilter(owner="ana", status="pending"), "jobs_by_owner_status"),
        (JobFilter(dataset_uuid="d-1"), "jobs_by_dataset"),
        (JobFilter(dataset_uuid="d-1", after="0"), "jobs_by_dataset"),
    ],
)
def test_owner_and_dataset_lists_read_their_partial_index(
    tmp_path: Path, filter_: JobFilter, index: str
) -> None:
    """The owner and dataset indexes leave out jobs without one (an insert of
    such a job writes none of their pages); a list filtered by owner or dataset
    still reads its index in id order, with no sort and no scan of the table."""
    store = SQLiteJobStore(tmp_path / "jobs.db")
    queue = JobQueue(store)
    try:
        queue.enqueue_many("upload", [{}] * 20)
        queue.enqueue("upload", owner="ana", dataset_uuid="d-1")
        where, params = store._where(filter_)
        sql = f"SELECT * FROM jobs{where} ORDER BY id LIMIT ? OFFSET ?"
        plan = " | ".join(
            str(r[3])
            for r in store.db.read(f"EXPLAIN QUERY PLAN {sql}", [*params, 5, 0])
        )
        assert f"USING INDEX {index} " in plan + " ", plan
        assert "TEMP B-TREE" not in plan, plan
        assert [j.owner for j in store.list_jobs(filter_)] == ["ana"]
    finally:
        store.close()
