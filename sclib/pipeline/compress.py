"""The ``data_compression`` job: pack a dataset into one verified, compressed archive.

Every file the dataset's record lists is read once, hashed with BLAKE3 while it is
packed, and compared with the digest recorded when it arrived; a file that is gone,
has another size or another digest stops the job with an error naming it, and no
archive is left behind. The archive is a tar file, compressed:

* ``tar.zst`` (the default when a Zstandard binding is importable: the standard
  library's ``compression.zstd`` from Python 3.14, else ``backports.zstd``, its
  maintained backport, the ``zstd`` extra). Zstandard packs about as tightly as gzip
  at several times its speed, and decompresses far faster than xz;
* ``tar.xz`` (the default otherwise: the standard library's ``lzma``; smallest,
  slowest);
* ``tar.gz`` (the standard library's ``gzip``; what every tool reads).

Inside, under one top folder named like the archive, ``manifest.json`` comes first
(the dataset's uuid, name and slug, and every file's path, size and BLAKE3), then
the files under ``files/``. The archive lands at
``<data>/compressed/<uuid>/<slug>.<ext>``; it is written in an attempt-scoped temp
file, synced, and renamed into place, so a crash never leaves half an archive
there. A retry that finds the archive already in place reads its manifest: if it
lists exactly the dataset's current files, the archive is kept and only hashed; if
not (files were added since), it is packed again and replaced atomically.

The job's result carries the archive's own BLAKE3. The dataset goes ``zipping`` and
back to ``done`` (``compression error`` with the message on failure), as far as the
legacy transition table allows: ``zipping`` can only be left for ``done``,
``compression error`` or ``retrying``, so only a dataset that is ``done`` (or
``compression error``, or stuck in ``zipping``) is marked; one in another settled
status (``submitted``, ``failed``, another step's error) is packed with its status
left alone; one whose files are still moving (uploading, unzipping, syncing,
converting, or queued for one of those) is refused with
:class:`~sclib.errors.DatasetConflict`.
"""

from __future__ import annotations

import contextlib
import gzip
import importlib
import io
import json
import logging
import lzma
import os
import shutil
import tarfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any

from sclib.datasets import Dataset, DatasetStore
from sclib.datasets.records import mark
from sclib.errors import (
    ChecksumMismatch,
    DatasetConflict,
    InvalidInput,
    JobCancelled,
    LeaseLost,
    SourceNotFound,
)
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus
from sclib.paths import safe_join, safe_relative_path
from sclib.transfers.hashing import blake3_file, new_blake3

__all__ = [
    "FORMATS",
    "MANIFEST_NAME",
    "CompressionHandler",
    "available_formats",
    "default_format",
    "open_archive",
    "read_manifest",
]

log = logging.getLogger(__name__)

#: the archive formats this job writes
FORMATS = ("tar.zst", "tar.xz", "tar.gz")
#: the manifest's name inside the archive's top folder
MANIFEST_NAME = "manifest.json"
_MANIFEST_VERSION = 1
_COPY_BLOCK = 1 << 20
_D = DatasetStatus
# statuses in which a dataset's files may still change: packing them now would race
_BUSY = frozenset(
    {
        _D.UPLOAD_QUEUED,
        _D.UPLOADING,
        _D.UNZIPPING,
        _D.SYNC_QUEUED,
        _D.SYNCING,
        _D.CONVERSION_QUEUED,
        _D.CONVERTING,
    }
)
# statuses from which the table allows zipping and a way back to done
_MARKED = frozenset({_D.DONE, _D.ZIPPING, _D.COMPRESSION_ERROR})


def _zstd() -> Any | None:
    """The Zstandard module: ``compression.zstd`` (3.14+) or ``backports.zstd``."""
    for name in ("compression.zstd", "backports.zstd"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    return None


def available_formats() -> list[str]:
    """The formats this installation can write (``tar.zst`` needs a zstd binding)."""
    return [f for f in FORMATS if f != "tar.zst" or _zstd() is not None]


def default_format() -> str:
    """``tar.zst`` when Zstandard is available, else ``tar.xz``."""
    return "tar.zst" if _zstd() is not None else "tar.xz"


def _check_format(value: object) -> str:
    if value is None or value == "":
        return default_format()
    if not isinstance(value, str) or value.lower().lstrip(".") not in FORMATS:
        raise InvalidInput(
            f"format: unknown archive format {value!r}; choose one of "
            f"{', '.join(FORMATS)}"
        )
    fmt = value.lower().lstrip(".")
    if fmt == "tar.zst" and _zstd() is None:
        raise InvalidInput(
            "format: tar.zst needs Zstandard (pip install 'sclib[zstd]'); "
            f"available here: {', '.join(available_formats())}"
        )
    return fmt


def _compressed(raw: IO[bytes], fmt: str, mode: str) -> io.BufferedIOBase:
    """``raw`` wrapped in the compressor (``mode="wb"``) or decompressor (``"rb"``)."""
    if fmt == "tar.zst":
        zstd = _zstd()
        if zstd is None:
            raise InvalidInput("tar.zst archives need Zstandard (sclib[zstd])")
        return zstd.ZstdFile(raw, mode)  # type: ignore[no-any-return]
    if fmt == "tar.xz":
        return lzma.LZMAFile(raw, mode)
    # level 6 (gzip's own default; 9 is several times slower for ~1% smaller);
    # mtime=0: the gzip header does not change from one run to the next
    if mode == "rb":
        return gzip.GzipFile(fileobj=raw, mode=mode)
    return gzip.GzipFile(fileobj=raw, mode=mode, compresslevel=6, mtime=0)


@contextlib.contextmanager
def open_archive(path: Path, fmt: str | None = None) -> Any:
    """Open an archive this job wrote, for streaming reads (``tarfile`` ``r|``).

    ``fmt`` defaults to the one the file name ends with."""
    if fmt is None:
        fmt = next((f for f in FORMATS if path.name.endswith("." + f)), None)
        if fmt is None:
            raise InvalidInput(f"{path.name}: not a {', '.join(FORMATS)} archive")
    with (
        open(path, "rb") as raw,
        _compressed(raw, fmt, "rb") as stream,
        tarfile.open(fileobj=stream, mode="r|") as tar,
    ):
        yield tar


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of an archive this job wrote (it is the first member)."""
    with open_archive(path) as tar:
        member = tar.next()
        if member is None or not member.name.endswith("/" + MANIFEST_NAME):
            raise InvalidInput(f"{path.name}: its first member is not a manifest")
        data = tar.extractfile(member)
        if data is None:
            raise InvalidInput(f"{path.name}: the manifest is not a file")
        manifest: dict[str, Any] = json.loads(data.read())
        return manifest


class _HashingWriter(io.RawIOBase):
    """Writes through to a file, hashing what passes (the archive's BLAKE3)."""

    def __init__(self, raw: IO[bytes]) -> None:
        self.raw = raw
        self.hasher = new_blake3(threads=False)
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        view = memoryview(data)
        self.hasher.update(view)
        self.raw.write(view)
        self.size += view.nbytes
        return view.nbytes

    def flush(self) -> None:
        self.raw.flush()


class _VerifyingReader(io.RawIOBase):
    """Reads a dataset file for ``tarfile``, hashing it and reporting progress."""

    def __init__(self, fh: IO[bytes], on_read: Callable[[int], None]) -> None:
        self.fh = fh
        self.on_read = on_read
        self.hasher = new_blake3()

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        data = self.fh.read(_COPY_BLOCK if size is None or size < 0 else size)
        self.hasher.update(data)
        self.on_read(len(data))
        return data


def _not_retryable(exc: ChecksumMismatch) -> ChecksumMismatch:
    exc.retryable = False  # the file on disk is wrong: trying again cannot help
    return exc


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CompressionHandler:
    """The ``data_compression`` job handler; see the module docstring.

    Parameters of the job: ``format`` (optional): ``tar.zst``, ``tar.xz`` or
    ``tar.gz``; default :func:`default_format`.
    """

    def __init__(self, data_dir: Path, datasets: DatasetStore) -> None:
        self.data_dir = Path(data_dir)
        self.datasets = datasets

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        uuid = ctx.job.dataset_uuid
        if not uuid:
            raise InvalidInput("a compression job needs a dataset_uuid")
        fmt = _check_format(ctx.parameters.get("format"))
        record = self.datasets.get(uuid)
        before = DatasetStatus(record.status)
        if before in _BUSY:
            raise DatasetConflict(
                f"dataset {uuid} is {before.value!r}: its files may still change; "
                "compress it once that step has finished"
            )
        if not record.files:
            raise InvalidInput(f"dataset {uuid} has no files to compress")
        marked = before in _MARKED
        if marked:
            mark(self.datasets, uuid, _D.ZIPPING)
        try:
            result = self._pack(ctx, record, fmt)
        except (JobCancelled, LeaseLost):
            if marked:  # nothing went wrong with the data: put the status back
                if before is _D.COMPRESSION_ERROR:
                    mark(self.datasets, uuid, before, record.error_message)
                else:
                    mark(self.datasets, uuid, _D.DONE)
            raise
        except Exception as exc:
            if marked:
                mark(self.datasets, uuid, _D.COMPRESSION_ERROR, str(exc))
            raise
        if marked:
            mark(self.datasets, uuid, _D.DONE)
        result["status"] = "marked" if marked else f"left as {before.value!r}"
        return result

    # -- packing -------------------------------------------------------------------

    def _manifest(self, record: Dataset, fmt: str) -> dict[str, Any]:
        return {
            "sclib_manifest": _MANIFEST_VERSION,
            "format": fmt,
            "dataset": {"uuid": record.uuid, "name": record.name, "slug": record.slug},
            "file_count": len(record.files),
            "total_size": record.total_size,
            "files": [
                {"path": f.path, "size": f.size, "blake3": f.blake3}
                for f in record.files
            ],
        }

    def _pack(self, ctx: JobContext, record: Dataset, fmt: str) -> dict[str, Any]:
        stem = record.slug or record.uuid
        name = f"{stem}.{fmt}"
        relative = f"compressed/{record.uuid}/{name}"
        final = self.data_dir / relative
        manifest = self._manifest(record, fmt)
        if final.is_file() and self._same(final, manifest):
            # an earlier attempt (or job) packed exactly these files: keep it
            digest, size = blake3_file(final)
            log.info("dataset %s: %s already packed; kept", record.uuid, relative)
            return self._result(record, fmt, relative, size, digest, reused=True)
        folder = self.data_dir / "upload" / record.uuid
        temp_dir = self.data_dir / "tmp" / "compress" / f"{ctx.job.id}-{ctx.attempt}"
        shutil.rmtree(temp_dir, ignore_errors=True)
        temp_dir.mkdir(parents=True)
        temp = temp_dir / name
        try:
            with open(temp, "wb") as raw:
                writer = _HashingWriter(raw)
                self._write(ctx, writer, folder, stem, manifest, fmt)
                raw.flush()
                os.fsync(raw.fileno())
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(temp, final)  # atomic: the whole archive appears at once
            _fsync(final.parent)
        finally:
            shutil.rmtree(temp_dir, ignore_errors=True)
        digest = str(writer.hasher.hexdigest())
        log.info(
            "dataset %s: packed %d files (%d bytes) into %s (%d bytes, blake3 %s)",
            record.uuid,
            len(record.files),
            record.total_size,
            relative,
            writer.size,
            digest,
        )
        return self._result(record, fmt, relative, writer.size, digest, reused=False)

    def _write(
        self,
        ctx: JobContext,
        out: _HashingWriter,
        folder: Path,
        stem: str,
        manifest: Mapping[str, Any],
        fmt: str,
    ) -> None:
        total = int(manifest["total_size"])
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            ctx.report(bytes_done=done, bytes_total=total, message=current)
            ctx.check()

        current = MANIFEST_NAME
        with (
            _compressed(out, fmt, "wb") as stream,  # type: ignore[arg-type]
            tarfile.open(
                fileobj=stream,
                mode="w|",
                format=tarfile.PAX_FORMAT,
            ) as tar,
        ):
            body = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(f"{stem}/{MANIFEST_NAME}")
            info.size, info.mode = len(body), 0o644
            tar.addfile(info, io.BytesIO(body))
            for entry in manifest["files"]:
                ctx.check()
                current = str(entry["path"])
                self._add(tar, folder, stem, entry, advance)

    @staticmethod
    def _add(
        tar: tarfile.TarFile,
        folder: Path,
        stem: str,
        entry: Mapping[str, Any],
        advance: Callable[[int], None],
    ) -> None:
        path_in = str(entry["path"])
        path = safe_join(folder, safe_relative_path(path_in, "file path"))
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise SourceNotFound(
                f"{path_in}: listed in the dataset but missing from its folder"
            ) from None
        with fh:
            st = os.fstat(fh.fileno())
            if st.st_size != entry["size"]:
                raise _not_retryable(
                    ChecksumMismatch(
                        f"{path_in}: {st.st_size} bytes on disk, {entry['size']} "
                        "recorded; the file changed or is damaged"
                    )
                )
            info = tarfile.TarInfo(f"{stem}/files/{path_in}")
            info.size, info.mode, info.mtime = st.st_size, 0o644, int(st.st_mtime)
            reader = _VerifyingReader(fh, advance)
            try:
                tar.addfile(info, reader)
            except OSError as exc:
                raise _not_retryable(
                    ChecksumMismatch(f"{path_in}: could not read it whole: {exc}")
                ) from exc
            digest = str(reader.hasher.hexdigest())
            if digest != entry["blake3"]:
                raise _not_retryable(
                    ChecksumMismatch(
                        f"{path_in}: its BLAKE3 is {digest}, the dataset recorded "
                        f"{entry['blake3']}; the file is damaged"
                    )
                )

    @staticmethod
    def _same(path: Path, manifest: Mapping[str, Any]) -> bool:
        """Whether the archive at ``path`` holds exactly what ``manifest`` lists."""
        try:
            found = read_manifest(path)
        except (OSError, EOFError, ValueError, tarfile.TarError) as exc:
            log.warning("%s is unreadable (%s); packing again", path, exc)
            return False
        return bool(
            found.get("dataset", {}).get("uuid") == manifest["dataset"]["uuid"]
            and found.get("files") == manifest["files"]
        )

    @staticmethod
    def _result(
        record: Dataset,
        fmt: str,
        relative: str,
        size: int,
        digest: str,
        *,
        reused: bool,
    ) -> dict[str, Any]:
        return {
            "dataset_uuid": record.uuid,
            "archive": relative,
            "format": fmt,
            "size": size,
            "blake3": digest,
            "files": len(record.files),
            "bytes": record.total_size,
            "reused": reused,
        }
