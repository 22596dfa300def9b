"""Errors as ``application/problem+json`` (RFC 9457) with a stable ``code``.

Every error response has ``type``, ``title``, ``status``, ``detail`` and ``code``;
``code`` is the snake_case name of the sclib exception class (``job_not_found``,
``upload_conflict``, ...), which the client maps back to the same class, so code
that catches :class:`~sclib.errors.JobNotFound` works the same locally and over
HTTP. A 404 also carries the seed's keys: ``{"error": "Not found", "detail":
"404: <what>"}``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from sclib import errors as E

__all__ = ["code_of", "install_handlers", "problem", "status_of"]

log = logging.getLogger(__name__)

_STATUS: list[tuple[type[BaseException], int]] = [
    (E.Unauthorized, 401),
    (E.Forbidden, 403),
    (E.NotFound, 404),
    (E.UploadBusy, 423),
    (E.UploadConflict, 409),
    (E.InvalidJobState, 409),
    (E.TooLarge, 413),
    (E.InsufficientStorage, 507),
    (E.LimitReached, 429),
    (E.ChecksumMismatch, 400),
    (E.BlockedAddress, 422),
    (E.InvalidInput, 422),
    (E.UnsupportedScheme, 422),
    (E.MissingDependency, 501),
    (E.ConfigurationError, 500),
    (E.BackendError, 503),
    (E.SourceError, 502),
    (E.TransferError, 500),
]

_TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Content too large",
    415: "Unsupported media type",
    422: "Invalid input",
    423: "Locked",
    429: "Too many requests",
    431: "Request header fields too large",
    500: "Internal error",
    501: "Not implemented",
    502: "Bad gateway",
    503: "Service unavailable",
    507: "Insufficient storage",
}


def code_of(exc: BaseException | type[BaseException]) -> str:
    """``JobNotFound`` -> ``job_not_found``."""
    name = exc.__name__ if isinstance(exc, type) else type(exc).__name__
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def status_of(exc: BaseException) -> int:
    """The HTTP status of an error: the one a route set on it
    (``exc.http_status``, e.g. a legacy route answering as the original did),
    else the one its class has."""
    chosen = getattr(exc, "http_status", None)
    if isinstance(chosen, int):
        return chosen
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def problem(
    status: int, detail: str, code: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    title = _TITLES.get(status, "Error")
    body: dict[str, Any] = {
        "type": f"https://sclib.dev/problems/{code}",
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    if status == 404:
        body["error"] = "Not found"
        body["detail"] = f"404: {detail}"
    return JSONResponse(
        body, status_code=status, media_type="application/problem+json", headers=headers
    )


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the app takes at the request's path (asked
    of the routes themselves, so routers included with a prefix count)."""
    from starlette.routing import Match

    found = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(
            route.matches(scope)[0] == Match.FULL for route in request.app.router.routes
        ):
            found.append(method)
    return found


def install_handlers(app: FastAPI) -> None:
    """Route every error through :func:`problem`."""

    async def _sclib(request: Request, exc: E.SclibError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.error("%s %s failed: %s", request.method, request.url.path, exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        if isinstance(exc, E.UploadBusy):
            headers = {"Retry-After": "1"}
        elif isinstance(exc, E.InsufficientStorage | E.LimitReached):
            headers = {"Retry-After": "60"}
        return problem(status, str(exc), code_of(exc), headers)

    async def _validation(
        request: Request, exc: RequestValidationError
    ) -> JSONResponse:
        problems = []
        for err in exc.errors():
            field = _field(tuple(err.get("loc", ())))
            if err.get("type") == "missing":
                problems.append(f"{field}: field required")
            else:
                msg = str(err.get("msg", "")).removeprefix("Value error, ")
                problems.append(f"{field}: {msg}")
        return problem(422, "; ".join(problems), "invalid_input")

    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}.get(
            exc.status_code, "http_error"
        )
        headers = dict(exc.headers) if exc.headers else None
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; a path
            # served by several routes (GET and POST apart) takes them all
            allowed = _allowed_methods(request)
            if allowed:
                headers = {**(headers or {}), "Allow": ", ".join(allowed)}
        return problem(exc.status_code, str(exc.detail), code, headers)

    async def _gone(request: Request, exc: ClientDisconnect) -> JSONResponse:
        # the client went away mid-body (a killed process, a dropped network):
        # what it sent is kept or discarded by the route's own cleanup; there
        # is no one to answer, and nothing for an operator to fix
        log.info(
            "%s %s: the client disconnected before its body ended",
            request.method,
            request.url.path,
        )
        return problem(400, "the client disconnected mid-request", "client_gone")

    app.add_exception_handler(E.SclibError, _sclib)  # type: ignore[arg-type]
    app.add_exception_handler(ClientDisconnect, _gone)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http)  # type: ignore[arg-type]
