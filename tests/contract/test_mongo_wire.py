"""Defects the wire tests found in the MongoDB backends, one regression test each.

These run through the real pymongo against the mongowire test server
(:mod:`tests.mongowire`): the session's shared one (``mongo_wire``), or, where a
test injects faults, one of its own in this process. The commit that fixed each
defect names it; ``docs/backends.md`` says what the backends now do.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from sclib.backends.mongo import MongoJobStore
from sclib.backends.mongo_datasets import MongoDatasetStore
from sclib.backends.mongo_sessions import MongoSessionStore
from sclib.datasets import Dataset, DatasetFile
from sclib.errors import BackendError, InvalidInput
from sclib.jobs.queue import JobQueue
from sclib.jobs.registry import HandlerRegistry
from sclib.jobtypes import JobStatus
from sclib.transfers.sessions import ChunkRecord, new_session
from tests.mongowire import MongoWireServer
from tests.mongowire.process import WireServerProcess

pytestmark = pytest.mark.mongo


@pytest.fixture
def client(mongo_wire: WireServerProcess) -> Iterator[Any]:
    """A tz-aware pymongo client on the shared wire server."""
    c = mongo_wire.client()
    yield c
    c.close()


@pytest.fixture
def db_name(client: Any) -> Iterator[str]:
    """A database no other test uses, dropped afterwards."""
    name = f"sclib_test_{uuid.uuid4().hex[:12]}"
    yield name
    client.drop_database(name)


@pytest.fixture
def faulty() -> Iterator[MongoWireServer]:
    """A wire server of this test's own, in this process, for injecting faults."""
    with MongoWireServer() as server:
        yield server


def _client(server: MongoWireServer) -> Any:
    import pymongo

    return pymongo.MongoClient(server.uri, tz_aware=True, serverSelectionTimeoutMS=5000)


def _session(n: int = 0, **state: Any) -> Any:
    return new_session(f"s3://b/{n}", f"/d/{n}", 4096, 1024, {"etag": "e"}, state)


# -- D1: errors name the store and the operation ----------------------------------


def test_driver_errors_name_the_store_and_the_operation(
    faulty: MongoWireServer,
) -> None:
    """A driver error becomes a BackendError whose message names the store (job,
    session or dataset) and the operation that failed, not always "job store"."""
    client = _client(faulty)
    try:
        queue = JobQueue(MongoJobStore(client, database="d1"))
        sessions = MongoSessionStore(client, database="d1")
        datasets = MongoDatasetStore(client, database="d1")
        queue.enqueue("upload")
        made = sessions.create(_session())
        ds = datasets.create(Dataset(name="n", owner="o@x", sensor="IDX"))
        # every try of these commands loses its connection: pymongo's one retry
        # fails too, and the error reaches the store
        faulty.schedule.configure(
            {
                "sclibFault": "set",
                "rules": [
                    {"kind": "close_before", "commands": ["findAndModify", "update"]},
                    {"kind": "not_writable_primary", "commands": ["delete"]},
                ],
            }
        )
        with pytest.raises(
            BackendError, match=r"^MongoDB job store: claim failed: AutoReconnect"
        ):
            queue.claim("w")
        with pytest.raises(
            BackendError,
            match=r"^MongoDB session store: record_chunk failed: AutoReconnect",
        ):
            sessions.record_chunk(made.id, 0, ChunkRecord("d"))
        with pytest.raises(
            BackendError,
            match=r"^MongoDB dataset store: delete failed: NotPrimaryError",
        ):
            datasets.delete(ds.uuid)
    finally:
        client.close()


# -- D2: values BSON cannot hold --------------------------------------------------


def test_values_bson_cannot_hold_are_invalid_input(client: Any, db_name: str) -> None:
    """An int beyond 64 bits or a str with a lone surrogate (both valid JSON for
    the queue's check) is refused with InvalidInput naming the operation, not a raw
    OverflowError or UnicodeEncodeError from bson; nothing is stored."""
    queue = JobQueue(MongoJobStore(client, database=db_name))
    with pytest.raises(InvalidInput, match=r"job store: enqueue: .*OverflowError"):
        queue.enqueue("upload", {"n": 2**64})
    with pytest.raises(InvalidInput, match=r"job store: enqueue: .*UnicodeEncode"):
        queue.enqueue("upload", {"s": "\ud800"})
    assert queue.list() == []
    queue.enqueue("upload")
    claimed = queue.claim("w")
    assert claimed is not None
    with pytest.raises(InvalidInput, match=r"job store: complete: .*OverflowError"):
        queue.complete(claimed.lease, {"n": -(2**63) - 1})
    assert queue.get(claimed.id).status is JobStatus.RUNNING
    sessions = MongoSessionStore(client, database=db_name)
    with pytest.raises(InvalidInput, match=r"session store: create: "):
        sessions.create(_session(offset=2**64))
    made = sessions.create(_session())
    with pytest.raises(InvalidInput, match=r"session store: update: "):
        sessions.update(made.id, state={"name": "\udcff"})
    datasets = MongoDatasetStore(client, database=db_name)
    ds = datasets.create(Dataset(name="n", owner="o@x", sensor="IDX"))
    with pytest.raises(InvalidInput, match=r"dataset store: add_files: "):
        datasets.add_files(ds.uuid, [DatasetFile("big", 2**64, "ab" * 32)])


def test_worker_fails_a_job_whose_result_mongodb_cannot_store(
    client: Any, db_name: str
) -> None:
    """A handler whose JSON result MongoDB cannot hold (an int beyond 64 bits)
    fails its job with a message saying so, as a non-JSON result does; before, the
    OverflowError escaped the worker's bookkeeping and the job stayed running."""
    handlers = HandlerRegistry({"upload": lambda ctx: {"n": 2**70}})
    queue = JobQueue(MongoJobStore(client, database=db_name), handlers=handlers)
    job = queue.enqueue("upload", max_attempts=1)
    queue.run_until_idle()
    done = queue.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and "unusable result" in done.error
    assert "cannot be stored in MongoDB" in done.error
