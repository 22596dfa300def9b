"""Upload bytes written past the page cache (``O_DIRECT``) by
:class:`~sclib.transfers.staging.StagedWrite`, and the writes it leaves running
behind the caller (:meth:`~sclib.transfers.staging.StagedWrite.write_behind`).

Real files in the test's folder; :func:`tests.pagecache.cached_fraction` asks the
kernel (``mincore``) which pages it holds. The full disk is a real tmpfs (root
only, as in ``test_disk_full.py``). One test fakes a filesystem that refuses
``O_DIRECT``: none can be mounted here (tmpfs and ext4 both take it), so
``os.open`` refuses it, as such a filesystem's ``open`` does (``EINVAL``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import mmap
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from blake3 import blake3
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sclib.datasets.fields import parse_fields
from sclib.errors import InsufficientStorage
from sclib.jobs.queue import JobQueue
from sclib.server.uploads import TUS, UploadManager
from sclib.transfers import staging
from sclib.transfers.sessions import open_session_store
from tests.pagecache import cached_fraction, direct_writes_bypass_cache
from tests.server.conftest import small_tmpfs

MiB = 1024**2
FIELDS = parse_fields({"dataset_name": "d", "sensor": "OTHER"})
OWNER = "alice@example.org"


def _manager(data: Path, db: Path | None = None, **options: object) -> UploadManager:
    """An upload manager with direct writes on (``SCLIB_DIRECT_IO``; off by
    default), unless ``options`` say otherwise."""
    data.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{db or data / 'sclib.db'}"
    return UploadManager(
        open_session_store(url),
        JobQueue.open(url),
        data,
        max_upload_size=1024**3,
        **{"direct_io": True, **options},  # type: ignore[arg-type]
    )


def _tus(manager: UploadManager, size: int | None, name: str = "f.bin") -> str:
    return manager.create(
        protocol=TUS,
        owner=OWNER,
        filename=name,
        size=size,
        fields=FIELDS,
        dataset_uuid="d" * 32,
    ).id


def aligned(data: bytes) -> mmap.mmap:
    """``data`` in a page-aligned buffer (what the data plane reads into)."""
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    return buf


@pytest.fixture
def direct_dir(tmp_path: Path) -> Path:
    why = direct_writes_bypass_cache(tmp_path)
    if why is not None:
        pytest.skip(why)
    return tmp_path


def test_large_aligned_writes_bypass_the_page_cache(direct_dir: Path) -> None:
    """The aligned part of a large write is written with O_DIRECT: its pages are
    not in the page cache afterwards; the unaligned tail goes through it."""
    data = os.urandom(8 * MiB + 100)
    manager = _manager(direct_dir / "data")
    up = _tus(manager, len(data))
    write = manager.begin_patch(up, OWNER, 0, len(data), set())
    future = write.write_behind(aligned(data))
    assert future is not None
    manager.finish_patch(write, None)
    staged = manager.staging_file(up)
    assert staged.read_bytes() == data
    # read_bytes filled the cache: write it again, and look before reading
    os.posix_fadvise(os.open(staged, os.O_RDONLY), 0, 0, os.POSIX_FADV_DONTNEED)
    up2 = _tus(manager, len(data), "g.bin")
    write = manager.begin_patch(up2, OWNER, 0, len(data), set())
    write.write(aligned(data))  # the synchronous write takes the same path
    manager.finish_patch(write, None)
    assert cached_fraction(manager.staging_file(up2)) < 0.01


def test_direct_io_is_off_by_default(direct_dir: Path) -> None:
    from sclib.settings import Settings

    assert Settings(data_dir=direct_dir).direct_io is False
    data = os.urandom(4 * MiB)
    manager = _manager(direct_dir / "data", direct_io=False)
    up = _tus(manager, len(data))
    write = manager.begin_patch(up, OWNER, 0, len(data), set())
    assert write.write_behind(aligned(data)) is None  # written at once
    manager.finish_patch(write, None)
    assert cached_fraction(manager.staging_file(up)) == 1.0


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    first=st.integers(0, 3 * 4096),
    pieces=st.lists(
        st.tuples(
            st.integers(1, 40_000),
            st.sampled_from(["aligned", "shifted", "bytes", "bytearray"]),
            st.booleans(),
        ),
        min_size=1,
        max_size=8,
    ),
)
def test_every_byte_lands_whatever_the_alignment(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    first: int,
    pieces: list[tuple[int, str, bool]],
) -> None:
    """Any start offset, piece sizes and buffer kinds, written or written behind:
    the file holds every byte, and the tus upload completes with the BLAKE3 of
    the whole (its pieces' chaining values were taken on the way)."""
    monkeypatch.setattr(staging, "DIRECT_MIN", 8192)  # small pieces go direct too
    folder = tmp_path_factory.mktemp("align")
    manager = _manager(folder / "data")
    bodies = [os.urandom(n) for n, _, _ in pieces]
    data = os.urandom(first) + b"".join(bodies)
    up = _tus(manager, len(data))
    if first:
        write = manager.begin_patch(up, OWNER, 0, first, set())
        write.write(data[:first])
        manager.finish_patch(write, None)
    write = manager.begin_patch(up, OWNER, first, None, set())
    for body, (_, kind, behind) in zip(bodies, pieces, strict=True):
        buf: object
        if kind == "aligned":
            buf = aligned(body)
        elif kind == "shifted":  # an aligned buffer, read from 1 byte in
            buf = memoryview(aligned(b"\0" + body))[1:]
        else:
            buf = bytes(body) if kind == "bytes" else bytearray(body)
        if behind:
            write.write_behind(buf)  # type: ignore[arg-type]
        else:
            write.write(buf)  # type: ignore[arg-type]
    assert manager.finish_patch(write, None).offset == len(data)
    result = manager.complete(up, OWNER)
    assert result["file_blake3"] == blake3(data).hexdigest()
    assert manager.final_path(manager.get(up)).read_bytes() == data
    shutil.rmtree(folder)


def test_writes_behind_count_once_done_and_are_kept_on_abort(tmp_path: Path) -> None:
    """Bytes written behind count as written once joined; a PATCH that breaks off
    keeps them all (tus: resume from what was stored)."""
    data = os.urandom(6 * MiB)
    manager = _manager(tmp_path / "data")
    up = _tus(manager, len(data))
    write = manager.begin_patch(up, OWNER, 0, None, set())
    for i in range(3):
        write.write_behind(aligned(data[i * 2 * MiB : (i + 1) * 2 * MiB]))
    assert write.written <= len(data)
    manager.abort_patch(write, keep=True)  # joins them, flushes, records
    assert manager.get(up).offset == len(data)
    assert manager.staging_file(up).read_bytes() == data


def test_a_filesystem_that_refuses_o_direct_is_written_through_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No such filesystem can be mounted here: ``os.open`` refuses O_DIRECT as
    one does (EINVAL). The bytes land all the same, and the device is not asked
    again."""
    if not staging._O_DIRECT:
        pytest.skip("no O_DIRECT on this platform")
    real_open = os.open

    def refusing(path: object, flags: int, *args: object) -> int:
        if flags & staging._O_DIRECT:
            raise OSError(errno.EINVAL, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(staging, "_no_direct", set())
    manager = _manager(tmp_path / "data")
    data = os.urandom(3 * MiB)
    up = _tus(manager, len(data))
    monkeypatch.setattr(staging.os, "open", refusing)
    write = manager.begin_patch(up, OWNER, 0, len(data), set())
    assert write.write_behind(aligned(data)) is None
    manager.finish_patch(write, None)
    monkeypatch.setattr(staging.os, "open", real_open)
    assert manager.staging_file(up).read_bytes() == data
    assert os.stat(manager.staging_file(up)).st_dev in staging._no_direct


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 12 MiB tmpfs (root only)."""
    with small_tmpfs(tmp_path, 12 * MiB) as mount:
        yield mount


@pytest.mark.parametrize("checked", [True, False], ids=["space-checked", "device"])
def test_a_full_disk_behind_counts_nothing_from_the_failed_write(
    small_disk: Path, checked: bool
) -> None:
    """A full disk under writes behind is raised by the next call; the bytes
    written before count, none from a failed write on, and the PATCH keeps
    exactly them."""
    # the database elsewhere: here only the upload's bytes fill the disk
    # ``device``: the space check before each write is told the disk is empty,
    # so that the full disk is met by the writes behind themselves
    blind = {} if checked else {"free_space": lambda _: 1024**4}
    manager = _manager(small_disk / "data", small_disk.parent / "sclib.db", **blind)
    size = 16 * MiB  # more than the disk holds
    up = _tus(manager, None)  # Upload-Defer-Length: no space reserved
    data = os.urandom(size)
    write = manager.begin_patch(up, OWNER, 0, None, set())

    def send_all() -> None:
        for i in range(0, size, 2 * MiB):
            write.write_behind(aligned(data[i : i + 2 * MiB]))
        write.join_io()

    with pytest.raises(InsufficientStorage) as raised:
        send_all()
    if not checked:
        assert isinstance(raised.value.__cause__, OSError)  # ENOSPC from pwrite
    # the refusal may come from the space check before a write (the writes
    # still behind then count once joined) or from a write behind (then nothing
    # from it on counts)
    write.join_io(quiet=True)
    kept = write.written
    assert 0 < kept <= 12 * MiB
    assert kept % (2 * MiB) == 0  # whole writes only
    manager.abort_patch(write, keep=True)
    assert manager.get(up).offset == kept
    with open(manager.staging_file(up), "rb") as f:
        assert f.read(kept) == data[:kept]


def test_a_refused_space_check_keeps_the_writes_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The space check refuses a piece while the piece before is still being
    written: the PATCH's abort keeps that piece (it counts once joined), as the
    tus route's 507 path asks it to."""
    manager = _manager(tmp_path / "data")
    up = _tus(manager, None)
    data = os.urandom(4 * MiB)
    write = manager.begin_patch(up, OWNER, 0, None, set())
    checks: list[int] = []

    def guard(length: int) -> None:  # the disk fills up (another upload)
        checks.append(length)
        if len(checks) == 2:
            raise InsufficientStorage("the disk is full")

    write._guard = guard
    real = os.pwrite

    def slow(fd: int, buf: object, pos: int) -> int:  # a slow device
        time.sleep(0.2)
        return real(fd, buf, pos)  # type: ignore[arg-type]

    monkeypatch.setattr(staging.os, "pwrite", slow)
    write.write_behind(aligned(data[: 2 * MiB]))
    with pytest.raises(InsufficientStorage):
        write.write_behind(aligned(data[2 * MiB :]))
    assert checks == [2 * MiB, 4 * MiB]  # the bytes behind count against the disk
    manager.abort_patch(write, keep=True)
    assert manager.get(up).offset == 2 * MiB
    with open(manager.staging_file(up), "rb") as f:
        assert f.read(2 * MiB) == data[: 2 * MiB]


def test_a_refused_direct_write_leaves_the_others_their_descriptor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that takes the O_DIRECT open but refuses a write (EINVAL; a
    fake ``pwrite`` plays it: none can be mounted here) while another write is
    behind: that write still has its descriptor, and every byte lands in the
    upload's file, none in a file opened meanwhile."""
    monkeypatch.setattr(staging, "_no_direct", set())
    manager = _manager(tmp_path / "data")
    data = os.urandom(4 * MiB)
    up = _tus(manager, len(data))
    write = manager.begin_patch(up, OWNER, 0, len(data), set())
    direct_fd = write._open_direct()
    real = os.pwrite

    def pwrite(fd: int, buf: object, pos: int) -> int:
        if fd == direct_fd:
            if pos == 0:
                time.sleep(0.1)
                raise OSError(errno.EINVAL, "Invalid argument")
            time.sleep(0.3)  # the second is still on its way
        return real(fd, buf, pos)  # type: ignore[arg-type]

    monkeypatch.setattr(staging.os, "pwrite", pwrite)
    write.write_behind(aligned(data[: 2 * MiB]))
    write.write_behind(aligned(data[2 * MiB :]))
    time.sleep(0.2)  # the first write met the refusal
    other = tmp_path / "another-upload"
    fd = os.open(other, os.O_RDWR | os.O_CREAT, 0o600)  # may reuse a closed number
    try:
        write.join_io()
    finally:
        os.close(fd)
    manager.finish_patch(write, None)
    assert other.stat().st_size == 0
    assert manager.staging_file(up).read_bytes() == data


class _Transport:
    """A transport that only records (the fake of
    test_a_cancelled_patch_never_lends_a_buffer_still_being_written)."""

    def __init__(self) -> None:
        self.protocol: object = None

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: object) -> None:
        self.protocol = protocol

    def get_protocol(self) -> object:
        return self.protocol

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes) -> None: ...


class _Http:
    def __init__(self) -> None:
        self.transport = _Transport()

    def body_read(self, body: object) -> None: ...

    def connection_lost(self, exc: object) -> None: ...

    def eof_received(self) -> None:
        return None


def _feed(body: Any, data: bytes) -> None:
    """Bytes arriving on the socket, as the event loop hands them over."""
    pos = 0
    while pos < len(data):
        buf = body.get_buffer(-1)
        n = min(len(buf), len(data) - pos)
        buf[:n] = data[pos : pos + n]
        body.buffer_updated(n)
        pos += n


def test_a_cancelled_patch_never_lends_a_buffer_still_being_written(
    direct_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request task is cancelled (a server's shutdown timeout) while a write
    behind still reads from a ring buffer: the next body must not read into that
    buffer. A cancellation cannot be caused from a client, so the body is fed
    through a fake transport straight into :class:`DirectBody`; the file and
    the sink are real."""
    from sclib.server import dataplane
    from sclib.server.dataplane import PIECE, DirectBody

    monkeypatch.setattr(dataplane, "_pieces", [])
    manager = _manager(direct_dir / "data")
    size = 4 * PIECE
    data = b"".join(bytes([65 + i]) * PIECE for i in range(4))
    up = _tus(manager, size)
    write = manager.begin_patch(up, OWNER, 0, size, set())
    real = os.pwrite

    def slow(fd: int, buf: object, pos: int) -> int:  # a slow device
        if fd == write._direct_fd:
            time.sleep(0.4)
        return real(fd, buf, pos)  # type: ignore[arg-type]

    monkeypatch.setattr(staging.os, "pwrite", slow)

    class Drop:
        def write(self, data: object) -> None: ...

    async def main() -> None:
        body = DirectBody(_Http(), size, b"", expect_continue=False)
        body.attach()
        task = asyncio.ensure_future(body.pump(write))
        await asyncio.sleep(0.05)
        _feed(body, data)  # 4 pieces: 3 behind, the 4th waits for the first
        await asyncio.sleep(0.15)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        after = DirectBody(_Http(), 2 * PIECE, b"", expect_continue=False)
        after.attach()
        reading = asyncio.ensure_future(after.pump(Drop()))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        _feed(after, b"Z" * (2 * PIECE))
        await reading

    asyncio.run(main())
    manager.abort_patch(write, keep=True)
    offset = manager.get(up).offset
    assert offset > 0
    with open(manager.staging_file(up), "rb") as f:
        assert f.read(offset) == data[:offset]


@pytest.mark.parametrize("direct", [False, True], ids=["cached", "direct"])
def test_a_checkpoint_due_during_a_slow_flush_is_recorded_without_more_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """The first checkpoint's flush is slow; the second comes due while it runs,
    and then no more bytes arrive (a client that stalls, a server about to be
    killed): the second offset is recorded all the same, once the first flush
    is done. Checkpoints every 4 MiB here instead of 64."""
    monkeypatch.setattr(staging, "CHECKPOINT", 4 * MiB)
    real = os.fdatasync
    flushes: list[int] = []

    def slow_first(fd: int) -> None:
        flushes.append(fd)
        if len(flushes) == 1:
            time.sleep(0.5)
        real(fd)

    monkeypatch.setattr(staging.os, "fdatasync", slow_first)
    manager = _manager(tmp_path / "data", direct_io=direct)
    data = os.urandom(10 * MiB)
    up = _tus(manager, len(data))
    write = manager.begin_patch(up, OWNER, 0, None, set())
    for i in range(0, len(data), 2 * MiB):
        write.write_behind(aligned(data[i : i + 2 * MiB]))
    write.count_done()
    deadline = time.monotonic() + 10
    while manager.get(up).offset < 8 * MiB:
        assert time.monotonic() < deadline, manager.get(up).offset
        time.sleep(0.05)
        write.count_done()  # as the data plane does while it waits for bytes
    write.close()
