"""Python clients of the sclib server (and of the ScientistCloud upload API).

:class:`Client` blocks, :class:`AsyncClient` awaits; both have the same methods
(the seed's names: ``upload_file``, ``upload_local_file``,
``initiate_google_drive_upload``, ``initiate_s3_upload``, ``initiate_url_upload``,
``get_upload_status``, ``wait_for_completion``, ...) and share all their logic.

>>> from sclib.client import Client
>>> with Client("http://localhost:8000", token="...") as client:  # doctest: +SKIP
...     result = client.upload_file(
...         "scan.h5", dataset_name="Scan 42", sensor="HDF5", progress=True
...     )
...     client.wait_for_completion(result.job_id)["status"]
'completed'

Large files go in parallel, BLAKE3-verified chunks and resume after a crash when
uploaded again (see :mod:`sclib.client.state`). Errors are the library's own
(:mod:`sclib.errors`) plus :class:`ServerError`, :class:`ConnectionFailed` and
:class:`WaitTimeout`.

:class:`ScientistCloudUploadClient` and :class:`AsyncScientistCloudUploadClient`
(:mod:`sclib.client.unified`) are drop-ins for the original ScientistCloud
"Unified" client: its positional arguments, defaults and result shapes, over a
:class:`Client`.
"""

from __future__ import annotations

from ._async import AsyncClient
from ._errors import ConnectionFailed, ServerError, WaitTimeout
from ._options import DatasetOptions, FieldOptions, UploadOptions
from ._sync import Client
from .models import (
    CancelResult,
    ChunkReceipt,
    CompleteResult,
    DatasetInfo,
    DatasetList,
    DatasetState,
    DownloadedFile,
    DownloadEntry,
    DownloadList,
    DownloadResult,
    Health,
    JobInfo,
    JobList,
    LargeUpload,
    LargeUploadStatus,
    Limits,
    QueueStats,
    ResultModel,
    ResumeInfo,
    SupportedSources,
    TimeEstimate,
    UploadJobList,
    UploadResult,
    UploadStatus,
)
from .state import UploadState, UploadStateStore, default_state_dir
from .unified import AsyncScientistCloudUploadClient, ScientistCloudUploadClient

__all__ = [
    "AsyncClient",
    "AsyncScientistCloudUploadClient",
    "CancelResult",
    "ChunkReceipt",
    "Client",
    "CompleteResult",
    "ConnectionFailed",
    "DatasetInfo",
    "DatasetList",
    "DatasetOptions",
    "DatasetState",
    "DownloadEntry",
    "DownloadList",
    "DownloadResult",
    "DownloadedFile",
    "FieldOptions",
    "Health",
    "JobInfo",
    "JobList",
    "LargeUpload",
    "LargeUploadStatus",
    "Limits",
    "QueueStats",
    "ResultModel",
    "ResumeInfo",
    "ScientistCloudUploadClient",
    "ServerError",
    "SupportedSources",
    "TimeEstimate",
    "UploadJobList",
    "UploadOptions",
    "UploadResult",
    "UploadState",
    "UploadStateStore",
    "UploadStatus",
    "WaitTimeout",
    "default_state_dir",
]
