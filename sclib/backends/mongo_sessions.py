"""Transfer sessions in MongoDB: one document per session, chunks embedded.

Each chunk is recorded with one ``$set`` on ``chunks.<index>``, atomic per
document, so concurrent chunk writers never lose each other's records.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sclib.backends.mongo_common import (
    _DRIVER_ERRORS,
    _again,
    _aware,
    _backend_error,
    _create_index,
)
from sclib.backends.sessions import (
    ACTIVE,
    CANCELLED,
    ChunkRecord,
    SessionStore,
    TransferSession,
)
from sclib.errors import ConfigurationError, SessionNotFound

try:
    import pymongo
    from pymongo.errors import DuplicateKeyError
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - depends on the install
    from sclib.errors import MissingDependency

    raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc

__all__ = ["MongoSessionStore"]


def _doc_to_session(doc: Mapping[str, Any]) -> TransferSession:
    created = _aware(doc["created_at"])
    updated = _aware(doc["updated_at"])
    assert created is not None and updated is not None
    return TransferSession(
        id=doc["_id"],
        key=doc["key"],
        source_url=doc["source_url"],
        dest_url=doc["dest_url"],
        size=doc["size"],
        chunk_size=doc["chunk_size"],
        identity=doc.get("identity") or {},
        state=doc.get("state") or {},
        chunks={
            int(k): ChunkRecord(v["digest"], v.get("token"))
            for k, v in (doc.get("chunks") or {}).items()
        },
        status=doc["status"],
        digest=doc.get("digest"),
        sha256=doc.get("sha256"),
        error=doc.get("error"),
        created_at=created,
        updated_at=updated,
    )


class MongoSessionStore(SessionStore):
    """Sessions in a MongoDB collection (default ``upload_sessions``)."""

    def __init__(
        self,
        client: Any,
        *,
        database: str = "scientistcloud",
        collection: str = "upload_sessions",
        write_concern: Mapping[str, Any] | None = None,
        owns_client: bool = False,
    ) -> None:
        concern = dict(write_concern or {"w": "majority", "j": True})
        self.client = client
        self._owns_client = owns_client
        self.coll = client[database].get_collection(
            collection, write_concern=WriteConcern(**concern)
        )
        try:
            for keys, name in (
                ([("key", 1), ("status", 1)], "key_status"),
                ([("status", 1), ("updated_at", 1)], "updated"),
            ):
                _create_index(self.coll, keys, name=name)
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "create indexes", "session store") from exc

    @classmethod
    def from_url(
        cls, url: str, *, database: str | None = None, **options: Any
    ) -> MongoSessionStore:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigurationError(f"malformed MongoDB URL {url!r}: no host")
        client: Any = pymongo.MongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        name = database or parts.path.lstrip("/") or "scientistcloud"
        return cls(client, database=name, owns_client=True, **options)

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _find(self, query: Mapping[str, Any], operation: str) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] | None = self.coll.find_one(
                query, sort=[("created_at", -1), ("_id", -1)]
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation, "session store") from exc
        return doc

    def create(self, session: TransferSession) -> TransferSession:
        """Store ``session``, retiring the active ones of its key.

        Two writes without a transaction, so this can fail after its insert was
        stored (a write concern error, a dropped answer pymongo's one retry did not
        recover). Calling it again with the same session then finds it and does
        not retire it: the retirement skips the session's own id, and an insert
        refused for that id with the same key means the first call stored it.
        """
        now = session.created_at
        try:
            # idempotent, and not retried by pymongo (a multi-document write)
            _again(
                partial(
                    self.coll.update_many,
                    {"key": session.key, "status": ACTIVE, "_id": {"$ne": session.id}},
                    {"$set": {"status": CANCELLED, "updated_at": now}},
                )
            )
            self._insert(
                {
                    "_id": session.id,
                    "key": session.key,
                    "source_url": session.source_url,
                    "dest_url": session.dest_url,
                    "size": session.size,
                    "chunk_size": session.chunk_size,
                    "identity": dict(session.identity),
                    "state": dict(session.state),
                    "chunks": {
                        str(i): {"digest": c.digest, "token": c.token}
                        for i, c in session.chunks.items()
                    },
                    "status": session.status,
                    "digest": None,
                    "sha256": None,
                    "error": None,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "create", "session store") from exc
        return self._get(session.id, "create")

    def _insert(self, doc: dict[str, Any]) -> None:
        try:
            self.coll.insert_one(doc)
        except DuplicateKeyError:
            # this session, stored by an earlier call whose answer was an error
            # (see create); another session of the same id would be a collision
            # of 128-bit random ids, or a caller's mistake: refused
            existing = self.coll.find_one({"_id": doc["_id"]}, {"key": True})
            if existing is None or existing.get("key") != doc["key"]:
                raise

    def get(self, session_id: str) -> TransferSession:
        return self._get(session_id, "get")

    def _get(self, session_id: str, operation: str) -> TransferSession:
        doc = self._find({"_id": session_id}, operation)
        if doc is None:
            raise SessionNotFound(f"no transfer session with id {session_id!r}")
        return _doc_to_session(doc)

    def find(self, key: str, status: str = ACTIVE) -> TransferSession | None:
        doc = self._find({"key": key, "status": status}, "find")
        return None if doc is None else _doc_to_session(doc)

    def _update(
        self, session_id: str, update: Mapping[str, Any], operation: str
    ) -> None:
        try:
            res = self.coll.update_one({"_id": session_id}, update)
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation, "session store") from exc
        if res.matched_count == 0:
            raise SessionNotFound(f"no transfer session with id {session_id!r}")

    def record_chunk(self, session_id: str, index: int, record: ChunkRecord) -> None:
        self._update(
            session_id,
            {
                "$set": {
                    f"chunks.{index}": {"digest": record.digest, "token": record.token},
                    "updated_at": datetime.now(UTC),
                }
            },
            "record_chunk",
        )

    def forget_chunks(self, session_id: str, indexes: list[int]) -> None:
        self._update(
            session_id,
            {
                "$unset": {f"chunks.{i}": "" for i in indexes},
                "$set": {"updated_at": datetime.now(UTC)},
            },
            "forget_chunks",
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
        sets: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        for name, value in (
            ("state", None if state is None else dict(state)),
            ("status", status),
            ("digest", digest),
            ("sha256", sha256),
            ("error", error),
        ):
            if value is not None:
                sets[name] = value
        self._update(session_id, {"$set": sets}, "update")
        return self._get(session_id, "update")

    def list(
        self,
        *,
        status: str | None = None,
        updated_before: datetime | None = None,
        limit: int = 1000,
        key_prefix: str | None = None,
    ) -> list[TransferSession]:
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = status
        if updated_before is not None:
            query["updated_at"] = {"$lt": updated_before}
        if key_prefix is not None:
            query["key"] = {"$regex": "^" + re.escape(key_prefix)}
        try:
            docs = self.coll.find(query).sort("created_at", 1).limit(limit)
            return [_doc_to_session(d) for d in docs]
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "list", "session store") from exc

    def count(self, *, status: str | None = None, key_prefix: str | None = None) -> int:
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = status
        if key_prefix is not None:
            query["key"] = {"$regex": "^" + re.escape(key_prefix)}
        try:
            return int(self.coll.count_documents(query))
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "count", "session store") from exc

    def delete(self, session_id: str) -> None:
        try:
            self.coll.delete_one({"_id": session_id})
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "delete", "session store") from exc
