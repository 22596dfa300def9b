"""sclib: get scientific datasets into storage and process them reliably.

The public API is what this module exports; everything else may change.

>>> import sclib
>>> queue = sclib.JobQueue.open("sqlite:///sclib-data/sclib.db")  # doctest: +SKIP
"""

from __future__ import annotations

import os as _os
from typing import TYPE_CHECKING as _TYPE_CHECKING
from typing import Any as _Any
from typing import Literal as _Literal
from typing import overload as _overload

from sclib.backends import JobStore, open_store
from sclib.backends.base import ClaimedJob
from sclib.errors import (
    BackendError,
    ConfigurationError,
    InvalidInput,
    InvalidJobState,
    InvalidTransition,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimeout,
    LeaseLost,
    MissingDependency,
    NotFound,
    SclibError,
    UnknownJobType,
    WaitTimeout,
)
from sclib.jobs import (
    HandlerRegistry,
    JobContext,
    JobQueue,
    RetryPolicies,
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
from sclib.version import __version__

_DEFAULT_BASE_URL = "http://127.0.0.1:8000"

if _TYPE_CHECKING:
    from sclib.client.models import UploadResult, UploadStatus
    from sclib.transfers import TransferConfig as TransferConfig
    from sclib.transfers import TransferEngine as TransferEngine
    from sclib.transfers.progress import ProgressOption, TransferProgress

#: what a running job last reported (``Progress`` is the same class)
JobProgress = Progress


@_overload
def upload(
    path: str | _os.PathLike[str],
    base_url: str = ...,
    *,
    token: str | None = ...,
    wait: _Literal[True] = ...,
    progress: ProgressOption = ...,
    timeout: float | None = ...,
    **fields: _Any,
) -> UploadStatus: ...


@_overload
def upload(
    path: str | _os.PathLike[str],
    base_url: str = ...,
    *,
    token: str | None = ...,
    wait: _Literal[False],
    progress: ProgressOption = ...,
    timeout: float | None = ...,
    **fields: _Any,
) -> UploadResult: ...


def upload(
    path: str | _os.PathLike[str],
    base_url: str = _DEFAULT_BASE_URL,
    *,
    token: str | None = None,
    wait: bool = True,
    progress: ProgressOption = True,
    timeout: float | None = None,
    **fields: _Any,
) -> UploadStatus | UploadResult:
    """Upload one file to a server (``sclib serve``, or ScientistCloud's) as a
    new dataset, and follow its job to the end.

    The notebook one-liner over :class:`sclib.client.Client`: ``fields`` are the
    dataset fields (``dataset_name``, ``sensor``, ``convert``, ...). With ``wait``
    (the default) it returns the job's final :class:`~sclib.client.UploadStatus`
    (``timeout`` seconds at most); with ``wait=False`` the
    :class:`~sclib.client.UploadResult` at once. ``progress=True`` draws a bar for
    the bytes and one for the job; a callable gets the fraction sent (0..1).
    Large files go in parallel, verified, resumable chunks: calling it again
    after an interruption continues. A folder is :func:`upload_folder`'s.
    """
    from pathlib import Path

    from sclib.client import Client

    if "server" in fields:  # the name this argument had before 0.1
        base_url = fields.pop("server")
    if Path(path).is_dir():
        raise InvalidInput(
            f"{path} is a folder: sclib.upload_folder({str(path)!r}, ...) uploads "
            "every file in it into one dataset"
        )
    name = Path(path).name
    with Client(base_url, token=token) as client:
        result = client.upload_file(path, progress=progress, **fields)
        if not wait:
            return result
        # a callable follows the bytes sent; the job's own bar is for True only
        return client.wait_for_completion(
            result.job_id, timeout, progress=progress is True, label=f"{name}: job"
        )


def upload_folder(
    path: str | _os.PathLike[str],
    base_url: str = _DEFAULT_BASE_URL,
    *,
    token: str | None = None,
    progress: ProgressOption = True,
    timeout: float | None = None,
    **fields: _Any,
) -> list[UploadStatus]:
    """Upload every file under a folder into one new dataset (paths kept) and
    follow the jobs to the end; the final status of each file's job, in the
    order the files went. Arguments as in :func:`upload`."""
    from pathlib import Path

    from sclib.client import Client

    with Client(base_url, token=token) as client:
        results = client.upload_directory(path, progress=progress, **fields)
        name = Path(path).name
        return [
            client.wait_for_completion(
                r.job_id,
                timeout,
                progress=progress is True,
                label=f"{name}: job {n} of {len(results)}",
            )
            for n, r in enumerate(results, 1)
        ]


_LAZY = {
    "TransferEngine": "sclib.transfers",
    "TransferConfig": "sclib.transfers",
    "TransferProgress": "sclib.transfers.progress",
}


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


def __getattr__(name: str) -> _Any:
    """The transfer engine, loaded on first use (``import sclib`` stays light)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sclib' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


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
    "JobFailed",
    "JobMonitor",
    "JobNotFound",
    "JobProgress",
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
    "RetryPolicies",
    "RetryPolicy",
    "SclibError",
    "TransferConfig",
    "TransferEngine",
    "TransferProgress",
    "UnknownJobType",
    "WaitTimeout",
    "Worker",
    "WorkerStats",
    "__version__",
    "check_transition",
    "dataset_status_for",
    "dataset_status_trail",
    "open_store",
    "upload",
    "upload_folder",
]
