"""Local resume state of large-file uploads: which upload a file was sent under.

When :meth:`Client.upload_file` starts a chunked upload it writes a small JSON
file naming the server's ``upload_id`` and the chunk size. The file is keyed by
the *content identity* of what is being sent: the server address, the absolute
path, the size, the modification time (ns) and the inode. Re-running the same
upload after a crash, in the same or a new process, finds the entry, asks the
server which chunks are missing and sends only those. A file that changed (new
size or mtime) gets a new key, so it is never resumed into an old upload.

Entries live in ``$XDG_CACHE_HOME/sclib/uploads`` (``~/.cache/sclib/uploads``
when the variable is unset), one file per upload, each written atomically
(temporary file + :func:`os.replace`), and removed once the server accepted the
completed upload.

:meth:`Client.upload_directory` keeps one more entry per folder being uploaded
(under ``folders/``, keyed by server, folder and dataset fields): the dataset the
first file created and, per relative path, the content key and result of every
file the server accepted. Re-running the same call after a crash adds the
remaining files to that dataset and sends none of the finished ones again (a file
modified since gets a new content key and is sent, which the server refuses: the
dataset has that name already). The entry is removed once the whole folder is
uploaded; one naming a dataset the server no longer has (or shows to this caller)
is dropped, and the folder goes into a new dataset.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "UploadState",
    "UploadStateStore",
    "content_key",
    "default_state_dir",
    "folder_key",
]

log = logging.getLogger(__name__)

_VERSION = 1


def default_state_dir() -> Path:
    """``$XDG_CACHE_HOME/sclib/uploads``, or ``~/.cache/sclib/uploads``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
        os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "sclib" / "uploads"


def content_key(server: str, path: str | os.PathLike[str], st: os.stat_result) -> str:
    """The key of one file's upload to one server (a hex digest).

    It changes when the file is replaced or modified, so a changed file starts a
    new upload instead of mixing old and new bytes.
    """
    identity = [
        server.rstrip("/"),
        os.path.abspath(path),
        st.st_size,
        st.st_mtime_ns,
        st.st_ino,
    ]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


def folder_key(server: str, root: str | os.PathLike[str], fields: str) -> str:
    """The key of one folder's upload to one server with one set of dataset
    fields (``fields``: their digest)."""
    identity = [server.rstrip("/"), os.path.abspath(root), fields]
    return hashlib.sha256(json.dumps(identity).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class UploadState:
    """What is remembered about one unfinished chunked upload."""

    upload_id: str
    chunk_size: int
    total_chunks: int
    size: int
    path: str
    server: str
    #: digest of the dataset fields the upload was started with: other fields
    #: (another dataset, another folder) must not continue this upload
    fields: str = ""
    created_at: float = field(default_factory=time.time)
    #: how chunk digests are sent: "blake3" (each chunk's own hash) or
    #: "blake3-cv" (its chaining value; the server said it takes them)
    chunk_hash: str = "blake3"


def _read_entry(
    path: Path, what: str, valid: Callable[[dict[str, Any]], bool]
) -> dict[str, Any] | None:
    """The JSON object in ``path`` without its ``version``; ``None`` (with a
    warning naming ``what``) when it is missing, unreadable, of another version,
    or not ``valid``."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable %s %s: %s", what, path, exc)
        return None
    if (
        not isinstance(raw, dict)
        or raw.pop("version", None) != _VERSION
        or not valid(raw)
    ):
        log.warning("ignoring %s %s of another format", what, path)
        return None
    return raw


class UploadStateStore:
    """One JSON file per unfinished upload in ``directory``."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.directory = Path(directory) if directory else default_state_dir()

    def __repr__(self) -> str:
        return f"UploadStateStore({str(self.directory)!r})"

    def _file(self, key: str) -> Path:
        if not key or not all(c in "0123456789abcdef" for c in key):
            raise ValueError(f"not a state key: {key!r}")
        return self.directory / f"{key}.json"

    def load(self, key: str) -> UploadState | None:
        """The entry under ``key``; ``None`` when there is none or it is unreadable."""
        path = self._file(key)
        raw = _read_entry(path, "upload state", lambda raw: True)
        if raw is None:
            return None
        try:
            return UploadState(**raw)
        except TypeError as exc:
            log.warning("ignoring malformed upload state %s: %s", path, exc)
            return None

    def save(self, key: str, state: UploadState) -> None:
        """Write the entry under ``key`` atomically (readers see old or new)."""
        self._write(self._file(key), {"version": _VERSION, **asdict(state)})

    def _folder_file(self, key: str) -> Path:
        return self.directory / "folders" / self._file(key).name

    def load_folder(self, key: str) -> dict[str, Any] | None:
        """A folder upload's progress: ``{"dataset_uuid": ..., "files": {relative
        path: {"key": content key, "attempt": Idempotency-Key, "result":
        {...}}}}`` (no ``result`` yet: sent, answer not seen); ``None`` when
        there is none or it is unreadable."""
        return _read_entry(
            self._folder_file(key),
            "folder upload state",
            lambda raw: (
                isinstance(raw.get("files"), dict)
                and isinstance(raw.get("dataset_uuid"), str | None)
            ),
        )

    def save_folder(self, key: str, progress: dict[str, Any]) -> None:
        """Write a folder upload's progress atomically."""
        self._write(self._folder_file(key), {"version": _VERSION, **progress})

    def remove_folder(self, key: str) -> None:
        """Forget a folder upload's progress (no error when there is none)."""
        with contextlib.suppress(FileNotFoundError):
            self._folder_file(key).unlink()

    def _write(self, target: Path, content: dict[str, Any]) -> None:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        payload = json.dumps(content, sort_keys=True)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{target.stem}.", suffix=".tmp", dir=target.parent
        )
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(payload)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def remove(self, key: str) -> None:
        """Forget the entry under ``key`` (no error when there is none)."""
        with contextlib.suppress(FileNotFoundError):
            self._file(key).unlink()

    def keys(self) -> Iterator[str]:
        """The keys of every stored entry."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("*.json")):
            yield path.stem

    def __len__(self) -> int:
        return sum(1 for _ in self.keys())
