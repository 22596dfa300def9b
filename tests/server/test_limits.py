"""Limits on everything a client controls, and settings checked together.

Each limit is a setting (docs/settings.md); each refusal names the limit and its
setting. The tests talk to a real server on 127.0.0.1, over raw sockets where a
well-behaved HTTP client could not send what an attacker would.
"""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.server.live import LiveServer

pytestmark = pytest.mark.integration

FIELDS = {"dataset_name": "Limits", "sensor": "OTHER"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A server with small per-user limits."""
    live = LiveServer(
        tmp_path_factory.mktemp("limits") / "data",
        env={
            "SCLIB_MAX_OPEN_UPLOADS": "3",
            "SCLIB_MAX_STAGED_BYTES": str(10 * 1024**2),
            "SCLIB_MAX_UPLOAD_METADATA": "1024",
        },
    ).start()
    try:
        yield live
    finally:
        live.stop()


def _raw(server: LiveServer, data: bytes) -> bytes:
    """Send raw bytes; the first line of the answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
        s.sendall(data)
        answer = b""
        try:
            while b"\r\n" not in answer:
                piece = s.recv(65536)
                if not piece:
                    break
                answer += piece
        except OSError:
            pass
    return answer.split(b"\r\n")[0]


def test_request_heads_are_limited_before_anything_runs(server: LiveServer) -> None:
    """A header above SCLIB_MAX_HEADER_BYTES, an unfinished one, and more fields
    than SCLIB_MAX_HEADERS are all 431, with no token needed to be refused; a
    normal request on the same server answers."""
    ok = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert _raw(server, ok) == b"HTTP/1.1 200 OK"
    big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"
    assert _raw(server, big).startswith(b"HTTP/1.1 431")
    unfinished = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000
    assert _raw(server, unfinished).startswith(b"HTTP/1.1 431")
    many = b"".join(b"X-%d: 1\r\n" % i for i in range(500))
    assert _raw(server, b"GET /health HTTP/1.1\r\nHost: x\r\n" + many + b"\r\n")[
        :12
    ] == (b"HTTP/1.1 431")
    assert _raw(server, ok) == b"HTTP/1.1 200 OK"


def _tus_create(server: LiveServer, meta: str, length: int) -> httpx.Response:
    return httpx.post(
        f"{server.url}/files/",
        headers={
            **server.headers(),
            "Tus-Resumable": "1.0.0",
            "Upload-Length": str(length),
            "Upload-Metadata": meta,
        },
    )


def _meta(**values: str) -> str:
    return ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in values.items()
    )


def test_tus_metadata_is_limited(server: LiveServer) -> None:
    """An Upload-Metadata header above SCLIB_MAX_UPLOAD_METADATA is a 400 that
    names the setting; nothing is created."""
    r = _tus_create(server, _meta(filename="a.bin", note="x" * 2000, **FIELDS), 10)
    assert r.status_code == 400, r.text
    assert "SCLIB_MAX_UPLOAD_METADATA" in r.json()["detail"]


def test_open_uploads_and_staged_bytes_per_user_are_limited(
    server: LiveServer,
) -> None:
    """A user holds at most SCLIB_MAX_OPEN_UPLOADS unfinished uploads and
    SCLIB_MAX_STAGED_BYTES declared bytes (429 naming each setting); another
    user is not affected, and cancelling one frees its place."""
    h = server.headers("carol@example.org")
    big = httpx.post(
        f"{server.url}/api/upload/large/initiate",
        json={"filename": "big.bin", "file_size": 20 * 1024**2, **FIELDS},
        headers=h,
    )
    assert big.status_code == 429, big.text
    assert "SCLIB_MAX_STAGED_BYTES" in big.json()["detail"]
    assert big.headers["retry-after"]
    made = []
    for i in range(3):
        r = httpx.post(
            f"{server.url}/api/upload/large/initiate",
            json={"filename": f"f{i}.bin", "file_size": 1024, **FIELDS},
            headers=h,
        )
        assert r.status_code == 200, r.text
        made.append(r.json()["upload_id"])
    fourth = httpx.post(
        f"{server.url}/api/upload/large/initiate",
        json={"filename": "f3.bin", "file_size": 1024, **FIELDS},
        headers=h,
    )
    assert fourth.status_code == 429
    assert "SCLIB_MAX_OPEN_UPLOADS" in fourth.json()["detail"]
    assert fourth.json()["code"] == "limit_reached"
    other = _tus_create(server, _meta(filename="o.bin", **FIELDS), 1024)
    assert other.status_code == 201  # alice is not carol
    cancel = httpx.delete(f"{server.url}/api/upload/large/cancel/{made[0]}", headers=h)
    assert cancel.status_code == 200
    again = httpx.post(
        f"{server.url}/api/upload/large/initiate",
        json={"filename": "f3.bin", "file_size": 1024, **FIELDS},
        headers=h,
    )
    assert again.status_code == 200, again.text


@pytest.mark.parametrize(
    "path",
    ["/api/v1/jobs", "/api/v1/datasets", "/api/upload/jobs"],
)
def test_huge_offsets_are_422_not_500(server: LiveServer, path: str) -> None:
    """An offset past the documented maximum (1,000,000), or one too large for
    the database, is a 422 naming offset; the largest allowed one answers."""
    for offset in ("9223372036854775808", "1000001"):
        r = httpx.get(
            server.url + path, params={"offset": offset}, headers=server.headers()
        )
        assert r.status_code == 422, (path, r.text)
        assert "offset" in r.json()["detail"]
    r = httpx.get(
        server.url + path, params={"offset": "1000000"}, headers=server.headers()
    )
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_settings_that_cannot_work_together_stop_the_start(
    tmp_path: Path, command: list[str]
) -> None:
    """A chunk size above the largest chunk the server takes stops the server
    and the worker at start, with one line naming both settings."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SCLIB_")},
        "SCLIB_MAX_CHUNK_SIZE": str(4 * 1024**2),
        "SCLIB_DATA_DIR": str(tmp_path),
        "SCLIB_SECRET_KEY": "k" * 40,
    }
    run = subprocess.run(
        [sys.executable, "-m", "sclib", *command, "--handlers", "sclib.demo:handlers"]
        if command == ["worker"]
        else [sys.executable, "-m", "sclib", *command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert "SCLIB_CHUNK_SIZE" in lines[0] and "SCLIB_MAX_CHUNK_SIZE" in lines[0]
    assert not (tmp_path / "sclib.db").exists()
