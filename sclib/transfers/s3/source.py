"""Reading from S3: :class:`S3Source` (see :mod:`sclib.transfers.s3`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, ClassVar

# aiohttp and botocore come with s3fs (through aiobotocore); the ignores cover a
# type check run where the s3 extra is not installed (and botocore has no types)
from fsspec.asyn import sync

from sclib.errors import (
    InvalidInput,
    SclibError,
    SourceChanged,
    SourceError,
)
from sclib.transfers.buckets import (
    bucket_of,
    check_s3_bucket,
)
from sclib.transfers.plan import (
    MIB,
)
from sclib.transfers.progress import receiver
from sclib.transfers.s3.common import (
    _IO_ERRORS,
    _PRECONDITION_FAILED,
    _SCHEMES,
    _bare,
    _close_filesystem,
    _content_range_span,
    _content_range_total,
    _describe,
    _error_code,
    _make_filesystem,
    _quoted,
    s3_error,
)
from sclib.transfers.sources import FsspecSource, SourceObject

logger = logging.getLogger("sclib.transfers.s3")

#: bytes asked of a response body per read: aiohttp lets a response buffer twice
#: the largest read asked of it while nobody reads (measured: 16 MiB waiting in a
#: response kept open between two 8 MiB chunk reads), so the reads stay small and
#: an open response holds about 2 MiB, whatever the chunk size
_READ_PIECE = MIB

#: an object's version, as the streams are keyed: a response opened for one
#: version never serves a read of another at the same URL
_Version = tuple[str, str, str]


def _version(obj: SourceObject) -> _Version:
    return (
        obj.url,
        obj.identity.get("etag", ""),
        obj.identity.get("version_id", ""),
    )


class _Stream:
    """An open ``GetObject`` body, read front to back, one chunk per call."""

    def __init__(self, body: Any, position: int, end: int, loop: Any) -> None:
        self.body = body
        self.position = position  # offset of the next byte the body will give
        self.end = end
        self.loop = loop  # s3fs's event loop, which owns the connection

    async def read_into(
        self, view: memoryview, arrived: Callable[[int], None] | None = None
    ) -> int:
        """Fill ``view``; each piece is counted with ``arrived`` as it comes."""
        got = 0
        while got < len(view):
            piece = await self.body.read(min(len(view) - got, _READ_PIECE))
            if not piece:
                break
            view[got : got + len(piece)] = piece
            got += len(piece)
            if arrived is not None:
                arrived(len(piece))
        return got

    async def _close(self) -> None:
        self.body.close()

    def close(self) -> None:
        """Close the response on its loop (aiohttp is not thread-safe)."""
        with contextlib.suppress(Exception):
            sync(self.loop, self._close)


class _StreamPool:
    """Open GET bodies between chunk reads, keyed by (object version, next
    offset).

    ``take`` hands out the stream positioned at an offset (or ``None``: open a
    new GET, or use the one sent ahead for it). Streams and GETs that reads have
    passed by (a resumed transfer skipping the chunks it already has) are closed
    then, and at most :attr:`keep` and :attr:`keep_ahead` stay open, so
    connections are not held by responses nobody will read.
    """

    #: open responses kept between reads, and GETs sent ahead, at most: each
    #: holds one of the client's pooled connections (botocore's default pool
    #: has 10), so a reader can always get one
    keep = 2
    keep_ahead = 2

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: dict[tuple[_Version, int], _Stream] = {}
        #: GETs sent ahead for the next span: (version, offset) -> (end, response)
        self._ahead: dict[tuple[_Version, int], tuple[int, Future[Any]]] = {}

    def add_ahead(
        self, version: _Version, offset: int, end: int, request: Future[Any]
    ) -> None:
        with self._lock:
            old = self._ahead.pop((version, offset), None)
            self._ahead[(version, offset)] = (end, request)
            dropped = [old[1]] if old is not None else []
            while len(self._ahead) > self.keep_ahead:  # the oldest first
                dropped.append(self._ahead.pop(next(iter(self._ahead)))[1])
        for request in dropped:
            _drop(request)

    def has_ahead(self, version: _Version, offset: int) -> bool:
        with self._lock:
            return (version, offset) in self._ahead

    def ahead_after(self, version: _Version, offset: int) -> int | None:
        """Where the first GET sent ahead past ``offset`` starts, if any."""
        with self._lock:
            starts = [k[1] for k in self._ahead if k[0] == version and k[1] > offset]
        return min(starts, default=None)

    def take_ahead(
        self, version: _Version, offset: int
    ) -> tuple[int, Future[Any]] | None:
        with self._lock:
            found = self._ahead.pop((version, offset), None)
            passed = [k for k in self._ahead if k[0] == version and k[1] < offset]
            dropped = [self._ahead.pop(k)[1] for k in passed]
        for request in dropped:
            _drop(request)
        return found

    def take(self, version: _Version, offset: int) -> _Stream | None:
        passed: list[_Stream] = []
        with self._lock:
            stream = self._idle.pop((version, offset), None)
            if stream is None:
                for key in [k for k in self._idle if k[0] == version and k[1] < offset]:
                    passed.append(self._idle.pop(key))
        for old in passed:
            old.close()
        return stream

    def give_back(self, version: _Version, stream: _Stream) -> None:
        with self._lock:
            replaced = self._idle.pop((version, stream.position), None)
            self._idle[(version, stream.position)] = stream
            dropped = [replaced] if replaced is not None else []
            while len(self._idle) > self.keep:  # the oldest first
                dropped.append(self._idle.pop(next(iter(self._idle))))
        for old in dropped:
            old.close()

    def close(self) -> None:
        with self._lock:
            streams, self._idle = list(self._idle.values()), {}
            ahead, self._ahead = list(self._ahead.values()), {}
        for stream in streams:
            stream.close()
        for _, request in ahead:
            _drop(request)


def _drop(request: Future[Any]) -> None:
    """Close the response of a GET sent ahead that nobody will read (on its
    event loop, once it arrived)."""

    def close(done: Future[Any]) -> None:
        with contextlib.suppress(Exception):
            body = done.result()["Body"]
            done.loop.call_soon_threadsafe(body.close)  # type: ignore[attr-defined]

    request.add_done_callback(close)


class S3Source(FsspecSource):
    """Reads ``s3://bucket/key`` objects and ``s3://bucket/prefix`` folders.

    :param fs: an existing :class:`s3fs.S3FileSystem` to use (then ``options`` are
        ignored and :meth:`close` leaves it open).
    :param options: see the module documentation.
    """

    schemes: ClassVar[tuple[str, ...]] = _SCHEMES
    identity_keys: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "etag": ("ETag",),
        "version_id": ("VersionId",),
    }

    #: bytes one GET asks for at most; the chunks after the first one read from the
    #: same response (see :meth:`read_into`)
    stream_span: int = 256 * MIB

    def __init__(self, *, fs: Any | None = None, **options: Any) -> None:
        self._owns_fs = fs is None
        self._shown = _describe(options)
        self._endpoint = options.get("endpoint_url")
        self._streams = _StreamPool()
        super().__init__("s3", fs=fs if fs is not None else _make_filesystem(options))

    def __repr__(self) -> str:
        return f"S3Source({self._shown})"

    def library_error(self, exc: Exception, what: str) -> SclibError | None:
        if not self.raised_by(exc, "botocore", "aiobotocore", "aiohttp", "s3fs"):
            return None
        return s3_error(exc, what, self._endpoint)

    @staticmethod
    def _check_bucket(url: str) -> None:
        """A bucket name no S3 service takes: InvalidInput before any request."""
        check_s3_bucket(bucket_of(url), "bucket")

    def stat(self, url: str) -> SourceObject:
        self._check_bucket(url)
        return super().stat(url)

    def walk(self, url: str) -> Iterator[SourceObject]:
        self._check_bucket(url)
        return super().walk(url)

    def _identity(self, info: Mapping[str, Any]) -> dict[str, str]:
        identity = super()._identity(info)
        if identity.get("version_id") == "null":  # unversioned, said by some stores
            del identity["version_id"]
        return identity

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidInput(f"cannot read {length} bytes at offset {offset}")
        end = min(offset + length, obj.size)
        if end <= offset:
            if obj.identity:
                self.check_unchanged(obj)
            return b""
        stream = _Stream(self._get(obj, offset, end)["Body"], offset, end, self.fs.loop)
        try:
            data: bytes = self._call(obj, offset, stream.body.read)
        finally:
            stream.close()
        if len(data) != end - offset:
            raise SourceError(
                f"short read of {obj.url} at {offset}: got {len(data)} of "
                f"{end - offset} bytes"
            )
        return data

    def reads_in_order(self, obj: SourceObject) -> bool:
        return obj.size > MIB  # one GET serves many chunks (see read_into)

    def read_into(self, obj: SourceObject, offset: int, buf: memoryview) -> int:
        """Read ``len(buf)`` bytes at ``offset`` from a GET that may serve the
        following chunks too.

        A GET asks for up to :attr:`stream_span` bytes; what one chunk does not
        take stays in the open response, and the read of the next chunk continues
        from it (the engine reads this source's chunks in order, from one thread:
        :meth:`reads_in_order`). So 1 GiB in 8 MiB chunks takes 4 GETs instead of
        128: fewer requests to pay for and to wait on. A response that broke while
        it waited between two chunks (or a GET sent ahead, while it waited) is
        replaced by a new GET, up to where the GET sent ahead starts. Responses are
        kept per version of the object (URL, ETag, version id). Objects the engine
        reads in parallel (1 MiB or less) get a GET of just the chunk each.
        """
        if offset < 0:
            raise InvalidInput(f"cannot read at offset {offset}")
        end = min(offset + len(buf), obj.size)
        if end <= offset:
            if obj.identity:
                self.check_unchanged(obj)
            return 0
        view = buf[: end - offset]
        if not self.reads_in_order(obj):
            # chunk threads read such an object at once, in any order: a GET of
            # just the chunk each, which leaves no response open
            return self._read_stream(obj, self._stream(obj, offset, end), view)
        version = _version(obj)
        stream = self._streams.take(version, offset)
        if stream is None:
            ahead = self._streams.take_ahead(version, offset)
            if ahead is not None and ahead[0] >= end:
                try:
                    stream = self._stream(obj, offset, ahead[0], ahead[1])
                except SourceError as exc:  # it failed while it waited
                    logger.info(
                        "resending the GET of %s at %d: %s", obj.url, offset, exc
                    )
            elif ahead is not None:
                _drop(ahead[1])
        if stream is not None:
            # reads go front to back: have the next span's GET under way
            self._send_ahead(obj, stream.end)
            try:
                return self._read_stream(obj, stream, view)
            except SourceError as exc:  # a response that waited may have been cut
                logger.info("reopening %s at %d after: %s", obj.url, offset, exc)
        stop = min(obj.size, max(end, offset + self.stream_span))
        following = self._streams.ahead_after(version, offset)
        if following is not None and end <= following < stop:
            stop = following  # the GET sent ahead takes over from there
        return self._read_stream(obj, self._stream(obj, offset, stop), view)

    def _stream(
        self,
        obj: SourceObject,
        offset: int,
        end: int,
        request: Future[Any] | None = None,
    ) -> _Stream:
        """The body of a checked GET of ``[offset, end)`` (see :meth:`_get`)."""
        response = self._get(obj, offset, end, request)
        return _Stream(response["Body"], offset, response["_end"], self.fs.loop)

    def _send_ahead(self, obj: SourceObject, offset: int) -> None:
        """Send the GET for the span from ``offset`` now, so its first byte is
        there when the reads reach it (the wait overlaps reading this span).
        Only once reads proved sequential: a chunk continued an open GET."""
        version = _version(obj)
        if offset >= obj.size or self._streams.has_ahead(version, offset):
            return
        end = min(obj.size, offset + self.stream_span)
        self._streams.add_ahead(version, offset, end, self._request(obj, offset, end))

    def _read_stream(self, obj: SourceObject, stream: _Stream, view: memoryview) -> int:
        """Fill ``view`` from ``stream``; keep the stream for the next chunk, or
        close it once it is read to its end (or failed)."""
        try:
            # the pieces arrive on s3fs's loop: hand it this read's counter
            got: int = self._call(
                obj, stream.position, stream.read_into, view, receiver()
            )
        except BaseException:
            stream.close()
            raise
        stream.position += got
        if got != len(view):
            stream.close()
            raise SourceError(
                f"short read of {obj.url} at {stream.position - got}: got {got} of "
                f"{len(view)} bytes"
            )
        if stream.position >= stream.end:
            stream.close()
        else:
            self._streams.give_back(_version(obj), stream)
        return got

    def _call(self, obj: SourceObject, offset: int, fn: Any, *args: Any) -> Any:
        """Run coroutine function ``fn`` on s3fs's loop; map network errors."""
        try:
            return sync(self.fs.loop, fn, *args)
        except _IO_ERRORS as exc:
            raise s3_error(
                exc, f"reading {obj.url} at {offset}", self._endpoint
            ) from exc

    def _request(self, obj: SourceObject, offset: int, end: int) -> Future[Any]:
        """Send a conditional ranged ``GetObject`` for bytes ``[offset, end)`` on
        s3fs's loop; the answer comes through the returned future."""
        bucket, key, _ = self.fs.split_path(self._path(obj.url))
        params: dict[str, Any] = {
            "Bucket": bucket,
            "Key": key,
            "Range": f"bytes={offset}-{end - 1}",
        }
        etag = obj.identity.get("etag")
        if etag:
            params["IfMatch"] = _quoted(etag)
        request = asyncio.run_coroutine_threadsafe(
            self.fs._call_s3("get_object", **params), self.fs.loop
        )
        request.loop = self.fs.loop  # type: ignore[attr-defined]  # for _drop
        return request

    def _get(
        self,
        obj: SourceObject,
        offset: int,
        end: int,
        request: Future[Any] | None = None,
    ) -> dict[str, Any]:
        """The answer to a ranged GET of ``[offset, end)`` (``request``: one sent
        ahead), checked against ``obj``; the body is left unread (the caller
        closes it)."""
        etag = obj.identity.get("etag")
        try:
            if request is None:
                request = self._request(obj, offset, end)
            response: dict[str, Any] = request.result()
        except FileNotFoundError as exc:
            raise SourceChanged(f"{obj.url} disappeared during the transfer") from exc
        except _IO_ERRORS as exc:
            code = _error_code(exc)
            if code in _PRECONDITION_FAILED:
                raise SourceChanged(
                    f"{obj.url} changed since the transfer started (its ETag is no "
                    f"longer {etag}); start a new transfer to copy the new version"
                ) from exc
            if code in ("InvalidRange", "416"):
                raise SourceChanged(
                    f"{obj.url} is shorter than the {obj.size} bytes it had when the "
                    "transfer started"
                ) from exc
            raise SourceError(
                f"reading {obj.url} at {offset}: {type(exc).__name__}: {exc}"
            ) from exc
        except BaseException:  # interrupted: the answer comes later, unread
            if request is not None:
                _drop(request)
            raise
        served_etag = response.get("ETag")
        total = _content_range_total(response.get("ContentRange"))
        served = _content_range_span(response.get("ContentRange"))
        problem: SourceChanged | SourceError | None = None
        if etag and served_etag and _bare(served_etag) != _bare(etag):
            problem = SourceChanged(
                f"{obj.url} changed since the transfer started (ETag {etag} -> "
                f"{served_etag}); start a new transfer to copy the new version"
            )
        elif total is not None and total != obj.size:
            problem = SourceChanged(
                f"{obj.url} changed since the transfer started (size {obj.size} -> "
                f"{total})"
            )
        elif (served[0] if served is not None else 0) != offset:
            # a store (or a proxy) that ignores Range: its bytes are not those
            # at the offset; one that answers 200 with the whole object is right
            # only from the start
            problem = SourceError(
                f"reading {obj.url}: a GET of bytes={offset}-{end - 1} was answered "
                f"with {response.get('ContentRange') or 'the whole object'}; the "
                "store does not serve byte ranges"
            )
        elif served is not None:
            end = min(end, served[1])  # the bytes the body holds
        if problem is not None:
            _Stream(response["Body"], offset, end, self.fs.loop).close()
            raise problem
        response["_end"] = end
        return response

    def close(self) -> None:
        self._streams.close()
        if self._owns_fs:
            _close_filesystem(self.fs)
