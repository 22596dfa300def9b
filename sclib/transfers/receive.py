"""The receive engine: uploads taken in by the server, whatever the protocol.

Every way of sending a file to the server (one multipart request, the large-file
chunk protocol, tus) goes through :class:`Receiver`; the protocols differ only in
how bytes are addressed (a chunk index, an offset), and the routes are thin HTTP
adapters over it:

* **State** lives in the :class:`~sclib.transfers.sessions.SessionStore` (SQLite or
  MongoDB), never in process memory: which chunks arrived with their BLAKE3
  digests, the tus offset, the dataset fields, the owner. Any server process that
  shares the store and the data folder can continue any upload, and a restart loses
  nothing.
* **Bytes** go to ``<data>/tmp/uploads/<upload_id>/data``, written at their offsets
  (:mod:`sclib.transfers.staging`) and made durable (``fdatasync``) before the
  chunk or offset is recorded. Nothing appears in the dataset folder until the
  whole file is verified; then one link puts it at
  ``<data>/upload/<dataset_uuid>/<relative_path>/<filename>``.
* **One writer** per chunk (chunk protocol) or per upload (tus, completion), held
  with locks that survive neither the request nor the process
  (:mod:`sclib.transfers.locks`).
* **Completion** re-reads the file once, computing BLAKE3 (and SHA-256 when the
  client declared one; when the client gave no whole-file digest, or it does not
  match, every chunk is checked against its record in the same pass: the chunk's
  BLAKE3, or its chaining value when the client sent ``blake3-cv`` digests). It
  reads nothing when every chunk's chaining value was recorded into this staging
  file since this machine booted: the file's BLAKE3 is merged from the records
  (:meth:`Receiver._merged_digest`). Then it commits the file and calls
  :meth:`Receiver.committed` (the server enqueues the ``upload`` job there).
  Completing twice returns the first answer; a crash between the link and the
  answer is repaired on the next call.

Abandoned uploads expire (:meth:`Receiver.expire`, dry run first).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import shutil
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sclib.datasets.fields import DatasetFields, safe_filename, safe_join
from sclib.errors import (
    ChecksumMismatch,
    DestinationError,
    InsufficientStorage,
    InvalidInput,
    LimitReached,
    NotFound,
    SclibError,
    SessionNotFound,
    TooLarge,
    UploadBusy,
    UploadConflict,
)
from sclib.models import new_job_id
from sclib.transfers._writeback import allocate
from sclib.transfers.hashing import CV_HASH, CV_PREFIX, ChunkTree, tree_hashing
from sclib.transfers.locks import WriteLock, lock_chunk, lock_upload
from sclib.transfers.sessions import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
    ChunkRecord,
    SessionStore,
    TransferSession,
)
from sclib.transfers.staging import (
    StagedWrite,
    disk_errors,
    fsync_dir,
    fsync_file,
    hash_file,
    verify_chunks,
    written_in,
    written_in_fd,
)

__all__ = ["LARGE", "STANDARD", "TUS", "Receiver", "Upload", "UploadNotFound"]

log = logging.getLogger(__name__)

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


class Receiver:
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
    ) -> None:
        self.sessions = sessions
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

    # -- receiving -------------------------------------------------------------------

    def begin_chunk(
        self, upload_id: str, owner: str | None, index: int, hashes: set[str]
    ) -> StagedWrite:
        """Start receiving chunk ``index`` of a large-file upload."""
        upload = self.get(upload_id, owner)
        if upload.protocol != LARGE:
            raise UploadConflict(f"upload {upload_id} does not take chunks")
        self._require_active(upload)
        if CV_HASH in hashes and upload.chunk_size & (upload.chunk_size - 1):
            raise InvalidInput(
                f"{CV_HASH} chunk digests need a power-of-two chunk size; "
                f"upload {upload_id} has chunks of {upload.chunk_size} bytes"
            )
        if not 0 <= index < upload.total_chunks:
            raise InvalidInput(
                f"chunk_index {index} is out of range: upload {upload_id} has "
                f"chunks 0..{upload.total_chunks - 1}"
            )
        lock = self._lock(upload, index)
        try:
            upload = self.get(upload_id, owner)  # fresh, now that we hold the chunk
            self._require_active(upload)
            length = upload.chunk_length(index)
            return StagedWrite(
                self,
                upload,
                lock,
                index * upload.chunk_size,
                length,
                # the chunk's record: its chaining value if the client sent that
                # (one hash pass), else its BLAKE3
                hashes if CV_HASH in hashes else hashes | {"blake3"},
                exact=True,
                # a chunk already stored is sent again: the new bytes go aside
                # and replace the stored ones only once they verify
                side_file=(
                    self.staging_dir(upload_id) / f"chunk-{index}.again"
                    if index in upload.chunks
                    else None
                ),
                guard=self._space_guard(upload, side_file=index in upload.chunks),
            )
        except BaseException:
            lock.release()
            raise

    def finish_chunk(
        self, write: StagedWrite, index: int, expected: Mapping[str, str]
    ) -> Upload:
        """Verify the chunk and record it; the chunk is then never asked for again.

        The bytes are not flushed to disk here (one ``fdatasync`` per chunk made
        parallel streams wait on each other's writeback): completion reads every
        chunk back and compares it with its record, then flushes the file once. A
        chunk an operating-system crash lost is found there and asked for again.
        The record also says where the bytes were written (this machine's boot
        and the staging file), so completion knows when no crash can have come
        between (:meth:`_merged_digest`)."""
        try:
            write.finish(expected, sync=False)
            digest = write.hashers.record_digest()
            if write.side_file is not None:
                self._replace_chunk(write, index, digest)
                return self.get(write.upload.id)
            where = write.written_in()
            write.close_file()  # what close reports comes before the record
            self.sessions.record_chunk(
                write.upload.id, index, ChunkRecord(digest, where)
            )
        finally:
            write.close()
        return self.get(write.upload.id)

    def _replace_chunk(self, write: StagedWrite, index: int, digest: str) -> None:
        """A chunk sent again verified (in its side file): the same bytes as the
        stored chunk change nothing; other bytes are copied over the stored ones
        and recorded. Until then the stored chunk stays recorded and intact."""
        write.close_file()
        upload = write.upload
        record = self.sessions.get(upload.id).chunks.get(index)
        if record is not None and record.digest == digest:
            return
        assert write.side_file is not None
        staging = self.staging_file(upload.id)
        try:
            out = os.open(staging, os.O_WRONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise UploadConflict(
                f"upload {upload.id} has lost its staging file; start it again"
            ) from None
        try:
            # the stored copy is unrecorded only while it is being replaced
            self.sessions.forget_chunks(upload.id, [index])
            with open(write.side_file, "rb") as src:
                copied = _copy_bytes(src.fileno(), out, write.written, write.start)
            if copied != write.written:
                raise DestinationError(
                    f"upload {upload.id}: chunk {index} was not copied whole"
                )
            where = written_in_fd(out)
        finally:
            os.close(out)
        self.sessions.record_chunk(upload.id, index, ChunkRecord(digest, where))

    def begin_patch(
        self,
        upload_id: str,
        owner: str | None,
        offset: int,
        length: int | None,
        hashes: set[str],
    ) -> StagedWrite:
        """Start a tus ``PATCH`` at ``offset``; the offset must be the upload's."""
        upload = self.get(upload_id, owner)
        self._require_active(upload)
        lock = self._lock(upload)
        try:
            upload = self.get(upload_id, owner)  # fresh, now that we hold the lock
            self._require_active(upload)
            if offset != upload.offset:
                raise UploadConflict(
                    f"Upload-Offset {offset} does not match the upload's offset "
                    f"{upload.offset}"
                )
            room = (
                (upload.size - offset)
                if upload.size is not None
                else self.max_upload_size - offset
            )
            room = min(room, self.max_chunk_size) if upload.size is None else room
            if length is not None and length > room:
                raise TooLarge(
                    f"{length} bytes at offset {offset} go past the upload's "
                    f"length of {upload.size}"
                    if upload.size is not None
                    else f"a PATCH body may hold at most {room} bytes"
                )
            checkpoint = None
            if not hashes:

                def checkpoint(written: int) -> None:
                    self._set_offset(upload_id, offset + written)

            return StagedWrite(
                self,
                upload,
                lock,
                offset,
                room if length is None else length,
                hashes,
                exact=length is not None,
                on_checkpoint=checkpoint,
                guard=self._space_guard(upload),
            )
        except BaseException:
            lock.release()
            raise

    def _set_offset(self, upload_id: str, offset: int, **more: Any) -> Upload:
        session = self.sessions.get(upload_id)
        state = {**session.state, "offset": offset, **more}
        return _view(self.sessions.update(upload_id, state=state))

    def finish_patch(
        self, write: StagedWrite, expected: Mapping[str, str] | None
    ) -> Upload:
        """Verify the body (tus checksum) and advance the offset."""
        try:
            write.finish(expected)
            return self._set_offset(write.upload.id, write.start + write.written)
        finally:
            write.close()

    def abort_patch(self, write: StagedWrite, *, keep: bool) -> None:
        """A body that broke off: keep what arrived (tus without a checksum) or not."""
        try:
            if keep and write.written:
                write.durable()
                self._set_offset(write.upload.id, write.start + write.written)
        finally:
            write.close()

    def declare_length(self, upload_id: str, owner: str | None, length: int) -> Upload:
        """tus ``Upload-Defer-Length``: the length arrives with a later PATCH."""
        self.check_size(length, "Upload-Length")
        upload = self.get(upload_id, owner)
        with self._lock(upload):
            return self._declare_length(upload_id, owner, length)

    def _declare_length(self, upload_id: str, owner: str | None, length: int) -> Upload:
        upload = self.get(upload_id, owner)
        if upload.size is not None:
            if upload.size != length:
                raise UploadConflict(
                    f"Upload-Length {length} differs from the declared {upload.size}"
                )
            return upload
        if length < upload.offset:
            raise UploadConflict(
                f"Upload-Length {length} is below the bytes already received"
            )
        session = self.sessions.get(upload_id)
        state = {**session.state, "length": length}
        return _view(self.sessions.update(upload_id, state=state))

    def find_idempotent(self, owner: str, idempotency_key: str) -> Upload | None:
        """The committed upload ``owner`` started with this ``Idempotency-Key``."""
        session = self.sessions.find(
            _idempotent_key(owner, idempotency_key), status=COMPLETED
        )
        if session is None:
            return None
        upload = _view(session)
        if upload.result is None or upload.fields is None or not upload.dataset_uuid:
            return None
        # a file deleted since (with its dataset, or by hand) was not kept: the
        # request stores it again
        return upload if self.final_path(upload).exists() else None

    def begin_single(self, upload_id: str) -> StagedWrite:
        """Receive a single-request upload (length known only at its end)."""
        upload = self.get(upload_id)
        lock = self._lock(upload)
        try:
            return StagedWrite(
                self,
                upload,
                lock,
                0,
                self.max_upload_size,
                {"blake3"},
                exact=False,
                guard=self._space_guard(upload),
            )
        except BaseException:
            lock.release()
            raise

    def set_fields(
        self,
        upload_id: str,
        fields: DatasetFields,
        dataset_uuid: str,
        filename: str,
        *,
        length: int,
        owner: str,
    ) -> Upload:
        """Attach what a single-request upload tells only at its end: the dataset
        fields, the owner they name, and the length."""
        safe_filename(filename)
        session = self.sessions.get(upload_id)
        state = {
            **session.state,
            "fields": fields.model_dump(mode="json"),
            "dataset_uuid": dataset_uuid,
            "filename": filename,
            "owner": owner,
            "length": length,
            "offset": length,
        }
        return _view(self.sessions.update(upload_id, state=state))

    def discard(self, upload_id: str) -> None:
        """Drop an upload whose request failed: its bytes and its session.

        Not once its commit started (the file may be in the dataset already):
        then the next :meth:`complete`, or the expiry sweep, finishes it."""
        with contextlib.suppress(SessionNotFound):
            state = self.sessions.get(upload_id).state
            if state.get("committing") or state.get("result"):
                return
        shutil.rmtree(self.staging_dir(upload_id), ignore_errors=True)
        with contextlib.suppress(SessionNotFound):
            self.sessions.update(upload_id, status=CANCELLED, error="request failed")

    # -- tus concatenation -----------------------------------------------------------

    def concat_parts(
        self, part_ids: list[str], owners: Collection[str]
    ) -> list[Upload]:
        """The partial uploads a final upload joins, checked: each a tus partial
        upload of one of ``owners`` (the caller, and the owner of the dataset the
        final upload goes to: an admin acting for Alice joins Alice's parts or the
        admin's own, never Bob's), complete, and not joined into another upload."""
        if not part_ids:
            raise InvalidInput("Upload-Concat: final needs at least one partial upload")
        if len(set(part_ids)) != len(part_ids):
            raise InvalidInput("Upload-Concat: a partial upload is listed twice")
        parts = []
        for part_id in part_ids:
            part = self.get(part_id)
            if part.owner not in owners:
                raise UploadNotFound(f"upload {part_id} not found")
            concat = part.state.get("concat") or {}
            if part.protocol != TUS or concat.get("kind") != "partial":
                raise InvalidInput(
                    f"Upload-Concat: upload {part_id} is not a partial upload"
                )
            self._require_unjoined(part)
            self._require_active(part)
            if not self.ready(part):
                raise UploadConflict(
                    f"upload {part_id} is not complete ({part.offset} of "
                    f"{part.size} bytes); finish it before concatenating (this "
                    "server does not do concatenation-unfinished)"
                )
            parts.append(part)
        return parts

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

    def _require_unjoined(self, part: Upload) -> None:
        joined = self._joined_into(part)
        if joined is not None:
            raise UploadConflict(
                f"upload {part.id} was already concatenated into upload {joined}"
            )

    def _mark_joined(self, part_id: str, final_id: str | None, **more: Any) -> None:
        session = self.sessions.get(part_id)
        concat = {**(session.state.get("concat") or {}), "joined_into": final_id}
        self.sessions.update(part_id, state={**session.state, "concat": concat}, **more)

    def concatenate(self, final_id: str, parts: list[Upload]) -> Upload:
        """Fill final upload ``final_id`` with the bytes of ``parts``, in order.

        Each part is claimed for this final upload under its lock, in the same
        step that copies it: a second final upload naming it (another request at
        the same time, or a retry after this server died before
        :meth:`release_parts`) gets a conflict, never the same bytes. The disk
        must hold the copy (the parts' bytes stay until :meth:`release_parts`);
        if it cannot, :class:`DestinationError` before anything is copied. On
        failure the caller calls :meth:`abandon_final`, which frees the parts."""
        final = self.get(final_id)
        # the space was checked, and reserved where the filesystem can, when
        # the final upload was created with the parts' total length
        with self._lock(final), open(self.staging_file(final_id), "r+b") as out:
            position = 0
            for listed in parts:
                with self._lock(listed):
                    part = self.get(listed.id)
                    self._require_active(part)
                    self._require_unjoined(part)
                    if part.offset != listed.offset:
                        raise UploadConflict(f"upload {part.id} changed meanwhile")
                    with open(self.staging_file(part.id), "rb") as src:
                        if (
                            _copy_bytes(
                                src.fileno(), out.fileno(), part.offset, position
                            )
                            != part.offset
                        ):
                            raise UploadConflict(
                                f"upload {part.id} holds fewer bytes than its "
                                "offset says"
                            )
                    self._mark_joined(part.id, final_id)
                    position += part.offset
            out.flush()
            os.fsync(out.fileno())
            return self._set_offset(final_id, position)

    def abandon_final(self, final_id: str, parts: list[Upload]) -> None:
        """A final upload whose request failed: it is discarded (unless its
        commit started) and the parts it claimed can be joined again."""
        self.discard(final_id)
        with contextlib.suppress(UploadNotFound):
            if self.get(final_id).status != CANCELLED:
                return  # committing: the next complete() or the expiry finishes it
        for part in parts:
            with contextlib.suppress(SessionNotFound):
                concat = self.sessions.get(part.id).state.get("concat") or {}
                if concat.get("joined_into") == final_id:
                    self._mark_joined(part.id, None)

    def release_parts(self, parts: list[Upload], final_id: str) -> None:
        """After the final upload committed: the parts' bytes are deleted, their
        records say where they went (a second final naming them gets a 409)."""
        for part in parts:
            with contextlib.suppress(SessionNotFound):
                self._mark_joined(part.id, final_id, status=COMPLETED)
            shutil.rmtree(self.staging_dir(part.id), ignore_errors=True)

    # -- completing ------------------------------------------------------------------

    def ready(self, upload: Upload) -> bool:
        """Whether every byte has arrived."""
        if upload.size is None:
            return False
        if upload.protocol == LARGE:
            return len(upload.chunks) == upload.total_chunks
        return upload.offset == upload.size

    def complete(
        self,
        upload_id: str,
        owner: str | None,
        *,
        expected: Mapping[str, str] | None = None,
        digests: Mapping[str, str] | None = None,
    ) -> Mapping[str, Any]:
        """Verify, commit and enqueue the upload's job; idempotent.

        ``digests`` are digests the route already computed while the bytes arrived
        in one piece (a single-request upload): then the file is not read again.
        """
        upload = self.get(upload_id, owner)
        if upload.result is not None:
            return upload.result
        try:
            lock = self._lock(upload)
        except UploadConflict:
            upload = self.get(upload_id, owner)  # finished meanwhile by another call
            if upload.result is not None:
                return upload.result
            raise
        with lock:
            upload = self.get(upload_id, owner)
            if upload.result is not None:
                return upload.result
            self._require_active(upload)
            if upload.fields is None or upload.dataset_uuid is None:
                raise UploadConflict(f"upload {upload_id} has no dataset fields")
            if not self.ready(upload):
                raise UploadConflict(
                    f"upload {upload_id} is not complete: "
                    + (
                        f"chunks {upload.missing(10)} are missing"
                        if upload.protocol == LARGE
                        else f"{upload.offset} of {upload.size} bytes received"
                    )
                )
            want = {
                **upload.expected,
                **{k: v.lower() for k, v in (expected or {}).items()},
            }
            final = self.final_path(upload)
            committing = upload.state.get("committing")
            staging = self.staging_file(upload_id)
            if committing and final.exists() and _moved(staging, final):
                # a crash after the link: the digests were recorded before it
                found = dict(committing)
                staging.unlink(missing_ok=True)
            else:
                found = dict(digests or {})
                if upload.protocol == LARGE:
                    found = self._verify_chunks(upload, staging, want)
                elif "blake3" not in found or not set(want) <= set(found):
                    found = hash_file(staging, {"blake3", *want})
                for name, value in want.items():
                    if found[name] != value:
                        raise ChecksumMismatch(
                            f"upload {upload_id}: the file's {name} is {found[name]}, "
                            f"the client said {value}; nothing was committed"
                        )
                session = self.sessions.get(upload_id)
                self.sessions.update(
                    upload_id, state={**session.state, "committing": found}
                )
                final.parent.mkdir(parents=True, exist_ok=True)
                try:
                    fsync_file(staging)
                except OSError:
                    # a write-back error is reported once: the next completion
                    # must read the file back rather than trust the records
                    session = self.sessions.get(upload_id)
                    self.sessions.update(
                        upload_id, state={**session.state, "reread": True}
                    )
                    raise
                try:
                    # link, not rename: never replaces a file already in the dataset
                    os.link(staging, final)
                except FileExistsError:
                    session = self.sessions.get(upload_id)
                    state = dict(session.state)
                    state.pop("committing", None)
                    self.sessions.update(upload_id, state=state)
                    where = upload.fields.relative_path or "."
                    raise UploadConflict(
                        f"dataset {upload.dataset_uuid} already has "
                        f"{where}/{upload.filename}; nothing was committed (send it "
                        f"under another name or relative_path)"
                    ) from None
                staging.unlink()
                fsync_dir(final.parent)
            relative = PurePosixPath(
                final.relative_to(self.dataset_dir(upload.dataset_uuid)).as_posix()
            )
            result = self.committed(upload, relative, found)
            session = self.sessions.get(upload_id)
            state = {**session.state, "result": result}
            state.pop("committing", None)
            self.sessions.update(
                upload_id,
                state=state,
                status=COMPLETED,
                digest=found["blake3"],
                sha256=found.get("sha256"),
            )
        shutil.rmtree(self.staging_dir(upload_id), ignore_errors=True)
        log.info("upload %s committed", upload_id)
        return result

    def committed(
        self, upload: Upload, relative: PurePosixPath, digests: Mapping[str, str]
    ) -> dict[str, Any]:
        """The answer for ``upload``, whose file is now at ``relative`` in its
        dataset folder with these ``digests``; called once per upload, inside
        :meth:`complete`'s lock, before the answer is recorded (a crash before
        that calls it again: what it does must be idempotent)."""
        return {
            "upload_id": upload.id,
            "dataset_uuid": upload.dataset_uuid,
            "file_blake3": digests["blake3"],
            "file_size": upload.size,
            "path": relative.as_posix(),
            "message": f"{upload.filename} received and verified",
        }

    def _merged_digest(
        self, upload: Upload, staging: Path, want: Mapping[str, str]
    ) -> dict[str, str] | None:
        """The file's BLAKE3 merged from its chunks' chaining values, without
        reading the file, where reading it back could find nothing: every chunk
        was recorded with its chaining value, written into this staging file
        (same device and inode, on a local filesystem) since this machine last
        booted (so no operating system crash can have dropped its bytes from the
        page cache), no flush of the file failed, the file has its full size,
        and nothing but BLAKE3 is asked for (SHA-256 needs the bytes). ``None``
        means: read the file back."""
        if (
            set(want) - {"blake3"}
            or not tree_hashing()
            or upload.total_chunks < 2
            or upload.state.get("reread")
        ):
            return None
        try:
            here = written_in(staging)
        except OSError:
            return None
        if here is None or os.stat(staging).st_size != upload.size:
            return None
        chunks = self.sessions.get(upload.id).chunks
        if len(chunks) != upload.total_chunks or any(
            not c.digest.startswith(CV_PREFIX) or c.token != here
            for c in chunks.values()
        ):
            return None
        tree = ChunkTree(upload.total_chunks)
        for index, chunk in chunks.items():
            tree.add(index, chunk.digest)
        digest = tree.hexdigest()
        if want.get("blake3", digest) != digest:
            return None  # the chunk-by-chunk look says which chunk is wrong
        return {"blake3": digest}

    def _verify_chunks(
        self, upload: Upload, staging: Path, want: Mapping[str, str]
    ) -> dict[str, str]:
        """Whole-file digests of a chunked upload, every chunk checked on disk
        against its record (unless :meth:`_merged_digest` shows no check can
        fail); chunks that fail are asked for again (409)."""
        assert upload.size is not None
        merged = self._merged_digest(upload, staging, want)
        if merged is not None:
            return merged
        names = set(want)
        if names:
            # the client said what the whole file hashes to: one pass settles it,
            # and only a mismatch needs the chunk-by-chunk look
            found = hash_file(staging, {"blake3", *names})
            if all(found[n] == v for n, v in want.items()):
                return found
        session = self.sessions.get(upload.id)
        records = {i: c.digest for i, c in session.chunks.items()}
        found, bad = verify_chunks(
            staging, upload.size, upload.chunk_size, records, names
        )
        if bad:
            self.sessions.forget_chunks(upload.id, bad)
            raise UploadConflict(
                f"upload {upload.id}: chunks {bad[:10]} did not read back as they "
                f"were received (lost in a crash?); send them again, then complete"
            )
        return found

    # -- ending ----------------------------------------------------------------------

    def cancel(self, upload_id: str, owner: str | None) -> Upload:
        """Stop an unfinished upload and delete its bytes (tus termination)."""
        upload = self.get(upload_id, owner)
        if upload.status == COMPLETED or upload.state.get("committing"):
            raise UploadConflict(f"upload {upload_id} is already complete")
        with self._lock(upload):
            fresh = self.get(upload_id)
            if fresh.state.get("committing"):
                raise UploadConflict(f"upload {upload_id} is being committed")
            joined = self._joined_into(fresh)
            if joined is not None:
                raise UploadConflict(
                    f"upload {upload_id} is joined into upload {joined}; it can no "
                    "longer be terminated on its own"
                )
            session = self.sessions.update(
                upload_id, status=CANCELLED, error="cancelled by request"
            )
        shutil.rmtree(self.staging_dir(upload_id), ignore_errors=True)
        return _view(session)

    def expire(
        self,
        *,
        dry_run: bool = True,
        limit: int = 1000,
        older_than: timedelta | None = None,
        owner: str | None = None,
        state: str = "any",
    ) -> list[Upload]:
        """Unfinished uploads untouched for longer than ``older_than`` (default:
        ``expiry``; zero takes every one), at most ``limit``, optionally only
        ``owner``'s and only in ``state`` (``receiving``: taking bytes;
        ``committing``: a commit was interrupted; ``any``). Unless ``dry_run``,
        their bytes are deleted and they are marked cancelled, which frees their
        disk space at once. An upload being written right now is left alone, and
        one whose commit was interrupted is finished instead of deleted."""
        if state not in ("any", "receiving", "committing"):
            raise InvalidInput(
                f"state must be receiving, committing or any, got {state!r}"
            )
        age = self.expiry if older_than is None else older_than
        if age < timedelta(0):
            raise InvalidInput("older_than must not be negative")
        cutoff = self.clock() - age
        found: list[Upload] = []
        stale = self.sessions.list(
            status=ACTIVE, updated_before=cutoff, key_prefix=_PREFIX, limit=limit
        )
        for session in stale:
            upload = _view(session)
            if owner is not None and upload.owner != owner:
                continue
            committing = bool(upload.state.get("committing"))
            if (state == "receiving" and committing) or (
                state == "committing" and not committing
            ):
                continue
            if dry_run:
                found.append(upload)
                continue
            if upload.state.get("committing"):
                try:
                    self.complete(upload.id, None)
                    log.info("upload %s: an interrupted commit was finished", upload.id)
                except SclibError as exc:
                    log.warning(
                        "upload %s: finishing its commit failed: %s", upload.id, exc
                    )
                continue
            try:
                with self._lock(upload):
                    # the bytes go first: on a disk full to the last byte, the
                    # database needs the space they free to record the rest
                    self.staging_file(upload.id).unlink(missing_ok=True)
                    self.sessions.update(upload.id, status=CANCELLED, error="expired")
            except UploadBusy:
                log.info("upload %s looks abandoned but is being written", upload.id)
                continue
            except UploadConflict:
                continue  # finished or cancelled meanwhile
            shutil.rmtree(self.staging_dir(upload.id), ignore_errors=True)
            found.append(upload)
            log.info("upload %s expired", upload.id)
        return found

    def active_count(self) -> int:
        """Unfinished uploads (one count query)."""
        return self.sessions.count(status=ACTIVE, key_prefix=_PREFIX)


def _moved(staging: Path, final: Path) -> bool:
    """Whether ``final`` is the staged file: linked (and maybe unlinked) already."""
    if not staging.exists():
        return True
    try:
        return os.path.samefile(staging, final)
    except OSError:
        return False
