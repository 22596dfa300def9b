"""The SessionStore contract on SQLite (a real file) and MongoDB.

MongoDB runs through pymongo against mongomock, an in-process stand-in, because no
MongoDB server can be installed on these machines; with ``SCLIB_TEST_MONGODB_URI``
set, the same tests also run against that real server.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sclib.backends.mongo_sessions import MongoSessionStore
from sclib.backends.sqlite_sessions import SQLiteSessionStore
from sclib.testing.sessionstore import SessionStoreContract
from sclib.transfers.sessions import MemorySessionStore, SessionStore

REAL_URI = os.environ.get("SCLIB_TEST_MONGODB_URI")


class TestMemorySessionStore(SessionStoreContract):
    @pytest.fixture
    def sessions(self) -> SessionStore:
        return MemorySessionStore()


class TestSQLiteSessionStore(SessionStoreContract):
    @pytest.fixture
    def sessions(self, tmp_path: Path) -> Iterator[SessionStore]:
        store = SQLiteSessionStore(tmp_path / "sclib.db")
        yield store
        store.close()


@pytest.mark.mongo
class TestMongoSessionStore(SessionStoreContract):
    @pytest.fixture(params=["stand-in"] + (["server"] if REAL_URI else []))
    def sessions(self, request: pytest.FixtureRequest) -> Iterator[SessionStore]:
        if request.param == "server":
            import pymongo

            client: object = pymongo.MongoClient(REAL_URI, tz_aware=True)
            name = f"sclib_test_{uuid.uuid4().hex[:12]}"
            yield MongoSessionStore(client, database=name)
            client.drop_database(name)  # type: ignore[attr-defined]
            client.close()  # type: ignore[attr-defined]
        else:
            mongomock = pytest.importorskip("mongomock")
            yield MongoSessionStore(
                mongomock.MongoClient(tz_aware=True), write_concern={"w": 1}
            )

    def test_concurrent_chunk_records_are_all_kept(
        self, sessions: SessionStore, request: pytest.FixtureRequest
    ) -> None:
        """Concurrent chunk records (real server only: mongomock is not thread-safe)."""
        if request.node.callspec.params.get("sessions") == "stand-in":
            pytest.skip("needs a real MongoDB server (SCLIB_TEST_MONGODB_URI)")
        super().test_concurrent_chunk_records_are_all_kept(sessions)
