"""The pieces of a migration plan (see :mod:`sclib.migrate`).

The legacy status -> job type table, reading legacy documents from an export
file, normalising a document so the dataset store can read it, the parameters of
the job that continues a dataset, and the reports the migrator returns.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sclib.errors import InvalidInput
from sclib.jobtypes import DatasetStatus, JobStatus, JobType, dataset_status_for
from sclib.migrate_store import decode_json
from sclib.models import Job

__all__ = [
    "HANDLER_NOTES",
    "KEY_PREFIX",
    "LIVE",
    "STATUS_JOBS",
    "MigrationItem",
    "MigrationReport",
    "RollbackItem",
    "RollbackReport",
    "ValidationItem",
    "ValidationReport",
    "accepted_types",
    "is_migrated",
    "job_parameters",
    "load_legacy_file",
    "migration_key",
    "normalise",
    "text_field",
]

_D = DatasetStatus

#: Legacy status -> the job type that continues a dataset in it.
STATUS_JOBS: Mapping[str, str] = {
    _D.SYNC_QUEUED: JobType.GOOGLE_SYNC,
    _D.SYNCING: JobType.GOOGLE_SYNC,
    _D.CONVERSION_QUEUED: JobType.DATASET_CONVERSION,
    _D.CONVERTING: JobType.DATASET_CONVERSION,
    _D.UPLOAD_QUEUED: JobType.UPLOAD,
    _D.UPLOADING: JobType.UPLOAD,
    _D.UNZIPPING: JobType.FILE_EXTRACTION,
    _D.ZIPPING: JobType.DATA_COMPRESSION,
}

KEY_PREFIX = "migrate:"
_CREATED = ("created_at", "date_created", "created", "creation_date")
_UPDATED = ("updated_at", "date_updated", "updated", "last_updated")
LIVE = (JobStatus.PENDING, JobStatus.RUNNING)
_DRIVE_HOSTS = ("drive.google.com", "docs.google.com")
_DRIVE_ID = re.compile(r"^[A-Za-z0-9_-]{10,}$")

#: What runs each job type today; said in the plan so nobody expects more.
HANDLER_NOTES: Mapping[str, str] = {
    JobType.GOOGLE_SYNC: (
        "the google_sync job reads google_drive_link with the worker's "
        "service account (SCLIB_GDRIVE_SERVICE_ACCOUNT_FILE): set it before "
        "starting the workers"
    ),
    JobType.UPLOAD: (
        "the upload job (source 'legacy') records and verifies what the old system "
        "left in upload/<uuid>/ and continues the pipeline; with no files there it "
        "fails saying the data must be uploaded again"
    ),
}


def migration_key(uuid: str, status: str) -> str:
    return f"{KEY_PREFIX}{uuid}:{status}"


def is_migrated(job: Job) -> bool:
    return (job.idempotency_key or "").startswith(KEY_PREFIX)


def accepted_types(status: str) -> frozenset[str]:
    """Job types whose pending or running job stands for dataset ``status``."""
    out = set()
    for t in JobType:
        shown = {
            dataset_status_for(t, JobStatus.PENDING),
            dataset_status_for(t, JobStatus.RUNNING),
            dataset_status_for(t, JobStatus.PENDING, retrying=True),
        }
        if status in shown:
            out.add(str(t))
    return frozenset(out)


# -- reading legacy documents ---------------------------------------------------------


def load_legacy_file(path: str | Path) -> list[dict[str, Any]]:
    """Legacy dataset documents from an export file.

    ``.jsonl`` / ``.ndjson`` (``mongoexport``'s default): one JSON document per
    line; anything else: one JSON array of documents. MongoDB extended JSON is
    understood (``{"$date": ...}``, ``{"$oid": ...}``). Raises
    :class:`~sclib.errors.InvalidInput` naming the file and line of a bad entry.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read {p}: {exc}") from None
    docs: list[Any] = []
    if p.suffix.lower() in (".jsonl", ".ndjson"):
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    docs.append(decode_json(line))
                except ValueError as exc:
                    raise InvalidInput(f"{p}, line {n}: not JSON: {exc}") from None
    else:
        try:
            loaded = decode_json(text)
        except ValueError as exc:
            raise InvalidInput(f"{p}: not JSON: {exc}") from None
        if not isinstance(loaded, list):
            raise InvalidInput(f"{p}: expected a JSON array of dataset documents")
        docs = loaded
    for n, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise InvalidInput(f"{p}: entry {n} is not a JSON object")
    return docs


def _when(value: Any, name: str) -> tuple[datetime | None, str | None]:
    """A date field as an aware UTC datetime (naive values are taken as UTC)."""
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, str):
        try:
            when = datetime.fromisoformat(value.strip())
        except ValueError:
            return None, f"{name} {value!r} is not an ISO 8601 date"
    else:
        return None, f"{name} {value!r} is not a date"
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.replace(microsecond=when.microsecond // 1000 * 1000), None


def text_field(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value.strip() else None


def normalise(doc: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The fields to add or reshape so the dataset store can read ``doc``."""
    changes: dict[str, Any] = {}
    problems: list[str] = []
    if text_field(doc, "user") is None:
        email = text_field(doc, "user_email")
        if email is None:
            problems.append("no user or user_email: the dataset has no owner")
        else:
            changes["user"] = email
    if text_field(doc, "name") is None:
        name = text_field(doc, "dataset_name")
        if name is None:
            problems.append("no name (or dataset_name)")
        else:
            changes["name"] = name
    for target, names in (("created_at", _CREATED), ("updated_at", _UPDATED)):
        found = next((n for n in names if doc.get(n) is not None), None)
        if found is None:
            if target == "created_at":
                problems.append(f"no creation date ({', '.join(names)})")
            continue
        value = doc[found]
        when, problem = _when(value, found)
        if problem:
            problems.append(problem)
        elif found != target or not (
            isinstance(value, datetime) and value.tzinfo is not None
        ):
            changes[target] = when
    tags = doc.get("tags")
    if isinstance(tags, str):
        changes["tags"] = [t.strip() for t in tags.split(",") if t.strip()]
    return changes, problems


def _drive_id(link: str) -> tuple[str, str] | None:
    """``("folder_id" | "file_id", id)`` from a Google Drive link or a bare id."""
    link = link.strip()
    if _DRIVE_ID.match(link):
        return "folder_id", link
    parts = urlsplit(link)
    if parts.scheme not in ("http", "https") or parts.hostname not in _DRIVE_HOSTS:
        return None
    m = re.search(r"/folders/([A-Za-z0-9_-]+)", parts.path)
    if m:
        return "folder_id", m.group(1)
    m = re.search(r"/d/([A-Za-z0-9_-]+)", parts.path)
    if m:
        return "file_id", m.group(1)
    ids = parse_qs(parts.query).get("id")
    if ids and _DRIVE_ID.match(ids[0]):
        return "file_id", ids[0]
    return None


def job_parameters(
    job_type: str, doc: Mapping[str, Any]
) -> tuple[dict[str, Any], list[str]]:
    params: dict[str, Any] = {
        "migrated": True,
        "legacy_status": doc["status"],
        "dataset_name": doc.get("name"),
        "sensor": doc.get("sensor"),
    }
    problems: list[str] = []
    if job_type == JobType.GOOGLE_SYNC:
        link = text_field(doc, "google_drive_link")
        found = _drive_id(link) if link else None
        if link is None:
            problems.append("no google_drive_link: a sync needs the Drive folder")
        elif found is None:
            problems.append(f"google_drive_link {link!r} names no Drive folder or file")
        else:
            params["google_drive_link"] = link
    elif job_type == JobType.DATASET_CONVERSION:
        conv = doc.get("conversion_parameters")
        if isinstance(conv, str) and conv.strip():
            try:
                conv = json.loads(conv)
            except ValueError:
                conv = None
                problems.append("conversion_parameters is a string but not JSON")
        if isinstance(conv, dict):
            params["conversion_parameters"] = conv
        elif conv not in (None, ""):
            problems.append(
                f"conversion_parameters must be an object, got {type(conv).__name__}"
            )
    elif job_type == JobType.FILE_EXTRACTION:
        archive = text_field(doc, "archive")
        if archive is None:
            problems.append(
                "no archive: an unzip needs the archive's path inside the dataset"
            )
        else:
            params["archive"] = archive
    elif job_type == JobType.UPLOAD:
        params["source"] = "legacy"
    try:
        json.dumps(params, allow_nan=False)
    except (TypeError, ValueError) as exc:
        problems.append(f"the job's parameters are not JSON: {exc}")
    return params, problems


# -- reports --------------------------------------------------------------------------


@dataclass
class MigrationItem:
    """What the migration does (or did) with one dataset document.

    ``action``: ``create`` (a job is made), ``exists`` (a job already continues
    it), ``nothing`` (no job needed) or ``skip`` (see ``problems``).
    """

    uuid: str | None
    status: str | None
    action: str = "nothing"
    name: str | None = None
    job_type: str | None = None
    job_id: str | None = None
    imported: bool = False
    changes: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MigrationReport:
    applied: bool
    items: list[MigrationItem]

    @property
    def problems(self) -> list[MigrationItem]:
        return [i for i in self.items if i.problems]

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "exists": 0, "nothing": 0, "skip": 0}
        for i in self.items:
            out[i.action] += 1
        out["imported"] = sum(i.imported for i in self.items if i.action != "skip")
        out["normalised"] = sum(bool(i.changes) for i in self.items)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "counts": self.counts(),
            "problems": len(self.problems),
            "datasets": [i.to_dict() for i in self.items],
        }


@dataclass
class ValidationItem:
    uuid: str | None
    status: str | None
    jobs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class ValidationReport:
    items: list[ValidationItem]

    @property
    def problems(self) -> list[ValidationItem]:
        return [i for i in self.items if i.problems]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checked": len(self.items),
            "problems": len(self.problems),
            "datasets": [i.to_dict() for i in self.items],
        }


@dataclass
class RollbackItem:
    """``document``: ``removed`` (it was imported), ``restored`` or ``kept``."""

    uuid: str
    document: str
    jobs: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class RollbackReport:
    applied: bool
    items: list[RollbackItem]

    @property
    def problems(self) -> list[RollbackItem]:
        return [i for i in self.items if i.problems]

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "datasets": len(self.items),
            "jobs": sum(len(i.jobs) for i in self.items if not i.problems),
            "problems": len(self.problems),
            "items": [i.to_dict() for i in self.items],
        }
