"""Reading the dataset documents the original ScientistCloud wrote.

The original system (``visstoredatas``) wrote its dataset documents in several
shapes over the years, and sclib shares the collection with it. This module reads
every one of them into a :class:`~sclib.datasets.Dataset`, the way the MongoDB
dataset store reads its own documents, and never raises: what it cannot read is
said in :attr:`LegacyReading.missing` (and the dataset is then *partial*, see
:attr:`~sclib.datasets.Dataset.notes`), and what it had to guess is said in
:attr:`LegacyReading.notes`. The shapes (``docs/datasets.md``, "Documents of the
original system"):

* the upload processor's: ``user`` (+ ``user_id``), ``folder_uuid``,
  ``is_public_downloadable``, a ``tags`` string whose letters were joined one by
  one (``"s,o,i,l,,,m,a,i,z,e"`` for ``soil,maize``), and ``files`` entries
  ``{source_path, destination_path, source_type, total_size_bytes, created_at}``
  with no digest and a size of 0;
* its first weeks': ``user_email`` instead of ``user``, ``folder``, no slug;
* the Dataset API's: ``date_imported`` / ``date_updated`` instead of
  ``created_at`` / ``updated_at``, ``data_conversion_needed``, a free ``sensor``
  string, ``tags`` as a list that may hold ``""``;
* the portal's older documents: ``time`` (a string, a date or a number),
  ``is_public`` as ``"false"`` / ``"True"`` / ``1``, ``team_uuid: ""``;
* the private branch's ``is_downloadable`` strings (``"only owner"``,
  ``"only team"``, ``"public"``);
* statuses in the original's own words (``completed``, ``conversion failed``,
  ``cancelled``, ``processing``), in any case, with stray spaces.

The reading of each field, in order of preference:

==========================  ===================================================
dataset attribute           document fields
==========================  ===================================================
``uuid``                    ``uuid``; else the MongoDB ``_id`` (partial)
``owner``                   ``user``, ``user_email``, ``user_id`` if an email
``name``                    ``name``, ``dataset_name``
``created_at``              ``created_at``, ``date_created``, ``created``,
                            ``creation_date``, ``date_imported``, ``time``;
                            else the time in the ``_id``
``updated_at``              ``updated_at``, ``date_updated``, ``updated``,
                            ``last_updated``; else ``created_at``
``folder``                  ``folder``, ``folder_uuid``, ``metadata.folder_uuid``
``is_public_downloadable``  ``is_downloadable`` (a boolean),
                            ``is_public_downloadable``, ``is_downloadable``
                            (the private branch's strings)
``convert``                 ``convert``, ``data_conversion_needed``
``error_message``           ``error_message``, ``conversion_last_error``
``number``                  ``id``
==========================  ===================================================

Dates may be datetimes, ISO 8601 strings with or without a zone (UTC if none),
or numbers of seconds (or milliseconds) since the epoch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any

from sclib.errors import InvalidInput
from sclib.jobtypes import DatasetStatus, SensorType
from sclib.models.dataset import Dataset, DatasetFile, canonical_uuid, is_dataset_uuid

__all__ = [
    "CREATED_FIELDS",
    "STATUS_WORDS",
    "UPDATED_FIELDS",
    "LegacyReading",
    "file_entries",
    "is_object_id_text",
    "read_bool",
    "read_date",
    "read_document",
    "read_status",
    "read_tags",
    "status_key",
]

_D = DatasetStatus

#: The original system's own status words -> the sclib status that means the same.
STATUS_WORDS: Mapping[str, DatasetStatus] = {
    # the background service, after its retries or without an input folder
    "conversion failed": _D.CONVERSION_ERROR,
    # the upload processor's first weeks; the Dataset API's files endpoints
    "completed": _D.DONE,
    # the upload processor, when its user cancelled the upload
    "cancelled": _D.UPLOAD_ERROR,
    "canceled": _D.UPLOAD_ERROR,
    # the Dataset API, once files were added to a dataset that needs converting
    # (the portal shows it as in progress, like 'converting')
    "processing": _D.CONVERSION_QUEUED,
}

#: Why an original word reads as its sclib status (said in notes and reports).
_WORD_MEANS: Mapping[str, str] = {
    "conversion failed": "its conversion failed",
    "completed": "it was finished",
    "cancelled": "its user cancelled the upload",
    "canceled": "its user cancelled the upload",
    "processing": "files were added and it waits to be converted",
}

CREATED_FIELDS = (
    "created_at",
    "date_created",
    "created",
    "creation_date",
    "date_imported",
    "time",
)
UPDATED_FIELDS = ("updated_at", "date_updated", "updated", "last_updated")

_TRUE = frozenset({"true", "1", "yes", "y", "on", "t"})
_FALSE = frozenset({"false", "0", "no", "n", "off", "f", ""})
_EPOCH_DIGITS = re.compile(r"^-?\d{9,13}(\.\d+)?$")
_OBJECT_ID = re.compile(r"^[0-9a-f]{24}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def status_key(text: str) -> str:
    """``text`` lowercased, its spaces trimmed and runs of them made one."""
    return " ".join(text.lower().split())


def read_status(value: object) -> tuple[DatasetStatus | None, str | None]:
    """The sclib status a document's ``status`` means, and a note when it is not
    spelt as sclib spells it; ``(None, why)`` for a status sclib cannot read."""
    if not isinstance(value, str) or not value.strip():
        return None, "no status"
    key = status_key(value)
    if key in DatasetStatus._value2member_map_:
        status = DatasetStatus(key)
        if key == value:
            return status, None
        return status, f"status {value!r} read as {key!r}"
    if key in STATUS_WORDS:
        status = STATUS_WORDS[key]
        return status, (
            f"status {value!r} is the original system's word for {status.value!r} "
            f"({_WORD_MEANS[key]})"
        )
    known = ", ".join(s.value for s in DatasetStatus)
    return None, (
        f"unknown status {value!r}: not one of sclib's ({known}) nor a word the "
        "original system wrote for one"
    )


def read_bool(value: object, default: bool = False) -> tuple[bool, str | None]:
    """A boolean from ``True``, ``"false"``, ``"True"``, ``1``, ``"0"``, ``"yes"``
    ...; ``None`` gives ``default``; anything else gives ``default`` and a note."""
    if value is None:
        return default, None
    if isinstance(value, bool):
        return value, None
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value), None
    if isinstance(value, str):
        key = value.strip().lower()
        if key in _TRUE:
            return True, None
        if key in _FALSE:
            return False, None
    return default, f"{value!r} is not true or false: read as {default}"


def read_date(value: object) -> datetime | None:
    """An aware UTC datetime (to the millisecond) from a datetime, an ISO 8601
    string (UTC if it names no zone), a number of seconds or milliseconds since
    the epoch (or such a number as a string), or ``{"$date": ...}``; else None."""
    when: datetime
    if isinstance(value, datetime):
        when = value
    elif isinstance(value, bool) or value is None:
        return None
    elif isinstance(value, int | float):
        return _from_epoch(float(value))
    elif isinstance(value, str):
        text = value.strip()
        if _EPOCH_DIGITS.match(text):
            return _from_epoch(float(text))
        try:
            when = datetime.fromisoformat(text)
        except ValueError:
            return None
    elif isinstance(value, Mapping) and set(value) == {"$date"}:
        raw = value["$date"]
        if isinstance(raw, Mapping) and "$numberLong" in raw:
            try:
                return _from_epoch(int(raw["$numberLong"]) / 1000)
            except (TypeError, ValueError):
                return None
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return _from_epoch(raw / 1000)
        return read_date(raw) if isinstance(raw, str) else None
    else:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    when = when.astimezone(UTC)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _from_epoch(number: float) -> datetime | None:
    seconds = number / 1000 if abs(number) >= 1e11 else number
    try:
        when = datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def read_tags(value: object) -> tuple[tuple[str, ...], str | None]:
    """Tags from a list (empty ones dropped), a comma string, a JSON array string,
    or the original upload's letters-joined string (``"x,r,a,y"`` is ``xray``)."""
    if value is None:
        return (), None
    if isinstance(value, list | tuple):
        tags = [t.strip() for t in value if isinstance(t, str) and t.strip()]
        dropped = [t for t in value if not isinstance(t, str)]
        note = f"tags {dropped!r} are not text: left out" if dropped else None
        return tuple(dict.fromkeys(tags)), note
    if not isinstance(value, str):
        return (), f"tags {value!r} are neither a list nor text: read as none"
    text = value.strip()
    if text.startswith("["):
        try:
            loaded = json.loads(text)
        except ValueError:
            loaded = None
        if isinstance(loaded, list):
            return read_tags(loaded)
    if len(value) >= 3 and len(value) % 2 == 1 and set(value[1::2]) == {","}:
        # the original's upload joined the *letters* of the form's tag text
        joined = value[0::2]
        decoded = _split(joined)
        return decoded, (
            f"tags {value!r} hold one letter each (the original upload joined the "
            f"letters of {joined!r}): read as {', '.join(decoded) or 'none'}"
        )
    return _split(value), None


def _split(text: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))


def _text(doc: Mapping[str, Any], name: str) -> str | None:
    value = doc.get(name)
    return value if isinstance(value, str) and value.strip() else None


def _id_time(doc: Mapping[str, Any]) -> datetime | None:
    """When a MongoDB ObjectId ``_id`` was made (the document's insertion)."""
    oid = doc.get("_id")
    made = getattr(oid, "generation_time", None)
    return read_date(made) if isinstance(made, datetime) else None


def _id_text(doc: Mapping[str, Any]) -> str | None:
    """The ``_id`` as an identifier sclib can show, if it makes one."""
    oid = doc.get("_id")
    if oid is None:
        return None
    text = str(oid)
    return text if is_dataset_uuid(text) else None


def is_object_id_text(text: str) -> bool:
    """Whether ``text`` is an ObjectId's 24 lowercase hex digits."""
    return bool(_OBJECT_ID.match(text))


def _relative_path(destination: str, uuid: str) -> str | None:
    """The part of an original ``destination_path`` below the dataset's folder
    (``.../upload/<uuid>/<relative>``); None when it names the folder itself."""
    parts = PurePosixPath(destination).parts
    wanted = canonical_uuid(uuid)
    for i in range(len(parts) - 1, -1, -1):
        if parts[i] == uuid or canonical_uuid(parts[i]) == wanted:
            rest = parts[i + 1 :]
            return "/".join(rest) if rest else None
    return None


def file_entries(
    entries: object, uuid: str | None
) -> tuple[list[tuple[DatasetFile, Mapping[str, Any]]], list[str]]:
    """Each readable ``files`` entry with the file it names, in order, and notes
    on the entries left out. Entries are sclib's ``{path, size, blake3}`` or the
    original's ``{source_path, destination_path, ..., total_size_bytes}`` (the
    path below the dataset's folder, the recorded size, no digest)."""
    if entries is None:
        return [], []
    if not isinstance(entries, list):
        return [], [f"files is a {type(entries).__name__}, not a list: read as none"]
    found: list[tuple[DatasetFile, Mapping[str, Any]]] = []
    lossy: list[str] = []
    for n, entry in enumerate(entries, 1):
        if not isinstance(entry, Mapping):
            lossy.append(f"files entry {n} is not an object: left out")
            continue
        try:
            if "path" in entry:
                digest = entry.get("blake3")
                made = DatasetFile(
                    entry["path"], entry.get("size", 0), digest if digest else None
                )
            else:
                dest = entry.get("destination_path")
                if not isinstance(dest, str) or not dest.strip():
                    lossy.append(
                        f"files entry {n} has neither path nor destination_path: "
                        "left out"
                    )
                    continue
                rel = _relative_path(dest, uuid) if uuid else None
                if rel is None:
                    folder = uuid and PurePosixPath(dest).name in (
                        uuid,
                        canonical_uuid(uuid),
                    )
                    lossy.append(
                        f"files entry {n} names the dataset's folder ({dest}), not "
                        "a file (a Drive, S3 or URL import): its files are not listed"
                        if folder
                        else f"files entry {n}: destination_path {dest!r} is not "
                        "inside the dataset's folder: left out"
                    )
                    continue
                size = entry.get("total_size_bytes")
                if isinstance(size, bool) or not isinstance(size, int) or size < 0:
                    size = 0
                made = DatasetFile(rel, size, None)
        except InvalidInput as exc:
            lossy.append(f"files entry {n}: {exc}: left out")
            continue
        found.append((made, entry))
    return found, lossy


def _read_files(
    entries: object, uuid: str | None
) -> tuple[tuple[DatasetFile, ...], list[str], list[str]]:
    """The files, notes on entries left out, and report-only notes."""
    found, lossy = file_entries(entries, uuid)
    # the same file sent again (add_to_existing, a retry): the later entry
    by_path = {f.path: f for f, _ in found}
    files = tuple(by_path[p] for p in sorted(by_path))
    report: list[str] = []
    unknown = sum(1 for f in files if f.blake3 is None)
    if unknown:
        report.append(
            f"{unknown} of its files have no digest yet (the original recorded "
            "none): the next data_validation job records them"
        )
    return files, lossy, report


@dataclass(frozen=True)
class LegacyReading:
    """A document read as a dataset: see :func:`read_document`.

    ``status``: the sclib status the document means, or None. ``missing``: what
    sclib could not read (the dataset is then partial), by reason: ``no-uuid``,
    ``bad-uuid``, ``no-owner``, ``no-name``, ``unknown-status``, ``no-date``.
    ``notes``: what was read
    by a guess or with a loss; ``report``: other facts worth saying in a report.
    ``sources``: for each attribute read from another field, that field.
    """

    dataset: Dataset
    status: DatasetStatus | None
    missing: Mapping[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    report: tuple[str, ...] = ()
    sources: Mapping[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return not self.missing


def _first_date(
    doc: Mapping[str, Any], names: Sequence[str], notes: list[str]
) -> tuple[datetime | None, str | None]:
    for name in names:
        value = doc.get(name)
        if value is None:
            continue
        when = read_date(value)
        if when is not None:
            return when, name
        notes.append(f"{name} {value!r} is not a date: not used")
    return None, None


def _owner(doc: Mapping[str, Any]) -> tuple[str | None, str | None]:
    for name in ("user", "user_email"):
        found = _text(doc, name)
        if found is not None:
            return found, name
    user_id = _text(doc, "user_id")
    if user_id is not None and "@" in user_id:
        return user_id, "user_id"
    return None, None


def _downloadable(doc: Mapping[str, Any], notes: list[str]) -> tuple[bool, str | None]:
    value = doc.get("is_downloadable")
    if isinstance(value, bool):
        return value, "is_downloadable"
    legacy = doc.get("is_public_downloadable")
    if legacy is not None:
        flag, note = read_bool(legacy)
        if note:
            notes.append(f"is_public_downloadable {note}")
        return flag, "is_public_downloadable"
    if isinstance(value, str):
        key = status_key(value)
        if key == "public":
            return True, "is_downloadable"
        if key in ("only owner", "only team"):
            if key == "only team":
                notes.append(
                    "is_downloadable 'only team': sclib has no team-only downloads; "
                    "read as not publicly downloadable (the owner may download)"
                )
            return False, "is_downloadable"
    if value is not None:
        flag, note = read_bool(value)
        if note:
            notes.append(f"is_downloadable {note}")
        return flag, "is_downloadable"
    return False, None


def read_document(doc: Mapping[str, Any]) -> LegacyReading:
    """Read a ``visstoredatas`` document of any shape sclib or the original wrote.

    Never raises. A document missing what a dataset must have (an owner, a name,
    a status sclib knows, a usable uuid) reads as a *partial* dataset: its
    :attr:`~sclib.datasets.Dataset.notes` say what is missing, and where a value
    had to stand in (the ``_id`` for the uuid, an empty owner or name, the status
    text as it is).
    """
    missing: dict[str, str] = {}
    notes: list[str] = []
    report: list[str] = []
    sources: dict[str, str] = {}

    raw_uuid = doc.get("uuid")
    uuid: str | None = None
    if isinstance(raw_uuid, str) and is_dataset_uuid(raw_uuid):
        uuid = raw_uuid
    shown = uuid or _id_text(doc) or "unknown"
    if uuid is None:
        if raw_uuid is None or raw_uuid == "":
            missing["no-uuid"] = "no uuid" + (
                f": shown under its MongoDB _id {shown}" if _id_text(doc) else ""
            )
        else:
            missing["bad-uuid"] = (
                f"uuid {raw_uuid!r} is not one sclib can use (letters, digits, '.', "
                "'_' and '-', starting with a letter or digit)"
                + (f": shown under its MongoDB _id {shown}" if _id_text(doc) else "")
            )

    owner, source = _owner(doc)
    if source is not None and source != "user":
        sources["owner"] = source
    if owner is None:
        user_id = _text(doc, "user_id")
        missing["no-owner"] = "no owner: no user or user_email" + (
            f" (user_id {user_id!r} is a portal profile id, not an email)"
            if user_id
            else ""
        )

    name = _text(doc, "name")
    if name is None:
        name = _text(doc, "dataset_name")
        if name is not None:
            sources["name"] = "dataset_name"
        else:
            missing["no-name"] = "no name (or dataset_name)"

    status, status_note = read_status(doc.get("status"))
    if status is None:
        missing["unknown-status"] = status_note or "no status"
    elif status_note:
        notes.append(status_note)

    created, created_from = _first_date(doc, CREATED_FIELDS, notes)
    if created is None:
        created = _id_time(doc)
        if created is not None:
            created_from = "_id"
            notes.append(
                "no creation date: taken from its MongoDB _id (when it was stored)"
            )
        else:
            created = _EPOCH
            missing["no-date"] = f"no creation date ({', '.join(CREATED_FIELDS)})"
    if created_from and created_from != "created_at":
        sources["created_at"] = created_from
    updated, updated_from = _first_date(doc, UPDATED_FIELDS, notes)
    if updated is None:
        updated = created
    elif updated_from != "updated_at":
        sources["updated_at"] = updated_from or ""

    raw_sensor = doc.get("sensor")
    try:
        sensor = SensorType.parse(raw_sensor)
    except InvalidInput:
        sensor = SensorType.OTHER
        notes.append(
            "no sensor: read as OTHER"
            if raw_sensor in (None, "")
            else f"sensor {raw_sensor!r} is not one sclib knows: read as OTHER"
        )

    if "convert" in doc:
        convert, note = read_bool(doc.get("convert"), True)
        if note:
            notes.append(f"convert {note}")
    else:
        convert, note = read_bool(doc.get("data_conversion_needed"), True)
        if "data_conversion_needed" in doc:
            sources["convert"] = "data_conversion_needed"
        if note:
            notes.append(f"data_conversion_needed {note}")
    is_public, note = read_bool(doc.get("is_public"), False)
    if note:
        notes.append(f"is_public {note}")
    downloadable, source = _downloadable(doc, notes)
    if source is not None and not isinstance(doc.get("is_downloadable"), bool):
        sources["is_public_downloadable"] = source

    folder = ""
    for name_ in ("folder", "folder_uuid"):
        value = doc.get(name_)
        if isinstance(value, str) and value:
            folder = value
            if name_ != "folder":
                sources["folder"] = name_
            break
    else:
        meta = doc.get("metadata")
        value = meta.get("folder_uuid") if isinstance(meta, Mapping) else None
        if isinstance(value, str) and value:
            folder, sources["folder"] = value, "metadata.folder_uuid"

    team = doc.get("team_uuid")
    team_uuid = team.strip() if isinstance(team, str) and team.strip() else None
    if team is not None and not isinstance(team, str):
        notes.append(f"team_uuid {team!r} is not text: read as none")

    tags, note = read_tags(doc.get("tags"))
    if note:
        notes.append(note)

    files, lossy, file_report = _read_files(doc.get("files"), uuid)
    notes += lossy
    report += file_report

    error = _text(doc, "error_message")
    if error is None:
        error = _text(doc, "conversion_last_error")
        if error is not None:
            sources["error_message"] = "conversion_last_error"
    raw_status = doc.get("status")
    if (
        error is None
        and isinstance(raw_status, str)
        and status_key(raw_status) in ("cancelled", "canceled")
    ):
        error = "the upload was cancelled by its user"
        sources["error_message"] = "status"
    raw_error = doc.get("error_message")
    if error is None and isinstance(raw_error, str):
        error = raw_error  # an empty message is kept as it is

    number = doc.get("id")
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        number = None

    slug = doc.get("slug")
    if not isinstance(slug, str):
        slug = ""

    kwargs: dict[str, Any] = {
        "uuid": shown if is_dataset_uuid(shown) else "unknown",
        "name": name or "",
        "slug": slug,
        "owner": owner or "",
        "sensor": sensor,
        "convert": convert,
        "is_public": is_public,
        "is_public_downloadable": downloadable,
        "folder": folder,
        "team_uuid": team_uuid,
        "tags": tags,
        "files": files,
        "status": status if status is not None else str(doc.get("status") or ""),
        "error_message": error,
        "created_at": created,
        "updated_at": updated,
        "number": number,
        "notes": (*missing.values(), *notes),
    }
    try:
        dataset = Dataset(**kwargs)
    except InvalidInput as exc:  # a slug sclib cannot keep, ...: said, not raised
        notes.append(f"{exc}: left out")
        kwargs.update(slug="", team_uuid=None, folder="", tags=(), files=())
        kwargs["notes"] = (*missing.values(), *notes)
        dataset = Dataset(**kwargs)
    return LegacyReading(
        dataset,
        status,
        missing,
        tuple(notes),
        tuple(report),
        sources,
    )
