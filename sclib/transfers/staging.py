"""Bytes of one request on their way to an upload's staging file.

:class:`StagedWrite` writes at offsets with ``pwrite``, hashes on the way
(:class:`Hashers`: BLAKE3 always, SHA-256/SHA-1/MD5 when a client declared one),
refuses bytes past the expected length, and holds the upload's or the chunk's
write lock until it is closed. ``fdatasync`` makes the bytes durable before the
caller records them.

With ``SCLIB_DIRECT_IO`` (off by default), large writes from page-aligned
buffers at aligned offsets go past the page cache (``O_DIRECT``, Linux), which
saves the copy into it where that is dear. Since such a write waits for the
device, :meth:`StagedWrite.write_behind` lets a few run in worker threads while
the caller receives and hashes the next buffer (the data plane uses it).
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import ctypes
import errno
import functools
import hashlib
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sclib.errors import (
    ChecksumMismatch,
    DestinationError,
    InsufficientStorage,
    InvalidInput,
    TooLarge,
    UploadConflict,
)
from sclib.transfers._writeback import start_writeback
from sclib.transfers.hashing import (
    CV_HASH,
    CV_PREFIX,
    TreeRecorder,
    blake3_file,
    can_check_chaining_values,
    new_blake3,
    new_chunk_hasher,
)
from sclib.transfers.locks import WriteLock

if TYPE_CHECKING:
    from sclib.transfers.receive import Receiver, Upload

__all__ = [
    "NO_SPACE",
    "Hashers",
    "StagedWrite",
    "disk_errors",
    "fsync_dir",
    "fsync_file",
    "hash_file",
    "written_in",
    "written_in_fd",
]

CHECKPOINT = 64 * 1024**2  # tus: record the offset at least this often
HASHES = ("blake3", "sha256", "sha1", "md5", CV_HASH)


class Hashers:
    """The digests computed while bytes stream in.

    ``blake3-cv`` is the BLAKE3 chaining value of bytes that start at ``offset``
    in their file (a chunk of a chunked upload; needs ``sclib_blake3tree``)."""

    def __init__(self, names: set[str], offset: int = 0) -> None:
        self._hashers: dict[str, Any] = {}
        for name in names:
            if name not in HASHES:
                raise InvalidInput(
                    f"unsupported checksum algorithm {name!r}; use one of "
                    f"{', '.join(HASHES)}"
                )
            if name == CV_HASH:
                self._hashers[name] = new_chunk_hasher(offset)
            elif name == "blake3":
                self._hashers[name] = new_blake3(threads=False)
            else:
                self._hashers[name] = hashlib.new(name)

    def update(self, data: bytes | memoryview) -> None:
        for h in self._hashers.values():
            h.update(data)

    def __bool__(self) -> bool:
        return bool(self._hashers)

    def hexdigest(self, name: str) -> str:
        if name == CV_HASH:
            return bytes(self._hashers[name].chaining_value()).hex()
        return str(self._hashers[name].hexdigest())

    def record_digest(self) -> str:
        """What a chunk's record keeps: ``cv:<hex>`` (its chaining value) when
        that was computed, else its BLAKE3 hex."""
        if CV_HASH in self._hashers:
            return CV_PREFIX + self.hexdigest(CV_HASH)
        return self.hexdigest("blake3")

    def check(self, expected: Mapping[str, str], what: str) -> None:
        for name, want in expected.items():
            got = self.hexdigest(name)
            if got != want.lower():
                raise ChecksumMismatch(
                    f"{what}: {name} is {got}, the client said {want.lower()}"
                )


#: a write of at least this many bytes, at a file offset and from a memory
#: address that are multiples of :data:`DIRECT_ALIGN`, bypasses the page cache
#: (``O_DIRECT``; see :meth:`StagedWrite.write`)
DIRECT_MIN = 1024**2
DIRECT_ALIGN = 4096
#: writes :meth:`StagedWrite.write_behind` keeps running at once
BEHIND = 3
_O_DIRECT: int = getattr(os, "O_DIRECT", 0)
#: devices whose filesystem refused ``O_DIRECT`` (it is not tried there again)
_no_direct: set[int] = set()


def _address(view: memoryview) -> int | None:
    """Where a writable buffer's bytes start in memory (``None`` for a
    read-only one, such as ``bytes``)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError, BufferError):
        return None


def _aligned(view: memoryview, pos: int) -> bool:
    """``view``, written at file offset ``pos``, may go past the page cache: the
    offset and the buffer's address are multiples of :data:`DIRECT_ALIGN`."""
    if pos % DIRECT_ALIGN:
        return False
    address = _address(view)
    return address is not None and not address % DIRECT_ALIGN


#: bytes in one write from which hashing runs beside the write to disk
PARALLEL_HASH = 1024**2
_POOL = max(4, os.cpu_count() or 1)
_HASH_SLOTS = threading.BoundedSemaphore(_POOL)


@functools.cache
def _hash_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that hash large writes while their own thread writes them."""
    return concurrent.futures.ThreadPoolExecutor(_POOL, thread_name_prefix="sclib-hash")


@functools.cache
def _io_threads() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that write the buffers :meth:`StagedWrite.write_behind`
    hands over (up to :data:`BEHIND` per upload at a time)."""
    return concurrent.futures.ThreadPoolExecutor(
        2 * _POOL, thread_name_prefix="sclib-write"
    )


@functools.cache
def _checkpoints() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that flush tus uploads at their checkpoints (one per upload
    at a time), beside the threads that write them."""
    return concurrent.futures.ThreadPoolExecutor(
        _POOL, thread_name_prefix="sclib-flush"
    )


class StagedWrite:
    """Bytes of one request going to the staging file, under a held lock.

    The route feeds :meth:`write` (in a worker thread) and then calls
    :meth:`finish` or :meth:`abort`; both release the lock.
    """

    def __init__(
        self,
        manager: Receiver,
        upload: Upload,
        lock: WriteLock,
        start: int,
        limit: int,
        hashes: set[str],
        *,
        exact: bool,
        on_checkpoint: Callable[[int, dict[int, bytes] | None, str | None], None]
        | None = None,
        side_file: Path | None = None,
        guard: Callable[[int], None] | None = None,
        tree: TreeRecorder | None = None,
    ) -> None:
        self._guard = guard
        #: chaining values of the whole pieces these bytes cover (tus)
        self.tree = tree
        self.manager = manager
        self.upload = upload
        self.start = start
        self.limit = limit
        self.exact = exact
        self.written = 0
        self.hashers = Hashers(hashes, start)
        self._lock = lock
        self._on_checkpoint = on_checkpoint
        self._checkpointed = 0
        self._pending: concurrent.futures.Future[None] | None = None
        self._settling = threading.Lock()
        #: a checkpoint flush is running; the next one due meanwhile waits here
        self._queue_lock = threading.Lock()
        self._flushing = False
        self._queued: tuple[int, dict[int, bytes] | None, str | None] | None = None
        self._flush_failed = False
        #: a chunk sent again goes to a file of its own, so that the verified
        #: copy in the staging file stays until the new one verifies too
        self.side_file = side_file
        self._position = 0 if side_file is not None else start
        #: writes may go past the page cache (until the filesystem refuses)
        self._direct = bool(manager.direct_io and _O_DIRECT)
        #: the same file opened with ``O_DIRECT``, on first use; closed only by
        #: :meth:`close_file`, after every write behind is done
        self._direct_fd: int | None = None
        #: the writes :meth:`write_behind` left running, oldest first, and
        #: their lengths
        self._behind: collections.deque[tuple[concurrent.futures.Future[None], int]] = (
            collections.deque()
        )
        try:
            if side_file is not None:
                flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
                self._fd: int | None = os.open(side_file, flags, 0o600)
            else:
                # never O_CREAT: the file is made with the upload, and one that is
                # gone must not come back as an empty file that other chunks'
                # records vouch for
                path = manager.staging_file(upload.id)
                self._fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UploadConflict(
                f"upload {upload.id} has lost its staging file; start it again"
            ) from None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Hash and write ``data`` after what came before; returns once it is
        written (not yet durable: see :meth:`durable`)."""
        self.join_io()
        view = self._admit(data)
        hashing: concurrent.futures.Future[None] | None = None
        if (
            len(view) >= PARALLEL_HASH
            and (self.hashers or self.tree is not None)
            and _HASH_SLOTS.acquire(blocking=False)
        ):
            # hashed in another thread while this one writes (both let go of
            # the GIL): the same CPU, in about half the time; when every hash
            # thread is busy, here
            hashing = _hash_threads().submit(self._hash, view)
            hashing.add_done_callback(lambda _: _HASH_SLOTS.release())
        else:
            self._hash(view)
        try:
            self._put(view, self._position + self.written)
        finally:
            if hashing is not None:
                hashing.result()  # done with the bytes before they are reused
        self._written(len(view))

    def write_behind(
        self, data: bytes | bytearray | memoryview
    ) -> concurrent.futures.Future[None] | None:
        """:meth:`write`, but a buffer that can be written past the page cache
        (see :data:`DIRECT_MIN`) is hashed here and written by another thread:
        this returns that write's future, and the caller must leave the buffer
        alone until it is done. Its bytes count as :attr:`written` once it and
        every write before it are done and joined (:meth:`join_io`; the next
        calls join what is done); an error is raised by the next call of this,
        :meth:`write`, :meth:`join_io`, :meth:`durable` or :meth:`finish`, and
        nothing from the failed write on counts.

        Up to :data:`BEHIND` writes run at once, so the device has the next
        buffer while one is written, instead of waiting for each in turn.
        Anything else is written as :meth:`write` writes it (``None``)."""
        view = memoryview(data)
        if not self._can_write_behind(view):
            self.write(view)
            return None
        view = self._admit(view)
        self._hash(view)  # beside the writes of the buffers before
        self._join_done(keep=BEHIND - 1)
        pos = self._position + self.written + self._bytes_behind()
        future = _io_threads().submit(self._put, view, pos)
        self._behind.append((future, len(view)))
        return future

    def join_io(self, *, quiet: bool = False) -> None:
        """Wait for the writes :meth:`write_behind` left running; raise the
        first error unless ``quiet`` (from that write on, no byte counts as
        written, either way)."""
        try:
            self._join_done(keep=0)
        except Exception:
            if not quiet:
                raise

    def count_done(self) -> None:
        """Count the writes behind that are done, oldest first, without waiting
        (so that a checkpoint comes when due, not with the next write)."""
        self._join_done(keep=len(self._behind))

    def _join_done(self, keep: int) -> None:
        """Count the writes behind that are done, oldest first, waiting for the
        oldest while more than ``keep`` run."""
        behind = self._behind
        while behind and (len(behind) > keep or behind[0][0].done()):
            future, length = behind[0]
            try:
                future.result()
            except BaseException:
                # none may still use a buffer or the descriptor after this
                concurrent.futures.wait([f for f, _ in behind])
                behind.clear()
                raise
            behind.popleft()
            self._written(length)

    def _bytes_behind(self) -> int:
        return sum(n for _, n in self._behind)

    def _can_write_behind(self, view: memoryview) -> bool:
        if not self._direct or self._fd is None or len(view) < DIRECT_MIN:
            return False
        pos = self._position + self.written + self._bytes_behind()
        return _aligned(view, pos) and self._open_direct() is not None

    def _admit(self, data: bytes | bytearray | memoryview) -> memoryview:
        """``data`` as a view, if it may be written: not past the expected
        length, nor into the disk's reserve."""
        if self._fd is None:
            raise UploadConflict("this write was already finished")
        view = memoryview(data).cast("B")
        behind = self._bytes_behind()
        if self.written + behind + len(view) > self.limit:
            raise TooLarge(
                f"the request body is larger than expected ({self.limit} bytes "
                f"here for upload {self.upload.id})"
            )
        if self._guard is not None:
            # the disk's reserve stays free, counting the bytes still on their
            # way to it (written behind: not on the disk yet)
            self._guard(len(view) + behind)
        return view

    def _put(self, view: memoryview, pos: int) -> None:
        """``pwrite`` all of ``view`` at ``pos``: its whole aligned blocks past
        the page cache when it can, the rest through it."""
        assert self._fd is not None
        with disk_errors(self.upload.id):
            if self._direct and len(view) >= DIRECT_MIN:
                done = self._write_direct(view, pos)
                view = view[done:]
                pos += done
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n

    def _written(self, length: int) -> None:
        """``length`` more bytes are written: start a checkpoint when one is due."""
        self.written += length
        if (
            self._fd is None
            or self._on_checkpoint is None
            or self.written - self._checkpointed < CHECKPOINT
        ):
            return
        self._checkpointed = mark = self.written
        tree = (
            self.tree.below(self.start + mark, self.upload.size) if self.tree else None
        )
        point = (mark, tree, self.written_in())
        with self._queue_lock:
            if self._flushing:
                # the flush before is still running: it takes this one when it
                # ends (a later one due meanwhile replaces it), so a body that
                # stops here still gets its offset recorded
                self._queued = point
                return
            self._flushing = True
        self._settle()  # an error of the last checkpoint is raised here
        # the flush runs beside the next writes (it flushes them too, which does
        # no harm); the offset recorded is what came before it
        self._pending = _checkpoints().submit(self._checkpoints_from, self._fd, point)

    def _checkpoints_from(
        self, fd: int, point: tuple[int, dict[int, bytes] | None, str | None]
    ) -> None:
        """Flush and record ``point``, then each checkpoint that came due
        meanwhile, until none is left."""
        try:
            while True:
                self._checkpoint(fd, *point)
                with self._queue_lock:
                    queued, self._queued = self._queued, None
                    if queued is None:
                        self._flushing = False
                        return
                point = queued
        except BaseException:
            with self._queue_lock:
                self._queued = None
                self._flushing = False
            raise

    def _write_direct(self, view: memoryview, pos: int) -> int:
        """Write the whole aligned blocks at the start of ``view`` past the page
        cache, if ``pos`` and the buffer are aligned; how many bytes were written
        (the caller writes the rest through the page cache)."""
        end = len(view) - len(view) % DIRECT_ALIGN
        if end < DIRECT_MIN or not _aligned(view, pos):
            return 0
        fd = self._open_direct()
        if fd is None:
            return 0
        done = 0
        while done < end:
            try:
                n = os.pwrite(fd, view[done:end], pos + done)
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # the filesystem takes O_DIRECT opens but not these writes: the
                # rest goes through the page cache (the descriptor stays open
                # for the other writes behind until close_file)
                self._direct = False
                _no_direct.add(os.fstat(fd).st_dev)
                break
            done += n
            if n % DIRECT_ALIGN:
                break  # a short write: the rest is not aligned any more
        return done

    def _open_direct(self) -> int | None:
        """The ``O_DIRECT`` descriptor (opened by the caller's thread, the first
        time), or ``None`` where there can be none."""
        if not self._direct:
            return None
        if self._direct_fd is not None:
            return self._direct_fd
        assert self._fd is not None
        dev = os.fstat(self._fd).st_dev
        try:
            if dev in _no_direct:
                raise OSError(errno.EINVAL, "O_DIRECT refused before")
            # the open file itself, not its path (which may name another by now)
            self._direct_fd = os.open(
                f"/proc/self/fd/{self._fd}", os.O_WRONLY | os.O_CLOEXEC | _O_DIRECT
            )
        except OSError as exc:
            self._direct = False
            if exc.errno == errno.EINVAL:
                _no_direct.add(dev)
            return None
        return self._direct_fd

    def _hash(self, view: memoryview) -> None:
        self.hashers.update(view)
        if self.tree is not None:
            self.tree.update(view)

    def _checkpoint(
        self, fd: int, mark: int, tree: dict[int, bytes] | None, token: str | None
    ) -> None:
        assert self._on_checkpoint is not None
        self._flush(fd)
        self._on_checkpoint(mark, tree, token)

    def _flush(self, fd: int) -> None:
        """``fdatasync``; a failure is remembered: Linux reports a write-back
        error once, so a later flush that succeeds proves nothing."""
        try:
            with disk_errors(self.upload.id):
                os.fdatasync(fd)
        except BaseException:
            self._flush_failed = True
            raise

    def _settle(self, *, quiet: bool = False) -> None:
        """Wait for the checkpoint in flight (every caller waits for the same
        one); raise its error unless ``quiet``."""
        with self._settling:
            pending = self._pending
            if pending is None:
                return
            try:
                pending.result()
            except BaseException:
                if not quiet:
                    raise
            finally:
                self._pending = None

    def written_in(self) -> str | None:
        """Where these bytes went: :func:`written_in` of the open staging file."""
        if self._fd is None:
            return None
        return _marker(os.fstat(self._fd), _local_fs(self._fd))

    def durable(self) -> None:
        """Make what was written durable, or raise: after a failed flush, and
        once the file is closed, nothing can be made durable any more."""
        self.join_io()
        self._settle()
        if self._fd is None:
            raise UploadConflict(f"upload {self.upload.id}: this write was closed")
        if self._flush_failed:
            raise DestinationError(
                f"upload {self.upload.id}: writing to disk failed earlier; what "
                "was received since the last recorded offset is not kept"
            )
        self._flush(self._fd)

    def close_file(self) -> None:
        """Close the staging file (raising what ``close`` reports); the lock
        stays held until :meth:`close`."""
        if self._behind:  # no write may still use the descriptors
            concurrent.futures.wait([f for f, _ in self._behind])
            self._behind.clear()
        self._settle(quiet=True)  # nor a flush
        self._direct = False
        if self._direct_fd is not None:
            fd, self._direct_fd = self._direct_fd, None
            os.close(fd)
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with disk_errors(self.upload.id):
                os.close(fd)

    def close(self) -> None:
        try:
            self.close_file()
        finally:
            try:
                if self.side_file is not None:
                    self.side_file.unlink(missing_ok=True)
            finally:
                self._lock.release()

    def finish(
        self, expected: Mapping[str, str] | None = None, *, sync: bool = True
    ) -> None:
        """Check length and digests and (with ``sync``) make the bytes durable;
        the lock stays held until :meth:`close`."""
        self.join_io()
        self._settle()
        if self.exact and self.written != self.limit:
            raise InvalidInput(
                f"expected {self.limit} bytes for upload {self.upload.id}, "
                f"got {self.written}"
            )
        self.hashers.check(expected or {}, f"upload {self.upload.id}")
        if sync:
            self.durable()
        elif self._fd is not None and self.side_file is None:
            # start writing these bytes to disk now, in the background (Linux:
            # dirty pages are queued for writeback, none is waited for), so the
            # one flush at completion has little left to do
            start_writeback(self._fd, self.start, self.written)


@functools.cache
def _boot_id() -> str | None:
    """This machine's boot id (Linux); it changes on every boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip() or None
    except OSError:
        return None


# filesystems whose unwritten pages stay in this machine's page cache until
# writeback, so that only an operating-system crash (a new boot) can drop them; on
# network and FUSE filesystems a remount or a daemon restart can, with the same
# boot and the same inode numbers
_LOCAL_FS = {"ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "tmpfs", "zfs", "overlay"}


def _local_fs(fd: int) -> bool:
    """Whether the open file ``fd`` is on one of :data:`_LOCAL_FS` (Linux:
    the mount in ``/proc/self/mountinfo`` whose device is the file's)."""
    return _fs_type(os.fstat(fd).st_dev) in _LOCAL_FS


@functools.lru_cache(maxsize=64)
def _fs_type(dev: int) -> str | None:
    """The type of the filesystem mounted from device ``dev`` (looked up once
    per device: a node may have thousands of mounts)."""
    want = f"{os.major(dev)}:{os.minor(dev)}"
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 3 and fields[2] == want and " - " in line:
                    return line.split(" - ", 1)[1].split()[0]
    except OSError:
        pass
    return None


def _marker(st: os.stat_result, local: bool) -> str | None:
    boot = _boot_id()
    if boot is None or not local:
        return None
    return f"written:{boot}:{st.st_dev}:{st.st_ino}"


def written_in_fd(fd: int) -> str | None:
    """:func:`written_in` of an open file."""
    return _marker(os.fstat(fd), _local_fs(fd))


def written_in(path: Path) -> str | None:
    """A name for "this file, on this machine, since it last booted": two chunks
    with the same one were written into the same file with no reboot (so no
    operating-system crash) between; ``None`` where the boot cannot be told or
    the file is not on a local filesystem (:data:`_LOCAL_FS`)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return _marker(os.fstat(fd), _local_fs(fd))
    finally:
        os.close(fd)


def hash_file(path: Path, names: set[str]) -> dict[str, str]:
    """Digests of the file at ``path``; BLAKE3 alone goes through a memory map
    on every core (:func:`~sclib.transfers.hashing.blake3_file`)."""
    if names == {"blake3"}:
        return {"blake3": blake3_file(path)[0]}
    hashers = Hashers(names)
    buf = bytearray(8 * 1024**2)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hashers.update(view[:n])
    return {name: hashers.hexdigest(name) for name in names}


def verify_chunks(
    path: Path,
    size: int,
    chunk_size: int,
    records: Mapping[int, str],
    names: set[str],
) -> tuple[dict[str, str], list[int]]:
    """One pass over a chunked upload's file: the whole-file digests (``names``)
    and the chunks whose bytes on disk no longer match their record (lost in an
    operating-system crash before they reached the disk, or changed since): their
    BLAKE3, or their chaining value (``cv:<hex>``). Read through memory maps, at
    most 64 MiB mapped at a time."""
    import mmap

    whole = Hashers(names | {"blake3"})
    bad: list[int] = []
    window = 64 * 1024**2
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size < size:
            raise InvalidInput(f"{path} is shorter than the upload's {size} bytes")
        for index in range(max(1, -(-size // chunk_size))):
            start = index * chunk_size
            record = records.get(index) or ""
            cv = record.startswith(CV_PREFIX)
            # a chaining value this process cannot compute (no sclib_blake3tree)
            # is as good as a mismatch: the chunk is asked for again
            chunk: Any = None
            if not cv:
                chunk = new_blake3()
            elif can_check_chaining_values():
                chunk = new_chunk_hasher(start)
            end = min(size, start + chunk_size)
            for offset in range(start, end, window):
                # map from the last page boundary (mmap offsets must be aligned)
                base = offset - offset % mmap.ALLOCATIONGRANULARITY
                length = min(end, offset + window) - base
                with mmap.mmap(
                    fh.fileno(), length, offset=base, access=mmap.ACCESS_READ
                ) as mapped:
                    view = memoryview(mapped)[offset - base :]
                    try:
                        whole.update(view)
                        if chunk is not None:
                            chunk.update(view)
                    finally:
                        view.release()
            if chunk is None:
                found = ""
            elif cv:
                found = CV_PREFIX + bytes(chunk.chaining_value()).hex()
            else:
                found = chunk.hexdigest()
            if size and found != record:
                bad.append(index)
    return {name: whole.hexdigest(name) for name in names | {"blake3"}}, bad


def fsync_dir(path: Path) -> None:
    _fsync(path, os.O_RDONLY | os.O_DIRECTORY)


#: errnos that mean the disk (or the user's quota on it) is full
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def disk_errors(upload_id: str) -> Iterator[None]:
    """A full disk (``ENOSPC``, ``EDQUOT``) as :class:`InsufficientStorage`
    (507): the bytes already recorded stay as they were, and the upload can be
    resumed once space is freed."""
    try:
        yield
    except OSError as exc:
        if exc.errno in NO_SPACE:
            raise InsufficientStorage(
                f"upload {upload_id}: the server's disk is full; what was received "
                "before is kept, send the rest once space is freed"
            ) from exc
        raise


def fsync_file(path: Path) -> None:
    _fsync(path, os.O_RDONLY)


def _fsync(path: Path, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
