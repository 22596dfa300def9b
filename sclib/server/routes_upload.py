"""The seed's upload routes: ``/api/upload/...`` (the large-file protocol is in
:mod:`.routes_large`).

These are the original ScientistCloud API's routes, answered as a superset of
what the original servers answered (:mod:`.legacy`): every original key, with its
meaning and type, and sclib's keys beside it; the original's status words
(``queued``, ``uploading``, ``processing``, ...) and status codes; unknown fields
ignored (logged at debug level), as the original did. Bodies stream to disk,
state lives in the backend, ids never change, identity comes from a token (or a
trusted client address). ``docs/compat.md`` lists every route and every
deliberate difference.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from sclib.datasets.fields import (
    BOOL_TEXT,
    FIELD_SCHEMAS,
    DatasetFields,
    looks_like_email,
    parse_fields,
    safe_filename,
)
from sclib.errors import (
    InvalidInput,
    JobNotFound,
    SclibError,
)
from sclib.jobtypes import JobType
from sclib.models import Job
from sclib.pipeline.upload import import_spec, supported_sources
from sclib.server import legacy
from sclib.server.auth import Identity
from sclib.server.common import (
    MAX_OFFSET,
    MULTIPART_SLACK,
    DatasetBody,
    check_length,
    known_fields,
    resolve_fields,
    small_body,
)
from sclib.server.deps import (
    IdentityDep,
    ServerState,
    StateDep,
    owner_filter,
    visible_job,
)
from sclib.server.streaming import Sink, batch_size, receive_multipart
from sclib.server.uploads import STANDARD, Upload
from sclib.transfers.staging import Hashers, StagedWrite

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
        props[name].update(FIELD_SCHEMAS.get(name, {}))
    for name in ("convert", "is_public", "is_public_downloadable", "add_to_existing"):
        props[name].update(BOOL_TEXT)
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
def root(request: Request) -> dict[str, Any]:
    """What this server is and where to start."""
    state: ServerState = request.app.state.sclib
    return legacy.root_document(state.settings)


@router.get("/health", tags=["service"])
def health(request: Request) -> JSONResponse:
    """Whether the backend answers and the in-process worker (if any) runs."""
    state: ServerState = request.app.state.sclib
    body = legacy.health_document(state.settings)
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
    staging = state.uploads.staging_root
    return legacy.large_health_document(
        state.settings,
        state.uploads.active_count(),
        staging,
        shutil.disk_usage(staging).free,
    )


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
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit():
        await run_in_threadpool(
            uploads.check_space, int(declared), f"a body of {int(declared):,} bytes"
        )
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
        size, exact = batch_size(declared)
        async with state.buffers.hold(size):
            form = await receive_multipart(
                request.stream(),
                request.headers.get("content-type", ""),
                "file",
                open_sink,
                batch=size,
                exact=exact,
            )
        fields, owner, dataset_uuid = resolve_fields(
            state, identity, known_fields(form.fields, request.url.path)
        )
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
    return _single_answer(state, upload.id, upload.filename, result, owner)


def _single_answer(
    state: ServerState,
    upload_id: str,
    filename: str,
    result: Mapping[str, Any],
    owner: str,
) -> dict[str, Any]:
    size = int(result["file_size"])
    kind = _upload_type(state, size)
    return {
        "job_id": result["job_id"],
        "status": legacy.status_word(result["status"]),
        "message": f"{kind.title()} upload initiated: {filename}",
        "estimated_duration": legacy.estimated_seconds(size),
        "upload_type": kind,
        "job_status": result["status"],
        "dataset_uuid": result["dataset_uuid"],
        "upload_id": upload_id,
        "file_blake3": result["file_blake3"],
        "file_size": size,
        "user_email": owner,
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

    size, exact = batch_size(request.headers.get("content-length"))
    async with state.buffers.hold(size):
        form = await receive_multipart(
            request.stream(),
            request.headers.get("content-type", ""),
            "file",
            open_sink,
            batch=size,
            exact=exact,
        )
    fields = parse_fields(known_fields(form.fields, request.url.path))
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
    return _single_answer(state, earlier.id, earlier.filename, now, earlier.owner)


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


#: the original's estimated_duration of an import, in seconds, by source
_IMPORT_SECONDS = {"google_drive": 600, "s3": 300, "gcs": 300, "url": 180}


def _initiate(
    body: InitiateRequest, identity: Identity, state: ServerState
) -> dict[str, Any]:
    from sclib.pipeline.upload import split_config

    values = body.dataset_values()
    fields, owner, dataset_uuid = resolve_fields(state, identity, values)
    state.uploads.check_space(0, "an import")  # its size is known only later
    spec = import_spec(
        body.source_type,
        body.source_config,
        credentials_dir=state.settings.credentials_dir,
    )
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
    public, secret = split_config(spec.config)
    sealed = None
    if secret:
        from sclib.secrets import SecretBox

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
        "status": legacy.legacy_status(job),
        "message": f"Upload job initiated for {spec.source_type}",
        "estimated_duration": _IMPORT_SECONDS.get(spec.source_type, 300),
        "upload_type": "standard",
        "job_status": job.status.value,
        "source_type": spec.source_type,
        "dataset_uuid": dataset_uuid,
        "user_email": owner,
    }


@router.post("/api/upload/initiate", tags=["upload"])
def initiate(
    body: InitiateRequest,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Import from ``s3``, ``gcs``, ``google_drive`` or ``url`` on the server.

    Credentials in ``source_config`` are sealed with the server's SECRET_KEY before
    they are stored, and never returned."""
    return _initiate(body, identity, state)


@router.post("/api/upload/cloud/large", tags=["upload"])
def initiate_large_cloud(
    body: InitiateRequest,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The original's route for large imports: the same as ``initiate`` (every
    import streams in verified, resumable chunks, whatever its size); its
    ``estimated_duration`` is text, as the original's was."""
    answer = _initiate(body, identity, state)
    answer["estimated_duration"] = "Varies by file size and network"
    return answer


_UPLOAD_PATH_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            media: {
                "schema": {
                    "type": "object",
                    "title": "UploadPathForm",
                    "required": ["file_path", "dataset_name", "sensor"],
                    "properties": {
                        "file_path": {"type": "string"},
                        "original_filename": {"type": "string"},
                        **{
                            name: {"type": "string", **FIELD_SCHEMAS.get(name, {})}
                            for name in DatasetFields.model_fields
                        },
                    },
                }
            }
            for media in (
                "application/x-www-form-urlencoded",
                "multipart/form-data",
                "application/json",
            )
        },
    }
}


@router.post(
    "/api/upload/upload-path", tags=["upload"], openapi_extra=_UPLOAD_PATH_FORM
)
async def upload_path(
    request: Request,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Ingest a file or folder that is already on the server's disk.

    Takes a form (the original clients send ``application/x-www-form-urlencoded``)
    or JSON. Off unless the operator lists allowed folders in
    ``SCLIB_UPLOAD_PATH_ROOTS``; then only paths inside them (symbolic links
    resolved) are accepted."""
    values = await small_body(request)
    return await run_in_threadpool(_upload_path, values, identity, state, request)


def _upload_path(
    values: dict[str, Any], identity: Identity, state: ServerState, request: Request
) -> dict[str, Any]:
    from sclib.errors import NotFound
    from sclib.pipeline.upload import check_server_path

    file_path = values.pop("file_path", None)
    if not isinstance(file_path, str) or not file_path.strip():
        raise InvalidInput("file_path: field required")
    original_filename = values.pop("original_filename", None)
    if original_filename is not None and str(original_filename).strip():
        safe_filename(str(original_filename))
    roots = state.settings.upload_path_root_list()
    with legacy.original_codes({NotFound: 404, InvalidInput: 400}):
        path = check_server_path(file_path, roots)
    fields, owner, dataset_uuid = resolve_fields(
        state, identity, known_fields(values, request.url.path)
    )
    config: dict[str, Any] = {"path": str(path)}
    name = path.name
    if original_filename and str(original_filename).strip():
        if not path.is_file():
            raise InvalidInput("original_filename: only for a file, not a folder")
        config["name"] = name = str(original_filename).strip()
    state.uploads.register(dataset_uuid, owner, fields)
    job = state.queue.enqueue(
        JobType.UPLOAD,
        {
            "source": "import",
            "source_type": "server_path",
            "source_config": config,
            "sealed": None,
            "dataset": fields.to_parameters(),
        },
        dataset_uuid=dataset_uuid,
        owner=owner,
    )
    size = path.stat().st_size if path.is_file() else 0
    return {
        "job_id": job.id,
        "status": legacy.legacy_status(job),
        "message": f"File path upload initiated: {name}",
        "estimated_duration": legacy.estimated_seconds(size),
        "upload_type": "path",
        "job_status": job.status.value,
        "dataset_uuid": dataset_uuid,
        "user_email": owner,
    }


# -- jobs as the seed shows them -------------------------------------------------------


def upload_status(job: Job) -> dict[str, Any]:
    """The seed's status body for a job (the original's status words; sclib's
    own in ``job_status``)."""
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
    word = legacy.legacy_status(job)
    return {
        "job_id": job.id,
        "status": word,
        "progress_percentage": round(pct or 0.0, 2),
        "bytes_uploaded": done or 0,
        "bytes_total": total,
        "message": progress.message or word,
        "error": job.error,
        "created_at": job.created_at.isoformat(),
        "updated_at": job.updated_at.isoformat(),
        "job_status": job.status.value,
        "current_file": progress.message or None,
        "job_type": job.type,
        "dataset_uuid": job.dataset_uuid,
        "user_email": job.owner,
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
    """Cancel a pending or running job; 404 if it is unknown or already finished
    (the original's "Job not found or already completed")."""
    from sclib.errors import InvalidJobState
    from sclib.pipeline.flow import after_cancel

    visible_job(state, identity, job_id)
    # a finished job: the original answered 404 ("Job not found or already
    # completed"); the error keeps its class, so sclib's client raises
    # InvalidJobState
    with legacy.original_codes({InvalidJobState: 404}):
        job = state.queue.cancel(job_id, "cancelled by the user")
    after_cancel(state.queue, state.datasets, job, state.settings.data_dir)
    done = job.status.value == "cancelled"
    return {
        "message": f"Job {job_id} cancelled successfully"
        if done
        else f"Job {job_id} cancellation requested; it stops at its next check",
        "job_id": job.id,
        "status": legacy.legacy_status(job),
        "job_status": job.status.value,
    }


@router.get("/api/upload/jobs", tags=["upload"])
def jobs(
    user_id: str | None = None,
    user_email: str | None = None,
    status: Literal[
        "queued",
        "initializing",
        "uploading",
        "processing",
        "verifying",
        "completed",
        "failed",
        "cancelled",
        "paused",
        "pending",
        "running",
    ]
    | None = None,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET),
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """The caller's upload jobs, oldest first (admins: anyone's, or ``user_id``'s).

    ``status`` takes the original's words (``queued``, ``uploading``, ...) or
    sclib's (``pending``, ``running``, ...); ``total`` counts every match."""
    owner = owner_filter(identity)
    wanted = (user_id or user_email or "").strip().lower()
    if wanted:
        if owner is not None and wanted != owner:
            from sclib.errors import Forbidden

            raise Forbidden("user_id: you may list only your own jobs")
        owner = wanted
    if status == "paused":
        found, total = [], 0  # sclib never pauses a job
    else:
        chosen = legacy.status_filter(status)
        found = state.queue.list(
            status=chosen,
            job_type=JobType.UPLOAD,
            owner=owner,
            limit=limit,
            offset=offset,
        )
        total = state.queue.count(status=chosen, job_type=JobType.UPLOAD, owner=owner)
    return {
        "jobs": [upload_status(j) for j in found],
        "total": total,
        "limit": limit,
        "offset": offset,
        "count": len(found),
    }


@router.get("/api/upload/supported-sources", tags=["upload"])
def sources(state: ServerState = StateDep) -> dict[str, Any]:
    """Import sources with their ``source_config`` keys, and the sensor names."""
    return legacy.sources_document(state.settings, supported_sources())


@router.get("/api/upload/limits", tags=["upload"])
def limits(state: ServerState = StateDep) -> dict[str, Any]:
    """Size limits and the chunk size this server hands out."""
    return legacy.limits_document(state.settings, state.uploads.staging_root)


@router.get("/api/upload/large/limits", tags=["large files"])
def large_limits(state: ServerState = StateDep) -> dict[str, Any]:
    """The large-file protocol's limits (the original large-file app's keys)."""
    return legacy.limits_document(
        state.settings, state.uploads.staging_root, large=True
    )


@router.get("/api/upload/estimate-time", tags=["upload"])
def estimate_time(
    file_size: int | None = Query(None, ge=0, le=2**62),
    file_size_mb: float | None = Query(None, ge=0, le=2.0**42),
    source_type: str = "local",
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """A rough duration for a file of ``file_size`` bytes (or ``file_size_mb``
    MiB, the original's parameter) from ``source_type``."""
    if file_size is None:
        file_size = round((file_size_mb or 0.0) * legacy.MIB)
    seconds = legacy.estimated_seconds(file_size)
    seconds += 0 if source_type == "local" else _IMPORT_SECONDS.get(source_type, 300)
    chunk = state.settings.chunk_size
    return {
        "source_type": source_type,
        "estimated_seconds": seconds,
        "estimated_minutes": round(seconds / 60, 1),
        "file_size_mb": round(file_size / legacy.MIB, 3),
        "file_size": file_size,
        "upload_type": _upload_type(state, file_size),
        "chunk_size": chunk,
        "total_chunks": max(1, -(-file_size // chunk)),
    }
