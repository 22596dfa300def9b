"""Small HTTP servers on 127.0.0.x for the HTTP source tests.

:class:`FileServer` serves files from a dict, records every request it receives,
and can be set to serve byte ranges (``206``, ``Content-Range``, ``If-Range``
semantics: the whole body with ``200`` when ``If-Range`` matches neither the ETag
nor the Last-Modified date) or to ignore ``Range`` (``200`` always, no
``Accept-Ranges``, ``HEAD`` refused with ``405``). Paths can also redirect or fail
with a fixed status. Tests change a file by replacing it (new ETag and date).
A server can also send its bodies slowly (``pace``: so many bytes, then a pause),
for tests that watch a transfer while it runs.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

__all__ = ["FileServer", "Recorded", "ServedFile", "serve"]

_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass(frozen=True)
class ServedFile:
    """A file's bytes and validators."""

    body: bytes
    etag: str
    last_modified: str

    @classmethod
    def of(cls, body: bytes, version: int = 1, weak: bool = False) -> ServedFile:
        """A file whose ETag comes from its bytes and ``version``."""
        tag = hashlib.sha256(body + str(version).encode()).hexdigest()[:16]
        etag = f'W/"{tag}"' if weak else f'"{tag}"'
        date = email.utils.formatdate(1_700_000_000 + version, usegmt=True)
        return cls(body, etag, date)


@dataclass(frozen=True)
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]


@dataclass
class FileServer:
    """A threaded HTTP server's routes and request log (see :func:`serve`)."""

    host: str
    port: int = 0
    ranges: bool = True
    head: bool = True
    files: dict[str, ServedFile] = field(default_factory=dict)
    #: path -> (status, Location)
    redirects: dict[str, tuple[int, str]] = field(default_factory=dict)
    #: path -> status to answer with
    errors: dict[str, int] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: (bytes, seconds): send bodies that many bytes at a time with that pause
    #: after each piece; None sends them at once
    pace: tuple[int, float] | None = None

    def url(self, path: str) -> str:
        """``http://host:port/path``."""
        return f"http://{self.host}:{self.port}{path}"

    def put(self, path: str, body: bytes, version: int = 1, weak: bool = False) -> None:
        """Serve ``body`` at ``path`` (replacing what was there: a new version)."""
        with self.lock:
            self.files[path] = ServedFile.of(body, version, weak)

    def seen(self, method: str | None = None) -> list[Recorded]:
        """Requests received so far, optionally only those with ``method``."""
        with self.lock:
            return [r for r in self.requests if method in (None, r.method)]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 5
    # headers and body in one write, sent at once: no Nagle / delayed-ACK stalls
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    state: FileServer  # set on the subclass made by serve()

    def log_message(self, format: str, *args: object) -> None:
        """Keep test output quiet."""

    def _empty(self, status: int, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _answer(self, send_body: bool) -> None:
        state = self.state
        path = self.path.split("?", 1)[0]
        with state.lock:
            state.requests.append(
                Recorded(self.command, self.path, dict(self.headers.items()))
            )
            redirect = state.redirects.get(path)
            error = state.errors.get(path)
            served = state.files.get(path)
        if redirect is not None:
            self._empty(redirect[0], {"Location": redirect[1]})
            return
        if error is not None:
            self._empty(error)
            return
        if served is None:
            self._empty(404)
            return
        body = served.body
        status = 200
        headers = {
            "ETag": served.etag,
            "Last-Modified": served.last_modified,
            "Content-Type": "application/octet-stream",
        }
        if state.ranges:
            headers["Accept-Ranges"] = "bytes"
            wanted = _RANGE.match(self.headers.get("Range", "").strip())
            if_range = self.headers.get("If-Range")
            if wanted is not None and (
                if_range is None
                or (if_range == served.etag and not served.etag.startswith("W/"))
                or if_range == served.last_modified
            ):
                first = int(wanted.group(1))
                last = int(wanted.group(2) or len(body) - 1)
                if first >= len(body):
                    self._empty(416, {"Content-Range": f"bytes */{len(body)}"})
                    return
                last = min(last, len(body) - 1)
                body = body[first : last + 1]
                status = 206
                headers["Content-Range"] = f"bytes {first}-{last}/{len(served.body)}"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body and state.pace is None:
            self.wfile.write(body)
        elif send_body:
            size, pause = state.pace
            for start in range(0, len(body), size):
                self.wfile.write(body[start : start + size])
                self.wfile.flush()
                time.sleep(pause)

    def do_GET(self) -> None:
        """Serve a file, a range of it, a redirect or an error."""
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        """Like GET without the body; 405 when the server is set to refuse HEAD."""
        if not self.state.head:
            with self.state.lock:
                self.state.requests.append(
                    Recorded(self.command, self.path, dict(self.headers.items()))
                )
            self._empty(405, {"Allow": "GET"})
            return
        self._answer(send_body=False)


class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        """A client closing a response early is normal here (the source drops a
        probe GET once it has the headers): no traceback on stderr."""


@contextmanager
def serve(
    host: str = "127.0.0.1", *, ranges: bool = True, head: bool = True
) -> Iterator[FileServer]:
    """Run a :class:`FileServer` on ``host`` and a free port, in a thread."""
    state = FileServer(host=host, ranges=ranges, head=head)
    handler = type("Handler", (_Handler,), {"state": state})
    server = _QuietServer((host, 0), handler)
    state.port = server.server_address[1]
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
    )
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
