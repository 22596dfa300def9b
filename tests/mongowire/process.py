"""The mongowire server in a process of its own, for tests.

Test infrastructure only (see :mod:`tests.mongowire`). :func:`start_server`
starts ``python -m tests.mongowire --port 0``, reads the port it prints and waits
until it answers ``ping``; :meth:`WireServerProcess.stop` ends it. The pytest
fixture ``mongo_wire`` (``tests/conftest.py``) keeps one per test session; a test
that injects faults starts its own.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class WireServerProcess:
    port: int
    process: subprocess.Popen[str] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?replicaSet=rs0"

    def client(self, **options: Any) -> Any:
        """A ``pymongo.MongoClient`` on this server (tz_aware unless told)."""
        import pymongo

        options.setdefault("tz_aware", True)
        options.setdefault("serverSelectionTimeoutMS", 10_000)
        return pymongo.MongoClient(self.uri, **options)

    def faults(self, action: str, **fields: Any) -> dict[str, Any]:
        """Send ``{sclibFault: action, ...}``; return the reply (the counters)."""
        client = self.client()
        try:
            reply: dict[str, Any] = client.admin.command(
                {"sclibFault": action, **fields}
            )
            return reply
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        finally:
            for stream in (self.process.stdin, self.process.stdout):
                if stream is not None:
                    stream.close()


def start_server(timeout: float = 30.0) -> WireServerProcess:
    """Start a server process on a free port of 127.0.0.1; wait until it serves."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.mongowire", "--port", "0", "--stop-on-stdin-eof"],
        cwd=ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    if not line.strip().isdigit():
        process.kill()
        process.wait()
        raise RuntimeError(f"mongowire server did not start (printed {line!r})")
    server = WireServerProcess(int(line), process)
    deadline = time.monotonic() + timeout
    client = server.client(serverSelectionTimeoutMS=int(timeout * 1000))
    try:
        while True:
            try:
                client.admin.command("ping")
                break
            except Exception:
                if time.monotonic() > deadline:
                    server.stop()
                    raise
                time.sleep(0.05)
    finally:
        client.close()
    return server
