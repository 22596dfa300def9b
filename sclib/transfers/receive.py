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
import logging
import os
import shutil
from collections.abc import Collection, Mapping
from typing import Any

from sclib.datasets.fields import DatasetFields, safe_filename
from sclib.errors import (
    DestinationError,
    InvalidInput,
    SessionNotFound,
    TooLarge,
    UploadConflict,
)
from sclib.transfers.hashing import CV_HASH, TreeRecorder, tree_hashing
from sclib.transfers.receive_base import (
    LARGE,
    STANDARD,
    TUS,
    Upload,
    UploadNotFound,
    _copy_bytes,
    _idempotent_key,
    _view,
)
from sclib.transfers.receive_commit import ReceiverCommit
from sclib.transfers.sessions import (
    CANCELLED,
    COMPLETED,
    ChunkRecord,
)
from sclib.transfers.staging import (
    StagedWrite,
    written_in_fd,
)

__all__ = ["LARGE", "STANDARD", "TUS", "Receiver", "Upload", "UploadNotFound"]

log = logging.getLogger(__name__)

#: the smallest piece a tus upload's chaining values are recorded for, and the
#: most pieces one upload records (larger files get larger pieces)
TUS_TREE_PIECE = 8 * 1024**2
TUS_TREE_PIECES = 1024


def tus_tree_chunk(size: int) -> int:
    """The piece size (a power of two) of a tus upload of ``size`` bytes."""
    chunk = TUS_TREE_PIECE
    while -(-size // chunk) > TUS_TREE_PIECES:
        chunk *= 2
    return chunk


def _below(write: StagedWrite, end: int) -> tuple[int, dict[int, bytes]] | None:
    """A write's piece size and the chaining values of its pieces below ``end``."""
    tree = write.tree
    return None if tree is None else (tree.chunk, tree.below(end, write.upload.size))


def _tree_state(
    old: Any, chunk: int, new: dict[int, bytes], token: str | None
) -> dict[str, Any] | None:
    """The upload's recorded chaining values with ``new`` (those of one write's
    whole pieces below the recorded offset) added. Values are kept only while
    every write that recorded them went to the same staging file since this
    machine booted (``token``, :func:`~sclib.transfers.staging.written_in`)."""
    if token is None:
        return None
    cvs: dict[str, str] = {}
    if (
        isinstance(old, dict)
        and old.get("token") == token
        and old.get("chunk") == chunk
        and isinstance(old.get("cvs"), dict)
    ):
        cvs = dict(old["cvs"])
    cvs.update({str(i): cv.hex() for i, cv in new.items()})
    return {"chunk": chunk, "token": token, "cvs": cvs}


class Receiver(ReceiverCommit):
    """Creates, receives, verifies and commits uploads; see the module docstring.

    It knows bytes, not jobs: once a file is committed into its dataset folder it
    calls :meth:`committed`, which the server's
    :class:`~sclib.server.uploads.UploadManager` extends to record the dataset
    and enqueue the ``upload`` job. The state, folders and creation are
    :class:`~sclib.transfers.receive_base.ReceiverBase`'s, completion and ending
    :class:`~sclib.transfers.receive_commit.ReceiverCommit`'s; receiving bytes
    (chunks, tus patches and concatenation) is here."""

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
            tree = self._tree_recorder(upload, offset)
            if not hashes:

                def checkpoint(
                    written: int, cvs: dict[int, bytes] | None, token: str | None
                ) -> None:
                    pieces = None if tree is None or cvs is None else (tree.chunk, cvs)
                    self._set_offset(
                        upload_id, offset + written, tree=pieces, token=token
                    )

            write = StagedWrite(
                self,
                upload,
                lock,
                offset,
                room if length is None else length,
                hashes,
                exact=length is not None,
                on_checkpoint=checkpoint,
                guard=self._space_guard(upload),
                tree=tree,
            )
            return write
        except BaseException:
            lock.release()
            raise

    def _tree_recorder(self, upload: Upload, offset: int) -> TreeRecorder | None:
        """What records the chaining values of a tus upload's pieces as its bytes
        arrive, so completion need not read the file back to hash it
        (:meth:`ReceiverCommit._tus_tree_digest`); ``None`` without
        ``sclib_blake3tree``, for a length not known yet, or a file of one piece."""
        if upload.size is None or not tree_hashing():
            return None
        chunk = tus_tree_chunk(upload.size)
        if upload.size <= chunk:
            return None
        return TreeRecorder(offset, chunk)

    def _set_offset(
        self,
        upload_id: str,
        offset: int,
        *,
        tree: tuple[int, dict[int, bytes]] | None = None,
        token: str | None = None,
        **more: Any,
    ) -> Upload:
        """Record how far a tus upload got, with the chaining values of the
        pieces below (``tree``: the piece size and the values below ``offset``)."""
        session = self.sessions.get(upload_id)
        state = {**session.state, "offset": offset, **more}
        if tree is not None:
            state["tree"] = _tree_state(session.state.get("tree"), *tree, token)
        return _view(self.sessions.update(upload_id, state=state))

    def finish_patch(
        self, write: StagedWrite, expected: Mapping[str, str] | None
    ) -> Upload:
        """Verify the body (tus checksum) and advance the offset."""
        try:
            write.finish(expected)
            end = write.start + write.written
            if write.tree is not None and end == write.upload.size:
                write.tree.close_last()
            return self._set_offset(
                write.upload.id, end, tree=_below(write, end), token=write.written_in()
            )
        finally:
            write.close()

    def abort_patch(self, write: StagedWrite, *, keep: bool) -> None:
        """A body that broke off: keep what arrived (tus without a checksum) or not."""
        try:
            write.join_io(quiet=True)  # what was written behind counts first
            if keep and write.written:
                write.durable()
                self._set_offset(
                    write.upload.id,
                    write.start + write.written,
                    tree=_below(write, write.start + write.written),
                    token=write.written_in(),
                )
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
