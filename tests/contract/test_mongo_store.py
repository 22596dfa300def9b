"""The JobStore contract on the MongoDB backend.

No MongoDB server can be installed on these machines, so the suite runs twice
without one: against mongomock in-process (``stand-in``), and through the real
pymongo over TCP to the mongowire test server (``wire``, see
:mod:`tests.mongowire`). When ``SCLIB_TEST_MONGODB_URI`` points to a real server
(MongoDB 6/7, replica set), it runs against that too. Each gets a fresh database.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sclib.backends.mongo import MongoJobStore
from sclib.testing.jobstore import JobStoreContract
from tests.contract.mongo_clients import (
    PARAMS,
    REAL_URI,
    SERVER_PARAMS,
    pymongo_database,
)

pytestmark = pytest.mark.mongo


@pytest.fixture(params=PARAMS)
def mongo_store(request: pytest.FixtureRequest) -> Iterator[MongoJobStore]:
    if request.param != "stand-in":
        with pymongo_database(request, request.param) as (client, name):
            yield MongoJobStore(client, database=name)
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
@pytest.mark.parametrize("kind", SERVER_PARAMS)
def test_concurrent_claims_never_share_a_job(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Eight threads claiming from one server never get the same attempt of a job
    twice (find_one_and_update is atomic per document). mongomock in-process is
    not thread-safe, so this runs on servers only: the wire test server (one lock
    around every command) and a real MongoDB when configured."""
    import threading

    from sclib.jobs.queue import JobQueue

    with pymongo_database(request, kind) as (client, name):
        queue = JobQueue(MongoJobStore(client, database=name))
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


@pytest.mark.mongo_server
@pytest.mark.parametrize("kind", SERVER_PARAMS)
def test_enqueue_many_is_one_insert(kind: str, request: pytest.FixtureRequest) -> None:
    """On MongoDB, jobs without idempotency keys that share their dependencies
    go in with one ``insert`` command and come back with one ``find`` (counted
    by pymongo's own command monitoring), instead of three round trips each;
    each returned job is the job as stored, and one behind a cancelled
    dependency is born cancelled."""
    from pymongo import monitoring

    from sclib.jobs.queue import JobQueue

    class Commands(monitoring.CommandListener):
        def __init__(self) -> None:
            self.names: list[str] = []

        def started(self, event: monitoring.CommandStartedEvent) -> None:
            self.names.append(event.command_name)

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            pass

    seen = Commands()
    with pymongo_database(request, kind) as (plain, name):
        options = {"tz_aware": True, "event_listeners": [seen]}
        if kind == "wire":
            client = request.getfixturevalue("mongo_wire").client(**options)
        else:
            client = type(plain)(REAL_URI, **options)
        try:
            queue = JobQueue(MongoJobStore(client, database=name))
            dep = queue.enqueue("upload")
            seen.names.clear()
            jobs = queue.enqueue_many(
                "upload", [{"i": i} for i in range(50)], depends_on=[dep.id]
            )
            assert seen.names.count("insert") == 1, seen.names
            assert len(seen.names) < 20, seen.names  # not 3 or more per job
            assert [j.parameters for j in jobs] == [{"i": i} for i in range(50)]
            assert jobs == [queue.get(j.id) for j in jobs]
            assert {(j.status.value, j.waiting_on) for j in jobs} == {("pending", 1)}

            queue.cancel(dep.id)
            born = queue.enqueue_many("upload", [{}, {}], depends_on=[dep.id])
            assert {j.status.value for j in born} == {"cancelled"}
            assert born == [queue.get(j.id) for j in born]
        finally:
            client.close()
