"""Every route of the server as a :class:`~sclib.client._steps.Call`.

:class:`Requests` builds the request of each route (method, path, body, which
model parses the answer) without sending it; :class:`~sclib.client._base.BaseClient`
inherits it, so ``Client`` and ``AsyncClient`` send the same requests.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sclib.errors import InvalidInput
from sclib.transfers.hashing import CV_HASH, CV_PREFIX, blake3_hex

from ._options import FIELD_KEYS, check_keys, dataset_values
from ._steps import Call
from .models import (
    CancelResult,
    ChunkReceipt,
    CompleteResult,
    DatasetInfo,
    DatasetList,
    DatasetState,
    DownloadList,
    Health,
    JobInfo,
    JobList,
    LargeUpload,
    LargeUploadStatus,
    Limits,
    QueueStats,
    ResumeInfo,
    SupportedSources,
    TimeEstimate,
    UploadJobList,
    UploadResult,
    UploadStatus,
)

__all__ = ["Requests"]


class Requests:
    """The request of each route; no state, no I/O."""

    # -- simple requests -------------------------------------------------------------

    def _req_health(self) -> Call[Health]:
        return Call("GET", "/health", Health.model_validate)

    def _req_limits(self) -> Call[Limits]:
        return Call("GET", "/api/upload/limits", Limits.model_validate)

    def _req_sources(self) -> Call[SupportedSources]:
        return Call(
            "GET", "/api/upload/supported-sources", SupportedSources.model_validate
        )

    def _req_estimate(self, file_size: int) -> Call[TimeEstimate]:
        return Call(
            "GET",
            "/api/upload/estimate-time",
            TimeEstimate.model_validate,
            params={"file_size": file_size},
        )

    def _req_status(self, job_id: str) -> Call[UploadStatus]:
        return Call(
            "GET",
            f"/api/upload/status/{_seg(job_id)}",
            UploadStatus.model_validate,
            context={"job_id": job_id},
        )

    def _req_cancel(self, job_id: str) -> Call[CancelResult]:
        return Call(
            "POST",
            f"/api/upload/cancel/{_seg(job_id)}",
            CancelResult.model_validate,
            context={"job_id": job_id},
        )

    def _req_upload_jobs(
        self, user_id: str | None, status: str | None, limit: int, offset: int
    ) -> Call[UploadJobList]:
        params = {
            "user_id": user_id,
            "status": status,
            "limit": limit,
            "offset": offset,
        }
        return Call(
            "GET", "/api/upload/jobs", UploadJobList.model_validate, params=params
        )

    def _req_import(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        options: Mapping[str, Any],
        default_name: str,
    ) -> Call[UploadResult]:
        check_keys(options, FIELD_KEYS, f"initiate_{source_type}_upload")
        body = {
            "source_type": source_type,
            "source_config": {k: v for k, v in source_config.items() if v is not None},
            **dataset_values(options, default_name),
        }
        return Call(
            "POST", "/api/upload/initiate", UploadResult.model_validate, json=body
        )

    def _req_google_drive(
        self,
        file_id: str,
        service_account_file: str | os.PathLike[str] | None,
        service_account_json: str | Mapping[str, Any] | None,
        options: Mapping[str, Any],
    ) -> Call[UploadResult]:
        config: dict[str, Any] = {"file_id": file_id}
        if service_account_file is not None:
            try:
                text = Path(service_account_file).read_text(encoding="utf-8")
                service_account_json = json.loads(text)
            except OSError as exc:
                raise InvalidInput(
                    f"cannot read the service account file {service_account_file}: "
                    f"{exc.strerror or exc}"
                ) from exc
            except ValueError as exc:
                raise InvalidInput(
                    f"the service account file {service_account_file} is not JSON"
                ) from exc
        if service_account_json is not None:
            config["service_account_json"] = service_account_json
        return self._req_import("google_drive", config, options, f"drive-{file_id}")

    def _req_s3(
        self,
        bucket_name: str,
        object_key: str,
        secrets: tuple[str | None, str | None, str | None],
        where: tuple[str | None, str | None],
        options: Mapping[str, Any],
    ) -> Call[UploadResult]:
        access_key_id, secret_access_key, session_token = secrets
        region, endpoint_url = where
        config = {
            "bucket_name": bucket_name,
            "object_key": object_key,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
            "session_token": session_token,
            "region": region,
            "endpoint_url": endpoint_url,
        }
        name = object_key.rstrip("/").rsplit("/", 1)[-1] or bucket_name
        return self._req_import("s3", config, options, name)

    def _req_url(self, url: str, options: Mapping[str, Any]) -> Call[UploadResult]:
        name = url.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1] or "download"
        return self._req_import("url", {"url": url}, options, name)

    # -- the large-file protocol -----------------------------------------------------

    def _req_large(
        self,
        filename: str,
        file_size: int,
        chunk_size: int | None,
        options: Mapping[str, Any],
    ) -> Call[LargeUpload]:
        check_keys(options, FIELD_KEYS, "initiate_large_upload")
        values = dataset_values(options, filename)
        return self._req_large_initiate(filename, file_size, values, chunk_size)

    def _req_large_initiate(
        self,
        filename: str,
        file_size: int,
        values: Mapping[str, Any],
        chunk_size: int | None,
    ) -> Call[LargeUpload]:
        body: dict[str, Any] = {"filename": filename, "file_size": file_size, **values}
        if chunk_size is not None:
            if chunk_size <= 0:
                raise InvalidInput(f"chunk_size must be positive, got {chunk_size}")
            body["chunk_size"] = chunk_size
        return Call(
            "POST", "/api/upload/large/initiate", LargeUpload.model_validate, json=body
        )

    def _req_chunk(
        self,
        upload_id: str,
        index: int,
        data: bytes | bytearray | memoryview,
        digest: str | None = None,
    ) -> Call[ChunkReceipt]:
        digest = digest or blake3_hex(data)
        if digest.startswith(CV_PREFIX):  # the chunk's chaining value
            header = f"{CV_HASH}:{digest[len(CV_PREFIX) :]}"
        else:
            header = f"blake3:{digest}"
        return Call(
            "POST",
            f"/api/upload/large/chunk/{_seg(upload_id)}/{index}",
            ChunkReceipt.model_validate,
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Chunk-Hash": header,
            },
            context={"upload_id": upload_id},
        )

    def _req_large_status(self, upload_id: str) -> Call[LargeUploadStatus]:
        return Call(
            "GET",
            f"/api/upload/large/status/{_seg(upload_id)}",
            LargeUploadStatus.model_validate,
            context={"upload_id": upload_id},
        )

    def _req_resume(self, upload_id: str) -> Call[ResumeInfo]:
        return Call(
            "GET",
            f"/api/upload/large/resume/{_seg(upload_id)}",
            ResumeInfo.model_validate,
            context={"upload_id": upload_id},
        )

    def _req_complete(
        self, upload_id: str, file_blake3: str | None
    ) -> Call[CompleteResult]:
        return Call(
            "POST",
            f"/api/upload/large/complete/{_seg(upload_id)}",
            CompleteResult.model_validate,
            json={"file_blake3": file_blake3} if file_blake3 else None,
            context={"upload_id": upload_id},
        )

    def _req_large_cancel(self, upload_id: str) -> Call[dict[str, Any]]:
        return Call(
            "DELETE",
            f"/api/upload/large/cancel/{_seg(upload_id)}",
            _as_dict,
            context={"upload_id": upload_id},
        )

    # -- the jobs API ----------------------------------------------------------------

    def _req_submit_job(
        self,
        job_type: str,
        parameters: Mapping[str, Any] | None,
        dataset_uuid: str | None,
        priority: int | None,
    ) -> Call[JobInfo]:
        body: dict[str, Any] = {
            "job_type": job_type,
            "parameters": dict(parameters or {}),
        }
        if dataset_uuid is not None:
            body["dataset_uuid"] = dataset_uuid
        if priority is not None:
            body["priority"] = priority
        return Call("POST", "/api/v1/jobs", JobInfo.model_validate, json=body)

    def _req_list_jobs(
        self, status: str | None, job_type: str | None, limit: int, offset: int
    ) -> Call[JobList]:
        params = {
            "status": status,
            "job_type": job_type,
            "limit": limit,
            "offset": offset,
        }
        return Call("GET", "/api/v1/jobs", _parse_job_list, params=params)

    def _req_job(self, job_id: str, action: str = "") -> Call[JobInfo]:
        suffix = f"/{action}" if action else ""
        return Call(
            "POST" if action else "GET",
            f"/api/v1/jobs/{_seg(job_id)}{suffix}",
            JobInfo.model_validate,
            context={"job_id": job_id},
        )

    def _req_queue_stats(self) -> Call[QueueStats]:
        return Call("GET", "/api/v1/jobs/queue/stats", QueueStats.model_validate)

    # -- the datasets API ----------------------------------------------------------

    def _req_datasets(
        self, status: str | None, limit: int, offset: int
    ) -> Call[DatasetList]:
        params = {"status": status, "limit": limit, "offset": offset}
        return Call(
            "GET", "/api/v1/datasets", DatasetList.model_validate, params=params
        )

    def _req_dataset(self, uuid: str) -> Call[DatasetInfo]:
        return Call(
            "GET",
            f"/api/v1/datasets/{_seg(uuid)}",
            DatasetInfo.model_validate,
            context={"dataset_uuid": uuid},
        )

    def _req_dataset_state(self, uuid: str) -> Call[DatasetState]:
        return Call(
            "GET",
            f"/api/v1/datasets/{_seg(uuid)}/status",
            DatasetState.model_validate,
            context={"dataset_uuid": uuid},
        )

    def _req_reprocess(
        self,
        uuid: str,
        sensor: str | None,
        output_format: str | None,
        conversion_params: Mapping[str, Any] | None,
    ) -> Call[dict[str, Any]]:
        body: dict[str, Any] = {}
        if sensor is not None:
            body["sensor"] = sensor
        if output_format is not None:
            body["output_format"] = output_format
        if conversion_params is not None:
            body["conversion_params"] = dict(conversion_params)
        return Call(
            "POST",
            f"/api/v1/datasets/{_seg(uuid)}/reprocess",
            _as_dict,
            json=body,
            context={"dataset_uuid": uuid},
        )

    # -- downloads -------------------------------------------------------------------

    def _req_downloads(
        self, uuid: str, include_outputs: bool, limit: int, offset: int
    ) -> Call[DownloadList]:
        params = {
            "include_outputs": "true" if include_outputs else "false",
            "limit": limit,
            "offset": offset,
        }
        return Call(
            "GET",
            f"/api/v1/datasets/{_seg(uuid)}/downloads",
            DownloadList.model_validate,
            params=params,
            context={"dataset_uuid": uuid},
        )

    def _req_fetch(
        self, uuid: str, kind: str, path: str, headers: Mapping[str, str]
    ) -> Call[None]:
        """``GET`` one file (``kind`` ``file`` or ``output``); a :class:`Fetch`
        streams its body, so it is never parsed."""
        from urllib.parse import quote

        folder = "outputs" if kind == "output" else "files"
        return Call(
            "GET",
            f"/api/v1/datasets/{_seg(uuid)}/{folder}/{quote(path, safe='/')}",
            _no_body,
            headers=headers,
            context={"dataset_uuid": uuid},
        )


def _no_body(data: Any) -> None:
    return None


def _seg(value: str) -> str:
    """``value`` as one URL path segment (ids never contain ``/``)."""
    from urllib.parse import quote

    if not value:
        raise InvalidInput("an id must not be empty")
    return quote(value, safe="")


def _as_dict(data: Any) -> dict[str, Any]:
    return dict(data) if isinstance(data, Mapping) else {}


def _parse_job_list(data: Any) -> JobList:
    if isinstance(data, list):
        return JobList(jobs=[JobInfo.model_validate(j) for j in data])
    return JobList.model_validate(data)
