"""The ``data_validation`` job: a scrub of a dataset's files.

Every file the dataset's record lists is read again and its BLAKE3 compared with
the digest recorded when it arrived. The report names the missing and the corrupted
files; when there are any, the dataset keeps its status and gets an error message
saying which, so the portal can show it. Nothing is changed on disk.

A file recorded without a digest (the original system kept none; see
:class:`~sclib.datasets.DatasetFile`) has nothing to be compared with: its digest
and size are read now and recorded (``recorded`` in the report).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sclib.datasets import DatasetFile, DatasetStore
from sclib.errors import InvalidInput
from sclib.jobs.context import JobContext
from sclib.paths import safe_join, safe_relative_path
from sclib.transfers.hashing import blake3_file

__all__ = ["ValidationHandler", "check_files"]

log = logging.getLogger(__name__)


def check_files(
    ctx: JobContext, folder: Path, files: Iterable[DatasetFile]
) -> tuple[list[str], list[str]]:
    """Re-hash ``files`` under ``folder`` against their BLAKE3 and size; the paths
    that are missing, and those that differ. Reports progress, honours cancel.
    A file with no recorded digest is only checked to be there."""
    entries = list(files)
    total = sum(f.size for f in entries)
    done = 0
    missing: list[str] = []
    corrupted: list[str] = []
    for entry in entries:
        path = safe_join(folder, safe_relative_path(entry.path, "path"))
        ctx.check()
        if not path.is_file():
            missing.append(entry.path)
            done += entry.size
            continue
        if entry.blake3 is None:  # nothing recorded to compare with
            done += entry.size
            continue

        def progress(n: int, before: int = done, name: str = entry.path) -> None:
            ctx.report(bytes_done=before + n, bytes_total=total, message=name)
            ctx.check()

        digest, size = blake3_file(path, on_progress=progress)
        done += entry.size
        if digest != entry.blake3 or size != entry.size:
            corrupted.append(entry.path)
    return missing, corrupted


class ValidationHandler:
    """Re-hash every file of the job's dataset and compare with its record."""

    def __init__(self, data_dir: Path, datasets: DatasetStore) -> None:
        self.data_dir = Path(data_dir)
        self.datasets = datasets

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        uuid = ctx.job.dataset_uuid
        if not uuid:
            raise InvalidInput("a validation job needs a dataset_uuid")
        record = self.datasets.get(uuid)
        folder = self.data_dir / "upload" / uuid
        recorded = self._record_unknown(ctx, folder, record.files)
        if recorded:
            record = self.datasets.add_files(uuid, recorded)
        missing, corrupted = check_files(ctx, folder, record.files)
        total = record.total_size
        report: dict[str, Any] = {
            "dataset_uuid": uuid,
            "checked": len(record.files),
            "bytes": total,
            "ok": not (missing or corrupted),
            "missing": missing,
            "corrupted": corrupted,
            "recorded": [f.path for f in recorded],
        }
        if missing or corrupted:
            parts = []
            if corrupted:
                parts.append(f"{len(corrupted)} corrupted: {', '.join(corrupted[:5])}")
            if missing:
                parts.append(f"{len(missing)} missing: {', '.join(missing[:5])}")
            message = "validation found " + "; ".join(parts)
            current = self.datasets.get(uuid).status
            self.datasets.set_status(uuid, current, message)
            log.warning("dataset %s: %s", uuid, message)
        return report

    @staticmethod
    def _record_unknown(
        ctx: JobContext, folder: Path, files: Iterable[DatasetFile]
    ) -> list[DatasetFile]:
        """The files recorded without a digest that are there, read now."""
        found: list[DatasetFile] = []
        for entry in files:
            if entry.blake3 is not None:
                continue
            path = safe_join(folder, safe_relative_path(entry.path, "path"))
            ctx.check()
            if path.is_file():
                digest, size = blake3_file(path)
                found.append(DatasetFile(entry.path, size, digest))
        return found
