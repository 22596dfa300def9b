"""Real ``sclib serve`` processes on 127.0.0.1, set up as a deployment of the
original ScientistCloud API would be.

The environment of each server is built here from nothing but the settings the
test names (every ``SCLIB_*`` and ``SECRET_KEY`` variable of the calling
environment is dropped), so a test shows exactly which setting restores which
original behaviour.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.server.live import free_port

__all__ = [
    "PORTAL_ORIGIN",
    "SECRET",
    "Served",
    "launch",
    "original_token",
    "start_server",
]

#: The deployment's SECRET_KEY (the original auth service's variable name).
SECRET = "compat-test-secret-key-that-is-long-enough-0123456789"  # noqa: S105
#: The one browser origin the ``locked`` server allows (SCLIB_CORS_ORIGINS).
PORTAL_ORIGIN = "https://portal.example"


@dataclass
class Served:
    """One server process and the folders it was given."""

    root: Path
    port: int
    process: subprocess.Popen[bytes]
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def files(self) -> Path:
        """The folder ``SCLIB_UPLOAD_PATH_ROOTS`` allows (server-side files)."""
        return self.root / "server-files"

    @property
    def credentials(self) -> Path:
        """The folder ``SCLIB_CREDENTIALS_DIR`` names (service-account keys)."""
        return self.root / "credentials"

    @property
    def staging(self) -> Path:
        """``<data>/tmp/uploads``: bytes of uploads not committed yet."""
        return self.data_dir / "tmp" / "uploads"

    def stored(self, dataset_uuid: str, *parts: str) -> Path:
        """Where a committed file of a dataset lies."""
        return self.data_dir.joinpath("upload", dataset_uuid, *parts)

    def log(self) -> str:
        path = self.root / "server.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def ready(self, timeout: float = 60.0) -> Served:
        """Wait until ``/health`` answers 200 (the server is stopped and
        RuntimeError raised if it does not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not answer within {timeout} s:\n{self.log()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _base_environment() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SCLIB_") and k != "SECRET_KEY"
    }


def launch(root: Path, settings: Mapping[str, str], *, workers: int = 1) -> Served:
    """Start ``sclib serve`` on a free port of 127.0.0.1 with these settings
    (plus short worker timings and its own data folder); :meth:`Served.ready`
    waits until it answers.

    ``root`` gets ``server-files/`` (with ``a.bin`` and ``sub/b.bin``) and
    ``credentials/service.json`` for the settings that name them."""
    root.mkdir(parents=True, exist_ok=True)
    files = root / "server-files"
    (files / "sub").mkdir(parents=True, exist_ok=True)
    (files / "a.bin").write_bytes(os.urandom(3000))
    (files / "sub" / "b.bin").write_bytes(os.urandom(500))
    keys = root / "credentials"
    keys.mkdir(exist_ok=True)
    (keys / "service.json").write_text(
        json.dumps(
            {
                "type": "service_account",
                "client_email": "reader@project.iam.gserviceaccount.com",
                "private_key": "not a real key",
            }
        )
    )
    env = {
        **_base_environment(),
        "SCLIB_DATA_DIR": str(root / "data"),
        "SCLIB_POLL_INTERVAL": "0.2",
        "SCLIB_LEASE_SECONDS": "10",
        "SCLIB_GRACE_PERIOD": "2",
        **settings,
    }
    port = free_port()
    with open(root / "server.log", "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sclib",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
            ],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return Served(root, port, process, dict(settings))


def start_server(
    root: Path, settings: Mapping[str, str], *, workers: int = 1
) -> Served:
    """:func:`launch`, then wait until the server answers."""
    return launch(root, settings, workers=workers).ready()


def original_token(email: str, *, user_id: str | None = "u-1", **claims: Any) -> str:
    """A token as the original auth service minted it (``SCLib_JWTManager``:
    HS256 with ``SECRET_KEY``; ``email``, ``iat``, ``exp``, ``jti``, issuer
    ``sclib-auth``, audience ``sclib-api``, ``type`` ``access``, and
    ``user_id`` when given)."""
    import secrets

    import jwt

    now = int(time.time())
    payload: dict[str, Any] = {
        "email": email,
        "iat": now,
        "exp": now + 24 * 3600,
        "jti": secrets.token_urlsafe(32),
        "iss": "sclib-auth",
        "aud": "sclib-api",
        "type": "access",
    }
    if user_id:
        payload["user_id"] = user_id
    payload.update(claims)
    return jwt.encode(payload, SECRET, algorithm="HS256")
