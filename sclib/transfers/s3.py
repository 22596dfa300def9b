"""Amazon S3 (and S3-compatible stores): a source and a destination, through s3fs.

URLs are ``s3://bucket/key`` (``s3a://`` is accepted too and reported as ``s3://``).
Both classes take the same options, the seed's names first:

==========================  =====================================================
option                      meaning
==========================  =====================================================
``access_key_id``           AWS access key id (s3fs ``key``)
``secret_access_key``       AWS secret access key (s3fs ``secret``)
``session_token``           temporary session token (s3fs ``token``)
``region``                  region name (``client_kwargs["region_name"]``)
``endpoint_url``            another endpoint: MinIO, Ceph, a local test server
``anon``                    unsigned requests, for public buckets
==========================  =====================================================

Any other option is passed to :class:`s3fs.S3FileSystem` as it is (``key``,
``secret``, ``client_kwargs``, ``config_kwargs``, ``requester_pays``...); a name that
s3fs does not know is refused with :class:`~sclib.errors.ConfigurationError` rather
than silently ignored. Credentials are never logged nor put in an error message or
a URL, and :func:`repr` of these objects leaves them out.

Reading (:class:`S3Source`) identifies an object by its ETag (and VersionId when
the bucket is versioned). Each ranged read is a conditional ``GetObject`` with
``If-Match`` on that ETag, so an object replaced since it was described fails the
very request that would have mixed versions, with
:class:`~sclib.errors.SourceChanged`; the ETag and total size the server reports
with the bytes are checked as well, for S3-compatible stores that ignore
``If-Match``, and so is the first offset served, for those that ignore ``Range``
(:class:`~sclib.errors.SourceError` rather than bytes of another offset).

Writing (:class:`S3Destination`) uses one multipart upload per object, one part per
chunk (part number = chunk index + 1). Each part is sent with its ``Content-MD5``
and its returned ETag is compared with the MD5 of the chunk. Nothing exists at the
key until :meth:`S3Writer.commit` completes the upload. A 0-byte object has no
chunks and no multipart upload: :meth:`S3Writer.commit` writes it with one
``PutObject``. Every other object, however small, goes through the multipart upload
(S3 accepts a last, or only, part of any size), so there is one code path to resume.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import inspect
import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import Any, ClassVar

# aiohttp and botocore come with s3fs (through aiobotocore); the ignores cover a
# type check run where the s3 extra is not installed (and botocore has no types)
import aiohttp  # type: ignore[import-not-found, unused-ignore]
import s3fs
from botocore.exceptions import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
    BotoCoreError,
)
from fsspec.asyn import sync

from sclib.errors import (
    ChecksumMismatch,
    ConfigurationError,
    DestinationError,
    InvalidInput,
    SclibError,
    SourceChanged,
    SourceError,
)
from sclib.transfers.buckets import (
    bucket_of,
    check_endpoint_url,
    check_region,
    check_s3_bucket,
)
from sclib.transfers.destinations import BucketDestination, DestinationWriter
from sclib.transfers.plan import (
    MAX_PARTS,
    MIB,
    MIN_OBJECT_STORE_CHUNK,
    Chunk,
    check_chunk,
)
from sclib.transfers.progress import receiver
from sclib.transfers.sources import FsspecSource, SourceObject

__all__ = ["S3Destination", "S3Source", "S3Writer", "s3_error", "s3fs_options"]

logger = logging.getLogger(__name__)

#: the seed's option names -> s3fs's
_ALIASES = {
    "access_key_id": "key",
    "secret_access_key": "secret",
    "session_token": "token",
}
#: options s3fs takes through ``**kwargs`` (fsspec's instance and listings caches)
_FSSPEC_OPTIONS = frozenset(
    {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
)
_SCHEMES = ("s3", "s3a")
_PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
_BAD_DIGEST = frozenset({"BadDigest", "InvalidDigest", "XAmzContentSHA256Mismatch"})
_NO_UPLOAD = frozenset({"NoSuchUpload"})
#: what a network call through s3fs may raise (s3fs translates ClientError to OSError)
_IO_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    BotoCoreError,
    aiohttp.ClientError,
)


def _s3fs_parameters() -> frozenset[str]:
    names = set(inspect.signature(s3fs.S3FileSystem.__init__).parameters)
    names.discard("self")
    names.discard("kwargs")
    return frozenset(names)


def s3fs_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as keyword arguments for :class:`s3fs.S3FileSystem`.

    Maps the seed's names (``access_key_id``, ``secret_access_key``,
    ``session_token``, ``region``), passes s3fs's own through, and refuses unknown
    or doubled names (:class:`~sclib.errors.ConfigurationError`), and a region or
    endpoint URL no S3 service takes (:class:`~sclib.errors.InvalidInput`, see
    :mod:`sclib.transfers.buckets`). Each S3 source or destination gets its own
    filesystem instance, without a listings cache (a cached listing would report
    a stale ETag).
    """
    known = _s3fs_parameters() | _FSSPEC_OPTIONS
    out: dict[str, Any] = {}
    client_kwargs = dict(options.get("client_kwargs") or {})
    unknown: list[str] = []
    for name, value in options.items():
        if name in _ALIASES:
            target = _ALIASES[name]
            if target in options:
                raise ConfigurationError(
                    f"S3 options {name!r} and {target!r} are the same setting; "
                    "give only one"
                )
            if value is not None:
                out[target] = value
        elif name == "region":
            if "region_name" in client_kwargs and value is not None:
                raise ConfigurationError(
                    "S3 options 'region' and client_kwargs['region_name'] are the "
                    "same setting; give only one"
                )
            if value is not None:
                client_kwargs["region_name"] = value
        elif name == "client_kwargs":
            continue
        elif name in known:
            out[name] = value
        else:
            unknown.append(name)
    if unknown:
        raise ConfigurationError(
            f"unknown S3 option(s) {', '.join(sorted(unknown))}; use access_key_id, "
            "secret_access_key, session_token, region, endpoint_url, anon, or an "
            "s3fs.S3FileSystem argument"
        )
    endpoint = out.get("endpoint_url") or client_kwargs.get("endpoint_url")
    if endpoint is not None:
        check_endpoint_url(endpoint, "endpoint_url")
    region = client_kwargs.get("region_name")
    if region is not None:
        check_region(region, "region", endpoint_url=endpoint)
    if client_kwargs:
        out["client_kwargs"] = client_kwargs
    out.setdefault("skip_instance_cache", True)
    out.setdefault("use_listings_cache", False)
    return out


def _make_filesystem(options: Mapping[str, Any]) -> Any:
    kwargs = s3fs_options(options)
    try:
        return s3fs.S3FileSystem(**kwargs)
    except (TypeError, ValueError) as exc:
        # the message names a parameter, never its value
        raise ConfigurationError(
            f"cannot open an S3 filesystem: {type(exc).__name__}"
        ) from None


def _describe(options: Mapping[str, Any]) -> str:
    """What may be shown of ``options``: endpoint and region, no credentials."""
    parts = []
    if options.get("endpoint_url"):
        parts.append(f"endpoint_url={options['endpoint_url']!r}")
    region = options.get("region") or (options.get("client_kwargs") or {}).get(
        "region_name"
    )
    if region:
        parts.append(f"region={region!r}")
    if options.get("anon"):
        parts.append("anon=True")
    return ", ".join(parts)


def _close_filesystem(fs: Any) -> None:
    """Close the aiobotocore client of an s3fs filesystem we created."""
    client = getattr(fs, "_s3", None)
    if client is None:
        return
    try:
        sync(fs.loop, client.__aexit__, None, None, None, timeout=5)
    except Exception as exc:  # best effort: a finalizer closes it anyway
        logger.debug("closing the S3 client failed: %s", type(exc).__name__)
    fs._s3 = None


def s3_error(exc: BaseException, what: str, endpoint: str | None = None) -> SclibError:
    """sclib's error for what botocore, aiobotocore or aiohttp raised, with a
    hint: missing credentials are a :class:`~sclib.errors.ConfigurationError`
    that says where credentials come from; an endpoint that cannot be reached is
    a :class:`~sclib.errors.SourceError` (retryable) that names it."""
    name = type(exc).__name__
    where = endpoint or "AWS S3"
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return ConfigurationError(
            f"{what}: no S3 credentials: pass access_key_id and secret_access_key "
            "(the SCLIB_SOURCE_OPTIONS variable keeps them out of the process "
            "list), set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY or an AWS "
            "profile, or anon=true for a public bucket"
        )
    if name == "NoRegionError":
        return ConfigurationError(f"{what}: no region: pass region, e.g. us-east-1")
    if name in (
        "EndpointConnectionError",
        "ConnectTimeoutError",
        "ConnectionClosedError",
        "ReadTimeoutError",
    ) or isinstance(exc, aiohttp.ClientConnectionError):
        return SourceError(
            f"{what}: cannot reach {where} ({name}: {exc}); check endpoint_url, "
            "region and the network"
        )
    code = _error_code(exc)
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied"):
        return ConfigurationError(
            f"{what}: {where} refused the credentials or access ({code}); check "
            "access_key_id, secret_access_key and the bucket's permissions"
        )
    if isinstance(exc, FileNotFoundError) or code in ("NoSuchBucket", "NoSuchKey"):
        from sclib.errors import SourceNotFound

        return SourceNotFound(f"{what}: {code or 'not found'}")
    return SourceError(f"{what}: {name}: {exc}")


def _error_code(exc: BaseException) -> str | None:
    """The S3 error code behind an exception s3fs translated (or HTTP status)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            break
        response = getattr(seen, "response", None)
        if isinstance(response, Mapping):
            code = (response.get("Error") or {}).get("Code")
            if code:
                return str(code)
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            if status:
                return str(status)
        seen = seen.__cause__ or seen.__context__
    return None


def _quoted(etag: str) -> str:
    if etag.startswith(('"', "W/")):
        return etag
    return f'"{etag}"'


def _bare(etag: str | None) -> str:
    return (etag or "").strip('"')


def _is_md5(etag: str | None) -> bool:
    bare = _bare(etag)
    return len(bare) == 32 and all(c in "0123456789abcdef" for c in bare.lower())


def _multipart_etag(etags: list[str]) -> str | None:
    """The ETag S3 gives a completed multipart upload of parts with ``etags``."""
    if not etags or not all(_is_md5(e) for e in etags):
        return None
    digest = hashlib.md5(
        b"".join(bytes.fromhex(_bare(e)) for e in etags), usedforsecurity=False
    )
    return f"{digest.hexdigest()}-{len(etags)}"


def _content_range_total(value: str | None) -> int | None:
    """``bytes 0-9/100`` -> 100."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _content_range_span(value: str | None) -> tuple[int, int] | None:
    """``bytes 0-9/100`` -> ``(0, 10)``: the offsets of the bytes served."""
    if not value:
        return None
    first, _, last = value.removeprefix("bytes").split("/", 1)[0].strip().partition("-")
    if not (first.isdigit() and last.isdigit()):
        return None
    return int(first), int(last) + 1


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


class S3Writer(DestinationWriter):
    """One object written as an S3 multipart upload; made by
    :meth:`S3Destination.open`.

    ``state`` is ``{"bucket", "key", "upload_id", "resumed"}``; ``upload_id`` is
    ``None`` for a 0-byte object, which is written whole at commit.
    """

    def __init__(
        self,
        destination: S3Destination,
        key: str,
        size: int,
        chunk_size: int,
        state: Mapping[str, Any] | None,
    ) -> None:
        if size < 0:
            raise InvalidInput(f"size must not be negative, got {size}")
        if chunk_size <= 0:
            raise InvalidInput(f"chunk size must be positive, got {chunk_size}")
        parts = -(-size // chunk_size)
        if parts > MAX_PARTS:
            raise InvalidInput(
                f"{size} bytes in chunks of {chunk_size} make {parts} parts; S3 "
                f"allows at most {MAX_PARTS}"
            )
        if parts > 1 and chunk_size < MIN_OBJECT_STORE_CHUNK:
            raise InvalidInput(
                f"S3 parts other than the last must be at least 5 MiB, got chunks "
                f"of {chunk_size}"
            )
        self.fs = destination.fs
        self.bucket = destination.bucket
        self.key = key
        self.url = f"s3://{self.bucket}/{key}"
        self.size = size
        self.chunk_size = chunk_size
        self.parts = parts
        self.state = self._open(state)

    # -- opening and resuming ---------------------------------------------------

    def _open(self, saved: Mapping[str, Any] | None) -> dict[str, Any]:
        if (
            saved
            and saved.get("bucket") == self.bucket
            and saved.get("key") == self.key
        ):
            upload_id = saved.get("upload_id")
            if self.size == 0 and upload_id is None:
                return self._state(None, resumed=True)
            if isinstance(upload_id, str) and self._upload_exists(upload_id):
                logger.info("resuming the multipart upload of %s", self.url)
                return self._state(upload_id, resumed=True)
            logger.info(
                "the saved multipart upload of %s is gone; starting a new one",
                self.url,
            )
        if self.size == 0:
            return self._state(None, resumed=False)
        try:
            response = self.fs.call_s3(
                "create_multipart_upload", Bucket=self.bucket, Key=self.key
            )
        except _IO_ERRORS as exc:
            raise DestinationError(
                f"cannot start a multipart upload to {self.url}: {exc}"
            ) from exc
        return self._state(str(response["UploadId"]), resumed=False)

    def _state(self, upload_id: str | None, *, resumed: bool) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "upload_id": upload_id,
            "resumed": resumed,
        }

    @property
    def upload_id(self) -> str | None:
        value = self.state.get("upload_id")
        return value if isinstance(value, str) else None

    def _upload_exists(self, upload_id: str) -> bool:
        try:
            self.fs.call_s3(
                "list_parts",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                MaxParts=1,
            )
        except FileNotFoundError:
            return False
        except _IO_ERRORS as exc:
            if _error_code(exc) in _NO_UPLOAD:
                return False
            raise DestinationError(
                f"cannot check the multipart upload of {self.url}: {exc}"
            ) from exc
        return True

    # -- chunks -----------------------------------------------------------------

    def _chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def _check_chunk(self, chunk: Chunk, data: bytes) -> None:
        check_chunk(chunk, len(data), self.size, self.chunk_size, self.url)

    def write_chunk(self, chunk: Chunk, data: bytes | memoryview) -> str | None:
        data = bytes(data)  # a no-op for bytes; the engine may pass a view
        self._check_chunk(chunk, data)
        upload_id = self.upload_id
        if upload_id is None:  # pragma: no cover - size 0 has no chunks
            raise InvalidInput(f"{self.url} has no multipart upload")
        digest = hashlib.md5(data, usedforsecurity=False)
        try:
            response = self.fs.call_s3(
                "upload_part",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumber=chunk.index + 1,
                Body=data,
                ContentMD5=base64.b64encode(digest.digest()).decode("ascii"),
            )
        except _IO_ERRORS as exc:
            code = _error_code(exc)
            if code in _BAD_DIGEST:
                raise ChecksumMismatch(
                    f"S3 received chunk {chunk.index} of {self.url} damaged "
                    f"({code}); send it again"
                ) from exc
            if code in _NO_UPLOAD or isinstance(exc, FileNotFoundError):
                raise DestinationError(
                    f"the multipart upload of {self.url} no longer exists (aborted "
                    "or expired); reopen the writer to start a new one"
                ) from exc
            raise DestinationError(
                f"uploading chunk {chunk.index} of {self.url}: {exc}"
            ) from exc
        etag = str(response.get("ETag") or "")
        encrypted = response.get("SSECustomerAlgorithm") or str(
            response.get("ServerSideEncryption") or ""
        ).startswith("aws:kms")
        if encrypted and not _is_md5(etag):
            # SSE-KMS and SSE-C part ETags are not MD5s; S3 checked Content-MD5
            logger.debug("part %d of %s: ETag is not an MD5", chunk.index, self.url)
        elif _bare(etag) != digest.hexdigest():
            raise ChecksumMismatch(
                f"chunk {chunk.index} of {self.url} did not land intact: S3 stored "
                f"a part with ETag {etag}, the chunk's MD5 is {digest.hexdigest()}"
            )
        logger.debug("uploaded part %d of %s", chunk.index + 1, self.url)
        return etag

    # -- commit and abort -------------------------------------------------------

    def _listed_parts(self, upload_id: str) -> dict[int, tuple[str, int]]:
        """part number -> (ETag, size) of every part S3 holds for the upload."""
        parts: dict[int, tuple[str, int]] = {}
        marker = 0
        while True:
            response = self.fs.call_s3(
                "list_parts",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                PartNumberMarker=marker,
            )
            for part in response.get("Parts") or []:
                parts[int(part["PartNumber"])] = (
                    str(part["ETag"]),
                    int(part["Size"]),
                )
            if not response.get("IsTruncated"):
                return parts
            next_marker = int(response.get("NextPartNumberMarker") or 0)
            if next_marker <= marker:
                return parts
            marker = next_marker

    def missing(self, tokens: Mapping[int, str | None]) -> list[int]:
        upload_id = self.upload_id
        if upload_id is None or not tokens:
            return []
        try:
            listed = self._listed_parts(upload_id)
        except _IO_ERRORS as exc:
            raise DestinationError(
                f"cannot list the parts of the upload of {self.url}: {exc}"
            ) from exc
        return sorted(
            i
            for i, token in tokens.items()
            if listed.get(i + 1) != (str(token), self._chunk_length(i))
        )

    def commit(self, tokens: Mapping[int, str | None]) -> None:
        upload_id = self.upload_id
        if upload_id is None:
            self._put_empty()
            return
        try:
            listed = self._listed_parts(upload_id)
        except _IO_ERRORS as exc:
            if isinstance(exc, FileNotFoundError) or _error_code(exc) in _NO_UPLOAD:
                if self._already_committed(tokens):
                    logger.info("%s was already committed", self.url)
                    return
                raise DestinationError(
                    f"the multipart upload of {self.url} no longer exists (aborted "
                    "or expired) and the object is not there; send it again"
                ) from exc
            raise DestinationError(
                f"cannot list the parts of {self.url}: {exc}"
            ) from exc
        missing = [i for i in range(self.parts) if i + 1 not in listed]
        if missing:
            raise DestinationError(
                f"cannot commit {self.url}: chunk(s) {_some(missing)} were never "
                "uploaded"
            )
        etags: list[str] = []
        for index in range(self.parts):
            etag, size = listed[index + 1]
            token = tokens.get(index)
            if size != self._chunk_length(index) or (
                token is not None and _bare(token) != _bare(etag)
            ):
                raise ChecksumMismatch(
                    f"part {index + 1} of {self.url} is not the chunk that was "
                    f"verified (size {size}, ETag {etag}, expected "
                    f"{self._chunk_length(index)} bytes with ETag {token}); send "
                    "that chunk again"
                )
            etags.append(etag)
        try:
            response = self.fs.call_s3(
                "complete_multipart_upload",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": i + 1, "ETag": etag}
                        for i, etag in enumerate(etags)
                    ]
                },
            )
        except _IO_ERRORS as exc:
            raise DestinationError(
                f"cannot complete the multipart upload of {self.url}: {exc}"
            ) from exc
        expected = _multipart_etag(etags)
        final = _bare(response.get("ETag"))
        if expected and final and final != expected:
            raise ChecksumMismatch(
                f"{self.url} was assembled wrongly: its ETag is {final}, the parts "
                f"make {expected}"
            )
        logger.info(
            "committed %s (%d bytes, %d parts)", self.url, self.size, len(etags)
        )

    def _put_empty(self) -> None:
        try:
            self.fs.call_s3(
                "put_object",
                Bucket=self.bucket,
                Key=self.key,
                Body=b"",
                ContentMD5=base64.b64encode(
                    hashlib.md5(b"", usedforsecurity=False).digest()
                ).decode("ascii"),
            )
        except _IO_ERRORS as exc:
            raise DestinationError(f"cannot write {self.url}: {exc}") from exc
        logger.info("committed %s (0 bytes)", self.url)

    def _already_committed(self, tokens: Mapping[int, str | None]) -> bool:
        """After a lost reply to CompleteMultipartUpload: is our object there?"""
        etags = [tokens.get(i) for i in range(self.parts)]
        expected = _multipart_etag([e for e in etags if e is not None])
        if expected is None or None in etags:
            return False
        try:
            head = self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.key)
        except _IO_ERRORS:
            return False
        return bool(
            int(head.get("ContentLength", -1)) == self.size
            and _bare(head.get("ETag")) == expected
        )

    def abort(self) -> None:
        upload_id = self.upload_id
        if upload_id is None:
            return
        try:
            self.fs.call_s3(
                "abort_multipart_upload",
                Bucket=self.bucket,
                Key=self.key,
                UploadId=upload_id,
            )
        except FileNotFoundError:
            pass
        except _IO_ERRORS as exc:
            if _error_code(exc) not in _NO_UPLOAD:
                raise DestinationError(
                    f"cannot abort the multipart upload of {self.url}: {exc}"
                ) from exc
        logger.info("aborted the multipart upload of %s", self.url)


def _some(indexes: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indexes[:limit])
    return shown + (f" and {len(indexes) - limit} more" if len(indexes) > limit else "")


class S3Destination(BucketDestination):
    """Objects under ``s3://bucket/prefix``, each written by a multipart upload.

    :param url: the bucket and prefix; the object for relative key ``k`` is
        ``prefix/k`` (``prefix`` itself for ``k == ""``).
    :param fs: an existing :class:`s3fs.S3FileSystem` (``options`` are then ignored).
    :param options: see the module documentation.
    """

    schemes: ClassVar[tuple[str, ...]] = _SCHEMES
    kind: ClassVar[str] = "S3"

    def make_filesystem(self, options: Mapping[str, Any]) -> Any:
        return _make_filesystem(dict(options))

    def describe(self, options: Mapping[str, Any]) -> str:
        return _describe(dict(options))

    def open(
        self,
        key: str,
        size: int,
        chunk_size: int,
        state: Mapping[str, Any] | None = None,
    ) -> S3Writer:
        return S3Writer(self, self.object_key(key), size, chunk_size, state)

    def exists(self, key: str) -> bool:
        try:
            self.fs.call_s3("head_object", Bucket=self.bucket, Key=self.object_key(key))
        except FileNotFoundError:
            return False
        except _IO_ERRORS as exc:
            if _error_code(exc) in ("404", "NoSuchKey"):
                return False
            raise DestinationError(f"cannot check {self.url_for(key)}: {exc}") from exc
        return True

    def close(self) -> None:
        if self._owns_fs:
            _close_filesystem(self.fs)
