"""The receive engine's ground floor: an upload's state (the :class:`Upload`
view over its session), its folders, creating and finding uploads, and the
limits a new upload must pass (see :mod:`sclib.transfers.receive`)."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sclib.datasets.fields import DatasetFields, safe_filename, safe_join
from sclib.errors import (
    InsufficientStorage,
    InvalidInput,
    LimitReached,
    NotFound,
    SessionNotFound,
    TooLarge,
    UploadConflict,
)
from sclib.models import new_job_id
from sclib.transfers._writeback import allocate
from sclib.transfers.hashing import CV_HASH, tree_hashing
from sclib.transfers.locks import WriteLock, lock_chunk, lock_upload
from sclib.transfers.sessions import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    SessionStore,
    TransferSession,
)
from sclib.transfers.staging import (
    disk_errors,
)

__all__ = [
    "LARGE",
    "MAX_CHUNKS",
    "STANDARD",
    "TUS",
    "ReceiverBase",
    "Upload",
    "UploadNotFound",
]

log = logging.getLogger("sclib.transfers.receive")

LARGE, TUS, STANDARD = "large", "tus", "standard"
_PREFIX = "upload:"
MAX_CHUNKS = 100_000  # chunks per upload: bounds every per-upload list


class UploadNotFound(NotFound):
    """No upload with this id (or not one the caller may see)."""


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _disk_free(path: Path) -> int:
    return shutil.disk_usage(path).free


@dataclass(frozen=True, slots=True)
class Upload:
    """An upload as the routes see it (a view over its session)."""

    id: str
    protocol: str
    owner: str
    filename: str
    size: int | None
    chunk_size: int
    fields: DatasetFields | None
    dataset_uuid: str | None
    status: str
    offset: int
    chunks: frozenset[int]
    metadata: Mapping[str, str]
    expected: Mapping[str, str]
    result: Mapping[str, Any] | None
    created_at: datetime
    updated_at: datetime
    state: Mapping[str, Any] = field(repr=False, default_factory=dict)

    @property
    def total_chunks(self) -> int:
        if self.size is None:
            return 0
        return max(1, -(-self.size // self.chunk_size))

    @property
    def missing_chunks(self) -> list[int]:
        return self.missing(limit=None)

    def missing(self, limit: int | None = 1000) -> list[int]:
        """Chunk indexes not received yet, the first ``limit`` of them."""
        out: list[int] = []
        for i in range(self.total_chunks):
            if i not in self.chunks:
                out.append(i)
                if limit is not None and len(out) >= limit:
                    break
        return out

    @property
    def bytes_received(self) -> int:
        if self.protocol != LARGE:
            return self.offset
        total = 0
        for index in self.chunks:
            total += self.chunk_length(index)
        return total

    def chunk_length(self, index: int) -> int:
        assert self.size is not None
        return max(0, min(self.chunk_size, self.size - index * self.chunk_size))

    @property
    def complete(self) -> bool:
        return self.status == COMPLETED


def _copy_bytes(src: int, dst: int, length: int, position: int) -> int:
    """Copy ``length`` bytes from the start of ``src`` to ``dst`` at ``position``
    (in the kernel where it can); the count copied (less only at end of file)."""
    done = 0
    try:
        while done < length:
            n = os.copy_file_range(src, dst, length - done, done, position + done)
            if n == 0:
                return done
            done += n
        return done
    except (AttributeError, OSError) as exc:  # no such call, or not between these
        if isinstance(exc, OSError) and exc.errno not in (
            errno.EXDEV,
            errno.ENOSYS,
            errno.EINVAL,
            errno.EOPNOTSUPP,
        ):
            raise
    while done < length:
        data = os.pread(src, min(8 * 1024**2, length - done), done)
        if not data:
            break
        view = memoryview(data)
        while view:
            n = os.pwrite(dst, view, position + done)
            view = view[n:]
            done += n
    return done


def _idempotent_key(owner: str, idempotency_key: str) -> str:
    """The session key of an upload sent with an ``Idempotency-Key``: per owner,
    so one user's key never finds another's upload."""
    digest = hashlib.sha256(f"{owner}\0{idempotency_key}".encode()).hexdigest()
    return f"{_PREFIX}idempotent:{digest}"


def _view(session: TransferSession) -> Upload:
    st = session.state
    fields = DatasetFields.model_validate(st["fields"]) if st.get("fields") else None
    return Upload(
        id=session.id,
        protocol=st["protocol"],
        owner=st["owner"],
        filename=st["filename"],
        size=st.get("length"),
        chunk_size=session.chunk_size,
        fields=fields,
        dataset_uuid=st.get("dataset_uuid"),
        status=session.status,
        offset=int(st.get("offset", 0)),
        chunks=frozenset(session.chunks),
        metadata=st.get("metadata") or {},
        expected=st.get("expected") or {},
        result=st.get("result"),
        created_at=session.created_at,
        updated_at=session.updated_at,
        state=st,
    )


class ReceiverBase:
    """Creates, receives, verifies and commits uploads; see the module docstring.

    It knows bytes, not jobs: once a file is committed into its dataset folder it
    calls :meth:`committed`, which the server's
    :class:`~sclib.server.uploads.UploadManager` extends to record the dataset
    and enqueue the ``upload`` job.

    :param sessions: where upload state lives (shared by every server process).
    :param data_dir: the data folder (``upload/``, ``tmp/`` live under it).
    :param free_space: bytes free on the disk holding a folder (injectable for
        tests; a tus concatenation checks it before copying its parts).
    """

    def __init__(
        self,
        sessions: SessionStore,
        data_dir: Path,
        *,
        chunk_size: int = 32 * 1024**2,
        max_chunk_size: int = 1024**3,
        max_upload_size: int = 10 * 1024**4,
        expiry: timedelta = timedelta(hours=24),
        clock: Callable[[], datetime] = _utcnow,
        free_space: Callable[[Path], int] = _disk_free,
        disk_reserve: tuple[int, float] = (0, 0.0),
        max_open_uploads: int | None = None,
        max_staged_bytes: int | None = None,
        direct_io: bool = False,
    ) -> None:
        self.sessions = sessions
        #: large aligned writes bypass the page cache (``O_DIRECT``)
        self.direct_io = direct_io
        self.free_space = free_space
        self.disk_reserve = disk_reserve
        self.max_open_uploads = max_open_uploads
        self.max_staged_bytes = max_staged_bytes
        self.data_dir = Path(data_dir)
        self.chunk_size = chunk_size
        self.max_chunk_size = max_chunk_size
        self.max_upload_size = max_upload_size
        self.expiry = expiry
        self.clock = clock
        self.upload_root = self.data_dir / "upload"
        self.staging_root = self.data_dir / "tmp" / "uploads"
        self.upload_root.mkdir(parents=True, exist_ok=True)
        self.staging_root.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def chunk_hashes(chunk_size: int) -> list[str]:
        """The chunk digests this server takes for chunks of ``chunk_size``
        bytes: ``blake3-cv`` (a chunk's BLAKE3 chaining value, so the client
        hashes every byte once) needs the compiled ``sclib_blake3tree`` module,
        and chunks that are whole subtrees of BLAKE3's tree (a power-of-two
        size)."""
        cv = tree_hashing() and chunk_size & (chunk_size - 1) == 0
        return ["sha256", "blake3", *([CV_HASH] if cv else [])]

    # -- paths -----------------------------------------------------------------------

    def staging_dir(self, upload_id: str) -> Path:
        return self.staging_root / upload_id

    def staging_file(self, upload_id: str) -> Path:
        return self.staging_dir(upload_id) / "data"

    def _lock_file(self, upload_id: str) -> Path:
        return self.staging_dir(upload_id) / "lock"

    def _lock(self, upload: Upload, index: int | None = None) -> WriteLock:
        """The upload's (or one chunk's) write lock. Its staging folder is gone
        once the upload finished, was cancelled or expired: then a conflict."""
        try:
            if index is None:
                return lock_upload(self._lock_file(upload.id), upload.id)
            return lock_chunk(self._lock_file(upload.id), upload.id, index)
        except FileNotFoundError:
            fresh = self.get(upload.id)
            raise UploadConflict(
                f"upload {upload.id} is {fresh.status}; it takes no more data"
            ) from None

    def dataset_dir(self, dataset_uuid: str) -> Path:
        return self.upload_root / dataset_uuid

    def final_path(self, upload: Upload) -> Path:
        assert upload.fields is not None and upload.dataset_uuid is not None
        return safe_join(
            self.dataset_dir(upload.dataset_uuid),
            upload.fields.relative_path,
            upload.filename,
        )

    # -- creating --------------------------------------------------------------------

    def check_size(self, size: int | None, what: str = "file_size") -> None:
        if size is None:
            return
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"{what} must be a non-negative integer, got {size!r}")
        if size > self.max_upload_size:
            raise TooLarge(
                f"{what} {size} is above this server's limit of "
                f"{self.max_upload_size} bytes"
            )

    def reserve(self) -> int:
        """Bytes kept free on the data folder's disk (``SCLIB_DISK_RESERVE``)."""
        fixed, share = self.disk_reserve
        if share:
            fixed = max(fixed, int(shutil.disk_usage(self.staging_root).total * share))
        return fixed

    def check_space(self, size: int, what: str = "the upload") -> None:
        """Refuse (507) an upload of ``size`` bytes that the disk cannot hold
        without eating into the reserve."""
        free = self.free_space(self.staging_root)
        reserve = self.reserve()
        if size + reserve > free:
            raise InsufficientStorage(
                f"{what} needs {size:,} bytes: the server's disk has {free:,} free "
                f"and keeps {reserve:,} in reserve (SCLIB_DISK_RESERVE); try again "
                "once space is freed"
            )

    def _space_guard(
        self, upload: Upload, side_file: bool = False
    ) -> Callable[[int], None] | None:
        """For bytes whose space was not reserved when the upload began (a
        length not known then, or a chunk sent again to a file of its own): a
        check before each batch that the disk keeps its reserve, so the database
        and cancellations keep working while it fills."""
        if upload.state.get("allocated") and not side_file:
            return None

        def guard(length: int) -> None:
            self.check_space(length, f"upload {upload.id}")

        return guard

    def check_user_limits(self, owner: str, size: int | None) -> None:
        """Refuse (429) a new upload past the owner's open uploads
        (``SCLIB_MAX_OPEN_UPLOADS``) or declared bytes (``SCLIB_MAX_STAGED_BYTES``)."""
        if self.max_open_uploads is None and self.max_staged_bytes is None:
            return
        mine = [
            s
            for s in self.sessions.list(status=ACTIVE, key_prefix=_PREFIX, limit=10**6)
            if s.state.get("owner") == owner
        ]
        if self.max_open_uploads is not None and len(mine) >= self.max_open_uploads:
            raise LimitReached(
                f"{owner} has {len(mine)} unfinished uploads, the most this server "
                f"allows (SCLIB_MAX_OPEN_UPLOADS={self.max_open_uploads}); finish or "
                "cancel some first"
            )
        if self.max_staged_bytes is not None and size:
            staged = sum(int(s.state.get("length") or 0) for s in mine)
            if staged + size > self.max_staged_bytes:
                raise LimitReached(
                    f"{owner}'s unfinished uploads declare {staged:,} bytes; "
                    f"{size:,} more would pass the limit of "
                    f"{self.max_staged_bytes:,} (SCLIB_MAX_STAGED_BYTES); finish or "
                    "cancel some first"
                )

    def create(
        self,
        *,
        protocol: str,
        owner: str,
        filename: str,
        size: int | None,
        fields: DatasetFields | None,
        dataset_uuid: str | None,
        chunk_size: int | None = None,
        expected: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
        concat: Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> Upload:
        """Start an upload; nothing is written to the dataset folder yet.

        With ``idempotency_key`` (the client's ``Idempotency-Key``), the upload
        can be found again by :meth:`find_idempotent` once committed, so that a
        request sent again after its answer was lost is not stored twice.

        ``concat`` marks a tus concatenation upload: ``{"kind": "partial"}`` (its
        bytes wait to be joined, it is never committed on its own) or
        ``{"kind": "final", "parts": [ids]}`` (filled by :meth:`concatenate`)."""
        safe_filename(filename)
        self.check_size(size)
        chunk = chunk_size or self.chunk_size
        if chunk_size is None and size is not None and protocol == LARGE:
            # the default grows for huge files so the count stays bounded
            while -(-size // chunk) > MAX_CHUNKS and chunk * 2 <= self.max_chunk_size:
                chunk *= 2
        if not 1024 <= chunk <= self.max_chunk_size:
            raise InvalidInput(
                f"chunk_size must lie in 1024..{self.max_chunk_size}, got {chunk}"
            )
        if size is not None and protocol == LARGE and -(-size // chunk) > MAX_CHUNKS:
            least = -(-size // MAX_CHUNKS)
            raise InvalidInput(
                f"chunk_size {chunk} makes more than {MAX_CHUNKS} chunks for "
                f"{size} bytes; use at least {least}"
            )
        expected = {k: v.lower() for k, v in (expected or {}).items()}
        for name, value in expected.items():
            if (
                name not in ("sha256", "blake3")
                or len(value) != 64
                or any(c not in "0123456789abcdef" for c in value)
            ):
                raise InvalidInput(f"file_hash: {value!r} is not a {name} hex digest")
        if fields is not None and dataset_uuid is not None:
            self._check_free(fields, dataset_uuid, filename)
        if concat is None or concat.get("kind") != "final":
            self.check_user_limits(owner, size)
        if size:
            self.check_space(size, f"a file of {size:,} bytes")
        upload_id = new_job_id()
        now = self.clock()
        state: dict[str, Any] = {
            "protocol": protocol,
            "owner": owner,
            "filename": filename,
            "length": size,
            "fields": fields.model_dump(mode="json") if fields else None,
            "dataset_uuid": dataset_uuid,
            "offset": 0,
            "metadata": dict(metadata or {}),
            "expected": expected,
            "result": None,
        }
        if concat is not None:
            state["concat"] = dict(concat)
        self.staging_dir(upload_id).mkdir(parents=True, exist_ok=False)
        staging = self.staging_file(upload_id)
        try:
            # the disk space is reserved now, where the filesystem can: two
            # uploads that each fit cannot both be told they do; elsewhere the
            # file is sparse, no space used until written
            with open(staging, "wb") as f, disk_errors(upload_id):
                if size:
                    state["allocated"] = allocate(f.fileno(), size)
                    if not state["allocated"]:
                        f.truncate(size)
        except BaseException:
            shutil.rmtree(self.staging_dir(upload_id), ignore_errors=True)
            raise
        session = TransferSession(
            id=upload_id,
            key=(
                _idempotent_key(owner, idempotency_key)
                if idempotency_key
                else _PREFIX + upload_id
            ),
            source_url=f"{_PREFIX}{protocol}/{upload_id}",
            dest_url=staging.resolve().as_uri(),
            size=-1 if size is None else size,
            chunk_size=chunk,
            state=state,
            created_at=now,
            updated_at=now,
        )
        try:
            self.sessions.create(session)
        except BaseException:
            shutil.rmtree(self.staging_dir(upload_id), ignore_errors=True)
            raise
        log.info("upload %s (%s) started by %s", upload_id, protocol, owner)
        return _view(session)

    def _check_free(self, fields: DatasetFields, dataset_uuid: str, name: str) -> None:
        """Refuse early when the dataset already has a file by this name."""
        final = safe_join(self.dataset_dir(dataset_uuid), fields.relative_path, name)
        if final.exists():
            where = f"{fields.relative_path}/{name}" if fields.relative_path else name
            raise UploadConflict(
                f"dataset {dataset_uuid} already has {where}; send it under "
                f"another name or relative_path"
            )

    # -- reading ---------------------------------------------------------------------

    def get(self, upload_id: str, owner: str | None = None) -> Upload:
        """The upload; :class:`UploadNotFound` if unknown or, with ``owner``, not
        that owner's (another user's upload looks exactly like a missing one)."""
        try:
            session = self.sessions.get(upload_id)
        except SessionNotFound:
            raise UploadNotFound(f"upload {upload_id} not found") from None
        if not session.key.startswith(_PREFIX):
            raise UploadNotFound(f"upload {upload_id} not found")
        upload = _view(session)
        if owner is not None and upload.owner != owner:
            raise UploadNotFound(f"upload {upload_id} not found")
        return upload

    def expires_at(self, upload: Upload) -> datetime:
        return upload.updated_at + self.expiry

    def _require_active(self, upload: Upload) -> None:
        if upload.status != ACTIVE:
            raise UploadConflict(
                f"upload {upload.id} is {upload.status}; it takes no more data"
            )

    def _joined_into(self, part: Upload) -> str | None:
        """The final upload that holds this part's bytes (claimed, committed or
        being committed); a final that was abandoned holds nothing."""
        concat = part.state.get("concat")
        joined = concat.get("joined_into") if isinstance(concat, Mapping) else None
        if not joined:
            return None
        try:
            final = self.get(str(joined))
        except UploadNotFound:
            return None
        return None if final.status == CANCELLED else str(joined)
