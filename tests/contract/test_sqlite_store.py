"""The JobStore contract on SQLite (a real file in a temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sclib.backends.sqlite import SQLiteJobStore
from sclib.testing.jobstore import JobStoreContract


class TestSQLiteJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SQLiteJobStore]:
        s = SQLiteJobStore(tmp_path / "jobs.db")
        yield s
        s.close()
