"""Dataset stores, as dataset code sees them: the interface and the in-memory
store live in :mod:`sclib.backends.datasets`, the factory in :mod:`sclib.backends`.
"""

from __future__ import annotations

from sclib.backends import open_dataset_store
from sclib.backends.datasets import (
    UPDATABLE_FIELDS,
    DatasetStore,
    MemoryDatasetStore,
    find_dataset,
    next_slug,
    storable,
)

__all__ = [
    "UPDATABLE_FIELDS",
    "DatasetStore",
    "MemoryDatasetStore",
    "find_dataset",
    "next_slug",
    "open_dataset_store",
    "storable",
]
