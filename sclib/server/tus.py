"""tus 1.0.0 at ``/files/``: resumable uploads for browsers and tus clients.

Core protocol plus the ``creation``, ``creation-with-upload``,
``creation-defer-length``, ``termination``, ``expiration``, ``checksum`` and
``concatenation`` extensions, over the same
:class:`~sclib.server.uploads.UploadManager` as the seed's routes: upload state
lives in the backend, bytes in the staging file, one writer per upload (a second,
overlapping ``PATCH`` gets 423), and the finished file is verified, committed
into ``<data>/upload/<dataset_uuid>/`` and handed to an ``upload`` job exactly
like a multipart or chunked upload.

* ``Upload-Metadata`` carries ``filename`` (required), ``filetype`` and the dataset
  fields under their seed names (``dataset_name``, ``sensor``, ``convert``, ...),
  validated by the same code as the other routes. Other keys are kept and echoed.
* Responses carry ``X-Dataset-Uuid`` (known from creation on) and, once the last
  byte arrived and the file was committed, ``X-Job-Id``.
* ``Upload-Checksum`` takes ``sha1``, ``sha256``, ``md5`` and ``blake3``; a body
  that does not match is refused with 460 and the offset does not move.
* A body that breaks off keeps what arrived, unless it came with a checksum.
* Concatenation (parallel uploads, as tus-js-client's ``parallelUploads`` does):
  ``Upload-Concat: partial`` uploads hold bytes and are never committed on their
  own; ``Upload-Concat: final;/files/a /files/b`` (with the metadata) joins them,
  in that order, into one file that is then verified and committed like any
  other. The partial uploads must be complete first (``concatenation-unfinished``
  is not offered); once joined, their bytes are deleted and naming them in
  another final upload is a 409 (a part is claimed as it is copied, so two final
  uploads at once never both get it). The parts must be the caller's, or (an
  admin acting for a user) that user's. Not enough disk for the copy is 507.
  ``PATCH`` to a final upload is 403.

:class:`TusMiddleware` (installed by :func:`~sclib.server.app.create_app`) puts
``Tus-Resumable`` on every response under ``/files``, errors included, answers 412
to requests without ``Tus-Resumable: 1.0.0``, and honours
``X-HTTP-Method-Override`` on ``POST``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Coroutine, Mapping
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import partial
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sclib.datasets.fields import DatasetFields, safe_filename
from sclib.errors import (
    ChecksumMismatch,
    DestinationError,
    InsufficientStorage,
    InvalidInput,
    SclibError,
    UploadBusy,
)
from sclib.server.auth import Identity
from sclib.server.common import resolve_fields
from sclib.server.dataplane import direct, ring_bytes
from sclib.server.deps import IdentityDep, ServerState, StateDep, owner_filter
from sclib.server.streaming import batch_size, pump, run_to_the_end
from sclib.server.uploads import TUS, Upload, UploadNotFound
from sclib.transfers.sessions import ACTIVE, CANCELLED

__all__ = [
    "CHECKSUM_ALGORITHMS",
    "EXTENSIONS",
    "TUS_VERSION",
    "TusMiddleware",
    "TusProblem",
    "decode_metadata",
    "encode_metadata",
    "router",
]

log = logging.getLogger(__name__)

TUS_VERSION = "1.0.0"
EXTENSIONS = (
    "creation",
    "creation-with-upload",
    "creation-defer-length",
    "termination",
    "expiration",
    "checksum",
    "concatenation",
)
#: tus algorithm name -> digest size in bytes (all computed by ``Hashers``)
CHECKSUM_ALGORITHMS = {"sha1": 20, "sha256": 32, "md5": 16, "blake3": 32}
OCTET_STREAM = "application/offset+octet-stream"

_PREFIX = "/files"
_OVERRIDABLE = frozenset({"PATCH", "DELETE", "HEAD", "POST"})
_FIELD_KEYS = frozenset(DatasetFields.model_fields)
_TITLES = {
    400: "Bad request",
    403: "Forbidden",
    405: "Method not allowed",
    412: "Precondition failed",
    415: "Unsupported media type",
    460: "Checksum mismatch",
    500: "Internal error",
    507: "Insufficient storage",
}


class TusProblem(Exception):
    """A tus-specific error answer (400, 403, 412, 415, 460, 507) as problem+json.

    sclib's own errors (404, 409, 413, 422, 423, ...) go through the app's
    handlers instead; this is for the statuses only tus uses."""

    def __init__(
        self,
        status: int,
        detail: str,
        code: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.code = code
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        body = {
            "type": f"https://sclib.dev/problems/{self.code}",
            "title": _TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "code": self.code,
        }
        return JSONResponse(
            body,
            status_code=self.status,
            media_type="application/problem+json",
            headers={"Tus-Resumable": TUS_VERSION, **self.headers},
        )


def _bad(detail: str) -> TusProblem:
    return TusProblem(400, detail, "invalid_input")


class _TusRoute(APIRoute):
    """Turns :class:`TusProblem` raised by a route into its response."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except TusProblem as exc:
                return exc.response()

        return run


router = APIRouter(route_class=_TusRoute, tags=["tus"])


# -- the middleware -------------------------------------------------------------------


def _is_tus_path(path: str) -> bool:
    return path == _PREFIX or path.startswith(_PREFIX + "/")


def _allowed_methods(path: str) -> frozenset[str]:
    """The methods a ``/files`` path takes: creation on the collection, the
    rest on one upload."""
    if path.rstrip("/") == _PREFIX:
        return frozenset({"OPTIONS", "POST"})
    return frozenset({"OPTIONS", "HEAD", "PATCH", "DELETE"})


class TusMiddleware:
    """``Tus-Resumable`` on every ``/files`` response, 412 for requests without
    ``Tus-Resumable: 1.0.0`` (``OPTIONS`` excepted), ``X-HTTP-Method-Override``
    on ``POST`` (to ``PATCH``, ``DELETE`` or ``HEAD``). Other paths pass through
    untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _is_tus_path(scope["path"]):
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tus(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                raw = list(message.get("headers", []))
                if not any(k.lower() == b"tus-resumable" for k, _ in raw):
                    raw.append((b"tus-resumable", TUS_VERSION.encode()))
                message = {**message, "headers": raw}
            await send(message)

        headers = Headers(scope=scope)
        override = headers.get("x-http-method-override")
        if override and scope["method"] == "POST":
            wanted = override.strip().upper()
            if wanted not in _OVERRIDABLE:
                await _bad(
                    f"X-HTTP-Method-Override: {override[:20]!r} is not supported; "
                    "use PATCH, DELETE or HEAD"
                ).response()(scope, receive, send_tus)
                return
            scope = {**scope, "method": wanted}
        allowed = _allowed_methods(scope["path"])
        if scope["method"] not in allowed:
            problem = TusProblem(
                405,
                f"{scope['method']} is not a tus method here; this path takes "
                + ", ".join(sorted(allowed)),
                "method_not_allowed",
                {"Allow": ", ".join(sorted(allowed))},
            )
            await problem.response()(scope, receive, send_tus)
            return
        if scope["method"] != "OPTIONS" and headers.get("tus-resumable") != TUS_VERSION:
            problem = TusProblem(
                412,
                f"this server speaks tus {TUS_VERSION}: send "
                f"'Tus-Resumable: {TUS_VERSION}' with every request",
                "unsupported_tus_version",
                {"Tus-Version": TUS_VERSION},
            )
            await problem.response()(scope, receive, send_tus)
            return
        try:
            await self.app(scope, receive, send_tus)
        except Exception:
            if started:
                raise
            log.exception("%s %s failed", scope["method"], scope["path"])
            problem = TusProblem(500, "internal error", "internal_error")
            await problem.response()(scope, receive, send_tus)


# -- headers --------------------------------------------------------------------------


def _int_header(request: Request, name: str) -> int | None:
    raw = request.headers.get(name)
    if raw is None:
        return None
    value = raw.strip()
    if not (value.isascii() and value.isdigit()):
        raise _bad(f"{name}: expected a non-negative integer, got {raw[:40]!r}")
    return int(value)


def decode_metadata(header: str | None) -> dict[str, str]:
    """``Upload-Metadata`` as ``{key: base64 value}`` ('' for a key without value).

    Values stay encoded (they are echoed as they came); :func:`_text` decodes
    the ones sclib reads."""
    found: dict[str, str] = {}
    if header is None or not header.strip():
        return found
    for pair in header.split(","):
        parts = pair.split()
        if not parts or len(parts) > 2:
            raise _bad(
                f"Upload-Metadata: {pair.strip()[:60]!r} is not 'key base64value'"
            )
        key = parts[0]
        value = parts[1] if len(parts) == 2 else ""
        if not key.isascii() or not key.isprintable():
            raise _bad(f"Upload-Metadata: key {key[:40]!r} is not printable ASCII")
        if key in found:
            raise _bad(f"Upload-Metadata: key {key!r} appears twice")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raise _bad(f"Upload-Metadata: the value of {key!r} is not base64") from None
        found[key] = value
    return found


def encode_metadata(metadata: Mapping[str, str]) -> str:
    """The inverse of :func:`decode_metadata`."""
    return ",".join(f"{k} {v}" if v else k for k, v in metadata.items())


def _text(metadata: Mapping[str, str], key: str) -> str:
    try:
        return base64.b64decode(metadata[key], validate=True).decode("utf-8")
    except UnicodeDecodeError:
        raise _bad(f"Upload-Metadata: the value of {key!r} is not UTF-8") from None


def _checksum(request: Request) -> tuple[str, str] | None:
    """``Upload-Checksum: <algo> <base64>`` as ``(algo, hex digest)``."""
    raw = request.headers.get("upload-checksum")
    if raw is None:
        return None
    parts = raw.split()
    if len(parts) != 2:
        raise _bad("Upload-Checksum: expected '<algorithm> <base64 digest>'")
    algo, encoded = parts[0].lower(), parts[1]
    if algo not in CHECKSUM_ALGORITHMS:
        raise _bad(
            f"Upload-Checksum: unsupported algorithm {algo[:20]!r}; use one of "
            + ", ".join(CHECKSUM_ALGORITHMS)
        )
    try:
        digest = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad("Upload-Checksum: the digest is not base64") from None
    if len(digest) != CHECKSUM_ALGORITHMS[algo]:
        raise _bad(
            f"Upload-Checksum: a {algo} digest has {CHECKSUM_ALGORITHMS[algo]} "
            f"bytes, got {len(digest)}"
        )
    return algo, digest.hex()


def _require_octet_stream(request: Request) -> None:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";", 1)[0].strip().lower() != OCTET_STREAM:
        raise TusProblem(
            415,
            f"Content-Type must be {OCTET_STREAM}, got {ctype[:60]!r}",
            "unsupported_media_type",
        )


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "transfer-encoding" in request.headers


def _http_date(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return format_datetime(value.astimezone(UTC), usegmt=True)


def _state_headers(state: ServerState, upload: Upload) -> dict[str, str]:
    """What every answer about an upload says."""
    headers = {"Upload-Offset": str(upload.offset)}
    if upload.status == ACTIVE:
        headers["Upload-Expires"] = _http_date(state.uploads.expires_at(upload))
    if upload.dataset_uuid:
        headers["X-Dataset-Uuid"] = upload.dataset_uuid
    if upload.result is not None:
        headers["X-Job-Id"] = str(upload.result["job_id"])
        headers["X-Dataset-Uuid"] = str(upload.result["dataset_uuid"])
    return headers


def _options_headers(state: ServerState) -> dict[str, str]:
    return {
        "Tus-Resumable": TUS_VERSION,
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(EXTENSIONS),
        "Tus-Max-Size": str(state.settings.max_upload_size),
        "Tus-Checksum-Algorithm": ",".join(CHECKSUM_ALGORITHMS),
    }


# -- receiving ------------------------------------------------------------------------


class _Cut:
    """Wraps a body stream: a client that goes away ends it quietly (so ``pump``
    writes what it holds) and leaves :attr:`happened` set."""

    def __init__(self) -> None:
        self.happened = False

    async def wrap(self, stream: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
        try:
            async for piece in stream:
                yield piece
        except ClientDisconnect:
            self.happened = True


async def _receive(
    request: Request,
    state: ServerState,
    upload_id: str,
    owner: str | None,
    offset: int,
    checksum: tuple[str, str] | None,
) -> Upload | None:
    """Write the request body at ``offset``; the upload after it, or ``None`` when
    the client went away (nobody hears the answer then)."""
    uploads = state.uploads
    length = _int_header(request, "content-length")
    hashes = {checksum[0]} if checksum else set()
    write = await run_in_threadpool(
        uploads.begin_patch, upload_id, owner, offset, length, hashes
    )
    try:
        cut = _Cut()
        size, exact = batch_size(request.headers.get("content-length"))
        straight = direct(request)
        try:
            if straight is not None:  # the data plane: off the socket, no ASGI
                async with state.buffers.hold(ring_bytes(straight.length)):
                    cut.happened = not await straight.pump(write)
            else:
                async with (
                    state.buffers.hold(size),
                    contextlib.aclosing(cut.wrap(request.stream())) as body,
                ):
                    await pump(body, write, size, exact=exact)
        except InsufficientStorage:
            # the disk filled up: what was written of this PATCH is kept (as
            # for a client that went away) unless a checksum must vouch for it
            if checksum is None:  # abort_patch counts the writes behind first
                with contextlib.suppress(SclibError):
                    await run_to_the_end(partial(uploads.abort_patch, write, keep=True))
            raise
        if cut.happened:
            # Bytes that arrived are the client's bytes; without a checksum to
            # check them against, keep them (tus: resume from what was stored).
            await run_to_the_end(
                partial(uploads.abort_patch, write, keep=checksum is None)
            )
            log.info("upload %s: the client went away at +%d", upload_id, write.written)
            return None
        expected = {checksum[0]: checksum[1]} if checksum else None
        try:
            return await run_to_the_end(uploads.finish_patch, write, expected)
        except ChecksumMismatch as exc:
            raise TusProblem(460, str(exc), "checksum_mismatch") from None
    finally:
        # idempotent; releases the lock on every path, off the event loop (it
        # waits for a checkpoint's flush in flight)
        await run_to_the_end(write.close)


async def _complete_if_ready(
    state: ServerState, upload: Upload, owner: str | None
) -> Upload:
    """Commit the upload once every byte is there (idempotent)."""
    if upload.result is not None or upload.status != ACTIVE:
        return upload
    if _concat_kind(upload) == "partial" or not state.uploads.ready(upload):
        return upload
    await run_in_threadpool(state.uploads.complete, upload.id, owner)
    return await run_in_threadpool(state.uploads.get, upload.id)


def _concat_kind(upload: Upload) -> str | None:
    concat = upload.state.get("concat")
    return concat.get("kind") if isinstance(concat, Mapping) else None


def _concat_header(upload: Upload) -> str | None:
    """``Upload-Concat`` as HEAD reports it (``None``: a plain upload)."""
    kind = _concat_kind(upload)
    if kind == "final":
        parts = upload.state["concat"].get("parts", [])
        return "final;" + " ".join(f"{_PREFIX}/{p}" for p in parts)
    return kind


def _part_ids(header: str) -> list[str]:
    """The upload ids named by ``Upload-Concat: final;<url> <url> ...`` (absolute
    URLs or paths, each ending in ``/files/<id>``; a query, a fragment or a
    trailing slash is ignored)."""
    ids = []
    for url in header.split(";", 1)[1].split():
        try:
            path = urlsplit(url).path
        except ValueError:
            path = ""
        head, _, upload_id = path.rstrip("/").rpartition("/")
        if not head.endswith(_PREFIX) or not upload_id:
            raise _bad(
                f"Upload-Concat: {url[:80]!r} is not an upload URL of this server"
            )
        ids.append(upload_id)
    return ids


def _tus_upload(state: ServerState, identity: Identity, upload_id: str) -> Upload:
    """The caller's tus upload; anything else (another user's, another protocol's,
    a terminated or expired one) is 404."""
    upload = state.uploads.get(upload_id, owner_filter(identity))
    if upload.protocol != TUS or upload.status == CANCELLED:
        raise UploadNotFound(f"upload {upload_id} not found")
    return upload


def _gone_quietly() -> Response:
    return Response(status_code=400)  # the client left; uvicorn drops this


# -- routes ---------------------------------------------------------------------------

#: the body of a PATCH (and of a creation that sends bytes along)
_BODY = {
    "requestBody": {
        "content": {
            OCTET_STREAM: {"schema": {"type": "string", "format": "binary"}},
        }
    }
}


@router.options("/files", status_code=204, include_in_schema=False)
@router.options("/files/", status_code=204)
def options(request: Request) -> Response:
    """What this tus server supports (no token needed: CORS preflights)."""
    state: ServerState = request.app.state.sclib
    return Response(status_code=204, headers=_options_headers(state))


@router.options("/files/{upload_id}", status_code=204)
def options_upload(upload_id: str, request: Request) -> Response:
    """The same as ``OPTIONS /files/`` (the protocol's discovery), for any
    upload's address."""
    return options(request)


@router.post("/files", status_code=201, include_in_schema=False)
@router.post("/files/", status_code=201)
async def create(
    request: Request, identity: Identity = IdentityDep, state: ServerState = StateDep
) -> Response:
    """Create an upload (``Upload-Length`` or ``Upload-Defer-Length: 1``, and
    ``Upload-Metadata``); a body sent along is written from offset 0.

    ``Upload-Concat: partial`` creates a part of a parallel upload;
    ``Upload-Concat: final;<urls>`` joins finished parts into one file."""
    concat = (request.headers.get("upload-concat") or "").strip()
    if concat.startswith("final;"):
        return await _create_final(request, identity, state, concat)
    if concat not in ("", "partial"):
        raise _bad(
            f"Upload-Concat: expected 'partial' or 'final;<urls>', got {concat[:40]!r}"
        )
    length = _int_header(request, "upload-length")
    defer = request.headers.get("upload-defer-length")
    if defer is not None and defer.strip() != "1":
        raise _bad("Upload-Defer-Length: the only allowed value is 1")
    if (length is None) == (defer is None):
        raise _bad("send exactly one of Upload-Length and Upload-Defer-Length: 1")
    state.uploads.check_size(length, "Upload-Length")
    body = _has_body(request)
    if body:
        _require_octet_stream(request)
    checksum = _checksum(request) if body else None
    raw_metadata = request.headers.get("upload-metadata")
    if (
        raw_metadata is not None
        and len(raw_metadata) > state.settings.max_metadata_bytes
    ):
        raise _bad(
            f"Upload-Metadata: {len(raw_metadata)} bytes, above this server's limit "
            f"of {state.settings.max_metadata_bytes} (SCLIB_MAX_UPLOAD_METADATA)"
        )
    metadata = decode_metadata(raw_metadata)
    if concat == "partial":  # no dataset yet: the final upload names it
        filename = "part"
        fields, owner, dataset_uuid = None, identity.email, None
    else:
        filename, fields, owner, dataset_uuid = await _dataset_of(
            state, identity, metadata
        )
    upload = await _new_upload(
        state,
        owner,
        filename,
        length,
        fields,
        dataset_uuid,
        metadata,
        {"kind": "partial"} if concat else None,
    )
    if body:
        try:
            received = await _receive(request, state, upload.id, None, 0, checksum)
        except BaseException:
            # The client never learns this upload's URL: drop it.
            await run_in_threadpool(state.uploads.discard, upload.id)
            raise
        if received is None:
            await run_in_threadpool(state.uploads.discard, upload.id)
            return _gone_quietly()
        upload = received
    upload = await _complete_if_ready(state, upload, None)
    return _created(request, state, upload)


async def _new_upload(
    state: ServerState,
    owner: str,
    filename: str,
    size: int | None,
    fields: DatasetFields | None,
    dataset_uuid: str | None,
    metadata: Mapping[str, str],
    concat: Mapping[str, Any] | None,
) -> Upload:
    """A new tus upload (plain, partial or final), created off the event loop."""
    return await run_in_threadpool(
        lambda: state.uploads.create(
            protocol=TUS,
            owner=owner,
            filename=filename,
            size=size,
            fields=fields,
            dataset_uuid=dataset_uuid,
            metadata=metadata,
            concat=concat,
        )
    )


def _created(request: Request, state: ServerState, upload: Upload) -> Response:
    """``201 Created`` with the upload's URL and where it stands."""
    headers = {
        "Location": f"{request.base_url!s}files/{upload.id}",
        **_state_headers(state, upload),
    }
    return Response(status_code=201, headers=headers)


async def _dataset_of(
    state: ServerState, identity: Identity, metadata: Mapping[str, str]
) -> tuple[str, DatasetFields, str, str]:
    """The file name, dataset fields, owner and dataset an upload's metadata names."""
    if "filename" not in metadata:
        raise InvalidInput(
            "filename: metadata key required (Upload-Metadata: filename <base64>)"
        )
    filename = safe_filename(_text(metadata, "filename"))
    values = {k: _text(metadata, k) for k in metadata if k in _FIELD_KEYS}
    fields, owner, dataset_uuid = await run_in_threadpool(
        resolve_fields, state, identity, values
    )
    return filename, fields, owner, dataset_uuid


async def _create_final(
    request: Request, identity: Identity, state: ServerState, concat: str
) -> Response:
    """``Upload-Concat: final;<urls>``: join finished partial uploads, in order,
    into a new upload, then verify and commit it like any other."""
    if _has_body(request):
        raise _bad("a final upload (Upload-Concat: final) takes no body")
    if request.headers.get("upload-length") is not None:
        raise _bad("a final upload's length is the sum of its parts: no Upload-Length")
    part_ids = _part_ids(concat)
    metadata = decode_metadata(request.headers.get("upload-metadata"))
    filename, fields, owner, dataset_uuid = await _dataset_of(state, identity, metadata)
    uploads = state.uploads
    # the caller's parts, or (an admin acting for a user) that user's: never a
    # third person's bytes in this dataset
    owners = {identity.email, owner}
    parts = await run_in_threadpool(uploads.concat_parts, part_ids, owners)
    size = sum(p.offset for p in parts)
    uploads.check_size(size, "the concatenated upload")
    upload = await _new_upload(
        state,
        owner,
        filename,
        size,
        fields,
        dataset_uuid,
        metadata,
        {"kind": "final", "parts": part_ids},
    )
    try:
        upload = await run_in_threadpool(uploads.concatenate, upload.id, parts)
        upload = await _complete_if_ready(state, upload, None)
    except BaseException as exc:
        await run_in_threadpool(uploads.abandon_final, upload.id, parts)
        if isinstance(exc, DestinationError):
            raise TusProblem(507, str(exc), "destination_error") from None
        raise
    await run_in_threadpool(uploads.release_parts, parts, upload.id)
    return _created(request, state, upload)


@router.head("/files/{upload_id}")
async def head(
    upload_id: str,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """Where an upload stands: ``Upload-Offset``, its length, its metadata."""
    upload = await run_in_threadpool(_tus_upload, state, identity, upload_id)
    with contextlib.suppress(UploadBusy):  # another request is committing it
        upload = await _complete_if_ready(state, upload, owner_filter(identity))
    headers = _state_headers(state, upload)
    headers["Cache-Control"] = "no-store"
    if upload.size is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(upload.size)
    if upload.metadata:
        headers["Upload-Metadata"] = encode_metadata(upload.metadata)
    concat = _concat_header(upload)
    if concat is not None:
        headers["Upload-Concat"] = concat
    return Response(status_code=200, headers=headers)


@router.patch("/files/{upload_id}", status_code=204, openapi_extra=_BODY)
async def patch(
    upload_id: str,
    request: Request,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """Append the body at ``Upload-Offset`` (which must be the upload's offset).

    The last byte commits the file and answers with ``X-Job-Id``."""
    _require_octet_stream(request)
    offset = _int_header(request, "upload-offset")
    if offset is None:
        raise _bad("Upload-Offset: header required")
    declared = _int_header(request, "upload-length")
    checksum = _checksum(request)
    owner = owner_filter(identity)
    upload = await run_in_threadpool(_tus_upload, state, identity, upload_id)
    if _concat_kind(upload) == "final":
        raise TusProblem(
            403,
            f"upload {upload_id} is a final (concatenated) upload: it takes no PATCH",
            "upload_conflict",  # its state, not the caller's rights
        )
    if declared is not None:
        upload = await run_in_threadpool(
            state.uploads.declare_length, upload_id, owner, declared
        )
    received = await _receive(request, state, upload_id, owner, offset, checksum)
    if received is None:
        return _gone_quietly()
    upload = await _complete_if_ready(state, received, owner)
    return Response(status_code=204, headers=_state_headers(state, upload))


@router.delete("/files/{upload_id}", status_code=204)
async def terminate(
    upload_id: str,
    identity: Identity = IdentityDep,
    state: ServerState = StateDep,
) -> Response:
    """Stop an unfinished upload and delete its bytes (409 once it is complete)."""
    await run_in_threadpool(_tus_upload, state, identity, upload_id)
    await run_in_threadpool(state.uploads.cancel, upload_id, owner_filter(identity))
    return Response(status_code=204)
