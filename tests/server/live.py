"""A real ``sclib serve`` process on 127.0.0.1, for the server and client tests.

:class:`LiveServer` starts the server as a subprocess (uvicorn, a free port, its
own data folder and SQLite backend), waits until ``/health`` answers, and can be
killed with SIGKILL and started again on the same port, data and backend. Tokens
are HS256 JWTs signed with the server's test secret.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

__all__ = ["SECRET", "LiveServer", "free_port"]

SECRET = "sclib-test-secret-key-that-is-long-enough-0123456789"  # noqa: S105


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class LiveServer:
    """One server process; ``start()`` it, ``kill()`` it, ``start()`` it again."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    env: dict[str, str] = field(default_factory=dict)
    workers: int = 1
    backend: str | None = None
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, email: str = "alice@example.org", *, admin: bool = False) -> str:
        from sclib.server.auth import Authenticator

        roles = ["admin"] if admin else []
        return Authenticator(secret_key=SECRET).issue_token(email, roles=roles)

    def headers(self, email: str = "alice@example.org", **kw: bool) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(email, **kw)}"}

    def start(self, timeout: float = 30.0) -> LiveServer:
        env = {
            **os.environ,
            "SCLIB_SECRET_KEY": SECRET,
            "SCLIB_DATA_DIR": str(self.data_dir),
            "SCLIB_POLL_INTERVAL": "0.2",
            "SCLIB_LEASE_SECONDS": "10",
            "SCLIB_GRACE_PERIOD": "2",
            **self.env,
        }
        if self.backend:
            env["SCLIB_BACKEND"] = self.backend
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child keeps it open
        cmd = [
            sys.executable,
            "-m",
            "sclib",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
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
        raise RuntimeError(f"server did not answer within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self) -> None:
        """SIGKILL: no cleanup, no graceful shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None
