"""Datasets and their files: plain frozen records, validated when built.

A :class:`Dataset` is what the portal calls a dataset: a named folder of files owned
by one user, with a sensor type that says how it is converted and a legacy status
string (:class:`~sclib.jobtypes.DatasetStatus`). A :class:`DatasetFile` is one file
of it: its path relative to the dataset's folder, its size and its BLAKE3 digest.

Both validate their values when built, so a bad value fails where it enters, with a
message naming the field (:class:`~sclib.errors.InvalidInput`). Times are
timezone-aware UTC datetimes, kept to the millisecond (MongoDB's precision), so a
dataset reads back equal from every store.
"""

from __future__ import annotations

import re
import unicodedata
import uuid as _uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sclib.errors import DatasetConflict, DatasetNotFound, InvalidInput
from sclib.jobtypes import DatasetStatus, SensorType
from sclib.paths import safe_relative_path

__all__ = [
    "Dataset",
    "DatasetConflict",
    "DatasetFile",
    "DatasetNotFound",
    "canonical_uuid",
    "is_dataset_uuid",
    "merge_files",
    "new_dataset_uuid",
    "slugify",
    "utc_now",
    "uuid_spellings",
]

# 32 hex digits as sclib makes them, the dashed form the legacy portal's
# documents carry (550e8400-e29b-41d4-a716-446655440000), or any identifier the
# original upload API was given as a new dataset's uuid (``dataset_identifier``):
# letters, digits, '.', '_' and '-', starting with a letter or digit, so that it
# is always a plain folder name
_UUID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
# the original system's slugs: '<email local part>-<name>-<year>' with dots,
# '+', '_' and repeated dashes kept; valid for lookups, never made anew
_LEGACY_SLUG = re.compile(r"^[^/\x00-\x1f\x7f]{1,255}$")
_MAX_SLUG = 80


def canonical_uuid(identifier: str) -> str:
    """A uuid in sclib's spelling (32 lowercase hex digits) if ``identifier`` is a
    uuid in any spelling; any other identifier as it is."""
    try:
        return _uuid.UUID(identifier.strip()).hex
    except (ValueError, AttributeError):
        return identifier


def uuid_spellings(identifier: str) -> list[str]:
    """Every spelling a dataset with this uuid may be stored under: sclib's 32
    hex digits, the dashed form of migrated datasets, and the text as given."""
    found = [identifier]
    try:
        parsed = _uuid.UUID(identifier.strip())
    except (ValueError, AttributeError):
        return found
    for spelling in (parsed.hex, str(parsed)):
        if spelling not in found:
            found.append(spelling)
    return found


def is_dataset_uuid(value: str) -> bool:
    """Whether ``value`` may be a dataset's uuid (see :class:`Dataset`)."""
    return isinstance(value, str) and bool(_UUID.match(value))


def new_dataset_uuid() -> str:
    """A new dataset uuid: 32 lowercase hex digits, as the upload routes make."""
    return _uuid.uuid4().hex


def utc_now() -> datetime:
    """Now, as an aware UTC datetime truncated to the millisecond."""
    return _to_ms(datetime.now(UTC))


def _to_ms(dt: datetime) -> datetime:
    return dt.replace(microsecond=dt.microsecond // 1000 * 1000)


def slugify(name: str) -> str:
    """The slug a name gives: ``"My Data"`` -> ``"my-data"``.

    Lowercase ASCII letters and digits separated by single dashes, at most 80
    characters; a name with no letters or digits gives ``"dataset"``.
    """
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    slug = slug[:_MAX_SLUG].rstrip("-")
    return slug or "dataset"


def _check_text(value: object, what: str, *, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, got {type(value).__name__}")
    if not empty and not value.strip():
        raise InvalidInput(f"{what} must not be empty")
    return value


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidInput(f"{what} must be true or false, got {value!r}")
    return value


def _check_time(value: object, what: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise InvalidInput(f"{what} must be a timezone-aware datetime, got {value!r}")
    return _to_ms(value.astimezone(UTC))


def _check_status(value: object) -> DatasetStatus:
    try:
        return DatasetStatus(value if isinstance(value, str) else repr(value))
    except ValueError:
        known = ", ".join(repr(s.value) for s in DatasetStatus)
        raise InvalidInput(
            f"{value!r} is not a dataset status; known: {known}"
        ) from None


@dataclass(frozen=True, slots=True)
class DatasetFile:
    """One file of a dataset: path relative to the dataset folder, size, BLAKE3.

    The path must stay inside the folder (no ``..``, no absolute path; see
    :func:`sclib.paths.safe_relative_path`); the digest is 64 hex digits
    (stored in lowercase), or ``None`` for a file the original system recorded
    without one (its size is then what the original recorded, often 0): the next
    ``data_validation`` job reads the file and records both.
    """

    path: str
    size: int
    blake3: str | None

    def __post_init__(self) -> None:
        clean = safe_relative_path(_check_text(self.path, "file path"), "file path")
        if not clean:
            raise InvalidInput("file path must not be empty")
        size = self.size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(
                f"file {clean!r}: size must be a non-negative integer, got {size!r}"
            )
        object.__setattr__(self, "path", clean)
        if self.blake3 is None:
            return
        digest = _check_text(self.blake3, f"file {clean!r}: blake3").lower()
        if not _HEX64.match(digest):
            raise InvalidInput(
                f"file {clean!r}: blake3 must be 64 hex digits, got {self.blake3!r}"
            )
        object.__setattr__(self, "blake3", digest)


@dataclass(frozen=True, slots=True)
class Dataset:
    """A dataset: who owns it, how it is converted, its files and its status.

    ``slug`` may be left empty: the store derives it from ``name`` when the dataset
    is created, and makes it unique among the owner's datasets (``my-data``,
    ``my-data-2``, ...). A slug the original system made (dots, ``_``, repeated
    dashes) is kept as it is. ``uuid`` is 32 hex digits for datasets sclib makes;
    the dashed form and the original system's other identifiers are kept too.
    ``number`` is the short numeric id the original system gave every dataset
    (its ``id`` field); stores give new datasets the next free one. ``files`` are
    kept sorted by path; :attr:`total_size` is their sum.

    ``notes`` are set by a store that read a document sclib did not write (the
    original system's, see :mod:`sclib.models.legacy`): what it could not read
    and what it had to guess. A dataset with notes may be *partial*: an empty
    ``owner`` or ``name`` (not in the document), a ``status`` that is the
    document's text because sclib does not know it (see :attr:`complete`).
    Stores refuse to create a partial dataset, and store none of the notes.
    """

    name: str
    owner: str
    sensor: SensorType | str
    uuid: str = field(default_factory=new_dataset_uuid)
    slug: str = ""
    convert: bool = True
    is_public: bool = False
    is_public_downloadable: bool = False
    folder: str = ""
    team_uuid: str | None = None
    tags: tuple[str, ...] = ()
    files: tuple[DatasetFile, ...] = ()
    status: DatasetStatus | str = DatasetStatus.SUBMITTED
    error_message: str | None = None
    created_at: datetime = field(default_factory=utc_now)
    updated_at: datetime = field(default_factory=utc_now)
    number: int | None = None
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.notes, str) or not all(
            isinstance(n, str) for n in self.notes
        ):
            raise InvalidInput("notes must be a list of strings")
        set_(self, "notes", tuple(self.notes))
        partial = bool(self.notes)
        _check_text(self.name, "name", empty=partial)
        _check_text(self.owner, "owner", empty=partial)
        if not is_dataset_uuid(self.uuid):
            raise InvalidInput(
                "uuid must be 32 lowercase hex digits, the dashed 8-4-4-4-12 form, "
                "or an identifier of letters, digits, '.', '_' and '-' (at most "
                f"128, starting with a letter or digit), got {self.uuid!r}"
            )
        _check_text(self.slug, "slug", empty=True)
        if self.slug and not _LEGACY_SLUG.match(self.slug):
            raise InvalidInput(
                f"slug {self.slug!r} must be at most 255 characters without '/' or "
                "control characters"
            )
        if self.number is not None and (
            isinstance(self.number, bool)
            or not isinstance(self.number, int)
            or self.number < 0
        ):
            raise InvalidInput(
                f"number must be a non-negative integer, got {self.number!r}"
            )
        set_(self, "sensor", SensorType.parse(self.sensor))
        for name in ("convert", "is_public", "is_public_downloadable"):
            _check_bool(getattr(self, name), name)
        _check_text(self.folder, "folder", empty=True)
        if self.team_uuid is not None:
            _check_text(self.team_uuid, "team_uuid")
        if isinstance(self.tags, str):
            raise InvalidInput("tags must be a list of strings, not one string")
        set_(self, "tags", tuple(_check_text(t, "tag") for t in self.tags))
        set_(self, "files", _unique_files(self.files))
        try:
            set_(self, "status", _check_status(self.status))
        except InvalidInput:
            if not partial:
                raise
            _check_text(self.status, "status", empty=True)  # kept as it is
        if self.error_message is not None:
            _check_text(self.error_message, "error_message", empty=True)
        set_(self, "created_at", _check_time(self.created_at, "created_at"))
        set_(self, "updated_at", _check_time(self.updated_at, "updated_at"))

    @property
    def total_size(self) -> int:
        """The sum of the files' sizes, in bytes."""
        return sum(f.size for f in self.files)

    @property
    def complete(self) -> bool:
        """Whether it has an owner, a name and a status sclib knows: whether a
        store may create it (see ``notes``)."""
        return bool(
            self.owner.strip()
            and self.name.strip()
            and isinstance(self.status, DatasetStatus)
        )


def _unique_files(files: Iterable[DatasetFile]) -> tuple[DatasetFile, ...]:
    """Files sorted by path; a path given twice is refused."""
    by_path: dict[str, DatasetFile] = {}
    for f in files:
        if not isinstance(f, DatasetFile):
            raise InvalidInput(f"files must be DatasetFile objects, got {f!r}")
        if f.path in by_path:
            raise InvalidInput(f"file path {f.path!r} is given twice")
        by_path[f.path] = f
    return tuple(by_path[p] for p in sorted(by_path))


def merge_files(
    old: Iterable[DatasetFile], new: Iterable[DatasetFile]
) -> tuple[DatasetFile, ...]:
    """``old`` with ``new`` added; a new file replaces the old one at its path (and
    of two new files at one path, the later wins)."""
    by_path = {f.path: f for f in old}
    for f in new:
        if not isinstance(f, DatasetFile):
            raise InvalidInput(f"files must be DatasetFile objects, got {f!r}")
        by_path[f.path] = f
    return tuple(by_path[p] for p in sorted(by_path))
