"""The SessionStore contract on SQLite (a real file) and MongoDB.

No MongoDB server can be installed on these machines, so MongoDB runs against
mongomock in-process (``stand-in``) and through the real pymongo over TCP to the
mongowire test server (``wire``, :mod:`tests.mongowire`); with
``SCLIB_TEST_MONGODB_URI`` set, the same tests also run against that real server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sclib.backends.mongo_sessions import MongoSessionStore
from sclib.backends.sqlite_sessions import SQLiteSessionStore
from sclib.testing.sessionstore import SessionStoreContract
from sclib.transfers.sessions import MemorySessionStore, SessionStore
from tests.contract.mongo_clients import PARAMS, pymongo_database


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
    @pytest.fixture(params=PARAMS)
    def sessions(self, request: pytest.FixtureRequest) -> Iterator[SessionStore]:
        if request.param != "stand-in":
            with pymongo_database(request, request.param) as (client, name):
                yield MongoSessionStore(client, database=name)
        else:
            mongomock = pytest.importorskip("mongomock")
            yield MongoSessionStore(
                mongomock.MongoClient(tz_aware=True), write_concern={"w": 1}
            )

    def test_concurrent_chunk_records_are_all_kept(
        self, sessions: SessionStore, request: pytest.FixtureRequest
    ) -> None:
        """Concurrent chunk records are all kept (on a server only: mongomock
        in-process is not thread-safe; the wire test server is)."""
        if request.node.callspec.params.get("sessions") == "stand-in":
            pytest.skip("needs a server (wire or SCLIB_TEST_MONGODB_URI)")
        super().test_concurrent_chunk_records_are_all_kept(sessions)
