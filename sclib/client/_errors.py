"""The errors the client adds, and the mapping of HTTP error answers to errors.

The client adds three classes to the tree of :mod:`sclib.errors`::

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
import json
import re
from collections.abc import Mapping
from typing import Any

from sclib.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    SclibError,
    TooLarge,
    Unauthorized,
    UploadBusy,
    UploadConflict,
)

__all__ = [
    "ConnectionFailed",
    "ServerError",
    "WaitTimeout",
    "error_from_response",
]


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
