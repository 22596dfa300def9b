"""What the client returns: pydantic models that also read like the seed's dicts.

Every answer of the server is parsed into a model with typed attributes
(``result.job_id``). The seed's client returned plain dicts, so each model also
answers dict-style access: ``result["job_id"]``, ``result.get("error")``,
``"job_id" in result``, ``result.keys()``. Fields the server adds that a model
does not declare are kept (``extra="allow"``) and reachable both ways.
"""

from __future__ import annotations

from collections.abc import KeysView
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "CancelResult",
    "ChunkReceipt",
    "CompleteResult",
    "DatasetInfo",
    "DatasetList",
    "DatasetState",
    "DownloadEntry",
    "DownloadList",
    "DownloadResult",
    "DownloadedFile",
    "Health",
    "JobInfo",
    "JobList",
    "JobStatus",
    "LargeUpload",
    "LargeUploadStatus",
    "Limits",
    "QueueStats",
    "ResultModel",
    "ResumeInfo",
    "SupportedSources",
    "TimeEstimate",
    "UploadJobList",
    "UploadResult",
    "UploadStatus",
]

#: Job statuses after which nothing changes any more.
FINISHED_STATUSES = frozenset({"completed", "failed", "cancelled"})


class ResultModel(BaseModel):
    """Base of every result: typed attributes plus the seed's dict-style access."""

    model_config = ConfigDict(extra="allow")

    def _names(self) -> dict[str, None]:
        names = dict.fromkeys(type(self).model_fields)
        names.update(dict.fromkeys(self.model_extra or {}))
        return names

    def keys(self) -> KeysView[str]:
        """The field names, declared and extra (like ``dict.keys()``)."""
        return self._names().keys()

    def __getitem__(self, key: str) -> Any:
        if not isinstance(key, str) or key not in self._names():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key``, or ``default`` when there is no such field."""
        try:
            return self[key]
        except KeyError:
            return default

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key in self._names()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (datetimes as ISO 8601 text)."""
        return self.model_dump(mode="json")


class UploadResult(ResultModel):
    """The answer to an upload or import: the job that processes it."""

    job_id: str
    status: str = "pending"
    upload_type: str = "standard"
    dataset_uuid: str | None = None
    message: str | None = None
    #: seconds; an int stays an int (the original client's field was an int)
    estimated_duration: int | float | None = None
    upload_id: str | None = None
    file_blake3: str | None = None


class UploadStatus(ResultModel):
    """A job's status as ``/api/upload/status/{job_id}`` reports it."""

    job_id: str
    status: str
    progress_percentage: float = 0.0
    bytes_uploaded: int | None = None
    bytes_total: int | None = None
    message: str | None = None
    error: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached completed, failed or cancelled."""
        return self.status in FINISHED_STATUSES


class JobStatus(ResultModel):
    """A job's status in the shape of the original ScientistCloud client's
    ``JobStatus`` dataclass, as :class:`~sclib.client.ScientistCloudUploadClient`
    returns it.

    Not :class:`sclib.JobStatus` (the queue's status enum). Unlike
    :class:`UploadStatus`, ``created_at`` and ``updated_at`` stay the server's
    ISO 8601 text, as they did in the original.
    """

    job_id: str
    status: str
    progress_percentage: float = 0.0
    bytes_uploaded: int | None = None
    bytes_total: int | None = None
    message: str | None = None
    error: str | None = None
    created_at: str | None = None
    updated_at: str | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached completed, failed or cancelled."""
        return self.status in FINISHED_STATUSES


class CancelResult(ResultModel):
    """The answer to a cancellation request."""

    job_id: str
    status: str
    message: str | None = None


class UploadJobList(ResultModel):
    """A page of upload jobs."""

    jobs: list[UploadStatus] = Field(default_factory=list)
    count: int | None = None
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class SupportedSources(ResultModel):
    """The import sources and sensor types the server knows."""

    sources: Any = None
    sensors: list[str] = Field(default_factory=list)


class Limits(ResultModel):
    """The server's size limits (bytes)."""

    max_file_size: int | None = None
    standard_upload_limit: int = 100 * 1000**2
    chunk_size: int | None = None
    max_chunk_size: int | None = None


class TimeEstimate(ResultModel):
    """How long the server guesses an upload of ``file_size`` bytes takes."""

    file_size: int
    estimated_seconds: float | None = None
    upload_type: str | None = None


class Health(ResultModel):
    """The server's health report."""

    status: str


class LargeUpload(ResultModel):
    """A started large-file upload: where to send which chunks."""

    upload_id: str
    chunk_size: int
    total_chunks: int
    message: str | None = None
    #: the chunk digests the server takes (X-Chunk-Hash algorithms); servers
    #: before this field took "sha256" and "blake3"
    chunk_hashes: list[str] = Field(default_factory=lambda: ["sha256", "blake3"])


class ChunkReceipt(ResultModel):
    """The server's receipt for one chunk."""

    upload_id: str
    chunk_index: int
    uploaded_chunks: int | list[int] | None = None
    total_chunks: int | None = None
    received: bool = True


class LargeUploadStatus(ResultModel):
    """How far a large-file upload got."""

    upload_id: str
    uploaded_chunks: int | list[int] | None = None
    total_chunks: int | None = None
    is_complete: bool = False
    progress_percentage: float = 0.0


class ResumeInfo(ResultModel):
    """The chunks a large-file upload still needs."""

    upload_id: str
    missing_chunks: list[int] = Field(default_factory=list)
    total_chunks: int
    can_resume: bool = True
    #: the chunk digests the server takes now (``None``: a server that does not
    #: say; the ones it named when the upload started still hold)
    chunk_hashes: list[str] | None = None


class CompleteResult(ResultModel):
    """The answer to completing a large-file upload (the same answer every time)."""

    upload_id: str
    job_id: str
    dataset_uuid: str | None = None
    status: str = "pending"
    message: str | None = None
    file_blake3: str | None = None


class JobInfo(ResultModel):
    """A job of the queue, as ``sclib.models.Job.to_dict()`` shows it."""

    job_id: str
    job_type: str
    status: str
    priority: int | None = None
    dataset_uuid: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict)
    progress: dict[str, Any] = Field(default_factory=dict)
    result: Any = None
    error: str | None = None
    attempts: int = 0
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @property
    def finished(self) -> bool:
        """Whether the job reached completed, failed or cancelled."""
        return self.status in FINISHED_STATUSES


class JobList(ResultModel):
    """A page of jobs."""

    jobs: list[JobInfo] = Field(default_factory=list)
    count: int | None = None
    total: int | None = None
    limit: int | None = None
    offset: int | None = None


class QueueStats(ResultModel):
    """Counts of the queue's jobs; the server decides the fields."""


#: Dataset statuses after which a dataset's pipeline has nothing more to do
#: (until someone adds files or reprocesses it).
SETTLED_DATASET_STATUSES = frozenset(
    {
        "done",
        "failed",
        "sync error",
        "upload error",
        "unzip error",
        "conversion error",
        "compression error",
    }
)


class DatasetInfo(ResultModel):
    """A dataset: its fields (the seed's names), legacy status and files."""

    uuid: str
    name: str = ""
    slug: str = ""
    user: str = ""
    sensor: str = ""
    convert: bool = True
    status: str = ""
    error_message: str | None = None
    total_size: int = 0
    file_count: int = 0
    files: list[dict[str, Any]] = Field(default_factory=list)
    created_at: datetime | None = None
    updated_at: datetime | None = None


class DatasetList(ResultModel):
    """A page of datasets (without their files)."""

    datasets: list[DatasetInfo] = Field(default_factory=list)
    count: int | None = None
    limit: int | None = None
    offset: int | None = None


class DatasetState(ResultModel):
    """A dataset's legacy status and the jobs that worked on it."""

    uuid: str
    status: str
    error_message: str | None = None
    jobs: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def settled(self) -> bool:
        """``done`` or an error status, with every job of the dataset finished."""
        return self.status in SETTLED_DATASET_STATUSES and all(
            j.get("status") in FINISHED_STATUSES for j in self.jobs
        )

    @property
    def ok(self) -> bool:
        """Settled in ``done``."""
        return self.settled and self.status == "done"


class DownloadEntry(ResultModel):
    """One file a dataset offers for download: its own (``kind="file"``) or one
    of its converted output (``kind="output"``)."""

    path: str
    size: int = Field(ge=0)
    blake3: str = Field(pattern=r"^[0-9a-f]{64}$")
    kind: Literal["file", "output"] = "file"


class DownloadList(ResultModel):
    """A page of a dataset's downloadable files."""

    uuid: str
    name: str = ""
    is_public_downloadable: bool = False
    files: list[DownloadEntry] = Field(default_factory=list)
    count: int = 0
    total: int = 0
    total_size: int = 0
    limit: int | None = None
    offset: int | None = None


class DownloadedFile(ResultModel):
    """One file of :meth:`~sclib.client.Client.download_dataset`, in place and
    verified."""

    path: str
    kind: Literal["file", "output"]
    size: int
    blake3: str
    local_path: str
    #: bytes received over the network for it by this run
    fetched_bytes: int = 0
    #: the length of the partial copy an earlier run left, continued from there
    resumed_from: int | None = None
    #: already in the folder with the right BLAKE3: nothing fetched
    skipped: bool = False


class DownloadResult(ResultModel):
    """What :meth:`~sclib.client.Client.download_dataset` put in the folder."""

    uuid: str
    name: str = ""
    folder: str
    files: list[DownloadedFile] = Field(default_factory=list)
    total_size: int = 0
    #: bytes received over the network by this run
    fetched_bytes: int = 0
