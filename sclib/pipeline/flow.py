"""What happens to a dataset after files land in it: the pipeline's next step.

Every job that adds files to a dataset (``upload``, ``file_extraction``,
``google_sync``, ``rsync_transfer``) ends by calling :meth:`Pipeline.after_files`,
which decides what comes next, by the dataset's record:

1. archives among the new files get a ``file_extraction`` job each (status
   ``unzipping``); the extraction job calls back here when it is done;
2. otherwise, if the dataset asks for conversion (``convert``) and a converter
   exists for its sensor, a ``dataset_conversion`` job is queued (``conversion
   queued``);
3. otherwise the dataset is ``done``; a dataset whose sensor has no converter
   (``OTHER``, ``MAPIR``) is not an error, and the step's result says so.

A dataset may get many ingest jobs (the seed uploads one file per request). A job
that finishes while another of them is still pending queues nothing: the last one
queues the conversion, with an idempotency key made of the dataset's file listing,
waiting (``depends_on``) only for those still running; a conversion job that finds
the published output already made from the same files does nothing (see
:mod:`sclib.pipeline.conversion`).
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from uuid import uuid4

import blake3

from sclib.datasets import Dataset, DatasetStore
from sclib.datasets.records import mark
from sclib.errors import InvalidInput
from sclib.jobs.context import JobContext
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import DatasetStatus, JobStatus, JobType
from sclib.models import Job
from sclib.paths import safe_join, safe_relative_path

__all__ = [
    "INGEST_TYPES",
    "Pipeline",
    "after_files",
    "enter_conversion_queued",
    "files_fingerprint",
    "step_failed",
    "will_retry",
]

log = logging.getLogger(__name__)

#: Job types that add files to a dataset; conversion waits for them.
INGEST_TYPES = frozenset(
    {
        JobType.UPLOAD.value,
        JobType.FILE_EXTRACTION.value,
        JobType.GOOGLE_SYNC.value,
        JobType.RSYNC_TRANSFER.value,
    }
)


def files_fingerprint(dataset: Dataset, extra: Mapping[str, Any] | None = None) -> str:
    """A short digest of the dataset's file listing (path, size, BLAKE3 of each)
    and of ``extra`` (sensor, parameters, format): equal fingerprints mean the same
    conversion input."""
    listing = [[f.path, f.size, f.blake3] for f in dataset.files]
    text = json.dumps([listing, dict(extra or {})], sort_keys=True, default=str)
    return blake3.blake3(text.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Pipeline:
    """Queues a dataset's next step; shared by the handlers of one worker.

    ``converters`` answers whether a sensor has a converter (by default the
    registry of :mod:`sclib.pipeline.convert`); ``output_format`` is the default
    format of conversion output (``idx`` or ``zarr``).
    """

    queue: JobQueue
    datasets: DatasetStore
    data_dir: Path
    output_format: str = "idx"

    def after_files(
        self,
        ctx: JobContext,
        uuid: str,
        files: Iterable[Mapping[str, Any]] = (),
        *,
        extract: bool = True,
    ) -> dict[str, Any]:
        """Queue what comes after ``files`` were recorded in dataset ``uuid`` by the
        job of ``ctx``; returns a summary for the job's result (``next`` names the
        step: ``file_extraction``, ``dataset_conversion`` or ``done``)."""
        record = self.datasets.get(uuid)
        job = ctx.job
        if extract:
            extraction = self._extract_archives(job.id, record, files)
            if extraction:
                mark(self.datasets, uuid, DatasetStatus.UNZIPPING)
                return {"next": JobType.FILE_EXTRACTION.value, "job_ids": extraction}
        return self.queue_conversion(record, exclude=job.id)

    def queue_conversion(
        self,
        record: Dataset,
        *,
        exclude: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        force: bool = False,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Queue the conversion of ``record`` if it asks for one and its sensor has
        a converter, else mark it ``done``.

        ``force`` (a reprocess) queues it even when ``convert`` is false or the
        same input was converted before, and waits for every job of the dataset
        still adding files. Otherwise (a job that just added files, ``exclude``)
        nothing is queued while another ingest job of the dataset is pending: the
        last one to finish queues the conversion, waiting only for those still
        running. So a dataset uploaded as 5,000 files gets one conversion job, not
        5,000 each waiting on all the others.
        """
        from sclib.pipeline.convert import converter_for

        params = dict(parameters or {})
        sensor = str(params.get("sensor") or record.sensor)
        converter = converter_for(sensor)
        if not (record.convert or force) or converter is None:
            note = (
                "conversion not requested"
                if not (record.convert or force)
                else f"no converter for sensor {sensor!r}: files kept as they are"
            )
            mark(self.datasets, record.uuid, DatasetStatus.DONE)
            return {"next": "done", "note": note}
        if not force and self._pending_ingest(record.uuid, exclude):
            return {
                "next": "waiting",
                "note": "more files of this dataset are queued; the last one to "
                "arrive queues the conversion",
            }
        params.setdefault("output_format", self.output_format)
        params["sensor"] = sensor
        if force:
            params["force"] = True
        waiting = self._active_ingest(record.uuid, exclude, pending=force)
        key = f"convert:{record.uuid}:{files_fingerprint(record, params)}"
        if force:
            key += f":{uuid4().hex}"
        if not waiting:
            # while other ingest jobs run, the dataset keeps their status: one of
            # them failing cancels this job, and must be able to say so (the table
            # refuses `conversion queued` -> `upload error`)
            enter_conversion_queued(self.datasets, record.uuid)
        job = self.queue.enqueue(
            JobType.DATASET_CONVERSION,
            params,
            dataset_uuid=record.uuid,
            owner=owner or record.owner,
            depends_on=waiting,
            idempotency_key=key,
        )
        log.info("dataset %s: conversion queued as %s", record.uuid, job.id)
        return {"next": JobType.DATASET_CONVERSION.value, "job_id": job.id}

    def reprocess(
        self,
        uuid: str,
        *,
        sensor: str | None = None,
        output_format: str | None = None,
        conversion_params: Mapping[str, Any] | None = None,
        owner: str | None = None,
    ) -> dict[str, Any]:
        """Convert dataset ``uuid`` again, even if its output is up to date.

        ``sensor`` and ``output_format`` override the dataset's for this run;
        ``conversion_params`` go to the converter. Refused with
        :class:`~sclib.errors.DatasetConflict` while a conversion of the dataset
        is already queued or running.
        """
        from sclib.datasets import DatasetConflict
        from sclib.errors import InvalidInput
        from sclib.jobtypes import SensorType

        record = self.datasets.get(uuid)
        params: dict[str, Any] = {}
        if sensor is not None:
            params["sensor"] = SensorType.parse(sensor).value
        if output_format is not None:
            if output_format not in ("idx", "zarr"):
                raise InvalidInput(
                    f"output_format must be idx or zarr, got {output_format!r}"
                )
            params["output_format"] = output_format
        if conversion_params is not None:
            if not isinstance(conversion_params, Mapping):
                raise InvalidInput("conversion_params must be an object")
            params["conversion_params"] = dict(conversion_params)
        for status in (JobStatus.PENDING, JobStatus.RUNNING):
            busy = self.queue.list(
                status=status.value,
                dataset_uuid=uuid,
                job_type=JobType.DATASET_CONVERSION.value,
                limit=1,
            )
            if busy:
                raise DatasetConflict(
                    f"dataset {uuid} already has a conversion {status.value} "
                    f"(job {busy[0].id}); wait for it or cancel it first"
                )
        return self.queue_conversion(record, parameters=params, force=True, owner=owner)

    def _extract_archives(
        self, job_id: str, record: Dataset, files: Iterable[Mapping[str, Any]]
    ) -> list[str]:
        from sclib.pipeline.extract import is_archive

        root = Path(self.data_dir) / "upload" / record.uuid
        ids = []
        for entry in files:
            path = str(entry["path"])
            if not is_archive(safe_join(root, safe_relative_path(path, "path"))):
                continue
            extraction = self.queue.enqueue(
                JobType.FILE_EXTRACTION,
                {"archive": path},
                dataset_uuid=record.uuid,
                owner=record.owner,
                idempotency_key=f"extract:{record.uuid}:{path}:{entry['blake3']}",
            )
            ids.append(extraction.id)
        return ids

    def _pending_ingest(self, uuid: str, exclude: str | None) -> bool:
        """Whether another job that adds files to dataset ``uuid`` waits to run."""
        for job_type in sorted(INGEST_TYPES):
            found = self.queue.list(
                status=JobStatus.PENDING.value,
                dataset_uuid=uuid,
                job_type=job_type,
                limit=2,
            )
            if any(job.id != exclude for job in found):
                return True
        return False

    def _active_ingest(
        self, uuid: str, exclude: str | None, *, pending: bool = True
    ) -> list[str]:
        """The jobs adding files to dataset ``uuid`` that are running (and pending,
        with ``pending``), other than ``exclude``."""
        statuses = [JobStatus.RUNNING] + ([JobStatus.PENDING] if pending else [])
        active = []
        for status in statuses:
            for job in self.queue.list(
                status=status.value, dataset_uuid=uuid, limit=10_000
            ):
                if job.type in INGEST_TYPES and job.id != exclude:
                    active.append(job.id)
        return active


def enter_conversion_queued(store: DatasetStore, uuid: str) -> None:
    """``conversion queued``; from an error status the table keeps from it (a
    reprocess after ``upload error`` or ``unzip error``), through ``retrying``,
    the legacy way of restarting after an error."""
    from sclib.jobtypes import DATASET_TRANSITIONS

    current = _status_of(store, uuid)
    target = DatasetStatus.CONVERSION_QUEUED
    if (
        current is not None
        and current.is_error
        and target not in DATASET_TRANSITIONS[current]
    ):
        mark(store, uuid, DatasetStatus.RETRYING)
    mark(store, uuid, target)


def will_retry(ctx: JobContext, exc: BaseException) -> bool:
    """Whether the job of ``ctx`` runs again after its attempt failed with
    ``exc``: the worker's rule (an error a retry can help, see
    :attr:`~sclib.errors.SclibError.retryable`) and attempts left, unless it was
    asked to stop."""
    from sclib.jobs.execute import _is_fatal

    if ctx.cancelled or not isinstance(exc, Exception) or _is_fatal(exc):
        return False
    job = ctx.job
    return job.failures + 1 < job.max_attempts


def step_failed(
    store: DatasetStore,
    ctx: JobContext,
    uuid: str,
    error: DatasetStatus,
    exc: BaseException,
) -> None:
    """Tell dataset ``uuid`` that an attempt of the job of ``ctx`` failed with
    ``exc``: ``error`` (the step's error status) with the message once the job
    will not run again; ``retrying``, without a message, while it will, so a
    dataset never says an error while its job is still queued or running. A job
    taken back from this worker (its lease lost) leaves the dataset to the
    attempt that runs it now."""
    from sclib.errors import LeaseLost

    if isinstance(exc, LeaseLost) or ctx.lost:
        return
    if will_retry(ctx, exc):
        mark(store, uuid, DatasetStatus.RETRYING)
    else:
        mark(store, uuid, error, str(exc) or type(exc).__name__)


def _status_of(store: DatasetStore, uuid: str) -> DatasetStatus | None:
    """Dataset ``uuid``'s status, or ``None`` if there is no such dataset."""
    from sclib.datasets import DatasetNotFound

    try:
        return DatasetStatus(store.get(uuid).status)
    except DatasetNotFound:
        return None


def after_files(
    pipeline: Pipeline | None,
    datasets: DatasetStore,
    ctx: JobContext,
    uuid: str,
    files: Iterable[Mapping[str, Any]] = (),
    *,
    extract: bool = True,
) -> dict[str, Any]:
    """:meth:`Pipeline.after_files`, or, for a handler built without a pipeline
    (a bare library setup), simply ``done``."""
    if pipeline is None:
        mark(datasets, uuid, DatasetStatus.DONE)
        return {"next": "done"}
    return pipeline.after_files(ctx, uuid, files, extract=extract)


_D = DatasetStatus
# job type -> (the dataset statuses that say "this step is ahead", its error)
_STEP_STATUS: dict[str, tuple[frozenset[DatasetStatus], DatasetStatus]] = {
    JobType.UPLOAD.value: (
        frozenset({_D.UPLOAD_QUEUED, _D.UPLOADING}),
        _D.UPLOAD_ERROR,
    ),
    JobType.FILE_EXTRACTION.value: (frozenset({_D.UNZIPPING}), _D.UNZIP_ERROR),
    JobType.DATASET_CONVERSION.value: (
        frozenset({_D.CONVERSION_QUEUED, _D.CONVERTING}),
        _D.CONVERSION_ERROR,
    ),
    JobType.GOOGLE_SYNC.value: (
        frozenset({_D.SYNC_QUEUED, _D.SYNCING}),
        _D.SYNC_ERROR,
    ),
    JobType.RSYNC_TRANSFER.value: (
        frozenset({_D.SYNC_QUEUED, _D.SYNCING}),
        _D.SYNC_ERROR,
    ),
    JobType.DATA_COMPRESSION.value: (frozenset({_D.ZIPPING}), _D.COMPRESSION_ERROR),
}


def after_cancel(
    queue: JobQueue,
    datasets: DatasetStore,
    job: Job,
    data_dir: Path | None = None,
) -> None:
    """A job cancelled before it ran never tells its dataset: the dataset would
    stay ``conversion queued`` (or ``uploading``, ...) for ever. Called after a
    cancel, this moves it to that step's error status with the reason, unless
    another job of the same step is still pending or running for it. A running
    job that was asked to stop reports for itself when it stops. A dataset left
    ``retrying`` by a failed attempt of the job goes back through the step's
    active status to its error, as the legacy table allows.

    With the server's ``data_dir``, a cancelled ``upload`` job of received
    bytes also takes back the files it brought into the dataset folder and that
    its handler never recorded: a cancelled upload leaves nothing behind, and
    the same file can be sent again."""
    if job.status != JobStatus.CANCELLED or not job.dataset_uuid:
        return
    if data_dir is not None:
        _remove_unrecorded(queue, datasets, job, data_dir)
    step = _STEP_STATUS.get(job.type)
    if step is None:
        return
    ahead, error = step
    from sclib.datasets import DatasetNotFound
    from sclib.jobtypes import dataset_status_for

    try:
        record = datasets.get(job.dataset_uuid)
    except DatasetNotFound:
        return
    retried = record.status == DatasetStatus.RETRYING and job.failures > 0
    if record.status not in ahead and not retried:
        return
    for status in (JobStatus.PENDING, JobStatus.RUNNING):
        others = queue.list(
            status=status.value, dataset_uuid=job.dataset_uuid, limit=10_000
        )
        if any(o.type == job.type and o.id != job.id for o in others):
            return
    reason = job.error or "cancelled"
    if retried:  # `retrying` leads to the step's error only through its work
        active = dataset_status_for(job.type, JobStatus.RUNNING.value)
        if active is not None:
            mark(datasets, job.dataset_uuid, active)
    mark(datasets, job.dataset_uuid, error, f"{job.type} job {job.id}: {reason}")


def _remove_unrecorded(
    queue: JobQueue, datasets: DatasetStore, job: Job, data_dir: Path
) -> None:
    """Delete the files a cancelled upload job committed that its dataset does
    not list, then the folders this leaves empty, up to the dataset's folder.

    A file is left alone when another unfinished upload job of the dataset
    lists the same path (the same file sent again after this job was cancelled
    once, then retried), or when its size is not the one this job recorded."""
    params = job.parameters
    if job.type != JobType.UPLOAD.value or params.get("source") != "upload":
        return
    from sclib.datasets import DatasetNotFound

    assert job.dataset_uuid is not None
    try:
        recorded = {f.path for f in datasets.get(job.dataset_uuid).files}
    except DatasetNotFound:
        recorded = set()
    claimed: set[str] = set()  # paths of the dataset's other live upload jobs
    for status in (JobStatus.PENDING, JobStatus.RUNNING):
        for other in queue.list(
            status=status.value, dataset_uuid=job.dataset_uuid, limit=10_000
        ):
            if other.id != job.id and other.type == JobType.UPLOAD.value:
                claimed.update(
                    str(f.get("path"))
                    for f in other.parameters.get("files") or []
                    if isinstance(f, dict)
                )
    root = data_dir / "upload" / job.dataset_uuid
    for entry in params.get("files") or []:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or rel in recorded or rel in claimed:
            continue
        try:
            path = safe_join(root, *rel.split("/"))
        except InvalidInput:
            continue  # not a path sclib wrote
        if not path.is_file() or path.is_symlink():
            continue
        if path.stat().st_size != entry.get("size"):
            continue  # not the bytes this job brought
        path.unlink()
        log.info("job %s cancelled: removed its unrecorded %s", job.id, rel)
        folder = path.parent
        while folder != root and folder.is_relative_to(root):
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
            folder = folder.parent
    with contextlib.suppress(OSError):
        root.rmdir()  # a dataset folder the cancel left empty
