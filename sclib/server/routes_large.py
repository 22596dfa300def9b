"""The large-file chunk protocol: ``/api/upload/large/...`` (the seed's).

Initiate, send chunks in any order and in parallel (multipart with a SHA-256
``chunk_hash``, as the seed's clients do, or a raw body with ``X-Chunk-Hash:
blake3:<hex>``, as sclib's client does), ask what is missing, complete. Re-sending
a chunk is idempotent, and a chunk sent again that does not verify leaves the
stored copy as it was; completing twice returns the first answer.

The answers are the original large-file API's (every key, with its meaning and
type, and its status codes: 400 for a bad chunk index or size, a missing chunk
at completion; 404 for an upload that was cancelled) with sclib's keys beside
them. A client that names no ``chunk_size`` gets ``SCLIB_CHUNK_SIZE``, the
original's 100 MiB by default, which the original clients always send; a chunk
of another length than its upload's chunk size is refused, never stored.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from sclib.errors import InvalidInput, TooLarge, UploadConflict
from sclib.server import legacy
from sclib.server.auth import Identity
from sclib.server.common import (
    MULTIPART_SLACK,
    DatasetBody,
    check_length,
    resolve_fields,
)
from sclib.server.dataplane import direct, ring_bytes
from sclib.server.deps import IdentityDep, ServerState, StateDep, owner_filter
from sclib.server.legacy import original_codes
from sclib.server.streaming import (
    Sink,
    batch_size,
    pump,
    receive_multipart,
    run_to_the_end,
)
from sclib.server.uploads import LARGE, Upload, UploadNotFound
from sclib.transfers.receive import Receiver
from sclib.transfers.sessions import CANCELLED
from sclib.transfers.staging import StagedWrite

__all__ = ["router"]

router = APIRouter(tags=["large files"])

_CHUNK_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "title": "ChunkForm",
                    "required": ["chunk", "chunk_hash"],
                    "properties": {
                        "chunk": {"type": "string", "format": "binary"},
                        "chunk_hash": {
                            "type": "string",
                            "description": "SHA-256 hex of the chunk",
                        },
                    },
                }
            },
            "application/octet-stream": {
                "schema": {
                    "type": "string",
                    "format": "binary",
                    "title": "RawChunk",
                    "description": "the chunk; X-Chunk-Hash: blake3:<hex> or "
                    "sha256:<hex> header required",
                }
            },
        },
    }
}


# -- the large-file chunk protocol -----------------------------------------------------


class LargeInitiate(DatasetBody):
    """``POST /api/upload/large/initiate``."""

    filename: str
    file_size: int = Field(ge=0)
    file_hash: str | None = Field(default=None, description="SHA-256 hex")
    file_blake3: str | None = None
    chunk_size: int | None = None


def _large(state: ServerState, identity: Identity, upload_id: str) -> Upload:
    """The caller's large-file upload; a cancelled or expired one is gone, as
    the original deleted its session (404)."""
    upload = state.uploads.get(upload_id, owner_filter(identity))
    if upload.protocol != LARGE or upload.status == CANCELLED:
        raise UploadNotFound(f"Upload session not found: upload {upload_id}")
    return upload


@router.post("/api/upload/large/initiate", tags=["large files"])
def large_initiate(
    body: LargeInitiate, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Start a chunked upload; send chunks in any order, in parallel, then
    ``complete``."""
    with original_codes({TooLarge: 422}):
        fields, owner, dataset_uuid = resolve_fields(
            state, identity, body.dataset_values()
        )
        expected = {}
        if body.file_hash:
            expected["sha256"] = body.file_hash
        if body.file_blake3:
            expected["blake3"] = body.file_blake3
        upload = state.uploads.create(
            protocol=LARGE,
            owner=owner,
            filename=body.filename,
            size=body.file_size,
            fields=fields,
            dataset_uuid=dataset_uuid,
            chunk_size=body.chunk_size,
            expected=expected,
        )
    return {
        "upload_id": upload.id,
        "chunk_size": upload.chunk_size,
        "total_chunks": upload.total_chunks,
        "message": f"Upload session created for {body.filename}",
        "chunk_hashes": Receiver.chunk_hashes(upload.chunk_size),
        "dataset_uuid": dataset_uuid,
    }


def _chunk_hash(value: str, chunk_size: int, *, raw: bool = True) -> tuple[str, str]:
    algo, sep, digest = value.strip().partition(":")
    if not sep:
        algo, digest = "sha256", algo
    algo = algo.lower()
    digest = digest.lower()
    allowed = Receiver.chunk_hashes(chunk_size) if raw else ["sha256", "blake3"]
    if algo not in allowed or len(digest) != 64:
        raise InvalidInput(
            "chunk_hash: expected a SHA-256 hex digest, or "
            + " / ".join(f"'{a}:<hex>'" for a in allowed)
            + f", got {value[:80]!r}"
        )
    try:
        bytes.fromhex(digest)
    except ValueError:
        raise InvalidInput(f"chunk_hash: {digest[:80]!r} is not hex") from None
    return algo, digest


@router.post(
    "/api/upload/large/chunk/{upload_id}/{chunk_index}",
    tags=["large files"],
    openapi_extra=_CHUNK_BODY,
)
async def large_chunk(
    upload_id: str,
    chunk_index: int,
    request: Request,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """One chunk: multipart (``chunk`` + ``chunk_hash``, the seed's form) or a raw
    body with ``X-Chunk-Hash: blake3:<hex>`` (sclib's client). Idempotent."""
    with original_codes({InvalidInput: 400, TooLarge: 400}):
        return await _large_chunk(upload_id, chunk_index, request, identity, state)


async def _large_chunk(
    upload_id: str,
    chunk_index: int,
    request: Request,
    identity: Identity,
    state: ServerState,
) -> dict[str, Any]:
    upload = await run_in_threadpool(_large, state, identity, upload_id)
    check_length(request, upload.chunk_size + MULTIPART_SLACK)
    owner = owner_filter(identity)
    ctype = request.headers.get("content-type", "")
    holder: dict[str, StagedWrite] = {}
    size, exact = batch_size(request.headers.get("content-length"))
    try:
        if ctype.startswith("multipart/"):

            async def open_sink(filename: str | None, seen: dict[str, str]) -> Sink:
                write = await run_in_threadpool(
                    state.uploads.begin_chunk, upload_id, owner, chunk_index, {"sha256"}
                )
                holder["write"] = write
                return write

            async with state.buffers.hold(size):
                form = await receive_multipart(
                    request.stream(), ctype, "chunk", open_sink, batch=size, exact=exact
                )
            if not form.fields.get("chunk_hash"):
                missing = InvalidInput("chunk_hash: field required")
                missing.http_status = 422  # type: ignore[attr-defined]
                raise missing
            algo, digest = _chunk_hash(
                form.fields["chunk_hash"], upload.chunk_size, raw=False
            )
        else:
            header = request.headers.get("x-chunk-hash")
            if not header:
                raise InvalidInput(
                    "X-Chunk-Hash: header required for a raw chunk body "
                    "(blake3:<hex> or sha256:<hex>)"
                )
            algo, digest = _chunk_hash(header, upload.chunk_size)
            holder["write"] = await run_in_threadpool(
                state.uploads.begin_chunk, upload_id, owner, chunk_index, {algo}
            )
            straight = direct(request)
            if straight is not None:  # the data plane: off the socket, no ASGI
                async with state.buffers.hold(ring_bytes(straight.length)):
                    if not await straight.pump(holder["write"]):
                        raise ClientDisconnect()
            else:
                async with state.buffers.hold(size):
                    await pump(request.stream(), holder["write"], size, exact=exact)
        done = await run_in_threadpool(
            state.uploads.finish_chunk, holder.pop("write"), chunk_index, {algo: digest}
        )
    finally:
        if "write" in holder:  # off the event loop: it waits for writes behind
            await run_to_the_end(holder["write"].close)
    return {
        "message": f"Chunk {chunk_index} uploaded successfully",
        "uploaded_chunks": len(done.chunks),
        "total_chunks": done.total_chunks,
        "upload_id": upload_id,
        "chunk_index": chunk_index,
        "received": True,
    }


@router.get("/api/upload/large/status/{upload_id}", tags=["large files"])
def large_status(
    upload_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Which chunks arrived (``uploaded_chunks``, a sorted list, as the original
    gave it); ``is_complete`` once every chunk is there, ``committed`` once the
    file was verified and stored."""
    upload = _large(state, identity, upload_id)
    total = upload.total_chunks
    got = len(upload.chunks)
    return {
        "upload_id": upload_id,
        "uploaded_chunks": sorted(upload.chunks),
        "total_chunks": total,
        "is_complete": got == total,
        "progress_percentage": round(100.0 * got / total, 2) if total else 100.0,
        "status": upload.status,
        "committed": upload.result is not None,
        "uploaded_chunk_count": got,
        "bytes_received": upload.bytes_received,
        "file_size": upload.size,
    }


@router.get("/api/upload/large/resume/{upload_id}", tags=["large files"])
def large_resume(
    upload_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """The chunks still missing: send these, then ``complete``. ``can_resume``
    is the original's: whether chunks are missing."""
    upload = _large(state, identity, upload_id)
    missing = upload.missing_chunks
    return {
        "upload_id": upload_id,
        "missing_chunks": missing,
        "total_chunks": upload.total_chunks,
        "can_resume": bool(missing),
        "chunk_size": upload.chunk_size,
        "chunk_hashes": Receiver.chunk_hashes(upload.chunk_size),
        "resumable": upload.status == "active",
    }


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file_blake3: str | None = None
    file_hash: str | None = None


@router.post("/api/upload/large/complete/{upload_id}", tags=["large files"])
async def large_complete(
    upload_id: str,
    request: Request,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> dict[str, Any]:
    """Verify the whole file, commit it to the dataset, enqueue its job.

    Calling it again returns the same answer."""
    upload = await run_in_threadpool(_large, state, identity, upload_id)
    expected: dict[str, str] = {}
    raw = await request.body()
    if raw.strip():
        try:
            body = CompleteRequest.model_validate_json(raw)
        except ValueError as exc:
            raise InvalidInput(f"complete: the body must be JSON ({exc})") from None
        if body.file_blake3:
            expected["blake3"] = body.file_blake3
        if body.file_hash:
            expected["sha256"] = body.file_hash
    with original_codes({UploadConflict: 400}):
        result = await run_in_threadpool(
            state.uploads.complete, upload.id, owner_filter(identity), expected=expected
        )
    final = await run_in_threadpool(state.uploads.get, upload.id)
    return {
        **dict(result),
        "message": f"Upload completed successfully: {upload.filename}",
        "file_path": str(state.uploads.final_path(final)),
        "file_size": result["file_size"],
        "job_submitted": True,
        "status": legacy.status_word(str(result["status"])),
        "job_status": result["status"],
        "user_email": final.owner,
    }


@router.delete("/api/upload/large/cancel/{upload_id}", tags=["large files"])
def large_cancel(
    upload_id: str, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> dict[str, Any]:
    """Stop the upload and delete what arrived (404 once cancelled, as the
    original's session was gone; 409 once its file was stored)."""
    _large(state, identity, upload_id)
    upload = state.uploads.cancel(upload_id, owner_filter(identity))
    return {
        "message": f"Upload session {upload_id} cancelled and cleaned up",
        "upload_id": upload_id,
        "status": upload.status,
    }
