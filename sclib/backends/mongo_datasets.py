"""Datasets in MongoDB: the portal's ``visstoredatas`` collection, one document each.

Field names follow the portal, so its existing queries keep working::

    uuid  name  slug  user (owner)  id (number)  sensor  convert  is_public
    is_downloadable (is_public_downloadable)  folder  team_uuid  tags
    files [{path, size, blake3}]  total_size  status  error_message
    created_at  updated_at

Atomicity without transactions (a standalone server has none):

* ``create`` picks the first free slug and inserts; the unique ``(user, slug)``
  index refuses a slug taken meanwhile, and the insert is tried again with the
  next one.
* ``add_files`` is a compare-and-set on the ``files`` array: read it, merge, and
  write ``files`` and ``total_size`` only if ``files`` is still what was read;
  otherwise read again. Concurrent writers never lose each other's files.
* ``set_status`` writes only if the status is still the one it checked the
  transition from (``find_one_and_update`` on ``{uuid, status}``).
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any
from urllib.parse import urlsplit

from sclib.backends.mongo import (
    _DRIVER_ERRORS,
    _aware,
    _backend_error,
    _create_index,
)
from sclib.datasets.models import (
    Dataset,
    DatasetFile,
    DatasetNotFound,
    merge_files,
    slugify,
    utc_now,
)
from sclib.datasets.store import (
    DatasetStore,
    check_page,
    checked_status,
    checked_update,
    next_slug,
    slug_pattern,
)
from sclib.errors import BackendError, ConfigurationError, InvalidInput
from sclib.jobtypes import DatasetStatus

try:
    import pymongo
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - depends on the install
    from sclib.errors import MissingDependency

    raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc

__all__ = ["FIELD_NAMES", "MongoDatasetStore", "dataset_document"]

#: Dataset attribute -> MongoDB field name, where they differ.
FIELD_NAMES: Mapping[str, str] = {
    "owner": "user",
    "is_public_downloadable": "is_downloadable",
    "number": "id",
}

#: How often a compare-and-set is tried before giving up (BackendError).
_MAX_TRIES = 200


def _field(name: str) -> str:
    return FIELD_NAMES.get(name, name)


def _file_doc(f: DatasetFile) -> dict[str, Any]:
    return {"path": f.path, "size": f.size, "blake3": f.blake3}


def dataset_document(d: Dataset) -> dict[str, Any]:
    """A dataset in the ``visstoredatas`` field names, as this store writes it."""
    return {
        "uuid": d.uuid,
        "name": d.name,
        "slug": d.slug,
        "user": d.owner,
        "sensor": str(d.sensor),
        "convert": d.convert,
        "is_public": d.is_public,
        "is_downloadable": d.is_public_downloadable,
        "folder": d.folder,
        "team_uuid": d.team_uuid,
        "tags": list(d.tags),
        "files": [_file_doc(f) for f in d.files],
        "total_size": d.total_size,
        "status": str(d.status),
        "error_message": d.error_message,
        "created_at": d.created_at,
        "updated_at": d.updated_at,
        "id": d.number,
    }


def _to_dataset(doc: Mapping[str, Any]) -> Dataset:
    created = _aware(doc["created_at"])
    updated = _aware(doc.get("updated_at")) or created
    assert created is not None and updated is not None
    return Dataset(
        uuid=doc["uuid"],
        name=doc["name"],
        slug=doc.get("slug") or "",
        owner=doc["user"],
        sensor=doc["sensor"],
        convert=bool(doc.get("convert", True)),
        is_public=bool(doc.get("is_public", False)),
        is_public_downloadable=bool(doc.get("is_downloadable", False)),
        folder=doc.get("folder") or "",
        team_uuid=doc.get("team_uuid"),
        tags=tuple(doc.get("tags") or ()),
        files=tuple(
            DatasetFile(f["path"], f["size"], f["blake3"])
            for f in doc.get("files") or ()
        ),
        status=doc.get("status") or DatasetStatus.SUBMITTED,
        error_message=doc.get("error_message"),
        created_at=created,
        updated_at=updated,
        number=_number(doc.get("id")),
    )


def _number(value: object) -> int | None:
    """The original's numeric ``id``, when a document holds a usable one."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _pause(attempt: int) -> None:
    """A short, jittered pause between compare-and-set attempts."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))


class MongoDatasetStore(DatasetStore):
    """Datasets in a MongoDB collection (default ``visstoredatas``).

    Indexes, created idempotently: unique ``uuid``; unique ``(user, slug)`` (for
    documents that have a slug);
    ``(user, created_at)``; ``status``.
    """

    def __init__(
        self,
        client: Any,
        *,
        database: str = "scientistcloud",
        collection: str = "visstoredatas",
        write_concern: Mapping[str, Any] | None = None,
        owns_client: bool = False,
    ) -> None:
        concern = dict(write_concern or {"w": "majority", "j": True})
        self.client = client
        self._owns_client = owns_client
        self.coll = client[database].get_collection(
            collection, write_concern=WriteConcern(**concern)
        )
        try:
            _create_index(self.coll, "uuid", unique=True, name="uuid")
            # partial: the portal's older documents have no slug, and a plain
            # unique index would count their missing slugs as duplicates
            _create_index(
                self.coll,
                [("user", 1), ("slug", 1)],
                unique=True,
                name="user_slug",
                partialFilterExpression={"slug": {"$type": "string"}},
            )
            _create_index(self.coll, [("user", 1), ("created_at", -1)], name="user_new")
            _create_index(self.coll, "status", name="status")
            _create_index(self.coll, "id", name="id")
            _create_index(self.coll, [("user", 1), ("name", 1)], name="user_name")
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "create indexes", "dataset store") from exc

    @classmethod
    def from_url(
        cls, url: str, *, database: str | None = None, **options: Any
    ) -> MongoDatasetStore:
        parts = urlsplit(url)
        if not parts.hostname:
            raise ConfigurationError(f"malformed MongoDB URL {url!r}: no host")
        client: Any = pymongo.MongoClient(
            url, tz_aware=True, serverSelectionTimeoutMS=10_000
        )
        name = database or parts.path.lstrip("/") or "scientistcloud"
        return cls(client, database=name, owns_client=True, **options)

    def __repr__(self) -> str:
        return f"MongoDatasetStore({self.coll.full_name!r})"

    def close(self) -> None:
        if self._owns_client:
            self.client.close()

    def _find_one(
        self, query: Mapping[str, Any], operation: str
    ) -> dict[str, Any] | None:
        try:
            doc: dict[str, Any] | None = self.coll.find_one(query)
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, operation, "dataset store") from exc
        return doc

    def _require(self, uuid: str, operation: str) -> dict[str, Any]:
        doc = self._find_one({"uuid": uuid}, operation)
        if doc is None:
            raise DatasetNotFound(uuid)
        return doc

    def create(self, dataset: Dataset) -> Dataset:
        base = dataset.slug or slugify(dataset.name)
        for attempt in range(_MAX_TRIES):
            if self._find_one({"uuid": dataset.uuid}, "create") is not None:
                raise InvalidInput(f"a dataset with uuid {dataset.uuid} exists")
            try:
                taken = {
                    d["slug"]
                    for d in self.coll.find(
                        {"user": dataset.owner, "slug": {"$regex": slug_pattern(base)}},
                        {"slug": 1, "_id": 0},
                    )
                }
                number = dataset.number
                if number is None:  # the next after the highest, as in SQLite
                    top = self.coll.find_one(
                        {"id": {"$type": "number"}}, {"id": 1}, sort=[("id", -1)]
                    )
                    number = int(top["id"]) + 1 if top else 1
                made = replace(dataset, slug=next_slug(base, taken), number=number)
                self.coll.insert_one(dataset_document(made))
            except DuplicateKeyError:
                _pause(attempt)  # a uuid or slug taken meanwhile: look again
                continue
            except _DRIVER_ERRORS as exc:
                raise _backend_error(exc, "create", "dataset store") from exc
            return made
        raise BackendError(
            f"could not create dataset {dataset.uuid}: too much contention"
        )

    def get(self, uuid: str) -> Dataset:
        return _to_dataset(self._require(uuid, "get"))

    def find_by_slug(self, owner: str, slug: str) -> Dataset | None:
        doc = self._find_one({"user": owner, "slug": slug}, "find_by_slug")
        return None if doc is None else _to_dataset(doc)

    def find_by(
        self,
        *,
        owner: str | None = None,
        slug: str | None = None,
        name: str | None = None,
        number: int | None = None,
        limit: int = 20,
    ) -> list[Dataset]:
        check_page(limit, 0)
        if limit == 0:
            return []
        query: dict[str, Any] = {}
        for key, value in (("user", owner), ("slug", slug), ("name", name)):
            if value is not None:
                query[key] = value
        if number is not None:
            query["id"] = number
        try:
            docs = self.coll.find(query).sort([("created_at", -1), ("_id", -1)])
            return [_to_dataset(d) for d in docs.limit(limit)]
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "find_by", "dataset store") from exc

    def list(
        self,
        *,
        owner: str | None = None,
        status: DatasetStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Dataset]:
        check_page(limit, offset)
        if limit == 0:  # MongoDB reads limit(0) as "no limit"
            return []
        query: dict[str, Any] = {}
        if owner is not None:
            query["user"] = owner
        if status is not None:
            query["status"] = str(status)
        try:
            docs = (
                self.coll.find(query)
                .sort([("created_at", -1), ("_id", -1)])
                .skip(offset)
                .limit(limit)
            )
            return [_to_dataset(d) for d in docs]
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "list", "dataset store") from exc

    def add_files(self, uuid: str, files: Iterable[DatasetFile]) -> Dataset:
        new = merge_files((), files)  # validates; the later of two at one path wins
        for attempt in range(_MAX_TRIES):
            doc = self._require(uuid, "add_files")
            raw = doc.get("files")
            old = _to_dataset(doc).files
            merged = merge_files(old, new)
            try:
                after = self.coll.find_one_and_update(
                    # unchanged since read: None also matches a missing field
                    {"uuid": uuid, "files": raw},
                    {
                        "$set": {
                            "files": [_file_doc(f) for f in merged],
                            "total_size": sum(f.size for f in merged),
                            "updated_at": utc_now(),
                        }
                    },
                    return_document=ReturnDocument.AFTER,
                )
            except _DRIVER_ERRORS as exc:
                raise _backend_error(exc, "add_files", "dataset store") from exc
            if after is not None:
                return _to_dataset(after)
            _pause(attempt)
        raise BackendError(
            f"could not add files to dataset {uuid}: too much contention"
        )

    def set_status(
        self,
        uuid: str,
        status: DatasetStatus | str,
        error: str | None = None,
        *,
        expected: DatasetStatus | str | None = None,
    ) -> Dataset:
        for attempt in range(_MAX_TRIES):
            old = _to_dataset(self._require(uuid, "set_status"))
            target = checked_status(old, status, expected)
            if target == old.status and error == old.error_message:
                return old
            try:
                after = self.coll.find_one_and_update(
                    {"uuid": uuid, "status": str(old.status)},
                    {
                        "$set": {
                            "status": str(target),
                            "error_message": error,
                            "updated_at": utc_now(),
                        }
                    },
                    return_document=ReturnDocument.AFTER,
                )
            except _DRIVER_ERRORS as exc:
                raise _backend_error(exc, "set_status", "dataset store") from exc
            if after is not None:
                return _to_dataset(after)
            _pause(attempt)  # the status changed meanwhile: check again
        raise BackendError(f"could not set the status of {uuid}: too much contention")

    def update(self, uuid: str, /, **fields: Any) -> Dataset:
        made = checked_update(_to_dataset(self._require(uuid, "update")), fields)
        if not fields:
            return made
        sets: dict[str, Any] = {_field(n): getattr(made, n) for n in fields}
        if "tags" in sets:
            sets["tags"] = list(made.tags)
        if "sensor" in sets:
            sets["sensor"] = str(made.sensor)
        sets["updated_at"] = made.updated_at
        try:
            after = self.coll.find_one_and_update(
                {"uuid": uuid},
                {"$set": sets},
                return_document=ReturnDocument.AFTER,
            )
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "update", "dataset store") from exc
        if after is None:
            raise DatasetNotFound(uuid)
        return _to_dataset(after)

    def delete(self, uuid: str) -> None:
        try:
            res = self.coll.delete_one({"uuid": uuid})
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "delete", "dataset store") from exc
        if res.deleted_count == 0:
            raise DatasetNotFound(uuid)
