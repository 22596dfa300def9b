"""A size limit on every request body that is not an upload.

FastAPI reads and parses a JSON body before any dependency runs, the token check
included: without a limit, anyone could make the server hold a body of any size in
memory. Upload routes stream their bodies to disk and enforce their own limits
(file size, chunk size), so they are exempt; every other body may be at most
:data:`DEFAULT_LIMIT` bytes, checked against ``Content-Length`` before reading and
counted while reading (for chunked bodies). Too large: 413, problem+json.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.exceptions import HTTPException

__all__ = ["DEFAULT_LIMIT", "BodyLimitMiddleware"]

DEFAULT_LIMIT = 1024**2

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: paths whose bodies stream to disk under their own limits
STREAMING = (
    "/api/upload/upload",
    "/api/upload/local/upload",
    "/api/upload/large/chunk/",
    "/files",
)


class _TooLarge(HTTPException):
    """Raised from ``receive`` once a body passes the limit; an HTTPException so
    that FastAPI's body parsing lets it through as a 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"the request body is above the limit of {limit} bytes for this route"
        )


class BodyLimitMiddleware:
    """Refuse non-upload bodies above ``limit`` bytes with 413."""

    def __init__(self, app: ASGIApp, limit: int = DEFAULT_LIMIT) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(STREAMING):
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            too_big = value.isdigit() and int(value) > self.limit
            if name == b"content-length" and too_big:
                await self._refuse(send)
                return
        seen = 0
        started = False

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise _TooLarge(self.limit)
            return message

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, tracked)
        except _TooLarge:  # raised where the app does not turn it into a response
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        body = json.dumps(
            {
                "type": "https://sclib.dev/problems/too_large",
                "title": "Content too large",
                "status": 413,
                "detail": f"the request body is above the limit of {self.limit} "
                "bytes for this route",
                "code": "too_large",
            }
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/problem+json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
