"""Datasets: the records the portal shows, and the stores that keep them.

See ``docs/datasets.md``. The SQLite and MongoDB stores live in
:mod:`sclib.backends.sqlite_datasets` and :mod:`sclib.backends.mongo_datasets`;
:func:`open_dataset_store` opens one by URL.
"""

from __future__ import annotations

from sclib.datasets.store import (
    UPDATABLE_FIELDS,
    DatasetStore,
    MemoryDatasetStore,
    find_dataset,
    open_dataset_store,
)
from sclib.models.dataset import (
    Dataset,
    DatasetConflict,
    DatasetFile,
    DatasetNotFound,
    canonical_uuid,
    new_dataset_uuid,
    slugify,
)

__all__ = [
    "UPDATABLE_FIELDS",
    "Dataset",
    "DatasetConflict",
    "DatasetFile",
    "DatasetNotFound",
    "DatasetStore",
    "MemoryDatasetStore",
    "canonical_uuid",
    "find_dataset",
    "new_dataset_uuid",
    "open_dataset_store",
    "slugify",
]
