"""The ``backup_creation`` job: copy a dataset's folder to a backup destination.

The folder ``<data>/upload/<uuid>/`` is copied with the
:class:`~sclib.transfers.engine.TransferEngine` to ``<destination>/<uuid>/``, where
the destination is a local folder, ``s3://bucket/prefix`` or ``gs://bucket/prefix``
(the destinations the engine has writers for; other fsspec protocols are refused
with a message saying so). Every file lands whole or not at all (the engine's
writers commit atomically), its BLAKE3 computed from the bytes sent; the sessions
live in the shared :class:`~sclib.transfers.sessions.SessionStore`, so an
interrupted backup resumes where it stopped on the next attempt.

Before anything is sent, the files the dataset's record lists are read again and
compared with their recorded BLAKE3 (the same scrub as ``data_validation``): a
damaged or missing file stops the job with an error naming it, so a backup never
overwrites a good copy with a damaged one. After the copy, each file's digest is
compared with the record once more (a file changed meanwhile is an error).

A second run re-reads the source files (the scrub) but sends nothing that is
already there: the engine finds each file's completed session for the same
source version, and the file still at the destination, and skips it. The result
says how many files were sent and how many were already there (empty files,
having no bytes, count in neither).

Where a backup may go: the job's ``destination`` parameter, else the worker's
default (``SCLIB_BACKUP_URL``). A destination must lie inside one of the
destinations the worker allows (by default, the default destination itself), so
a user who may submit this job cannot make the server write elsewhere. The URL may
not carry credentials: the destination's options (an S3 endpoint, keys) are the
worker's own.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sclib.datasets import DatasetStore
from sclib.errors import ChecksumMismatch, Forbidden, InvalidInput, SourceNotFound
from sclib.jobs.context import JobContext
from sclib.paths import CONTROL_CHARS
from sclib.pipeline._transfer import PART_GLOB, engine_copy
from sclib.pipeline.validate import check_files
from sclib.transfers.engine import TransferConfig, TransferEngine
from sclib.transfers.sessions import SessionStore
from sclib.transfers.sources import scheme_of

__all__ = ["BackupHandler", "normalise_destination"]

log = logging.getLogger(__name__)

_SCHEMES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs"}


def normalise_destination(url: object, what: str = "destination") -> str:
    """A backup destination in one canonical form: an absolute local path, or
    ``s3://bucket/prefix`` / ``gs://bucket/prefix`` without a trailing slash.

    :class:`InvalidInput` names what is wrong: another scheme, a relative path,
    credentials or a query in the URL, ``.`` or ``..`` segments."""
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput(f"{what}: must be a URL or an absolute path")
    if CONTROL_CHARS.search(url):
        raise InvalidInput(f"{what}: contains a control character")
    scheme = scheme_of(url)
    if scheme in ("file", "local"):
        from sclib.transfers.local import local_path

        path = local_path(url)
        if not path.is_absolute():
            raise InvalidInput(f"{what}: a local destination must be an absolute path")
        if any(part in (".", "..") for part in url.split("/")):
            raise InvalidInput(f"{what}: '.' and '..' are not allowed in the path")
        return os.path.normpath(path)
    if scheme not in _SCHEMES:
        raise InvalidInput(
            f"{what}: backups go to a local folder, s3://bucket/prefix or "
            f"gs://bucket/prefix (the engine has no writer for {scheme!r} URLs)"
        )
    parts = urlsplit(url)
    if "@" in parts.netloc or parts.query or parts.fragment:
        raise InvalidInput(
            f"{what}: the URL must not carry credentials, a query or a fragment; "
            "the worker's own destination options are used"
        )
    if not parts.netloc:
        raise InvalidInput(f"{what}: no bucket in {url!r}")
    segments = [s for s in parts.path.split("/") if s]
    if any(s in (".", "..") for s in segments):
        raise InvalidInput(f"{what}: '.' and '..' are not allowed in the path")
    return f"{_SCHEMES[scheme]}://{parts.netloc}/{'/'.join(segments)}".rstrip("/")


def _inside(url: str, root: str) -> bool:
    """Whether the normalised ``url`` is ``root`` or lies under it."""
    if scheme_of(url) == "file" and scheme_of(root) == "file":
        target = Path(url).resolve()
        base = Path(root).resolve()
        return target == base or base in target.parents
    return url == root or url.startswith(root + "/")


class BackupHandler:
    """The ``backup_creation`` job handler; see the module docstring.

    :param data_dir: the data root (datasets live in ``<data_dir>/upload/<uuid>``).
    :param datasets: the dataset records (their files are checked before copying);
        ``None`` copies the folder without that check.
    :param sessions: where the engine keeps resumable state; share it between
        workers so a retried job resumes.
    :param default_destination: where backups go when a job names none.
    :param allowed_destinations: roots a job's ``destination`` must lie in;
        default: the default destination. With neither, every job is refused.
    :param destination_options: options of the destination's writer for object
        stores (``endpoint_url``, keys, ``region``...); not used for local folders.
    :param config: the engine's knobs.

    Parameters of the job: ``destination`` (optional), a URL or absolute path.
    """

    def __init__(
        self,
        data_dir: Path,
        datasets: DatasetStore | None = None,
        sessions: SessionStore | None = None,
        *,
        default_destination: str | None = None,
        allowed_destinations: Sequence[str] | None = None,
        destination_options: Mapping[str, Any] | None = None,
        config: TransferConfig | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.datasets = datasets
        self.default_destination = (
            normalise_destination(default_destination, "default destination")
            if default_destination
            else None
        )
        allowed = (
            allowed_destinations
            if allowed_destinations is not None
            else [d for d in [self.default_destination] if d]
        )
        self.allowed = [
            normalise_destination(a, "allowed destination") for a in allowed
        ]
        self.destination_options = dict(destination_options or {})
        self.engine = TransferEngine(sessions=sessions, config=config)

    def destination_for(self, value: object) -> str:
        """The job's destination, checked against the allowed ones."""
        if value is None or value == "":
            if self.default_destination is None:
                raise InvalidInput(
                    "destination: field required (this worker has no default "
                    "backup destination; the operator can set SCLIB_BACKUP_URL)"
                )
            return self.default_destination
        url = normalise_destination(value)
        if not any(_inside(url, root) for root in self.allowed):
            roots = ", ".join(self.allowed) or "none"
            raise Forbidden(
                f"destination: {url} is not inside an allowed backup destination "
                f"(allowed: {roots})"
            )
        return url

    def __call__(self, ctx: JobContext) -> dict[str, Any]:
        uuid = ctx.job.dataset_uuid
        if not uuid:
            raise InvalidInput("a backup job needs a dataset_uuid")
        root = self.destination_for(ctx.parameters.get("destination"))
        folder = self.data_dir / "upload" / uuid
        if not folder.is_dir():
            raise SourceNotFound(f"dataset {uuid} has no folder to back up")
        recorded: dict[str, str] = {}
        if self.datasets is not None:
            record = self.datasets.get(uuid)
            recorded = {f.path: f.blake3 for f in record.files if f.blake3}
            missing, corrupted = check_files(ctx, folder, record.files)
            if missing or corrupted:
                error = ChecksumMismatch(
                    "not backed up: "
                    + "; ".join(
                        part
                        for part in (
                            corrupted and f"damaged: {', '.join(corrupted[:5])}",
                            missing and f"missing: {', '.join(missing[:5])}",
                        )
                        if part
                    )
                )
                error.retryable = False  # the dataset's files need repair first
                raise error
        local = scheme_of(root) == "file"
        target = str(Path(root) / uuid) + "/" if local else f"{root}/{uuid}/"
        result = engine_copy(
            ctx,
            self.engine,
            str(folder.resolve()),
            target,
            dest_options=None if local else self.destination_options,
            exclude=[PART_GLOB],
        )
        files = [
            {"path": f.key, "size": f.size, "blake3": f.blake3} for f in result.files
        ]
        changed = [
            f["path"]
            for f in files
            if f["path"] in recorded and recorded[f["path"]] != f["blake3"]
        ]
        if changed:
            raise ChecksumMismatch(
                f"{', '.join(changed[:5])}: changed while being backed up; run the "
                "backup again"
            )
        # files whose bytes went out, and files found there already (empty files
        # have no bytes, so they are in neither count)
        sent = sum(1 for f in result.files if f.chunks_sent)
        there = sum(1 for f in result.files if f.chunks and not f.chunks_sent)
        log.info(
            "dataset %s backed up to %s: %d files, %d sent, %d already there",
            uuid,
            target,
            len(files),
            sent,
            there,
        )
        return {
            "dataset_uuid": uuid,
            "destination": target,
            "files": files,
            "bytes": result.bytes,
            "sent": sent,
            "already_there": there,
        }
