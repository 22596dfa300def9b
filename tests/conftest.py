"""Fixtures shared by every test package.

``mongo_wire``: the mongowire test server (:mod:`tests.mongowire`, test
infrastructure: MongoDB's wire protocol over mongomock on 127.0.0.1), started
once per test session in a process of its own and stopped at the end. With
``SCLIB_TEST_MONGOWIRE_PORT`` set, the tests use the server already listening on
that port of 127.0.0.1 instead (several test processes can share one server:
every test uses a database of its own).

Every test runs with ``SCLIB_STATE_DIR`` set to a folder of the test session
(subprocesses inherit it), so nothing writes to the user's own state folder.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.mongowire.process import WireServerProcess, start_server


def pytest_configure(config: pytest.Config) -> None:
    """Keep sclib's per-user state (transfer sessions) inside the test session."""
    if "SCLIB_STATE_DIR" not in os.environ:
        import tempfile

        made = tempfile.mkdtemp(prefix="sclib-test-state-")
        os.environ["SCLIB_STATE_DIR"] = made
        config.stash[_MADE_STATE] = made


def pytest_unconfigure(config: pytest.Config) -> None:
    made = config.stash.get(_MADE_STATE, None)
    if made is not None:
        import shutil

        shutil.rmtree(made, ignore_errors=True)
        os.environ.pop("SCLIB_STATE_DIR", None)


_MADE_STATE = pytest.StashKey[str]()


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
