"""pymongo clients for the MongoDB contract suites, one fresh database per test.

Three ways to reach MongoDB, as fixture params:

``stand-in``
    mongomock in the test's own process (no socket, no pymongo on the way).
``wire``
    the real pymongo over TCP to the mongowire test server (``mongo_wire``
    fixture, :mod:`tests.mongowire`): BSON, cursors, error replies, sessions and
    retryable writes go through the driver as with a server.
``server``
    a real MongoDB 6/7 replica set, when ``SCLIB_TEST_MONGODB_URI`` is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

REAL_URI = os.environ.get("SCLIB_TEST_MONGODB_URI")

#: the params of a fixture that runs a suite on every reachable MongoDB
PARAMS = ["stand-in", "wire", *(["server"] if REAL_URI else [])]
#: the params that are a server reached through pymongo
SERVER_PARAMS = ["wire", *(["server"] if REAL_URI else [])]


@contextmanager
def pymongo_database(request: pytest.FixtureRequest, kind: str) -> Iterator[Any]:
    """A ``pymongo.MongoClient`` (tz_aware) on the wire or real server, and a
    database name no other test uses; the database is dropped afterwards."""
    import pymongo

    if kind == "server":
        client: Any = pymongo.MongoClient(REAL_URI, tz_aware=True)
    elif kind == "wire":
        client = request.getfixturevalue("mongo_wire").client()
    else:  # pragma: no cover - a typo in a test module
        raise ValueError(kind)
    name = f"sclib_test_{uuid.uuid4().hex[:12]}"
    try:
        yield client, name
    finally:
        try:
            client.drop_database(name)
        finally:
            client.close()
