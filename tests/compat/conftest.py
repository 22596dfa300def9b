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


def _launch(name: str, root: Path) -> Served:
    if name == "original":
        return launch(root, _deployment(root), workers=1)
    if name == "idle":
        return launch(root, _deployment(root), workers=0)
    return launch(
        root,
        {
            "SCLIB_SECRET_KEY": SECRET,
            "SCLIB_ALLOW_PRIVATE_ADDRESSES": "true",
            "SCLIB_CORS_ORIGINS": PORTAL_ORIGIN,
        },
        workers=0,
    )


_NAMES = ("original", "idle", "locked")


class _Servers:
    """The servers of this session: those the selected tests use are started
    together at first need (each fixture then waits for its own); any other
    is started when asked for."""

    def __init__(self, factory: pytest.TempPathFactory, wanted: set[str]) -> None:
        self.factory = factory
        self.running: dict[str, Served] = {}
        for name in _NAMES:
            if name in wanted:
                self.running[name] = _launch(name, factory.mktemp(name))

    def get(self, name: str) -> Served:
        if name not in self.running:
            self.running[name] = _launch(name, self.factory.mktemp(name))
        return self.running[name].ready()

    def stop(self) -> None:
        for served in self.running.values():
            served.stop()


@pytest.fixture(scope="session")
def _servers(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[_Servers]:
    """The servers the selected tests use, started together."""
    wanted = {
        name
        for item in request.session.items
        for name in getattr(item, "fixturenames", ())
        if name in _NAMES
    }
    servers = _Servers(tmp_path_factory, wanted)
    try:
        yield servers
    finally:
        servers.stop()


@pytest.fixture(scope="session")
def original(_servers: _Servers) -> Served:
    """sclib in place of the original servers, with a worker."""
    return _servers.get("original")


@pytest.fixture(scope="session")
def idle(_servers: _Servers) -> Served:
    """The same deployment without a worker: jobs stay queued."""
    return _servers.get("idle")


@pytest.fixture(scope="session")
def locked(_servers: _Servers) -> Served:
    """sclib's defaults: tokens only (no trusted clients), no worker; URL
    imports may reach private addresses, one browser origin is allowed."""
    return _servers.get("locked")
