"""The JobStore contract on the MongoDB backend.

In CI there is no MongoDB server (none can be installed on these machines), so the
backend runs through pymongo's API against mongomock, an in-process stand-in. When
``SCLIB_TEST_MONGODB_URI`` points to a real server (MongoDB 6/7, replica set), the
same suite runs against it, one fresh database per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from sclib.backends.mongo import MongoJobStore
from sclib.testing.jobstore import JobStoreContract

pytestmark = pytest.mark.mongo

REAL_URI = os.environ.get("SCLIB_TEST_MONGODB_URI")


@pytest.fixture(params=["stand-in"] + (["server"] if REAL_URI else []))
def mongo_store(request: pytest.FixtureRequest) -> Iterator[MongoJobStore]:
    if request.param == "server":
        import pymongo

        client: object = pymongo.MongoClient(REAL_URI, tz_aware=True)
        name = f"sclib_test_{uuid.uuid4().hex[:12]}"
        store = MongoJobStore(client, database=name)
        yield store
        client.drop_database(name)  # type: ignore[attr-defined]
        client.close()  # type: ignore[attr-defined]
    else:
        mongomock = pytest.importorskip("mongomock")
        store = MongoJobStore(
            mongomock.MongoClient(tz_aware=True),
            database="scientistcloud",
            write_concern={"w": 1},
        )
        yield store


class TestMongoJobStore(JobStoreContract):
    @pytest.fixture
    def store(self, mongo_store: MongoJobStore) -> MongoJobStore:
        return mongo_store
