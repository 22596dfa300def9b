"""Servers for the wire-contract tests, set up as a deployment of the original
API would be (``docs/compat.md``, "How to switch a deployment").

* ``original``: what replaces the original servers. The portal's address
  (here 127.0.0.1) is a trusted client, so requests without a token that name
  ``user_email`` work, as they did; the original auth service's tokens verify
  (``SECRET_KEY`` + audience ``sclib-api`` + issuer ``sclib-auth``); server
  paths and service-account key files are allowed in one folder each; uploads
  are kept resumable for 7 days, as the original promised. One worker.
* ``idle``: the same settings and no worker, so imports stay ``queued`` and
  nothing is fetched from anywhere.
* ``locked``: sclib's own defaults: a token on every request, no trusted
  clients; URL imports may reach private addresses and one browser origin is
  allowed, to show those two settings. No worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.compat.servers import PORTAL_ORIGIN, SECRET, Served, launch


def _deployment(root: Path) -> dict[str, str]:
    return {
        "SECRET_KEY": SECRET,
        "SCLIB_JWT_AUDIENCE": "sclib-api",
        "SCLIB_JWT_ISSUER": "sclib-auth",
        "SCLIB_TRUSTED_CLIENTS": "127.0.0.1/32",
        "SCLIB_UPLOAD_PATH_ROOTS": str(root / "server-files"),
        "SCLIB_CREDENTIALS_DIR": str(root / "credentials"),
        "SCLIB_UPLOAD_EXPIRY_HOURS": "168",
    }


@pytest.fixture(scope="session")
def _servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Served]]:
    """The three servers, started together (each fixture waits for its own)."""
    roots = {name: tmp_path_factory.mktemp(name) for name in ("original", "idle")}
    locked = tmp_path_factory.mktemp("locked")
    servers = {
        "original": launch(roots["original"], _deployment(roots["original"])),
        "idle": launch(roots["idle"], _deployment(roots["idle"]), workers=0),
        "locked": launch(
            locked,
            {
                "SCLIB_SECRET_KEY": SECRET,
                "SCLIB_ALLOW_PRIVATE_ADDRESSES": "true",
                "SCLIB_CORS_ORIGINS": PORTAL_ORIGIN,
            },
            workers=0,
        ),
    }
    try:
        yield servers
    finally:
        for served in servers.values():
            served.stop()


@pytest.fixture(scope="session")
def original(_servers: dict[str, Served]) -> Served:
    """sclib in place of the original servers, with a worker."""
    return _servers["original"].ready()


@pytest.fixture(scope="session")
def idle(_servers: dict[str, Served]) -> Served:
    """The same deployment without a worker: jobs stay queued."""
    return _servers["idle"].ready()


@pytest.fixture(scope="session")
def locked(_servers: dict[str, Served]) -> Served:
    """sclib's defaults: tokens only (no trusted clients), no worker; URL
    imports may reach private addresses, one browser origin is allowed."""
    return _servers["locked"].ready()
