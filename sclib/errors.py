"""The one exception tree of sclib.

Every error sclib raises on purpose is a subclass of :class:`SclibError`. Each class
says, through :attr:`SclibError.retryable`, whether trying the same call again later
can help. Driver errors (``sqlite3``, ``pymongo``) are translated once, at the backend
boundary, with ``raise ... from exc`` so the original stays attached.

::

    SclibError
    ├── ConfigurationError        bad backend URL, bad setting, missing extra
    │   ├── MissingDependency     an optional package is not installed
    │   └── UnsupportedScheme     no source or destination plugin for a URL scheme
    ├── InvalidInput              a value from the caller is wrong (ValueError too)
    │   ├── UnknownJobType
    │   ├── InvalidTransition     a dataset status change the table does not allow
    │   ├── BlockedAddress        a URL source resolves to a refused address (SSRF)
    │   └── ConversionError       a dataset's files cannot be converted (wrong format)
    ├── NotFound                  (LookupError too)
    │   ├── JobNotFound
    │   ├── DatasetNotFound
    │   ├── SessionNotFound
    │   └── SourceNotFound        the source object or folder does not exist
    ├── TransferError             moving bytes failed
    │   ├── SourceChanged         the source changed since the transfer started
    │   ├── SourceError           reading the source failed (retryable)
    │   ├── DestinationError      writing the destination failed (retryable)
    │   ├── ChecksumMismatch      bytes did not arrive as sent (retryable)
    │   └── TransferCancelled
    ├── AuthError                 a request could not be authenticated or authorised
    │   ├── Unauthorized          no credentials, or credentials that do not verify
    │   └── Forbidden             authenticated, but not allowed to do this
    ├── UploadError               an upload cannot take this request
    │   ├── UploadConflict        wrong offset, length or state for this upload
    │   ├── UploadBusy            another request is writing the same upload or chunk
    │   ├── TooLarge              a body, chunk or file above the configured limit
    │   └── LimitReached          a per-user limit is reached (HTTP 429)
    ├── InsufficientStorage       the disk cannot hold it now (HTTP 507)
    ├── InvalidJobState           the job is not in a state that allows the operation
    ├── DatasetConflict           a dataset's compare-and-set found another status
    ├── LeaseLost                 a fenced write by a worker that no longer owns the job
    ├── JobCancelled              raised in a handler once cancellation was requested,
    │                             or by JobQueue.wait for a cancelled job
    ├── JobFailed                 JobQueue.wait: the job failed (with its last error)
    ├── JobTimeout                raised inside a handler past its time limit
    ├── WaitTimeout               JobQueue.wait gave up waiting (TimeoutError too)
    └── BackendError              the store failed (retryable: locked, unreachable)
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AuthError",
    "BackendError",
    "BlockedAddress",
    "ChecksumMismatch",
    "ConfigurationError",
    "ConversionError",
    "DatasetConflict",
    "DatasetNotFound",
    "DestinationError",
    "Forbidden",
    "InsufficientStorage",
    "InvalidInput",
    "InvalidJobState",
    "InvalidTransition",
    "JobCancelled",
    "JobFailed",
    "JobNotFound",
    "JobTimeout",
    "LeaseLost",
    "LimitReached",
    "MissingDependency",
    "NotFound",
    "SclibError",
    "SessionNotFound",
    "SourceChanged",
    "SourceError",
    "SourceNotFound",
    "TooLarge",
    "TransferCancelled",
    "TransferError",
    "Unauthorized",
    "UnknownJobType",
    "UnsupportedScheme",
    "UploadBusy",
    "UploadConflict",
    "UploadError",
    "WaitTimeout",
]


class SclibError(Exception):
    """Base class of every error sclib raises on purpose."""

    #: Whether the same call may succeed if tried again later, unchanged.
    retryable: bool = False


class ConfigurationError(SclibError):
    """sclib was configured wrongly: a malformed backend URL, a bad setting."""


class MissingDependency(ConfigurationError, ImportError):
    """An optional dependency is not installed; the message names the extra."""

    def __init__(
        self,
        package: str,
        extra: str | None,
        feature: str,
        *,
        install: str | None = None,
    ) -> None:
        if install is None:
            install = f"'sclib[{extra}]'" if extra else package
        super().__init__(
            f"{feature} needs the '{package}' package, which is not installed; "
            f"install it with: pip install {install}"
        )
        self.package = package
        self.extra = extra


#: top-level import name of each optional package -> the extra that installs it
OPTIONAL_PACKAGES: dict[str, str] = {
    "pymongo": "mongo",
    "bson": "mongo",
    "fastapi": "server",
    "starlette": "server",
    "uvicorn": "server",
    "multipart": "server",
    "python_multipart": "server",
    "jwt": "server",
    "cryptography": "server",
    "prometheus_client": "server",
    "s3fs": "s3",
    "botocore": "s3",
    "aiobotocore": "s3",
    "aiohttp": "s3",
    "gcsfs": "gcs",
    "google_crc32c": "gcs",
    "google": "gdrive",
    "numpy": "convert",
    "tifffile": "convert",
    "h5py": "convert",
    "netCDF4": "convert",
    "zarr": "convert",
    "PIL": "convert",
    "OpenVisus": "convert",
    "py7zr": "archives",
    "backports": "zstd",
}


def missing_extra(exc: ImportError, feature: str) -> MissingDependency | None:
    """The :class:`MissingDependency` for an import that failed because an optional
    package is not installed, or ``None`` when ``exc`` is about something else."""
    name = (exc.name or "").split(".")[0]
    extra = OPTIONAL_PACKAGES.get(name)
    if extra is None:
        return None
    return MissingDependency(name, extra, feature)


class InvalidInput(SclibError, ValueError):
    """A value given by the caller is wrong; the message says which and why."""


class UnknownJobType(InvalidInput):
    """The job type is not registered with this queue."""


class InvalidTransition(InvalidInput):
    """A dataset status change that the transition table does not allow."""


class ConversionError(InvalidInput):
    """A dataset's files cannot be converted: a file is not in the format its sensor
    says (a text file named ``scan.tif``, a corrupt HDF5), slices that do not fit
    together, or no file the converter understands. The message names the file
    (its path inside the dataset). Not retryable: the same input never converts."""


class NotFound(SclibError, LookupError):
    """Something that was asked for by id does not exist."""


class JobNotFound(NotFound):
    """No job has this id."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"no job with id {job_id!r}")
        self.job_id = job_id


class DatasetNotFound(NotFound):
    """No dataset has this uuid."""

    def __init__(self, uuid: str) -> None:
        super().__init__(f"no dataset with uuid {uuid!r}")
        self.uuid = uuid


class DatasetConflict(SclibError):
    """A compare-and-set found the dataset in another state than expected.

    Not retryable as is: read the dataset again and decide what to do.
    """


class InvalidJobState(SclibError):
    """The job exists but its status does not allow this operation."""


class LeaseLost(SclibError):
    """A worker tried to write to a job it no longer owns.

    The lease expired and the job was rescued, cancelled, or claimed again. The write
    changed nothing; the worker must drop its work on this job.
    """

    def __init__(self, job_id: str, worker_id: str, attempt: int) -> None:
        super().__init__(
            f"worker {worker_id!r} no longer holds the lease on job {job_id!r} "
            f"(attempt {attempt}); the write was refused and nothing changed"
        )
        self.job_id = job_id
        self.worker_id = worker_id
        self.attempt = attempt


class JobCancelled(SclibError):
    """Raised inside a handler (by ``ctx.check()``) when cancellation was
    requested; and by :meth:`sclib.JobQueue.wait` for a cancelled job (then
    ``job`` is that job)."""

    def __init__(self, message: str = "", job: Any = None) -> None:
        super().__init__(message)
        self.job = job


class JobFailed(SclibError):
    """:meth:`sclib.JobQueue.wait`: the job failed for good. ``job`` is the job as
    stored; ``kind`` its last error's kind (``error``, ``fatal``, ``timeout``,
    ``crash``...); the message is that error."""

    def __init__(self, job: Any) -> None:
        last = job.error_history[-1] if job.error_history else None
        self.kind = last.kind if last is not None else "error"
        text = last.error if last is not None else "no error was recorded"
        super().__init__(f"job {job.id} ({job.type}) failed: {text}")
        self.job = job


class WaitTimeout(SclibError, TimeoutError):
    """:meth:`sclib.JobQueue.wait` gave up before the job finished (the job goes
    on: this is the caller's patience, not the job's)."""

    retryable = True


class JobTimeout(SclibError):
    """Raised inside a handler (by ``ctx.check()``) once it ran past its time limit."""

    retryable = True


class BackendError(SclibError):
    """The job store failed to carry out an operation."""

    retryable = True


class UnsupportedScheme(ConfigurationError):
    """No source or destination plugin handles this URL scheme."""


class BlockedAddress(InvalidInput):
    """A URL source points at an address sclib refuses to reach (loopback, private,
    link-local or cloud metadata) and the configuration does not allow it."""


class SessionNotFound(NotFound):
    """No transfer session has this id."""


class SourceNotFound(NotFound):
    """The source object or folder does not exist."""


class TransferError(SclibError):
    """Moving bytes failed."""


class SourceChanged(TransferError):
    """The source changed since the transfer started; resuming would mix versions."""


class SourceError(TransferError):
    """Reading the source failed."""

    retryable = True


class DestinationError(TransferError):
    """Writing to the destination failed."""

    retryable = True


class ChecksumMismatch(TransferError):
    """Bytes did not arrive as they were sent."""

    retryable = True


class TransferCancelled(TransferError):
    """The transfer was cancelled; its state is kept so it can resume."""


class AuthError(SclibError):
    """A request could not be authenticated or is not allowed."""


class Unauthorized(AuthError):
    """No credentials were given, or they do not verify (HTTP 401)."""


class Forbidden(AuthError):
    """The caller is known but may not do this (HTTP 403)."""


class UploadError(SclibError):
    """An upload cannot take this request."""


class UploadConflict(UploadError):
    """The request does not fit the upload's state: a wrong offset, a length that
    differs from the declared one, an upload already finished (HTTP 409)."""


class UploadBusy(UploadError):
    """Another request is writing the same upload (or the same chunk) right now
    (HTTP 423). Retry once it has finished."""

    retryable = True


class TooLarge(UploadError, InvalidInput):
    """A request body, chunk or file is above the configured limit (HTTP 413)."""


class InsufficientStorage(SclibError):
    """The disk cannot hold this now (HTTP 507): it is full, or taking an upload
    would eat into the space kept in reserve. What was stored before stays intact
    and resumable; retrying once space is freed can help."""

    retryable = True


class LimitReached(UploadError):
    """A per-user limit is reached: open uploads or staged bytes (HTTP 429). The
    message names the limit and its setting; finishing or cancelling uploads
    frees it."""

    retryable = True
