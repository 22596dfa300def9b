"""Request bodies streamed to disk, never held whole in memory.

Starlette's ``request.form()`` spools an uploaded file to a temporary file, which
the route would then copy again into place: twice the disk traffic, and a second
full copy on disk. Here the body is parsed as it arrives (python-multipart's
streaming parser, the one FastAPI itself uses), and the file part's bytes go
straight to the upload's staging file in batches of :data:`BATCH` bytes, written in
a worker thread so the event loop never blocks on disk. Memory per request is
about one batch, whatever the file size.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool

from sclib.errors import InvalidInput, TooLarge

T = TypeVar("T")

__all__ = [
    "BATCH",
    "BufferBudget",
    "Sink",
    "StreamedForm",
    "batch_size",
    "pump",
    "receive_multipart",
    "run_to_the_end",
]

BATCH = 8 * 1024**2
_MAX_FIELD = 64 * 1024
_SLACK = 256 * 1024  # room past a batch for the piece that fills it
_MAX_FIELDS = 64


def batch_size(content_length: str | None, batch: int = BATCH) -> tuple[int, bool]:
    """The buffer a body needs, and whether that is exact: all of the body when
    its ``Content-Length`` says it is smaller than a batch (a 100 KB file gets
    100 KB, not 8 MiB), else a batch."""
    if content_length is not None and content_length.isdigit():
        length = int(content_length)
        if length <= batch:
            return max(1, length), True
    return batch, False


class BufferBudget:
    """A cap on the bytes every request of one server buffers at once.

    A request takes its buffer's size from the budget before it reads its body
    and gives it back when done; past the cap, it waits (back-pressure: the
    client's bytes stay in the network until the server has room), so memory
    stays bounded however many clients send at once. One per app, used from its
    event loop only.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0
        self._cond: asyncio.Condition | None = None

    @contextlib.asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[None]:
        size = min(size, self.limit)  # one request larger than the cap still runs
        if self._cond is None:
            self._cond = asyncio.Condition()
        cond = self._cond
        async with cond:
            await cond.wait_for(lambda: self.held + size <= self.limit)
            self.held += size
        try:
            yield
        finally:
            async with cond:
                self.held -= size
                cond.notify_all()


class Sink(Protocol):
    """Where a file part's bytes go (a :class:`~sclib.server.uploads.StagedWrite`)."""

    def write(self, data: bytes | bytearray | memoryview) -> None: ...


@dataclass
class StreamedForm:
    """The text fields of a multipart body, and what its file part was."""

    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    file_bytes: int = 0
    file_seen: bool = False


_KEEP = 8  # batch buffers kept for the next requests (at most 72 MiB)
_free: list[bytearray] = []
_free_lock = threading.Lock()


def _take(size: int) -> bytearray:
    """A buffer of ``size`` bytes: a kept one if there is one. A fresh 9 MiB
    buffer per request costs a page fault per 4 KiB page as it is zeroed and
    filled (the C library maps and unmaps allocations that large); with 32 MiB
    chunks, that was about a tenth of the server's CPU time per upload."""
    with _free_lock:
        for i, buf in enumerate(_free):
            if len(buf) == size:
                return _free.pop(i)
    return bytearray(size)


def _give(buf: bytearray) -> None:
    with _free_lock:
        if len(_free) < _KEEP:
            _free.append(buf)


class _Batch:
    """One reusable buffer per request: bytes are copied in once and written out
    from it, with no reallocation as it fills (a growing ``bytearray`` is
    reallocated, and so copied, over and over on its way to 8 MiB). The buffer
    comes from, and goes back to (:meth:`release`), a small pool shared by the
    requests of this process."""

    def __init__(self, size: int, *, exact: bool = False) -> None:
        self.size = size
        # a body whose length is known fits exactly: no slack to hold, and the
        # buffer (sized to that one body) is not kept for the next request
        self._exact = exact
        self._buf = bytearray(size) if exact else _take(size + _SLACK)
        self._view = memoryview(self._buf)
        self.pos = 0
        self._extra: list[bytes] = []

    def release(self) -> None:
        """Give the buffer back. Only once no write from it can be running:
        :meth:`flush` returns (or raises) only after its worker thread finished,
        even when the request is cancelled (:func:`_write_in_thread`)."""
        if self._buf:
            self._view.release()
            if not self._exact:
                _give(self._buf)
            self._buf = bytearray()
            self._view = memoryview(self._buf)

    def add(self, data: bytes | memoryview) -> None:
        n = len(data)
        if not self._extra and self.pos + n <= len(self._buf):
            self._view[self.pos : self.pos + n] = data
            self.pos += n
        else:  # rare: a piece larger than the slack
            self._extra.append(bytes(data))

    @property
    def full(self) -> bool:
        return self.pos >= self.size or bool(self._extra)

    def __len__(self) -> int:
        return self.pos + sum(len(e) for e in self._extra)

    async def flush(self, sink: Sink) -> int:
        """Write what is buffered (in a worker thread); the buffer is reused."""
        n = len(self)
        if self.pos:
            await _write_in_thread(sink, self._view[: self.pos])
        for extra in self._extra:
            await _write_in_thread(sink, extra)
        self.pos = 0
        self._extra = []
        return n


async def _write_in_thread(sink: Sink, data: bytes | memoryview) -> None:
    """``sink.write(data)`` in a worker thread (:func:`run_to_the_end`): a
    cancelled request never leaves a thread writing from a buffer the pool would
    hand to the next request."""
    await run_to_the_end(sink.write, data)


async def run_to_the_end(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a worker thread; returns only once the thread is done,
    even if this task is cancelled meanwhile (the cancellation is raised after).
    ``run_in_threadpool`` alone returns at once on a plain asyncio cancellation
    (as at a server's shutdown) and leaves the thread running while the
    request's cleanup closes what it uses (a buffer, a file descriptor, a
    lock)."""
    task = asyncio.ensure_future(run_in_threadpool(fn, *args))
    cancelled = False
    while not task.done():
        try:
            await asyncio.shield(task)
        except asyncio.CancelledError:
            cancelled = True  # keep waiting for the thread, then re-raise
    if cancelled:
        raise asyncio.CancelledError
    return task.result()


async def pump(
    stream: AsyncIterator[bytes],
    sink: Sink,
    batch: int = BATCH,
    *,
    exact: bool = False,
) -> int:
    """Write a raw body to ``sink`` in batches of ``batch`` bytes (``exact``: the
    body is that long at most, so the buffer holds no slack); returns the bytes
    written."""
    buffer = _Batch(batch, exact=exact)
    total = 0
    try:
        async for piece in stream:
            buffer.add(piece)
            total += len(piece)
            if buffer.full:
                await buffer.flush(sink)
        await buffer.flush(sink)
    finally:
        buffer.release()
    return total


async def receive_multipart(
    stream: AsyncIterator[bytes],
    content_type: str,
    file_field: str,
    open_sink: Callable[[str | None, dict[str, str]], Awaitable[Sink]],
    *,
    batch: int = BATCH,
    exact: bool = False,
) -> StreamedForm:
    """Parse a multipart body, streaming the part named ``file_field`` to the sink
    that ``open_sink(filename, fields_so_far)`` returns (called once, when the part
    starts). Other parts are text fields, each at most 64 KiB."""
    ctype, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if ctype != b"multipart/form-data" or not boundary:
        raise InvalidInput(
            "the body must be multipart/form-data with a boundary "
            f"(got Content-Type {content_type!r})"
        )
    form = StreamedForm()
    state: dict[str, Any] = {
        "name": None,
        "filename": None,
        "header": b"",
        "value": b"",
    }
    headers: dict[bytes, bytes] = {}
    pending = _Batch(batch, exact=exact)  # file bytes not yet written
    value = bytearray()  # the current text field
    in_file = False
    need_sink = False

    def on_part_begin() -> None:
        headers.clear()
        value.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["header"] += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        state["value"] += data[start:end]

    def on_header_end() -> None:
        headers[state["header"].lower()] = state["value"]
        state["header"] = b""
        state["value"] = b""

    def on_headers_finished() -> None:
        nonlocal in_file, need_sink
        _, disp = parse_options_header(headers.get(b"content-disposition", b""))
        name = disp.get(b"name", b"").decode("utf-8", "replace")
        filename = disp.get(b"filename")
        state["name"] = name
        in_file = name == file_field
        if in_file:
            if form.file_seen:
                raise InvalidInput(f"{file_field}: more than one file part")
            form.file_seen = True
            form.filename = (
                filename.decode("utf-8", "replace") if filename is not None else None
            )
            need_sink = True

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if in_file:
            pending.add(memoryview(data)[start:end])
        else:
            value.extend(data[start:end])
            if len(value) > _MAX_FIELD:
                raise TooLarge(f"form field {state['name']!r} is above 64 KiB")

    def on_end() -> None:
        state["ended"] = True

    def on_part_end() -> None:
        nonlocal in_file
        if not in_file:
            if len(form.fields) >= _MAX_FIELDS:
                raise InvalidInput("too many form fields")
            form.fields[state["name"]] = value.decode("utf-8", "replace")
        in_file = False

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_end": on_end,
        },
    )
    sink: Sink | None = None

    async def flush() -> None:
        nonlocal sink, need_sink
        if need_sink:
            need_sink = False
            sink = await open_sink(form.filename, dict(form.fields))
        if len(pending) and sink is not None:
            form.file_bytes += await pending.flush(sink)

    try:
        try:
            async for piece in stream:
                parser.write(piece)
                if need_sink or pending.full:
                    await flush()
            parser.finalize()
        except (InvalidInput, TooLarge):
            raise
        except ValueError as exc:  # the parser's own errors
            raise InvalidInput(f"malformed multipart body: {exc}") from None
        await flush()
    finally:
        pending.release()
    if not state.get("ended"):
        # a body cut short: what arrived of the file is not the whole file
        raise InvalidInput(
            "the multipart body ended before its closing boundary (cut short?)"
        )
    if not form.file_seen:
        raise InvalidInput(f"{file_field}: field required (a file part)")
    return form
