"""Transfer sessions, as the engine sees them: the interface and records live in
:mod:`sclib.backends.sessions`, the factories in :mod:`sclib.backends`; this
module gathers them where transfer code (and its users) look.
"""

from __future__ import annotations

from sclib.backends import default_session_store, open_session_store
from sclib.backends.sessions import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    FAILED,
    ChunkRecord,
    MemorySessionStore,
    SessionStore,
    TransferSession,
    new_session,
    session_key,
)

__all__ = [
    "ACTIVE",
    "CANCELLED",
    "COMPLETED",
    "FAILED",
    "ChunkRecord",
    "MemorySessionStore",
    "SessionStore",
    "TransferSession",
    "default_session_store",
    "new_session",
    "open_session_store",
    "session_key",
]
