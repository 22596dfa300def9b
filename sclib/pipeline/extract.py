"""Unpacking zip, tar and 7z archives without letting them escape or explode.

:func:`extract_archive` reads a zip, tar, tar.gz, tar.bz2, tar.xz or 7z archive
(the kind is found from the content, not the name; 7z needs the optional
``py7zr``, ``pip install 'sclib[archives]'``) and writes its regular files and
folders under an empty destination folder. Every entry is checked before a single
byte is written; an archive with one bad entry is refused whole, with an
:class:`~sclib.errors.InvalidInput` that names the entry.

Refused (never repaired):

* names that could leave the destination: absolute paths, ``..`` parts,
  backslashes, NUL and other control characters, drive letters (the rules of
  :func:`sclib.paths.safe_relative_path`). The one thing forgiven is a leading
  ``./`` (``tar -C folder -czf x.tgz .`` writes every name that way, and a bare
  ``.`` folder entry), which cannot leave the folder;
* every symbolic or hard link, wherever it points: a tar ``SYMTYPE``/``LNKTYPE``
  member, a zip entry whose Unix mode (high 16 bits of ``external_attr``) says
  link, or a 7z entry py7zr reports as a link or junction. Checking where each
  link lands, and that no later entry writes through one, is easy to get wrong,
  and a dataset does not need links;
* device files, FIFOs and any other member that is not a regular file or folder;
* encrypted zip entries and compression methods :mod:`zipfile` cannot read;
  encrypted 7z archives;
* the same path twice (a folder listed twice is harmless and allowed), and a path
  that is a file in one entry and a folder (or the parent of another entry) in
  another.

Archive bombs are refused by :class:`ExtractLimits` twice: first from the sizes
the archive declares (zip ``file_size``, tar ``size``, 7z ``uncompressed``)
before anything is written, then from the bytes actually written, since a
declared size can lie. Both raise
:class:`~sclib.errors.TooLarge` naming the limit and the entry.

Files are written with mode ``0o644`` and folders ``0o755``: no owner, set-uid or
exec bit comes from the archive. On any exception (a refusal, a corrupt stream, a
``check()`` that cancels) the destination folder is removed, so a caller that
renames it into place afterwards never sees half an archive.
"""

from __future__ import annotations

import lzma
import os
import shutil
import stat
import tarfile
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sclib.errors import InvalidInput, MissingDependency, TooLarge
from sclib.paths import safe_join, safe_relative_path
from sclib.transfers.hashing import new_blake3

__all__ = [
    "ARCHIVE_SUFFIXES",
    "ExtractLimits",
    "ExtractedFile",
    "extract_archive",
    "is_archive",
]

#: File name endings :func:`is_archive` accepts, and the kind each one names.
ARCHIVE_SUFFIXES: dict[str, str] = {
    ".zip": "zip",
    ".tar": "tar",
    ".tar.gz": "tar",
    ".tgz": "tar",
    ".tar.bz2": "tar",
    ".tar.xz": "tar",
    ".7z": "7z",
}
_7Z_MAGIC = b"7z\xbc\xaf\x27\x1c"

BLOCK = 1 << 20
_FILE_MODE = 0o644
_DIR_MODE = 0o755
_ZIP_METHODS = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}
# What a damaged or truncated stream raises while it is read (bz2 raises OSError).
_READ_ERRORS = (
    zipfile.BadZipFile,
    tarfile.TarError,
    EOFError,
    zlib.error,
    lzma.LZMAError,
    OSError,
)


@dataclass(frozen=True)
class ExtractLimits:
    """Bounds on what one archive may unpack to."""

    max_total_size: int = 1 << 40
    """Bytes of all extracted files together."""
    max_files: int = 100_000
    """Entries (files and folders) in the archive."""
    max_ratio: float = 200.0
    """Extracted bytes divided by the archive's size on disk."""
    max_file_size: int | None = None
    """Bytes of any one extracted file (``None``: no bound besides the total)."""


@dataclass(frozen=True)
class ExtractedFile:
    """One regular file written by :func:`extract_archive`."""

    path: str
    """Relative POSIX path inside the destination folder."""
    size: int
    blake3: str
    """BLAKE3 hex digest of the bytes written, computed while writing."""


@dataclass(frozen=True)
class _Entry:
    path: str
    is_dir: bool
    size: int
    member: Any  # zipfile.ZipInfo, tarfile.TarInfo or py7zr's ArchiveFile


def _py7zr() -> Any:
    try:
        import py7zr
    except ImportError as exc:
        raise MissingDependency("py7zr", "archives", "7z extraction") from exc
    return py7zr


def _has_py7zr() -> bool:
    try:
        _py7zr()
    except MissingDependency:
        return False
    return True


def _suffix_kind(name: str) -> str | None:
    lowered = name.lower()
    for suffix, kind in ARCHIVE_SUFFIXES.items():
        if lowered.endswith(suffix):
            return kind
    return None


def _sniff(path: Path) -> str | None:
    """``"zip"``, ``"tar"``, ``"7z"`` or ``None``, from the file's content."""
    try:
        if not path.is_file():
            return None
        with path.open("rb") as fh:
            head = fh.read(6)
        if head == _7Z_MAGIC:
            return "7z"
        # A zip's end record sits near the end of the file, so a tar whose last
        # member is a zip looks like a zip too: trust the zip test first only when
        # the file starts like one.
        if head[:4] in (b"PK\x03\x04", b"PK\x05\x06") and zipfile.is_zipfile(path):
            return "zip"
        if tarfile.is_tarfile(path):
            return "tar"
        if zipfile.is_zipfile(path):
            return "zip"
    except OSError:
        return None
    return None


def is_archive(path: str | Path) -> bool:
    """Whether ``path`` is an archive :func:`extract_archive` unpacks.

    Both the name and the content must say so: the name ends with one of
    :data:`ARCHIVE_SUFFIXES` and the content is an archive of that kind (a text
    file named ``x.zip`` is not an archive; neither is a ``.npz`` or ``.docx``,
    which are zips inside but are data files to keep as they are).
    """
    path = Path(path)
    expected = _suffix_kind(path.name)
    if expected == "7z" and not _has_py7zr():
        return False  # kept as a file where 7z cannot be read
    return expected is not None and _sniff(path) == expected


def _entry_path(name: str) -> str:
    """The checked relative path of an archive entry (``""`` for the root)."""
    stripped = name
    while stripped.startswith("./"):
        stripped = stripped[2:]
    if stripped == ".":
        stripped = ""
    try:
        return safe_relative_path(stripped, field="its name")
    except InvalidInput as exc:
        raise InvalidInput(f"archive entry {name!r} is refused: {exc}") from None


class _Budget:
    """Counts entries and bytes against :class:`ExtractLimits`."""

    def __init__(self, limits: ExtractLimits, archive_size: int, what: str) -> None:
        self.limits = limits
        self.archive_size = max(archive_size, 1)
        self.what = what
        self.entries = 0
        self.total = 0

    def add_entry(self, name: str) -> None:
        self.entries += 1
        if self.entries > self.limits.max_files:
            raise TooLarge(
                f"archive entry {name!r} is entry number {self.entries}, above "
                f"max_files={self.limits.max_files}"
            )

    def add_bytes(self, name: str, file_bytes: int, added: int) -> None:
        self.total += added
        limits = self.limits
        if limits.max_file_size is not None and file_bytes > limits.max_file_size:
            raise TooLarge(
                f"archive entry {name!r} {self.what} {file_bytes} bytes, above "
                f"max_file_size={limits.max_file_size}"
            )
        if self.total > limits.max_total_size:
            raise TooLarge(
                f"archive entry {name!r} brings the {self.what} total to "
                f"{self.total} bytes, above max_total_size={limits.max_total_size}"
            )
        if self.total / self.archive_size > limits.max_ratio:
            raise TooLarge(
                f"archive entry {name!r} brings the {self.what} total to "
                f"{self.total} bytes from a {self.archive_size}-byte archive, a "
                f"ratio above max_ratio={limits.max_ratio:g}"
            )


def _declared_size(member: Any) -> int:
    """The uncompressed size an entry claims."""
    if isinstance(member, zipfile.ZipInfo):
        return int(member.file_size)
    if isinstance(member, tarfile.TarInfo):
        return int(member.size)
    return int(member.uncompressed or 0)  # a 7z ArchiveFile


def _zip_entries(zf: zipfile.ZipFile) -> Iterator[tuple[str, bool, zipfile.ZipInfo]]:
    for info in zf.infolist():
        name = info.orig_filename
        if name != info.filename:  # zipfile cut the name at a NUL
            raise InvalidInput(f"archive entry {name!r} contains a NUL character")
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if stat.S_ISLNK(mode):
            raise InvalidInput(f"archive entry {name!r} is a symbolic link; refused")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise InvalidInput(
                f"archive entry {name!r} is not a regular file or folder "
                f"(mode {mode:o}); refused"
            )
        if info.flag_bits & 0x1:
            raise InvalidInput(f"archive entry {name!r} is encrypted; refused")
        if info.compress_type not in _ZIP_METHODS:
            raise InvalidInput(
                f"archive entry {name!r} uses compression method "
                f"{info.compress_type}, which cannot be read"
            )
        yield name, info.is_dir() or stat.S_ISDIR(mode), info


def _tar_entries(tf: tarfile.TarFile) -> Iterator[tuple[str, bool, tarfile.TarInfo]]:
    for member in tf:
        name = member.name
        if member.issym() or member.islnk():
            raise InvalidInput(
                f"archive entry {name!r} is a link (to {member.linkname!r}); refused"
            )
        if member.ischr() or member.isblk() or member.isfifo():
            raise InvalidInput(
                f"archive entry {name!r} is a device file or FIFO; refused"
            )
        if not (member.isreg() or member.isdir()):
            raise InvalidInput(
                f"archive entry {name!r} has unsupported type {member.type!r}; refused"
            )
        yield name, member.isdir(), member


def _7z_entries(archive: Any) -> Iterator[tuple[str, bool, Any]]:
    if archive.needs_password():
        raise InvalidInput("the 7z archive is encrypted; refused")
    for member in archive.files:
        name = str(member.filename)
        if member.is_symlink or getattr(member, "is_junction", False):
            raise InvalidInput(f"archive entry {name!r} is a link; refused")
        mode = getattr(member, "posix_mode", None) or 0
        kind = stat.S_IFMT(mode)
        if getattr(member, "is_socket", False) or kind not in (
            0,
            stat.S_IFREG,
            stat.S_IFDIR,
        ):
            raise InvalidInput(
                f"archive entry {name!r} is not a regular file or folder "
                f"(mode {mode:o}); refused"
            )
        yield name, bool(member.is_directory), member


def _plan(
    members: Iterable[tuple[str, bool, Any]],
    budget: _Budget,
    check: Callable[[], None] | None,
) -> list[_Entry]:
    """Check every entry (names, types, declared sizes) before anything is written."""
    entries: list[_Entry] = []
    files: dict[str, str] = {}  # path -> entry name as written in the archive
    dirs: dict[str, str] = {}  # path -> an entry that makes it a folder
    for name, is_dir, member in members:
        if check is not None:
            check()
        budget.add_entry(name)
        path = _entry_path(name)
        if path == "":
            if not is_dir:
                raise InvalidInput(f"archive entry {name!r} has no file name")
            continue
        if not is_dir:
            if path in files:
                raise InvalidInput(
                    f"archive entry {name!r} appears more than once "
                    f"(as {files[path]!r} too); refused"
                )
            if path in dirs:
                raise InvalidInput(
                    f"archive entry {name!r} is a file, but {dirs[path]!r} uses "
                    f"{path!r} as a folder; refused"
                )
            files[path] = name
            size = _declared_size(member)
            budget.add_bytes(name, size, size)
        else:
            size = 0
        parents = path.split("/")[:-1] if not is_dir else path.split("/")
        for depth in range(1, len(parents) + 1):
            folder = "/".join(parents[:depth])
            if folder in files:
                raise InvalidInput(
                    f"archive entry {name!r} uses {folder!r} as a folder, but "
                    f"{files[folder]!r} is a file; refused"
                )
            dirs.setdefault(folder, name)
        entries.append(_Entry(path, is_dir, size, member))
    return entries


def _make_dirs(dest: Path, path: str, made: set[str]) -> None:
    parts = path.split("/")
    for depth in range(1, len(parts) + 1):
        rel = "/".join(parts[:depth])
        if rel in made:
            continue
        folder = safe_join(dest, rel)
        folder.mkdir(mode=_DIR_MODE, exist_ok=True)
        if folder.is_symlink() or not folder.is_dir():  # pragma: no cover - defence
            raise InvalidInput(f"archive entry folder {rel!r} is not a folder")
        folder.chmod(_DIR_MODE)
        made.add(rel)


def _read(source: IO[bytes], path: str) -> bytes:
    try:
        return source.read(BLOCK)
    except _READ_ERRORS as exc:
        raise InvalidInput(f"archive entry {path!r} cannot be read: {exc}") from exc


def _write_file(
    source: IO[bytes],
    target: Path,
    entry: _Entry,
    budget: _Budget,
    done: int,
    total: int,
    check: Callable[[], None] | None,
    on_progress: Callable[[int, int], None] | None,
) -> ExtractedFile:
    hasher = new_blake3()
    written = 0
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    flags |= getattr(os, "O_BINARY", 0)
    fd = os.open(target, flags, _FILE_MODE)
    with open(fd, "wb", closefd=True) as out:
        while True:
            if check is not None:
                check()
            block = _read(source, entry.path)
            if not block:
                break
            written += len(block)
            budget.add_bytes(entry.path, written, len(block))
            hasher.update(block)
            out.write(block)
            if on_progress is not None:
                on_progress(done + written, total)
    target.chmod(_FILE_MODE)
    if written != entry.size:
        raise InvalidInput(
            f"archive entry {entry.path!r} declares {entry.size} bytes but holds "
            f"{written}"
        )
    return ExtractedFile(entry.path, written, str(hasher.hexdigest()))


def _open_member(
    archive: zipfile.ZipFile | tarfile.TarFile, entry: _Entry
) -> IO[bytes]:
    try:
        if isinstance(archive, zipfile.ZipFile):
            assert isinstance(entry.member, zipfile.ZipInfo)
            return archive.open(entry.member)
        assert isinstance(entry.member, tarfile.TarInfo)
        source = archive.extractfile(entry.member)
    except _READ_ERRORS as exc:
        raise InvalidInput(
            f"archive entry {entry.path!r} cannot be read: {exc}"
        ) from exc
    if source is None:  # pragma: no cover - only regular files reach here
        raise InvalidInput(f"archive entry {entry.path!r} has no data")
    return source


def _extract(
    archive: zipfile.ZipFile | tarfile.TarFile,
    entries: list[_Entry],
    dest: Path,
    budget: _Budget,
    check: Callable[[], None] | None,
    on_progress: Callable[[int, int], None] | None,
) -> list[ExtractedFile]:
    total = sum(e.size for e in entries if not e.is_dir)
    done = 0
    made: set[str] = set()
    results: list[ExtractedFile] = []
    dest.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    for entry in entries:
        if check is not None:
            check()
        if entry.is_dir:
            _make_dirs(dest, entry.path, made)
            continue
        parent, _, _ = entry.path.rpartition("/")
        if parent:
            _make_dirs(dest, parent, made)
        target = safe_join(dest, entry.path)
        with _open_member(archive, entry) as source:
            result = _write_file(
                source, target, entry, budget, done, total, check, on_progress
            )
        done += result.size
        results.append(result)
    if on_progress is not None:
        on_progress(done, total)
    return sorted(results, key=lambda f: f.path)


def _extract_7z(
    archive: Any,
    entries: list[_Entry],
    dest: Path,
    budget: _Budget,
    check: Callable[[], None] | None,
    on_progress: Callable[[int, int], None] | None,
) -> list[ExtractedFile]:
    """Unpack the planned ``entries`` of a 7z archive through py7zr's writer
    factory: py7zr decompresses, and every byte goes through the same checks,
    budget and hashing as a zip's or a tar's, into files this module creates."""
    py7zr = _py7zr()
    base_io: Any = py7zr.io.Py7zIO
    base_factory: Any = py7zr.io.WriterFactory
    total = sum(e.size for e in entries if not e.is_dir)
    files = {str(e.member.filename): e for e in entries if not e.is_dir}
    made: set[str] = set()
    dest.mkdir(mode=_DIR_MODE, parents=True, exist_ok=True)
    for entry in entries:
        folder = entry.path if entry.is_dir else entry.path.rpartition("/")[0]
        if folder:
            _make_dirs(dest, folder, made)
    results: dict[str, ExtractedFile] = {}
    state = {"done": 0}
    opened: list[Any] = []  # every writer, closed below even if py7zr stopped

    class _Writer(base_io):  # type: ignore[misc]
        def __init__(self, entry: _Entry) -> None:
            self.entry = entry
            self.hasher = new_blake3()
            self.written = 0
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
            self.fd = os.open(safe_join(dest, entry.path), flags, _FILE_MODE)
            opened.append(self)

        def write(self, data: bytes | bytearray) -> int:
            if check is not None:
                check()
            self.written += len(data)
            budget.add_bytes(self.entry.path, self.written, len(data))
            self.hasher.update(data)
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view) :]
            state["done"] += len(data)
            if on_progress is not None:
                on_progress(state["done"], total)
            return len(data)

        def read(self, size: int | None = None) -> bytes:
            return b""

        def seek(self, offset: int, whence: int = 0) -> int:
            return self.written

        def flush(self) -> None:
            return None

        def size(self) -> int:
            return self.written

        def close(self) -> None:
            if self.fd < 0:
                return
            os.close(self.fd)
            self.fd = -1
            entry = self.entry
            if self.written != entry.size:
                raise InvalidInput(
                    f"archive entry {entry.path!r} declares {entry.size} bytes "
                    f"but holds {self.written}"
                )
            results[entry.path] = ExtractedFile(
                entry.path, self.written, str(self.hasher.hexdigest())
            )

    class _Factory(base_factory):  # type: ignore[misc]
        def create(self, filename: str) -> _Writer:
            entry = files.get(filename)
            if entry is None:
                raise InvalidInput(
                    f"archive entry {filename!r} was not among the checked entries"
                )
            return _Writer(entry)

    try:
        # no path: with a factory py7zr writes nothing itself, and names each
        # file as the archive does
        archive.extract(targets=list(files), factory=_Factory())
    except (InvalidInput, TooLarge):
        raise
    except Exception as exc:
        from sclib.errors import SclibError

        if isinstance(exc, SclibError):
            raise  # a cancel or timeout from check()
        raise InvalidInput(f"the 7z archive cannot be read: {exc}") from exc
    finally:
        for writer in opened:  # py7zr does not close a writer it gave up on
            if writer.fd >= 0:
                os.close(writer.fd)
                writer.fd = -1
    for entry in files.values():  # py7zr may not ask for empty files
        if entry.path not in results:
            if entry.size:
                raise InvalidInput(f"archive entry {entry.path!r} was not extracted")
            safe_join(dest, entry.path).touch(mode=_FILE_MODE, exist_ok=False)
            empty = new_blake3().hexdigest()
            results[entry.path] = ExtractedFile(entry.path, 0, str(empty))
    if on_progress is not None:
        on_progress(state["done"], total)
    return sorted(results.values(), key=lambda f: f.path)


def _check_dest(dest: Path) -> None:
    if dest.is_symlink():
        raise InvalidInput(f"extraction folder {str(dest)!r} is a symbolic link")
    if dest.exists():
        if not dest.is_dir():
            raise InvalidInput(f"extraction folder {str(dest)!r} is not a folder")
        if any(dest.iterdir()):
            raise InvalidInput(f"extraction folder {str(dest)!r} is not empty")


def extract_archive(
    archive: Path,
    dest: Path,
    limits: ExtractLimits = ExtractLimits(),
    *,
    check: Callable[[], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
) -> list[ExtractedFile]:
    """Unpack ``archive`` into ``dest``; the files written, sorted by path.

    ``dest`` must not exist yet or be an empty folder. Every entry is checked
    (see the module documentation) before anything is written; a refused entry
    raises :class:`~sclib.errors.InvalidInput` and a limit of ``limits``
    :class:`~sclib.errors.TooLarge`, both naming the entry. Files are written one
    1 MiB block at a time and hashed with BLAKE3 on the way; ``check()`` runs
    before each block (and each entry) and may raise to cancel, and
    ``on_progress(done_bytes, total_bytes)`` runs after each block.

    On any exception ``dest`` is removed with everything written into it.
    """
    archive = Path(archive)
    dest = Path(dest)
    _check_dest(dest)
    try:
        kind = _sniff(archive)
        if kind is None:
            raise InvalidInput(f"{archive.name!r} is not a zip, tar or 7z archive")
        archive_size = archive.stat().st_size
        declared = _Budget(limits, archive_size, "declared")
        written = _Budget(limits, archive_size, "extracted")
        if kind == "7z":
            return _unpack_7z(archive, dest, declared, written, check, on_progress)
        try:
            opened: zipfile.ZipFile | tarfile.TarFile = (
                zipfile.ZipFile(archive)
                if kind == "zip"
                else tarfile.open(archive, "r:*")  # noqa: SIM115 - closed below
            )
        except _READ_ERRORS as exc:
            raise InvalidInput(f"{archive.name!r} cannot be read: {exc}") from exc
        with opened:
            members: Iterable[tuple[str, bool, zipfile.ZipInfo | tarfile.TarInfo]]
            if isinstance(opened, zipfile.ZipFile):
                members = _zip_entries(opened)
            else:
                members = _tar_entries(opened)
            try:
                entries = _plan(members, declared, check)
            except _READ_ERRORS as exc:
                raise InvalidInput(f"{archive.name!r} cannot be read: {exc}") from exc
            return _extract(opened, entries, dest, written, check, on_progress)
    except BaseException:
        if dest.is_symlink() or dest.is_file():  # pragma: no cover - defence
            dest.unlink()
        elif dest.exists():
            shutil.rmtree(dest, ignore_errors=True)
        raise


def _unpack_7z(
    archive: Path,
    dest: Path,
    declared: _Budget,
    written: _Budget,
    check: Callable[[], None] | None,
    on_progress: Callable[[int, int], None] | None,
) -> list[ExtractedFile]:
    py7zr = _py7zr()
    try:
        opened = py7zr.SevenZipFile(archive, mode="r")
    except Exception as exc:  # py7zr's errors have no common base class
        raise InvalidInput(f"{archive.name!r} cannot be read: {exc}") from exc
    with opened:
        entries = _plan(_7z_entries(opened), declared, check)
        return _extract_7z(opened, entries, dest, written, check, on_progress)
