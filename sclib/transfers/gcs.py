"""Google Cloud Storage: a source and a destination, through gcsfs.

URLs are ``gs://bucket/key`` (``gcs://`` is accepted too and reported as ``gs://``).
Both classes take the same options:

====================  ==========================================================
option                meaning
====================  ==========================================================
``token``             gcsfs credentials: a service-account JSON file name or
                      dict, ``"google_default"``, ``"cloud"``, ``"anon"``...
``credentials``       the same as ``token`` (give one of the two)
``anon``              ``True``: anonymous access (``token="anon"``)
``project``           the Google Cloud project
``endpoint_url``      another endpoint (an emulator); gcsfs also reads
                      ``STORAGE_EMULATOR_HOST``
``requester_pays``    bill requests to ``project`` (or to the project named)
====================  ==========================================================

Any other :class:`gcsfs.core.GCSFileSystem` argument is passed through; an unknown
name is refused with :class:`~sclib.errors.ConfigurationError`. Credentials are
never logged nor put in a message, and :func:`repr` leaves them out.

This module uses ``gcsfs.core.GCSFileSystem`` itself, not the class ``gcsfs``
exports when ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` is on (the default): that one
asks the Storage Control API about each bucket first, which stalls for about a
minute per call where that API cannot be reached (an emulator, a closed network).
Zonal buckets, which only the experimental class can read, are not supported.

Reading (:class:`GCSSource`) identifies an object by its ``generation`` (with
``md5``, ``crc32c`` and ``etag`` for information). Each ranged read is sent with
``ifGenerationMatch``, so GCS refuses it (412) once the object was replaced, and
the generation GCS reports with the bytes is compared too. A server that reports
no generation with the bytes (the emulators do not, and they ignore the
precondition) gets the generation checked by a metadata request right after the
read, which is as safe (generations only grow) at the cost of one more request.

Writing (:class:`GCSDestination`) stores each chunk as a temporary object
``<key>.sclib-parts/<upload id>/<index>``, uploaded with its MD5 and CRC-32C so
GCS refuses damaged bytes, and compares the checksums GCS reports with the chunk's
(:class:`~sclib.errors.ChecksumMismatch` on a difference). :meth:`GCSWriter.commit`
composes the parts, pinned to the generations that were verified, into the final
key (32 sources per compose call, in a tree for more), checks the result's size
and CRC-32C against the parts' (combined without reading the data back), then
deletes the parts. Nothing exists at the final key before commit; the parts are
ordinary objects, visible to a listing of the destination prefix meanwhile.
A 0-byte object has no chunks and is written whole at commit.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import hashlib
import inspect
import io
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import google_crc32c  # type: ignore[import-not-found, unused-ignore]  # gcsfs dep
from fsspec.asyn import sync
from gcsfs.core import GCSFileSystem
from gcsfs.retry import RETRIABLE_EXCEPTIONS, HttpError

from sclib.errors import (
    ChecksumMismatch,
    ConfigurationError,
    DestinationError,
    InvalidInput,
    SclibError,
    SourceChanged,
    SourceError,
)
from sclib.transfers.buckets import bucket_of, check_endpoint_url, check_gcs_bucket
from sclib.transfers.destinations import BucketDestination, DestinationWriter
from sclib.transfers.plan import Chunk, check_chunk
from sclib.transfers.sources import FsspecSource, SourceObject

__all__ = [
    "GCSDestination",
    "GCSSource",
    "GCSWriter",
    "crc32c_combine",
    "gcsfs_options",
]

logger = logging.getLogger(__name__)

_SCHEMES = ("gs", "gcs")
_FSSPEC_OPTIONS = frozenset(
    {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
)
#: what a request through gcsfs may raise: OSError (404 FileNotFoundError, 412
#: FileExistsError, 403), HttpError (other statuses), ValueError (400 "invalid"),
#: and the transport errors gcsfs retries (aiohttp, requests, google.auth)
_IO_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    HttpError,
    ValueError,
    *RETRIABLE_EXCEPTIONS,
)
PARTS_SUFFIX = ".sclib-parts"
#: GCS composes at most 32 source objects per request
MAX_COMPOSE = 32
#: concurrent requests when composing or deleting many parts
_CONCURRENCY = 16
_UPLOAD_ID = re.compile(r"[0-9a-f]{8,64}")


# -- options --------------------------------------------------------------------


def _gcsfs_parameters() -> frozenset[str]:
    names = set(inspect.signature(GCSFileSystem.__init__).parameters)
    names.discard("self")
    names.discard("kwargs")
    return frozenset(names)


def gcsfs_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as keyword arguments for :class:`gcsfs.core.GCSFileSystem`.

    ``credentials`` is another name for ``token``, ``anon=True`` means
    ``token="anon"``. Each GCS source or destination gets its own filesystem
    instance, without a listings cache (a cached listing would report a stale
    generation). An ``endpoint_url`` that is not a usable http(s) URL is refused
    with :class:`~sclib.errors.InvalidInput` (see :mod:`sclib.transfers.buckets`).
    """
    known = _gcsfs_parameters() | _FSSPEC_OPTIONS
    out: dict[str, Any] = {}
    unknown: list[str] = []
    given = [n for n in ("token", "credentials") if options.get(n) is not None]
    if options.get("anon"):
        given.append("anon")
    if len(given) > 1:
        raise ConfigurationError(
            f"GCS options {' and '.join(repr(n) for n in given)} all set the "
            "credentials; give only one"
        )
    for name, value in options.items():
        if name == "anon":
            if value:
                out["token"] = "anon"  # noqa: S105 - gcsfs's word for no credentials
        elif name == "credentials":
            if value is not None:
                out["token"] = value
        elif name in known:
            out[name] = value
        else:
            unknown.append(name)
    if unknown:
        raise ConfigurationError(
            f"unknown GCS option(s) {', '.join(sorted(unknown))}; use token, "
            "credentials, anon, project, endpoint_url, requester_pays, or a "
            "gcsfs.GCSFileSystem argument"
        )
    if out.get("endpoint_url") is not None:
        check_endpoint_url(out["endpoint_url"], "endpoint_url")
    out.setdefault("skip_instance_cache", True)
    out.setdefault("use_listings_cache", False)
    return out


def _make_filesystem(options: Mapping[str, Any]) -> Any:
    kwargs = gcsfs_options(options)
    try:
        return GCSFileSystem(**kwargs)
    except Exception as exc:
        # gcsfs checks the credentials here (a string that is not a file name is
        # taken for an access token, and may even be sent to Google's tokeninfo
        # endpoint); its message or cause may quote them: name only the kind
        raise ConfigurationError(
            f"cannot open a GCS filesystem with these options "
            f"({type(exc).__name__}); check the credentials (token/credentials "
            "must be a file name, a dict, a Credentials object or a known word "
            "like 'anon' or 'google_default')"
        ) from None


def _describe(options: Mapping[str, Any]) -> str:
    """What may be shown of ``options``: endpoint and project, no credentials."""
    parts = []
    for name in ("endpoint_url", "project"):
        if options.get(name):
            parts.append(f"{name}={options[name]!r}")
    if options.get("anon") or options.get("token") == "anon":
        parts.append("anon=True")
    return ", ".join(parts)


def _close_filesystem(fs: Any) -> None:
    """Close the aiohttp session of a gcsfs filesystem we created."""
    session = getattr(fs, "_session", None)
    if session is None or session.closed:
        return
    try:
        sync(fs.loop, session.close, timeout=5)
    except Exception as exc:  # best effort: a finalizer closes it anyway
        logger.debug("closing the GCS session failed: %s", type(exc).__name__)


def _run(fs: Any, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
    """Run the coroutine function on the filesystem's event loop thread."""
    return sync(fs.loop, func, *args)


# -- checksums ------------------------------------------------------------------


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


def _crc32c_b64(value: int) -> str:
    return _b64(value.to_bytes(4, "big"))


def _crc32c_from_b64(text: str) -> int:
    return int.from_bytes(base64.b64decode(text), "big")


_CRC32C_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _gf2_times(matrix: Sequence[int], vector: int) -> int:
    total = 0
    i = 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _gf2_square(matrix: Sequence[int]) -> list[int]:
    return [_gf2_times(matrix, row) for row in matrix]


@functools.lru_cache(maxsize=16)
def _zeros_operator(length: int) -> tuple[int, ...]:
    """The linear map that feeds ``length`` zero bytes through a CRC-32C register."""
    op = [_CRC32C_POLY] + [1 << n for n in range(31)]  # one zero bit
    for _ in range(3):  # 2, 4, 8 bits: one zero byte
        op = _gf2_square(op)
    result = [1 << n for n in range(32)]  # identity
    while length:
        if length & 1:
            result = [_gf2_times(op, row) for row in result]
        length >>= 1
        if length:
            op = _gf2_square(op)
    return tuple(result)


def crc32c_combine(crc1: int, crc2: int, length2: int) -> int:
    """The CRC-32C of ``a + b`` from ``crc32c(a)``, ``crc32c(b)`` and ``len(b)``.

    The same identity as zlib's ``crc32_combine``; GCS reports the CRC-32C of a
    composed object, so this checks a compose without reading it back.
    """
    if length2 <= 0:
        return crc1
    return _gf2_times(_zeros_operator(length2), crc1) ^ crc2


# -- source ---------------------------------------------------------------------


def _object_resource(fs: Any, bucket: str, key: str) -> dict[str, Any]:
    """The object's metadata (JSON API resource); FileNotFoundError if missing."""
    resource: dict[str, Any] = fs.call("GET", "b/{}/o/{}", bucket, key, json_out=True)
    return resource


def _content_range_total(value: str | None) -> int | None:
    """``bytes 0-9/100`` -> 100."""
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def gcs_error(exc: BaseException, what: str, endpoint: str | None = None) -> SclibError:
    """sclib's error for what gcsfs, google-auth or aiohttp raised, with a hint
    for credentials and endpoints (see :func:`sclib.transfers.s3.s3_error`)."""
    name = type(exc).__name__
    where = endpoint or "Google Cloud Storage"
    if name in ("DefaultCredentialsError", "RefreshError", "TransportError"):
        return ConfigurationError(
            f"{what}: no usable Google credentials ({name}: {exc}): pass "
            "service_account_json (or token), set GOOGLE_APPLICATION_CREDENTIALS, "
            "or token=anon for a public bucket"
        )
    status = getattr(exc, "code", None)
    if status in (401, 403):
        return ConfigurationError(
            f"{what}: {where} refused the credentials or access ({status}); check "
            "the service account and the bucket's permissions"
        )
    if isinstance(exc, FileNotFoundError) or status == 404:
        from sclib.errors import SourceNotFound

        return SourceNotFound(f"{what}: not found")
    if isinstance(exc, ConnectionError | TimeoutError) or "Connect" in name:
        return SourceError(
            f"{what}: cannot reach {where} ({name}: {exc}); check endpoint_url "
            "and the network"
        )
    return SourceError(f"{what}: {name}: {exc}")


class GCSSource(FsspecSource):
    """Reads ``gs://bucket/key`` objects and ``gs://bucket/prefix`` folders.

    :param fs: an existing :class:`gcsfs.core.GCSFileSystem` to use (then
        ``options`` are ignored and :meth:`close` leaves it open).
    :param options: see the module documentation.
    """

    schemes: ClassVar[tuple[str, ...]] = _SCHEMES
    identity_keys: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "generation": ("generation",),
        "md5": ("md5Hash",),
        "crc32c": ("crc32c",),
        "etag": ("etag",),
    }

    def __init__(self, *, fs: Any | None = None, **options: Any) -> None:
        self._owns_fs = fs is None
        self._shown = _describe(options)
        self._endpoint = options.get("endpoint_url")
        super().__init__("gs", fs=fs if fs is not None else _make_filesystem(options))

    def __repr__(self) -> str:
        return f"GCSSource({self._shown})"

    def library_error(self, exc: Exception, what: str) -> SclibError | None:
        if not self.raised_by(exc, "gcsfs", "google", "aiohttp"):
            return None
        return gcs_error(exc, what, self._endpoint)

    @staticmethod
    def _check_bucket(url: str) -> None:
        """A bucket name GCS never takes: InvalidInput before any request."""
        check_gcs_bucket(bucket_of(url), "bucket")

    def stat(self, url: str) -> SourceObject:
        self._check_bucket(url)
        return super().stat(url)

    def walk(self, url: str) -> Iterator[SourceObject]:
        self._check_bucket(url)
        return super().walk(url)

    def _split(self, obj: SourceObject) -> tuple[str, str]:
        bucket, key, _ = self.fs.split_path(self._path(obj.url))
        return str(bucket), str(key)

    def read(self, obj: SourceObject, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise InvalidInput(f"cannot read {length} bytes at offset {offset}")
        end = min(offset + length, obj.size)
        generation = obj.identity.get("generation")
        if end <= offset:
            if generation:
                self.check_generation(obj)
            return b""
        url = self.fs.url(self._path(obj.url))
        params = {"ifGenerationMatch": generation} if generation else {}
        try:
            headers, data = self.fs.call(
                "GET", url, headers={"Range": f"bytes={offset}-{end - 1}"}, **params
            )
        except FileNotFoundError as exc:
            raise SourceChanged(f"{obj.url} disappeared during the transfer") from exc
        except FileExistsError as exc:  # gcsfs's name for 412 Precondition Failed
            raise SourceChanged(
                f"{obj.url} changed since the transfer started (its generation is "
                f"no longer {generation}); start a new transfer to copy the new "
                "version"
            ) from exc
        except _IO_ERRORS as exc:
            raise SourceError(
                f"reading {obj.url} at {offset}: {type(exc).__name__}: {exc}"
            ) from exc
        served = headers.get("x-goog-generation")
        if generation and served is not None and str(served) != generation:
            raise SourceChanged(
                f"{obj.url} changed since the transfer started (generation "
                f"{generation} -> {served})"
            )
        total = _content_range_total(headers.get("Content-Range"))
        if total is not None and total != obj.size:
            raise SourceChanged(
                f"{obj.url} changed since the transfer started (size {obj.size} -> "
                f"{total})"
            )
        if len(data) != end - offset:
            raise SourceError(
                f"short read of {obj.url} at {offset}: got {len(data)} of "
                f"{end - offset} bytes"
            )
        if generation and served is None:
            # the server did not say what it served, nor honour the precondition
            # for sure: check now (a generation never comes back once replaced)
            self.check_generation(obj)
        return bytes(data)

    def check_generation(self, obj: SourceObject) -> None:
        """Raise :class:`SourceChanged` unless ``obj`` is still the live generation
        (and size); one metadata request."""
        bucket, key = self._split(obj)
        try:
            resource = _object_resource(self.fs, bucket, key)
        except FileNotFoundError as exc:
            raise SourceChanged(f"{obj.url} disappeared during the transfer") from exc
        except _IO_ERRORS as exc:
            raise SourceError(f"cannot check {obj.url}: {exc}") from exc
        generation = str(resource.get("generation"))
        size = int(resource.get("size") or 0)
        if generation != obj.identity.get("generation") or size != obj.size:
            raise SourceChanged(
                f"{obj.url} changed since the transfer started (generation "
                f"{obj.identity.get('generation')} -> {generation}, size {obj.size} "
                f"-> {size}); start a new transfer to copy the new version"
            )

    def close(self) -> None:
        if self._owns_fs:
            _close_filesystem(self.fs)


# -- destination ----------------------------------------------------------------


def _some(indexes: list[int], limit: int = 10) -> str:
    shown = ", ".join(str(i) for i in indexes[:limit])
    return shown + (f" and {len(indexes) - limit} more" if len(indexes) > limit else "")


def _is_checksum_refusal(exc: BaseException) -> bool:
    """GCS's 400 for an upload whose bytes do not match the MD5/CRC-32C sent."""
    text = str(exc).lower()
    return ("hash" in text or "crc32c" in text or "md5" in text) and (
        "match" in text or "invalid" in text
    )


class GCSWriter(DestinationWriter):
    """One object written as verified part objects composed at commit; made by
    :meth:`GCSDestination.open`.

    ``state`` is ``{"bucket", "key", "upload_id", "resumed"}``; the parts are
    ``<key>.sclib-parts/<upload_id>/<index, 5 digits>``.
    """

    def __init__(
        self,
        destination: GCSDestination,
        key: str,
        size: int,
        chunk_size: int,
        state: Mapping[str, Any] | None,
    ) -> None:
        if size < 0:
            raise InvalidInput(f"size must not be negative, got {size}")
        if chunk_size <= 0:
            raise InvalidInput(f"chunk size must be positive, got {chunk_size}")
        self.fs = destination.fs
        self.bucket = destination.bucket
        self.key = key
        self.url = f"gs://{self.bucket}/{key}"
        self.size = size
        self.chunk_size = chunk_size
        self.parts = -(-size // chunk_size)
        self._committed = False
        self._intermediates: list[str] = []
        self.state = self._open(state)

    # -- names and state --------------------------------------------------------

    @property
    def upload_id(self) -> str:
        return str(self.state["upload_id"])

    @property
    def parts_prefix(self) -> str:
        """Where the parts of this upload live, ending with ``/``."""
        return f"{self.key}{PARTS_SUFFIX}/{self.upload_id}/"

    def part_name(self, index: int) -> str:
        return f"{self.parts_prefix}{index:05d}"

    def _state(self, upload_id: str, *, resumed: bool) -> dict[str, Any]:
        return {
            "bucket": self.bucket,
            "key": self.key,
            "upload_id": upload_id,
            "resumed": resumed,
        }

    def _open(self, saved: Mapping[str, Any] | None) -> dict[str, Any]:
        if (
            saved
            and saved.get("bucket") == self.bucket
            and saved.get("key") == self.key
            and isinstance(saved.get("upload_id"), str)
            and _UPLOAD_ID.fullmatch(saved["upload_id"])
        ):
            self.state = self._state(saved["upload_id"], resumed=True)
            if self._list(self.parts_prefix):
                logger.info("resuming the upload of %s", self.url)
                return self.state
            if self.parts and self._already_committed():
                logger.info("%s was already committed by this upload", self.url)
                self._committed = True
                return self.state
            logger.info(
                "no parts of the saved upload of %s are left; starting over", self.url
            )
        return self._state(secrets.token_hex(8), resumed=False)

    # -- requests ---------------------------------------------------------------

    def _list(self, prefix: str) -> list[dict[str, Any]]:
        """Every object whose name starts with ``prefix`` (all pages)."""
        items: list[dict[str, Any]] = []
        page: str | None = None
        while True:
            try:
                response = self.fs.call(
                    "GET",
                    "b/{}/o",
                    self.bucket,
                    prefix=prefix,
                    pageToken=page,
                    json_out=True,
                )
            except _IO_ERRORS as exc:
                raise DestinationError(
                    f"cannot list the parts of {self.url}: {exc}"
                ) from exc
            items.extend(response.get("items") or [])
            page = response.get("nextPageToken")
            if not page:
                return items

    def _upload_url(self) -> str:
        base = str(self.fs.base)  # "<endpoint>/storage/v1/"
        location = base[: -len("/storage/v1/")] if base.endswith("/storage/v1/") else ""
        if not location:  # pragma: no cover - depends on gcsfs internals
            raise ConfigurationError(f"unexpected gcsfs API base {base!r}")
        return f"{location}/upload/storage/v1/b/{quote(self.bucket, safe='')}/o"

    def _upload(self, name: str, data: bytes, md5: bytes, crc: int) -> dict[str, Any]:
        """One multipart upload of ``data`` as ``name``, with its checksums, so GCS
        refuses bytes damaged on the way."""
        metadata = {"name": name, "md5Hash": _b64(md5), "crc32c": _crc32c_b64(crc)}
        boundary = f"sclib-{secrets.token_hex(16)}"
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8"
                f"\r\n\r\n{json.dumps(metadata)}\r\n--{boundary}\r\n"
                "Content-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        response: dict[str, Any] = self.fs.call(
            "POST",
            self._upload_url(),
            uploadType="multipart",
            headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
            # a file object: aiohttp warns about (and blocks its loop on) large
            # bytes bodies, and gcsfs rewinds file objects when it retries
            data=io.BytesIO(body),
            json_out=True,
        )
        return response

    def _compose(
        self, sources: Sequence[tuple[str, str]], name: str, final: bool
    ) -> dict[str, Any]:
        destination: dict[str, Any] = {
            "bucket": self.bucket,
            "name": name,
            "contentType": "application/octet-stream",
        }
        if final:
            destination["metadata"] = {"sclib-upload": self.upload_id}
        response: dict[str, Any] = self.fs.call(
            "POST",
            "b/{}/o/{}/compose",
            self.bucket,
            name,
            headers={"Content-Type": "application/json"},
            json={
                "kind": "storage#composeRequest",
                "sourceObjects": [{"name": n, "generation": g} for n, g in sources],
                "destination": destination,
            },
            json_out=True,
        )
        return response

    # -- chunks -----------------------------------------------------------------

    def _chunk_length(self, index: int) -> int:
        return min(self.chunk_size, self.size - index * self.chunk_size)

    def _check_chunk(self, chunk: Chunk, data: bytes) -> None:
        check_chunk(chunk, len(data), self.size, self.chunk_size, self.url)

    def write_chunk(self, chunk: Chunk, data: bytes | memoryview) -> str | None:
        data = bytes(data)  # a no-op for bytes; the engine may pass a view
        self._check_chunk(chunk, data)
        md5 = hashlib.md5(data, usedforsecurity=False).digest()
        crc = _crc32c(data)
        name = self.part_name(chunk.index)
        try:
            resource = self._upload(name, data, md5, crc)
        except _IO_ERRORS as exc:
            if _is_checksum_refusal(exc):
                raise ChecksumMismatch(
                    f"GCS received chunk {chunk.index} of {self.url} damaged and "
                    "refused it; send it again"
                ) from exc
            raise DestinationError(
                f"uploading chunk {chunk.index} of {self.url}: {exc}"
            ) from exc
        landed_md5 = resource.get("md5Hash")
        landed_crc = resource.get("crc32c")
        if (
            int(resource.get("size") or -1) != len(data)
            or landed_crc != _crc32c_b64(crc)
            or (landed_md5 is not None and landed_md5 != _b64(md5))
        ):
            raise ChecksumMismatch(
                f"chunk {chunk.index} of {self.url} did not land intact: GCS stored "
                f"{resource.get('size')} bytes with crc32c {landed_crc} and md5 "
                f"{landed_md5}; the chunk has {len(data)} bytes, crc32c "
                f"{_crc32c_b64(crc)} and md5 {_b64(md5)}"
            )
        logger.debug("uploaded part %d of %s", chunk.index, self.url)
        return str(resource["generation"])

    # -- commit and abort -------------------------------------------------------

    def _listed_parts(self) -> tuple[dict[int, dict[str, Any]], list[str]]:
        """index -> resource of each part, and the names of everything under the
        parts prefix (parts and intermediate composes)."""
        prefix = self.parts_prefix
        parts: dict[int, dict[str, Any]] = {}
        names: list[str] = []
        for item in self._list(prefix):
            name = str(item["name"])
            names.append(name)
            rest = name[len(prefix) :]
            if rest.isdigit():
                parts[int(rest)] = item
        return parts, names

    def missing(self, tokens: Mapping[int, str | None]) -> list[int]:
        if not tokens or self._committed:
            return []
        parts, _ = self._listed_parts()
        bad = []
        for i, token in tokens.items():
            part = parts.get(i)
            if (
                part is None
                or str(part.get("generation")) != str(token)
                or int(part.get("size", -1)) != self._chunk_length(i)
            ):
                bad.append(i)
        return sorted(bad)

    def commit(self, tokens: Mapping[int, str | None]) -> None:
        if self._committed:
            return
        if self.parts == 0:
            self._commit_empty()
            return
        parts, names = self._listed_parts()
        missing = [i for i in range(self.parts) if i not in parts]
        if missing:
            if not parts and self._already_committed():
                logger.info("%s was already committed", self.url)
                self._committed = True
                return
            raise DestinationError(
                f"cannot commit {self.url}: chunk(s) {_some(missing)} were never "
                "uploaded (or their part objects were deleted)"
            )
        sources: list[tuple[str, str]] = []
        expected_crc: int | None = None
        for index in range(self.parts):
            item = parts[index]
            generation = str(item.get("generation"))
            size = int(item.get("size") or 0)
            token = tokens.get(index)
            if size != self._chunk_length(index) or (
                token is not None and str(token) != generation
            ):
                raise ChecksumMismatch(
                    f"the part for chunk {index} of {self.url} is not the one that "
                    f"was verified (size {size}, generation {generation}; expected "
                    f"{self._chunk_length(index)} bytes, generation {token}); send "
                    "that chunk again"
                )
            crc = _crc32c_from_b64(str(item["crc32c"]))
            expected_crc = (
                crc if expected_crc is None else crc32c_combine(expected_crc, crc, size)
            )
            sources.append((str(item["name"]), generation))
        try:
            final = self._compose_tree(sources)
        except _IO_ERRORS as exc:
            raise DestinationError(f"cannot compose {self.url}: {exc}") from exc
        landed_size = int(final.get("size") or -1)
        landed_crc = final.get("crc32c")
        if landed_size != self.size or (
            expected_crc is not None
            and landed_crc is not None
            and landed_crc != _crc32c_b64(expected_crc)
        ):
            raise ChecksumMismatch(
                f"{self.url} was composed wrongly: {landed_size} bytes with crc32c "
                f"{landed_crc}, the parts make {self.size} bytes with crc32c "
                f"{_crc32c_b64(expected_crc or 0)}"
            )
        self._committed = True
        self.state["committed"] = True
        logger.info(
            "committed %s (%d bytes, %d parts)", self.url, self.size, self.parts
        )
        self._delete_quietly(names + self._intermediates)

    def _compose_tree(self, sources: list[tuple[str, str]]) -> dict[str, Any]:
        """Compose ``sources`` into the final key, 32 at a time, level by level."""
        self._intermediates = []
        level = 0
        while len(sources) > MAX_COMPOSE:
            groups = [
                (
                    sources[i : i + MAX_COMPOSE],
                    f"{self.parts_prefix}compose-{level}-{n:05d}",
                )
                for n, i in enumerate(range(0, len(sources), MAX_COMPOSE))
            ]
            results = _run(self.fs, self._compose_many, groups)
            self._intermediates.extend(name for _, name in groups)
            sources = [
                (name, str(result["generation"]))
                for (_, name), result in zip(groups, results, strict=True)
            ]
            level += 1
        return self._compose(sources, self.key, final=True)

    async def _compose_many(
        self, groups: list[tuple[Sequence[tuple[str, str]], str]]
    ) -> list[dict[str, Any]]:
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def one(sources: Sequence[tuple[str, str]], name: str) -> dict[str, Any]:
            async with limit:
                result: dict[str, Any] = await self.fs._call(
                    "POST",
                    "b/{}/o/{}/compose",
                    self.bucket,
                    name,
                    headers={"Content-Type": "application/json"},
                    json={
                        "kind": "storage#composeRequest",
                        "sourceObjects": [
                            {"name": n, "generation": g} for n, g in sources
                        ],
                        "destination": {"bucket": self.bucket, "name": name},
                    },
                    json_out=True,
                )
                return result

        return list(await asyncio.gather(*(one(s, n) for s, n in groups)))

    def _commit_empty(self) -> None:
        empty_md5 = hashlib.md5(b"", usedforsecurity=False).digest()
        try:
            resource = self._upload(self.key, b"", empty_md5, _crc32c(b""))
        except _IO_ERRORS as exc:
            raise DestinationError(f"cannot write {self.url}: {exc}") from exc
        if int(resource.get("size") or 0) != 0:
            raise ChecksumMismatch(f"{self.url} should be empty but is not")
        self._committed = True
        self.state["committed"] = True
        logger.info("committed %s (0 bytes)", self.url)

    def _already_committed(self) -> bool:
        """After a commit whose end was lost: is the object this upload's?"""
        try:
            resource = _object_resource(self.fs, self.bucket, self.key)
        except _IO_ERRORS:
            return False
        metadata = resource.get("metadata") or {}
        return bool(
            metadata.get("sclib-upload") == self.upload_id
            and int(resource.get("size") or -1) == self.size
        )

    async def _delete_many(self, names: list[str]) -> list[BaseException]:
        limit = asyncio.Semaphore(_CONCURRENCY)

        async def one(name: str) -> None:
            async with limit:
                with contextlib.suppress(FileNotFoundError):
                    await self.fs._call("DELETE", "b/{}/o/{}", self.bucket, name)

        results = await asyncio.gather(*(one(n) for n in names), return_exceptions=True)
        return [r for r in results if isinstance(r, BaseException)]

    def _delete(self, names: list[str]) -> None:
        if not names:
            return
        errors: list[BaseException] = _run(
            self.fs, self._delete_many, sorted(set(names))
        )
        if errors:
            raise DestinationError(
                f"cannot delete {len(errors)} part object(s) of {self.url} under "
                f"{self.parts_prefix}: {errors[0]}"
            ) from errors[0]

    def _delete_quietly(self, names: list[str]) -> None:
        try:
            self._delete(names)
        except DestinationError as exc:
            logger.warning("%s; delete them by hand", exc)

    def abort(self) -> None:
        names = [str(item["name"]) for item in self._list(self.parts_prefix)]
        self._delete(names)
        logger.info(
            "aborted the upload of %s (%d objects removed)", self.url, len(names)
        )


class GCSDestination(BucketDestination):
    """Objects under ``gs://bucket/prefix``, each composed from verified parts.

    :param url: the bucket and prefix; the object for relative key ``k`` is
        ``prefix/k`` (``prefix`` itself for ``k == ""``).
    :param fs: an existing :class:`gcsfs.core.GCSFileSystem` (``options`` are then
        ignored).
    :param options: see the module documentation.
    """

    schemes: ClassVar[tuple[str, ...]] = _SCHEMES
    kind: ClassVar[str] = "GCS"

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
    ) -> GCSWriter:
        return GCSWriter(self, self.object_key(key), size, chunk_size, state)

    def exists(self, key: str) -> bool:
        try:
            _object_resource(self.fs, self.bucket, self.object_key(key))
        except FileNotFoundError:
            return False
        except _IO_ERRORS as exc:
            raise DestinationError(f"cannot check {self.url_for(key)}: {exc}") from exc
        return True

    def close(self) -> None:
        if self._owns_fs:
            _close_filesystem(self.fs)
