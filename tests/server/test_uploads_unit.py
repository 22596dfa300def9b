"""UploadManager on a real data folder, over SQLite and MongoDB, without HTTP."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import blake3
import pytest

from sclib.backends.mongo import MongoJobStore
from sclib.backends.mongo_sessions import MongoSessionStore
from sclib.datasets.fields import (
    parse_fields,
    safe_filename,
    safe_join,
    safe_relative_path,
)
from sclib.errors import (
    ChecksumMismatch,
    InvalidInput,
    TooLarge,
    UploadBusy,
    UploadConflict,
)
from sclib.jobs.queue import JobQueue
from sclib.server.uploads import LARGE, TUS, UploadManager, UploadNotFound
from sclib.testing import ManualClock
from sclib.transfers.hashing import chunk_cv
from sclib.transfers.sessions import SessionStore, open_session_store
from tests import hashing_modes

FIELDS = parse_fields({"dataset_name": "d", "sensor": "IDX"})
OWNER = "alice@example.org"


def _stores(kind: str, tmp_path: Path) -> tuple[SessionStore, JobQueue]:
    """Real SQLite files, or pymongo against mongomock (an in-process stand-in:
    no MongoDB server can run on the test machines)."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'sclib.db'}"
        return open_session_store(url), JobQueue.open(url)
    mongomock = pytest.importorskip("mongomock")
    client = mongomock.MongoClient(tz_aware=True)
    sessions = MongoSessionStore(client, write_concern={"w": 1})
    jobs = MongoJobStore(client, database="scientistcloud", write_concern={"w": 1})
    return sessions, JobQueue(jobs)


@pytest.fixture(params=["sqlite", pytest.param("mongo", marks=pytest.mark.mongo)])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def manager(backend: str, tmp_path: Path) -> UploadManager:
    sessions, queue = _stores(backend, tmp_path)
    return UploadManager(
        sessions,
        queue,
        tmp_path / "data",
        chunk_size=1024,
        max_chunk_size=4096,
        max_upload_size=1024**2,
    )


def large(manager: UploadManager, size: int, **kw: object) -> str:
    return manager.create(
        protocol=LARGE,
        owner=OWNER,
        filename="f.bin",
        size=size,
        fields=FIELDS,
        dataset_uuid="a" * 32,
        **kw,  # type: ignore[arg-type]
    ).id


def put(
    manager: UploadManager, up: str, index: int, data: bytes, *, cv: bool = False
) -> None:
    """Send one chunk with its BLAKE3, or with ``cv`` its chaining value."""
    if cv:
        offset = index * manager.get(up).chunk_size
        write = manager.begin_chunk(up, OWNER, index, {"blake3-cv"})
        write.write(data)
        manager.finish_chunk(write, index, {"blake3-cv": chunk_cv(data, offset).hex()})
        return
    write = manager.begin_chunk(up, OWNER, index, {"blake3"})
    write.write(data)
    manager.finish_chunk(write, index, {"blake3": blake3.blake3(data).hexdigest()})


def test_one_writer_per_chunk_and_whole_upload_locks_exclude_chunks(
    manager: UploadManager,
) -> None:
    """A chunk being written cannot be written again at the same time (423), other
    chunks can; completion (whole-upload lock) waits for no one."""
    up = large(manager, 3000)
    held = manager.begin_chunk(up, OWNER, 0, set())
    with pytest.raises(UploadBusy):
        manager.begin_chunk(up, OWNER, 0, set())
    other = manager.begin_chunk(up, OWNER, 1, set())
    other.close()
    with pytest.raises(UploadBusy):
        manager.complete(up, OWNER)
    held.close()
    again = manager.begin_chunk(up, OWNER, 0, set())  # released: free again
    again.close()


def test_chunk_locks_hold_across_processes(manager: UploadManager) -> None:
    """A chunk held by another process is busy here; when that process is killed,
    the lock goes with it."""
    up = large(manager, 3000)
    lock_file = manager.staging_dir(up) / "lock"
    code = textwrap.dedent(
        f"""
        import sys, time
        from pathlib import Path
        from sclib.transfers.locks import lock_chunk
        lock = lock_chunk(Path({str(lock_file)!r}), "u", 2)
        print("held", flush=True)
        time.sleep(60)
        """
    )
    with subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "held"
            with pytest.raises(UploadBusy):
                manager.begin_chunk(up, OWNER, 2, set())
            manager.begin_chunk(up, OWNER, 1, set()).close()
        finally:
            child.kill()
            child.wait()
    manager.begin_chunk(up, OWNER, 2, set()).close()


def test_a_chunk_is_recorded_only_when_length_and_digest_match(
    manager: UploadManager,
) -> None:
    """Too long raises TooLarge while streaming; too short or a wrong digest fail
    at the end; none of them records the chunk. Chaining-value digests are refused
    up front for chunks that are not a power of two long."""
    up = large(manager, 1500)
    w = manager.begin_chunk(up, OWNER, 1, {"blake3"})
    with pytest.raises(TooLarge):
        w.write(b"x" * 477)  # chunk 1 holds 476 bytes
    w.close()
    w = manager.begin_chunk(up, OWNER, 1, {"blake3"})
    w.write(b"x" * 475)
    with pytest.raises(InvalidInput, match="expected 476"):
        manager.finish_chunk(w, 1, {})
    w = manager.begin_chunk(up, OWNER, 1, {"blake3"})
    w.write(b"x" * 476)
    with pytest.raises(ChecksumMismatch):
        manager.finish_chunk(w, 1, {"blake3": "0" * 64})
    assert manager.get(up).missing_chunks == [0, 1]
    odd = large(manager, 3000, chunk_size=1500)  # chunks are not BLAKE3 subtrees
    with pytest.raises(InvalidInput, match="power-of-two chunk size"):
        manager.begin_chunk(odd, OWNER, 1, {"blake3-cv"})
    manager.begin_chunk(odd, OWNER, 1, {"blake3"}).close()  # the lock was freed


def test_complete_commits_once_and_repairs_a_crash_after_the_rename(
    manager: UploadManager,
) -> None:
    """If the process died after moving the file into place but before recording
    the result, completing again finishes the job instead of failing."""
    data = os.urandom(2500)
    up = large(manager, len(data))
    for i in range(3):
        put(manager, up, i, data[i * 1024 : (i + 1) * 1024])
    # simulate the crash: the commit's first half (digest recorded, file moved)
    upload = manager.get(up)
    digest = blake3.blake3(data).hexdigest()
    session = manager.sessions.get(up)
    manager.sessions.update(
        up, state={**session.state, "committing": {"blake3": digest}}
    )
    final = manager.final_path(upload)
    final.parent.mkdir(parents=True)
    os.replace(manager.staging_file(up), final)
    result = manager.complete(up, OWNER)
    assert result["file_blake3"] == digest
    assert blake3.blake3(final.read_bytes()).hexdigest() == digest
    assert manager.complete(up, OWNER) == result
    assert manager.queue.stats()["by_type"] == {"upload": 1}


def test_tus_offsets_must_match_and_bodies_stay_in_bounds(
    manager: UploadManager,
) -> None:
    """PATCH at the wrong offset is a conflict; a body past the length is refused;
    a broken-off body keeps what arrived only when asked to."""
    up = manager.create(
        protocol=TUS,
        owner=OWNER,
        filename="t.bin",
        size=100,
        fields=FIELDS,
        dataset_uuid="b" * 32,
    ).id
    with pytest.raises(UploadConflict, match="offset"):
        manager.begin_patch(up, OWNER, 10, 10, set())
    with pytest.raises(TooLarge):
        manager.begin_patch(up, OWNER, 0, 101, set())
    w = manager.begin_patch(up, OWNER, 0, None, set())
    w.write(b"a" * 40)
    manager.abort_patch(w, keep=True)
    assert manager.get(up).offset == 40
    w = manager.begin_patch(up, OWNER, 40, None, {"sha1"})
    w.write(b"b" * 30)
    manager.abort_patch(w, keep=False)
    assert manager.get(up).offset == 40
    w = manager.begin_patch(up, OWNER, 40, 60, set())
    with pytest.raises(UploadBusy):
        manager.begin_patch(up, OWNER, 40, 60, set())
    w.write(b"c" * 60)
    assert manager.finish_patch(w, None).offset == 100
    result = manager.complete(up, OWNER)
    path = manager.final_path(manager.get(up))
    assert path.read_bytes() == b"a" * 40 + b"c" * 60
    assert result["file_size"] == 100


def test_expire_reports_first_then_removes_abandoned_uploads(
    backend: str, tmp_path: Path
) -> None:
    """Uploads untouched for longer than the expiry are listed by a dry run, then
    removed (bytes and all) by a real run; fresh ones stay."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    clock = ManualClock(start)
    sessions, queue = _stores(backend, tmp_path)
    manager = UploadManager(
        sessions,
        queue,
        tmp_path / "data",
        chunk_size=1024,
        expiry=timedelta(hours=1),
        clock=clock,
    )
    old = large(manager, 5000)  # last touched three hours "ago"
    clock.advance(3 * 3600)
    fresh_clock_upload = manager.create(
        protocol=LARGE,
        owner=OWNER,
        filename="new.bin",
        size=10,
        fields=FIELDS,
        dataset_uuid="c" * 32,
    ).id
    report = manager.expire(dry_run=True)
    assert [u.id for u in report] == [old]
    assert manager.staging_dir(old).exists()
    removed = manager.expire(dry_run=False)
    assert [u.id for u in removed] == [old]
    assert not manager.staging_dir(old).exists()
    assert manager.get(old).status == "cancelled"
    with pytest.raises(UploadConflict):
        manager.begin_chunk(old, OWNER, 0, set())
    assert manager.get(fresh_clock_upload).status == "active"


def test_other_owners_uploads_do_not_exist(manager: UploadManager) -> None:
    """get() with an owner hides other owners' uploads behind UploadNotFound."""
    up = large(manager, 10)
    with pytest.raises(UploadNotFound):
        manager.get(up, "bob@example.org")
    with pytest.raises(UploadNotFound):
        manager.begin_chunk(up, "bob@example.org", 0, set())
    assert manager.get(up).owner == OWNER


@pytest.mark.parametrize(
    "value",
    ["../x", "a/../../x", "/etc", "C:/x", "a\\b", "a//b", "./a", "a/\x00", "."],
)
def test_escaping_relative_paths_are_refused(value: str) -> None:
    """Anything that is not a plain relative path of ordinary names is refused."""
    with pytest.raises(InvalidInput):
        safe_relative_path(value)


@pytest.mark.parametrize("value", ["", "..", ".", "a/b", "a\\b", " ", "x\ny"])
def test_bad_filenames_are_refused(value: str) -> None:
    """File names are single ordinary names."""
    with pytest.raises(InvalidInput):
        safe_filename(value)


def test_safe_join_refuses_a_symlink_that_leaves(tmp_path: Path) -> None:
    """A link inside the dataset folder pointing outside is caught on resolve."""
    root = tmp_path / "ds"
    root.mkdir()
    (root / "link").symlink_to(tmp_path)
    with pytest.raises(InvalidInput, match="leaves"):
        safe_join(root, "link", "x.bin")
    assert safe_join(root, "sub", "x.bin") == root / "sub" / "x.bin"


def test_a_bad_resend_never_destroys_the_stored_chunk(
    manager: UploadManager,
) -> None:
    """A recorded chunk sent again goes to a file of its own first: bytes that do
    not verify are refused and the stored copy stays recorded and intact (the
    original checked the hash before writing); the same bytes again change
    nothing; other bytes that verify replace the stored ones."""
    data = os.urandom(2048)
    up = large(manager, len(data))
    put(manager, up, 0, data[:1024])
    put(manager, up, 1, data[1024:])
    record = manager.sessions.get(up).chunks[0]
    w = manager.begin_chunk(up, OWNER, 0, {"blake3"})
    w.write(b"X" * 1024)
    with pytest.raises(ChecksumMismatch):
        manager.finish_chunk(w, 0, {"blake3": blake3.blake3(data[:1024]).hexdigest()})
    assert manager.get(up).missing_chunks == []
    assert manager.sessions.get(up).chunks[0] == record
    staging = manager.staging_file(up)
    assert staging.read_bytes()[:1024] == data[:1024]
    assert [p.name for p in staging.parent.iterdir() if "again" in p.name] == []
    put(manager, up, 0, data[:1024])  # the same bytes: nothing changes
    assert manager.sessions.get(up).chunks[0] == record
    other = os.urandom(1024)
    put(manager, up, 0, other)  # other bytes that verify replace the stored ones
    assert staging.read_bytes()[:1024] == other
    result = manager.complete(up, OWNER)
    assert result["file_blake3"] == blake3.blake3(other + data[1024:]).hexdigest()


def test_a_file_already_in_the_dataset_is_never_replaced(
    manager: UploadManager,
) -> None:
    """A second upload of the same name into the same dataset is a conflict, at
    initiate when the file is there already, at completion when it arrived in
    between; the first file stays as it was."""
    first = large(manager, 1000)
    put(manager, first, 0, b"1" * 1000)
    second = large(manager, 1000)  # initiated before the first completed
    put(manager, second, 0, b"2" * 1000)
    manager.complete(first, OWNER)
    with pytest.raises(UploadConflict, match="already has"):
        manager.complete(second, OWNER)
    with pytest.raises(UploadConflict, match="already has"):
        large(manager, 1000)
    path = manager.final_path(manager.get(first))
    assert path.read_bytes() == b"1" * 1000
    assert manager.get(second).status == "active"  # nothing lost: rename and retry


def test_finished_uploads_answer_conflicts_not_crashes(
    manager: UploadManager,
) -> None:
    """After cancel or completion the staging folder is gone: further writes,
    cancels and completes are clean conflicts (or the stored answer)."""
    up = large(manager, 10)
    manager.cancel(up, OWNER)
    for call in (
        lambda: manager.cancel(up, OWNER),
        lambda: manager.complete(up, OWNER),
        lambda: manager.begin_chunk(up, OWNER, 0, set()),
    ):
        with pytest.raises(UploadConflict):
            call()
    done = large(manager, 10)
    put(manager, done, 0, b"d" * 10)
    result = manager.complete(done, OWNER)
    assert manager.complete(done, OWNER) == result
    with pytest.raises(UploadConflict):
        manager.begin_chunk(done, OWNER, 0, set())


def test_expiry_skips_busy_uploads_and_finishes_interrupted_commits(
    backend: str, tmp_path: Path
) -> None:
    """An old upload still being written is left alone (the sweep goes on), and
    one whose commit was cut short is committed, not deleted."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=3)
    clock = ManualClock(start)
    sessions, queue = _stores(backend, tmp_path)
    manager = UploadManager(
        sessions, queue, tmp_path / "data", chunk_size=1024,
        expiry=timedelta(hours=1), clock=clock,
    )  # fmt: skip
    busy = large(manager, 10)
    interrupted = large(manager, 10)
    put(manager, interrupted, 0, b"i" * 10)
    plain = large(manager, 10)
    # the interrupted commit: digests recorded, file linked, then a crash
    upload = manager.get(interrupted)
    digest = blake3.blake3(b"i" * 10).hexdigest()
    state = manager.sessions.get(interrupted).state
    manager.sessions.update(
        interrupted, state={**state, "committing": {"blake3": digest}}
    )
    final = manager.final_path(upload)
    final.parent.mkdir(parents=True)
    os.link(manager.staging_file(interrupted), final)
    clock.advance(5 * 3600)  # past the stores' own (wall-clock) update stamps
    held = manager.begin_chunk(busy, OWNER, 0, set())
    try:
        removed = manager.expire(dry_run=False)
    finally:
        held.close()
    assert [u.id for u in removed] == [plain]
    assert manager.get(busy).status == "active"
    assert manager.get(interrupted).status == "completed"
    assert final.read_bytes() == b"i" * 10
    assert manager.queue.stats()["by_type"] == {"upload": 1}


def _reboot(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make this process see another boot id, as after an operating-system crash
    and restart (simulated: the test machine cannot be rebooted)."""
    from sclib.transfers import staging

    monkeypatch.setattr(staging, "_boot_id", lambda: "another-boot")


@pytest.mark.parametrize("cv", [False, True], ids=["blake3", "blake3-cv"])
@pytest.mark.parametrize("declared", [False, True], ids=["no-digest", "file-blake3"])
def test_completion_reads_every_chunk_back(
    manager: UploadManager,
    monkeypatch: pytest.MonkeyPatch,
    declared: bool,
    cv: bool,
) -> None:
    """Chunks are flushed to disk once, at completion, after each was read back:
    a chunk whose bytes on disk are not what was received (as after an operating
    system crash) is asked for again, and nothing is committed until it is. With
    the whole file's BLAKE3 declared, one pass finds the mismatch first. Chunks
    sent with chaining values are recorded and checked by them (and, as the
    machine rebooted since they were written, read back too)."""
    if cv:
        hashing_modes.require_tree()
    data = os.urandom(3000)
    expected = {"blake3": blake3.blake3(data).hexdigest()} if declared else None
    up = large(manager, len(data), chunk_size=1024)
    for i in range(3):
        put(manager, up, i, data[i * 1024 : (i + 1) * 1024], cv=cv)
    records = [c.digest for c in manager.sessions.get(up).chunks.values()]
    assert all(d.startswith("cv:") == cv for d in records)
    _reboot(monkeypatch)
    with open(manager.staging_file(up), "r+b") as f:  # page lost: zeros on disk
        f.seek(1024)
        f.write(bytes(1024))
    with pytest.raises(UploadConflict, match=r"chunks \[1\]"):
        manager.complete(up, OWNER, expected=expected)
    assert manager.get(up).missing_chunks == [1]
    assert not manager.final_path(manager.get(up)).exists()
    put(manager, up, 1, data[1024:2048], cv=cv)
    result = manager.complete(up, OWNER, expected=expected)
    assert result["file_blake3"] == blake3.blake3(data).hexdigest()


@pytest.mark.parametrize(
    "case",
    [
        "same-boot",
        "rebooted",
        "one-plain-chunk",
        "sha256-asked",
        "recreated",
        "not-local",
        "flush-failed",
    ],
)
def test_completion_merges_chaining_values_without_reading_back(
    manager: UploadManager, monkeypatch: pytest.MonkeyPatch, case: str
) -> None:
    """When every chunk was recorded with its chaining value, into this staging
    file, since this machine booted, completion merges the file's BLAKE3 from the
    records and reads nothing back (no crash can have lost a byte). After a
    reboot, with a chunk recorded by its plain BLAKE3, with SHA-256 asked for,
    with the staging file replaced, on a filesystem not known to be local (a
    remount could drop pages without a reboot; simulated by an empty list of
    local filesystem types), or after a failed flush of the file, it reads the
    file back as before."""
    hashing_modes.require_tree()
    from sclib.transfers import receive_commit as uploads_module
    from sclib.transfers import staging as staging_module

    if case == "not-local":
        monkeypatch.setattr(staging_module, "_LOCAL_FS", set())
    data = os.urandom(4000)
    up = large(manager, len(data), chunk_size=1024)
    for i in range(4):
        cv = case != "one-plain-chunk" or i > 0
        put(manager, up, i, data[i * 1024 : (i + 1) * 1024], cv=cv)
    reads: list[str] = []
    real_hash_file, real_verify = uploads_module.hash_file, uploads_module.verify_chunks
    monkeypatch.setattr(
        uploads_module,
        "hash_file",
        lambda *a, **k: reads.append("hash_file") or real_hash_file(*a, **k),
    )
    monkeypatch.setattr(
        uploads_module,
        "verify_chunks",
        lambda *a, **k: reads.append("verify_chunks") or real_verify(*a, **k),
    )
    expected = {"blake3": blake3.blake3(data).hexdigest()}
    if case == "sha256-asked":
        expected["sha256"] = hashlib.sha256(data).hexdigest()
    if case == "rebooted":
        _reboot(monkeypatch)
    if case == "recreated":  # same bytes, another file: its records do not vouch
        staging = manager.staging_file(up)
        copy = staging.with_name("copy")
        copy.write_bytes(staging.read_bytes())
        os.replace(copy, staging)
    if case == "flush-failed":  # a write-back error, reported once
        real_fsync = uploads_module.fsync_file

        def failing(path: Path) -> None:
            monkeypatch.setattr(uploads_module, "fsync_file", real_fsync)
            raise OSError(5, "Input/output error")

        monkeypatch.setattr(uploads_module, "fsync_file", failing)
        with pytest.raises(OSError, match="Input/output"):
            manager.complete(up, OWNER, expected=expected)
        assert reads == []  # that first try trusted the records
    result = manager.complete(up, OWNER, expected=expected)
    assert result["file_blake3"] == expected["blake3"]
    assert (reads == []) == (case == "same-boot")


def test_chaining_values_this_process_cannot_check_are_asked_again(
    manager: UploadManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server without sclib_blake3tree completing chunks recorded with
    chaining values asks for them again (409) instead of failing with an error.
    (The module's absence is simulated: it is installed here.)"""
    hashing_modes.require_tree()
    from sclib.transfers import hashing

    data = os.urandom(2048)
    up = large(manager, len(data), chunk_size=1024)
    put(manager, up, 0, data[:1024], cv=True)
    put(manager, up, 1, data[1024:])
    monkeypatch.setattr(hashing, "_tree_module", lambda: None)
    with pytest.raises(UploadConflict, match=r"chunks \[0\]"):
        manager.complete(up, OWNER)
    assert manager.get(up).missing_chunks == [0]
    put(manager, up, 0, data[:1024])  # sent again with its plain BLAKE3
    assert manager.complete(up, OWNER)["file_blake3"] == (
        blake3.blake3(data).hexdigest()
    )


def test_a_chunk_whose_staging_file_is_gone_is_refused(manager: UploadManager) -> None:
    """A chunk for an upload whose staging file was deleted is a conflict; the
    file is not made again empty (other chunks' records would vouch for it)."""
    up = large(manager, 2048, chunk_size=1024)
    manager.staging_file(up).unlink()
    with pytest.raises(UploadConflict, match="staging file"):
        manager.begin_chunk(up, OWNER, 0, {"blake3"})
    assert not manager.staging_file(up).exists()
    with pytest.raises(UploadConflict, match="staging file"):  # not UploadBusy
        manager.begin_chunk(up, OWNER, 0, {"blake3"})


def test_a_chaining_value_for_another_offset_is_refused(
    manager: UploadManager,
) -> None:
    """A chunk's chaining value binds its place in the file: the right bytes sent
    with the digest they would have at another offset are a checksum mismatch,
    and the chunk stays missing."""
    hashing_modes.require_tree()
    data = os.urandom(2048)
    up = large(manager, len(data), chunk_size=1024)
    write = manager.begin_chunk(up, OWNER, 1, {"blake3-cv"})
    write.write(data[1024:])
    with pytest.raises(ChecksumMismatch, match="blake3-cv"):
        manager.finish_chunk(write, 1, {"blake3-cv": chunk_cv(data[1024:], 0).hex()})
    assert manager.get(up).missing_chunks == [0, 1]


def test_the_default_chunk_size_grows_for_huge_files(
    manager: UploadManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a chunk size from the client, the server's default doubles until
    the file fits in MAX_CHUNKS chunks; a chunk size the client asks for that
    needs more is refused, naming the smallest that would do."""
    import sclib.transfers.receive_base as uploads

    monkeypatch.setattr(uploads, "MAX_CHUNKS", 10)
    up = manager.get(large(manager, 30_000))  # default 1 KiB, at most 4 KiB here
    assert up.chunk_size == 4096 and up.total_chunks == 8
    with pytest.raises(InvalidInput, match="at least 3000"):
        manager.create(
            protocol=LARGE,
            owner=OWNER,
            filename="g.bin",
            size=30_000,
            fields=FIELDS,
            dataset_uuid="e" * 32,
            chunk_size=1024,
        )


def test_add_to_existing_finds_a_migrated_dataset_by_its_dashed_uuid(
    manager: UploadManager,
) -> None:
    """Datasets migrated from the old system keep their dashed uuid; an upload
    adding to one (given in either spelling) goes to that dataset, under the uuid
    it is stored with; another user's is not found."""
    from sclib.errors import NotFound
    from sclib.jobtypes import JobType

    dashed = "550e8400-e29b-41d4-a716-446655440000"
    manager.queue.enqueue(JobType.GOOGLE_SYNC, {}, dataset_uuid=dashed, owner=OWNER)
    for given in (dashed, dashed.replace("-", ""), dashed.upper()):
        fields = parse_fields(
            {
                **FIELDS.model_dump(),
                "dataset_identifier": given,
                "add_to_existing": True,
            }
        )
        assert manager.resolve_dataset(fields, OWNER, admin=False) == dashed
        with pytest.raises(NotFound, match="Dataset not found"):
            manager.resolve_dataset(fields, "bob@example.org", admin=False)
    assert manager.resolve_dataset(fields, "root@example.org", admin=True) == dashed


# -- tus concatenation -----------------------------------------------------------------


def partial(manager: UploadManager, data: bytes, owner: str = OWNER) -> str:
    """A complete tus partial upload holding ``data``."""
    up = manager.create(
        protocol=TUS,
        owner=owner,
        filename="part",
        size=len(data),
        fields=None,
        dataset_uuid=None,
        concat={"kind": "partial"},
    ).id
    if data:
        w = manager.begin_patch(up, owner, 0, len(data), set())
        w.write(data)
        manager.finish_patch(w, None)
    return up


def final_upload(
    manager: UploadManager, parts: list[str], name: str, dataset: str = "f" * 32
) -> str:
    size = sum(manager.get(p).offset for p in parts)
    return manager.create(
        protocol=TUS,
        owner=OWNER,
        filename=name,
        size=size,
        fields=FIELDS,
        dataset_uuid=dataset,
        concat={"kind": "final", "parts": parts},
    ).id


def test_concatenated_parts_cannot_be_joined_twice_even_before_release(
    manager: UploadManager,
) -> None:
    """Two final uploads that both checked the same parts (two requests at once,
    or a server that died between joining and releasing the parts): only the first
    gets their bytes; the second is a conflict naming the first, and nothing of it
    is committed. Once the first final is abandoned, the parts are free again."""
    parts = [partial(manager, b"abc"), partial(manager, b"defg")]
    checked_1 = manager.concat_parts(parts, {OWNER})
    checked_2 = manager.concat_parts(parts, {OWNER})  # before the first joins them
    first = final_upload(manager, parts, "one.bin")
    second = final_upload(manager, parts, "two.bin")
    assert manager.concatenate(first, checked_1).offset == 7
    with pytest.raises(UploadConflict, match=f"concatenated into upload {first}"):
        manager.concatenate(second, checked_2)
    manager.abandon_final(second, checked_2)
    # the first final's server died here (no release): still nobody else's parts
    with pytest.raises(UploadConflict, match=f"concatenated into upload {first}"):
        manager.concat_parts(parts, {OWNER})
    with pytest.raises(UploadConflict, match="joined into"):
        manager.cancel(parts[0], OWNER)
    manager.abandon_final(first, checked_1)
    third = final_upload(manager, parts, "three.bin")
    manager.concatenate(third, manager.concat_parts(parts, {OWNER}))
    result = manager.complete(third, OWNER)
    manager.release_parts(checked_1, third)
    assert manager.final_path(manager.get(third)).read_bytes() == b"abcdefg"
    assert result["file_size"] == 7
    assert not (manager.upload_root / ("f" * 32) / "one.bin").exists()
    assert not (manager.upload_root / ("f" * 32) / "two.bin").exists()
    assert manager.get(first).status == "cancelled"


def test_concatenation_only_joins_parts_of_the_caller_or_the_datasets_owner(
    manager: UploadManager,
) -> None:
    """An admin acting for Alice can join Alice's parts or the admin's own, never
    Bob's into Alice's dataset (Bob's part looks like a missing one)."""
    admin = "root@example.org"
    alices = partial(manager, b"alice")
    admins = partial(manager, b"root", owner=admin)
    bobs = partial(manager, b"bob", owner="bob@example.org")
    assert len(manager.concat_parts([alices, admins], {admin, OWNER})) == 2
    with pytest.raises(UploadNotFound):
        manager.concat_parts([alices, bobs], {admin, OWNER})


def test_zero_length_parts_join_into_a_file(manager: UploadManager) -> None:
    """Empty partial uploads are complete at once and join like any other part;
    all-empty parts make an empty file."""
    parts = [partial(manager, b""), partial(manager, b"xyz"), partial(manager, b"")]
    final = final_upload(manager, parts, "z.bin")
    manager.concatenate(final, manager.concat_parts(parts, {OWNER}))
    manager.complete(final, OWNER)
    assert manager.final_path(manager.get(final)).read_bytes() == b"xyz"
    empty = [partial(manager, b"")]
    final = final_upload(manager, empty, "empty.bin")
    manager.concatenate(final, manager.concat_parts(empty, {OWNER}))
    assert manager.complete(final, OWNER)["file_size"] == 0
    assert manager.final_path(manager.get(final)).read_bytes() == b""


def test_concatenation_refuses_at_once_when_the_disk_cannot_hold_the_copy(
    backend: str, tmp_path: Path
) -> None:
    """Joining copies the parts, so the staging disk must hold their sum once
    more: when it cannot, creating the final upload is refused with
    InsufficientStorage and the numbers, before a byte is copied, and the parts
    stay joinable. (The free-space probe is injected here; the tmpfs test in
    test_disk_full.py fills a real disk.)"""
    from sclib.errors import InsufficientStorage

    sessions, queue = _stores(backend, tmp_path)
    free = [10]
    manager = UploadManager(
        sessions, queue, tmp_path / "data", free_space=lambda _path: free[0]
    )
    parts = [partial(manager, b"0123456"), partial(manager, b"789ab")]
    with pytest.raises(InsufficientStorage, match=r"needs 12 bytes.* has 10 free"):
        final_upload(manager, parts, "big.bin")
    free[0] = 1000
    final = final_upload(manager, parts, "big.bin")
    manager.concatenate(final, manager.concat_parts(parts, {OWNER}))
    assert manager.complete(final, OWNER)["file_size"] == 12


def _with_datasets(tmp_path: Path) -> tuple[UploadManager, Any]:
    """A SQLite manager that keeps dataset records, as the server's does."""
    from sclib.datasets import open_dataset_store
    from sclib.transfers.sessions import open_session_store

    url = f"sqlite:///{tmp_path / 'sclib.db'}"
    datasets = open_dataset_store(url)
    manager = UploadManager(
        open_session_store(url),
        JobQueue.open(url),
        tmp_path / "data",
        datasets=datasets,
        chunk_size=1024,
        max_chunk_size=4096,
        max_upload_size=1024**2,
    )
    return manager, datasets


def _send(manager: UploadManager, data: bytes) -> Mapping[str, Any]:
    up = large(manager, len(data))
    for i in range(-(-len(data) // 1024)):
        put(manager, up, i, data[i * 1024 : (i + 1) * 1024])
    return manager.complete(up, OWNER)


def test_a_cancel_takes_back_only_its_own_file(tmp_path: Path) -> None:
    """A cancelled upload job takes back its committed file; cancelling it
    again after a retry, while the same file sent again waits in another job,
    leaves that other job's file alone (found in review)."""
    from sclib.pipeline.flow import after_cancel

    manager, datasets = _with_datasets(tmp_path)
    queue, data_dir = manager.queue, tmp_path / "data"
    data = os.urandom(2500)
    first = _send(manager, data)
    final = data_dir / "upload" / ("a" * 32) / first["path"]
    after_cancel(queue, datasets, queue.cancel(first["job_id"]), data_dir)
    assert not final.exists()
    second = _send(manager, data)
    assert final.read_bytes() == data and second["job_id"] != first["job_id"]
    queue.retry(first["job_id"])
    after_cancel(queue, datasets, queue.cancel(first["job_id"]), data_dir)
    assert final.read_bytes() == data  # the second upload's, still there


def test_a_repaired_completion_does_not_send_the_dataset_back(tmp_path: Path) -> None:
    """A completion replayed after a crash between the commit and its recorded
    answer finds the job it enqueued and leaves the dataset where that job
    took it (it used to mark it 'upload queued' again, with no job to move
    it on; found in review)."""
    from sclib.datasets.records import mark
    from sclib.jobtypes import DatasetStatus
    from sclib.transfers.sessions import ACTIVE

    manager, datasets = _with_datasets(tmp_path)
    data = os.urandom(2500)
    up = large(manager, len(data))
    for i in range(3):
        put(manager, up, i, data[i * 1024 : (i + 1) * 1024])
    state = dict(manager.sessions.get(up).state)
    first = manager.complete(up, OWNER)
    for status in (
        DatasetStatus.UPLOADING,
        DatasetStatus.CONVERSION_QUEUED,
        DatasetStatus.CONVERTING,
        DatasetStatus.DONE,
    ):
        mark(datasets, "a" * 32, status)
    # the crash window: linked, the answer not recorded, staging still there
    manager.staging_dir(up).mkdir(parents=True, exist_ok=True)
    committing = {"blake3": blake3.blake3(data).hexdigest()}
    manager.sessions.update(
        up, state={**state, "committing": committing}, status=ACTIVE
    )
    again = manager.complete(up, OWNER)
    assert again["job_id"] == first["job_id"]
    assert datasets.get("a" * 32).status == DatasetStatus.DONE


def test_a_failed_checkpoint_flush_records_nothing_after_it(
    manager: UploadManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tus checkpoint's flush fails (a full disk at write-back): Linux reports
    that once, so a later flush that succeeds proves nothing. The PATCH then
    records neither the offset nor the pieces' chaining values past the last
    good checkpoint (found in review: completion would have merged values of
    bytes that never reached the disk), and the bytes sent again complete the
    upload with the right BLAKE3. A write closed cannot be made durable."""
    import errno

    from sclib.errors import InsufficientStorage, SclibError
    from sclib.transfers import receive, staging

    hashing_modes.require_tree()
    monkeypatch.setattr(staging, "CHECKPOINT", 16 * 1024)
    monkeypatch.setattr(receive, "TUS_TREE_PIECE", 4096)
    data = os.urandom(64 * 1024)
    up = manager.create(
        protocol=TUS,
        owner=OWNER,
        filename="t.bin",
        size=len(data),
        fields=FIELDS,
        dataset_uuid="c" * 32,
    ).id
    real = os.fdatasync
    calls = []

    def failing_once(fd: int) -> None:
        calls.append(fd)
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(staging.os, "fdatasync", failing_once)
    w = manager.begin_patch(up, OWNER, 0, None, set())
    w.write(data[: 16 * 1024])  # a checkpoint: its flush, in another thread, fails
    deadline = time.monotonic() + 10
    while not calls and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.1)
    with pytest.raises(InsufficientStorage):  # the next checkpoint reports it
        w.write(data[16 * 1024 : 32 * 1024])
    # what the route does then: keep what arrived, if it can be made durable
    with pytest.raises(SclibError, match="failed earlier"):
        manager.abort_patch(w, keep=True)
    with pytest.raises(UploadConflict, match="closed"):
        w.durable()
    assert manager.get(up).offset == 0
    assert "tree" not in manager.get(up).state
    w = manager.begin_patch(up, OWNER, 0, len(data), set())
    for start in range(0, len(data), 8 * 1024):
        w.write(data[start : start + 8 * 1024])
    assert manager.finish_patch(w, None).offset == len(data)
    assert len(manager.get(up).state["tree"]["cvs"]) == len(data) // 4096
    result = manager.complete(up, OWNER)
    assert result["file_blake3"] == blake3.blake3(data).hexdigest()
    assert manager.final_path(manager.get(up)).read_bytes() == data
