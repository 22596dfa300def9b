"""The DatasetStore: durable datasets, one atomic write per operation.

Stores: :class:`MemoryDatasetStore` (this process only; tests and notebooks),
SQLite (:mod:`sclib.backends.sqlite_datasets`, the same file as the jobs) and
MongoDB (:mod:`sclib.backends.mongo_datasets`, the portal's ``visstoredatas``
collection). :func:`open_dataset_store` picks one by URL.

What every store promises (``sclib.testing.datasetstore`` checks it):

* ``create`` makes the slug unique among the owner's datasets in the same atomic
  write (two owners may share a slug); a uuid already stored, in any spelling
  (dashed or not), is :class:`~sclib.errors.InvalidInput`.
* ``add_files`` adds or replaces files by path and recomputes the total size
  atomically: concurrent calls on different paths lose no file.
* ``set_status`` checks the change with :func:`sclib.jobtypes.check_transition`;
  with ``expected`` it is a compare-and-set that raises
  :class:`~sclib.models.dataset.DatasetConflict` when the status is another one.
"""

from __future__ import annotations

import builtins
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable
from dataclasses import replace
from typing import Any

from sclib.errors import InvalidInput
from sclib.jobtypes import DatasetStatus, check_transition
from sclib.models.dataset import (
    Dataset,
    DatasetConflict,
    DatasetFile,
    DatasetNotFound,
    is_dataset_uuid,
    merge_files,
    slugify,
    utc_now,
    uuid_spellings,
)

__all__ = [
    "UPDATABLE_FIELDS",
    "DatasetStore",
    "MemoryDatasetStore",
    "find_dataset",
    "next_slug",
    "storable",
]

#: The fields :meth:`DatasetStore.update` may change.
UPDATABLE_FIELDS = frozenset(
    {
        "name",
        "sensor",
        "convert",
        "is_public",
        "is_public_downloadable",
        "folder",
        "team_uuid",
        "tags",
    }
)


def next_slug(base: str, taken: Collection[str]) -> str:
    """``base`` if free, else the first free ``base-2``, ``base-3``, ..."""
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def slug_pattern(base: str) -> str:
    """A regular expression matching ``base`` and its numbered variants."""
    return "^" + re.escape(base) + "(-[0-9]+)?$"


def check_page(limit: int, offset: int) -> None:
    """Refuse a negative or non-integer ``limit`` / ``offset``."""
    for name, value in (("limit", limit), ("offset", offset)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise InvalidInput(f"{name} must be a non-negative integer, got {value!r}")


def storable(dataset: Dataset) -> Dataset:
    """``dataset`` as a store creates it: refused if partial (no owner, no name,
    or a status sclib does not know; see :attr:`Dataset.notes`), notes dropped."""
    if not dataset.complete:
        raise InvalidInput(
            f"dataset {dataset.uuid} cannot be stored as it is: "
            + ("; ".join(dataset.notes) or "it has no owner, name or known status")
        )
    return replace(dataset, notes=()) if dataset.notes else dataset


def checked_update(current: Dataset, fields: dict[str, Any]) -> Dataset:
    """``current`` with ``fields`` changed and validated (not yet stored)."""
    unknown = sorted(set(fields) - UPDATABLE_FIELDS)
    if unknown:
        raise InvalidInput(
            f"cannot update {', '.join(unknown)}; updatable fields: "
            f"{', '.join(sorted(UPDATABLE_FIELDS))}"
        )
    if not fields:
        return current
    return replace(current, **fields, updated_at=utc_now())


def checked_status(
    current: Dataset,
    status: DatasetStatus | str,
    expected: DatasetStatus | str | None,
) -> DatasetStatus:
    """The new status, after the compare-and-set and transition checks."""
    if not isinstance(current.status, DatasetStatus):
        raise InvalidInput(
            f"dataset {current.uuid} has the status {str(current.status)!r}, which "
            "sclib does not read: migrate it first (sclib migrate)"
        )
    if expected is not None and expected not in DatasetStatus._value2member_map_:
        raise InvalidInput(f"expected status {expected!r} is not a dataset status")
    if expected is not None and current.status != expected:
        raise DatasetConflict(
            f"dataset {current.uuid} is in status {str(current.status)!r}, "
            f"not the expected {str(expected)!r}"
        )
    return check_transition(current.status, status)


class DatasetStore(ABC):
    """Durable datasets. Every method is one atomic read or write."""

    @abstractmethod
    def create(self, dataset: Dataset) -> Dataset:
        """Store a new dataset and return it as stored (with its unique slug,
        derived from ``dataset.slug`` or, if empty, from the name)."""

    @abstractmethod
    def get(self, uuid: str) -> Dataset:
        """The dataset; :class:`DatasetNotFound` if unknown."""

    @abstractmethod
    def find_by_slug(self, owner: str, slug: str) -> Dataset | None:
        """The owner's dataset with this slug, if any."""

    @abstractmethod
    def list(
        self,
        *,
        owner: str | None = None,
        status: DatasetStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Dataset]:
        """Datasets, newest first, optionally of one owner and in one status."""

    def find_by(
        self,
        *,
        owner: str | None = None,
        slug: str | None = None,
        name: str | None = None,
        number: int | None = None,
        limit: int = 20,
    ) -> builtins.list[Dataset]:
        """Datasets whose given fields all match (``owner`` too, if given),
        newest first, at most ``limit``.

        This default pages through :meth:`list`; SQLite and MongoDB override it
        with one indexed query.
        """
        found: builtins.list[Dataset] = []
        offset = 0
        while len(found) < limit:
            page = self.list(owner=owner, limit=500, offset=offset)
            found += [
                d
                for d in page
                if (slug is None or d.slug == slug)
                and (name is None or d.name == name)
                and (number is None or d.number == number)
            ]
            if len(page) < 500:
                break
            offset += 500
        return found[:limit]

    @abstractmethod
    def add_files(self, uuid: str, files: Iterable[DatasetFile]) -> Dataset:
        """Add files, replacing any file at the same path; the total size follows."""

    @abstractmethod
    def set_status(
        self,
        uuid: str,
        status: DatasetStatus | str,
        error: str | None = None,
        *,
        expected: DatasetStatus | str | None = None,
    ) -> Dataset:
        """Move the dataset to ``status`` and set its error message to ``error``.

        The change is checked with :func:`~sclib.jobtypes.check_transition`
        (:class:`~sclib.errors.InvalidTransition`). With ``expected``, the change
        happens only if the current status is ``expected``; otherwise
        :class:`DatasetConflict`. Setting the current status and message again
        writes nothing.
        """

    @abstractmethod
    def update(self, uuid: str, /, **fields: Any) -> Dataset:
        """Change the given fields (see :data:`UPDATABLE_FIELDS`); the slug stays."""

    @abstractmethod
    def delete(self, uuid: str) -> None:
        """Remove the dataset and its file records; :class:`DatasetNotFound` if
        unknown."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""


class MemoryDatasetStore(DatasetStore):
    """Datasets in this process's memory; for tests and notebooks."""

    def __init__(self) -> None:
        self._datasets: dict[str, Dataset] = {}
        self._order: dict[str, int] = {}
        self._lock = threading.Lock()

    def _require(self, uuid: str) -> Dataset:
        try:
            return self._datasets[uuid]
        except KeyError:
            raise DatasetNotFound(uuid) from None

    def create(self, dataset: Dataset) -> Dataset:
        dataset = storable(dataset)
        with self._lock:
            stored = [u for u in uuid_spellings(dataset.uuid) if u in self._datasets]
            if stored:
                raise InvalidInput(f"a dataset with uuid {stored[0]} exists")
            taken = {
                d.slug for d in self._datasets.values() if d.owner == dataset.owner
            }
            slug = next_slug(dataset.slug or slugify(dataset.name), taken)
            number = dataset.number
            if number is None:
                numbers = [d.number or 0 for d in self._datasets.values()]
                number = max(numbers, default=0) + 1
            made = replace(dataset, slug=slug, number=number)
            self._datasets[made.uuid] = made
            self._order[made.uuid] = len(self._order)
            return made

    def get(self, uuid: str) -> Dataset:
        with self._lock:
            return self._require(uuid)

    def find_by_slug(self, owner: str, slug: str) -> Dataset | None:
        with self._lock:
            for d in self._datasets.values():
                if d.owner == owner and d.slug == slug:
                    return d
        return None

    def list(
        self,
        *,
        owner: str | None = None,
        status: DatasetStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Dataset]:
        check_page(limit, offset)
        with self._lock:
            found = [
                d
                for d in self._datasets.values()
                if (owner is None or d.owner == owner)
                and (status is None or d.status == status)
            ]
            found.sort(key=lambda d: (d.created_at, self._order[d.uuid]), reverse=True)
        return found[offset : offset + limit]

    def add_files(self, uuid: str, files: Iterable[DatasetFile]) -> Dataset:
        new = list(files)
        with self._lock:
            old = self._require(uuid)
            made = replace(old, files=merge_files(old.files, new), updated_at=utc_now())
            self._datasets[uuid] = made
            return made

    def set_status(
        self,
        uuid: str,
        status: DatasetStatus | str,
        error: str | None = None,
        *,
        expected: DatasetStatus | str | None = None,
    ) -> Dataset:
        with self._lock:
            old = self._require(uuid)
            target = checked_status(old, status, expected)
            if target == old.status and error == old.error_message:
                return old
            made = replace(
                old, status=target, error_message=error, updated_at=utc_now()
            )
            self._datasets[uuid] = made
            return made

    def update(self, uuid: str, /, **fields: Any) -> Dataset:
        with self._lock:
            made = checked_update(self._require(uuid), fields)
            self._datasets[uuid] = made
            return made

    def delete(self, uuid: str) -> None:
        with self._lock:
            self._require(uuid)
            del self._datasets[uuid]
            self._order.pop(uuid, None)


def find_dataset(
    store: DatasetStore, identifier: str, owner: str | None = None
) -> Dataset | None:
    """The dataset ``identifier`` names, the way ScientistCloud found datasets.

    In order: a uuid in any spelling (32 hex digits, dashed, or an identifier the
    dataset was created under); a number (the original's numeric ``id``); a slug;
    an exact name. With ``owner``, only that owner's datasets count (another
    user's dataset is not found, as if it did not exist); without, anyone's. Of
    several datasets with one slug, name or number, the newest wins.
    """
    text = identifier.strip() if isinstance(identifier, str) else ""
    if not text:
        return None
    for spelling in uuid_spellings(text):
        if not is_dataset_uuid(spelling):
            continue
        try:
            found = store.get(spelling)
        except DatasetNotFound:
            continue
        if owner is None or found.owner == owner:
            return found
    searches: list[dict[str, Any]] = []
    if text.isdigit() and len(text) <= 18:
        searches.append({"number": int(text)})
    searches += [{"slug": text}, {"name": text}]
    for search in searches:
        matches = store.find_by(owner=owner, limit=1, **search)
        if matches:
            return matches[0]
    return None
