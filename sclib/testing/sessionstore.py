"""The SessionStore contract: what every transfer-session store keeps, as tests.

Subclass :class:`SessionStoreContract` and provide a ``sessions`` fixture (a fresh,
empty store), as ``tests/contract/test_session_stores.py`` does for SQLite and
MongoDB.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from sclib.errors import SessionNotFound
from sclib.transfers.sessions import (
    ChunkRecord,
    SessionStore,
    TransferSession,
    new_session,
    session_key,
)

__all__ = ["SessionStoreContract"]


def _session(
    src: str = "s3://b/k", dst: str = "/data/k", size: int = 10_000
) -> TransferSession:
    return new_session(src, dst, size, 1024, {"etag": '"abc"'}, {"temp": "/data/.k"})


class SessionStoreContract:
    """Subclass and provide a ``sessions`` fixture."""

    @pytest.fixture
    def sessions(self) -> Iterator[SessionStore]:  # pragma: no cover - overridden
        raise NotImplementedError("provide a `sessions` fixture")

    def test_create_and_get_round_trip(self, sessions: SessionStore) -> None:
        """A stored session comes back with every field as given."""
        made = sessions.create(_session())
        got = sessions.get(made.id)
        assert got.key == session_key("s3://b/k", "/data/k")
        assert (got.size, got.chunk_size, got.status) == (10_000, 1024, "active")
        assert got.identity == {"etag": '"abc"'}
        assert got.state == {"temp": "/data/.k"}
        assert got.chunks == {}
        with pytest.raises(SessionNotFound):
            sessions.get("nope")

    def test_chunks_are_recorded_and_forgotten(self, sessions: SessionStore) -> None:
        """Chunks recorded one by one come back; forgotten ones are gone."""
        made = sessions.create(_session())
        sessions.record_chunk(made.id, 0, ChunkRecord("d0"))
        sessions.record_chunk(made.id, 3, ChunkRecord("d3", '"etag3"'))
        sessions.record_chunk(made.id, 0, ChunkRecord("d0-again"))
        got = sessions.get(made.id)
        assert got.chunks == {
            0: ChunkRecord("d0-again"),
            3: ChunkRecord("d3", '"etag3"'),
        }
        assert got.bytes_verified == 2048
        sessions.forget_chunks(made.id, [0])
        assert set(sessions.get(made.id).chunks) == {3}
        with pytest.raises(SessionNotFound):
            sessions.record_chunk("nope", 0, ChunkRecord("x"))

    def test_concurrent_chunk_records_are_all_kept(
        self, sessions: SessionStore
    ) -> None:
        """Eight threads recording different chunks lose none of them."""
        made = sessions.create(_session(size=200 * 1024))

        def record(start: int) -> None:
            for i in range(start, 200, 8):
                sessions.record_chunk(made.id, i, ChunkRecord(f"d{i}"))

        threads = [threading.Thread(target=record, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(sessions.get(made.id).chunks) == list(range(200))

    def test_one_active_session_per_key(self, sessions: SessionStore) -> None:
        """A new session for the same transfer retires the old one."""
        old = sessions.create(_session())
        new = sessions.create(_session())
        found = sessions.find_active(old.key)
        assert found is not None and found.id == new.id
        assert sessions.get(old.id).status == "cancelled"
        assert sessions.find_active(session_key("x", "y")) is None

    def test_find_by_status_returns_the_latest(self, sessions: SessionStore) -> None:
        """find(key, status) returns the newest session in that status."""
        first = sessions.create(_session())
        sessions.update(first.id, status="completed", digest="a" * 64)
        second = sessions.create(_session())
        sessions.update(second.id, status="completed", digest="b" * 64)
        found = sessions.find(first.key, "completed")
        assert found is not None and found.id == second.id
        assert sessions.find(first.key) is None  # none active

    def test_update_changes_only_given_fields(self, sessions: SessionStore) -> None:
        """update() sets status, digest, state; other fields keep their values."""
        made = sessions.create(_session())
        sessions.record_chunk(made.id, 1, ChunkRecord("d1"))
        done = sessions.update(
            made.id,
            status="completed",
            digest="f" * 64,
            state={"temp": "/data/.k", "resumed": True},
        )
        assert done.status == "completed" and done.digest == "f" * 64
        assert done.state == {"temp": "/data/.k", "resumed": True}
        assert done.chunks == {1: ChunkRecord("d1")}
        assert done.identity == {"etag": '"abc"'}
        assert sessions.find_active(made.key) is None
        with pytest.raises(SessionNotFound):
            sessions.update("nope", status="failed")

    def test_list_and_delete(self, sessions: SessionStore) -> None:
        """list() filters by status and age; delete() removes a session."""
        a = sessions.create(_session("s3://b/a", "/d/a"))
        b = sessions.create(_session("s3://b/b", "/d/b"))
        sessions.update(b.id, status="completed")
        assert [s.id for s in sessions.list(status="active")] == [a.id]
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert {s.id for s in sessions.list(updated_before=later)} == {a.id, b.id}
        assert sessions.list(updated_before=datetime(2000, 1, 1, tzinfo=UTC)) == []
        sessions.delete(a.id)
        with pytest.raises(SessionNotFound):
            sessions.get(a.id)

    def test_list_by_key_prefix(self, sessions: SessionStore) -> None:
        """list(key_prefix=...) keeps only sessions whose key starts with it; the
        prefix is literal text, not a pattern."""
        from dataclasses import replace

        plain = sessions.create(_session("s3://b/a", "/d/a"))
        tagged = sessions.create(replace(_session("s3://b/c", "/d/c"), key="up:1"))
        odd = sessions.create(replace(_session("s3://b/d", "/d/d"), key="up%_x"))
        assert [s.id for s in sessions.list(key_prefix="up:")] == [tagged.id]
        assert [s.id for s in sessions.list(key_prefix="up%_")] == [odd.id]
        assert {s.id for s in sessions.list()} == {plain.id, tagged.id, odd.id}
        assert sessions.list(key_prefix="up.") == []
        assert sessions.count(key_prefix="up") == 2
        assert sessions.count(status="active") == 3
        assert sessions.count(status="completed", key_prefix="up:") == 0
