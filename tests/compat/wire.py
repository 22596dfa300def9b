"""What the original ScientistCloud clients put on the wire, rebuilt from the wire
contract (``/work/notes/orig_contract.md`` sections 1 and 5; no code of the
original is used, its repository has no license).

Each ``*Wire`` class stands for one original client class and has one method per
original method that talks HTTP. A method sends exactly the request the original
sends (path, method, headers with the client's ``User-Agent``, no token, the
same encoding: multipart with the same part order and part headers, urlencoded
with Python's ``True``/``False``, or JSON as ``json.dumps`` writes it) and
returns the ``httpx.Response``; :func:`reads` then checks the keys the original
reads from the answer with ``[]`` (a ``KeyError`` in the original) and their
types.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import mimetypes
import uuid
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self
from urllib.parse import urlencode

import httpx

__all__ = [
    "AMY",
    "BOB",
    "CHUNK_ANSWER",
    "CHUNK_STATUS",
    "CHUNK_UPLOAD_RESULT",
    "JOB_STATUS",
    "ORIGINAL_CHUNK",
    "RESUME_INFO",
    "STATUS_WORDS",
    "UPLOAD_RESULT",
    "UPLOAD_RESULT_NO_TYPE",
    "AsyncLargeWire",
    "AsyncUnifiedWire",
    "FastAPIWire",
    "LargeWire",
    "LegacyWire",
    "Part",
    "UnifiedWire",
    "Wire",
    "blake3_hex",
    "file_sha256",
    "multipart",
    "read_chunk",
    "reads",
    "sha256_hex",
    "wait_for_completion",
]

AMY = "amy@example.com"
BOB = "bob@example.com"
MIB = 1024**2
#: The chunk size every original large-file client slices at, whatever the
#: server answers.
ORIGINAL_CHUNK = 100 * MIB

#: The original API's job status words (its ``UploadStatus``).
STATUS_WORDS = frozenset(
    {
        "queued",
        "initializing",
        "uploading",
        "processing",
        "verifying",
        "completed",
        "failed",
        "cancelled",
        "paused",
    }
)

Number = (int, float)
Optional = type(None)

#: Keys the clients read with ``[]`` (and the types they use them as).
UPLOAD_RESULT: dict[str, Any] = {
    "job_id": str,
    "status": str,
    "message": str,
    "upload_type": str,
}
#: The FastAPI and legacy clients' uploads (no ``upload_type`` read).
UPLOAD_RESULT_NO_TYPE: dict[str, Any] = {"job_id": str, "status": str, "message": str}
JOB_STATUS: dict[str, Any] = {
    "job_id": str,
    "status": str,
    "progress_percentage": Number,
}
#: Read with ``.get`` into ``JobStatus``; the types the original gave them.
JOB_STATUS_OPTIONAL: dict[str, Any] = {
    "bytes_uploaded": (int, Optional),
    "bytes_total": (int, Optional),
    "message": (str, Optional),
    "error": (str, Optional),
    "created_at": str,
    "updated_at": str,
}
CHUNK_UPLOAD_RESULT: dict[str, Any] = {
    "upload_id": str,
    "chunk_size": int,
    "total_chunks": int,
    "message": str,
}
CHUNK_ANSWER: dict[str, Any] = {
    "message": str,
    "uploaded_chunks": int,
    "total_chunks": int,
}
CHUNK_STATUS: dict[str, Any] = {
    "upload_id": str,
    "uploaded_chunks": list,
    "total_chunks": int,
    "is_complete": bool,
    "progress_percentage": Number,
}
RESUME_INFO: dict[str, Any] = {
    "upload_id": str,
    "missing_chunks": list,
    "total_chunks": int,
    "can_resume": bool,
}


def reads(answer: Any, spec: Mapping[str, Any]) -> dict[str, Any]:
    """``answer`` (a response or its JSON) has every key of ``spec``, each of its
    type (``bool`` is never taken for a number); returns the JSON."""
    data = answer.json() if isinstance(answer, httpx.Response) else answer
    assert isinstance(data, dict), data
    for key, kind in spec.items():
        assert key in data, f"{key!r} missing from {sorted(data)}"
        value = data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if bool not in kinds:
            assert not isinstance(value, bool), f"{key}: {value!r} is a bool"
        assert isinstance(value, kinds), f"{key}: {value!r} is not {kinds}"
    return data


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _flag(value: bool) -> str:
    """Form booleans as the multipart and aiohttp forms send them."""
    return str(value).lower()


# -- encodings -------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One multipart part: a text field, or a file when ``filename`` is set."""

    name: str
    value: bytes | str
    filename: str | None = None
    content_type: str | None = None


def multipart(parts: Sequence[Part], *, aiohttp: bool = False) -> tuple[bytes, str]:
    """The body and Content-Type header of a multipart form.

    ``requests`` writes ``Content-Disposition`` and, for a file given one, a
    ``Content-Type``; text fields carry none. ``aiohttp`` writes the
    ``Content-Type`` first, and gives every text field ``text/plain;
    charset=utf-8`` and a file one guessed from its name."""
    boundary = uuid.uuid4().hex
    out = bytearray()
    for part in parts:
        disposition = f'Content-Disposition: form-data; name="{part.name}"'
        if part.filename is not None:
            disposition += f'; filename="{part.filename}"'
        ctype = part.content_type
        if aiohttp and ctype is None:
            if part.filename is None:
                ctype = "text/plain; charset=utf-8"
            else:
                ctype = (
                    mimetypes.guess_type(part.filename)[0] or "application/octet-stream"
                )
        headers = [disposition]
        if ctype is not None:
            headers = (
                [f"Content-Type: {ctype}", disposition]
                if aiohttp
                else [
                    disposition,
                    f"Content-Type: {ctype}",
                ]
            )
        out += f"--{boundary}\r\n".encode()
        out += "\r\n".join(headers).encode() + b"\r\n\r\n"
        out += part.value if isinstance(part.value, bytes) else part.value.encode()
        out += b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _requests_headers(agent: str) -> dict[str, str]:
    return {
        "User-Agent": agent,
        "Accept-Encoding": "gzip, deflate",
        "Accept": "*/*",
        "Connection": "keep-alive",
    }


def _aiohttp_headers(agent: str) -> dict[str, str]:
    return {"User-Agent": agent, "Accept": "*/*", "Accept-Encoding": "gzip, deflate"}


class Wire:
    """An HTTP client that sends what ``requests`` (or ``aiohttp``) would: the
    client's fixed headers, no token, redirects followed."""

    def __init__(
        self,
        base_url: str,
        agent: str,
        *,
        aiohttp: bool = False,
        cookies: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.aiohttp = aiohttp
        self.http = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={
                **(_aiohttp_headers(agent) if aiohttp else _requests_headers(agent)),
                **(headers or {}),
            },
            cookies=dict(cookies or {}),
            timeout=300,
            follow_redirects=True,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def get(
        self, path: str, params: Sequence[tuple[str, Any]] | None = None
    ) -> httpx.Response:
        return self.http.get(path, params=list(params or []))

    def post_json(self, path: str, payload: Mapping[str, Any]) -> httpx.Response:
        """``json=payload``: ``json.dumps`` with its default separators."""
        return self.http.post(
            path,
            content=json.dumps(payload).encode(),
            headers={"Content-Type": "application/json"},
        )

    def post_form(self, path: str, fields: Iterable[tuple[str, Any]]) -> httpx.Response:
        """``data=dict``: urlencoded, values through ``str()`` (so ``True``)."""
        return self.http.post(
            path,
            content=urlencode([(k, str(v)) for k, v in fields]).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )

    def post_multipart(self, path: str, parts: Sequence[Part]) -> httpx.Response:
        body, ctype = multipart(parts, aiohttp=self.aiohttp)
        return self.http.post(path, content=body, headers={"Content-Type": ctype})

    def post_empty(self, path: str) -> httpx.Response:
        """A POST with no body (``aiohttp`` names it octet-stream)."""
        headers = {"Content-Length": "0"}
        if self.aiohttp:
            headers["Content-Type"] = "application/octet-stream"
        return self.http.post(path, content=b"", headers=headers)

    def delete(self, path: str) -> httpx.Response:
        return self.http.delete(path)


# -- the shared JSON bodies ------------------------------------------------------------


def _initiate_body(
    source_type: str,
    source_config: Mapping[str, Any],
    user_email: str,
    dataset_name: str,
    sensor: str,
    convert: bool,
    is_public: bool,
    folder: str | None,
    team_uuid: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "source_type": source_type,
        "source_config": dict(source_config),
        "user_email": user_email,
        "dataset_name": dataset_name,
        "sensor": sensor,
        "convert": convert,
        "is_public": is_public,
    }
    if folder:
        body["folder"] = folder
    if team_uuid:
        body["team_uuid"] = team_uuid
    return body


class _Client:
    """An original client: its :class:`Wire`, closed on exit."""

    wire: Wire

    def close(self) -> None:
        self.wire.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Initiates(_Client):
    """``initiate_google_drive_upload``, ``initiate_s3_upload`` and
    ``initiate_url_upload``: the same JSON from every client that has them."""

    def initiate_google_drive_upload(
        self,
        file_id: str,
        service_account_file: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> httpx.Response:
        config = {"file_id": file_id, "service_account_file": service_account_file}
        return self.wire.post_json(
            "/api/upload/initiate",
            _initiate_body(
                "google_drive",
                config,
                user_email,
                dataset_name,
                sensor,
                convert,
                is_public,
                folder,
                team_uuid,
            ),
        )

    def initiate_s3_upload(
        self,
        bucket_name: str,
        object_key: str,
        access_key_id: str,
        secret_access_key: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> httpx.Response:
        config = {
            "bucket_name": bucket_name,
            "object_key": object_key,
            "access_key_id": access_key_id,
            "secret_access_key": secret_access_key,
        }
        return self.wire.post_json(
            "/api/upload/initiate",
            _initiate_body(
                "s3",
                config,
                user_email,
                dataset_name,
                sensor,
                convert,
                is_public,
                folder,
                team_uuid,
            ),
        )

    def initiate_url_upload(
        self,
        url: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> httpx.Response:
        return self.wire.post_json(
            "/api/upload/initiate",
            _initiate_body(
                "url",
                {"url": url},
                user_email,
                dataset_name,
                sensor,
                convert,
                is_public,
                folder,
                team_uuid,
            ),
        )

    def get_upload_status(self, job_id: str) -> httpx.Response:
        return self.wire.get(f"/api/upload/status/{job_id}")

    def cancel_upload(self, job_id: str) -> httpx.Response:
        return self.wire.post_empty(f"/api/upload/cancel/{job_id}")

    def list_upload_jobs(
        self,
        user_email: str,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> httpx.Response:
        params: list[tuple[str, Any]] = [
            ("user_id", user_email),
            ("limit", limit),
            ("offset", offset),
        ]
        if status:
            params.append(("status", status))
        return self.wire.get("/api/upload/jobs", params)

    def get_supported_sources(self) -> httpx.Response:
        return self.wire.get("/api/upload/supported-sources")


# -- SCLib_UploadClient_Unified --------------------------------------------------------


class UnifiedWire(_Initiates):
    """``SCLib_UploadClient_Unified.ScientistCloudUploadClient`` (requests)."""

    AGENT = "ScientistCloud-Upload-Client-Unified/2.0.0"

    def __init__(self, base_url: str, **kw: Any) -> None:
        self.wire = Wire(base_url, self.AGENT, **kw)

    def upload_file(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_identifier: str | None = None,
        add_to_existing: bool = False,
    ) -> httpx.Response:
        parts = [
            Part("user_email", user_email),
            Part("dataset_name", dataset_name),
            Part("sensor", sensor),
            Part("convert", _flag(convert)),
            Part("is_public", _flag(is_public)),
            Part("original_file_path", str(file_path)),
            Part("add_to_existing", _flag(add_to_existing)),
        ]
        for name, value in (
            ("folder", folder),
            ("team_uuid", team_uuid),
            ("dataset_identifier", dataset_identifier),
        ):
            if value:
                parts.append(Part(name, value))
        parts.append(
            Part(
                "file",
                file_path.read_bytes(),
                file_path.name,
                "application/octet-stream",
            )
        )
        return self.wire.post_multipart("/api/upload/upload", parts)

    def upload_file_by_path(
        self,
        file_path: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_uuid: str | None = None,
    ) -> httpx.Response:
        """Also what ``upload_file_by_path_async`` sends before it fails."""
        fields: list[tuple[str, Any]] = [
            ("file_path", file_path),
            ("user_email", user_email),
            ("dataset_name", dataset_name),
            ("sensor", sensor),
            ("convert", convert),
            ("is_public", is_public),
        ]
        for name, value in (
            ("folder", folder),
            ("team_uuid", team_uuid),
            ("dataset_uuid", dataset_uuid),
        ):
            if value:
                fields.append((name, value))
        return self.wire.post_form("/api/upload/upload-path", fields)

    def upload_from_source(
        self,
        source_type: str,
        source_config: Mapping[str, Any],
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> httpx.Response:
        """Every key, ``folder``/``team_uuid`` as ``null`` when unset."""
        return self.wire.post_json(
            "/api/upload/initiate",
            {
                "source_type": source_type,
                "source_config": dict(source_config),
                "user_email": user_email,
                "dataset_name": dataset_name,
                "sensor": sensor,
                "convert": convert,
                "is_public": is_public,
                "folder": folder,
                "team_uuid": team_uuid,
            },
        )

    def upload_directory(
        self,
        directory_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
    ) -> list[httpx.Response]:
        """One fresh dashed uuid4 for the folder: the first file creates the
        dataset under it, every later one is added to it; ``folder`` is each
        file's parent folder inside the directory."""
        identifier = str(uuid.uuid4())
        answers = []
        files = sorted(p for p in directory_path.rglob("*") if p.is_file())
        for n, path in enumerate(files):
            parent = path.parent.relative_to(directory_path)
            answers.append(
                self.upload_file(
                    path,
                    user_email,
                    dataset_name,
                    sensor,
                    convert,
                    is_public,
                    folder=str(parent) if str(parent) != "." else None,
                    dataset_identifier=identifier,
                    add_to_existing=n > 0,
                )
            )
        return answers

    def get_upload_limits(self) -> httpx.Response:
        return self.wire.get("/api/upload/limits")

    def health_check(self) -> httpx.Response:
        return self.wire.get("/health")

    def get_api_info(self) -> httpx.Response:
        return self.wire.get("/")


class AsyncUnifiedWire(_Client):
    """``SCLib_UploadClient_Unified.AsyncScientistCloudUploadClient``
    (aiohttp): no ``original_file_path``, ``add_to_existing`` only when true."""

    AGENT = "ScientistCloud-Upload-Client-Unified-Async/2.0.0"

    def __init__(self, base_url: str) -> None:
        self.wire = Wire(base_url, self.AGENT, aiohttp=True)

    def upload_file(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_identifier: str | None = None,
        add_to_existing: bool = False,
    ) -> httpx.Response:
        parts = [
            Part("user_email", user_email),
            Part("dataset_name", dataset_name),
            Part("sensor", sensor),
            Part("convert", _flag(convert)),
            Part("is_public", _flag(is_public)),
        ]
        for name, value in (
            ("folder", folder),
            ("team_uuid", team_uuid),
            ("dataset_identifier", dataset_identifier),
        ):
            if value:
                parts.append(Part(name, value))
        if add_to_existing:
            parts.append(Part("add_to_existing", _flag(add_to_existing)))
        parts.append(Part("file", file_path.read_bytes(), file_path.name))
        return self.wire.post_multipart("/api/upload/upload", parts)

    def get_upload_status(self, job_id: str) -> httpx.Response:
        return self.wire.get(f"/api/upload/status/{job_id}")


# -- SCLib_UploadClient_LargeFiles -----------------------------------------------------


def _large_body(
    path: Path,
    file_hash: str,
    user_email: str,
    dataset_name: str,
    sensor: str,
    convert: bool,
    is_public: bool,
    folder: str | None,
    team_uuid: str | None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "filename": path.name,
        "file_size": path.stat().st_size,
        "file_hash": file_hash,
        "user_email": user_email,
        "dataset_name": dataset_name,
        "sensor": sensor,
        "convert": convert,
        "is_public": is_public,
    }
    if folder:
        body["folder"] = folder
    if team_uuid:
        body["team_uuid"] = team_uuid
    return body


def file_sha256(path: Path) -> str:
    """``calculate_file_hash``: SHA-256 hex of the whole file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            digest.update(block)
    return digest.hexdigest()


def read_chunk(path: Path, index: int, chunk_size: int = ORIGINAL_CHUNK) -> bytes:
    """Chunk ``index`` as the clients slice it: their own 100 MiB."""
    with open(path, "rb") as f:
        f.seek(index * chunk_size)
        return f.read(chunk_size)


class LargeWire(_Client):
    """``SCLib_UploadClient_LargeFiles.LargeFileUploadClient`` (requests)."""

    AGENT = "ScientistCloud-LargeFile-Client/2.0.0"

    def __init__(self, base_url: str) -> None:
        self.wire = Wire(base_url, self.AGENT)
        self.chunk_size = ORIGINAL_CHUNK

    def initiate_large_upload(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        *,
        file_hash: str | None = None,
    ) -> httpx.Response:
        """The whole file's SHA-256 first (``file_hash`` saves recomputing it)."""
        return self.wire.post_json(
            "/api/upload/large/initiate",
            _large_body(
                file_path,
                file_hash or file_sha256(file_path),
                user_email,
                dataset_name,
                sensor,
                convert,
                is_public,
                folder,
                team_uuid,
            ),
        )

    def upload_chunk(
        self,
        upload_id: str,
        chunk_index: int,
        chunk_data: bytes,
        *,
        chunk_hash: str | None = None,
    ) -> httpx.Response:
        """``chunk_hash`` (the chunk's SHA-256; a test may send another) then
        the ``chunk`` file part."""
        parts = [
            Part("chunk_hash", chunk_hash or sha256_hex(chunk_data)),
            Part(
                "chunk",
                chunk_data,
                f"chunk_{chunk_index}",
                "application/octet-stream",
            ),
        ]
        return self.wire.post_multipart(
            f"/api/upload/large/chunk/{upload_id}/{chunk_index}", parts
        )

    def upload_file_chunked(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        *,
        resume_upload_id: str | None = None,
        file_hash: str | None = None,
    ) -> str:
        """Initiate (or ask what is missing), send each chunk reading its
        ``message``, complete; the upload id."""
        if resume_upload_id is None:
            started = reads(
                self.initiate_large_upload(
                    file_path,
                    user_email,
                    dataset_name,
                    sensor,
                    convert,
                    is_public,
                    file_hash=file_hash,
                ),
                CHUNK_UPLOAD_RESULT,
            )
            upload_id = started["upload_id"]
            indexes = list(range(started["total_chunks"]))
        else:
            info = reads(self.get_resume_info(resume_upload_id), RESUME_INFO)
            if not info["can_resume"]:
                raise ValueError("Upload cannot be resumed")
            upload_id = resume_upload_id
            indexes = info["missing_chunks"]
        for index in indexes:
            data = read_chunk(file_path, index, self.chunk_size)
            if not data:
                break
            answer = self.upload_chunk(upload_id, index, data)
            answer.raise_for_status()
            assert isinstance(reads(answer, {"message": str})["message"], str)
        self.complete_upload(upload_id).raise_for_status()
        return upload_id

    def upload_file_parallel(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        *,
        file_hash: str | None = None,
        max_workers: int = 4,
    ) -> str:
        """Every chunk read first, then sent from a thread pool."""
        started = reads(
            self.initiate_large_upload(
                file_path,
                user_email,
                dataset_name,
                sensor,
                convert,
                is_public,
                file_hash=file_hash,
            ),
            CHUNK_UPLOAD_RESULT,
        )
        upload_id = started["upload_id"]
        chunks = [
            (i, read_chunk(file_path, i, self.chunk_size))
            for i in range(started["total_chunks"])
        ]
        with ThreadPoolExecutor(max_workers) as pool:
            answers = list(
                pool.map(lambda c: self.upload_chunk(upload_id, c[0], c[1]), chunks)
            )
        for answer in answers:
            answer.raise_for_status()
            reads(answer, {"message": str})
        self.complete_upload(upload_id).raise_for_status()
        return upload_id

    def get_chunk_status(self, upload_id: str) -> httpx.Response:
        return self.wire.get(f"/api/upload/large/status/{upload_id}")

    def get_resume_info(self, upload_id: str) -> httpx.Response:
        return self.wire.get(f"/api/upload/large/resume/{upload_id}")

    def complete_upload(self, upload_id: str) -> httpx.Response:
        return self.wire.post_empty(f"/api/upload/large/complete/{upload_id}")

    def cancel_upload(self, upload_id: str) -> httpx.Response:
        return self.wire.delete(f"/api/upload/large/cancel/{upload_id}")

    def get_upload_limits(self) -> httpx.Response:
        return self.wire.get("/api/upload/large/limits")

    def health_check(self) -> httpx.Response:
        return self.wire.get("/health/large-files")


class AsyncLargeWire:
    """``SCLib_UploadClient_LargeFiles.AsyncLargeFileUploadClient`` (aiohttp):
    every chunk posted concurrently (``max_concurrent`` 8), answers unread."""

    AGENT = "ScientistCloud-LargeFile-Client-Async/2.0.0"

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.headers = _aiohttp_headers(self.AGENT)

    async def upload_file_async(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        *,
        file_hash: str | None = None,
    ) -> str:
        body = _large_body(
            file_path,
            file_hash or file_sha256(file_path),
            user_email,
            dataset_name,
            sensor,
            convert,
            is_public,
            None,
            None,
        )
        async with httpx.AsyncClient(
            base_url=self.base_url, headers=self.headers, timeout=300
        ) as http:
            answer = await http.post(
                "/api/upload/large/initiate",
                content=json.dumps(body).encode(),
                headers={"Content-Type": "application/json"},
            )
            answer.raise_for_status()
            started = answer.json()
            upload_id = started["upload_id"]
            gate = asyncio.Semaphore(8)

            async def send(index: int, data: bytes) -> None:
                async with gate:
                    form, ctype = multipart(
                        [
                            Part("chunk_hash", sha256_hex(data)),
                            Part(
                                "chunk",
                                data,
                                f"chunk_{index}",
                                "application/octet-stream",
                            ),
                        ],
                        aiohttp=True,
                    )
                    sent = await http.post(
                        f"/api/upload/large/chunk/{upload_id}/{index}",
                        content=form,
                        headers={"Content-Type": ctype},
                    )
                    sent.raise_for_status()

            chunks = [
                (i, read_chunk(file_path, i)) for i in range(started["total_chunks"])
            ]
            await asyncio.gather(*(send(i, data) for i, data in chunks))
            done = await http.post(
                f"/api/upload/large/complete/{upload_id}",
                content=b"",
                headers={"Content-Type": "application/octet-stream"},
            )
            done.raise_for_status()
        return str(upload_id)


# -- SCLib_UploadClient (legacy) and SCLib_UploadClient_FastAPI ------------------------


class LegacyWire(_Initiates):
    """``SCLib_UploadClient.ScientistCloudUploadClient``: the requests default
    User-Agent, and a file part without a Content-Type."""

    AGENT = "python-requests/2.34.2"

    def __init__(self, base_url: str) -> None:
        self.wire = Wire(base_url, self.AGENT)

    def upload_local_file(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> httpx.Response:
        parts = [
            Part("user_email", user_email),
            Part("dataset_name", dataset_name),
            Part("sensor", sensor),
            Part("convert", _flag(convert)),
            Part("is_public", _flag(is_public)),
        ]
        if folder:
            parts.append(Part("folder", folder))
        if team_uuid:
            parts.append(Part("team_uuid", team_uuid))
        parts.append(Part("file", file_path.read_bytes(), file_path.name))
        return self.wire.post_multipart("/api/upload/local/upload", parts)


class FastAPIWire(_Initiates):
    """``SCLib_UploadClient_FastAPI.ScientistCloudUploadClient`` (the Standard
    app's client; ``aiohttp=True`` for its async twin)."""

    AGENT = "ScientistCloud-Upload-Client/2.0.0"
    AGENT_ASYNC = "ScientistCloud-Upload-Client-Async/2.0.0"

    def __init__(self, base_url: str, *, aiohttp: bool = False) -> None:
        agent = self.AGENT_ASYNC if aiohttp else self.AGENT
        self.wire = Wire(base_url, agent, aiohttp=aiohttp)

    def upload_local_file(
        self,
        file_path: Path,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
    ) -> httpx.Response:
        parts = [
            Part("user_email", user_email),
            Part("dataset_name", dataset_name),
            Part("sensor", sensor),
            Part("convert", _flag(convert)),
            Part("is_public", _flag(is_public)),
        ]
        if folder:
            parts.append(Part("folder", folder))
        if team_uuid:
            parts.append(Part("team_uuid", team_uuid))
        ctype = None if self.wire.aiohttp else "application/octet-stream"
        parts.append(Part("file", file_path.read_bytes(), file_path.name, ctype))
        return self.wire.post_multipart("/api/upload/local/upload", parts)

    def upload_file_by_path(
        self,
        file_path: str,
        user_email: str,
        dataset_name: str,
        sensor: str,
        convert: bool = True,
        is_public: bool = False,
        folder: str | None = None,
        team_uuid: str | None = None,
        dataset_identifier: str | None = None,
        add_to_existing: bool = False,
    ) -> httpx.Response:
        fields: list[tuple[str, Any]] = [
            ("file_path", file_path),
            ("user_email", user_email),
            ("dataset_name", dataset_name),
            ("sensor", sensor),
            ("convert", convert),
            ("is_public", is_public),
        ]
        for name, value in (
            ("folder", folder),
            ("team_uuid", team_uuid),
            ("dataset_identifier", dataset_identifier),
        ):
            if value:
                fields.append((name, value))
        if add_to_existing:
            fields.append(("add_to_existing", _flag(add_to_existing)))
        return self.wire.post_form("/api/upload/upload-path", fields)

    def estimate_upload_time(
        self, source_type: str, file_size_mb: float | None = None
    ) -> httpx.Response:
        params: list[tuple[str, Any]] = [("source_type", source_type)]
        if file_size_mb:
            params.append(("file_size_mb", file_size_mb))
        return self.wire.get("/api/upload/estimate-time", params)

    def health_check(self) -> httpx.Response:
        return self.wire.get("/health")

    def get_api_info(self) -> httpx.Response:
        return self.wire.get("/")


# -- what the clients do with the answers ----------------------------------------------


def wait_for_completion(
    client: Any, job_id: str, timeout: float = 60.0, poll_interval: float = 0.1
) -> dict[str, Any]:
    """``wait_for_completion``: poll the status until ``completed``, ``failed``
    or ``cancelled``, printing ``progress_percentage`` with ``:.1f``."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        answer = client.get_upload_status(job_id)
        answer.raise_for_status()
        status = reads(answer, JOB_STATUS)
        if status["status"] in ("completed", "failed", "cancelled"):
            return status
        assert f"{status['progress_percentage']:.1f}"
        if time.monotonic() > deadline:
            raise TimeoutError(f"Upload job {job_id} did not complete in {timeout} s")
        time.sleep(poll_interval)


def blake3_hex(path: Path) -> str:
    """BLAKE3 of a file, to compare what was sent with what was stored."""
    from blake3 import blake3

    digest = blake3()
    with open(path, "rb") as f:
        while block := f.read(8 * MIB):
            digest.update(block)
    return str(digest.hexdigest())
