"""Downloading a dataset into a folder: where each file goes, and its partial copy.

The flow (``BaseClient._download_flow``) lists the dataset's files, checks every
path the server sent *before* writing anything (:class:`DownloadPlan`), then
fetches the files one by one into partial copies (:class:`PartialFile`) that are
verified against the listed BLAKE3 and only then renamed into place.

Where bytes go:

* ``<folder>/<path>`` for a dataset's file, ``<folder>/<outputs_dir>/<path>`` for
  a file of its converted output;
* ``<folder>/.sclib-download/<blake3>.part`` while a file is on its way. A run
  that stops (a dropped connection, the process killed) leaves it; the next run
  continues it with ``Range: bytes=<its length>-`` and ``If-Range: "<blake3>"``,
  so the server sends the rest only if the file is still the one listed (else
  the whole file, which replaces the partial copy). The partial copy's name is
  its expected digest: a file that changed on the server never continues an
  older version's bytes. The folder is removed once every file is in place.

A hostile or broken server cannot write outside the folder: a listed path must
be a clean relative path (:func:`sclib.paths.safe_relative_path`), must not lie
in ``.sclib-download``, must not clash with another listed file, and is never
written through a symbolic link (an existing link on the way, or at the file
itself, is refused). A file that arrives longer than listed, with a
``Content-Range`` other than the one asked for, or whose BLAKE3 differs, is
refused and its partial copy deleted.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib.errors import ChecksumMismatch, InvalidInput, SourceChanged
from sclib.paths import safe_relative_path
from sclib.transfers.hashing import new_blake3

from ._errors import ServerError
from .models import DownloadEntry

__all__ = [
    "STATE_DIR",
    "DownloadPlan",
    "FileProgress",
    "PartialFile",
    "Target",
]

#: the folder (inside the download folder) that holds partial copies
STATE_DIR = ".sclib-download"
_PART = ".part"
_READ = 1024**2


@dataclass(frozen=True)
class Target:
    """One listed file and the local path it goes to."""

    entry: DownloadEntry
    parts: tuple[str, ...]  # the local path's names below the folder

    @property
    def relative(self) -> str:
        return "/".join(self.parts)


class DownloadPlan:
    """The download folder: where each listed file goes, checked up front."""

    def __init__(self, folder: str | os.PathLike[str], outputs_dir: str) -> None:
        self.root = Path(os.path.abspath(folder))
        clean = safe_relative_path(outputs_dir, "outputs_dir")
        if not clean or clean.split("/")[0] == STATE_DIR:
            raise InvalidInput(
                f"outputs_dir {outputs_dir!r} must name a folder other than {STATE_DIR}"
            )
        self.outputs_dir = tuple(clean.split("/"))
        self.state = self.root / STATE_DIR

    def targets(self, entries: Iterable[DownloadEntry]) -> list[Target]:
        """Every entry with its local path; :class:`ServerError` if the server
        listed a path that is not safe, or two that clash (nothing is written
        then); :class:`InvalidInput` if a link in the folder is in the way."""
        found: list[Target] = []
        seen: dict[tuple[str, ...], str] = {}
        for entry in entries:
            try:
                clean = safe_relative_path(entry.path, "path")
            except InvalidInput as exc:
                raise ServerError(
                    f"the server listed an unsafe path: {exc}; nothing was downloaded"
                ) from None
            if not clean or clean != entry.path:
                raise ServerError(
                    f"the server listed the path {entry.path!r}, which is not a clean "
                    "relative path; nothing was downloaded"
                )
            parts = tuple(clean.split("/"))
            if entry.kind == "output":
                parts = self.outputs_dir + parts
            if parts[0] == STATE_DIR:
                raise ServerError(
                    f"the server listed {entry.path!r}, inside {STATE_DIR}, where "
                    "partial copies are kept; nothing was downloaded"
                )
            if parts in seen:
                raise ServerError(
                    f"the server listed {seen[parts]!r} and {entry.path!r} "
                    f"({entry.kind}), which both go to {'/'.join(parts)}; nothing "
                    "was downloaded"
                )
            seen[parts] = f"{entry.path} ({entry.kind})"
            found.append(Target(entry, parts))
        for target in found:
            for n in range(1, len(target.parts)):
                if target.parts[:n] in seen:
                    raise ServerError(
                        f"the server listed {'/'.join(target.parts[:n])!r} as a file "
                        f"and as the folder of {target.entry.path!r}; nothing was "
                        "downloaded"
                    )
            self.check(target)
        return found

    def path(self, target: Target) -> Path:
        return self.root.joinpath(*target.parts)

    def check(self, target: Target) -> None:
        """Refuse to write ``target`` through a link, or over a folder."""
        current = self.root
        for i, name in enumerate(target.parts):
            current = current / name
            try:
                st = current.lstat()
            except FileNotFoundError:
                return
            last = i == len(target.parts) - 1
            if stat.S_ISLNK(st.st_mode):
                raise InvalidInput(
                    f"{current} is a symbolic link; a download never writes through "
                    "one (remove it, or download into another folder)"
                )
            if last and not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{current} is in the way of {target.relative}")
            if not last and not stat.S_ISDIR(st.st_mode):
                raise InvalidInput(
                    f"{current} is a file, but {target.relative} needs it as a folder"
                )

    def make_parents(self, target: Target) -> Path:
        """Create ``target``'s folders (never through a link); its path."""
        self.check(target)
        current = self.root
        for name in target.parts[:-1]:
            current = current / name
            with contextlib.suppress(FileExistsError):
                os.mkdir(current)
        self.check(target)
        return self.path(target)

    def intact(self, target: Target) -> bool:
        """Whether the file is already there with the listed size and BLAKE3."""
        self.check(target)
        path = self.path(target)
        try:
            st = path.lstat()
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode) or st.st_size != target.entry.size:
            return False
        hasher = new_blake3()
        with open(path, "rb") as fh:
            while data := fh.read(_READ):
                hasher.update(data)
        return bool(hasher.hexdigest() == target.entry.blake3)

    def partial(self, target: Target) -> Path:
        """The partial copy of ``target`` (named after its expected digest)."""
        return self.state / f"{target.entry.blake3}{_PART}"

    def finish(self) -> None:
        """Every file is in place: remove the partial copies and their folder."""
        if not self.state.is_dir() or self.state.is_symlink():
            return
        for item in self.state.iterdir():
            if item.name.endswith(_PART) and not item.is_symlink() and item.is_file():
                item.unlink()
        with contextlib.suppress(OSError):
            self.state.rmdir()


class FileProgress:
    """How many bytes of one file are held, told to the whole download's
    progress as a change."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self._advance = advance
        self.held = 0

    def set(self, n: int) -> None:
        self._advance(n - self.held)
        self.held = n


class PartialFile:
    """The partial copy of one file: continued from its length, hashed as it
    grows, checked and renamed into place when complete.

    :meth:`open` reads (and hashes) what an earlier run left, so it is blocking
    work; :meth:`begin`, :meth:`write` and :meth:`close` are what a driver calls
    while a response streams in."""

    def __init__(
        self, path: Path, size: int, blake3: str, progress: FileProgress
    ) -> None:
        self.path = path
        self.size = size
        self.blake3 = blake3
        self.progress = progress
        self.offset = 0
        self.received = 0  # bytes from the network into this copy, this run
        self._hasher: Any = new_blake3(threads=False)
        self._fd: int | None = None

    @property
    def etag(self) -> str:
        return f'"{self.blake3}"'

    @classmethod
    def open(
        cls, path: Path, size: int, blake3: str, progress: FileProgress
    ) -> PartialFile:
        """The partial copy at ``path``, created or continued (a longer one,
        or anything but a regular file, is deleted first)."""
        part = cls(path, size, blake3, progress)
        path.parent.mkdir(exist_ok=True)
        if path.parent.is_symlink():
            raise InvalidInput(f"{path.parent} is a symbolic link; not writing there")
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(path, flags, 0o600)
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
            path.unlink()  # a link where a partial copy should be
            fd = os.open(path, flags, 0o600)
        part._fd = fd
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise InvalidInput(f"{path} is not a regular file")
            if st.st_size > size:
                os.ftruncate(fd, 0)
            else:
                part._hash_prefix(st.st_size)
            part.offset = os.lseek(fd, 0, os.SEEK_END)
        except BaseException:
            part.close()
            raise
        progress.set(part.offset)
        return part

    def _hash_prefix(self, length: int) -> None:
        assert self._fd is not None
        position = 0
        while position < length:
            data = os.pread(self._fd, min(_READ, length - position), position)
            if not data:
                break
            self._hasher.update(data)
            position += len(data)

    def request_headers(self) -> dict[str, str]:
        """What to ask the server for: the rest of the file, if it is unchanged."""
        headers = {"Accept": "*/*", "Accept-Encoding": "identity"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
            headers["If-Range"] = self.etag
        return headers

    def begin(self, status: int, headers: Mapping[str, str]) -> None:
        """The answer's head: 200 (the whole file, from the start) or 206 (the
        rest, from exactly :attr:`offset`)."""
        etag = headers.get("etag")
        if etag is not None and etag.strip() != self.etag:
            raise SourceChanged(
                f"{self.path.name}: the server now has another version of the file "
                f"(ETag {etag[:80]}); list the dataset again"
            )
        if status == 206:
            expected = f"bytes {self.offset}-{self.size - 1}/{self.size}"
            got = (headers.get("content-range") or "").strip()
            if got != expected:
                self._discard()
                raise ServerError(
                    f"asked for bytes {self.offset}- of {self.size}, the server sent "
                    f"Content-Range {got[:80]!r}; the partial copy was deleted"
                )
            return
        if status != 200:
            raise ServerError(f"unexpected HTTP {status} for a file")
        length = headers.get("content-length")
        if length is not None and length.strip() != str(self.size):
            raise SourceChanged(
                f"the server sends {length[:20]} bytes for a file listed with "
                f"{self.size}; list the dataset again"
            )
        if self.offset:  # the whole file: start the copy over
            self._restart()

    def write(self, data: bytes) -> None:
        """Append bytes of the answer."""
        assert self._fd is not None
        if self.offset + len(data) > self.size:
            self._discard()
            raise ServerError(
                f"the server sent more than the {self.size} bytes listed for the "
                "file; the partial copy was deleted"
            )
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._hasher.update(data)
        self.offset += len(data)
        self.received += len(data)
        self.progress.set(self.offset)

    @property
    def complete(self) -> bool:
        return self.offset == self.size

    def close(self) -> None:
        """Close the copy (what arrived stays for the next try)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def settle(self, plan: DownloadPlan, target: Target) -> None:
        """Verify the complete copy and rename it to ``target``; a copy whose
        BLAKE3 differs is deleted and :class:`ChecksumMismatch` raised."""
        assert self.complete
        digest = self._hasher.hexdigest()
        if digest != self.blake3:
            self._discard()
            raise ChecksumMismatch(
                f"{target.relative}: BLAKE3 {digest} differs from the listed "
                f"{self.blake3}; the copy was deleted"
            )
        assert self._fd is not None
        os.fsync(self._fd)
        self.close()
        os.replace(self.path, plan.make_parents(target))

    def _restart(self) -> None:
        assert self._fd is not None
        os.ftruncate(self._fd, 0)
        os.lseek(self._fd, 0, os.SEEK_SET)
        self._hasher = new_blake3(threads=False)
        self.offset = 0
        self.progress.set(0)

    def _discard(self) -> None:
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.offset = 0
        self.progress.set(0)
