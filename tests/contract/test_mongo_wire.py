"""Defects the wire tests found in the MongoDB backends, one regression test each.

These run through the real pymongo against the mongowire test server
(:mod:`tests.mongowire`): the session's shared one (``mongo_wire``), or, where a
test injects faults, one of its own in this process. The commit that fixed each
defect names it; ``docs/backends.md`` says what the backends now do.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
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


# -- D3: a session create that failed after storing can be repeated ---------------


def test_session_create_can_be_repeated_after_an_unknown_outcome(
    faulty: MongoWireServer,
) -> None:
    """A create whose insert was stored but answered with an error (here a write
    concern timeout) can be called again with the same session: it comes back
    active. Before, the second call retired the session itself and then failed on
    its own id (DuplicateKeyError), and every later call failed the same way."""
    client = _client(faulty)
    try:
        sessions = MongoSessionStore(client, database="d3")
        session = _session()
        faulty.schedule.configure(
            {
                "sclibFault": "set",
                "rules": [{"kind": "write_concern_error", "commands": "insert"}],
            }
        )
        with pytest.raises(
            BackendError, match="session store: create failed: WTimeout"
        ):
            sessions.create(session)
        faulty.schedule.configure({"sclibFault": "clear"})
        again = sessions.create(session)
        assert (again.id, again.status) == (session.id, "active")
        found = sessions.find_active(session.key)
        assert found is not None and found.id == session.id
        assert sessions.count() == 1
    finally:
        client.close()


# -- D4: idempotent commands pymongo does not retry -------------------------------


@pytest.mark.parametrize(
    "kind", ["close_before", "close_after", "not_writable_primary"]
)
def test_one_transient_error_does_not_fail_what_pymongo_does_not_retry(
    faulty: MongoWireServer, kind: str
) -> None:
    """pymongo retries single-document writes and reads once, but not
    createIndexes, update_many or delete_many. The stores send those (idempotent)
    once more after a dropped connection or a step-down, so one such error no
    longer fails opening a store, creating a session (which retires the older
    ones of its key with update_many) or deleting finished jobs."""
    client = _client(faulty)

    def first_try_fails(command: str) -> None:
        rule = {"kind": kind, "commands": command, "limit": 1}
        faulty.schedule.configure({"sclibFault": "set", "rules": [rule]})

    try:
        first_try_fails("createIndexes")
        store = MongoJobStore(client, database="d4")
        first_try_fails("createIndexes")
        sessions = MongoSessionStore(client, database="d4")
        first_try_fails("createIndexes")
        MongoDatasetStore(client, database="d4")
        names = {i["name"] for i in client.d4.visstoredatas.list_indexes()}
        assert {"uuid_lookup", "sclib_uuid", "sclib_user_slug", "status"} <= names
        assert faulty.schedule.faults[kind] == 3

        old = sessions.create(_session())
        first_try_fails("update")
        new = sessions.create(_session())
        assert sessions.get(old.id).status == "cancelled"
        assert sessions.get(new.id).status == "active"

        queue = JobQueue(store)
        queue.enqueue("upload")
        claimed = queue.claim("w")
        assert claimed is not None
        queue.complete(claimed.lease)
        # the store keeps milliseconds: a job finished within the same
        # millisecond is not yet older than 0 s
        time.sleep(0.005)
        first_try_fails("delete")
        queue.delete_finished(older_than=timedelta(0))
        assert queue.list() == []
        assert faulty.schedule.faults[kind] == 5
    finally:
        client.close()


# -- D5: an equivalent index under another name -----------------------------------


def test_stores_open_on_a_collection_with_an_equivalent_index_of_another_name(
    client: Any, db_name: str
) -> None:
    """The portal's collection may already have the unique uuid index under the
    default name ``uuid_1`` (what an ODM such as Mongoose makes for a unique
    field). MongoDB refuses a second index on the same keys (IndexOptionsConflict),
    so opening the dataset store failed; it now uses the existing index when it
    does what sclib's would, and otherwise opens anyway, building what MongoDB
    accepts and reporting what it refuses (``index_problems``): ``create`` still
    refuses a uuid that is taken."""
    # as a shell or an ODM sends it: the direction a double, the default name
    client[db_name].command(
        {
            "createIndexes": "visstoredatas",
            "indexes": [{"key": {"uuid": 1.0}, "name": "uuid_1", "unique": True}],
        }
    )
    client[db_name].visstoredatas.create_index([("name", "text")])
    client[db_name].jobs.create_index("owner")  # owner_1, same as "owner"
    datasets = MongoDatasetStore(client, database=db_name)
    MongoJobStore(client, database=db_name)
    made = datasets.create(Dataset(name="n", owner="o@x", sensor="IDX"))
    with pytest.raises(InvalidInput, match="exists"):
        datasets.create(Dataset(name="m", owner="o@x", sensor="IDX", uuid=made.uuid))
    names = {i["name"] for i in client[db_name].visstoredatas.list_indexes()}
    assert "uuid_1" in names and "uuid_lookup" not in names  # uuid_1 serves it

    other = f"{db_name}_plain"
    try:
        client[other].visstoredatas.create_index("uuid")  # not unique
        plain = MongoDatasetStore(client, database=other)
        names = {i["name"] for i in client[other].visstoredatas.list_indexes()}
        assert "uuid_lookup" not in names  # the plain uuid_1 serves lookups
        assert all("not built" in p for p in plain.index_problems)
        made = plain.create(Dataset(name="n", owner="o@x", sensor="IDX"))
        with pytest.raises(InvalidInput, match="exists"):
            plain.create(Dataset(name="m", owner="o@x", sensor="IDX", uuid=made.uuid))
    finally:
        client.drop_database(other)


# -- D6: one write concern for every store -----------------------------------------


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("majority", {"w": "majority", "j": True}), ("1", {"w": 1})],
)
def test_the_write_concern_setting_reaches_every_store(
    mongo_wire: WireServerProcess,
    db_name: str,
    tmp_path: Any,
    setting: str,
    expected: dict[str, Any],
) -> None:
    """SCLIB_MONGO_WRITE_CONCERN reached only the job store: the session store
    (every chunk record, every upload's state) and the dataset store of the
    server, and of the worker's upload handler, always wrote with
    ``w: majority, j: true``. Now every store a server or a worker opens writes
    with the one setting."""
    from sclib.pipeline.upload import UploadHandler, handlers_from_settings
    from sclib.server import create_app
    from sclib.settings import load_settings

    uri = mongo_wire.uri.replace("/?", f"/{db_name}?")
    settings = load_settings(
        SCLIB_BACKEND=uri,
        SCLIB_DATA_DIR=str(tmp_path),
        SCLIB_MONGO_WRITE_CONCERN=setting,
        SCLIB_NO_AUTH="true",
    )
    state = create_app(settings, run_worker=False).state.sclib
    try:
        for store in (state.queue.store, state.sessions, state.datasets):
            assert store.coll.write_concern.document == expected, store  # type: ignore[attr-defined]
    finally:
        state.close()
    upload = handlers_from_settings(settings)["upload"]
    assert isinstance(upload, UploadHandler) and upload.pipeline is not None
    stores: list[Any] = [upload.sessions, upload.datasets, upload.pipeline.queue]
    try:
        for store in stores[:2]:
            assert store.coll.write_concern.document == expected, store
        assert upload.pipeline.queue.store.coll.write_concern.document == expected  # type: ignore[attr-defined]
    finally:
        for store in stores:
            store.close()
