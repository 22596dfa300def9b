"""Everything :class:`Client` and :class:`AsyncClient` share, with no network I/O.

The twins differ only in how they wait: one blocks, the other awaits. So every
route is described here once, as a :class:`Call` (method, path, body, how to parse
the answer), and every multi-step operation (an upload, a resume, waiting for a
job) is a generator here that *yields* steps and receives their results:

* :class:`Call` -- send this request; the driver returns the parsed answer or
  throws the mapped error back into the generator;
* :class:`Sleep` -- wait this long;
* :class:`ReadChunk` -- read and hash one chunk of a local file;
* :class:`Transfer` -- send these chunks, ``parallel`` at a time, while hashing
  the whole file; returns the file's BLAKE3 digest.

``Client`` runs the generators with threads and ``time.sleep``; ``AsyncClient``
with tasks, ``asyncio.sleep`` and ``asyncio.to_thread`` for file reads. Neither
holds any decision of its own, so they cannot drift apart (tuspy's lesson).

Errors the client adds to the tree of :mod:`sclib.errors`::

    SclibError
    ├── ServerError         the server failed (HTTP 5xx or 429; retryable)
    ├── ConnectionFailed    the server could not be reached (retryable)
    └── WaitTimeout         a job did not finish in time (TimeoutError too)

Every other error the server sends (``application/problem+json`` with a
``code``) comes back as the library's own class: ``job_not_found`` is
:class:`~sclib.errors.JobNotFound`, ``upload_busy`` is
:class:`~sclib.errors.UploadBusy`, and so on; the HTTP status decides when the
code is missing or unknown. The raised error carries ``status_code``, ``code``
and ``problem`` (the parsed body) as attributes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Generic, TypeAlias, TypedDict, TypeVar

from pydantic import ValidationError

from sclib.errors import (
    ChecksumMismatch,
    Forbidden,
    InvalidInput,
    NotFound,
    SclibError,
    SourceChanged,
    TooLarge,
    TransferCancelled,
    Unauthorized,
    UploadBusy,
    UploadConflict,
)
from sclib.transfers.hashing import blake3_hex, new_blake3
from sclib.transfers.plan import Chunk, ChunkPlan

from .models import (
    CancelResult,
    ChunkReceipt,
    CompleteResult,
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
from .state import UploadState, UploadStateStore, content_key

if TYPE_CHECKING:
    import httpx

__all__ = [
    "BaseClient",
    "ConnectionFailed",
    "DatasetOptions",
    "FieldOptions",
    "ServerError",
    "UploadOptions",
    "WaitTimeout",
    "error_from_response",
]

T = TypeVar("T")

DEFAULT_BASE_URL = "http://localhost:8000"
DEFAULT_TIMEOUT = 60.0
DEFAULT_STANDARD_LIMIT = 100 * 1000**2
_HASH_BLOCK = 8 * 1024**2


# -- errors -------------------------------------------------------------------------


class ServerError(SclibError):
    """The server failed to answer (HTTP 5xx, or 429 too many requests)."""

    retryable = True


class ConnectionFailed(SclibError):
    """The server could not be reached, or the connection broke mid-request."""

    retryable = True


class WaitTimeout(SclibError, TimeoutError):
    """A job did not finish within the time :meth:`wait_for_completion` was given."""

    retryable = True


_BY_STATUS: dict[int, type[SclibError]] = {
    400: InvalidInput,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: UploadConflict,
    413: TooLarge,
    422: InvalidInput,
    423: UploadBusy,
    429: ServerError,
}


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def _error_classes() -> dict[str, type[SclibError]]:
    """Every SclibError subclass loaded now, by snake_case name (first one wins)."""
    found: dict[str, type[SclibError]] = {}
    todo: list[type[SclibError]] = [SclibError]
    while todo:
        cls = todo.pop(0)
        found.setdefault(_snake(cls.__name__), cls)
        todo.extend(cls.__subclasses__())
    return found


def _make_error(cls: type[SclibError], message: str) -> SclibError:
    # Some classes take other constructor arguments (JobNotFound(job_id),
    # LeaseLost(job_id, worker_id, attempt)): build the instance without their
    # __init__, with the server's message as its text.
    exc = cls.__new__(cls)
    BaseException.__init__(exc, message)
    return exc


def _detail_text(body: Mapping[str, Any]) -> str:
    detail = body.get("detail")
    if isinstance(detail, list):  # FastAPI's own validation errors
        parts = []
        for item in detail:
            if isinstance(item, Mapping):
                loc = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    for key in ("detail", "title", "error", "message"):
        if isinstance(body.get(key), str) and body[key]:
            return str(body[key])
    return ""


def error_from_response(
    status: int,
    content: bytes,
    *,
    what: str = "",
    context: Mapping[str, str] | None = None,
) -> SclibError:
    """The sclib error for an HTTP error answer (not raised: returned)."""
    body: dict[str, Any] = {}
    with contextlib.suppress(ValueError):
        parsed = json.loads(content) if content else None
        if isinstance(parsed, dict):
            body = parsed
    code = body.get("code")
    cls = _error_classes().get(code) if isinstance(code, str) else None
    if cls is None:
        cls = _BY_STATUS.get(status) or (ServerError if status >= 500 else SclibError)
    detail = _detail_text(body)
    if not detail:
        text = content[:200].decode("utf-8", "replace").strip()
        detail = text or "no details"
    message = f"{detail} (HTTP {status}{', ' + what if what else ''})"
    exc = _make_error(cls, message)
    exc.status_code = status  # type: ignore[attr-defined]
    exc.code = code  # type: ignore[attr-defined]
    exc.problem = body  # type: ignore[attr-defined]
    for key, value in (context or {}).items():
        setattr(exc, key, value)
    return exc


# -- steps --------------------------------------------------------------------------


class _Progress:
    """Bytes done of a total, told to a callback (a fraction) and a tqdm bar."""

    def __init__(
        self,
        total: int,
        callback: Callable[[float], object] | None = None,
        *,
        bar: bool = False,
        desc: str = "",
    ) -> None:
        self.total = total
        self.done = 0
        self._callback = callback
        self._lock = threading.Lock()
        self._bar: Any = None
        if bar:
            from tqdm.auto import tqdm

            self._bar = tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=desc or None,
                leave=True,
            )

    @property
    def fraction(self) -> float:
        return 1.0 if not self.total else min(1.0, self.done / self.total)

    def advance(self, n: int) -> None:
        """Add ``n`` bytes (may be negative when a read is repeated)."""
        if not n:
            return
        with self._lock:
            self.done += n
            if self._bar is not None:
                self._bar.update(n)
            if self._callback is not None:
                self._callback(self.fraction)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class _ProgressReader:
    """A binary file that reports how far it was read (for streamed uploads).

    httpx streams a multipart file by calling ``read`` in 64 KiB steps and sizes
    it with ``fileno``; both pass through.
    """

    def __init__(self, raw: IO[bytes], progress: _Progress | None) -> None:
        self._raw = raw
        self._progress = progress
        self._pos = 0
        self.name = getattr(raw, "name", "upload")

    def _moved(self, pos: int) -> None:
        if self._progress is not None:
            self._progress.advance(pos - self._pos)
        self._pos = pos

    def fileno(self) -> int:
        return self._raw.fileno()

    def tell(self) -> int:
        return self._raw.tell()

    def seek(self, offset: int, whence: int = 0) -> int:
        pos = self._raw.seek(offset, whence)
        self._moved(pos)
        return pos

    def read(self, n: int = -1) -> bytes:
        data = self._raw.read(n)
        self._moved(self._pos + len(data))
        return data


@dataclass(frozen=True)
class _FilePart:
    field: str
    path: str
    filename: str
    progress: _Progress | None = None


@dataclass(frozen=True, eq=False)
class Call(Generic[T]):
    """One HTTP request and how to turn its answer into ``T``."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    content: bytes | None = None
    headers: Mapping[str, str] | None = None
    upload: _FilePart | None = None
    #: attributes set on the error raised for this call (e.g. ``job_id``)
    context: Mapping[str, str] = field(default_factory=dict)

    def request_kwargs(self, stack: contextlib.ExitStack) -> dict[str, Any]:
        """Keyword arguments for ``httpx.(Async)Client.request``; a file to stream
        is opened on ``stack``."""
        kwargs: dict[str, Any] = {"method": self.method, "url": self.path}
        if self.params is not None:
            kwargs["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data is not None:
            kwargs["data"] = dict(self.data)
        if self.content is not None:
            kwargs["content"] = self.content
        if self.headers:
            kwargs["headers"] = dict(self.headers)
        if self.upload is not None:
            part = self.upload
            raw = stack.enter_context(open(part.path, "rb"))  # noqa: SIM115
            reader = _ProgressReader(raw, part.progress)
            kwargs["files"] = {
                part.field: (part.filename, reader, "application/octet-stream")
            }
        return kwargs

    def connection_failed(self, base_url: str, exc: Exception) -> ConnectionFailed:
        """The error for a request that never got an answer."""
        return ConnectionFailed(
            f"{self.method} {base_url}{self.path} failed: {exc or type(exc).__name__}"
        )

    def result(self, response: httpx.Response) -> T:
        """The parsed answer, or the mapped error raised."""
        if not response.is_success:
            raise error_from_response(
                response.status_code,
                response.content,
                what=f"{self.method} {self.path}",
                context=self.context,
            )
        data: Any = None
        if response.content:
            try:
                data = response.json()
            except ValueError as exc:
                raise ServerError(
                    f"{self.method} {self.path} answered HTTP "
                    f"{response.status_code} with a body that is not JSON"
                ) from exc
        try:
            return self.parse(data)
        except ValidationError as exc:
            raise ServerError(
                f"unexpected answer to {self.method} {self.path}: {exc}"
            ) from exc


@dataclass(frozen=True)
class Sleep:
    """Wait ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class ReadChunk:
    """Read one chunk of a local file; the result is ``(data, blake3 hex)``."""

    path: str
    chunk: Chunk


@dataclass(frozen=True, eq=False)
class Transfer:
    """Send ``chunks`` with ``parallel`` workers, each running ``send(chunk)``,
    while one more reads the whole file for its BLAKE3; the result is that digest.
    """

    path: str
    size: int
    chunks: Sequence[Chunk]
    parallel: int
    send: Callable[[Chunk], Generator[Any, Any, None]]


Step: TypeAlias = Call[Any] | Sleep | ReadChunk | Transfer
Flow: TypeAlias = Generator[Step, Any, T]


@dataclass(frozen=True)
class Done(Generic[T]):
    """A flow finished with ``value``."""

    value: T


def advance(
    flow: Generator[Any, Any, T], value: Any, error: BaseException | None
) -> Step | Done[T]:
    """Resume ``flow`` with the last step's result (or error); its next step."""
    try:
        if error is not None:
            return flow.throw(error)  # type: ignore[no-any-return]
        return flow.send(value)  # type: ignore[no-any-return]
    except StopIteration as stop:
        return Done(stop.value)


def first_error(errors: Sequence[BaseException | None]) -> BaseException | None:
    """The error that stopped a transfer: not the ones it caused by stopping."""
    found = [e for e in errors if e is not None]
    for exc in found:
        if not isinstance(exc, TransferCancelled):
            return exc
    return found[0] if found else None


def read_chunk(path: str, chunk: Chunk) -> tuple[bytes, str]:
    """``chunk`` of the file at ``path`` (``os.pread``) and its BLAKE3 digest."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        parts: list[bytes] = []
        got = 0
        while got < chunk.length:
            if hasattr(os, "pread"):
                part = os.pread(fd, chunk.length - got, chunk.offset + got)
            else:  # pragma: no cover - Windows
                os.lseek(fd, chunk.offset + got, os.SEEK_SET)
                part = os.read(fd, chunk.length - got)
            if not part:
                raise SourceChanged(
                    f"{path} ended at {chunk.offset + got} bytes while reading chunk "
                    f"{chunk.index}; the file changed since the upload started"
                )
            parts.append(part)
            got += len(part)
    finally:
        os.close(fd)
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    return data, blake3_hex(data)


def hash_file(path: str, size: int, stopped: Callable[[], bool]) -> str:
    """The BLAKE3 digest of the file, read in order in 8 MiB blocks.

    ``stopped()`` is checked between blocks: the transfer it belongs to failed.
    """
    hasher = new_blake3()
    buf = bytearray(_HASH_BLOCK)
    view = memoryview(buf)
    total = 0
    with open(path, "rb", buffering=0) as fh:
        while True:
            if stopped():
                raise TransferCancelled(f"hashing {path} stopped")
            n = fh.readinto(view)
            if not n:
                break
            hasher.update(view[:n])
            total += n
    if total != size:
        raise SourceChanged(f"{path} is {total} bytes now, {size} when it started")
    return str(hasher.hexdigest())


def backoff(attempt: int) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): exponential, jittered."""
    return min(8.0, 0.25 * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)


# -- options ------------------------------------------------------------------------


class DatasetOptions(TypedDict, total=False):
    """The dataset fields every upload and import takes (the seed's names)."""

    user_email: str | None
    dataset_name: str | None
    sensor: str | None
    convert: bool
    is_public: bool
    is_public_downloadable: bool
    folder: str | None
    team_uuid: str | None


class FieldOptions(DatasetOptions, total=False):
    """The dataset fields of an upload: where in which dataset the file goes."""

    relative_path: str | None
    tags: str | Sequence[str] | None
    dataset_identifier: str | None
    add_to_existing: bool


class UploadOptions(FieldOptions, total=False):
    """What :meth:`Client.upload_file` takes besides the path.

    ``dataset_name`` defaults to the file (or folder) name. ``progress_callback``
    gets the fraction done (0..1), from worker threads in :class:`Client`;
    ``progress=True`` draws a tqdm bar. ``parallel`` and ``chunk_size`` tune
    chunked uploads (memory is about ``parallel x chunk_size``); ``chunked``
    forces (True) or forbids (False) the chunked protocol instead of choosing by
    the server's ``standard_upload_limit``.
    """

    progress_callback: Callable[[float], object] | None
    progress: bool
    parallel: int | None
    chunk_size: int | None
    chunked: bool | None


_FIELD_KEYS = tuple(FieldOptions.__annotations__)
_UPLOAD_KEYS = tuple(UploadOptions.__annotations__)


def _check_keys(options: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise TypeError(f"{where}() got unexpected keyword argument(s): {unknown}")


def _dataset_values(options: Mapping[str, Any], default_name: str) -> dict[str, Any]:
    """The dataset fields to send, typed (bools as bools, tags as a list)."""
    values: dict[str, Any] = {}
    for key in _FIELD_KEYS:
        value = options.get(key)
        if key == "dataset_name" and not value:
            value = default_name
        if value is None:
            continue
        if key == "tags":
            items = value.split(",") if isinstance(value, str) else value
            value = [str(t).strip() for t in items if str(t).strip()]
        values[key] = value
    return values


def _form(values: Mapping[str, Any]) -> dict[str, str]:
    """Dataset fields as multipart form text."""
    form: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, bool):
            form[key] = "true" if value else "false"
        elif isinstance(value, list):
            form[key] = ",".join(value)
        else:
            form[key] = str(value)
    return form


def _fields_digest(values: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def _walk(root: Path) -> Iterator[tuple[Path, str]]:
    """Every regular file under ``root`` with its folder relative to ``root``."""
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        rel = Path(folder).relative_to(root).as_posix()
        for name in sorted(files):
            path = Path(folder, name)
            if path.is_file():
                yield path, "" if rel == "." else rel


def _parse_job_list(data: Any) -> JobList:
    if isinstance(data, list):
        return JobList(jobs=[JobInfo.model_validate(j) for j in data])
    return JobList.model_validate(data)


# -- the client's logic -------------------------------------------------------------


class BaseClient:
    """Configuration, request building, answer parsing and the upload flows."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        token: str | None = None,
        *,
        parallel: int = 4,
        state_dir: str | os.PathLike[str] | None = None,
        retries: int = 5,
    ) -> None:
        if parallel < 1:
            raise InvalidInput(f"parallel must be at least 1, got {parallel}")
        if retries < 1:
            raise InvalidInput(f"retries must be at least 1, got {retries}")
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.parallel = parallel
        self.retries = retries
        self.state = UploadStateStore(state_dir)
        self._limits: Limits | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_url!r})"

    def _http_options(self, timeout: Any, verify: Any) -> dict[str, Any]:
        """What ``httpx.Client`` and ``httpx.AsyncClient`` are built with."""
        return {
            "base_url": self.base_url,
            "headers": self._headers(),
            "timeout": timeout,
            "verify": verify,
            "follow_redirects": False,
        }

    def _headers(self) -> dict[str, str]:
        from sclib import __version__

        headers = {"User-Agent": f"sclib/{__version__}", "Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

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
        _check_keys(options, _FIELD_KEYS, f"initiate_{source_type}_upload")
        body = {
            "source_type": source_type,
            "source_config": {k: v for k, v in source_config.items() if v is not None},
            **_dataset_values(options, default_name),
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
        _check_keys(options, _FIELD_KEYS, "initiate_large_upload")
        values = _dataset_values(options, filename)
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
        self, upload_id: str, index: int, data: bytes, digest: str | None = None
    ) -> Call[ChunkReceipt]:
        digest = digest or blake3_hex(data)
        return Call(
            "POST",
            f"/api/upload/large/chunk/{_seg(upload_id)}/{index}",
            ChunkReceipt.model_validate,
            content=data,
            headers={
                "Content-Type": "application/octet-stream",
                "X-Chunk-Hash": f"blake3:{digest}",
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

    # -- flows -----------------------------------------------------------------------

    def _limits_flow(self) -> Flow[Limits]:
        if self._limits is None:
            try:
                self._limits = yield self._req_limits()
            except NotFound:  # an older server without the route
                self._limits = Limits(standard_upload_limit=DEFAULT_STANDARD_LIMIT)
        return self._limits

    def _upload_flow(
        self, file_path: str | os.PathLike[str], options: UploadOptions
    ) -> Flow[UploadResult]:
        _check_keys(options, _UPLOAD_KEYS, "upload_file")
        path = os.path.abspath(file_path)
        size = _regular_file(path).st_size
        progress = _Progress(
            size,
            options.get("progress_callback"),
            bar=bool(options.get("progress")),
            desc=os.path.basename(path),
        )
        try:
            return (yield from self._file_flow(path, options, progress))
        finally:
            progress.close()

    def _file_flow(
        self, path: str, options: UploadOptions, progress: _Progress
    ) -> Flow[UploadResult]:
        st = _regular_file(path)
        chunked = options.get("chunked")
        if chunked is None:
            limits = yield from self._limits_flow()
            chunked = st.st_size > limits.standard_upload_limit
        if chunked and st.st_size > 0:
            return (yield from self._chunked_flow(path, st, options, progress))
        filename = os.path.basename(path)
        values = _dataset_values(options, filename)
        start = progress.done
        result: UploadResult = yield Call(
            "POST",
            "/api/upload/upload",
            UploadResult.model_validate,
            data=_form(values),
            upload=_FilePart("file", path, filename, progress),
        )
        progress.advance(start + st.st_size - progress.done)
        return result

    def _chunked_flow(
        self,
        path: str,
        st: os.stat_result,
        options: UploadOptions,
        progress: _Progress,
    ) -> Flow[UploadResult]:
        filename = os.path.basename(path)
        size = st.st_size
        values = _dataset_values(options, filename)
        digest = _fields_digest(values)
        parallel = options.get("parallel") or self.parallel
        if parallel < 1:
            raise InvalidInput(f"parallel must be at least 1, got {parallel}")
        key = content_key(self.base_url, path, st)
        saved = self.state.load(key)
        missing: list[int] | None = None
        if saved is not None and saved.fields == digest and saved.size == size:
            missing = yield from self._missing_flow(saved)
            if missing is None:
                self.state.remove(key)
        if saved is None or missing is None:
            started: LargeUpload = yield self._req_large_initiate(
                filename, size, values, options.get("chunk_size")
            )
            saved = UploadState(
                upload_id=started.upload_id,
                chunk_size=started.chunk_size,
                total_chunks=started.total_chunks,
                size=size,
                path=path,
                server=self.base_url,
                fields=digest,
            )
            _check_plan(saved)
            self.state.save(key, saved)
            missing = list(range(saved.total_chunks))
        plan = ChunkPlan(size, saved.chunk_size)
        chunks = [plan.chunk(i) for i in sorted(set(missing))]
        progress.advance(size - sum(c.length for c in chunks))
        upload_id = saved.upload_id
        file_blake3: str = yield Transfer(
            path,
            size,
            chunks,
            parallel,
            lambda chunk: self._chunk_flow(upload_id, path, chunk, progress),
        )
        now = os.stat(path)
        if (now.st_size, now.st_mtime_ns) != (st.st_size, st.st_mtime_ns):
            self.state.remove(key)
            raise SourceChanged(
                f"{path} changed during the upload; it was not completed"
            )
        try:
            done: CompleteResult = yield self._req_complete(upload_id, file_blake3)
        except (NotFound, ChecksumMismatch):
            self.state.remove(key)  # gone, or not what was sent: start over next time
            raise
        self.state.remove(key)
        return UploadResult(
            job_id=done.job_id,
            status=done.status,
            upload_type="chunked",
            dataset_uuid=done.dataset_uuid,
            message=done.message,
            upload_id=upload_id,
            file_blake3=done.file_blake3 or file_blake3,
        )

    def _missing_flow(self, saved: UploadState) -> Flow[list[int] | None]:
        """The chunks the server still lacks, or ``None`` if it cannot resume."""
        try:
            info: ResumeInfo = yield self._req_resume(saved.upload_id)
        except (NotFound, UploadConflict):
            return None
        if info.total_chunks != saved.total_chunks:
            return None
        if not info.can_resume and info.missing_chunks:
            return None
        return list(info.missing_chunks)

    def _chunk_flow(
        self, upload_id: str, path: str, chunk: Chunk, progress: _Progress
    ) -> Flow[None]:
        """Send one chunk, retrying what a retry can fix with backoff."""
        data: bytes | None = None
        digest = ""
        attempt = 0
        while True:
            if data is None:
                data, digest = yield ReadChunk(path, chunk)
            try:
                yield self._req_chunk(upload_id, chunk.index, data, digest)
            except SclibError as exc:
                attempt += 1
                if not exc.retryable or attempt >= self.retries:
                    raise
                if isinstance(exc, ChecksumMismatch):
                    data = None  # read it again: the bytes may have been wrong here
                yield Sleep(backoff(attempt))
                continue
            progress.advance(chunk.length)
            return

    def _directory_flow(
        self, path: str | os.PathLike[str], options: UploadOptions
    ) -> Flow[list[UploadResult]]:
        _check_keys(options, _UPLOAD_KEYS, "upload_directory")
        root = Path(os.path.abspath(path))
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a folder")
        files = list(_walk(root))
        if not files:
            raise InvalidInput(f"{root} holds no files")
        base = (options.get("relative_path") or "").strip("/")
        dataset = options.get("dataset_identifier")
        common: UploadOptions = {**options}
        common["dataset_name"] = options.get("dataset_name") or root.name
        total = sum(p.stat().st_size for p, _ in files)
        progress = _Progress(
            total,
            options.get("progress_callback"),
            bar=bool(options.get("progress")),
            desc=root.name,
        )
        results: list[UploadResult] = []
        try:
            for file, rel in files:
                one: UploadOptions = {**common}
                one["relative_path"] = "/".join(p for p in (base, rel) if p) or None
                if dataset:
                    one["dataset_identifier"] = dataset
                    one["add_to_existing"] = True
                result = yield from self._file_flow(str(file), one, progress)
                results.append(result)
                dataset = dataset or result.dataset_uuid
        finally:
            progress.close()
        return results

    def _wait_flow(
        self,
        job_id: str,
        timeout: float | None,
        poll_interval: float,
        progress: bool,
    ) -> Flow[UploadStatus]:
        if poll_interval <= 0:
            raise InvalidInput(f"poll_interval must be positive, got {poll_interval}")
        deadline = None if timeout is None else time.monotonic() + timeout
        bar: Any = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=100.0, desc=job_id, unit="%", bar_format=_PERCENT_BAR)
        try:
            while True:
                status: UploadStatus = yield self._req_status(job_id)
                if bar is not None:
                    bar.n = min(100.0, max(0.0, status.progress_percentage))
                    bar.set_postfix_str(status.status, refresh=True)
                if status.finished:
                    return status
                wait = poll_interval
                if deadline is not None:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise WaitTimeout(
                            f"job {job_id} is still {status.status} after {timeout} s"
                        )
                    wait = min(wait, left)
                yield Sleep(wait)
        finally:
            if bar is not None:
                bar.close()


_PERCENT_BAR = "{desc}: {percentage:3.0f}%|{bar}| {elapsed} {postfix}"


def _seg(value: str) -> str:
    """``value`` as one URL path segment (ids never contain ``/``)."""
    from urllib.parse import quote

    if not value:
        raise InvalidInput("an id must not be empty")
    return quote(value, safe="")


def _as_dict(data: Any) -> dict[str, Any]:
    return dict(data) if isinstance(data, Mapping) else {}


def _regular_file(path: str) -> os.stat_result:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise InvalidInput(f"no such file: {path}") from None
    if os.path.isdir(path):
        raise InvalidInput(f"{path} is a folder; use upload_directory()")
    return st


def _check_plan(saved: UploadState) -> None:
    expected = max(1, ChunkPlan(saved.size, saved.chunk_size).count)
    if saved.chunk_size <= 0 or saved.total_chunks != expected:
        raise ServerError(
            f"the server planned {saved.total_chunks} chunks of {saved.chunk_size} "
            f"bytes for {saved.size} bytes; expected {expected}"
        )
