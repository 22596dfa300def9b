"""The upload data plane: the bodies of tus ``PATCH`` and raw chunk requests read
straight from the socket, beside FastAPI rather than through it.

Through ASGI, a request body reaches the app as ``http.request`` messages of at
most 64 KiB: each one is a ``bytes`` object copied out of the parser, a queue
hand-off and an event-loop wake-up. That costs about one CPU-second per GiB
(``benchmarks/README.md``), three quarters of what an upload costs the server.
Here the bytes go from the kernel into a few reusable buffers
(:class:`asyncio.BufferedProtocol`: ``recv_into``), and from there, a buffer at a
time, to :meth:`StagedWrite.write <sclib.transfers.staging.StagedWrite.write>` in
a worker thread (hash, ``pwrite``): no copy in Python, no message per 64 KiB.
The buffers are page-aligned (anonymous ``mmap``), so a sink that can
(:meth:`StagedWrite.write_behind
<sclib.transfers.staging.StagedWrite.write_behind>`) writes them past the page
cache, a few at a time; a buffer is read into again once its write is done.

**The shape: one port, a dispatching protocol.** :class:`DataPlaneProtocol` is
uvicorn's httptools protocol with a look at each request's head before the
parser gets it:

* the heads of the data routes (:data:`DATA_ROUTES`: ``PATCH /files/<id>``, also
  as ``POST`` with ``X-HTTP-Method-Override: PATCH``, and a raw-body ``POST
  /api/upload/large/chunk/<id>/<n>``) with a ``Content-Length`` go to the parser
  as heads of an empty body, so the app runs the request as always (middleware,
  auth, CORS, limits, problem answers, access log: the control plane is
  unchanged), with the real ``Content-Length`` in its headers and a
  :class:`DirectBody` in ``scope["extensions"]["sclib.body"]``;
* the body's bytes never reach the parser: the :class:`DirectBody` takes the
  transport over (``set_protocol``) until the last byte of the body, reading only
  as far as that (never into the next request), then hands it back;
* everything else (JSON routes, multipart, chunked bodies) is fed to the parser
  untouched; a ``Transfer-Encoding`` body hands the rest of that connection to
  the parser for good.

A second port announced to clients was the other shape; it would break every
client that builds URLs itself (the original ScientistCloud clients, ``curl``
scripts) and double the TLS, proxy and firewall set-up, so it was not taken.

A route reads a direct body with :meth:`DirectBody.pump`; when there is no
extension (the ``h11`` parser, the in-process test client, another ASGI
server) it reads ``request.stream()`` as before. A body the app does not read
(an early 401, 404 or 413) is read and dropped after the answer, as uvicorn does,
so the connection stays usable.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import mmap
import re
from typing import TYPE_CHECKING, Any, cast

from sclib.server.streaming import Sink, _write_in_thread, run_to_the_end

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["DATA_ROUTES", "EXTENSION", "DirectBody", "data_plane_protocol", "direct"]

log = logging.getLogger(__name__)

#: the key of :class:`DirectBody` in ``scope["extensions"]``
EXTENSION = "sclib.body"

#: (method, path) of the requests whose bodies are read directly
DATA_ROUTES: tuple[tuple[bytes, re.Pattern[bytes]], ...] = (
    (b"PATCH", re.compile(rb"/files/[^/?#]+/?(?:[?#].*)?")),
    (b"POST", re.compile(rb"/api/upload/large/chunk/[^/?#]+/[^/?#]+/?(?:[?#].*)?")),
)
_TUS_PATH = DATA_ROUTES[0][1]

#: buffers a direct body reads into: up to this many, each up to :data:`PIECE`
RING = 4
PIECE = 2 * 1024**2
_DRAIN = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


_KEEP = 16  # PIECE buffers kept for the next bodies (32 MiB)
_pieces: list[bytearray] = []


def _take_piece(size: int) -> bytearray:
    """A buffer of ``size`` bytes: a kept one for a whole :data:`PIECE` (bodies
    are read on the event loop's thread only, so no lock), else a new one."""
    if size == PIECE and _pieces:
        return _pieces.pop()
    return cast("bytearray", mmap.mmap(-1, size))


def _give_piece(buf: bytearray) -> None:
    if len(buf) == PIECE and len(_pieces) < _KEEP:
        _pieces.append(buf)


def direct(request: Request) -> DirectBody | None:
    """The request's :class:`DirectBody`, if the server reads it directly."""
    extensions = request.scope.get("extensions") or {}
    body = extensions.get(EXTENSION)
    return body if isinstance(body, DirectBody) else None


def ring_bytes(length: int) -> int:
    """What a direct body of ``length`` bytes holds in buffers while it is read."""
    return min(length, PIECE) * min(RING, -(-length // PIECE))


class DirectBody(asyncio.BufferedProtocol):
    """One request body of ``length`` bytes, read from the socket into reusable
    buffers and written by :meth:`pump`.

    While its bytes are on the wire it is the transport's protocol; the
    connection's other events (a lost connection, write flow control) are
    passed on to the HTTP protocol."""

    def __init__(
        self,
        http: Any,
        length: int,
        early: bytes,
        *,
        expect_continue: bool,
    ) -> None:
        self.length = length
        #: bytes taken off the socket so far (written or not)
        self.received = len(early)
        #: the client went away before the last byte
        self.cut = False
        self._http = http
        self._transport: asyncio.Transport = http.transport
        self._expect_continue = expect_continue
        self._ready: collections.deque[tuple[bytes | bytearray, int]] = (
            collections.deque()
        )
        if early:
            self._ready.append((early, len(early)))
        self._free: list[bytearray] = []
        self._ring: list[bytearray] = []
        self._ring_ids: set[int] = set()
        #: ring buffers a write still reads from (``write_behind``)
        self._busy: set[int] = set()
        #: a write behind finished since its sink last counted them
        self._released = False
        self._piece = 0
        self._current: bytearray | None = None
        self._pos = 0
        self._pumping = False
        self._pumped = False
        self._draining = False
        self._paused = False
        self._wake: asyncio.Future[None] | None = None
        self._scratch: bytearray | None = None
        self.cycle: Any = None

    # -- state ------------------------------------------------------------------------

    @property
    def draining(self) -> bool:
        """The app answered without reading the body; it is being dropped."""
        return self._draining

    @property
    def complete(self) -> bool:
        """Every byte of the body is off the socket."""
        return self.received >= self.length

    def _notify(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _pause(self) -> None:
        # always: uvicorn's flow control may have resumed the transport behind
        # our back (a pipelined request whose predecessor finished)
        self._paused = True
        self._transport.pause_reading()

    def _resume(self) -> None:
        if self._paused:
            self._paused = False
            self._transport.resume_reading()

    def attach(self) -> None:
        """Take the transport over for the rest of the body (until :meth:`pump`
        starts, nothing more is read)."""
        if self.complete:
            return
        self._pause()
        self._transport.set_protocol(self)

    def _detach(self) -> None:
        """The last byte is in: the connection goes back to the HTTP protocol."""
        self._scratch = None
        if self._transport.get_protocol() is self:
            self._transport.set_protocol(self._http)
        # reading goes on for the next request unless the app's flow control
        # stopped it
        self._resume()
        self._http.body_read(self)

    # -- asyncio.BufferedProtocol -----------------------------------------------------

    def get_buffer(self, sizehint: int) -> memoryview:
        remaining = self.length - self.received
        if self._draining or not self._pumping:
            # dropping an unread body, or a read before pump() starts (the
            # transport was resumed by someone else): a small scratch buffer
            if self._scratch is None:
                self._scratch = bytearray(min(_DRAIN, max(remaining, 1)))
            size = max(1, min(len(self._scratch), remaining))
            return memoryview(self._scratch)[:size]
        if self._current is None:
            if self._free:
                self._current = self._free.pop()
            else:  # every buffer is full: read into a spare one, then stop reading
                self._current = bytearray(min(self._piece, max(remaining, 1)))
                self._pause()
            self._pos = 0
        end = min(len(self._current), self._pos + remaining)
        return memoryview(self._current)[self._pos : max(end, self._pos + 1)]

    def buffer_updated(self, nbytes: int) -> None:
        self.received += nbytes
        if self._draining:
            pass
        elif not self._pumping:
            assert self._scratch is not None
            self._ready.append((bytes(self._scratch[:nbytes]), nbytes))
            self._pause()
        else:
            assert self._current is not None
            self._pos += nbytes
            if self._pos >= len(self._current) or self.complete:
                self._ready.append((self._current, self._pos))
                self._current = None
                if not self._free:
                    self._pause()
                self._notify()
        if self.complete:
            self._detach()

    def eof_received(self) -> bool | None:
        return cast("bool | None", self._http.eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.complete:
            self.cut = True
            if self._current is not None and self._pos:
                self._ready.append((self._current, self._pos))
                self._current = None
        self._notify()
        self._http.connection_lost(exc)

    def pause_writing(self) -> None:
        self._http.pause_writing()

    def resume_writing(self) -> None:
        self._http.resume_writing()

    # -- the app's side -------------------------------------------------------------

    async def pump(self, sink: Sink) -> bool:
        """Write the whole body to ``sink`` (in worker threads, a buffer at a
        time, in order); ``False`` when the client went away first (what arrived
        is written). Only once per body."""
        if self._pumping or self._pumped:
            raise RuntimeError("a request body can be read only once")
        self._pumping = True
        loop = asyncio.get_running_loop()
        self._piece = min(self.length, PIECE)
        count = 0 if self.complete else min(RING, -(-self.length // self._piece))
        self._ring = [_take_piece(self._piece) for _ in range(count)]
        self._ring_ids = {id(buf) for buf in self._ring}
        self._free = list(self._ring)
        self._gather_early()
        try:
            cycle = self.cycle
            if self._expect_continue and getattr(
                cycle, "waiting_for_100_continue", False
            ):
                cycle.waiting_for_100_continue = False
                if not self._transport.is_closing():
                    self._transport.write(_CONTINUE)
            self._resume()
            behind = getattr(sink, "write_behind", None)
            while True:
                if self._ready:
                    data, n = self._ready.popleft()
                    view = memoryview(data)[:n]
                    if id(data) not in self._ring_ids:
                        await _write_in_thread(sink, view)
                        continue
                    buf = cast("bytearray", data)
                    if behind is None:
                        await _write_in_thread(sink, view)
                        self._reuse(buf)
                        continue
                    # busy from now on: if this task is cancelled or the call
                    # raises, a write may still read from the buffer, so it never
                    # goes back to the pool (it is dropped once unused)
                    self._busy.add(id(buf))
                    future = await run_to_the_end(behind, view)
                    if future is None or future.done():
                        self._busy.discard(id(buf))
                        self._reuse(buf)
                    else:  # the buffer is free once the write is done
                        future.add_done_callback(
                            lambda _, buf=buf: loop.call_soon_threadsafe(
                                self._release, buf
                            )
                        )
                    continue
                if self.cut or (self.complete and self._current is None):
                    if behind is not None:  # the last write is done, or raises
                        await run_to_the_end(sink.join_io)  # type: ignore[attr-defined]
                    return not self.cut
                if self._released and behind is not None:
                    # count the finished writes behind while bytes are awaited
                    self._released = False
                    await run_to_the_end(sink.count_done)  # type: ignore[attr-defined]
                    continue
                self._wake = loop.create_future()
                try:
                    await self._wake
                finally:
                    self._wake = None
        finally:
            self._pumping = False
            self._pumped = True
            self._current = None
            self._ready.clear()
            self._free = []
            for buf in self._ring:
                if id(buf) not in self._busy:  # else when its write is done
                    _give_piece(buf)
            self._ring = []
            self._ring_ids = set()
            if not self.complete and not self.cut:
                self.drain()

    def _gather_early(self) -> None:
        """Move the bytes read before :meth:`pump` (with the head, or while the
        app ran) to the start of the first ring buffer, which the socket then
        fills on: the body's pieces start at its offset's alignment, and
        page-aligned pieces can be written past the page cache
        (:meth:`~sclib.transfers.staging.StagedWrite.write_behind`)."""
        if not self._ready or not self._free or self._current is not None:
            return
        buf = self._free[-1]
        pos = 0
        while self._ready and pos + self._ready[0][1] <= len(buf):
            data, n = self._ready.popleft()
            buf[pos : pos + n] = memoryview(data)[:n]
            pos += n
        if not pos:
            return
        self._free.pop()
        if self._ready or pos == len(buf) or self.complete:
            self._ready.appendleft((buf, pos))  # what did not fit comes after
        else:
            self._current, self._pos = buf, pos

    def _release(self, buf: bytearray) -> None:
        """A write behind from a ring buffer is done: the buffer takes the next
        bytes (or, after :meth:`pump`, goes back to the pool)."""
        self._busy.discard(id(buf))
        self._released = True
        self._reuse(buf)

    def _reuse(self, buf: bytearray) -> None:
        """A ring buffer whose bytes are written takes the next ones (or, after
        :meth:`pump`, goes back to the pool)."""
        if not self._pumping:
            _give_piece(buf)
            return
        self._free.append(buf)
        if not self.complete and not self.cut:
            self._resume()
        self._notify()

    def drain(self) -> None:
        """Read and drop what is left of the body (the app answered without
        reading it all), keeping the connection usable for the next request."""
        if self._pumping:
            return  # pump() drops the rest itself when it ends
        self._ready.clear()  # read before pump(), never to be written
        if self.complete or self.cut or self._draining:
            return
        self._draining = True
        if self._transport.get_protocol() is self:
            self._resume()


class _Head:
    """What the dispatcher needs of a request head."""

    __slots__ = ("content_length", "direct", "expect_continue", "passthrough")

    def __init__(self) -> None:
        self.content_length = 0
        self.direct = False
        self.expect_continue = False
        #: the parser must see the rest of the connection (a body of unknown
        #: length, a head we do not understand)
        self.passthrough = False


def _read_head(head: bytes) -> _Head:
    """Parse a request head (up to and including the blank line) as far as the
    dispatch needs; anything unusual is left to the parser (``passthrough``)."""
    info = _Head()
    if head.count(b"\n") != head.count(b"\r\n"):
        info.passthrough = True  # bare line feeds: the parser's to judge
        return info
    lines = head.lstrip(b"\r\n").split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        info.passthrough = True
        return info
    method, target = parts[0], parts[1]
    lengths: list[bytes] = []
    overrides: list[bytes] = []
    ctypes: list[bytes] = []
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(b":")
        if not sep or name[:1] in (b" ", b"\t"):
            info.passthrough = True  # obsolete line folding, a broken field
            return info
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            lengths.append(value)
        elif name == b"transfer-encoding" or name == b"upgrade":
            info.passthrough = True
            return info
        elif name == b"expect":
            info.expect_continue = value.lower() == b"100-continue"
        elif name == b"x-http-method-override":
            overrides.append(value.upper())
        elif name == b"content-type":
            ctypes.append(value.lower())
    if lengths:
        if len(set(lengths)) != 1 or not lengths[0].isdigit() or len(lengths[0]) > 18:
            info.passthrough = True  # the parser answers 400
            return info
        info.content_length = int(lengths[0])
    if info.content_length == 0 or len(ctypes) > 1 or len(overrides) > 1:
        # no body, or fields the app may read otherwise than we do: its own way
        return info
    override = overrides[0] if overrides else b""
    ctype = ctypes[0] if ctypes else b""
    if method == b"POST" and override == b"PATCH" and _TUS_PATH.fullmatch(target):
        method = b"PATCH"
    for wanted, path in DATA_ROUTES:
        if method == wanted and path.fullmatch(target):
            info.direct = not ctype.startswith(b"multipart/")
            break
    return info


def _empty_body(head: bytes) -> bytes:
    """The same head with ``Content-Length: 0``."""
    out = []
    for line in head.split(b"\r\n"):
        name, sep, _ = line.partition(b":")
        if sep and name.strip().lower() == b"content-length":
            line = name + b": 0"
        out.append(line)
    return b"\r\n".join(out)


def data_plane_protocol(
    base: type[asyncio.Protocol], max_head_bytes: int = 64 * 1024
) -> type[asyncio.Protocol]:
    """``base`` (uvicorn's ``HttpToolsProtocol`` or a subclass) with the data
    plane: see the module docstring. A head longer than ``max_head_bytes`` goes
    to the parser (whose limits answer it)."""

    http_base = cast(Any, base)

    class DataPlaneProtocol(http_base):  # type: ignore[misc,valid-type]
        """Dispatches each request head: data routes' bodies to a
        :class:`DirectBody`, the rest to the parser."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            self._head = bytearray()
            self._skip = 0  # body bytes of a request the parser reads
            self._through = False  # the parser reads the rest of the connection
            self._pending: DirectBody | None = None  # its head is being parsed
            self._body: DirectBody | None = None  # its bytes are on the wire

        def data_received(self, data: bytes) -> None:
            if self._through:
                super().data_received(data)
                return
            if self._head:  # a head began in an earlier read
                buf = bytes(self._head) + data
                scan = max(0, len(self._head) - 3)
                self._head = bytearray()
            else:
                buf, scan = data, 0
            view = memoryview(buf)
            pos = 0
            while pos < len(buf):
                if self._skip:
                    n = min(self._skip, len(buf) - pos)
                    self._skip -= n
                    super().data_received(view[pos : pos + n])
                    pos += n
                    continue
                if self._body is not None:
                    # a direct body is still on the wire (its first bytes came
                    # with the head): only possible when nothing is left here
                    raise AssertionError("HTTP protocol data during a direct body")
                end = buf.find(b"\r\n\r\n", max(pos, scan))
                if end < 0:
                    self._head = bytearray(view[pos:])
                    if len(self._head) > max_head_bytes or b"\n\n" in self._head:
                        self._give_up()  # too long, or bare line feeds
                    return
                head = buf[pos : end + 4]
                pos = end + 4
                info = _read_head(head)
                if info.passthrough:
                    self._through = True
                    super().data_received(view[pos - len(head) :])
                    return
                if not info.direct:
                    self._skip = info.content_length
                    super().data_received(head)
                    continue
                take = min(len(buf) - pos, info.content_length)
                body = DirectBody(
                    self,
                    info.content_length,
                    buf[pos : pos + take],
                    expect_continue=info.expect_continue,
                )
                pos += take
                before = self.cycle
                self._pending = body
                try:
                    super().data_received(_empty_body(head))
                finally:
                    self._pending = None
                if (
                    self.transport.is_closing()
                    or getattr(self, "_refused", False)
                    or self.cycle is before
                ):
                    return  # the head was refused: no request owns this body
                body.cycle = self.cycle
                if not body.complete:
                    self._body = body
                    body.attach()

        def _give_up(self) -> None:
            """A head we do not read (too long, bare line feeds): the parser (and
            its limits) take the connection."""
            self._through = True
            data, self._head = bytes(self._head), bytearray()
            super().data_received(data)

        def on_header(self, name: bytes, value: bytes) -> None:
            if self._pending is not None and name.lower() == b"content-length":
                value = str(self._pending.length).encode()
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            before = self.cycle
            super().on_headers_complete()
            body = self._pending
            if body is not None and self.cycle is not None and self.cycle is not before:
                scope = self.cycle.scope
                extensions = scope.get("extensions")
                if extensions is None:
                    extensions = scope["extensions"] = {}
                extensions[EXTENSION] = body

        def body_read(self, body: DirectBody) -> None:
            if self._body is body:
                self._body = None
            cycle = self.cycle
            if (
                body.draining
                and cycle is not None
                and cycle.response_complete
                and not self.pipeline
                and getattr(self, "timeout_keep_alive_task", None) is None
                and not self.transport.is_closing()
            ):
                # idle again after dropping an unread body: the keep-alive
                # timer runs from here, as after any answer
                self.timeout_keep_alive_task = self.loop.call_later(
                    self.timeout_keep_alive, self.timeout_keep_alive_handler
                )

        def on_response_complete(self) -> None:
            body = self._body
            super().on_response_complete()
            cycle = body.cycle if body is not None else None
            if body is not None and getattr(cycle, "response_complete", False):
                # answered without reading it all: the rest is read and dropped,
                # and the connection is not idle meanwhile
                self._unset_keepalive_if_required()
                body.drain()

    DataPlaneProtocol.__qualname__ = DataPlaneProtocol.__name__ = (
        f"DataPlane{getattr(base, '__name__', 'Protocol')}"
    )
    return cast("type[asyncio.Protocol]", DataPlaneProtocol)
