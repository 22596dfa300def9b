"""The dataset pipeline: the ``upload`` job (:mod:`sclib.pipeline.upload`) and the
steps after it (extraction, conversion, validation, compression, backups).

Not imported by ``import sclib``; import the step you need. A worker runs them all
with ``sclib worker --handlers sclib.pipeline:handlers_from_settings``.
"""

from __future__ import annotations

from sclib.pipeline.extract import (
    ARCHIVE_SUFFIXES,
    ExtractedFile,
    ExtractLimits,
    extract_archive,
    is_archive,
)
from sclib.pipeline.upload import UploadHandler, handlers_from_settings

__all__ = [
    "ARCHIVE_SUFFIXES",
    "ExtractLimits",
    "ExtractedFile",
    "UploadHandler",
    "extract_archive",
    "handlers_from_settings",
    "is_archive",
]
