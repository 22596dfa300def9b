"""Datasets in SQLite, usually the same file as the job store.

One row per dataset in ``datasets`` and one per file in ``dataset_files``. Every
operation is one ``BEGIN IMMEDIATE`` transaction, so SQLite's single writer lock
makes it atomic across threads and processes: the slug is chosen and the row
inserted in one transaction; files are upserted and the total size recomputed in
another.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from sclib.backends.datasets import (
    DatasetStore,
    check_page,
    checked_status,
    checked_update,
    next_slug,
    storable,
)
from sclib.backends.sqlite_db import SQLiteFileStore
from sclib.errors import InvalidInput
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

__all__ = ["SQLiteDatasetStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS datasets (
    uuid                   TEXT PRIMARY KEY,
    name                   TEXT NOT NULL,
    slug                   TEXT NOT NULL,
    owner                  TEXT NOT NULL,
    sensor                 TEXT NOT NULL,
    convert                INTEGER NOT NULL,
    is_public              INTEGER NOT NULL,
    is_public_downloadable INTEGER NOT NULL,
    folder                 TEXT NOT NULL,
    team_uuid              TEXT,
    tags                   TEXT NOT NULL DEFAULT '[]',
    total_size             INTEGER NOT NULL DEFAULT 0,
    status                 TEXT NOT NULL,
    error_message          TEXT,
    created_at             INTEGER NOT NULL,  -- milliseconds since the epoch
    updated_at             INTEGER NOT NULL,
    number                 INTEGER            -- the original system's numeric id
);
CREATE UNIQUE INDEX IF NOT EXISTS datasets_owner_slug ON datasets (owner, slug);
CREATE INDEX IF NOT EXISTS datasets_owner_created ON datasets (owner, created_at);
CREATE INDEX IF NOT EXISTS datasets_status ON datasets (status);
CREATE INDEX IF NOT EXISTS datasets_owner_name ON datasets (owner, name);
CREATE TABLE IF NOT EXISTS dataset_files (
    dataset_uuid TEXT NOT NULL,
    path         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    blake3       TEXT NOT NULL,      -- '' while not known (a legacy file)
    PRIMARY KEY (dataset_uuid, path)
) WITHOUT ROWID;
"""

_COLUMNS = {
    "name": "name",
    "sensor": "sensor",
    "convert": "convert",
    "is_public": "is_public",
    "is_public_downloadable": "is_public_downloadable",
    "folder": "folder",
    "team_uuid": "team_uuid",
    "tags": "tags",
}


def _ms(dt: datetime) -> int:
    return round(dt.timestamp() * 1000)


def _from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _value(name: str, dataset: Dataset) -> Any:
    value = getattr(dataset, name)
    if name == "tags":
        return json.dumps(list(value))
    if isinstance(value, bool):
        return int(value)
    return str(value) if name == "sensor" else value


def _like(text: str) -> str:
    """``text`` for a ``LIKE ... ESCAPE '\\'`` pattern: wildcards escaped."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


class SQLiteDatasetStore(SQLiteFileStore, DatasetStore):
    """Datasets in a SQLite file; safe across threads and processes."""

    SCHEMA = _SCHEMA
    ADDED_COLUMNS = (("datasets", "number", "INTEGER"),)
    AFTER_COLUMNS = "CREATE INDEX IF NOT EXISTS datasets_number ON datasets (number);\n"

    def _load(self, db: sqlite3.Connection, row: sqlite3.Row) -> Dataset:
        files = [
            # '' is a digest not known yet (a file the original system recorded)
            DatasetFile(r["path"], r["size"], r["blake3"] or None)
            for r in db.execute(
                "SELECT path, size, blake3 FROM dataset_files WHERE dataset_uuid = ?",
                (row["uuid"],),
            )
        ]
        return Dataset(
            uuid=row["uuid"],
            name=row["name"],
            slug=row["slug"],
            owner=row["owner"],
            sensor=row["sensor"],
            convert=bool(row["convert"]),
            is_public=bool(row["is_public"]),
            is_public_downloadable=bool(row["is_public_downloadable"]),
            folder=row["folder"],
            team_uuid=row["team_uuid"],
            tags=tuple(json.loads(row["tags"])),
            files=tuple(files),
            status=row["status"],
            error_message=row["error_message"],
            created_at=_from_ms(row["created_at"]),
            updated_at=_from_ms(row["updated_at"]),
            number=row["number"],
        )

    def _require(self, db: sqlite3.Connection, uuid: str) -> Dataset:
        row = db.execute("SELECT * FROM datasets WHERE uuid = ?", (uuid,)).fetchone()
        if row is None:
            raise DatasetNotFound(uuid)
        return self._load(db, row)

    def create(self, dataset: Dataset) -> Dataset:
        dataset = storable(dataset)
        base = dataset.slug or slugify(dataset.name)
        with self.db.write() as db:
            spellings = uuid_spellings(dataset.uuid)
            found = db.execute(
                "SELECT uuid FROM datasets WHERE uuid IN "
                f"({', '.join('?' for _ in spellings)})",
                spellings,
            ).fetchone()
            if found:
                raise InvalidInput(f"a dataset with uuid {found['uuid']} exists")
            # a slug of the original system may hold '_', a LIKE wildcard
            taken = {
                r["slug"]
                for r in db.execute(
                    "SELECT slug FROM datasets WHERE owner = ? "
                    "AND (slug = ? OR slug LIKE ? ESCAPE '\\')",
                    (dataset.owner, base, _like(base) + "-%"),
                )
            }
            number = dataset.number
            if number is None:
                number = db.execute(
                    "SELECT COALESCE(MAX(number), 0) + 1 FROM datasets"
                ).fetchone()[0]
            made = replace(dataset, slug=next_slug(base, taken), number=number)
            db.execute(
                "INSERT INTO datasets (uuid, name, slug, owner, sensor, convert, "
                "is_public, is_public_downloadable, folder, team_uuid, tags, "
                "total_size, status, error_message, created_at, updated_at, "
                "number) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    made.uuid,
                    made.name,
                    made.slug,
                    made.owner,
                    str(made.sensor),
                    int(made.convert),
                    int(made.is_public),
                    int(made.is_public_downloadable),
                    made.folder,
                    made.team_uuid,
                    json.dumps(list(made.tags)),
                    made.total_size,
                    str(made.status),
                    made.error_message,
                    _ms(made.created_at),
                    _ms(made.updated_at),
                    made.number,
                ),
            )
            self._insert_files(db, made.uuid, made.files)
            return self._require(db, made.uuid)

    @staticmethod
    def _insert_files(
        db: sqlite3.Connection, uuid: str, files: Iterable[DatasetFile]
    ) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO dataset_files (dataset_uuid, path, size, blake3) "
            "VALUES (?, ?, ?, ?)",
            [(uuid, f.path, f.size, f.blake3 or "") for f in files],
        )

    def get(self, uuid: str) -> Dataset:
        with self.db.write() as db:
            return self._require(db, uuid)

    def find_by_slug(self, owner: str, slug: str) -> Dataset | None:
        with self.db.write() as db:
            row = db.execute(
                "SELECT * FROM datasets WHERE owner = ? AND slug = ?", (owner, slug)
            ).fetchone()
            return None if row is None else self._load(db, row)

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
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("owner", owner),
            ("slug", slug),
            ("name", name),
            ("number", number),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self.db.write() as db:
            rows = db.execute(
                f"SELECT * FROM datasets{where} "
                "ORDER BY created_at DESC, rowid DESC LIMIT ?",
                [*params, limit],
            ).fetchall()
            return [self._load(db, r) for r in rows]

    def list(
        self,
        *,
        owner: str | None = None,
        status: DatasetStatus | str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Dataset]:
        check_page(limit, offset)
        clauses: list[str] = []
        params: list[Any] = []
        if owner is not None:
            clauses.append("owner = ?")
            params.append(owner)
        if status is not None:
            clauses.append("status = ?")
            params.append(str(status))
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        with self.db.write() as db:
            rows = db.execute(
                f"SELECT * FROM datasets{where} "
                "ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                [*params, limit, offset],
            ).fetchall()
            return [self._load(db, r) for r in rows]

    def add_files(self, uuid: str, files: Iterable[DatasetFile]) -> Dataset:
        new = merge_files((), files)  # validates; the later of two at one path wins
        with self.db.write() as db:
            self._require(db, uuid)
            self._insert_files(db, uuid, new)
            db.execute(
                "UPDATE datasets SET updated_at = ?, total_size = (SELECT "
                "COALESCE(SUM(size), 0) FROM dataset_files WHERE dataset_uuid = ?) "
                "WHERE uuid = ?",
                (_ms(utc_now()), uuid, uuid),
            )
            return self._require(db, uuid)

    def set_status(
        self,
        uuid: str,
        status: DatasetStatus | str,
        error: str | None = None,
        *,
        expected: DatasetStatus | str | None = None,
    ) -> Dataset:
        with self.db.write() as db:
            old = self._require(db, uuid)
            target = checked_status(old, status, expected)
            if target == old.status and error == old.error_message:
                return old
            db.execute(
                "UPDATE datasets SET status = ?, error_message = ?, updated_at = ? "
                "WHERE uuid = ?",
                (str(target), error, _ms(utc_now()), uuid),
            )
            return self._require(db, uuid)

    def update(self, uuid: str, /, **fields: Any) -> Dataset:
        with self.db.write() as db:
            made = checked_update(self._require(db, uuid), fields)
            if not fields:
                return made
            names = sorted(fields)
            sets = ", ".join(f"{_COLUMNS[n]} = ?" for n in names)
            db.execute(
                f"UPDATE datasets SET {sets}, updated_at = ? WHERE uuid = ?",
                [*(_value(n, made) for n in names), _ms(made.updated_at), uuid],
            )
            return self._require(db, uuid)

    def delete(self, uuid: str) -> None:
        with self.db.write() as db:
            if db.execute("DELETE FROM datasets WHERE uuid = ?", (uuid,)).rowcount == 0:
                raise DatasetNotFound(uuid)
            db.execute("DELETE FROM dataset_files WHERE dataset_uuid = ?", (uuid,))
