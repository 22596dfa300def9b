"""Moving bytes: chunked, parallel, resumable, BLAKE3-verified transfers.

:class:`TransferEngine` copies from any source plugin (:mod:`.sources`: local files,
S3, GCS, Google Drive, HTTP(S), any fsspec protocol) to a local folder or an object
store, keeping resumable state in a :class:`~.sessions.SessionStore` (by default
a SQLite file in the per-user state folder, so a copy resumes in a later process).

Nothing here is imported by ``import sclib``; optional dependencies load only when
their scheme is used.
"""

from __future__ import annotations

from sclib.transfers.engine import (
    FileResult,
    TransferConfig,
    TransferEngine,
    TransferFuture,
    TransferResult,
    open_destination,
)
from sclib.transfers.plan import ChunkPlan, auto_chunk_size, parse_size
from sclib.transfers.progress import (
    CallbackSubscriber,
    Progress,
    ProgressSubscriber,
    TqdmSubscriber,
    TransferProgress,
)
from sclib.transfers.sessions import (
    MemorySessionStore,
    SessionStore,
    TransferSession,
    default_session_store,
    open_session_store,
)
from sclib.transfers.sources import Source, SourceObject, open_source, register

__all__ = [
    "CallbackSubscriber",
    "ChunkPlan",
    "FileResult",
    "MemorySessionStore",
    "Progress",
    "ProgressSubscriber",
    "SessionStore",
    "Source",
    "SourceObject",
    "TqdmSubscriber",
    "TransferConfig",
    "TransferEngine",
    "TransferFuture",
    "TransferProgress",
    "TransferResult",
    "TransferSession",
    "auto_chunk_size",
    "default_session_store",
    "open_destination",
    "open_session_store",
    "open_source",
    "parse_size",
    "register",
]
