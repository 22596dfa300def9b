"""Datasets in MongoDB: the portal's ``visstoredatas`` collection, one document each.

Field names follow the portal, so its existing queries keep working::

    uuid  name  slug  user (owner)  id (number)  sensor  convert  is_public
    is_downloadable (is_public_downloadable)  folder  team_uuid  tags
    files [{path, size, blake3}]  total_size  status  error_message
    created_at  updated_at  created_by ("sclib")

The collection is shared with the original ScientistCloud, whose documents have
other shapes (``user_email``, ``date_imported``, ``files`` without digests, ...):
every document is read with :func:`sclib.models.legacy.read_document`, which
never fails; a document sclib cannot fully read comes back as a dataset with
``notes`` (see :class:`~sclib.datasets.Dataset`). Writes keep the fields sclib
does not own, and where the original keeps a value under its own name
(``is_public_downloadable``, ``folder_uuid``) an update writes that name too.

Indexes never stop the store from opening (see :meth:`MongoDatasetStore.
ensure_indexes`): the unique ones cover only the documents sclib created
(``created_by: "sclib"``), so the original's repeated uuids and slugs, and its
documents without a uuid, stay as they are (``sclib migrate`` reports them).

Atomicity without transactions (a standalone server has none):

* ``create`` picks the first free slug (among every document of the owner) and
  inserts; the unique ``(user, slug)`` index refuses a slug another sclib process
  took meanwhile, and the insert is tried again with the next one. A new
  dataset's number comes from a counter document in ``sclib_counters`` (raised to
  the highest ``id`` in the collection with ``$max``, then ``$inc``), so two
  processes creating datasets at once never give one number twice; a number
  given by the caller (an imported dataset's, which may repeat) is kept.
* ``add_files`` is a compare-and-set on the ``files`` array: read it, merge, and
  write ``files`` and ``total_size`` only if ``files`` is still what was read;
  otherwise read again. Concurrent writers never lose each other's files.
* ``set_status`` writes only if the status is still the one it checked the
  transition from (``find_one_and_update`` on ``{uuid, status}``).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from sclib.backends.datasets import (
    DatasetStore,
    check_page,
    checked_status,
    checked_update,
    next_slug,
    slug_pattern,
    storable,
)
from sclib.backends.mongo_common import (
    _DRIVER_ERRORS,
    _again,
    _backend_error,
)
from sclib.errors import BackendError, ConfigurationError, InvalidInput
from sclib.jobtypes import DatasetStatus
from sclib.models.dataset import (
    Dataset,
    DatasetFile,
    DatasetNotFound,
    merge_files,
    slugify,
    utc_now,
    uuid_spellings,
)
from sclib.models.legacy import file_entries, is_object_id_text, read_document

try:
    import pymongo
    from pymongo import ReturnDocument
    from pymongo.errors import DuplicateKeyError, OperationFailure
    from pymongo.write_concern import WriteConcern
except ImportError as exc:  # pragma: no cover - depends on the install
    from sclib.errors import MissingDependency

    raise MissingDependency("pymongo", "mongo", "The MongoDB backend") from exc

__all__ = [
    "COUNTERS",
    "CREATED_BY",
    "FIELD_NAMES",
    "INDEXES",
    "MongoDatasetStore",
    "dataset_document",
]

log = logging.getLogger(__name__)

#: Dataset attribute -> MongoDB field name, where they differ.
FIELD_NAMES: Mapping[str, str] = {
    "owner": "user",
    "is_public_downloadable": "is_downloadable",
    "number": "id",
}

#: How often a compare-and-set is tried before giving up (BackendError).
_MAX_TRIES = 200

#: What sclib writes into every document it creates: the unique indexes cover
#: exactly these documents, so the original system's never stop sclib.
CREATED_BY: Mapping[str, str] = {"created_by": "sclib"}

#: The indexes sclib wants: (name, keys, options). See ``ensure_indexes``.
INDEXES: Sequence[tuple[str, list[tuple[str, int]], dict[str, Any]]] = (
    # first the lookup by uuid: should a server refuse two indexes on one key,
    # lookups stay indexed and only the unique one is reported
    ("uuid_lookup", [("uuid", 1)], {}),
    (
        "sclib_uuid",
        [("uuid", 1)],
        {"unique": True, "partialFilterExpression": dict(CREATED_BY)},
    ),
    (
        "sclib_user_slug",
        [("user", 1), ("slug", 1)],
        {"unique": True, "partialFilterExpression": dict(CREATED_BY)},
    ),
    ("user_new", [("user", 1), ("created_at", -1)], {}),
    ("status", [("status", 1)], {}),
    ("id", [("id", 1)], {}),
    ("user_name", [("user", 1), ("name", 1)], {}),
)

# codes MongoDB answers an index build with when it cannot or need not build it:
# IndexAlreadyExists, IndexOptionsConflict, IndexKeySpecsConflict, DuplicateKey
_INDEX_CONFLICTS = frozenset({68, 85, 86, 11000})


def _field(name: str) -> str:
    return FIELD_NAMES.get(name, name)


def _file_doc(f: DatasetFile) -> dict[str, Any]:
    return {"path": f.path, "size": f.size, "blake3": f.blake3}


def _key_pattern(index: Mapping[str, Any]) -> list[tuple[str, int]] | None:
    try:
        return [(str(k), int(v)) for k, v in dict(index.get("key") or {}).items()]
    except (TypeError, ValueError):  # a text or hashed index: never one of ours
        return None


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
    """Any document, sclib's or the original system's; never fails (see
    :func:`~sclib.models.legacy.read_document`)."""
    return read_document(doc).dataset


def _file_entries(doc: Mapping[str, Any], files: Iterable[DatasetFile]) -> list[Any]:
    """``files`` as entries; an entry the document holds for the same file (or
    one without a digest, being recorded now) keeps its other fields (the
    original's ``source_path``, ...)."""
    kept: dict[str, tuple[DatasetFile, Mapping[str, Any]]] = {}
    uuid = doc.get("uuid")
    found, _ = file_entries(doc.get("files"), uuid if isinstance(uuid, str) else None)
    for f, entry in found:
        kept[f.path] = (f, entry)
    out: list[Any] = []
    for f in files:
        old = kept.get(f.path)
        if old is not None and (old[0] == f or old[0].blake3 is None):
            extra = {
                k: v for k, v in old[1].items() if k not in ("path", "size", "blake3")
            }
            out.append({**extra, **_file_doc(f)})
        else:
            out.append(_file_doc(f))
    return out


#: The collection of counters, beside the datasets: one document per numbered
#: collection, ``{_id: "<collection>.id", n: <the last number given>}``.
COUNTERS = "sclib_counters"


def _pause(attempt: int) -> None:
    """A short, jittered pause between compare-and-set attempts."""
    time.sleep(random.uniform(0, min(0.05, 0.001 * attempt)))


class MongoDatasetStore(DatasetStore):
    """Datasets in a MongoDB collection (default ``visstoredatas``).

    Indexes (:data:`INDEXES`, see :meth:`ensure_indexes`): unique ``uuid`` and
    unique ``(user, slug)`` over the documents sclib created; ``uuid``,
    ``(user, created_at)``, ``status``, ``id`` and ``(user, name)`` for lookups.
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
        self.counters = client[database].get_collection(
            COUNTERS, write_concern=WriteConcern(**concern)
        )
        #: what ensure_indexes could not build, and why (also logged)
        self.index_problems: list[str] = []
        self.ensure_indexes()

    def ensure_indexes(self) -> list[str]:
        """Build the indexes of :data:`INDEXES` that are not there; return what
        could not be built, and why (logged as warnings, never raised).

        An index counts as there when one of the same name and keys exists, or
        (whatever its name: the portal's ``uuid_1`` and ``status_1``) one of the
        same keys without a partial filter that is unique if ours is. An index
        MongoDB refuses to build (IndexOptionsConflict, IndexKeySpecsConflict,
        duplicate keys among the documents it covers) is reported and skipped:
        the store works without it, and ``create`` still checks a uuid is free
        before inserting. Several processes opening the store at once build the
        same specifications, which MongoDB treats as one build.
        """
        problems: list[str] = []
        try:
            existing = {ix["name"]: ix for ix in _again(self._indexes)}
        except _DRIVER_ERRORS as exc:
            raise _backend_error(exc, "list indexes", "dataset store") from exc
        for name, keys, options in INDEXES:
            there = existing.get(name)
            if there is not None:
                if _key_pattern(there) != keys:
                    problems.append(
                        f"index {name}: an index of that name exists on other keys "
                        f"({dict(there.get('key') or {})}); not built"
                    )
                continue
            if any(self._serves(ix, keys, options) for ix in existing.values()):
                continue
            try:
                _again(partial(self.coll.create_index, keys, name=name, **options))
            except OperationFailure as exc:
                if exc.code not in _INDEX_CONFLICTS:
                    raise _backend_error(
                        exc, "create indexes", "dataset store"
                    ) from exc
                problems.append(
                    f"index {name} not built: "
                    f"{_backend_error(exc, 'create index', 'dataset store')}"
                )
            except _DRIVER_ERRORS as exc:
                raise _backend_error(exc, "create indexes", "dataset store") from exc
        for problem in problems:
            log.warning("%s: %s", self.coll.full_name, problem)
        self.index_problems = problems
        return problems

    def _indexes(self) -> list[dict[str, Any]]:
        return list(self.coll.list_indexes())

    @staticmethod
    def _serves(
        index: Mapping[str, Any],
        keys: list[tuple[str, int]],
        options: Mapping[str, Any],
    ) -> bool:
        """Whether an existing index does what ours would: same keys, no partial
        filter, and unique if ours is."""
        if _key_pattern(index) != keys or index.get("partialFilterExpression"):
            return False
        return bool(index.get("unique")) or not options.get("unique")

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
        dataset = storable(dataset)
        base = dataset.slug or slugify(dataset.name)
        number = dataset.number
        for attempt in range(_MAX_TRIES):
            found = self._find_one(
                {"uuid": {"$in": uuid_spellings(dataset.uuid)}}, "create"
            )
            if found is not None:
                raise InvalidInput(f"a dataset with uuid {found['uuid']} exists")
            try:
                taken = {
                    d["slug"]
                    for d in self.coll.find(
                        {"user": dataset.owner, "slug": {"$regex": slug_pattern(base)}},
                        {"slug": 1, "_id": 0},
                    )
                }
                if number is None:  # once: a retry keeps the number it was given
                    number = self._next_number()
                made = replace(dataset, slug=next_slug(base, taken), number=number)
                self.coll.insert_one({**dataset_document(made), **CREATED_BY})
            except DuplicateKeyError:
                _pause(attempt)  # a uuid or slug taken meanwhile: look again
                continue
            except _DRIVER_ERRORS as exc:
                raise _backend_error(exc, "create", "dataset store") from exc
            return made
        raise BackendError(
            f"could not create dataset {dataset.uuid}: too much contention"
        )

    def _next_number(self) -> int:
        """The number of a new dataset: the next after the highest, as in SQLite,
        and never one another process was given (driver errors: the caller's).

        Reading the highest ``id`` and inserting above it is a race between
        processes; so the number comes from one counter document, first raised
        to the highest ``id`` in the collection (``$max`` never lowers it: the
        original's documents and numbers given explicitly count), then
        incremented: every ``$inc`` on one document returns its own value."""
        top = self.coll.find_one(
            {"id": {"$type": "number"}}, {"id": 1}, sort=[("id", -1)]
        )
        highest = int(top["id"]) if top else 0
        key = {"_id": f"{self.coll.name}.id"}
        for attempt in range(_MAX_TRIES):
            try:
                self.counters.update_one(key, {"$max": {"n": highest}}, upsert=True)
                break
            except DuplicateKeyError:
                _pause(attempt)  # two first upserts at once: one made it
        doc = self.counters.find_one_and_update(
            key, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER
        )
        if doc is None:  # pragma: no cover - the upsert above made it
            raise BackendError(f"the counter {key['_id']} in {COUNTERS} vanished")
        return int(doc["n"])

    def get(self, uuid: str) -> Dataset:
        doc = self._find_one({"uuid": uuid}, "get")
        if doc is None and is_object_id_text(uuid):
            # a document without a usable uuid is shown under its _id
            from bson import ObjectId

            other = self._find_one({"_id": ObjectId(uuid)}, "get")
            found = None if other is None else _to_dataset(other)
            if found is not None and found.uuid == uuid:
                return found
        if doc is None:
            raise DatasetNotFound(uuid)
        return _to_dataset(doc)

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
                            "files": _file_entries(doc, merged),
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
            doc = self._require(uuid, "set_status")
            old = _to_dataset(doc)
            target = checked_status(old, status, expected)
            if target == old.status and error == old.error_message:
                return old
            try:
                after = self.coll.find_one_and_update(
                    # the status as stored ('DONE ', 'completed', ...), read above
                    {"uuid": uuid, "status": doc.get("status")},
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
        doc = self._require(uuid, "update")
        made = checked_update(_to_dataset(doc), fields)
        if not fields:
            return made
        sets: dict[str, Any] = {_field(n): getattr(made, n) for n in fields}
        if "tags" in sets:
            sets["tags"] = list(made.tags)
        if "sensor" in sets:
            sets["sensor"] = str(made.sensor)
        # the original keeps these under its own names: keep them in step
        if "is_public_downloadable" in fields and "is_public_downloadable" in doc:
            sets["is_public_downloadable"] = made.is_public_downloadable
        if "folder" in fields and "folder_uuid" in doc:
            sets["folder_uuid"] = made.folder or None
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
