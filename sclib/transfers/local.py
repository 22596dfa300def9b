"""Local files as a source and as a destination.

The destination writes each object into a temp file of the final size next to its
final path (``.<name>.sclib-part``; free space is checked first), with positioned
writes so chunks land in any order, compares every chunk with what landed (through
a memory map of the written range, or by reading it back where the filesystem
cannot map files), starts each checked chunk's writeback to disk at once, and on
commit syncs the file to disk (unless ``fsync=False``) and renames it into place
atomically (then syncs the folder). Until then nothing is at the final path. The
temp file's path is the writer's resumable state.

"Durable" for a chunk means written to the operating system: it survives the
process dying (SIGKILL included). The sync to disk happens once, at commit; after
an OS crash, a resumed transfer re-reads and re-verifies every chunk it had
recorded, so a lost write is found and sent again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import stat as stat_mod
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sclib.errors import (
    ChecksumMismatch,
    DestinationError,
    InvalidInput,
    SourceChanged,
    SourceError,
    SourceNotFound,
)
from sclib.transfers._landed import mapped_equal
from sclib.transfers._writeback import start_writeback
from sclib.transfers.destinations import Destination, DestinationWriter
from sclib.transfers.plan import Chunk
from sclib.transfers.sources import Source, SourceObject

__all__ = ["LocalDestination", "LocalSource", "local_path"]

log = logging.getLogger(__name__)

_READBACK = 1 << 20  # bytes compared at a time by the pread fallback
# bytes per pwrite call (a default-sized chunk is one call). The size made no
# difference once the benchmark stopped writing into memory the VM had handed
# back to its host (docs/transfers.md, "Speed of local copies")
_WRITE_PIECE = 8 << 20


def local_path(url: str) -> Path:
    """``file:///x/y``, ``local://x`` or a plain path -> a Path."""
    if url.startswith("file://"):
        return Path(url[len("file://") :] or "/")
    if url.startswith("local://"):
        return Path(url[len("local://") :])
    return Path(url)


def _identity(st: os.stat_result) -> dict[str, str]:
    return {"mtime_ns": str(st.st_mtime_ns), "inode": str(st.st_ino)}


def _check_space(folder: Path, size: int) -> None:
    """Refuse at once, with the numbers, when the disk cannot hold the file."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return
    free = st.f_bavail * st.f_frsize
    if size > free:
        raise DestinationError(
            f"not enough space in {folder}: the file needs {size:,} bytes and "
            f"{free:,} are free"
        )


class LocalSource(Source):
    """Files and folders on this machine (``file://`` URLs or plain paths)."""

    schemes = ("file", "local")

    def __init__(self, **options: Any) -> None:
        if options:
            raise InvalidInput(
                f"the local source takes no options, got {', '.join(sorted(options))}"
            )

    def _object(self, path: Path, key: str) -> SourceObject:
        try:
            st = path.stat()
        except FileNotFoundError as exc:
            raise SourceNotFound(f"{path} does not exist") from exc
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc}") from exc
        if not stat_mod.S_ISREG(st.st_mode):
            raise SourceNotFound(f"{path} is not a regular file")
        return SourceObject(
            url=str(path.resolve()),
            key=key,
            size=st.st_size,
            identity=_identity(st),
            name=path.name,
        )

    def stat(self, url: str) -> SourceObject:
        path = local_path(url)
        if path.is_dir():
            raise SourceNotFound(f"{path} is a folder; copy it as a folder")
        return self._object(path, "")

    def walk(self, url: str) -> Iterator[SourceObject]:
        root = local_path(url)
        if not root.exists():
            raise SourceNotFound(f"{root} does not exist")
        if not root.is_dir():
            yield self._object(root, "")
            return
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                path = Path(folder) / name
                if path.is_symlink() or not path.is_file():
                    continue  # links and special files are not copied
                yield self._object(path, path.relative_to(root).as_posix())

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, obj.size - offset)))
        n = self.read_into(obj, offset, memoryview(buf))
        return bytes(buf[:n])

    def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
        try:
            fd = os.open(obj.url, os.O_RDONLY)
        except FileNotFoundError as exc:
            raise SourceChanged(f"{obj.url} disappeared during the transfer") from exc
        except OSError as exc:
            raise SourceError(f"cannot open {obj.url}: {exc}") from exc
        want = max(0, min(len(buf), obj.size - offset))
        try:
            st = os.fstat(fd)
            if st.st_size != obj.size or _identity(st) != dict(obj.identity):
                raise SourceChanged(
                    f"{obj.url} changed since the transfer started (size "
                    f"{obj.size} -> {st.st_size}, or modified); start a new transfer "
                    "to copy the new version"
                )
            got = 0
            while got < want:
                n = os.preadv(fd, [buf[got:want]], offset + got)
                if n == 0:
                    break
                got += n
        except OSError as exc:
            raise SourceError(f"reading {obj.url} at {offset}: {exc}") from exc
        finally:
            os.close(fd)
        if got != want:
            raise SourceChanged(f"{obj.url} got shorter during the transfer")
        return got


class _LocalWriter(DestinationWriter):
    #: verify chunks through a memory map; set to False on a writer whose
    #: filesystem refused to map the file (then chunks are read back with pread)
    mapped_check = True

    def __init__(
        self,
        final: Path,
        size: int,
        state: Mapping[str, Any] | None,
        fsync: bool = True,
    ) -> None:
        self.final = final
        self.size = size
        self.fsync = fsync
        if final.is_dir():
            raise InvalidInput(
                f"{final} is a folder; copy into it with a trailing '/' or choose "
                "another destination"
            )
        temp = Path(state["temp"]) if state and state.get("temp") else None
        resumed = False
        if temp is not None and temp.parent == final.parent and temp.exists():
            if temp.stat().st_size == size:
                resumed = True
            else:  # a leftover of another size: not ours to resume, not to keep
                temp.unlink(missing_ok=True)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            if not resumed:
                # short enough for any name: the final name may already be 255 bytes
                temp = final.with_name(
                    f".{final.name[:64]}.{secrets.token_hex(4)}.sclib-part"
                )
                _check_space(final.parent, size)
                fd = os.open(temp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    # sized but sparse: posix_fallocate would make every later write
                    # several times slower (ext4 converts unwritten extents)
                    os.ftruncate(fd, size)
                finally:
                    os.close(fd)
            assert temp is not None
            self.temp = temp
            self._fd = os.open(temp, os.O_RDWR)
        except OSError as exc:
            raise DestinationError(f"cannot prepare {final}: {exc}") from exc
        self._buffers = threading.local()
        self.state = {"temp": str(temp), "resumed": resumed}

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self._close_fd()

    def write_chunk(self, chunk: Chunk, data: bytes | memoryview) -> str | None:
        if len(data) != chunk.length:
            raise InvalidInput(
                f"chunk {chunk.index}: got {len(data)} bytes, expected {chunk.length}"
            )
        try:
            written, whole = 0, memoryview(data)
            while written < len(whole):  # pwrite may write less than asked
                piece = whole[written : written + _WRITE_PIECE]
                n = os.pwrite(self._fd, piece, chunk.offset + written)
                if n == 0:
                    raise DestinationError(f"no progress writing {self.temp}")
                written += n
            intact = self._landed(chunk, data)
        except OSError as exc:
            raise DestinationError(
                f"writing chunk {chunk.index} of {self.final}: {exc}"
            ) from exc
        if intact and self.fsync:
            # start writing this chunk to disk now, in the background, so the
            # fsync at commit has little left to do
            start_writeback(self._fd, chunk.offset, chunk.length)
        if not intact:
            raise ChecksumMismatch(
                f"chunk {chunk.index} of {self.final} reads back different bytes"
            )
        return None

    def _landed(self, chunk: Chunk, data: bytes | memoryview) -> bool:
        """Whether the file now holds ``data`` at the chunk's offset.

        Compared through a memory map of the written range (no copy, no GIL; see
        :mod:`sclib.transfers._landed`); where the filesystem cannot map files,
        read back with ``pread`` through a small per-thread buffer instead.
        """
        if self.mapped_check:
            try:
                return mapped_equal(self._fd, chunk.offset, data)
            except (OSError, ValueError) as exc:
                log.info(
                    "cannot memory-map %s (%s); verifying chunks with pread instead",
                    self.temp,
                    exc,
                )
                self.mapped_check = False
        buf: bytearray | None = getattr(self._buffers, "buf", None)
        if buf is None:
            buf = self._buffers.buf = bytearray(_READBACK)
        view, src = memoryview(buf), memoryview(data)
        for start in range(0, chunk.length, _READBACK):
            n = min(_READBACK, chunk.length - start)
            got = os.preadv(self._fd, [view[:n]], chunk.offset + start)
            # bytearray == view compares with memcmp; view == view would go
            # byte by byte holding the GIL
            landed = buf if n == len(buf) else buf[:n]
            if got != n or landed != src[start : start + n]:
                return False
        return True

    def read_back(self, chunk: Chunk) -> bytes | None:
        try:
            return os.pread(self._fd, chunk.length, chunk.offset)
        except OSError as exc:
            raise DestinationError(f"reading back {self.temp}: {exc}") from exc

    def commit(self, tokens: Mapping[int, str | None]) -> None:
        try:
            if self._fd >= 0:
                if self.fsync:
                    os.fsync(self._fd)
                self._close_fd()
            os.replace(self.temp, self.final)
            if self.fsync:
                dir_fd = os.open(self.final.parent, os.O_RDONLY)
                try:
                    os.fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        except OSError as exc:
            error = DestinationError(f"cannot commit {self.final}: {exc}")
            if isinstance(
                exc, IsADirectoryError | NotADirectoryError | FileExistsError
            ):
                error.retryable = False  # trying again cannot help
            raise error from exc

    def abort(self) -> None:
        self._close_fd()
        try:
            self.temp.unlink(missing_ok=True)
        except OSError as exc:
            raise DestinationError(f"cannot remove {self.temp}: {exc}") from exc


class LocalDestination(Destination):
    """A local folder (or, for a single object, a file path).

    :param fsync: sync each file (and its folder) to disk before it counts as
        copied (default). ``False`` leaves the data in the page cache, like ``cp``:
        faster, and it still survives the process dying, but not a power loss.
    """

    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root)
        self.fsync = fsync

    def _final(self, key: str) -> Path:
        if not key:
            return self.root
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts) or key.startswith("/"):
            raise InvalidInput(
                f"refusing object name {key!r}: it would leave the destination folder"
            )
        final = self.root.joinpath(*parts)
        if not final.resolve().is_relative_to(self.root.resolve()):
            raise InvalidInput(f"refusing object name {key!r}: it leaves {self.root}")
        return final

    def url_for(self, key: str) -> str:
        return str(self._final(key))

    def open(
        self,
        key: str,
        size: int,
        chunk_size: int,
        state: Mapping[str, Any] | None = None,
    ) -> DestinationWriter:
        return _LocalWriter(self._final(key), size, state, self.fsync)

    def exists(self, key: str) -> bool:
        return self._final(key).is_file()
