"""Job types, job statuses, and the legacy dataset statuses with their transitions.

The names and strings here are the ones ScientistCloud's portal and existing clients
use (see the seed document); they keep their meaning.

* :class:`JobType` lists the built-in job types; :data:`JOB_TYPE_CONFIGS` gives each
  one its time limit, attempt budget and priority. A queue holds its own
  :class:`JobTypes` catalogue, so an application can add types without touching a
  global table.
* :class:`JobStatus` is the life cycle of one job.
* :class:`DatasetStatus` holds the 17 legacy dataset status strings (with their
  spaces). :func:`check_transition` is the single place that says which changes are
  allowed; :func:`dataset_status_for` maps a job's state to the dataset status the
  portal shows.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sclib.errors import InvalidInput, InvalidTransition, UnknownJobType

if TYPE_CHECKING:
    from sclib.jobs.policy import RetryPolicy

__all__ = [
    "DATASET_TRANSITIONS",
    "JOB_TYPE_CONFIGS",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "DatasetStatus",
    "JobStatus",
    "JobType",
    "JobTypeConfig",
    "JobTypes",
    "SensorType",
    "check_priority",
    "check_transition",
    "dataset_status_for",
    "dataset_status_trail",
]

PRIORITY_HIGH = 1
PRIORITY_NORMAL = 2
PRIORITY_LOW = 3


class JobType(StrEnum):
    """The built-in job types of the seed."""

    GOOGLE_SYNC = "google_sync"
    DATASET_CONVERSION = "dataset_conversion"
    FILE_UPLOAD = "file_upload"
    FILE_EXTRACTION = "file_extraction"
    DATA_COMPRESSION = "data_compression"
    RSYNC_TRANSFER = "rsync_transfer"
    BACKUP_CREATION = "backup_creation"
    DATA_VALIDATION = "data_validation"
    UPLOAD = "upload"


class JobStatus(StrEnum):
    """The life cycle of a job.

    ``pending`` jobs wait to be claimed; a pending job whose ``run_at`` lies in the
    future (a scheduled job or a retry after backoff) or whose dependencies have not
    all completed is not claimable yet.
    """

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """True for the terminal statuses."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})


def check_priority(priority: object) -> int:
    """Return ``priority`` if it is 1 (high), 2 (normal) or 3 (low); else raise."""
    if (
        isinstance(priority, bool)
        or not isinstance(priority, int)
        or not (PRIORITY_HIGH <= priority <= PRIORITY_LOW)
    ):
        raise InvalidInput(
            f"priority must be 1 (high), 2 (normal) or 3 (low), got {priority!r}"
        )
    return priority


@dataclass(frozen=True, slots=True)
class JobTypeConfig:
    """Defaults for one job type; a job may override timeout, attempts and priority.

    Every field has a default, so ``JobTypeConfig("Make thumbnails")`` is a
    complete type: 60 minutes, 3 attempts, normal priority, the queue's retry
    policy. ``retry`` (a :class:`sclib.RetryPolicy`) replaces the queue's
    backoff after errors for jobs of this type.
    """

    description: str = ""
    timeout_minutes: float = 60
    max_attempts: int = 3
    priority: int = PRIORITY_NORMAL
    requires_internet: bool = False
    estimated_duration: str = ""
    retry: RetryPolicy | None = None

    def __post_init__(self) -> None:
        if self.timeout_minutes <= 0:
            raise InvalidInput(
                f"timeout_minutes must be positive, got {self.timeout_minutes}"
            )
        if self.max_attempts < 1:
            raise InvalidInput(f"max_attempts must be >= 1, got {self.max_attempts}")
        check_priority(self.priority)

    @property
    def timeout_seconds(self) -> float:
        return self.timeout_minutes * 60.0


JOB_TYPE_CONFIGS: Mapping[str, JobTypeConfig] = {
    JobType.GOOGLE_SYNC: JobTypeConfig(
        "Synchronize data from Google Drive",
        60,
        3,
        PRIORITY_NORMAL,
        True,
        "5-60 minutes",
    ),
    JobType.DATASET_CONVERSION: JobTypeConfig(
        "Convert dataset to streamable format",
        120,
        2,
        PRIORITY_HIGH,
        False,
        "10-60 minutes",
    ),
    JobType.FILE_UPLOAD: JobTypeConfig(
        "Upload files to storage", 60, 3, PRIORITY_NORMAL, False, "1-30 minutes"
    ),
    JobType.FILE_EXTRACTION: JobTypeConfig(
        "Extract files from archives", 60, 3, PRIORITY_NORMAL, False, "1-30 minutes"
    ),
    JobType.DATA_COMPRESSION: JobTypeConfig(
        "Compress data for storage", 120, 2, PRIORITY_LOW, False, "5-60 minutes"
    ),
    JobType.RSYNC_TRANSFER: JobTypeConfig(
        "Transfer data via rsync", 120, 3, PRIORITY_NORMAL, True, "5-60 minutes"
    ),
    JobType.BACKUP_CREATION: JobTypeConfig(
        "Create data backups", 240, 2, PRIORITY_LOW, False, "10-120 minutes"
    ),
    JobType.DATA_VALIDATION: JobTypeConfig(
        "Validate dataset integrity", 60, 2, PRIORITY_LOW, False, "1-30 minutes"
    ),
    JobType.UPLOAD: JobTypeConfig(
        "Asynchronous upload from a local file, Google Drive, S3 or a URL",
        1440,
        3,
        PRIORITY_NORMAL,
        True,
        "1 minute to several hours",
    ),
}


class JobTypes(Mapping[str, JobTypeConfig]):
    """A catalogue of job types: the built-ins plus what an application registers.

    Each :class:`~sclib.JobQueue` owns one, so two queues in one process can know
    different types.
    """

    def __init__(self, extra: Mapping[str, JobTypeConfig] | None = None) -> None:
        self._configs: dict[str, JobTypeConfig] = {
            str(k): v for k, v in JOB_TYPE_CONFIGS.items()
        }
        for name, config in (extra or {}).items():
            self.register(name, config)

    def register(self, name: str, config: JobTypeConfig) -> None:
        """Add a job type, or replace the defaults of an existing one."""
        self.check_name(name)
        if not isinstance(config, JobTypeConfig):
            raise InvalidInput(
                f"job type {name!r}: expected a JobTypeConfig, got {config!r}"
            )
        self._configs[name] = config

    @staticmethod
    def check_name(name: object) -> str:
        """``name`` if it can name a job type; else InvalidInput."""
        if (
            not isinstance(name, str)
            or not name
            or not name.isascii()
            or not name.replace("_", "").isalnum()
        ):
            raise InvalidInput(
                f"job type names are non-empty and use letters, digits and '_' only, "
                f"got {name!r}"
            )
        return name

    def retry_policies(self) -> dict[str, RetryPolicy]:
        """The job types that have a retry policy of their own."""
        return {n: c.retry for n, c in self._configs.items() if c.retry is not None}

    def require(self, name: str) -> JobTypeConfig:
        """The config of ``name``; raises :class:`UnknownJobType` with the choices
        and how to add a type."""
        try:
            return self._configs[name]
        except (KeyError, TypeError):
            known = ", ".join(sorted(self._configs))
            raise UnknownJobType(
                f"unknown job type {name!r}; known types: {known}. To add it, "
                f"register a handler (@handlers.register({name!r})) and open the "
                f"queue with it (JobQueue.open(url, handlers=handlers)), or pass "
                f"job_types=JobTypes({{{name!r}: JobTypeConfig(...)}})"
            ) from None

    def __getitem__(self, name: str) -> JobTypeConfig:
        return self._configs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)


class SensorType(StrEnum):
    """The sensor types of the seed: they say how a dataset is converted."""

    IDX = "IDX"
    TIFF = "TIFF"
    TIFF_RGB = "TIFF RGB"
    NETCDF = "NETCDF"
    HDF5 = "HDF5"
    NEXUS_4D = "4D_NEXUS"
    RGB = "RGB"
    MAPIR = "MAPIR"
    OTHER = "OTHER"

    @classmethod
    def parse(cls, value: object) -> SensorType:
        """The sensor named by ``value`` (case-insensitive; ``_`` for a space is
        accepted); :class:`InvalidInput` naming the known sensors otherwise."""
        if isinstance(value, str):
            wanted = value.strip().upper()
            for sensor in cls:
                if wanted in (sensor.value, sensor.value.replace(" ", "_")):
                    return sensor
        known = ", ".join(s.value for s in cls)
        raise InvalidInput(f"unknown sensor {value!r}; known sensors: {known}")


class DatasetStatus(StrEnum):
    """The 17 dataset status strings of the old system, spaces included."""

    SUBMITTED = "submitted"
    SYNC_QUEUED = "sync queued"
    SYNCING = "syncing"
    UPLOAD_QUEUED = "upload queued"
    UPLOADING = "uploading"
    UNZIPPING = "unzipping"
    CONVERSION_QUEUED = "conversion queued"
    CONVERTING = "converting"
    ZIPPING = "zipping"
    DONE = "done"
    RETRYING = "retrying"
    SYNC_ERROR = "sync error"
    UPLOAD_ERROR = "upload error"
    UNZIP_ERROR = "unzip error"
    CONVERSION_ERROR = "conversion error"
    COMPRESSION_ERROR = "compression error"
    FAILED = "failed"

    @property
    def is_error(self) -> bool:
        return self in _ERROR_STATES


_D = DatasetStatus
_ERROR_STATES = frozenset(
    {
        _D.SYNC_ERROR,
        _D.UPLOAD_ERROR,
        _D.UNZIP_ERROR,
        _D.CONVERSION_ERROR,
        _D.COMPRESSION_ERROR,
        _D.FAILED,
    }
)
# Where processing can (re)start from: any queued or active step.
_STARTS = frozenset(
    {
        _D.SYNC_QUEUED,
        _D.UPLOAD_QUEUED,
        _D.UPLOADING,
        _D.UNZIPPING,
        _D.CONVERSION_QUEUED,
        _D.ZIPPING,
    }
)

#: Allowed dataset status changes. Staying in the same status is always allowed.
DATASET_TRANSITIONS: Mapping[DatasetStatus, frozenset[DatasetStatus]] = {
    _D.SUBMITTED: _STARTS | {_D.SYNCING, _D.DONE, _D.FAILED},
    _D.SYNC_QUEUED: frozenset({_D.SYNCING, _D.SYNC_ERROR, _D.FAILED}),
    _D.SYNCING: frozenset(
        {_D.UNZIPPING, _D.CONVERSION_QUEUED, _D.DONE, _D.SYNC_ERROR, _D.RETRYING}
    ),
    _D.UPLOAD_QUEUED: frozenset({_D.UPLOADING, _D.UPLOAD_ERROR, _D.FAILED}),
    _D.UPLOADING: frozenset(
        {_D.UNZIPPING, _D.CONVERSION_QUEUED, _D.DONE, _D.UPLOAD_ERROR, _D.RETRYING}
    ),
    _D.UNZIPPING: frozenset(
        {_D.CONVERSION_QUEUED, _D.DONE, _D.UNZIP_ERROR, _D.RETRYING}
    ),
    _D.CONVERSION_QUEUED: frozenset({_D.CONVERTING, _D.CONVERSION_ERROR, _D.FAILED}),
    _D.CONVERTING: frozenset({_D.DONE, _D.CONVERSION_ERROR, _D.RETRYING}),
    _D.ZIPPING: frozenset({_D.DONE, _D.COMPRESSION_ERROR, _D.RETRYING}),
    # A finished dataset can get new files (add_to_existing), be reprocessed or packed.
    _D.DONE: _STARTS,
    _D.RETRYING: _STARTS | {_D.SYNCING, _D.CONVERTING, _D.FAILED},
    # An operator (or an automatic retry) restarts a step after an error.
    _D.SYNC_ERROR: frozenset({_D.RETRYING, _D.SYNC_QUEUED, _D.FAILED}),
    _D.UPLOAD_ERROR: frozenset(
        {_D.RETRYING, _D.UPLOAD_QUEUED, _D.UPLOADING, _D.FAILED}
    ),
    _D.UNZIP_ERROR: frozenset({_D.RETRYING, _D.UNZIPPING, _D.FAILED}),
    _D.CONVERSION_ERROR: frozenset({_D.RETRYING, _D.CONVERSION_QUEUED, _D.FAILED}),
    _D.COMPRESSION_ERROR: frozenset({_D.RETRYING, _D.ZIPPING, _D.FAILED}),
    _D.FAILED: frozenset({_D.RETRYING, _D.SUBMITTED}) | _STARTS,
}


def _as_dataset_status(value: str, what: str) -> DatasetStatus:
    try:
        return DatasetStatus(value)
    except ValueError:
        known = ", ".join(repr(s.value) for s in DatasetStatus)
        raise InvalidInput(
            f"{what} {value!r} is not a dataset status; known: {known}"
        ) from None


def check_transition(current: str, new: str) -> DatasetStatus:
    """Check that a dataset may go from ``current`` to ``new``; return ``new``.

    Raises :class:`InvalidTransition` naming both statuses and the allowed targets,
    or :class:`InvalidInput` if either string is not a legacy status.
    """
    old = _as_dataset_status(current, "current status")
    target = _as_dataset_status(new, "new status")
    if target is old or target in DATASET_TRANSITIONS[old]:
        return target
    allowed = ", ".join(sorted(repr(s.value) for s in DATASET_TRANSITIONS[old]))
    raise InvalidTransition(
        f"a dataset in status {old.value!r} cannot go to {target.value!r}; "
        f"allowed next statuses: {allowed}"
    )


# job type -> (queued, active, error) dataset statuses
_STEP_STATUSES: Mapping[str, tuple[DatasetStatus, DatasetStatus, DatasetStatus]] = {
    JobType.GOOGLE_SYNC: (_D.SYNC_QUEUED, _D.SYNCING, _D.SYNC_ERROR),
    JobType.UPLOAD: (_D.UPLOAD_QUEUED, _D.UPLOADING, _D.UPLOAD_ERROR),
    JobType.FILE_UPLOAD: (_D.UPLOAD_QUEUED, _D.UPLOADING, _D.UPLOAD_ERROR),
    JobType.RSYNC_TRANSFER: (_D.SYNC_QUEUED, _D.SYNCING, _D.SYNC_ERROR),
    JobType.FILE_EXTRACTION: (_D.UNZIPPING, _D.UNZIPPING, _D.UNZIP_ERROR),
    JobType.DATASET_CONVERSION: (
        _D.CONVERSION_QUEUED,
        _D.CONVERTING,
        _D.CONVERSION_ERROR,
    ),
    JobType.DATA_COMPRESSION: (_D.ZIPPING, _D.ZIPPING, _D.COMPRESSION_ERROR),
}


def dataset_status_for(
    job_type: str, status: str, *, retrying: bool = False
) -> DatasetStatus | None:
    """The dataset status a job of ``job_type`` in job ``status`` stands for.

    ``retrying`` marks a pending job that already failed once and waits for its
    backoff. Returns ``None`` for job types that do not move a dataset's status
    (validation and backups run beside a finished dataset) and for completed jobs,
    whose next status depends on the rest of the pipeline.
    """
    steps = _STEP_STATUSES.get(job_type)
    if steps is None:
        return None
    queued, active, error = steps
    job_status = JobStatus(status)
    if job_status is JobStatus.PENDING:
        return _D.RETRYING if retrying else queued
    if job_status is JobStatus.RUNNING:
        return active
    if job_status is JobStatus.FAILED:
        return error
    return None


def dataset_status_trail(
    jobs: Iterable[tuple[str, str, int]],
) -> list[DatasetStatus]:
    """The legacy statuses a dataset went through, given its jobs in creation order.

    ``jobs`` holds ``(job_type, job_status, failures)`` for each job of the dataset.
    Starting from ``submitted``, each job that moves a dataset's status adds its
    steps (queued, active, ``retrying`` and active again after a failed attempt,
    the error status if it failed for good); a job that completed hands over to the
    next job, or ends in ``done`` if it was the last one. The first job that has not
    completed gives the current status: the steps after it are still waiting. When
    a completed pipeline starts a new step (reprocessing, files added), it passes
    through ``done``.

    Every step is checked with :func:`check_transition`; a sequence of jobs that
    the legacy statuses cannot represent raises :class:`InvalidTransition`.
    """
    trail = [DatasetStatus.SUBMITTED]

    def go(new: DatasetStatus) -> None:
        if new is not trail[-1]:
            trail.append(check_transition(trail[-1], new))

    finished_last = False
    for job_type, status, failures in jobs:
        steps = _STEP_STATUSES.get(job_type)
        job_status = JobStatus(status)
        if steps is None or job_status is JobStatus.CANCELLED:
            continue
        queued, active, error = steps
        if finished_last and queued not in DATASET_TRANSITIONS[trail[-1]]:
            go(DatasetStatus.DONE)
        go(queued)
        if job_status is not JobStatus.PENDING or failures:
            go(active)
        if failures:
            go(DatasetStatus.RETRYING)
            if job_status is not JobStatus.PENDING:
                go(active)
        if job_status is JobStatus.FAILED:
            go(error)
        finished_last = job_status is JobStatus.COMPLETED
        if not finished_last:
            break  # later steps wait for this one
    if finished_last:
        go(DatasetStatus.DONE)
    return trail
