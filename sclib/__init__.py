"""sclib: get scientific datasets into storage and process them reliably.

The public API is what this module exports; everything else may change.

>>> import sclib
>>> queue = sclib.JobQueue.open("sqlite:///sclib-data/sclib.db")  # doctest: +SKIP
"""

from __future__ import annotations

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

__version__ = "0.1.0.dev0"

__all__ = [
    "BackendError",
    "ClaimedJob",
    "ConfigurationError",
    "DatasetStatus",
    "ErrorRecord",
    "HandlerRegistry",
    "InvalidInput",
    "InvalidJobState",
    "InvalidTransition",
    "Job",
    "JobCancelled",
    "JobContext",
    "JobEvent",
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
]
