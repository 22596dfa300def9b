"""Writing to S3: :class:`S3Destination` and its :class:`S3Writer` (see
:mod:`sclib.transfers.s3`)."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

# aiohttp and botocore come with s3fs (through aiobotocore); the ignores cover a
# type check run where the s3 extra is not installed (and botocore has no types)
from sclib.errors import (
    ChecksumMismatch,
    DestinationError,
    InvalidInput,
)
from sclib.transfers.destinations import BucketDestination, DestinationWriter
from sclib.transfers.plan import (
    MAX_PARTS,
    MIN_OBJECT_STORE_CHUNK,
    Chunk,
    check_chunk,
)
from sclib.transfers.s3.common import (
    _BAD_DIGEST,
    _IO_ERRORS,
    _NO_UPLOAD,
    _SCHEMES,
    _bare,
    _close_filesystem,
    _describe,
    _error_code,
    _is_md5,
    _make_filesystem,
    _multipart_etag,
)

logger = logging.getLogger("sclib.transfers.s3")


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
