"""The steps a flow yields, and what a driver needs to carry them out.

Every multi-step operation (an upload, a resume, waiting for a job) is a
generator in :mod:`sclib.client._base` that *yields* steps and receives their
results:

* :class:`Call` -- send this request; the driver returns the parsed answer or
  throws the mapped error back into the generator;
* :class:`Sleep` -- wait this long;
* :class:`ReadChunk` -- read and hash one chunk of a local file;
* :class:`Transfer` -- send these chunks, ``parallel`` at a time, while (if
  asked) one more worker hashes what the chunks do not cover; returns what that
  worker returned;
* :class:`Fetch` -- send this request and stream the answer's body into a
  partial file (a download);
* :class:`Work` -- run this blocking function (file work: hashing, renaming)
  and return its result.

``Client`` runs the generators with threads and ``time.sleep``; ``AsyncClient``
with tasks, ``asyncio.sleep`` and ``asyncio.to_thread`` for file reads and
:class:`Work`. Both
use :func:`advance`, :func:`first_error`, :func:`read_chunk` and
:func:`hash_file` from here, and :meth:`Call.request_kwargs` and
:meth:`Call.result` to build a request and read its answer.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import (
    AsyncIterator,
    Callable,
    Generator,
    Iterator,
    Mapping,
    Sequence,
)
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any, Generic, TypeAlias, TypeVar

from pydantic import ValidationError

from sclib.errors import InvalidInput, SourceChanged, TransferCancelled
from sclib.transfers.hashing import (
    CV_PREFIX,
    ChunkTree,
    OrderedHasher,
    blake3_file,
    blake3_hex,
    chunk_cv,
)
from sclib.transfers.plan import Chunk

from ._errors import ConnectionFailed, ServerError, error_from_response

if TYPE_CHECKING:
    import httpx

    from ._download import PartialFile

__all__ = [
    "BufferPool",
    "Call",
    "Done",
    "Fetch",
    "FilePart",
    "Flow",
    "Progress",
    "ReadChunk",
    "Sleep",
    "Step",
    "Transfer",
    "Work",
    "advance",
    "first_error",
    "hash_file",
    "progress_for",
    "read_chunk",
]

T = TypeVar("T")


class Progress:
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

    def skip(self, n: int) -> None:
        """Count ``n`` bytes that were already there (a resumed upload's chunks,
        a file sent before): done, but not moved in this run, so the bar's rate
        leaves them out."""
        if not n:
            return
        with self._lock:
            self.done += n
            bar = self._bar
            if bar is not None:
                bar.n += n
                bar.last_print_n += n
                bar.initial += n
                bar.refresh()
            if self._callback is not None:
                self._callback(self.fraction)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_for(
    total: int,
    progress: object,
    callback: Callable[[float], object] | None = None,
    *,
    desc: str = "",
) -> Progress:
    """The :class:`Progress` that ``progress=`` asks for: ``True`` a bar labelled
    ``desc``, a callable the fraction done (0..1), ``False``/``None`` nothing;
    ``callback`` is the older ``progress_callback=`` spelling, still taken."""
    if progress is None or isinstance(progress, bool):
        return Progress(total, callback, bar=bool(progress), desc=desc)
    if callable(progress):
        if callback is not None:
            raise InvalidInput(
                "progress is a callable and progress_callback is set too: pass one"
            )
        return Progress(total, progress, desc=desc)
    raise InvalidInput(
        f"progress must be True, False or a callable taking the fraction done "
        f"(0..1), got {progress!r}"
    )


class _ProgressReader:
    """A binary file that reports how far it was read (for streamed uploads).

    httpx streams a multipart file by calling ``read`` in 64 KiB steps and sizes
    it with ``fileno``; both pass through.
    """

    def __init__(self, raw: IO[bytes], progress: Progress | None) -> None:
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
class FilePart:
    field: str
    path: str
    filename: str
    progress: Progress | None = None


@dataclass(frozen=True, eq=False)
class Call(Generic[T]):
    """One HTTP request and how to turn its answer into ``T``."""

    method: str
    path: str
    parse: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    data: Mapping[str, str] | None = None
    content: bytes | bytearray | memoryview | None = None
    headers: Mapping[str, str] | None = None
    upload: FilePart | None = None
    #: attributes set on the error raised for this call (e.g. ``job_id``)
    context: Mapping[str, str] = field(default_factory=dict)

    def request_kwargs(
        self, stack: contextlib.ExitStack, *, asynchronous: bool = False
    ) -> dict[str, Any]:
        """Keyword arguments for ``httpx.(Async)Client.request``; a file to stream
        is opened on ``stack``. A raw body goes as 1 MiB views with its length
        given: httpx then sends it without copying (a whole ``bytes`` body is
        re-sliced, so copied, after every partial socket write)."""
        kwargs: dict[str, Any] = {"method": self.method, "url": self.path}
        if self.params is not None:
            kwargs["params"] = {k: v for k, v in self.params.items() if v is not None}
        if self.json is not None:
            kwargs["json"] = self.json
        if self.data is not None:
            kwargs["data"] = dict(self.data)
        headers = dict(self.headers or {})
        if self.content is not None:
            body = self.content
            kwargs["content"] = _aslices(body) if asynchronous else _slices(body)
            headers["Content-Length"] = str(len(body))
        if headers:
            kwargs["headers"] = headers
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


class BufferPool:
    """Chunk buffers that are reused instead of allocated per chunk.

    A fresh 32 MiB ``bytes`` per chunk costs a page fault per 4 KiB page every
    time (allocations that large are mapped and unmapped by the C library), about
    as much CPU as reading the chunk; a buffer taken back from the pool is already
    mapped. Holds at most as many buffers as were ever taken at once."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            for i, buf in enumerate(self._free):
                if len(buf) >= size:
                    return self._free.pop(i)
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            self._free.append(buf)


@dataclass(frozen=True, eq=False)
class ReadChunk:
    """Read one chunk of a local file; the result is ``(data, digest)``.

    The digest is the chunk's BLAKE3 hex, or with ``tree`` its chaining value
    (``cv:<hex>``, see :mod:`sclib.transfers.hashing`). With ``feed``, the chunk
    is also given to that whole-file hasher (once), so the file need not be read a
    second time for its digest. With ``pool``, ``data`` is a view of a buffer
    taken from it, which the reader gives back once the chunk is sent."""

    path: str
    chunk: Chunk
    feed: OrderedHasher | None = None
    tree: bool = False
    pool: BufferPool | None = None


@dataclass(frozen=True, eq=False)
class Transfer:
    """Send ``chunks`` with ``parallel`` workers, each running ``send(chunk)``.

    With ``hasher``, one more worker runs ``hasher(stopped)`` (it hashes what the
    chunks do not: the whole file, or the chunks an earlier run sent) and its
    result is the step's; without, the result is ``""``. ``stopped()`` turns true
    when the transfer failed."""

    path: str
    size: int
    chunks: Sequence[Chunk]
    parallel: int
    send: Callable[[Chunk], Generator[Any, Any, None]]
    hasher: Callable[[Callable[[], bool]], str] | None = None


@dataclass(frozen=True, eq=False)
class Fetch:
    """Send ``call`` and stream a 200 or 206 answer into ``sink`` (its
    :meth:`~sclib.client._download.PartialFile.begin` with the status and
    headers, then :meth:`~sclib.client._download.PartialFile.write` per piece of
    the body); any other answer is raised as the mapped error. The result is
    ``None``; what arrived is in the sink, even when the connection broke."""

    call: Call[Any]
    sink: PartialFile

    def check(self, response: httpx.Response) -> None:
        """Raise the error for an answer that is not a file (read it first)."""
        if response.status_code not in (200, 206):
            self.call.result(response)  # raises the mapped error
            raise ServerError(
                f"{self.call.method} {self.call.path} answered HTTP "
                f"{response.status_code}, not a file"
            )


@dataclass(frozen=True, eq=False)
class Work(Generic[T]):
    """Run ``function()`` (blocking file work) and return its result."""

    function: Callable[[], T]


Step: TypeAlias = Call[Any] | Sleep | ReadChunk | Transfer | Fetch | Work[Any]
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


def read_chunk(
    path: str,
    chunk: Chunk,
    feed: OrderedHasher | None = None,
    *,
    tree: bool = False,
    pool: BufferPool | None = None,
) -> tuple[memoryview, str]:
    """``chunk`` of the file at ``path`` and its digest (see :class:`ReadChunk`);
    given to ``feed`` too, if it did not have it yet. Never use ``feed`` with
    ``pool``: the feed may keep a chunk that arrived early, whose buffer the pool
    would hand out again."""
    buf = pool.take(chunk.length) if pool is not None else bytearray(chunk.length)
    try:
        view = memoryview(buf)[: chunk.length]
        _read_at(path, chunk, view)
        if feed is not None:
            feed.offer(chunk.index, view)
        digest = (
            CV_PREFIX + chunk_cv(view, chunk.offset).hex() if tree else blake3_hex(view)
        )
    except BaseException:
        if pool is not None:
            pool.give(buf)
        raise
    return view, digest


def _read_at(path: str, chunk: Chunk, view: memoryview) -> None:
    """Fill ``view`` with the file's bytes of ``chunk``."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
    try:
        got = 0
        while got < chunk.length:
            if hasattr(os, "preadv"):
                n = os.preadv(fd, [view[got:]], chunk.offset + got)
            else:  # pragma: no cover - Windows
                os.lseek(fd, chunk.offset + got, os.SEEK_SET)
                n = os.readv(fd, [view[got:]])
            if not n:
                raise SourceChanged(
                    f"{path} ended at {chunk.offset + got} bytes while reading chunk "
                    f"{chunk.index}; the file changed since the upload started"
                )
            got += n
    finally:
        os.close(fd)


def hash_chunks(
    path: str, chunks: Sequence[Chunk], tree: ChunkTree, stopped: Callable[[], bool]
) -> str:
    """Add the chaining values of ``chunks`` of the file to ``tree`` (a resumed
    upload's chunks that the server already has); returns ``""``."""
    buf = bytearray(max((c.length for c in chunks), default=0))
    for chunk in chunks:
        if stopped():
            raise TransferCancelled(f"hashing {path} stopped")
        view = memoryview(buf)[: chunk.length]
        _read_at(path, chunk, view)
        tree.add(chunk.index, chunk_cv(view, chunk.offset))
    return ""


_SLICE = 1024**2


def _slices(data: bytes | bytearray | memoryview) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), _SLICE):
        yield view[start : start + _SLICE]


async def _aslices(data: bytes | bytearray | memoryview) -> AsyncIterator[memoryview]:
    for part in _slices(data):
        yield part


def hash_file(path: str, size: int, stopped: Callable[[], bool]) -> str:
    """The BLAKE3 digest of the file (:func:`~sclib.transfers.hashing.blake3_file`).

    ``stopped()`` is checked before and between blocks: the transfer it belongs
    to failed.
    """

    def check(_: int = 0) -> None:
        if stopped():
            raise TransferCancelled(f"hashing {path} stopped")

    check()
    digest, total = blake3_file(path, on_progress=check)
    if total != size:
        raise SourceChanged(f"{path} is {total} bytes now, {size} when it started")
    return digest
