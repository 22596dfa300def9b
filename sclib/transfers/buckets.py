"""Bucket names, regions and endpoint URLs of object stores, checked up front.

A value no S3 or GCS service can take (a bucket name with an upper-case letter, a
region with a space, an endpoint that is not an http(s) URL) makes every attempt
of a transfer fail the same way, deep in botocore or gcsfs, with errors that look
transient (botocore's ``InvalidRegionError`` was retried). These functions refuse
such values before anything is sent, with :class:`~sclib.errors.InvalidInput`
naming the field (``field``, e.g. ``source_config.region``) and the rule broken.
The server checks an import's ``source_config`` with them at submission
(``import_spec``, a 422); :class:`~sclib.transfers.s3.S3Source` and
:class:`~sclib.transfers.gcs.GCSSource` check their options when they are made and
the bucket of each URL they are asked about.

The rules (docs/sources.md):

- S3 bucket names (general purpose buckets): 3 to 63 characters; lower-case
  letters, digits, ``.`` and ``-``; begin and end with a letter or digit; no two
  adjacent periods; not an IP address (``192.168.5.4``). Legacy us-east-1 names
  with upper-case letters or ``_`` are not accepted.
- GCS bucket names: lower-case letters, digits, ``-``, ``_`` and ``.``; begin and
  end with a letter or digit; 3 to 63 characters, or up to 222 with dots, each
  dot-separated part at most 63; not an IP address; not beginning with ``goog``;
  not containing ``google`` (nor ``g00gle``).
- Regions: 1 to 63 letters, digits and ``-``, not beginning or ending with ``-``,
  not all digits (botocore's own rule). Without an ``endpoint_url`` (so against
  AWS itself) the region must also be one of AWS's: one botocore lists, or one
  named like those of an AWS partition (``us-east-1``, ``eu-central-2``,
  ``cn-north-1``, ``us-gov-west-1``...).
- Endpoint URLs: ``http://`` or ``https://`` with a host name (letters, digits and
  ``-`` in dot-separated labels), an IPv4 or a bracketed IPv6 address, an optional
  port and path; no user name or password (credentials go in their own fields), no
  query and no fragment.

Only the standard library is imported (botocore, when it is installed, for the
list of AWS partitions).
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
from typing import Any
from urllib.parse import urlsplit

from sclib.errors import InvalidInput

__all__ = [
    "bucket_of",
    "check_endpoint_url",
    "check_gcs_bucket",
    "check_region",
    "check_s3_bucket",
]

_S3_CHARS = re.compile(r"^[a-z0-9.-]+$")
_GCS_CHARS = re.compile(r"^[a-z0-9._-]+$")
_REGION = re.compile(r"^(?![0-9]+$)(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
_DOTTED_QUAD = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")

#: environment variables that point botocore at another S3 endpoint than AWS's
_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def _text(value: Any, field: str, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{field}: {what} must be a string")
    return value


def _refuse(field: str, value: str, what: str, rule: str) -> InvalidInput:
    # a value that may carry credentials (user:password@, a signed query) is
    # never repeated in a message
    shown = "the value given" if "@" in value or "?" in value else repr(value)
    return InvalidInput(f"{field}: {shown} is not a valid {what}: {rule}")


def check_s3_bucket(value: Any, field: str = "bucket") -> str:
    """``value`` if it is a valid S3 bucket name (see the module), else
    :class:`~sclib.errors.InvalidInput` naming ``field`` and the rule."""
    name = _text(value, field, "an S3 bucket name")
    what = "S3 bucket name (S3 bucket naming rules)"
    if not 3 <= len(name) <= 63:
        raise _refuse(field, name, what, "it must have 3 to 63 characters")
    if not _S3_CHARS.match(name):
        raise _refuse(
            field,
            name,
            what,
            "only lower-case letters, digits, '.' and '-' are allowed",
        )
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise _refuse(field, name, what, "it must begin and end with a letter or digit")
    if ".." in name:
        raise _refuse(field, name, what, "it must not contain two adjacent periods")
    if _DOTTED_QUAD.match(name):
        raise _refuse(field, name, what, "it must not be an IP address")
    return name


def check_gcs_bucket(value: Any, field: str = "bucket") -> str:
    """``value`` if it is a valid GCS bucket name (see the module), else
    :class:`~sclib.errors.InvalidInput` naming ``field`` and the rule."""
    name = _text(value, field, "a GCS bucket name")
    what = "GCS bucket name (Cloud Storage bucket naming rules)"
    if not _GCS_CHARS.match(name):
        raise _refuse(
            field,
            name,
            what,
            "only lower-case letters, digits, '-', '_' and '.' are allowed",
        )
    if "." in name:
        if not 3 <= len(name) <= 222:
            raise _refuse(
                field, name, what, "a name with dots must have 3 to 222 characters"
            )
        if any(not 1 <= len(part) <= 63 for part in name.split(".")):
            raise _refuse(
                field,
                name,
                what,
                "each dot-separated part must have 1 to 63 characters",
            )
    elif not 3 <= len(name) <= 63:
        raise _refuse(field, name, what, "it must have 3 to 63 characters")
    if not (name[0].isalnum() and name[-1].isalnum()):
        raise _refuse(field, name, what, "it must begin and end with a letter or digit")
    if _DOTTED_QUAD.match(name):
        raise _refuse(field, name, what, "it must not be an IP address")
    if name.startswith("goog"):
        raise _refuse(field, name, what, "it must not begin with 'goog'")
    if "google" in name or "g00gle" in name:
        raise _refuse(field, name, what, "it must not contain 'google'")
    return name


@functools.cache
def _aws_regions() -> tuple[frozenset[str], tuple[re.Pattern[str], ...]] | None:
    """The regions botocore lists and its partitions' region patterns, or None
    without botocore."""
    try:
        from botocore.loaders import (  # type: ignore[import-not-found, import-untyped, unused-ignore]
            create_loader,
        )

        data = create_loader().load_data("partitions")
    except Exception:  # no botocore, or no partitions in this version
        return None
    names: set[str] = set()
    patterns: list[re.Pattern[str]] = []
    for partition in data.get("partitions", []):
        names.update(partition.get("regions", {}))
        if partition.get("regionRegex"):
            patterns.append(re.compile(partition["regionRegex"]))
    return frozenset(names), tuple(patterns)


def check_region(value: Any, field: str = "region", *, endpoint_url: Any = None) -> str:
    """``value`` (a region) if botocore can take it and, without ``endpoint_url`` (so
    against AWS), it is one of AWS's (see the module); else
    :class:`~sclib.errors.InvalidInput` naming ``field`` and the rule."""
    region = _text(value, field, "a region")
    if not _REGION.match(region):
        raise _refuse(
            field,
            region,
            "region name",
            "1 to 63 letters, digits and '-', not beginning or ending with '-' "
            "and not all digits (like us-east-1)",
        )
    if endpoint_url or any(os.environ.get(v) for v in _ENDPOINT_VARIABLES):
        return region  # another store: its own region names
    known = _aws_regions()
    if known is None:
        return region
    names, patterns = known
    if region in names or any(p.match(region) for p in patterns):
        return region
    raise _refuse(
        field,
        region,
        "AWS region",
        "AWS regions are named like us-east-1, eu-central-2, cn-north-1 or "
        "us-gov-west-1 (for another S3-compatible store, give its endpoint_url)",
    )


def check_endpoint_url(value: Any, field: str = "endpoint_url") -> str:
    """``value`` if it is a usable endpoint URL (see the module), else
    :class:`~sclib.errors.InvalidInput` naming ``field`` and the rule."""
    url = _text(value, field, "an endpoint URL")
    what = "endpoint URL"
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise _refuse(
            field, url, what, "it must not contain spaces or control characters"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _refuse(field, url, what, f"it does not parse ({exc})") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise _refuse(field, url, what, "it must start with http:// or https://")
    if parts.username is not None or parts.password is not None:
        raise _refuse(
            field,
            url,
            what,
            "it must not carry a user name or password (give the credentials "
            "in their own fields)",
        )
    if parts.query or parts.fragment or url.endswith(("?", "#")):
        raise _refuse(field, url, what, "it must have no query and no fragment")
    host = parts.hostname or ""
    if not host:
        raise _refuse(field, url, what, "it must name a host")
    if port == 0:
        raise _refuse(field, url, what, "its port must be 1 to 65535")
    if not _valid_host(host, bracketed="[" in parts.netloc):
        raise _refuse(
            field,
            url,
            what,
            "its host must be a name of letters, digits and '-' in dot-separated "
            "labels, an IPv4 address or an IPv6 address in brackets",
        )
    return url


def _valid_host(host: str, *, bracketed: bool) -> bool:
    if bracketed:
        try:
            ipaddress.IPv6Address(host.split("%", 1)[0])
        except ValueError:
            return False
        return True
    if _DOTTED_QUAD.match(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return False
        return True
    name = host[:-1] if host.endswith(".") else host
    return 0 < len(name) <= 253 and all(_LABEL.match(p) for p in name.split("."))


def bucket_of(url: str, field: str = "url") -> str:
    """The bucket of ``scheme://bucket/key`` (:class:`InvalidInput` without one)."""
    _, sep, rest = url.partition("://")
    bucket = rest.split("/", 1)[0] if sep else ""
    if not bucket:
        raise InvalidInput(f"{field}: no bucket in {url!r} (scheme://bucket/key)")
    return bucket
