"""A stand-in for the Google Drive v3 API and Google's OAuth token endpoint.

This is a stand-in because no Google Drive emulator runs here (there is no internet,
and Google ships no local Drive server). It is a small HTTP server on 127.0.0.1 that
serves an in-memory tree with the parts of Drive v3 that
:class:`sclib.transfers.gdrive.DriveSource` uses, with Drive's wire formats:

* ``GET /drive/v3/files/{id}``: metadata (``fields`` is ignored: all are sent);
  ``?alt=media`` downloads, honouring ``Range`` (206 + ``Content-Range``, 416).
* ``GET /drive/v3/files?q='<id>' in parents and trashed=false``: children, in pages
  of at most :attr:`DriveStandin.page_size` (2 by default) with ``nextPageToken``.
* ``GET /drive/v3/files/{id}/export?mimeType=...``: Google Docs exports.
* ``POST /token``: the OAuth 2.0 token endpoint. The JWT-bearer grant's assertion
  is checked (RS256 signature against the registered service account's public key,
  ``iss``, ``aud``, ``exp``, ``scope``); the refresh-token grant checks the client
  and the refresh token. It issues bearer tokens that expire after
  :attr:`DriveStandin.token_lifetime` seconds; Drive requests without a valid one
  get 401.

Faults can be injected (:meth:`DriveStandin.fail`, :meth:`DriveStandin.forbid`,
:meth:`DriveStandin.change_after_next_download`, :meth:`DriveStandin.revoke_tokens`).
Every Drive request is recorded in :attr:`DriveStandin.requests` (without its
``Authorization`` header).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

FOLDER = "application/vnd.google-apps.folder"
SHORTCUT = "application/vnd.google-apps.shortcut"
DOC = "application/vnd.google-apps.document"
SHEET = "application/vnd.google-apps.spreadsheet"
FORM = "application/vnd.google-apps.form"
JWT_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"  # noqa: S105
DRIVE_SCOPE_PREFIX = "https://www.googleapis.com/auth/drive"

#: what a Google Doc of each type can be exported to
EXPORTS: Mapping[str, tuple[str, ...]] = {
    DOC: (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/pdf",
        "text/plain",
    ),
    SHEET: (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "application/pdf",
        "text/csv",
    ),
}


@dataclass
class Item:
    """One file, folder, Google Doc or shortcut in the stand-in's tree."""

    id: str
    name: str
    mime: str
    parent: str | None
    data: bytes = b""
    created: str = ""
    modified: str = ""
    version: int = 1
    revision: int = 1
    trashed: bool = False
    target: str | None = None

    def metadata(self, items: Mapping[str, Item]) -> dict[str, Any]:
        meta: dict[str, Any] = {
            "kind": "drive#file",
            "id": self.id,
            "name": self.name,
            "mimeType": self.mime,
            "parents": [self.parent] if self.parent else [],
            "createdTime": self.created,
            "modifiedTime": self.modified,
            "version": str(self.version),
            "trashed": self.trashed,
        }
        if not self.mime.startswith("application/vnd.google-apps."):
            meta["size"] = str(len(self.data))
            meta["md5Checksum"] = hashlib.md5(self.data).hexdigest()  # noqa: S324
            meta["headRevisionId"] = f"rev-{self.id}-{self.revision}"
        if self.target is not None:
            target = items.get(self.target)
            meta["shortcutDetails"] = {
                "targetId": self.target,
                "targetMimeType": target.mime if target else "",
            }
        return meta

    def export(self, mime: str) -> bytes:
        """The export of a Google Doc: stable for a version and an export type."""
        head = f"{mime} export of {self.name!r} v{self.version}\n".encode()
        return head + self.data


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _drive_error(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }
    }


class DriveStandin:
    """The server and its tree; start with :meth:`running`."""

    def __init__(self, *, page_size: int = 2, token_lifetime: float = 3600.0) -> None:
        self.page_size = page_size
        #: answer ranged downloads with the whole file (200), as some proxies do
        self.ignore_ranges = False
        self.token_lifetime = token_lifetime
        self.items: dict[str, Item] = {}
        self.service_accounts: dict[str, rsa.RSAPublicKey] = {}
        self.oauth_clients: dict[str, tuple[str, str]] = {}
        self.tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self.issued: list[str] = []
        self.assertions: list[str] = []
        self.requests: list[dict[str, Any]] = []
        self.token_requests = 0
        self.unauthorized = 0
        self.exports = 0
        self._faults: dict[str, list[tuple[int, str]]] = {}
        self._forbidden: set[str] = set()
        self._change_after: dict[str, bytes] = {}
        self._ids = itertools.count(1)
        self._clock = itertools.count(1)
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- the tree ---------------------------------------------------------------

    def _stamp(self) -> str:
        moment = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=next(self._clock))
        return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")

    def _add(self, name: str, mime: str, parent: str | None, **kw: Any) -> str:
        file_id = f"id{next(self._ids):04d}x"
        stamp = self._stamp()
        with self.lock:
            self.items[file_id] = Item(
                file_id, name, mime, parent, created=stamp, modified=stamp, **kw
            )
        return file_id

    def add_folder(self, name: str, parent: str | None = None) -> str:
        return self._add(name, FOLDER, parent)

    def add_file(
        self,
        name: str,
        data: bytes,
        parent: str | None = None,
        mime: str = "application/octet-stream",
        *,
        trashed: bool = False,
    ) -> str:
        return self._add(name, mime, parent, data=data, trashed=trashed)

    def add_doc(
        self, name: str, text: str, parent: str | None = None, mime: str = DOC
    ) -> str:
        return self._add(name, mime, parent, data=text.encode())

    def add_shortcut(self, name: str, target: str, parent: str | None = None) -> str:
        return self._add(name, SHORTCUT, parent, target=target)

    def update(self, file_id: str, data: bytes) -> None:
        """Upload a new revision (or edit a Doc)."""
        with self.lock:
            self._update_locked(file_id, data)

    def _update_locked(self, file_id: str, data: bytes) -> None:
        item = self.items[file_id]
        item.data = data
        item.revision += 1
        item.version += 1
        item.modified = self._stamp()

    def rename(self, file_id: str, name: str) -> None:
        """A metadata-only change: bumps ``version`` but not the revision."""
        with self.lock:
            item = self.items[file_id]
            item.name = name
            item.version += 1

    def delete(self, file_id: str) -> None:
        with self.lock:
            del self.items[file_id]

    # -- faults -----------------------------------------------------------------

    def fail(self, file_id: str, status: int, reason: str, times: int = 1) -> None:
        """Answer the next ``times`` requests about ``file_id`` with an error."""
        with self.lock:
            self._faults.setdefault(file_id, []).extend([(status, reason)] * times)

    def forbid(self, file_id: str) -> None:
        """Deny every request about ``file_id`` (403 insufficientFilePermissions)."""
        with self.lock:
            self._forbidden.add(file_id)

    def change_after_next_download(self, file_id: str, data: bytes) -> None:
        """Upload a new revision right after the next ``alt=media`` response."""
        with self.lock:
            self._change_after[file_id] = data

    def revoke_tokens(self) -> None:
        """Invalidate every access token issued so far."""
        with self.lock:
            self.tokens.clear()

    # -- server -----------------------------------------------------------------

    @property
    def base_url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def token_uri(self) -> str:
        return f"{self.base_url}/token"

    @contextmanager
    def running(self) -> Iterator[DriveStandin]:
        """Serve on a free 127.0.0.1 port in a thread until the block ends."""
        handler = type("Handler", (_Handler,), {"standin": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.daemon_threads = True
        self._server = server
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread = thread
        thread.start()
        try:
            yield self
        finally:
            server.shutdown()
            server.server_close()
            thread.join(5)

    # -- request handling (called by the handler) -------------------------------

    def issue_token(self) -> tuple[str, float]:
        token = "ya29.standin-" + secrets.token_urlsafe(24)
        with self.lock:
            self.tokens[token] = time.monotonic() + self.token_lifetime
            self.issued.append(token)
        return token, self.token_lifetime

    def token_valid(self, token: str) -> bool:
        with self.lock:
            expiry = self.tokens.get(token)
        return expiry is not None and time.monotonic() < expiry

    def check_assertion(self, assertion: str) -> str | None:
        """Why the JWT-bearer assertion is refused; None if it is good."""
        try:
            head_b64, body_b64, sig_b64 = assertion.split(".")
            header = json.loads(_b64url_decode(head_b64))
            claims = json.loads(_b64url_decode(body_b64))
            signature = _b64url_decode(sig_b64)
        except ValueError:
            return "Invalid JWT."
        if header.get("alg") != "RS256":
            return "Invalid JWT: alg must be RS256."
        key = self.service_accounts.get(str(claims.get("iss")))
        if key is None:
            return "Invalid JWT: unknown issuer."
        try:
            key.verify(
                signature,
                f"{head_b64}.{body_b64}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except InvalidSignature:
            return "Invalid JWT Signature."
        now = time.time()
        # Google wants this audience whatever URL the assertion is posted to
        if claims.get("aud") != GOOGLE_TOKEN_AUDIENCE:
            return "Invalid JWT: bad audience."
        if not (claims.get("iat", 0) - 60 <= now < claims.get("exp", 0) <= now + 3660):
            return "Invalid JWT: Token must be a short-lived token."
        if not str(claims.get("scope", "")).startswith(DRIVE_SCOPE_PREFIX):
            return "Invalid JWT: no Drive scope."
        return None

    def fault_for(self, file_id: str) -> tuple[int, str] | None:
        with self.lock:
            if file_id in self._forbidden:
                return 403, "insufficientFilePermissions"
            queue = self._faults.get(file_id)
            if queue:
                return queue.pop(0)
        return None

    def after_download(self, file_id: str) -> None:
        with self.lock:
            data = self._change_after.pop(file_id, None)
            if data is not None:
                self._update_locked(file_id, data)


class _Handler(BaseHTTPRequestHandler):
    standin: DriveStandin
    protocol_version = "HTTP/1.1"
    # one write per response (flushed after each request), no Nagle delay
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    # -- helpers ----------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode())

    def _error(self, status: int, reason: str, message: str) -> None:
        self._json(status, _drive_error(status, reason, message))

    # -- token endpoint ---------------------------------------------------------

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode()
        if urlsplit(self.path).path != "/token":
            self._error(404, "notFound", "Not found.")
            return
        standin = self.standin
        with standin.lock:
            standin.token_requests += 1
        form = {k: v[0] for k, v in parse_qs(body).items()}
        grant = form.get("grant_type")
        if grant == JWT_GRANT:
            with standin.lock:
                standin.assertions.append(form.get("assertion", ""))
            problem = standin.check_assertion(form.get("assertion", ""))
        elif grant == "refresh_token":
            client = standin.oauth_clients.get(form.get("client_id", ""))
            good = client is not None and client == (
                form.get("client_secret"),
                form.get("refresh_token"),
            )
            problem = None if good else "Token has been expired or revoked."
        else:
            problem = "Unsupported grant type."
        if problem is not None:
            self._json(400, {"error": "invalid_grant", "error_description": problem})
            return
        token, lifetime = standin.issue_token()
        self._json(
            200,
            {"access_token": token, "expires_in": lifetime, "token_type": "Bearer"},
        )

    # -- Drive ------------------------------------------------------------------

    def do_GET(self) -> None:
        standin = self.standin
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        with standin.lock:
            standin.requests.append(
                {"path": url.path, "query": query, "range": self.headers.get("Range")}
            )
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not standin.token_valid(auth[7:]):
            with standin.lock:
                standin.unauthorized += 1
            self._error(
                401, "authError", "Request had invalid authentication credentials."
            )
            return
        if url.path == "/drive/v3/files":
            self._list(query)
            return
        match = re.fullmatch(r"/drive/v3/files/([^/]+)(/export)?", url.path)
        if match is None:
            self._error(404, "notFound", "Not found.")
            return
        file_id = unquote(match[1])
        with standin.lock:
            item = standin.items.get(file_id)
        if item is None:
            self._error(404, "notFound", f"File not found: {file_id}.")
            return
        fault = standin.fault_for(file_id)
        if fault is not None:
            self._error(fault[0], fault[1], f"Injected fault: {fault[1]}.")
            return
        if match[2]:
            self._export(item, query.get("mimeType", ""))
        elif query.get("alt") == "media":
            self._media(item)
        else:
            with standin.lock:
                meta = item.metadata(standin.items)
            self._json(200, meta)

    def _list(self, query: Mapping[str, str]) -> None:
        standin = self.standin
        match = re.fullmatch(
            r"'([^']+)' in parents and trashed=false", query.get("q", "")
        )
        if match is None:
            self._error(400, "invalid", "Invalid Value")
            return
        parent = match[1]
        with standin.lock:
            children = [
                item.metadata(standin.items)
                for item in standin.items.values()
                if item.parent == parent and not item.trashed
            ]
        start = int(query.get("pageToken") or 0)
        size = min(int(query.get("pageSize") or 100), standin.page_size)
        page: dict[str, Any] = {"files": children[start : start + size]}
        if start + size < len(children):
            page["nextPageToken"] = str(start + size)
        self._json(200, page)

    def _export(self, item: Item, mime: str) -> None:
        if mime not in EXPORTS.get(item.mime, ()):
            self._error(400, "badRequest", "The requested conversion is not supported.")
            return
        with self.standin.lock:
            self.standin.exports += 1
            data = item.export(mime)
        self._send(200, data, mime)

    def _media(self, item: Item) -> None:
        if item.mime.startswith("application/vnd.google-apps."):
            self._error(
                403,
                "fileNotDownloadable",
                "Only files with binary content can be downloaded. Use Export "
                "with Docs Editors files.",
            )
            return
        with self.standin.lock:
            data = item.data
        total = len(data)
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
        if match is None or self.standin.ignore_ranges:
            self._send(200, data, item.mime)
        else:
            start = int(match[1])
            end = min(int(match[2]) if match[2] else total - 1, total - 1)
            if start >= total:
                self._send(416, b"", headers={"Content-Range": f"bytes */{total}"})
            else:
                self._send(
                    206,
                    data[start : end + 1],
                    item.mime,
                    {"Content-Range": f"bytes {start}-{end}/{total}"},
                )
        self.standin.after_download(item.id)
