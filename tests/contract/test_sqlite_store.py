"""The JobStore contract on SQLite (a real file in a temporary folder)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from sclib.backends.sqlite import SQLiteJobStore
from sclib.jobs.queue import JobQueue
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
