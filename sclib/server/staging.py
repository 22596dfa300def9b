"""Bytes of one request on their way to an upload's staging file.

:class:`StagedWrite` writes at offsets with ``pwrite``, hashes on the way
(:class:`Hashers`: BLAKE3 always, SHA-256/SHA-1/MD5 when a client declared one),
refuses bytes past the expected length, and holds the upload's or the chunk's
write lock until it is closed. ``fdatasync`` makes the bytes durable before the
caller records them.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sclib.errors import ChecksumMismatch, InvalidInput, TooLarge, UploadConflict
from sclib.server.locks import WriteLock
from sclib.transfers.hashing import new_blake3

if TYPE_CHECKING:
    from sclib.server.uploads import Upload, UploadManager

__all__ = ["Hashers", "StagedWrite", "fsync_dir", "hash_file"]

CHECKPOINT = 64 * 1024**2  # tus: record the offset at least this often
HASHES = ("blake3", "sha256", "sha1", "md5")


class Hashers:
    """The digests computed while bytes stream in."""

    def __init__(self, names: set[str]) -> None:
        self._hashers: dict[str, Any] = {}
        for name in names:
            if name not in HASHES:
                raise InvalidInput(
                    f"unsupported checksum algorithm {name!r}; use one of "
                    f"{', '.join(HASHES)}"
                )
            self._hashers[name] = (
                new_blake3() if name == "blake3" else hashlib.new(name)
            )

    def update(self, data: bytes | memoryview) -> None:
        for h in self._hashers.values():
            h.update(data)

    def hexdigest(self, name: str) -> str:
        return str(self._hashers[name].hexdigest())

    def check(self, expected: Mapping[str, str], what: str) -> None:
        for name, want in expected.items():
            got = self.hexdigest(name)
            if got != want.lower():
                raise ChecksumMismatch(
                    f"{what}: {name} is {got}, the client said {want.lower()}"
                )


class StagedWrite:
    """Bytes of one request going to the staging file, under a held lock.

    The route feeds :meth:`write` (in a worker thread) and then calls
    :meth:`finish` or :meth:`abort`; both release the lock.
    """

    def __init__(
        self,
        manager: UploadManager,
        upload: Upload,
        lock: WriteLock,
        start: int,
        limit: int,
        hashes: set[str],
        *,
        exact: bool,
        on_checkpoint: Callable[[int], None] | None = None,
    ) -> None:
        self.manager = manager
        self.upload = upload
        self.start = start
        self.limit = limit
        self.exact = exact
        self.written = 0
        self.hashers = Hashers(hashes)
        self._lock = lock
        self._on_checkpoint = on_checkpoint
        self._checkpointed = 0
        path = manager.staging_file(upload.id)
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._fd is None:
            raise UploadConflict("this write was already finished")
        view = memoryview(data)
        if self.written + len(view) > self.limit:
            raise TooLarge(
                f"the request body is larger than expected ({self.limit} bytes "
                f"here for upload {self.upload.id})"
            )
        self.hashers.update(view)
        pos = self.start + self.written
        while view:
            n = os.pwrite(self._fd, view, pos)
            view = view[n:]
            pos += n
        self.written += len(data)
        if (
            self._on_checkpoint is not None
            and self.written - self._checkpointed >= CHECKPOINT
        ):
            os.fdatasync(self._fd)
            self._checkpointed = self.written
            self._on_checkpoint(self.written)

    def durable(self) -> None:
        """Make what was written durable."""
        if self._fd is not None:
            os.fdatasync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._lock.release()

    def finish(self, expected: Mapping[str, str] | None = None) -> None:
        """Check length and digests, make the bytes durable; the lock stays held
        until :meth:`close`."""
        if self.exact and self.written != self.limit:
            raise InvalidInput(
                f"expected {self.limit} bytes for upload {self.upload.id}, "
                f"got {self.written}"
            )
        self.hashers.check(expected or {}, f"upload {self.upload.id}")
        self.durable()


def hash_file(path: Path, names: set[str]) -> dict[str, str]:
    hashers = Hashers(names)
    buf = bytearray(8 * 1024**2)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            hashers.update(view[:n])
    return {name: hashers.hexdigest(name) for name in names}


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
