"""sclib: get scientific datasets into storage and process them reliably.

The public API is what this module exports; everything else may change.

>>> import sclib
>>> queue = sclib.JobQueue.open("sqlite:///sclib-data/sclib.db")  # doctest: +SKIP
"""

from __future__ import annotations

import os as _os
from typing import Any as _Any

from sclib.backends import JobStore, open_store
from sclib.backends.base import ClaimedJob
from sclib.errors import (
    BackendError,
    ConfigurationError,
    InvalidInput,
    InvalidJobState,
    InvalidTransition,
    JobCancelled,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    MissingDependency,
    NotFound,
    SclibError,
    UnknownJobType,
)
from sclib.jobs import (
    HandlerRegistry,
    JobContext,
    JobQueue,
    RetryPolicy,
    Worker,
    WorkerStats,
)
from sclib.jobtypes import (
    DatasetStatus,
    JobStatus,
    JobType,
    JobTypeConfig,
    JobTypes,
    check_transition,
    dataset_status_for,
    dataset_status_trail,
)
from sclib.models import ErrorRecord, Job, JobEvent, Lease, Progress
from sclib.monitor import HealthThresholds, JobMonitor

__version__ = "0.1.0.dev0"


def upload(
    path: str | _os.PathLike[str],
    server: str = "http://127.0.0.1:8000",
    *,
    token: str | None = None,
    wait: bool = True,
    progress: bool = True,
    **options: _Any,
) -> _Any:
    """Upload a file (or every file of a folder, into one dataset) to a server.

    The notebook one-liner over :class:`sclib.client.Client`: ``options`` are the
    dataset fields (``dataset_name``, ``sensor``, ``convert``, ...). With ``wait``
    it follows the job(s) to the end and returns their final status (a list for a
    folder); otherwise the upload result(s). Large files go in parallel, verified,
    resumable chunks: calling it again after an interruption continues.
    """
    from pathlib import Path

    from sclib.client import Client

    with Client(server, token=token) as client:
        if Path(path).is_dir():
            results = client.upload_directory(path, progress=progress, **options)
            if not wait:
                return results
            return [
                client.wait_for_completion(r.job_id, progress=progress) for r in results
            ]
        result = client.upload_file(path, progress=progress, **options)
        if not wait:
            return result
        return client.wait_for_completion(result.job_id, progress=progress)


__all__ = [
    "BackendError",
    "ClaimedJob",
    "ConfigurationError",
    "DatasetStatus",
    "ErrorRecord",
    "HandlerRegistry",
    "HealthThresholds",
    "InvalidInput",
    "InvalidJobState",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobEvent",
    "JobMonitor",
    "JobNotFound",
    "JobQueue",
    "JobStatus",
    "JobStore",
    "JobTimeout",
    "JobType",
    "JobTypeConfig",
    "JobTypes",
    "Lease",
    "LeaseLost",
    "MissingDependency",
    "NotFound",
    "Progress",
    "RetryPolicy",
    "SclibError",
    "UnknownJobType",
    "Worker",
    "WorkerStats",
    "__version__",
    "check_transition",
    "dataset_status_for",
    "dataset_status_trail",
    "open_store",
    "upload",
]
