"""Where ``sclib migrate`` reads legacy dataset documents and keeps its ledger.

A :class:`LegacyDocuments` gives the migration the dataset documents of one
backend as plain dicts (the portal's ``visstoredatas`` form), lets it import,
normalise and restore them, and keeps the migration's *ledger*: for every dataset
the migration touched, the document exactly as it was before (or the fact that the
migration imported it), so that a rollback can put back precisely what was there.

* MongoDB (:class:`MongoLegacyDocuments`): the documents are the DatasetStore's
  collection itself (``visstoredatas``), read and written raw, so fields sclib does
  not know survive untouched. The ledger is the collection ``sclib_migration`` in
  the same database, one document per dataset uuid (``_id``), holding the original
  document as an embedded document (BSON keeps its types: datetimes, ObjectIds).
* SQLite (:class:`SQLiteLegacyDocuments`): the documents are the rows of the
  dataset store's ``datasets`` table, shown in the same field names as on MongoDB.
  That table holds only the fields sclib knows; the ledger, the table
  ``sclib_migration`` in the same file, keeps every original document as JSON
  (datetimes as ``{"$date": ISO 8601}``, ObjectIds as ``{"$oid": hex}``), so
  nothing of an imported legacy document is lost.

Jobs are deleted (by rollback) with :func:`delete_jobs`; see its docstring.
"""

from __future__ import annotations

import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sclib.backends.base import JobStore
from sclib.backends.mongo_datasets import dataset_document
from sclib.backends.sqlite_db import SQLiteDatabase
from sclib.datasets import Dataset, DatasetNotFound, DatasetStore
from sclib.errors import BackendError, ConfigurationError, InvalidInput
from sclib.models.legacy import read_document

__all__ = [
    "LegacyDocuments",
    "MongoLegacyDocuments",
    "SQLiteLegacyDocuments",
    "dataset_from_doc",
    "decode_json",
    "delete_jobs",
    "encode_json",
    "legacy_documents_for",
]

LEDGER = "sclib_migration"


def dataset_from_doc(doc: Mapping[str, Any]) -> Dataset:
    """The :class:`~sclib.datasets.Dataset` a ``visstoredatas`` document holds, read
    the way :class:`~sclib.backends.mongo_datasets.MongoDatasetStore` reads it
    (:func:`~sclib.models.legacy.read_document`).

    Raises :class:`~sclib.errors.InvalidInput` naming what the store cannot read
    (no owner, no name, an unknown status, no uuid).
    """
    read = read_document(doc)
    if read.missing:
        raise InvalidInput("; ".join(read.missing.values()))
    return replace(read.dataset, notes=())


# -- JSON with dates (the ledger on SQLite, and export files) -------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$date": value.isoformat()}
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if type(value).__name__ == "ObjectId":
        return {"$oid": str(value)}
    return value


def encode_json(doc: Mapping[str, Any]) -> str:
    """``doc`` as JSON text; datetimes and ObjectIds in MongoDB's extended JSON."""
    return json.dumps(_encode(doc), sort_keys=True, allow_nan=False)


def _decode_hook(obj: dict[str, Any]) -> Any:
    if len(obj) == 1 and "$date" in obj:
        raw = obj["$date"]
        if isinstance(raw, dict) and "$numberLong" in raw:
            return datetime.fromtimestamp(int(raw["$numberLong"]) / 1000, UTC)
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            return datetime.fromtimestamp(raw / 1000, UTC)
        if isinstance(raw, str):
            try:
                when = datetime.fromisoformat(raw)
            except ValueError:
                return obj
            return when if when.tzinfo else when.replace(tzinfo=UTC)
    if len(obj) == 1 and "$oid" in obj and isinstance(obj["$oid"], str):
        try:
            from bson import ObjectId
            from bson.errors import InvalidId
        except ImportError:  # pragma: no cover - no pymongo: keep it as it is
            return obj
        try:
            return ObjectId(obj["$oid"])
        except (InvalidId, TypeError):
            return obj
    return obj


def decode_json(text: str) -> Any:
    """Parse JSON text, turning ``{"$date": ...}`` into aware datetimes and
    ``{"$oid": ...}`` into ObjectIds (when ``bson`` is installed)."""
    return json.loads(text, object_hook=_decode_hook)


# -- the documents -------------------------------------------------------------------


class LegacyDocuments(ABC):
    """One backend's dataset documents and the migration ledger."""

    datasets: DatasetStore

    @abstractmethod
    def documents(self) -> Iterator[dict[str, Any]]:
        """Every dataset document, raw, in a stable order."""

    @abstractmethod
    def get(self, uuid: str) -> dict[str, Any] | None:
        """The document of dataset ``uuid``, or ``None``."""

    @abstractmethod
    def insert(self, doc: Mapping[str, Any]) -> None:
        """Store an imported document (already readable by the dataset store)."""

    @abstractmethod
    def update(self, uuid: str, changes: Mapping[str, Any]) -> None:
        """Set the given fields of the document (normalisation)."""

    @abstractmethod
    def restore(self, original: Mapping[str, Any]) -> None:
        """Put ``original`` back exactly, replacing the current document."""

    def remove(self, uuid: str) -> None:
        """Delete the document (an imported one, on rollback); gone is fine."""
        with contextlib.suppress(DatasetNotFound):
            self.datasets.delete(uuid)

    @abstractmethod
    def ledger_get(self, uuid: str) -> dict[str, Any] | None: ...

    @abstractmethod
    def ledger_put(self, uuid: str, entry: Mapping[str, Any]) -> None:
        """Write the entry unless one exists: the first original is kept."""

    @abstractmethod
    def ledger_delete(self, uuid: str) -> None: ...

    @abstractmethod
    def ledger_all(self) -> list[dict[str, Any]]: ...

    def store_notes(self) -> list[str]:
        """What a migration report should say about the store as a whole."""
        return []

    def close(self) -> None:
        self.datasets.close()


class MongoLegacyDocuments(LegacyDocuments):
    """The ``visstoredatas`` collection, raw; see the module docstring."""

    def __init__(self, datasets: DatasetStore) -> None:
        from sclib.backends.mongo_datasets import MongoDatasetStore

        if not isinstance(datasets, MongoDatasetStore):
            raise ConfigurationError(f"not a MongoDB dataset store: {datasets!r}")
        self.datasets = datasets
        self.coll = datasets.coll
        self.ledger = datasets.coll.database.get_collection(
            LEDGER, write_concern=datasets.coll.write_concern
        )

    def _run(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        from pymongo.errors import PyMongoError

        try:
            return call(*args, **kwargs)
        except PyMongoError as exc:
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            where = self.ledger if what == "ledger" else self.coll
            raise BackendError(
                f"MongoDB migration, {what} in {where.full_name}: {text[:300]}"
            ) from exc

    def documents(self) -> Iterator[dict[str, Any]]:
        yield from self._run("read", lambda: list(self.coll.find({}).sort("_id", 1)))

    def store_notes(self) -> list[str]:
        from sclib.backends.mongo_datasets import MongoDatasetStore

        notes: list[str] = []
        if isinstance(self.datasets, MongoDatasetStore):
            notes += self.datasets.index_problems
        indexes = self._run("read", lambda: list(self.coll.list_indexes()))
        for ix in indexes:
            if ix.get("name") == "user_slug" and ix.get("unique"):
                notes.append(
                    f"the unique index user_slug on {self.coll.full_name} (made by "
                    "an earlier sclib) refuses the repeated slugs the original "
                    "system writes: sclib no longer needs it (its own is "
                    "sclib_user_slug); drop it with "
                    "db.visstoredatas.dropIndex('user_slug')"
                )
        return notes

    def get(self, uuid: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self._run(
            "read", self.coll.find_one, {"uuid": uuid}
        )
        return found

    def insert(self, doc: Mapping[str, Any]) -> None:
        self._run("insert", self.coll.insert_one, dict(doc))

    def update(self, uuid: str, changes: Mapping[str, Any]) -> None:
        if changes:
            self._run("update", self.coll.update_one, {"uuid": uuid}, {"$set": changes})

    def restore(self, original: Mapping[str, Any]) -> None:
        doc = dict(original)
        uuid = doc.get("uuid")
        if isinstance(uuid, str) and uuid:  # a copy made since under another _id
            self._run(
                "restore",
                self.coll.delete_many,
                {"uuid": uuid, "_id": {"$ne": doc["_id"]}},
            )
        self._run(
            "restore", self.coll.replace_one, {"_id": doc["_id"]}, doc, upsert=True
        )

    def remove(self, uuid: str) -> None:
        self._run("delete", self.coll.delete_one, {"uuid": uuid})

    def ledger_get(self, uuid: str) -> dict[str, Any] | None:
        entry: dict[str, Any] | None = self._run(
            "read", self.ledger.find_one, {"_id": uuid}
        )
        return entry

    def ledger_put(self, uuid: str, entry: Mapping[str, Any]) -> None:
        self._run(
            "ledger",
            self.ledger.update_one,
            {"_id": uuid},
            {"$setOnInsert": dict(entry)},
            upsert=True,
        )

    def ledger_delete(self, uuid: str) -> None:
        self._run("ledger", self.ledger.delete_one, {"_id": uuid})

    def ledger_all(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self._run(
            "read", lambda: list(self.ledger.find({}).sort("_id", 1))
        )
        return found


_LEDGER_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS {LEDGER} (
    uuid  TEXT PRIMARY KEY,
    entry TEXT NOT NULL
);
"""


class SQLiteLegacyDocuments(LegacyDocuments):
    """The dataset store's ``datasets`` rows; see the module docstring."""

    def __init__(self, datasets: DatasetStore) -> None:
        from sclib.backends.sqlite_datasets import SQLiteDatasetStore

        if not isinstance(datasets, SQLiteDatasetStore):
            raise ConfigurationError(f"not a SQLite dataset store: {datasets!r}")
        self.datasets = datasets
        self.db = SQLiteDatabase(datasets.db.path, _LEDGER_SCHEMA)

    def documents(self) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.datasets.list(limit=500, offset=offset)
            for d in sorted(page, key=lambda d: d.uuid):
                yield dataset_document(d)
            if len(page) < 500:
                return
            offset += 500

    def get(self, uuid: str) -> dict[str, Any] | None:
        try:
            return dataset_document(self.datasets.get(uuid))
        except DatasetNotFound:
            return None

    def insert(self, doc: Mapping[str, Any]) -> None:
        self.datasets.create(dataset_from_doc(doc))

    def update(self, uuid: str, changes: Mapping[str, Any]) -> None:
        if changes:  # rows are written by sclib: they never need normalising
            raise InvalidInput(
                f"dataset {uuid}: SQLite rows cannot take {sorted(changes)}"
            )

    def restore(self, original: Mapping[str, Any]) -> None:
        self.remove(str(original["uuid"]))
        self.datasets.create(dataset_from_doc(original))

    def ledger_get(self, uuid: str) -> dict[str, Any] | None:
        rows = self.db.read(f"SELECT entry FROM {LEDGER} WHERE uuid = ?", (uuid,))
        if not rows:
            return None
        entry: dict[str, Any] = decode_json(rows[0]["entry"])
        return entry

    def ledger_put(self, uuid: str, entry: Mapping[str, Any]) -> None:
        with self.db.write() as db:
            db.execute(
                f"INSERT OR IGNORE INTO {LEDGER} (uuid, entry) VALUES (?, ?)",
                (uuid, encode_json({"_id": uuid, **entry})),
            )

    def ledger_delete(self, uuid: str) -> None:
        with self.db.write() as db:
            db.execute(f"DELETE FROM {LEDGER} WHERE uuid = ?", (uuid,))

    def ledger_all(self) -> list[dict[str, Any]]:
        rows = self.db.read(f"SELECT entry FROM {LEDGER} ORDER BY uuid")
        return [decode_json(r["entry"]) for r in rows]

    def close(self) -> None:
        self.db.close()
        super().close()


def legacy_documents_for(datasets: DatasetStore) -> LegacyDocuments:
    """The :class:`LegacyDocuments` over a SQLite or MongoDB dataset store."""
    from sclib.backends.sqlite_datasets import SQLiteDatasetStore

    if isinstance(datasets, SQLiteDatasetStore):
        return SQLiteLegacyDocuments(datasets)
    return MongoLegacyDocuments(datasets)


def delete_jobs(store: JobStore, job_ids: list[str]) -> list[str]:
    """Delete the given jobs unless they are running; return the ids deleted
    (:meth:`~sclib.backends.base.JobStore.delete_jobs`: a job a worker claimed in
    the meantime is left alone)."""
    return store.delete_jobs(job_ids)
