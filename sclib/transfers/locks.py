"""Per-upload and per-chunk write locks that hold across threads and processes.

Two server processes may share one data folder, and one process serves many
requests at once, so an upload's lock must exclude other threads *and* other
processes, and must vanish when its holder dies (a SIGKILLed server must not leave
an upload locked forever). Linux's open-file-description locks (``F_OFD_SETLK``)
do all three: they belong to an open file, not to a process, and the kernel drops
them when the file is closed, however that happens.

Each upload has one lock file. Writing a chunk locks one byte of it (byte
``index + 1``), so chunks of one upload go in parallel; a tus ``PATCH`` or the
final verification locks the whole file, which waits for no one: a lock that is
taken gives :class:`~sclib.errors.UploadBusy` (HTTP 423) at once.

Elsewhere (macOS, BSD) ``flock`` on the whole file is used: chunks of one upload
are then written one at a time, correct but slower.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from sclib.errors import UploadBusy

__all__ = ["WriteLock", "lock_chunk", "lock_upload"]

_OFD = hasattr(fcntl, "F_OFD_SETLK")
_FLOCK = "hhqqi4x" if struct.calcsize("hhqqi4x") == 32 else "hhqqi"


class WriteLock:
    """A held lock; :meth:`release` (or leaving the ``with`` block) frees it."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file drops the lock
            self._fd = None

    def __enter__(self) -> WriteLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _take(path: Path, start: int, length: int, what: str) -> WriteLock:
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        if _OFD:
            lock = struct.pack(_FLOCK, fcntl.F_WRLCK, os.SEEK_SET, start, length, 0)
            fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
        else:  # pragma: no cover - non-Linux
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            raise UploadBusy(
                f"another request is writing {what} right now; retry when it is done"
            ) from None
        raise
    except BaseException:
        os.close(fd)
        raise
    return WriteLock(fd)


def lock_upload(path: Path, upload_id: str) -> WriteLock:
    """The whole upload: excludes every other writer of it."""
    return _take(path, 0, 0, f"upload {upload_id}")


def lock_chunk(path: Path, upload_id: str, index: int) -> WriteLock:
    """One chunk: excludes writers of the same chunk and whole-upload holders."""
    return _take(path, index + 1, 1, f"chunk {index} of upload {upload_id}")
