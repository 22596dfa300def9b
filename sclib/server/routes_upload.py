"""The seed's upload routes: ``/api/upload/...`` and the large-file chunk protocol.

Same paths, field names, response keys and status codes as ScientistCloud's
upload API, over the new engine: bodies stream to disk, state lives in the
backend, ids never change, unknown ids are 404, identity comes from the token.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

import sclib
from sclib.errors import (
    InvalidInput,
    JobNotFound,
    SclibError,
)
from sclib.jobtypes import JobType, SensorType
from sclib.models import Job
from sclib.server.app import (
    IdentityDep,
    ServerState,
    StateDep,
    owner_filter,
    visible_job,
)
from sclib.server.auth import Identity
from sclib.server.common import (
    MULTIPART_SLACK,
    DatasetBody,
    check_length,
    resolve_fields,
)
from sclib.server.fields import DatasetFields, looks_like_email, parse_fields
from sclib.server.handlers import import_spec, supported_sources
from sclib.server.staging import Hashers, StagedWrite
from sclib.server.streaming import Sink, receive_multipart
from sclib.server.uploads import STANDARD, Upload

__all__ = ["router"]

log = logging.getLogger(__name__)

router = APIRouter()

_FIELD_NAMES = set(DatasetFields.model_fields)
_ASSUMED_RATE = 50 * 1000**2  # bytes/s for estimates: a conservative network


def _form_schema() -> dict[str, Any]:
    """The multipart body of the one-request routes, for the OpenAPI docs (the
    route parses the body itself, as a stream)."""
    props: dict[str, Any] = {"file": {"type": "string", "format": "binary"}}
    for name, field in DatasetFields.model_fields.items():
        props[name] = {"type": "string", "description": field.description or ""}
    props["sensor"]["enum"] = [s.value for s in SensorType]
    props["tags"]["description"] = "comma-separated"
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "title": "UploadForm",
                        "required": ["file", "dataset_name", "sensor"],
                        "properties": props,
                    }
                }
            },
        }
    }


def _estimate(size: int) -> float:
    return round(1.0 + size / _ASSUMED_RATE, 1)


def _upload_type(state: ServerState, size: int) -> str:
    return "standard" if size <= state.settings.standard_upload_limit else "chunked"


# -- service ------------------------------------------------------------------------


@router.get("/", tags=["service"])
def root() -> dict[str, Any]:
    """What this server is and where to start."""
    return {
        "service": "sclib upload and job API",
        "version": sclib.__version__,
        "docs": "/docs",
        "endpoints": {
            "upload": "/api/upload/upload",
            "large_files": "/api/upload/large/initiate",
            "tus": "/files/",
            "jobs": "/api/v1/jobs",
            "datasets": "/api/v1/datasets",
            "monitor": "/api/v1/monitor/overview",
            "metrics": "/metrics",
            "status_page": "/ui/",
            "health": "/health",
        },
    }


@router.get("/health", tags=["service"])
def health(request: Request) -> JSONResponse:
    """Whether the backend answers and the in-process worker (if any) runs."""
    state: ServerState = request.app.state.sclib
    body: dict[str, Any] = {"status": "healthy", "version": sclib.__version__}
    try:
        body["queue"] = state.queue.stats()["by_status"]
    except SclibError as exc:
        body.update(status="unhealthy", error=str(exc))
    if state.worker is not None:
        body["worker"] = {"id": state.worker.worker_id}
    return JSONResponse(body, status_code=200 if body["status"] == "healthy" else 503)


@router.get("/health/large-files", tags=["service"])
def health_large(request: Request) -> dict[str, Any]:
    """The large-file protocol's limits and how many uploads are in progress."""
    import shutil

    state: ServerState = request.app.state.sclib
    free = shutil.disk_usage(state.uploads.staging_root).free
    return {
        "status": "healthy",
        "active_uploads": state.uploads.active_count(),
        "max_file_size": state.settings.max_upload_size,
        "chunk_size": state.settings.chunk_size,
        "staging_free_bytes": free,
    }


# -- one-request uploads ---------------------------------------------------------------


_IDEMPOTENCY_KEY = re.compile(r"[A-Za-z0-9._:-]{1,200}")


def _idempotency_key(request: Request) -> str | None:
    """The request's ``Idempotency-Key`` header, checked; ``None`` if absent."""
    value = request.headers.get("idempotency-key")
    if value is None:
        return None
    if not _IDEMPOTENCY_KEY.fullmatch(value):
        raise InvalidInput(
            "Idempotency-Key: 1 to 200 characters of letters, digits and . _ : -"
        )
    return value


class _Digest:
    """A sink that only hashes: the body of a request sent again."""

    def __init__(self) -> None:
        self.hashers = Hashers({"blake3"})
        self.written = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.hashers.update(memoryview(data))
        self.written += len(data)


async def _single_upload(
    request: Request, state: ServerState, identity: Identity
) -> dict[str, Any]:
    check_length(request, state.settings.max_upload_size + MULTIPART_SLACK)
    uploads = state.uploads
    holder: dict[str, Any] = {}
    key = _idempotency_key(request)
    earlier = (
        await run_in_threadpool(uploads.find_idempotent, identity.email, key)
        if key
        else None
    )
    if earlier is not None:
        return await _sent_again(request, state, identity, earlier)

    async def open_sink(filename: str | None, seen: dict[str, str]) -> Sink:
        email = seen.get("user_email", "").strip()
        if looks_like_email(email):  # refuse another user's early, before the bytes
            state.auth.check_user_email(identity, email)
        upload = await run_in_threadpool(
            uploads.create,
            protocol=STANDARD,
            owner=identity.email,
            filename=filename or "",
            size=None,
            fields=None,
            dataset_uuid=None,
            idempotency_key=key,
        )
        holder["upload"] = upload
        write = await run_in_threadpool(uploads.begin_single, upload.id)
        holder["write"] = write
        return write

    try:
        form = await receive_multipart(
            request.stream(), request.headers.get("content-type", ""), "file", open_sink
        )
        unknown = sorted(set(form.fields) - _FIELD_NAMES)
        if unknown:
            raise InvalidInput(f"{', '.join(unknown)}: unknown field(s)")
        fields, owner, dataset_uuid = resolve_fields(state, identity, dict(form.fields))
        write: StagedWrite = holder["write"]
        await run_in_threadpool(write.finish)
        upload: Upload = holder["upload"]
        digest = write.hashers.hexdigest("blake3")
        write.close()
        await run_in_threadpool(
            uploads.set_fields,
            upload.id,
            fields,
            dataset_uuid,
            upload.filename,
            length=write.written,
            owner=owner,
        )
        result = await run_in_threadpool(
            uploads.complete, upload.id, None, digests={"blake3": digest}
        )
    except BaseException:  # any failure (disk full, disconnect): leave nothing
        if "write" in holder:
            holder["write"].close()  # idempotent; releases the lock
        if "upload" in holder:
            uploads.discard(holder["upload"].id)  # not awaited: may be cancelled
        raise
    return _single_answer(state, upload.id, upload.filename, result)


def _single_answer(
    state: ServerState, upload_id: str, filename: str, result: Mapping[str, Any]
) -> dict[str, Any]:
    size = int(result["file_size"])
    return {
        "job_id": result["job_id"],
        "status": result["status"],
        "message": f"Upload of {filename} received; job {result['job_id']} "
        "verifies and records it",
        "estimated_duration": _estimate(size),
        "upload_type": _upload_type(state, size),
        "dataset_uuid": result["dataset_uuid"],
        "upload_id": upload_id,
        "file_blake3": result["file_blake3"],
        "file_size": size,
    }


async def _sent_again(
    request: Request, state: ServerState, identity: Identity, earlier: Upload
) -> dict[str, Any]:
    """A request whose ``Idempotency-Key`` names an upload already committed
    (its answer was lost): the body is read and hashed, not stored, and if it
    is the same file for the same dataset fields, the first answer is given
    again; else 422."""
    sink = _Digest()

    async def open_sink(filename: str | None, seen: dict[str, str]) -> Sink:
        if (filename or "") != earlier.filename:
            raise InvalidInput(
                f"Idempotency-Key was used for {earlier.filename!r}, not "
                f"{filename!r}; send another file with another key"
            )
        return sink

    form = await receive_multipart(
        request.stream(), request.headers.get("content-type", ""), "file", open_sink
    )
    unknown = sorted(set(form.fields) - _FIELD_NAMES)
    if unknown:
        raise InvalidInput(f"{', '.join(unknown)}: unknown field(s)")
    fields = parse_fields(dict(form.fields))
    state.auth.check_user_email(identity, fields.user_email)
    result = earlier.result or {}
    if (
        fields != earlier.fields
        or sink.hashers.hexdigest("blake3") != result.get("file_blake3")
        or sink.written != result.get("file_size")
    ):
        raise InvalidInput(
            "Idempotency-Key was used for another file or other dataset fields "
            f"(upload {earlier.id}); send this one with another key"
        )
    try:
        job = await run_in_threadpool(state.uploads.queue.get, result["job_id"])
        now = {**result, "status": job.status.value}  # where the job is now
    except JobNotFound:  # cleaned up since: the status it was given
        now = dict(result)
    return _single_answer(state, earlier.id, earlier.filename, now)


@router.post("/api/upload/upload", tags=["upload"], openapi_extra=_form_schema())
async def upload(
    request: Request, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """One multipart request: a ``file`` part and the dataset fields.

    The body streams to the data folder as it arrives; the job verifies the
    stored file and records it in the dataset. With an ``Idempotency-Key``
    header, the same request sent again after its answer was lost gets the first
    answer and the file is stored once."""
    return await _single_upload(request, state, identity)


@router.post("/api/upload/local/upload", tags=["upload"], openapi_extra=_form_schema())
async def upload_local(
    request: Request, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """The seed's name for :func:`upload` (same fields, same answer)."""
    return await _single_upload(request, state, identity)


class InitiateRequest(DatasetBody):
    """A server-side import (the seed's ``/api/upload/initiate`` body)."""

    source_type: str
    source_config: dict[str, Any] = Field(default_factory=dict)


@router.post("/api/upload/initiate", tags=["upload"])
def initiate(
    body: InitiateRequest,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Import from ``s3``, ``gcs``, ``google_drive`` or ``url`` on the server.

    Credentials in ``source_config`` are sealed with the server's SECRET_KEY before
    they are stored, and never returned."""
    from sclib.server.handlers import split_config

    values = body.dataset_values()
    fields, owner, dataset_uuid = resolve_fields(state, identity, values)
    spec = import_spec(body.source_type, body.source_config)
    if spec.source_type == "url" and not state.settings.allow_private_addresses:
        from sclib.transfers.ssrf import AddressPolicy

        AddressPolicy().check_url(spec.url)
    endpoint = spec.options.get("endpoint_url")
    allowed = state.settings.import_endpoint_list()
    if endpoint and not identity.is_admin and endpoint.rstrip("/") not in allowed:
        from sclib.errors import Forbidden

        raise Forbidden(
            f"source_config.endpoint_url: {endpoint!r} is not an endpoint this "
            "server imports from (the operator lists them in SCLIB_IMPORT_ENDPOINTS)"
        )
    public, secret = split_config(body.source_config)
    sealed = None
    if secret:
        from sclib.server.secrets import SecretBox

        key = state.settings.secret_key
        if key is None:
            raise InvalidInput(
                "source_config carries credentials, but this server has no "
                "SECRET_KEY to seal them with; ask the operator to set one"
            )
        sealed = SecretBox(key.get_secret_value()).seal(secret)
    state.uploads.register(dataset_uuid, owner, fields)
    job = state.queue.enqueue(
        JobType.UPLOAD,
        {
            "source": "import",
            "source_type": spec.source_type,
            "source_config": public,
            "sealed": sealed,
            "dataset": fields.to_parameters(),
        },
        dataset_uuid=dataset_uuid,
        owner=owner,
    )
    return {
        "job_id": job.id,
        "status": job.status.value,
        "message": f"Import from {spec.source_type} queued",
        "estimated_duration": None,
        "upload_type": spec.source_type,
        "dataset_uuid": dataset_uuid,
    }


class UploadPathRequest(DatasetBody):
    """``POST /api/upload/upload-path``: a file or folder already on the server."""

    file_path: str


@router.post("/api/upload/upload-path", tags=["upload"])
def upload_path(
    body: UploadPathRequest,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Ingest a file or folder that is already on the server's disk.

    Off unless the operator lists allowed folders in ``SCLIB_UPLOAD_PATH_ROOTS``;
    then only paths inside them (symbolic links resolved) are accepted."""
    from sclib.server.handlers import check_server_path

    roots = state.settings.upload_path_root_list()
    path = check_server_path(body.file_path, roots)
    values = body.dataset_values()
    fields, owner, dataset_uuid = resolve_fields(state, identity, values)
    state.uploads.register(dataset_uuid, owner, fields)
    job = state.queue.enqueue(
        JobType.UPLOAD,
        {
            "source": "import",
            "source_type": "server_path",
            "source_config": {"path": str(path)},
            "sealed": None,
            "dataset": fields.to_parameters(),
        },
        dataset_uuid=dataset_uuid,
        owner=owner,
    )
    return {
        "job_id": job.id,
        "status": job.status.value,
        "message": f"Import of {path.name} queued",
        "estimated_duration": None,
        "upload_type": "server_path",
        "dataset_uuid": dataset_uuid,
    }


# -- jobs as the seed shows them -------------------------------------------------------


def upload_status(job: Job) -> dict[str, Any]:
    """The seed's status body for a job."""
    progress = job.progress
    total = progress.bytes_total
    result = job.result if isinstance(job.result, dict) else {}
    if total is None and isinstance(result.get("bytes"), int):
        total = result["bytes"]
    if total is None:
        files = job.parameters.get("files") or []
        total = sum(int(f.get("size", 0)) for f in files) if files else None
    done = progress.bytes_done
    if job.parameters.get("source") == "upload":
        done = total  # every byte is on the server; the job verifies them
    pct = progress.percentage
    if job.status.value == "completed":
        pct, done = 100.0, total if total is not None else done
    message = (
        progress.message
        or {
            "pending": "queued",
            "running": "in progress",
            "completed": "completed",
            "failed": "failed",
            "cancelled": "cancelled",
        }[job.status.value]
    )
    return {
        "job_id": job.id,
        "status": job.status.value,
        "progress_percentage": round(pct or 0.0, 2),
        "bytes_uploaded": done or 0,
        "bytes_total": total,
        "message": message,
        "error": job.error,
        "current_file": progress.message or None,
        "job_type": job.type,
        "dataset_uuid": job.dataset_uuid,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
    }


@router.get("/api/upload/status/{job_id}", tags=["upload"])
def status(
    job_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Progress of an upload or import job; 404 for unknown (or others') ids."""
    return upload_status(visible_job(state, identity, job_id))


@router.post("/api/upload/cancel/{job_id}", tags=["upload"])
def cancel(
    job_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Cancel a pending or running job (409 if it already finished)."""
    from sclib.pipeline.flow import after_cancel

    visible_job(state, identity, job_id)
    job = state.queue.cancel(job_id, "cancelled by the user")
    after_cancel(state.queue, state.datasets, job)
    return {
        "job_id": job.id,
        "status": job.status.value,
        "message": "cancelled" if job.status.value == "cancelled" else "cancelling",
    }


@router.get("/api/upload/jobs", tags=["upload"])
def jobs(
    user_id: str | None = None,
    status: str | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The caller's upload jobs (admins: anyone's, or ``user_id``'s)."""
    owner = owner_filter(identity)
    if user_id:
        wanted = user_id.strip().lower()
        if owner is not None and wanted != owner:
            from sclib.errors import Forbidden

            raise Forbidden("user_id: you may list only your own jobs")
        owner = wanted
    found = state.queue.list(
        status=status, job_type=JobType.UPLOAD, owner=owner, limit=limit, offset=offset
    )
    return {
        "jobs": [upload_status(j) for j in found],
        "count": len(found),
        "limit": limit,
        "offset": offset,
    }


@router.get("/api/upload/supported-sources", tags=["upload"])
def sources() -> dict[str, Any]:
    """Import sources with their ``source_config`` keys, and the sensor names."""
    return {
        "sources": {"local": {"fields": ["file"], "required": ["file"]}}
        | supported_sources(),
        "sensors": [s.value for s in SensorType],
        "upload_types": ["standard", "chunked", "tus"],
    }


@router.get("/api/upload/limits", tags=["upload"])
@router.get("/api/upload/large/limits", tags=["large files"])
def limits(state: ServerState = StateDep) -> dict[str, Any]:
    """Size limits and the chunk size this server hands out."""
    s = state.settings
    return {
        "max_file_size": s.max_upload_size,
        "standard_upload_limit": s.standard_upload_limit,
        "chunk_size": s.chunk_size,
        "max_chunk_size": s.max_chunk_size,
        "upload_expiry_hours": s.upload_expiry_hours,
        "tus_endpoint": "/files/",
        "checksums": ["sha256", "blake3"],
    }


@router.get("/api/upload/estimate-time", tags=["upload"])
def estimate_time(
    file_size: int = Query(..., ge=0), state: ServerState = StateDep
) -> dict[str, Any]:
    """A rough duration for a file of ``file_size`` bytes (at 50 MB/s)."""
    chunk = state.settings.chunk_size
    return {
        "file_size": file_size,
        "upload_type": _upload_type(state, file_size),
        "estimated_seconds": _estimate(file_size),
        "chunk_size": chunk,
        "total_chunks": max(1, -(-file_size // chunk)),
    }
