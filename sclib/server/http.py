"""How the server meets HTTP: uvicorn's configuration and limits on request heads.

Every request's head (request line and headers) is limited before anything else
runs, authentication included: at most ``SCLIB_MAX_HEADER_BYTES`` bytes and
``SCLIB_MAX_HEADERS`` fields, else ``431 Request Header Fields Too Large`` and the
connection is closed. uvicorn's default HTTP parser (httptools) has no such limit,
so a client could make the server hold an unfinished header of any size; here the
bytes of a head are counted as they arrive, before they are parsed, so memory per
connection stays bounded whatever a client sends. With the h11 parser (when
httptools is not installed) h11's own limit applies (a 400).

:func:`uvicorn_config` is what ``sclib serve`` and
:func:`~sclib.server.serve_in_background` run with.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

import uvicorn

from sclib.settings import Settings

__all__ = ["limited_protocol", "uvicorn_config"]

_431 = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-type: application/problem+json\r\n"
    b"connection: close\r\n"
    b"content-length: %d\r\n\r\n%s"
)


def _refusal(detail: str) -> bytes:
    import json

    body = json.dumps(
        {
            "type": "https://sclib.dev/problems/header_too_large",
            "title": "Request header fields too large",
            "status": 431,
            "detail": detail,
            "code": "header_too_large",
        }
    ).encode()
    return _431 % (len(body), body)


def limited_protocol(max_head_bytes: int, max_headers: int) -> type[asyncio.Protocol]:
    """uvicorn's httptools protocol with limits on each request's head."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class LimitedHttpTools(HttpToolsProtocol):
        """Counts each request's head bytes and fields as they arrive."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(cast(asyncio.Transport, transport))
            self._in_head = True
            self._head_bytes = 0
            self._fields = 0
            self._refused = False

        def data_received(self, data: bytes) -> None:
            if self._refused:
                return
            if self._in_head:
                self._head_bytes += len(data)
            super().data_received(data)
            if self._in_head and self._head_bytes > max_head_bytes:
                self._refuse(
                    f"the request's header is above {max_head_bytes} bytes "
                    "(SCLIB_MAX_HEADER_BYTES)"
                )

        def on_header(self, name: bytes, value: bytes) -> None:
            self._fields += 1
            if self._fields > max_headers:
                self._refuse(
                    f"the request has more than {max_headers} header fields "
                    "(SCLIB_MAX_HEADERS)"
                )
                return
            super().on_header(name, value)

        def on_headers_complete(self) -> None:
            self._in_head = False
            if self._refused:
                return
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._in_head = True
            self._head_bytes = 0
            self._fields = 0

        def _refuse(self, detail: str) -> None:
            if self._refused:
                return
            self._refused = True
            if not self.transport.is_closing():
                self.transport.write(_refusal(detail))
                self.transport.close()

    return LimitedHttpTools


def uvicorn_config(app: Any, settings: Settings, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration the server runs with (``options`` override)."""
    try:
        import httptools  # noqa: F401 - present with uvicorn[standard]

        http: Any = limited_protocol(settings.max_header_bytes, settings.max_headers)
        if settings.data_plane:
            from sclib.server.dataplane import data_plane_protocol

            http = data_plane_protocol(http, settings.max_header_bytes)
    except ImportError:
        http = "h11"
    values: dict[str, Any] = {
        "http": http,
        "timeout_keep_alive": 300,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "log_level": "info",
    }
    values.update(options)
    return uvicorn.Config(app, **values)
