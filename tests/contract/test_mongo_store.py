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
from typing import Any

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


@pytest.mark.mongo_server
@pytest.mark.skipif(
    not REAL_URI, reason="needs a real MongoDB (SCLIB_TEST_MONGODB_URI)"
)
def test_concurrent_claims_never_share_a_job() -> None:
    """Eight threads claiming from one real MongoDB never get the same attempt of
    a job twice (find_one_and_update is atomic per document). The in-process
    stand-in cannot show this, so the test needs a server."""
    import threading

    import pymongo

    from sclib.jobs.queue import JobQueue

    client: Any = pymongo.MongoClient(REAL_URI, tz_aware=True)
    name = f"sclib_test_{uuid.uuid4().hex[:12]}"
    queue = JobQueue(MongoJobStore(client, database=name))
    try:
        for i in range(300):
            queue.enqueue("upload", {"i": i})
        seen: list[tuple[str, int]] = []
        lock = threading.Lock()

        def claimer(n: int) -> None:
            while (job := queue.claim(f"w{n}")) is not None:
                with lock:
                    seen.append((job.id, job.attempts))
                queue.complete(job.lease)

        threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(seen) == len(set(seen)) == 300
        assert queue.stats()["by_status"]["completed"] == 300
    finally:
        client.drop_database(name)
        client.close()
