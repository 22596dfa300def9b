"""Transfer sessions: what a new process needs to continue an interrupted transfer.

A session records one object's transfer: the source (URL without credentials, size
and identity), the destination and the writer's state (temp file, multipart upload
id), the chunk size, and every verified chunk with its BLAKE3 digest. It is found
again by its *key*, derived from the source and destination URLs, so re-running
the same copy resumes it.

Sessions live in a :class:`SessionStore` beside the job store: SQLite
(:mod:`sclib.backends.sqlite_sessions`) or MongoDB
(:mod:`sclib.backends.mongo_sessions`). Each chunk is recorded with one atomic
write, so a crash loses at most the chunks that were in flight.
"""

from __future__ import annotations

import hashlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from sclib.errors import SessionNotFound
from sclib.models import new_job_id
from sclib.paths import safe_url

__all__ = [
    "ChunkRecord",
    "MemorySessionStore",
    "SessionStore",
    "TransferSession",
    "new_session",
    "session_key",
]

ACTIVE, COMPLETED, FAILED, CANCELLED = "active", "completed", "failed", "cancelled"


def session_key(source_url: str, dest_url: str) -> str:
    """The key that finds a transfer again: from where to where."""
    raw = f"{source_url}\n{dest_url}".encode()
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True, slots=True)
class ChunkRecord:
    """A verified chunk: its BLAKE3 digest and the destination's token, if any."""

    digest: str
    token: str | None = None


@dataclass(frozen=True, slots=True)
class TransferSession:
    """The resumable state of one object's transfer."""

    id: str
    key: str
    source_url: str
    dest_url: str
    size: int
    chunk_size: int
    identity: Mapping[str, str] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)
    chunks: Mapping[int, ChunkRecord] = field(default_factory=dict)
    status: str = ACTIVE
    digest: str | None = None
    sha256: str | None = None
    error: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    updated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def bytes_verified(self) -> int:
        """Bytes in verified chunks."""
        total = 0
        for index in self.chunks:
            start = index * self.chunk_size
            total += max(0, min(self.chunk_size, self.size - start))
        return total


def new_session(
    source_url: str,
    dest_url: str,
    size: int,
    chunk_size: int,
    identity: Mapping[str, str],
    state: Mapping[str, Any],
) -> TransferSession:
    now = datetime.now(UTC)
    return TransferSession(
        id=new_job_id(),
        key=session_key(source_url, dest_url),
        # stored for people to read: without user names, passwords or query
        # values (pre-signed URLs carry their signature there); the key, a
        # hash, is what finds the session again
        source_url=safe_url(source_url),
        dest_url=safe_url(dest_url),
        size=size,
        chunk_size=chunk_size,
        identity=dict(identity),
        state=dict(state),
        created_at=now,
        updated_at=now,
    )


class SessionStore(ABC):
    """Durable transfer sessions. Every method is one atomic write or read."""

    @abstractmethod
    def create(self, session: TransferSession) -> TransferSession:
        """Store a new session. An older *active* session with the same key is
        marked ``cancelled`` in the same write: one active session per key."""

    @abstractmethod
    def get(self, session_id: str) -> TransferSession:
        """The session; :class:`~sclib.errors.SessionNotFound` if unknown."""

    @abstractmethod
    def find(self, key: str, status: str = ACTIVE) -> TransferSession | None:
        """The most recent session with this key and status, if any."""

    def find_active(self, key: str) -> TransferSession | None:
        """The active session with this key, if any."""
        return self.find(key, ACTIVE)

    @abstractmethod
    def record_chunk(self, session_id: str, index: int, record: ChunkRecord) -> None:
        """Record a verified chunk (recording it again replaces it)."""

    @abstractmethod
    def forget_chunks(self, session_id: str, indexes: list[int]) -> None:
        """Drop chunks found bad on re-verification, so they are sent again."""

    @abstractmethod
    def update(
        self,
        session_id: str,
        *,
        state: Mapping[str, Any] | None = None,
        status: str | None = None,
        digest: str | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> TransferSession:
        """Change the given fields (``None`` leaves a field as it is)."""

    @abstractmethod
    def list(
        self,
        *,
        status: str | None = None,
        updated_before: datetime | None = None,
        limit: int = 1000,
        key_prefix: str | None = None,
    ) -> list[TransferSession]:
        """Sessions, oldest first; for cleanup of abandoned transfers.

        ``key_prefix`` keeps only sessions whose key starts with it (the server's
        uploads use ``upload:``)."""

    def count(self, *, status: str | None = None, key_prefix: str | None = None) -> int:
        """How many sessions match (stores override this with a real count)."""
        return len(self.list(status=status, key_prefix=key_prefix, limit=10**9))

    @abstractmethod
    def delete(self, session_id: str) -> None:
        """Remove a session and its chunk records."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemorySessionStore(SessionStore):
    """Sessions in this process's memory: resumes within the process only.

    The engine's default when no store is given; also handy in tests.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, TransferSession] = {}
        self._lock = threading.Lock()

    def _require(self, session_id: str) -> TransferSession:
        try:
            return self._sessions[session_id]
        except KeyError:
            raise SessionNotFound(
                f"no transfer session with id {session_id!r}"
            ) from None

    def create(self, session: TransferSession) -> TransferSession:
        with self._lock:
            for sid, old in list(self._sessions.items()):
                if old.key == session.key and old.status == ACTIVE:
                    self._sessions[sid] = replace(old, status=CANCELLED)
            self._sessions[session.id] = session
            return session

    def get(self, session_id: str) -> TransferSession:
        with self._lock:
            return self._require(session_id)

    def find(self, key: str, status: str = ACTIVE) -> TransferSession | None:
        with self._lock:
            found = [
                s
                for s in self._sessions.values()
                if s.key == key and s.status == status
            ]
        return max(found, key=lambda s: (s.created_at, s.id)) if found else None

    def record_chunk(self, session_id: str, index: int, record: ChunkRecord) -> None:
        with self._lock:
            old = self._require(session_id)
            chunks = {**old.chunks, index: record}
            self._sessions[session_id] = replace(
                old, chunks=chunks, updated_at=datetime.now(UTC)
            )

    def forget_chunks(self, session_id: str, indexes: list[int]) -> None:
        with self._lock:
            old = self._require(session_id)
            chunks = {i: c for i, c in old.chunks.items() if i not in indexes}
            self._sessions[session_id] = replace(
                old, chunks=chunks, updated_at=datetime.now(UTC)
            )

    def update(
        self,
        session_id: str,
        *,
        state: Mapping[str, Any] | None = None,
        status: str | None = None,
        digest: str | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> TransferSession:
        with self._lock:
            old = self._require(session_id)
            changes: dict[str, Any] = {"updated_at": datetime.now(UTC)}
            if state is not None:
                changes["state"] = dict(state)
            for name, value in (
                ("status", status),
                ("digest", digest),
                ("sha256", sha256),
                ("error", error),
            ):
                if value is not None:
                    changes[name] = value
            new = replace(old, **changes)
            self._sessions[session_id] = new
            return new

    def list(
        self,
        *,
        status: str | None = None,
        updated_before: datetime | None = None,
        limit: int = 1000,
        key_prefix: str | None = None,
    ) -> list[TransferSession]:
        with self._lock:
            found = [
                s
                for s in self._sessions.values()
                if (status is None or s.status == status)
                and (updated_before is None or s.updated_at < updated_before)
                and (key_prefix is None or s.key.startswith(key_prefix))
            ]
        return sorted(found, key=lambda s: s.created_at)[:limit]

    def delete(self, session_id: str) -> None:
        with self._lock:
            self._sessions.pop(session_id, None)
