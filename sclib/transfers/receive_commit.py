"""The receive engine's completion: verifying a whole upload (merged chaining
values or one read back), committing it into its dataset folder, and ending
uploads (cancel, expiry); see :mod:`sclib.transfers.receive`."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path, PurePosixPath
from typing import Any

from sclib.errors import (
    ChecksumMismatch,
    InvalidInput,
    SclibError,
    UploadBusy,
    UploadConflict,
)
from sclib.transfers.hashing import CV_PREFIX, ChunkTree, new_chunk_hasher, tree_hashing
from sclib.transfers.receive_base import (
    _PREFIX,
    LARGE,
    TUS,
    ReceiverBase,
    Upload,
    _view,
)
from sclib.transfers.sessions import (
    ACTIVE,
    CANCELLED,
    COMPLETED,
)
from sclib.transfers.staging import (
    fsync_dir,
    fsync_file,
    hash_file,
    verify_chunks,
    written_in,
)

__all__ = ["ReceiverCommit"]

log = logging.getLogger("sclib.transfers.receive")


class ReceiverCommit(ReceiverBase):
    """Completion and ending; :class:`~sclib.transfers.receive.Receiver` adds the
    receiving of bytes."""

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
                    found = self._tus_tree_digest(upload, staging, want) or hash_file(
                        staging, {"blake3", *want}
                    )
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

    def _tus_tree_digest(
        self, upload: Upload, staging: Path, want: Mapping[str, str]
    ) -> dict[str, str] | None:
        """A tus upload's BLAKE3 from the chaining values its PATCHes recorded
        (``state["tree"]``, see :class:`~sclib.transfers.hashing.TreeRecorder`),
        reading back only the pieces none recorded (where a PATCH began or ended
        inside one). The same conditions as :meth:`_merged_digest`: the values were
        recorded into this staging file since this machine booted, no flush
        failed, and nothing but BLAKE3 is asked for. ``None``: hash the file."""
        tree_state = upload.state.get("tree")
        if (
            upload.protocol != TUS
            or upload.size is None
            or set(want) - {"blake3"}
            or not tree_hashing()
            or upload.state.get("reread")
            or not isinstance(tree_state, Mapping)
        ):
            return None
        chunk = tree_state.get("chunk")
        cvs = tree_state.get("cvs")
        if not isinstance(chunk, int) or not isinstance(cvs, Mapping):
            return None
        count = -(-upload.size // chunk)
        try:
            here = written_in(staging)
            if (
                count < 2
                or here is None
                or here != tree_state.get("token")
                or os.stat(staging).st_size != upload.size
            ):
                return None
            tree = ChunkTree(count)
            for index, value in cvs.items():
                tree.add(int(index), bytes.fromhex(value))
            missing = tree.missing()
            if len(missing) == count:
                return None  # nothing recorded: one plain pass is cheaper
            with open(staging, "rb", buffering=0) as f:
                for index in missing:
                    hasher = new_chunk_hasher(index * chunk)
                    start = index * chunk
                    left = min(chunk, upload.size - start)
                    buf = bytearray(min(left, 8 * 1024**2))
                    view = memoryview(buf)
                    while left:
                        n = os.preadv(f.fileno(), [view[: min(len(buf), left)]], start)
                        if n <= 0:
                            return None
                        hasher.update(view[:n])
                        start += n
                        left -= n
                    tree.add(index, bytes(hasher.chaining_value()))
        except (OSError, ValueError, InvalidInput):
            return None
        digest = tree.hexdigest()
        if want.get("blake3", digest) != digest:
            return None  # read it all: the mismatch is then reported from the bytes
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
