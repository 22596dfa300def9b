"""Processing steps of the dataset pipeline (extraction, ...).

Not imported by ``import sclib``; import the step you need.
"""

from __future__ import annotations

from sclib.pipeline.extract import (
    ARCHIVE_SUFFIXES,
    ExtractedFile,
    ExtractLimits,
    extract_archive,
    is_archive,
)

__all__ = [
    "ARCHIVE_SUFFIXES",
    "ExtractLimits",
    "ExtractedFile",
    "extract_archive",
    "is_archive",
]
