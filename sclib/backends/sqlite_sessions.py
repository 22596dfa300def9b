"""Transfer sessions in SQLite (usually the same file as the job store)."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sclib.backends.sessions import (
    ACTIVE,
    CANCELLED,
    ChunkRecord,
    SessionStore,
    TransferSession,
)
from sclib.backends.sqlite_db import SQLiteFileStore
from sclib.errors import SessionNotFound
from sclib.models import from_timestamp, to_timestamp

__all__ = ["SQLiteSessionStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS transfer_sessions (
    id         TEXT PRIMARY KEY,
    key        TEXT NOT NULL,
    source_url TEXT NOT NULL,
    dest_url   TEXT NOT NULL,
    size       INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    identity   TEXT NOT NULL DEFAULT '{}',
    state      TEXT NOT NULL DEFAULT '{}',
    status     TEXT NOT NULL,
    digest     TEXT,
    sha256     TEXT,
    error      TEXT,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS transfer_sessions_key ON transfer_sessions (key, status);
CREATE INDEX IF NOT EXISTS transfer_sessions_updated
    ON transfer_sessions (status, updated_at);
CREATE TABLE IF NOT EXISTS transfer_chunks (
    session_id TEXT NOT NULL,
    idx        INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    token      TEXT,
    PRIMARY KEY (session_id, idx)
) WITHOUT ROWID;
"""


class SQLiteSessionStore(SQLiteFileStore, SessionStore):
    """Sessions in a SQLite file; safe across threads and processes."""

    SCHEMA = _SCHEMA

    def _load(self, db: sqlite3.Connection, row: sqlite3.Row) -> TransferSession:
        chunks = {
            r["idx"]: ChunkRecord(r["digest"], r["token"])
            for r in db.execute(
                "SELECT idx, digest, token FROM transfer_chunks WHERE session_id = ?",
                (row["id"],),
            )
        }
        return TransferSession(
            id=row["id"],
            key=row["key"],
            source_url=row["source_url"],
            dest_url=row["dest_url"],
            size=row["size"],
            chunk_size=row["chunk_size"],
            identity=json.loads(row["identity"]),
            state=json.loads(row["state"]),
            chunks=chunks,
            status=row["status"],
            digest=row["digest"],
            sha256=row["sha256"],
            error=row["error"],
            created_at=from_timestamp(row["created_at"]),
            updated_at=from_timestamp(row["updated_at"]),
        )

    def create(self, session: TransferSession) -> TransferSession:
        now = to_timestamp(session.created_at)
        with self.db.write() as db:
            db.execute(
                "UPDATE transfer_sessions SET status = ?, updated_at = ? "
                "WHERE key = ? AND status = ?",
                (CANCELLED, now, session.key, ACTIVE),
            )
            db.execute(
                "INSERT INTO transfer_sessions (id, key, source_url, dest_url, size, "
                "chunk_size, identity, state, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    session.id,
                    session.key,
                    session.source_url,
                    session.dest_url,
                    session.size,
                    session.chunk_size,
                    json.dumps(dict(session.identity)),
                    json.dumps(dict(session.state)),
                    session.status,
                    now,
                    now,
                ),
            )
            db.executemany(
                "INSERT INTO transfer_chunks (session_id, idx, digest, token) "
                "VALUES (?, ?, ?, ?)",
                [(session.id, i, c.digest, c.token) for i, c in session.chunks.items()],
            )
        return self.get(session.id)

    def get(self, session_id: str) -> TransferSession:
        with self.db.write() as db:
            row = db.execute(
                "SELECT * FROM transfer_sessions WHERE id = ?", (session_id,)
            ).fetchone()
            if row is None:
                raise SessionNotFound(f"no transfer session with id {session_id!r}")
            return self._load(db, row)

    def find(self, key: str, status: str = ACTIVE) -> TransferSession | None:
        with self.db.write() as db:
            row = db.execute(
                "SELECT * FROM transfer_sessions WHERE key = ? AND status = ? "
                "ORDER BY created_at DESC, id DESC LIMIT 1",
                (key, status),
            ).fetchone()
            return None if row is None else self._load(db, row)

    def _touch(self, db: sqlite3.Connection, session_id: str) -> None:
        cur = db.execute(
            "UPDATE transfer_sessions SET updated_at = ? WHERE id = ?",
            (to_timestamp(datetime.now().astimezone()), session_id),
        )
        if cur.rowcount == 0:
            raise SessionNotFound(f"no transfer session with id {session_id!r}")

    def record_chunk(self, session_id: str, index: int, record: ChunkRecord) -> None:
        with self.db.write() as db:
            self._touch(db, session_id)
            db.execute(
                "INSERT OR REPLACE INTO transfer_chunks "
                "(session_id, idx, digest, token) VALUES (?, ?, ?, ?)",
                (session_id, index, record.digest, record.token),
            )

    def forget_chunks(self, session_id: str, indexes: list[int]) -> None:
        with self.db.write() as db:
            self._touch(db, session_id)
            db.executemany(
                "DELETE FROM transfer_chunks WHERE session_id = ? AND idx = ?",
                [(session_id, i) for i in indexes],
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
        sets: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("state", None if state is None else json.dumps(dict(state))),
            ("status", status),
            ("digest", digest),
            ("sha256", sha256),
            ("error", error),
        ):
            if value is not None:
                sets.append(f"{column} = ?")
                params.append(value)
        with self.db.write() as db:
            self._touch(db, session_id)
            if sets:
                db.execute(
                    f"UPDATE transfer_sessions SET {', '.join(sets)} WHERE id = ?",
                    [*params, session_id],
                )
        return self.get(session_id)

    def list(
        self,
        *,
        status: str | None = None,
        updated_before: datetime | None = None,
        limit: int = 1000,
        key_prefix: str | None = None,
    ) -> list[TransferSession]:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if updated_before is not None:
            clauses.append("updated_at < ?")
            params.append(to_timestamp(updated_before))
        if key_prefix is not None:
            clauses.append("substr(key, 1, ?) = ?")
            params += [len(key_prefix), key_prefix]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self.db.write() as db:
            rows = db.execute(
                f"SELECT * FROM transfer_sessions{where} ORDER BY created_at LIMIT ?",
                [*params, limit],
            ).fetchall()
            return [self._load(db, r) for r in rows]

    def count(self, *, status: str | None = None, key_prefix: str | None = None) -> int:
        clauses: list[str] = []
        params: list[Any] = []
        if status is not None:
            clauses.append("status = ?")
            params.append(status)
        if key_prefix is not None:
            clauses.append("substr(key, 1, ?) = ?")
            params += [len(key_prefix), key_prefix]
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        rows = self.db.read(f"SELECT COUNT(*) FROM transfer_sessions{where}", params)
        return int(rows[0][0])

    def delete(self, session_id: str) -> None:
        with self.db.write() as db:
            db.execute(
                "DELETE FROM transfer_chunks WHERE session_id = ?", (session_id,)
            )
            db.execute("DELETE FROM transfer_sessions WHERE id = ?", (session_id,))
