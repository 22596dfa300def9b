"""The ``file_extraction`` job: unpack an uploaded archive inside its dataset.

An archive that arrives in a dataset (``scan.zip``) is unpacked next to it, into a
folder named after it (``scan/``), by :func:`~sclib.pipeline.extract.extract_archive`
with its safety rules and bomb limits. The work happens in an attempt-scoped temp
folder that is renamed into place only once everything is extracted and hashed, so
a crash or a retry never leaves half an archive in the dataset; a retry after the
rename finds the folder there and records it instead of unpacking again. (A
``<job>.moved`` note written just before the rename tells that folder from one the
dataset already had: an archive is never unpacked over, nor mistaken for, an
existing folder of the same name; the job fails naming it.)

The dataset record goes ``unzipping`` -> ``done`` (or ``unzip error`` with the
entry that was refused, once the job will not be retried; ``retrying`` while it
will), and gets every extracted file with its BLAKE3.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from sclib.datasets import DatasetStore
from sclib.datasets.records import mark, record_files
from sclib.errors import InvalidInput, SourceNotFound
from sclib.jobs.context import JobContext
from sclib.jobtypes import DatasetStatus
from sclib.paths import safe_join, safe_relative_path
from sclib.pipeline.extract import ExtractLimits, extract_archive
from sclib.pipeline.flow import Pipeline, after_files, step_failed
from sclib.transfers.hashing import blake3_file

__all__ = ["ExtractionHandler", "extraction_folder"]

log = logging.getLogger(__name__)

_SUFFIXES = (".tar.gz", ".tar.bz2", ".tar.xz", ".tgz", ".tar", ".zip", ".7z")


def extraction_folder(archive: str) -> str:
    """Where ``archive`` (a path relative to the dataset) is unpacked:
    ``raw/scan.tar.gz`` -> ``raw/scan``."""
    path = PurePosixPath(archive)
    name = path.name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[: -len(suffix)]
            break
    else:
        name = f"{name}.contents"
    return str(path.with_name(name))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ExtractionHandler:
    """The ``file_extraction`` job handler; see the module docstring.

    Parameters of the job: ``archive``, the archive's path inside the dataset.
    """

    def __init__(
        self,
        data_dir: Path,
        datasets: DatasetStore | None = None,
        limits: ExtractLimits | None = None,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.datasets = datasets
        self.limits = limits or ExtractLimits()
        self.pipeline = pipeline

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        uuid = ctx.job.dataset_uuid
        if not uuid:
            raise InvalidInput("an extraction job needs a dataset_uuid")
        store = self.datasets
        if store is not None:
            mark(store, uuid, DatasetStatus.UNZIPPING)
        try:
            result = self._extract(ctx, uuid)
        except Exception as exc:
            if store is not None:  # `unzip error` once the job will not run again
                step_failed(store, ctx, uuid, DatasetStatus.UNZIP_ERROR, exc)
            raise
        if store is not None:
            record_files(store, uuid, result["files"])
            result["pipeline"] = after_files(
                self.pipeline, store, ctx, uuid, result["files"], extract=False
            )
        self._moved(ctx).unlink(missing_ok=True)
        return result

    def _moved(self, ctx: JobContext) -> Path:
        """Written just before this job renames its folder into the dataset, so a
        retry can tell its own output from a folder that was there before."""
        return self.data_dir / "tmp" / "extract" / f"{ctx.job.id}.moved"

    def _extract(self, ctx: JobContext, uuid: str) -> dict[str, Any]:
        folder = self.data_dir / "upload" / uuid
        relative = safe_relative_path(str(ctx.parameters.get("archive", "")), "archive")
        if not relative:
            raise InvalidInput("archive: field required")
        archive = safe_join(folder, relative)
        if not archive.is_file():
            raise SourceNotFound(f"no archive {relative} in dataset {uuid}")
        into = extraction_folder(relative)
        final = safe_join(folder, into)
        moved = self._moved(ctx)
        if os.path.lexists(final):
            if not moved.exists():
                raise InvalidInput(
                    f"the dataset already has {into!r}: {relative} is not unpacked "
                    "over it (remove it, or upload the archive under another name)"
                )
            # an earlier attempt renamed it into place and then died: record it
            files = self._listing(ctx, final, into)
            return {"archive": relative, "folder": into, "files": files}
        temp = self.data_dir / "tmp" / "extract" / f"{ctx.job.id}-{ctx.attempt}"
        shutil.rmtree(temp, ignore_errors=True)
        temp.parent.mkdir(parents=True, exist_ok=True)

        def progress(done: int, total: int) -> None:
            ctx.report(bytes_done=done, bytes_total=total, message=archive.name)

        try:
            extracted = extract_archive(
                archive, temp, self.limits, check=ctx.check, on_progress=progress
            )
            final.parent.mkdir(parents=True, exist_ok=True)
            moved.write_bytes(b"")
            _fsync_dir(moved.parent)
            try:
                os.rename(temp, final)  # atomic: all of it appears at once
            except BaseException:
                moved.unlink(missing_ok=True)
                raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)
        files = [
            {"path": f"{into}/{f.path}", "size": f.size, "blake3": f.blake3}
            for f in extracted
        ]
        log.info("dataset %s: %s unpacked, %d files", uuid, relative, len(files))
        return {"archive": relative, "folder": into, "files": files}

    def _listing(self, ctx: JobContext, root: Path, into: str) -> list[dict[str, Any]]:
        files = []
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            ctx.check()
            digest, size = blake3_file(path)
            rel = path.relative_to(root).as_posix()
            files.append({"path": f"{into}/{rel}", "size": size, "blake3": digest})
        return files
