"""The mongowire test server itself: what pymongo sees, raw frames, faults.

Most tests run a server in this process (``server`` fixture); one checks the
session's server process (``mongo_wire``). Only 127.0.0.1 is used.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator
from typing import Any

import bson
import pymongo
import pytest
from bson.binary import Binary
from pymongo import ReturnDocument, monitoring
from pymongo.errors import (
    AutoReconnect,
    CursorNotFound,
    DuplicateKeyError,
    OperationFailure,
    WTimeoutError,
)

from tests.mongowire import wire
from tests.mongowire.process import WireServerProcess
from tests.mongowire.server import MAX_WIRE_VERSION, MongoWireServer


class _Events(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.failures: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, dict(event.command)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self.failures.append((event.command_name, event.failure))

    def names(self) -> list[str]:
        return [name for name, _ in self.sent]


@pytest.fixture
def server() -> Iterator[MongoWireServer]:
    with MongoWireServer() as s:
        yield s


@pytest.fixture
def events() -> _Events:
    return _Events()


@pytest.fixture
def client(server: MongoWireServer, events: _Events) -> Iterator[Any]:
    c: Any = pymongo.MongoClient(
        server.uri, event_listeners=[events], serverSelectionTimeoutMS=5000
    )
    yield c
    c.close()


def _faults(server: MongoWireServer, *rules: dict[str, Any]) -> None:
    server.schedule.configure({"sclibFault": "set", "rules": list(rules)})


def _exchange(server: MongoWireServer, message: bytes) -> dict[str, Any] | None:
    """Send one raw message; the reply's body, or None if the server hung up."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(message)
        data = b""
        while len(data) < 16 or len(data) < struct.unpack_from("<i", data)[0]:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
    return wire.decode_reply(data)


def test_pymongo_finds_a_replica_set_primary_with_retryable_writes(
    client: Any, events: _Events
) -> None:
    """pymongo discovers the primary of set rs0 (wire version 17) and uses
    implicit sessions and retryable writes: an insert carries lsid and
    txnNumber."""
    client.admin.command("ping")
    description = client.topology_description
    assert description.topology_type_name == "ReplicaSetWithPrimary"
    (sd,) = description.server_descriptions().values()
    assert (sd.server_type_name, sd.replica_set_name) == ("RSPrimary", "rs0")
    assert sd.max_wire_version == MAX_WIRE_VERSION
    assert sd.topology_version is not None
    client.t.c.insert_one({"a": 1})
    (insert,) = [cmd for name, cmd in events.sent if name == "insert"]
    assert "lsid" in insert and insert["txnNumber"] == 1


def test_legacy_op_query_handshake_gets_an_op_reply(server: MongoWireServer) -> None:
    """A legacy OP_QUERY isMaster on admin.$cmd is answered with OP_REPLY."""
    query = bson.encode({"isMaster": 1, "helloOk": True})
    body = struct.pack("<i", 0) + b"admin.$cmd\x00" + struct.pack("<ii", 0, -1) + query
    message = struct.pack("<iiii", 16 + len(body), 7, 0, wire.OP_QUERY) + body
    reply = _exchange(server, message)
    assert reply is not None
    assert reply["ismaster"] is True and reply["helloOk"] is True
    assert (reply["setName"], reply["maxWireVersion"]) == ("rs0", MAX_WIRE_VERSION)


def test_op_msg_document_sequences_and_checksums(server: MongoWireServer) -> None:
    """An insert whose documents come as a kind 1 section, with the checksum flag,
    is applied; a message whose checksum does not match gets the connection
    closed."""
    docs = [{"_id": 1}, {"_id": 2}]
    command = {"insert": "c", "$db": "t"}
    message = wire.encode_request(
        1, command, sequences={"documents": docs}, flags=wire.CHECKSUM_PRESENT
    )
    assert wire.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert _exchange(server, message) == {"n": 2, "ok": 1.0}
    corrupt = message[:-1] + bytes([message[-1] ^ 0xFF])
    assert _exchange(server, corrupt) is None
    assert server.engine.client.t.c.count_documents({}) == 2


def test_cursors_come_in_batches(
    client: Any, events: _Events, server: MongoWireServer
) -> None:
    """find with batchSize 40 over 250 documents returns all, in order, through
    six getMores; a cursor closed early is killed on the server."""
    coll = client.t.c
    coll.insert_many([{"_id": i} for i in range(250)])
    assert [d["_id"] for d in coll.find().sort("_id", 1).batch_size(40)] == list(
        range(250)
    )
    assert events.names().count("getMore") == 6
    cursor = coll.find().batch_size(10)
    next(cursor)
    assert len(server.engine.cursors) == 1
    cursor.close()
    assert server.engine.cursors == {}
    assert "killCursors" in events.names()


def test_errors_are_pymongos_own_exceptions(client: Any) -> None:
    """Duplicate keys, unknown commands, index conflicts and unknown cursors come
    back as a server sends them, so pymongo raises its own exception classes."""
    coll = client.t.c
    coll.create_index("k", unique=True, name="k_unique")
    coll.insert_one({"k": 1})
    with pytest.raises(DuplicateKeyError) as dup:
        coll.insert_one({"k": 1})
    assert dup.value.details is not None
    assert dup.value.details["keyPattern"] == {"k": 1}
    assert "k_unique" in dup.value.details["errmsg"]
    with pytest.raises(DuplicateKeyError):
        coll.find_one_and_update({"k": 2}, {"$set": {"k": 1}}, upsert=True)
    with pytest.raises(OperationFailure) as unknown:
        client.t.command("frobnicate")
    assert unknown.value.code == 59
    with pytest.raises(OperationFailure) as options:
        coll.create_index("k", name="k_unique")  # same name, not unique
    assert options.value.code == 85
    with pytest.raises(OperationFailure) as keys:
        coll.create_index("other", name="k_unique")
    assert keys.value.code == 86
    with pytest.raises(CursorNotFound):
        client.t.command({"getMore": bson.Int64(12345), "collection": "c"})


def test_a_retried_write_is_answered_from_its_record(server: MongoWireServer) -> None:
    """The same (lsid, txnNumber) sent again gets the first answer and is not
    applied again, as a real server does for retryable writes."""
    lsid = {"id": Binary(b"s" * 16, 4)}
    inc = {
        "findAndModify": "c",
        "query": {"_id": 1},
        "update": {"$inc": {"n": 1}},
        "upsert": True,
        "new": True,
        "lsid": lsid,
        "txnNumber": bson.Int64(1),
        "$db": "t",
    }
    first = _exchange(server, wire.encode_request(1, inc))
    second = _exchange(server, wire.encode_request(2, inc))
    assert first == second
    assert first is not None and first["value"] == {"_id": 1, "n": 1}
    third = _exchange(server, wire.encode_request(3, {**inc, "txnNumber": 2}))
    assert third is not None and third["value"] == {"_id": 1, "n": 2}
    assert server.schedule.replays == 1


def test_close_after_apply_does_not_double_a_write(
    client: Any, server: MongoWireServer
) -> None:
    """A connection closed after the write was applied: pymongo retries, the
    server answers from the record, and the increment happens once."""
    coll = client.t.c
    coll.insert_one({"_id": 1, "n": 0})
    _faults(server, {"kind": "close_after", "commands": ["findAndModify"], "limit": 1})
    doc = coll.find_one_and_update(
        {"_id": 1}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
    )
    assert doc == {"_id": 1, "n": 1}
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 1}
    assert server.schedule.replays == 1 and server.schedule.faults["close_after"] == 1


def test_state_change_errors_carry_the_labels_a_server_sets(
    client: Any, events: _Events, server: MongoWireServer
) -> None:
    """NotWritablePrimary on a retryable write carries RetryableWriteError (and is
    retried by pymongo); on a read it carries no label and pymongo retries it by
    code; on createIndexes (not retryable) it reaches the caller."""
    coll = client.t.c
    _faults(
        server,
        {"kind": "not_writable_primary", "commands": "insert", "limit": 1},
        {"kind": "not_writable_primary", "commands": "find", "limit": 1},
    )
    coll.insert_one({"_id": 1})
    assert coll.find_one({"_id": 1}) == {"_id": 1}
    labels = {name: f.get("errorLabels") for name, f in events.failures}
    assert labels == {"insert": ["RetryableWriteError"], "find": None}
    _faults(server, {"kind": "interrupted_at_shutdown", "commands": "createIndexes"})
    with pytest.raises(AutoReconnect):
        coll.create_index("x")


def test_fault_schedule_every_nth_limit_and_counters(
    client: Any, server: MongoWireServer
) -> None:
    """A rule faults every Nth matching command of its collection, at most
    ``limit`` times; other collections are untouched; the counters are read back
    with the sclibFault command."""
    coll, other = client.t.c, client.t.other
    coll.insert_one({"_id": 1})
    reply = client.admin.command(
        {
            "sclibFault": "set",
            "rules": [
                {
                    "kind": "close_before",
                    "commands": ["find"],
                    "collections": ["c"],
                    "every": 3,
                    "limit": 2,
                }
            ],
        }
    )
    assert reply["faultsTotal"] == 0
    for _ in range(12):
        assert coll.find_one({"_id": 1}) == {"_id": 1}  # a read is retried once
        assert other.find_one({}) is None
    stats = client.admin.command({"sclibFault": "stats"})
    assert stats["faults"] == {"close_before": 2}
    assert stats["rules"][0]["fired"] == 2
    assert stats["commands"]["find"] == 24 + 2
    with pytest.raises(OperationFailure, match="unknown fault kind"):
        client.admin.command({"sclibFault": "set", "rules": [{"kind": "meteor"}]})


def test_a_write_concern_error_reaches_the_caller_after_the_write(
    client: Any, server: MongoWireServer
) -> None:
    """A write concern timeout (not retryable) reaches pymongo's caller as
    WTimeoutError, and the write is there; a retryable one (91) is retried and
    answered from the record."""
    coll = client.t.c
    _faults(server, {"kind": "write_concern_error", "commands": "insert", "limit": 1})
    with pytest.raises(WTimeoutError):
        coll.insert_one({"_id": 1})
    assert coll.count_documents({}) == 1
    _faults(
        server,
        {"kind": "write_concern_error", "code": 91, "commands": "insert", "limit": 1},
    )
    coll.insert_one({"_id": 2})
    assert coll.count_documents({}) == 2 and server.schedule.replays == 1


def test_commands_are_atomic_under_concurrency(client: Any) -> None:
    """Eight threads incrementing one document 50 times each lose nothing."""
    coll = client.t.c
    coll.insert_one({"_id": 1, "n": 0})

    def bump() -> None:
        for _ in range(50):
            coll.find_one_and_update({"_id": 1}, {"$inc": {"n": 1}})

    threads = [threading.Thread(target=bump) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert coll.find_one({"_id": 1}) == {"_id": 1, "n": 400}


def test_the_session_server_runs_in_its_own_process(
    mongo_wire: WireServerProcess,
) -> None:
    """``python -m tests.mongowire --port 0`` printed the port the session's
    server listens on, in a process other than this one."""
    client = mongo_wire.client()
    try:
        assert client.admin.command("ping")["ok"] == 1
        assert mongo_wire.process is None or mongo_wire.process.poll() is None
        info = client.admin.command("buildInfo")
        assert info["version"].startswith("6.0")
    finally:
        client.close()


def test_the_rest_of_the_commands_pymongo_sends(client: Any) -> None:
    """count, distinct, aggregate, pipeline and replacement updates, upserts,
    bulk writes, collections, indexes and databases answer as on a server."""
    db = client.t
    coll = db.c
    coll.insert_many([{"_id": i, "k": i % 3} for i in range(10)])
    assert coll.estimated_document_count() == 10
    assert coll.count_documents({"k": 0}, skip=1, limit=2) == 2
    assert sorted(coll.distinct("k", {"_id": {"$lt": 5}})) == [0, 1, 2]
    grouped = coll.aggregate([{"$group": {"_id": "$k", "n": {"$sum": 1}}}])
    assert sorted((d["_id"], d["n"]) for d in grouped) == [(0, 4), (1, 3), (2, 3)]
    res = coll.update_many({"k": 1}, [{"$set": {"double": {"$multiply": ["$_id", 2]}}}])
    assert (res.matched_count, res.modified_count) == (3, 3)
    assert coll.find_one({"_id": 4})["double"] == 8
    res = coll.replace_one({"_id": 99}, {"new": True}, upsert=True)
    assert res.upserted_id == 99 and coll.find_one({"_id": 99}) == {
        "_id": 99,
        "new": True,
    }
    bulk = coll.bulk_write(
        [
            pymongo.InsertOne({"_id": 100}),
            pymongo.UpdateOne({"_id": 100}, {"$set": {"x": 1}}),
            pymongo.DeleteMany({"k": 2}),
        ]
    )
    assert (bulk.inserted_count, bulk.modified_count, bulk.deleted_count) == (1, 1, 3)
    assert coll.find_one_and_delete({"_id": 100}, projection={"x": 1}) == {
        "_id": 100,
        "x": 1,
    }
    db.create_collection("made")
    with pytest.raises(pymongo.errors.CollectionInvalid):
        db.create_collection("made")
    assert set(db.list_collection_names()) == {"c", "made"}
    coll.create_index([("k", 1), ("_id", -1)], name="k_id")
    assert "k_id" in coll.index_information()
    coll.drop_index("k_id")
    assert list(coll.index_information()) == ["_id_"]
    db.drop_collection("made")
    db.drop_collection("never-was")  # NamespaceNotFound is ignored by pymongo
    assert "t" in client.list_database_names()
    client.drop_database("t")
    assert "t" not in client.list_database_names()
    with client.start_session() as session:
        session.start_transaction()
        with pytest.raises(OperationFailure) as refused:
            coll.insert_one({"_id": 1}, session=session)
    assert refused.value.code == 20  # transactions are not served
