"""The DatasetStore contract on memory, SQLite (a real file) and MongoDB.

No MongoDB server can be installed on these machines, so MongoDB runs against
mongomock in-process (``stand-in``) and through the real pymongo over TCP to the
mongowire test server (``wire``, :mod:`tests.mongowire`); with
``SCLIB_TEST_MONGODB_URI`` set, the same tests also run against that real server.
The concurrency tests run on the servers only (mongomock in-process is not
thread-safe; the wire server runs one command at a time).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sclib.backends.mongo_datasets import MongoDatasetStore
from sclib.backends.sqlite_datasets import SQLiteDatasetStore
from sclib.datasets import (
    Dataset,
    DatasetFile,
    DatasetStore,
    MemoryDatasetStore,
    open_dataset_store,
)
from sclib.testing.datasetstore import DatasetStoreContract
from tests.contract.mongo_clients import PARAMS, pymongo_database


class TestMemoryDatasetStore(DatasetStoreContract):
    @pytest.fixture
    def datasets(self) -> DatasetStore:
        return MemoryDatasetStore()


class TestSQLiteDatasetStore(DatasetStoreContract):
    @pytest.fixture
    def datasets(self, tmp_path: Path) -> Iterator[DatasetStore]:
        store = SQLiteDatasetStore(tmp_path / "sclib.db")
        yield store
        store.close()


def _skip_on_stand_in(request: pytest.FixtureRequest) -> None:
    if request.node.callspec.params.get("datasets") == "stand-in":
        pytest.skip("needs a server (wire or SCLIB_TEST_MONGODB_URI)")


@pytest.mark.mongo
class TestMongoDatasetStore(DatasetStoreContract):
    @pytest.fixture(params=PARAMS)
    def datasets(self, request: pytest.FixtureRequest) -> Iterator[DatasetStore]:
        if request.param != "stand-in":
            with pymongo_database(request, request.param) as (client, name):
                yield MongoDatasetStore(client, database=name)
        else:
            mongomock = pytest.importorskip("mongomock")
            yield MongoDatasetStore(
                mongomock.MongoClient(tz_aware=True), write_concern={"w": 1}
            )

    @pytest.fixture(autouse=True)
    def _threads_need_a_server(self, request: pytest.FixtureRequest) -> None:
        """The concurrency tests run on a server only: mongomock in-process is
        not thread-safe."""
        if request.node.name.startswith("test_concurrent_"):
            _skip_on_stand_in(request)

    def test_documents_use_the_portal_field_names(self, datasets: DatasetStore) -> None:
        """The stored document uses the portal's names (user, is_downloadable, id
        for the number, ...) in the visstoredatas collection, is marked
        created_by: sclib (what its unique indexes cover), and a file-free legacy
        document reads."""
        assert isinstance(datasets, MongoDatasetStore)
        assert datasets.coll.name == "visstoredatas"
        made = datasets.create(
            Dataset(name="P", owner="ana@example.org", sensor="IDX", is_public=True)
        )
        doc = datasets.coll.find_one({"uuid": made.uuid}, {"_id": 0})
        assert doc is not None
        assert set(doc) == {
            "uuid", "name", "slug", "user", "sensor", "convert", "is_public",
            "is_downloadable", "folder", "team_uuid", "tags", "files", "total_size",
            "status", "error_message", "created_at", "updated_at", "id",
            "created_by",
        }  # fmt: skip
        assert doc["created_by"] == "sclib"
        assert (doc["user"], doc["status"], doc["sensor"]) == (
            "ana@example.org",
            "submitted",
            "IDX",
        )
        datasets.coll.update_one({"uuid": made.uuid}, {"$unset": {"files": ""}})
        assert datasets.get(made.uuid).files == ()
        got = datasets.add_files(made.uuid, [DatasetFile("x", 4, "ab" * 32)])
        assert got.total_size == 4
        stored = datasets.coll.find_one({"uuid": made.uuid})
        assert stored is not None and stored["total_size"] == 4


def test_open_dataset_store_by_url(tmp_path: Path) -> None:
    """open_dataset_store opens SQLite by URL, sharing the file with other tables."""
    store = open_dataset_store(f"sqlite:///{tmp_path}/jobs.db")
    try:
        assert isinstance(store, SQLiteDatasetStore)
        made = store.create(Dataset(name="n", owner="o@x", sensor="OTHER"))
        assert store.get(made.uuid) == made
    finally:
        store.close()


def test_a_file_from_an_older_sclib_gains_the_number_column(tmp_path: Path) -> None:
    """A SQLite file made before datasets had numbers opens: the column is added,
    its datasets read with no number, and new ones are numbered."""
    import sqlite3

    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(
            "CREATE TABLE datasets (uuid TEXT PRIMARY KEY, name TEXT NOT NULL, "
            "slug TEXT NOT NULL, owner TEXT NOT NULL, sensor TEXT NOT NULL, "
            "convert INTEGER NOT NULL, is_public INTEGER NOT NULL, "
            "is_public_downloadable INTEGER NOT NULL, folder TEXT NOT NULL, "
            "team_uuid TEXT, tags TEXT NOT NULL DEFAULT '[]', total_size INTEGER "
            "NOT NULL DEFAULT 0, status TEXT NOT NULL, error_message TEXT, "
            "created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);"
            "INSERT INTO datasets VALUES ('" + "a" * 32 + "', 'Old', 'old', "
            "'ana@example.org', 'TIFF', 1, 0, 0, '', NULL, '[]', 0, 'done', NULL, "
            "1700000000000, 1700000000000);"
        )
    store = SQLiteDatasetStore(path)
    try:
        assert store.get("a" * 32).number is None
        made = store.create(Dataset(name="New", owner="ana@example.org", sensor="IDX"))
        assert made.number == 1
    finally:
        store.close()
    again = SQLiteDatasetStore(path)  # a second open finds nothing to add
    try:
        assert again.get(made.uuid).number == 1
    finally:
        again.close()
