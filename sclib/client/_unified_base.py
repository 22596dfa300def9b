"""What the two drop-ins for the original ScientistCloud "Unified" client share.

:class:`~sclib.client.ScientistCloudUploadClient` and
:class:`~sclib.client.AsyncScientistCloudUploadClient` take the original
client's arguments, in its order, and return its shapes. Neither sends a byte
itself: each wraps an sclib :class:`~sclib.client.Client` (or
:class:`~sclib.client.AsyncClient`) and hands it the requests
(:class:`~sclib.client._steps.Call`) and flows (generators of steps) built here,
so that the twins differ only in blocking or awaiting, as ``Client`` and
``AsyncClient`` do. A file upload is sclib's own flow (one streamed request, or
parallel BLAKE3-verified chunks that resume), with the original arguments
mapped onto sclib's options.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sclib.errors import InvalidInput

from ._base import BaseClient
from ._errors import ServerError, WaitTimeout
from ._options import UploadOptions, form_fields
from ._requests import _seg
from ._steps import Call, Flow, Sleep
from .models import FINISHED_STATUSES, JobStatus, UploadResult

__all__ = [
    "ORIGINAL_BASE_URL",
    "ORIGINAL_TIMEOUT",
    "Fields",
    "UnifiedBase",
]

log = logging.getLogger("sclib.client.unified")

#: The original client's defaults.
ORIGINAL_BASE_URL = "http://localhost:5000"
ORIGINAL_TIMEOUT = 300

#: sclib's own job status words, shown as the original's.
_STATUS_WORDS = {"pending": "queued", "running": "processing"}

ProgressCallback = Callable[[float], object]


@dataclass(frozen=True)
class Fields:
    """The dataset fields every original upload method takes, in its order."""

    user_email: str
    dataset_name: str
    sensor: str
    convert: bool = True
    is_public: bool = False
    folder: str | None = None
    team_uuid: str | None = None

    def options(self) -> UploadOptions:
        """sclib's upload options. Like the original, an empty ``folder`` or
        ``team_uuid`` is not sent."""
        return UploadOptions(
            user_email=self.user_email,
            dataset_name=self.dataset_name,
            sensor=self.sensor,
            convert=self.convert,
            is_public=self.is_public,
            folder=self.folder or None,
            team_uuid=self.team_uuid or None,
        )

    def body(self, *, with_nulls: bool = False) -> dict[str, Any]:
        """The JSON fields of ``/api/upload/initiate``. The ``initiate_*``
        methods leave an unset ``folder``/``team_uuid`` out; ``upload_from_source``
        sends them as ``null`` (``with_nulls``), as the original did."""
        body: dict[str, Any] = {
            "user_email": self.user_email,
            "dataset_name": self.dataset_name,
            "sensor": self.sensor,
            "convert": self.convert,
            "is_public": self.is_public,
        }
        for key in ("folder", "team_uuid"):
            value = getattr(self, key)
            if value or with_nulls:
                body[key] = value
        return body


class _Fraction:
    """Passes a file's progress (0..1) to the caller's callback, mapped onto
    ``start + width * fraction``; ``finish`` reports the end if the transfer
    did not (an empty file, or a callback the flow never called)."""

    def __init__(
        self, callback: ProgressCallback, start: float = 0.0, width: float = 1.0
    ) -> None:
        self._callback = callback
        self._start = start
        self._width = width
        self._last = -1.0

    def __call__(self, fraction: float) -> None:
        self._last = fraction
        self._callback(self._start + self._width * fraction)

    def finish(self) -> None:
        if self._last < 1.0:
            self(1.0)


class UnifiedBase:
    """Configuration, requests and flows of the drop-ins; no I/O.

    ``client`` is the sclib client the twin wraps; it sends the requests and
    runs the flows.
    """

    client: BaseClient

    def __init__(self, base_url: str, timeout: Any, token: str | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token if token is not None else os.environ.get("SCLIB_TOKEN")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    # -- requests --------------------------------------------------------------------

    def _status_call(self, job_id: str) -> Call[JobStatus]:
        return Call(
            "GET",
            f"/api/upload/status/{_seg(job_id)}",
            _job_status,
            context={"job_id": job_id},
        )

    def _json_call(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None = None,
        context: Mapping[str, str] | None = None,
    ) -> Call[dict[str, Any]]:
        """A request whose answer is returned as the server's JSON object."""
        return Call(method, path, _json_object, params=params, context=context or {})

    def _cancel_call(self, job_id: str) -> Call[dict[str, Any]]:
        path = f"/api/upload/cancel/{_seg(job_id)}"
        return self._json_call("POST", path, context={"job_id": job_id})

    def _jobs_call(
        self, user_email: str, status: str | None, limit: int, offset: int
    ) -> Call[dict[str, Any]]:
        params = {"user_id": user_email, "limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return self._json_call("GET", "/api/upload/jobs", params)

    def _initiate_call(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        fields: Fields,
        *,
        with_nulls: bool = False,
    ) -> Call[UploadResult]:
        body = {
            "source_type": source_type,
            "source_config": dict(source_config),
            **fields.body(with_nulls=with_nulls),
        }
        return Call("POST", "/api/upload/initiate", _upload_result, json=body)

    def _google_drive_call(
        self, file_id: str, service_account_file: str, fields: Fields
    ) -> Call[UploadResult]:
        # a path on the server, sent as it is (sclib's Client sends the content)
        config = {"file_id": file_id, "service_account_file": service_account_file}
        return self._initiate_call("google_drive", config, fields)

    def _s3_call(
        self,
        bucket_name: str,
        object_key: str,
        access_key_id: str,
        secret_access_key: str,
        fields: Fields,
    ) -> Call[UploadResult]:
        config = {
            "bucket_name": bucket_name,
            "object_key": object_key,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
        }
        return self._initiate_call("s3", config, fields)

    def _url_call(self, url: str, fields: Fields) -> Call[UploadResult]:
        return self._initiate_call("url", {"url": url}, fields)

    def _source_call(
        self, source_type: str, source_config: Mapping[str, Any], fields: Fields
    ) -> Call[UploadResult]:
        return self._initiate_call(source_type, source_config, fields, with_nulls=True)

    # -- flows -----------------------------------------------------------------------

    def _upload_file_flow(
        self,
        file_path: str | os.PathLike[str],
        fields: Fields,
        dataset_identifier: str | None,
        add_to_existing: bool,
        progress_callback: ProgressCallback | None,
    ) -> Flow[UploadResult]:
        path = os.fspath(file_path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"File not found: {path}")
        options = fields.options()
        options["dataset_identifier"] = dataset_identifier or None
        options["add_to_existing"] = add_to_existing
        return (yield from self._one_file(path, options, progress_callback))

    def _one_file(
        self,
        path: str,
        options: UploadOptions,
        progress_callback: ProgressCallback | _Fraction | None,
    ) -> Flow[UploadResult]:
        fraction = (
            progress_callback
            if progress_callback is None or isinstance(progress_callback, _Fraction)
            else _Fraction(progress_callback)
        )
        options["progress_callback"] = fraction
        result = yield from self.client._upload_flow(path, options)
        if fraction is not None:
            fraction.finish()
        return _legacy_result(result)

    def _upload_path_flow(
        self,
        file_path: str,
        fields: Fields,
        dataset_uuid: str | None,
        progress_callback: ProgressCallback | None,
    ) -> Flow[UploadResult]:
        options = fields.options()
        if dataset_uuid:
            # the original sent dataset_uuid, which no server read; it means
            # "into this dataset", which the servers spell so
            options["dataset_identifier"] = dataset_uuid
            options["add_to_existing"] = True
        values = {k: v for k, v in options.items() if v is not None}
        form = {"file_path": file_path, **form_fields(values)}
        result: UploadResult = yield Call(
            "POST", "/api/upload/upload-path", _upload_result, data=form
        )
        if progress_callback is not None:
            progress_callback(1.0)
        return result

    def _directory_flow(
        self,
        directory_path: str | os.PathLike[str],
        fields: Fields,
        progress_callback: ProgressCallback | None,
    ) -> Flow[list[UploadResult]]:
        root = Path(directory_path)
        if not root.exists():
            raise FileNotFoundError(f"Directory not found: {directory_path}")
        if not root.is_dir():
            raise InvalidInput(f"Path is not a directory: {directory_path}")
        files = sorted(
            (p for p in root.rglob("*") if p.is_file()),
            key=lambda p: p.relative_to(root).as_posix(),
        )
        if not files:
            raise InvalidInput(f"No files found in directory: {directory_path}")
        sizes = [p.stat().st_size for p in files]
        total = sum(sizes)
        log.info("uploading %d files of %s into one dataset", len(files), root)
        # one new dataset for the folder: the first file that arrives creates it
        # under this identifier, the others are added to it
        identifier = str(uuid.uuid4())
        dataset: str | None = None
        done = 0
        results: list[UploadResult] = []
        for n, (path, size) in enumerate(zip(files, sizes, strict=True)):
            rel = path.relative_to(root)
            sub = rel.parent.as_posix() if rel.parent != Path(".") else None
            options = fields.options()
            options["folder"] = sub  # as the original: the file's subfolder
            options["relative_path"] = sub  # and the file goes there
            options["dataset_identifier"] = dataset or identifier
            options["add_to_existing"] = dataset is not None
            fraction = None
            if progress_callback is not None:
                start, width = _share(done, size, total, n, len(files))
                fraction = _Fraction(progress_callback, start, width)
            try:
                result = yield from self._one_file(str(path), options, fraction)
            except Exception as exc:  # a failed file is a result, as in the original
                log.warning("%s: upload failed: %s", rel.as_posix(), exc)
                result = UploadResult(
                    job_id="",
                    status="failed",
                    message=f"Failed to upload {rel.as_posix()}: {exc}",
                    upload_type="failed",
                )
            else:
                dataset = dataset or result.dataset_uuid or identifier
            results.append(result)
            done += size
        failed = sum(r.status == "failed" for r in results)
        log.info(
            "%s: %d files uploaded, %d failed", root, len(results) - failed, failed
        )
        return results

    def _directory_source_flow(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        fields: Fields,
        progress_callback: ProgressCallback | None,
    ) -> Flow[list[UploadResult]]:
        if source_type == "local":
            directory = source_config.get("directory_path")
            if not directory:
                raise InvalidInput(
                    "For local source type, 'directory_path' must be provided "
                    "in source_config"
                )
            return (
                yield from self._directory_flow(directory, fields, progress_callback)
            )
        if source_type in ("google_drive", "s3"):
            log.warning(
                "%s folder uploads are not implemented (nor were they in the "
                "original client): nothing was uploaded",
                source_type,
            )
            return []
        if source_type == "url":
            raise InvalidInput(
                "URL directory upload is not supported: a URL names one file; "
                "use initiate_url_upload"
            )
        raise InvalidInput(
            f"Directory upload not supported for source type: {source_type}"
        )

    def _wait_flow(
        self, job_id: str, timeout: float, poll_interval: float
    ) -> Flow[JobStatus]:
        if poll_interval < 0:
            raise InvalidInput(f"poll_interval must not be negative: {poll_interval}")
        deadline = time.monotonic() + timeout
        while True:
            status: JobStatus = yield self._status_call(job_id)
            if status.status in FINISHED_STATUSES:
                return status
            log.info(
                "Job %s: %s - %.1f%%", job_id, status.status, status.progress_percentage
            )
            left = deadline - time.monotonic()
            if left <= 0:
                raise WaitTimeout(
                    f"Upload job {job_id} did not complete within {timeout} seconds "
                    f"(it is {status.status})"
                )
            yield Sleep(min(poll_interval, left))


def _share(done: int, size: int, total: int, n: int, count: int) -> tuple[float, float]:
    """Where a folder's file starts in the folder's progress, and its width:
    by bytes, or by count when the folder's files are all empty."""
    if total:
        return done / total, size / total
    return n / count, 1 / count


def _word(status: str) -> str:
    return _STATUS_WORDS.get(status, status)


def _legacy_result(result: UploadResult) -> UploadResult:
    word = _word(result.status)
    return (
        result if word == result.status else result.model_copy(update={"status": word})
    )


def _upload_result(data: Any) -> UploadResult:
    return _legacy_result(UploadResult.model_validate(data))


def _job_status(data: Any) -> JobStatus:
    status = JobStatus.model_validate(data)
    word = _word(status.status)
    return (
        status if word == status.status else status.model_copy(update={"status": word})
    )


def _json_object(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ServerError(f"expected a JSON object, got {type(data).__name__}")
    return data
