"""The pieces of a migration plan (see :mod:`sclib.migrate`).

The legacy status -> job type table, reading legacy documents from an export
file, normalising a document so sclib's queries and writes find it as it means
(:func:`normalise`), the clashes among documents (:func:`find_clashes`), the
parameters of the job that continues a dataset, and the reports the migrator
returns.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sclib.datasets.store import next_slug
from sclib.errors import InvalidInput
from sclib.jobtypes import (
    DatasetStatus,
    JobStatus,
    JobType,
    SensorType,
    dataset_status_for,
)
from sclib.migrate.store import decode_json
from sclib.models import Job
from sclib.models.dataset import canonical_uuid, is_dataset_uuid
from sclib.models.legacy import UPDATED_FIELDS, LegacyReading

__all__ = [
    "HANDLER_NOTES",
    "KEY_PREFIX",
    "LIVE",
    "STATUS_JOBS",
    "Clash",
    "Entry",
    "MigrationItem",
    "MigrationReport",
    "RollbackItem",
    "RollbackReport",
    "ValidationItem",
    "ValidationReport",
    "accepted_types",
    "find_clashes",
    "is_migrated",
    "job_parameters",
    "load_legacy_file",
    "migration_key",
    "normalise",
    "renamed_slugs",
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


def text_field(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value.strip() else None


def normalise(doc: Mapping[str, Any], read: LegacyReading) -> dict[str, Any]:
    """The fields to set so that sclib's queries and writes find ``doc`` as it
    means (``read`` is its :func:`~sclib.models.legacy.read_document`):

    ``user`` (from ``user_email``), ``name`` (from ``dataset_name``), ``status``
    in sclib's spelling (``DONE `` -> ``done``; the original's words:
    ``completed`` -> ``done``, ``conversion failed`` -> ``conversion error``,
    ``cancelled`` -> ``upload error`` with a message, ``processing`` ->
    ``conversion queued``), ``created_at`` / ``updated_at`` as dates (from
    ``date_imported``, ``time``, text or epoch numbers), ``tags`` as a list,
    ``is_public`` / ``convert`` as booleans. Every other field stays as it is;
    the store reads ``folder_uuid``, ``is_public_downloadable``, the original's
    file entries and the rest as they are.
    """
    ds = read.dataset
    changes: dict[str, Any] = {}
    if doc.get("user") != ds.owner:
        changes["user"] = ds.owner
    if doc.get("name") != ds.name:
        changes["name"] = ds.name
    if read.status is not None and doc.get("status") != read.status.value:
        changes["status"] = read.status.value
        if read.sources.get("error_message") == "status":
            changes["error_message"] = ds.error_message
    dated = any(doc.get(n) is not None for n in UPDATED_FIELDS)
    for name, value in (("created_at", ds.created_at), ("updated_at", ds.updated_at)):
        have = doc.get(name)
        if name == "updated_at" and not dated:
            continue  # none to carry over: sclib's next write sets one
        if not (isinstance(have, datetime) and have.tzinfo is not None):
            changes[name] = value
    if doc.get("tags") and doc["tags"] != list(ds.tags):  # "" stays: no tags
        changes["tags"] = list(ds.tags)
    for name, flag in (("is_public", ds.is_public), ("convert", ds.convert)):
        if name in doc and not isinstance(doc[name], bool):
            changes[name] = flag
    return changes


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
        try:
            SensorType.parse(doc.get("sensor"))
        except InvalidInput:
            known = ", ".join(s.value for s in SensorType)
            problems.append(
                f"sensor {doc.get('sensor')!r} is not one sclib converts: set the "
                f"document's sensor to one of {known} and migrate again"
            )
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


# -- clashes --------------------------------------------------------------------------


@dataclass
class Entry:
    """One document the migration considers: ``source`` is ``store`` (the
    dataset store holds it) or ``file`` (an import file)."""

    doc: Mapping[str, Any]
    source: str
    read: LegacyReading

    @property
    def uuid(self) -> str | None:
        """Its uuid, if sclib can use it."""
        u = self.doc.get("uuid")
        return u if isinstance(u, str) and is_dataset_uuid(u) else None

    @property
    def object_id(self) -> str | None:
        oid = self.doc.get("_id")
        return None if oid is None else str(oid)

    def member(self) -> dict[str, Any]:
        """How a clash names it."""
        return {
            "uuid": self.doc.get("uuid"),
            "_id": self.object_id,
            "name": self.read.dataset.name or None,
            "user": self.read.dataset.owner or None,
            "slug": self.read.dataset.slug or None,
            "created_at": self.read.dataset.created_at.isoformat(),
            "source": self.source,
        }

    def newest_key(self) -> tuple[datetime, str]:
        return (self.read.dataset.created_at, self.object_id or "")

    def label(self) -> str:
        """The uuid, else the _id, for messages."""
        u = self.doc.get("uuid")
        if isinstance(u, str) and u:
            return u
        return f"_id {self.object_id}" if self.object_id else "a document without _id"


@dataclass
class Clash:
    """Documents that share what must identify one dataset.

    ``kind``: ``uuid`` (the same uuid), ``uuid spelling`` (one uuid spelt with
    and without dashes, or in other case), ``no uuid`` (several documents
    without one), ``slug`` (one owner's slug on several datasets) or ``number``
    (the original's numeric ``id``). ``blocking``: its documents are not
    migrated. ``action``: what the migration did; ``resolve``: what a person can
    do about it; ``resolved``: the migration resolved it (numbered slugs).
    """

    kind: str
    key: str
    documents: list[dict[str, Any]]
    action: str
    resolve: str
    blocking: bool
    members: list[int] = field(default_factory=list, repr=False)
    resolved: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "key": self.key,
            "documents": self.documents,
            "action": self.action,
            "resolve": self.resolve,
            "blocking": self.blocking,
            "resolved": self.resolved,
        }


def _ids(entries: Sequence[Entry]) -> str:
    return ", ".join(f"_id {e.object_id}" if e.object_id else e.source for e in entries)


def find_clashes(
    entries: Sequence[Entry],
) -> tuple[list[Clash], dict[int, tuple[str, str]]]:
    """Every clash among ``entries``, and for each entry that must not be
    migrated because of one, its reason (``uuid-clash``, ``uuid-spelling``) and
    message. Slug clashes are sorted newest first (the one lookups find)."""
    clashes: list[Clash] = []
    blocked: dict[int, tuple[str, str]] = {}
    by_uuid: dict[str, list[int]] = {}
    by_canon: dict[str, list[int]] = {}
    no_uuid: list[int] = []
    by_slug: dict[tuple[str, str], list[int]] = {}
    by_number: dict[int, list[int]] = {}
    for n, e in enumerate(entries):
        u = e.uuid
        if u is None:
            if not e.doc.get("uuid"):
                no_uuid.append(n)
            continue
        by_uuid.setdefault(u, []).append(n)
        by_canon.setdefault(canonical_uuid(u), []).append(n)

    for u, group in by_uuid.items():
        if len(group) < 2:
            continue
        members = [entries[n] for n in group]
        stored = [n for n in group if entries[n].source == "store"]
        filed = [n for n in group if entries[n].source == "file"]
        if len(stored) >= 2:
            message = (
                f"uuid {u} is held by {len(group)} documents ({_ids(members)}): none "
                "of them is migrated; keep one (delete the others or give them new "
                "uuids) and migrate again"
            )
            for n in group:
                blocked[n] = ("uuid-clash", message)
            action = "none of them is migrated"
        elif stored:
            message = (
                "a dataset with this uuid is already in the store, with other "
                "contents: the file's copy is not imported"
            )
            for n in filed:
                blocked[n] = ("uuid-clash", message)
            action = (
                "the stored document is migrated; the file's copies are not imported"
            )
        else:
            message = (
                f"uuid appears {len(group)} times in the file: none of them is "
                "imported; keep one copy and migrate again"
            )
            for n in group:
                blocked[n] = ("uuid-clash", message)
            action = "none of them is imported"
        clashes.append(
            Clash(
                "uuid",
                u,
                [e.member() for e in members],
                action,
                "keep one document with this uuid: delete the others or give them "
                "new uuids (e.g. db.visstoredatas.updateOne({_id: ObjectId('...')}, "
                "{$set: {uuid: '<new uuid>'}})), then migrate again",
                True,
                list(group),
            )
        )

    for canon, group in by_canon.items():
        spellings = {entries[n].uuid for n in group}
        if len(spellings) < 2:
            continue
        members = [entries[n] for n in group]
        listed = ", ".join(sorted(str(x) for x in spellings))
        for n in group:
            others = sorted(str(x) for x in spellings - {entries[n].uuid})
            blocked.setdefault(
                n,
                (
                    "uuid-spelling",
                    f"the same uuid is also stored as {', '.join(others)} (spelt "
                    "with or without dashes, or in other case): none of them is "
                    "migrated; merge them into one document, or give one a new "
                    "uuid, and migrate again",
                ),
            )
        clashes.append(
            Clash(
                "uuid spelling",
                canon,
                [e.member() for e in members],
                "none of them is migrated",
                f"{listed} are one uuid: sclib looks a dataset up by any spelling "
                "and would find either; keep one document (merge their files and "
                "fields) or give one a new uuid, then migrate again",
                True,
                list(group),
            )
        )

    if len(no_uuid) >= 2:
        members = [entries[n] for n in no_uuid]
        clashes.append(
            Clash(
                "no uuid",
                "",
                [e.member() for e in members],
                "none of them is migrated (each is reported)",
                "give each a uuid of its own (e.g. db.visstoredatas.updateOne("
                "{_id: ObjectId('...')}, {$set: {uuid: '<new uuid>'}}); its folder "
                "is upload/<uuid>/), or delete the documents, then migrate again",
                True,
                list(no_uuid),
            )
        )

    # among the documents whose identity is not in question
    for n, e in enumerate(entries):
        if e.uuid is None or n in blocked:
            continue
        ds = e.read.dataset
        if ds.slug and ds.owner:
            by_slug.setdefault((ds.owner, ds.slug), []).append(n)
        if ds.number is not None:
            by_number.setdefault(ds.number, []).append(n)

    for (owner, slug), group in by_slug.items():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda n: entries[n].newest_key(), reverse=True)
        newest = entries[group[0]]
        clashes.append(
            Clash(
                "slug",
                f"{owner} {slug}",
                [entries[n].member() for n in group],
                "the slugs are kept as they are; a lookup by this slug finds the "
                f"newest, {newest.label()}",
                "run `sclib migrate --resolve` to give the older ones numbered slugs "
                f"({slug}-2, ...), or look them up by uuid",
                False,
                group,
            )
        )

    for number, group in by_number.items():
        if len(group) < 2:
            continue
        group = sorted(group, key=lambda n: entries[n].newest_key(), reverse=True)
        clashes.append(
            Clash(
                "number",
                str(number),
                [entries[n].member() for n in group],
                "the numbers are kept as they are; a lookup by this number finds "
                f"the newest, {entries[group[0]].label()}",
                "nothing to do: the original's 5-digit ids repeat; look these "
                "datasets up by uuid",
                False,
                group,
            )
        )
    return clashes, blocked


def renamed_slugs(
    clash: Clash, entries: Sequence[Entry], taken: set[str]
) -> dict[int, str]:
    """For a slug clash, the new slug of each entry but the newest: the first
    free ``<slug>-2``, ``-3``, ... among ``taken`` (the owner's slugs; the new
    ones are added to it)."""
    out: dict[int, str] = {}
    for n in clash.members[1:]:
        new = next_slug(entries[n].read.dataset.slug, taken)
        taken.add(new)
        out[n] = new
    return out


# -- reports --------------------------------------------------------------------------


@dataclass
class MigrationItem:
    """What the migration does (or did) with one dataset document.

    ``action``: ``create`` (a job is made), ``exists`` (a job already continues
    it), ``nothing`` (no job needed) or ``skip`` (see ``problems``; ``reasons``
    holds a short code for each). ``status`` is the status in sclib's spelling
    when the document's (``original_status``) is spelt otherwise. ``id``: the
    document's MongoDB ``_id``, if it has one.
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
    reasons: list[str] = field(default_factory=list)
    id: str | None = None
    original_status: str | None = None

    def problem(self, reason: str, message: str) -> None:
        self.problems.append(message)
        self.reasons.append(reason)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MigrationReport:
    """``clashes``: see :class:`Clash`; ``notes``: facts about the whole store
    (indexes, the original's job documents)."""

    applied: bool
    items: list[MigrationItem]
    clashes: list[Clash] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> list[MigrationItem]:
        return [i for i in self.items if i.problems]

    @property
    def open_clashes(self) -> list[Clash]:
        """The clashes a person must look at: all but repeated numbers and the
        slugs the migration renumbered."""
        return [c for c in self.clashes if c.kind != "number" and not c.resolved]

    def reported(self) -> dict[str, int]:
        """How many datasets were reported, by reason (one count per reason)."""
        found: Counter[str] = Counter()
        for i in self.items:
            found.update(set(i.reasons))
        return dict(sorted(found.items()))

    def counts(self) -> dict[str, int]:
        out = {"create": 0, "exists": 0, "nothing": 0, "skip": 0}
        for i in self.items:
            out[i.action] += 1
        out["imported"] = sum(i.imported for i in self.items if i.action != "skip")
        out["normalised"] = sum(bool(i.changes) for i in self.items)
        out["clashes"] = len(self.open_clashes)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "counts": self.counts(),
            "problems": len(self.problems),
            "reported": self.reported(),
            "clashes": [c.to_dict() for c in self.clashes],
            "notes": self.notes,
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
