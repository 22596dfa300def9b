"""The status page at ``/ui``: plain HTML, vanilla JavaScript and CSS.

The page is static and public; everything it shows comes from the same
authenticated API calls any client makes (``/api/v1/jobs`` and one job with its
events, ``/api/v1/datasets`` for dataset names, the queue stats or the monitor's
overview when the server has it, ``POST .../cancel`` and ``POST .../retry``), with
the user's bearer token kept in the browser's ``sessionStorage``. Uploads go
through the tus endpoint (``/files/``) with a small tus client
(``static/tus.js``) that remembers each unfinished upload's URL in
``localStorage`` under the file's fingerprint and dataset fields, so a dropped
connection or a reloaded page continues from the server's offset, and forgets it
once the upload is finished, so the same file sent again makes a new dataset.

Only the files listed in :data:`ASSETS` are served (no path from the request ever
touches the file system), from the package itself (``importlib.resources``), so
the page works from a wheel and needs no network: no CDN, no build step.
Every answer carries a strict Content-Security-Policy (``'self'`` only, no inline
script or style), ``nosniff`` and ``no-referrer``; the scripts render user data
with ``textContent`` only.
"""

from __future__ import annotations

import functools
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import RedirectResponse, Response

from sclib.errors import NotFound

__all__ = ["ASSETS", "CONTENT_SECURITY_POLICY", "SECURITY_HEADERS", "router"]

#: the files of ``sclib/server/static`` the page is made of, with their media types
ASSETS = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "tus.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
        "object-src 'none'",
    ]
)

SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # small files: always ask, so a new version of the page is picked up at once
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@functools.cache
def _read(name: str) -> bytes:
    return (resources.files("sclib.server") / "static" / name).read_bytes()


def _asset(name: str) -> Response:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"the status page has no file {name[:80]!r}")
    return Response(_read(name), media_type=media_type, headers=SECURITY_HEADERS)


@router.get("/ui")
def ui_redirect() -> RedirectResponse:
    """``/ui`` -> ``/ui/`` (relative, so a reverse proxy's path prefix is kept)."""
    return RedirectResponse("ui/", status_code=307, headers=SECURITY_HEADERS)


@router.get("/ui/")
def ui_index() -> Response:
    """The status page."""
    return _asset("index.html")


@router.get("/ui/{name}")
def ui_asset(name: str) -> Response:
    """One of the page's scripts or its style sheet (404 for anything else)."""
    return _asset(name)
