"""Fixtures shared by every test package.

``mongo_wire``: the mongowire test server (:mod:`tests.mongowire`, test
infrastructure: MongoDB's wire protocol over mongomock on 127.0.0.1), started
once per test session in a process of its own and stopped at the end. With
``SCLIB_TEST_MONGOWIRE_PORT`` set, the tests use the server already listening on
that port of 127.0.0.1 instead (several test processes can share one server:
every test uses a database of its own).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.mongowire.process import WireServerProcess, start_server


@pytest.fixture(scope="session")
def mongo_wire() -> Iterator[WireServerProcess]:
    """The session's mongowire server (see the module docstring)."""
    pytest.importorskip("pymongo")
    pytest.importorskip("mongomock")
    shared = os.environ.get("SCLIB_TEST_MONGOWIRE_PORT")
    if shared:
        yield WireServerProcess(int(shared))
        return
    server = start_server()
    try:
        yield server
    finally:
        server.stop()
