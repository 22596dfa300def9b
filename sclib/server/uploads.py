"""The server's uploads: the receive engine plus datasets and jobs.

:class:`~sclib.transfers.receive.Receiver` takes the bytes of every upload
protocol (one request, large-file chunks, tus), verifies them and commits each
file into its dataset folder. :class:`UploadManager` adds what the server knows
and the engine does not: which dataset an upload goes to (as the original upload
API chose it), the dataset's record, and the ``upload`` job (with an extraction
job after it for an archive) enqueued when a file is committed.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from sclib.backends.base import JobFilter
from sclib.datasets import DatasetStore, canonical_uuid, find_dataset
from sclib.datasets.fields import DatasetFields
from sclib.datasets.records import dataset_owner, ensure_dataset, mark
from sclib.errors import InvalidInput, NotFound, UploadConflict
from sclib.jobs.queue import JobQueue
from sclib.jobtypes import DatasetStatus, JobType
from sclib.models.dataset import is_dataset_uuid, uuid_spellings
from sclib.pipeline.extract import is_archive
from sclib.transfers.receive import Receiver
from sclib.transfers.receive_base import (
    _PREFIX,
    LARGE,
    MAX_CHUNKS,
    STANDARD,
    TUS,
    Upload,
    UploadNotFound,
)
from sclib.transfers.sessions import SessionStore

__all__ = [
    "LARGE",
    "MAX_CHUNKS",
    "STANDARD",
    "TUS",
    "Upload",
    "UploadManager",
    "UploadNotFound",
]

log = logging.getLogger(__name__)


class UploadManager(Receiver):
    """The receive engine with datasets and jobs; see the module docstring.

    :param queue: where the ``upload`` job of a finished upload goes.
    :param datasets: the dataset records (without them, the jobs that name a
        dataset tell which datasets exist and whose they are).

    Every other argument is :class:`~sclib.transfers.receive.Receiver`'s.
    """

    def __init__(
        self,
        sessions: SessionStore,
        queue: JobQueue,
        data_dir: Path,
        *,
        datasets: DatasetStore | None = None,
        **options: Any,
    ) -> None:
        super().__init__(sessions, data_dir, **options)
        self.queue = queue
        self.datasets = datasets

    def resolve_dataset(self, fields: DatasetFields, owner: str, admin: bool) -> str:
        """The dataset an upload goes to, as the original upload API chose it.

        * ``add_to_existing`` with ``dataset_identifier``: an existing dataset of
          the caller's (any owner's for an admin), named by uuid with or without
          dashes, numeric id, slug or name (:func:`~sclib.datasets.find_dataset`);
          :class:`NotFound` if there is none.
        * ``dataset_identifier`` alone: the new dataset's identifier (a uuid in
          any spelling is kept as 32 hex digits). The original's clients send the
          same identifier for every file of a folder, so a dataset that exists
          under it already is added to, if it is the caller's.
        * Neither: a new dataset with a new uuid.
        """
        identifier = fields.dataset_identifier
        if fields.add_to_existing:
            if not identifier:
                raise InvalidInput(
                    "dataset_identifier: field required when add_to_existing is true"
                )
            found = self._find_dataset(identifier, None if admin else owner)
            if found is None:
                raise NotFound(f"Dataset not found: {identifier}")
            return found
        if not identifier:
            return uuid.uuid4().hex
        wanted = canonical_uuid(identifier)
        if not is_dataset_uuid(wanted):
            raise InvalidInput(
                f"dataset_identifier: {identifier!r} cannot name a new dataset: use a "
                "uuid, or letters, digits, '.', '_' and '-' (starting with a letter "
                "or digit, at most 128); to add to an existing dataset by name or "
                "slug, send add_to_existing=true"
            )
        taken = self._find_dataset(wanted, None)
        if taken is None:
            return wanted
        if admin or self._owner_of(taken) == owner:
            return taken  # the next file of a folder the original client sends
        raise UploadConflict(
            f"dataset_identifier: {identifier!r} is another user's dataset; choose "
            "another identifier"
        )

    def _find_dataset(self, identifier: str, owner: str | None) -> str | None:
        """The uuid of the dataset ``identifier`` names (``owner``'s only)."""
        if self.datasets is not None:
            found = find_dataset(self.datasets, identifier, owner)
            return found.uuid if found is not None else None
        # no dataset records: the jobs that name the dataset tell
        for candidate in uuid_spellings(identifier):
            jobs = self.queue.list(dataset_uuid=candidate, limit=1)
            if jobs and (owner is None or jobs[0].owner == owner):
                return candidate
        return None

    def _owner_of(self, dataset_uuid: str) -> str | None:
        if self.datasets is not None:
            return dataset_owner(self.datasets, dataset_uuid)
        jobs = self.queue.list(dataset_uuid=dataset_uuid, limit=1)
        return jobs[0].owner if jobs else None

    def register(self, dataset_uuid: str, owner: str, fields: DatasetFields) -> None:
        """Make sure the dataset has a record, and say its upload is queued."""
        if self.datasets is None:
            return
        record = ensure_dataset(
            self.datasets, dataset_uuid, owner, fields.to_parameters()
        )
        # another file of the dataset may be uploading already: the dataset is
        # in its upload phase either way, and may not go back to 'upload queued'
        if record.status not in (DatasetStatus.UPLOAD_QUEUED, DatasetStatus.UPLOADING):
            mark(self.datasets, dataset_uuid, DatasetStatus.UPLOAD_QUEUED)

    def committed(
        self, upload: Upload, relative: PurePosixPath, digests: Mapping[str, str]
    ) -> dict[str, Any]:
        """Record the dataset and enqueue the ``upload`` job (and, for an
        archive, the extraction after it); idempotent through the jobs'
        idempotency keys."""
        answer = super().committed(upload, relative, digests)
        assert upload.fields is not None and upload.dataset_uuid is not None
        key = _PREFIX + upload.id
        if not self.queue.store.list_jobs(JobFilter(idempotency_key=key), limit=1):
            # once: a completion repaired after a crash finds its job, whose
            # dataset may have moved on (registering again would send it back
            # to 'upload queued' with no job to move it forward)
            self.register(upload.dataset_uuid, upload.owner, upload.fields)
        archive = is_archive(self.dataset_dir(upload.dataset_uuid) / relative)
        record = {
            "path": relative.as_posix(),
            "size": upload.size,
            "blake3": digests["blake3"],
        }
        job = self.queue.enqueue(
            JobType.UPLOAD,
            {
                "source": "upload",
                "upload_id": upload.id,
                "protocol": upload.protocol,
                "files": [record],
                "dataset": upload.fields.to_parameters(),
                "extract": archive,
            },
            dataset_uuid=upload.dataset_uuid,
            owner=upload.owner,
            idempotency_key=key,
        )
        extraction = None
        if archive:  # unpacked once the upload job has verified it
            extraction = self.queue.enqueue(
                JobType.FILE_EXTRACTION,
                {"archive": relative.as_posix()},
                dataset_uuid=upload.dataset_uuid,
                owner=upload.owner,
                depends_on=[job.id],
                idempotency_key=f"extract:{upload.id}",
            )
        log.info("upload %s queued as job %s", upload.id, job.id)
        return {
            **answer,
            "extraction_job_id": extraction.id if extraction else None,
            "job_id": job.id,
            "status": job.status.value,
        }
