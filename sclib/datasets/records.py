"""Dataset records for what the server receives: created, filled, given statuses.

Every upload or import lands in a dataset. Its record (a
:class:`~sclib.datasets.Dataset` in the :class:`~sclib.datasets.DatasetStore`,
``visstoredatas`` on MongoDB) is created when the first file's job is queued, with
the legacy status ``upload queued``; the ``upload`` job moves it to ``uploading``,
adds the verified files (path, size, BLAKE3) and sets ``done``, or ``upload error``
with the error's message when an attempt fails. Status changes follow the legacy
transition table; a change the table refuses is logged, never raised, so a record
can never fail an upload.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from sclib.datasets import (
    Dataset,
    DatasetFile,
    DatasetNotFound,
    DatasetStore,
)
from sclib.errors import InvalidInput, InvalidTransition
from sclib.jobtypes import DatasetStatus

__all__ = ["dataset_dict", "dataset_owner", "ensure_dataset", "mark", "record_files"]

log = logging.getLogger(__name__)


def ensure_dataset(
    store: DatasetStore, uuid: str, owner: str, fields: Mapping[str, Any]
) -> Dataset:
    """The dataset ``uuid``, created from the upload's ``fields`` if it is new."""
    try:
        return store.get(uuid)
    except DatasetNotFound:
        pass
    record = Dataset(
        uuid=uuid,
        name=str(fields.get("dataset_name") or uuid),
        owner=owner,
        sensor=str(fields.get("sensor") or "OTHER"),
        convert=bool(fields.get("convert", True)),
        is_public=bool(fields.get("is_public", False)),
        is_public_downloadable=bool(fields.get("is_public_downloadable", False)),
        folder=str(fields.get("folder") or ""),
        team_uuid=fields.get("team_uuid") or None,
        tags=tuple(fields.get("tags") or ()),
    )
    try:
        return store.create(record)
    except InvalidInput:
        return store.get(uuid)  # created meanwhile by another request


def dataset_owner(store: DatasetStore, uuid: str) -> str | None:
    """Who owns dataset ``uuid``, or ``None`` if there is no such dataset."""
    try:
        return store.get(uuid).owner
    except DatasetNotFound:
        return None


def mark(
    store: DatasetStore, uuid: str, status: DatasetStatus, error: str | None = None
) -> None:
    """Move the dataset to ``status`` if the legacy table allows it."""
    try:
        store.set_status(uuid, status, error)
    except (InvalidTransition, DatasetNotFound) as exc:
        log.warning("dataset %s: status %s not recorded: %s", uuid, status, exc)


def record_files(
    store: DatasetStore, uuid: str, files: Iterable[Mapping[str, Any]]
) -> Dataset:
    """Add the verified files (replacing any with the same path)."""
    return store.add_files(
        uuid,
        [DatasetFile(str(f["path"]), int(f["size"]), str(f["blake3"])) for f in files],
    )


def dataset_dict(dataset: Dataset, *, files: bool = True) -> dict[str, Any]:
    """A dataset as the API shows it (the seed's field names where it has them)."""
    data: dict[str, Any] = {
        "uuid": dataset.uuid,
        "name": dataset.name,
        "slug": dataset.slug,
        "number": dataset.number,
        "user": dataset.owner,
        "sensor": str(dataset.sensor),
        "convert": dataset.convert,
        "is_public": dataset.is_public,
        "is_public_downloadable": dataset.is_public_downloadable,
        "folder": dataset.folder,
        "team_uuid": dataset.team_uuid,
        "tags": list(dataset.tags),
        "status": str(dataset.status),
        "error_message": dataset.error_message,
        "total_size": dataset.total_size,
        "file_count": len(dataset.files),
        "created_at": dataset.created_at.isoformat(),
        "updated_at": dataset.updated_at.isoformat(),
    }
    if dataset.notes:  # read from a document sclib did not write (see Dataset)
        data["notes"] = list(dataset.notes)
    if files:
        data["files"] = [
            {"path": f.path, "size": f.size, "blake3": f.blake3} for f in dataset.files
        ]
    return data
