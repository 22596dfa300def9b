"""What the S3 source and destination share: options, the filesystem, error
translation and ETag helpers (see :mod:`sclib.transfers.s3`)."""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Mapping
from typing import Any

# aiohttp and botocore come with s3fs (through aiobotocore); the ignores cover a
# type check run where the s3 extra is not installed (and botocore has no types)
import aiohttp  # type: ignore[import-not-found, unused-ignore]
import s3fs
from botocore.exceptions import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
    BotoCoreError,
)
from fsspec.asyn import sync

from sclib.errors import (
    ConfigurationError,
    SclibError,
    SourceError,
)
from sclib.transfers.buckets import (
    check_endpoint_url,
    check_region,
)

logger = logging.getLogger("sclib.transfers.s3")

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
