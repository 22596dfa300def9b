"""mongowire: a MongoDB wire-protocol server for sclib's tests (test infrastructure).

This package is TEST INFRASTRUCTURE. It never ships with sclib and is not a
database: it keeps everything in memory (mongomock), serves one machine's tests
on 127.0.0.1 only, and exists so that sclib's MongoDB backends can be exercised
through the real, unmodified pymongo over a TCP socket where no MongoDB server can
be installed.

What pymongo 4.x sees: the primary of a one-member replica set ``rs0`` (MongoDB
6.0, wire version 17) with logical sessions and retryable writes, speaking OP_MSG
(document sequences, checksums) and answering the legacy OP_QUERY handshake.
Commands run one at a time under a lock, so each is atomic. Errors come back as a
server sends them, so pymongo raises its real exception classes. A fault schedule
(:mod:`tests.mongowire.faults`) injects connection drops, step-downs, shutdowns,
write concern errors and delays.

Modules: :mod:`~tests.mongowire.wire` (framing), :mod:`~tests.mongowire.engine`
(commands over mongomock), :mod:`~tests.mongowire.faults` (the fault schedule),
:mod:`~tests.mongowire.server` (connections, handshake, retryable writes),
:mod:`~tests.mongowire.process` (the server in its own process, for pytest).

Run it alone with ``python -m tests.mongowire --port 0``: it prints its port on
the first line of its output and serves until stopped.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MongoWireServer"]


def __getattr__(name: str) -> Any:
    # lazy: importing the package (as tests/conftest.py does) needs neither
    # pymongo nor mongomock; the server does
    if name == "MongoWireServer":
        from tests.mongowire.server import MongoWireServer

        return MongoWireServer
    raise AttributeError(name)
