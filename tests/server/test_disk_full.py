"""A full disk, for real: the server's data folder (SQLite database included, the
default layout) on a small tmpfs, filled through every upload route.

Mounting a tmpfs needs root (CI runs as root); elsewhere the test skips and says
why, and with ``CI_REQUIRE_TMPFS=1`` it fails instead. What it checks: no answer
is a 5xx other than 507; uploads that do not fit are refused up front; bytes that
stop fitting halfway are a 507 and leave what was stored before intact; the
reserve keeps the database and cancellations working; and once the operator
frees space with ``sclib uploads expire``, a new upload succeeds.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from tests.server.conftest import small_tmpfs
from tests.server.live import LiveServer

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MIB = 1024**2
DISK = 48 * MIB
FIELDS = {"dataset_name": "Full disk", "sensor": "OTHER"}
EXPIRE_ALL = ["--older-than", "0", "--apply"]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 48 MiB tmpfs mounted for this test (root only)."""
    with small_tmpfs(tmp_path, DISK) as mount:
        yield mount


class Seen:
    """Every answer the test got, by route and status."""

    def __init__(self) -> None:
        self.codes: Counter[tuple[str, int]] = Counter()

    def note(self, route: str, r: httpx.Response) -> httpx.Response:
        self.codes[(route, r.status_code)] += 1
        assert r.status_code < 500 or r.status_code == 507, (route, r.text)
        if r.status_code == 507:
            body = r.json()
            assert body["code"] == "insufficient_storage", body
            assert r.headers["content-type"].startswith("application/problem+json")
        return r


def _one_request(
    server: LiveServer, seen: Seen, name: str, data: bytes, *, chunked: bool = False
) -> httpx.Response:
    """POST /api/upload/upload; ``chunked``: no Content-Length (streamed), so the
    server cannot refuse it up front."""
    boundary = "sclibtestboundary"
    head = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in FIELDS.items()
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    body = head.encode() + data + f"\r\n--{boundary}--\r\n".encode()
    content: Any = body
    if chunked:

        def pieces() -> Iterator[bytes]:
            for i in range(0, len(body), MIB):
                yield body[i : i + MIB]

        content = pieces()
    r = httpx.post(
        f"{server.url}/api/upload/upload",
        content=content,
        headers={
            **server.headers(),
            "Content-Type": f"multipart/form-data; boundary={boundary}",
        },
        timeout=60,
    )
    return seen.note("one-request", r)


def _large_initiate(server: LiveServer, seen: Seen, name: str, size: int) -> Any:
    r = httpx.post(
        f"{server.url}/api/upload/large/initiate",
        json={"filename": name, "file_size": size, "chunk_size": MIB, **FIELDS},
        headers=server.headers(),
    )
    return seen.note("large initiate", r)


def _tus_create(server: LiveServer, seen: Seen, name: str, length: int | None) -> Any:
    meta = ",".join(
        f"{k} {base64.b64encode(v.encode()).decode()}"
        for k, v in {"filename": name, **FIELDS}.items()
    )
    headers = {
        **server.headers(),
        "Tus-Resumable": "1.0.0",
        "Upload-Metadata": meta,
    }
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    r = httpx.post(f"{server.url}/files", headers=headers)
    return seen.note("tus create", r)


def _fill(path: Path, leave: int = 0) -> None:
    """Write a junk file until ``leave`` bytes are free (another program filling
    the disk)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (MIB, 4096, 1):
            block = b"\0" * size
            try:
                while shutil.disk_usage(path).free - size >= leave:
                    os.write(fd, block)
            except OSError:
                continue
    finally:
        os.close(fd)


@pytest.mark.parametrize("direct_io", ["false", "true"], ids=["cached", "direct"])
def test_a_full_disk_is_a_507_and_loses_nothing(
    small_disk: Path, direct_io: str
) -> None:
    """Fill a 48 MiB disk through the one-request, large-file and tus routes:
    every refusal is a 507 (problem+json, code insufficient_storage), earlier
    files stay intact, space reserved for an upload stays usable, cancelling
    still works, and after `sclib uploads expire` a new upload succeeds. Also
    with ``SCLIB_DIRECT_IO=true`` (tmpfs takes O_DIRECT), where the data plane's
    pieces are written behind."""
    seen = Seen()
    data_dir = small_disk / "data"
    server = LiveServer(
        data_dir,
        env={
            "SCLIB_DISK_RESERVE": "4MiB",
            "SCLIB_CHUNK_SIZE": str(MIB),
            "SCLIB_DIRECT_IO": direct_io,
        },
    ).start()
    try:
        # a first file, kept safe through everything that follows
        first = os.urandom(MIB)
        r = _one_request(server, seen, "first.bin", first)
        assert r.status_code == 200, r.text
        dataset = r.json()["dataset_uuid"]
        kept = data_dir / "upload" / dataset / "first.bin"

        # large-file uploads take their space when they start: until the reserve
        too_big = _large_initiate(server, seen, "huge.bin", 2 * DISK)
        assert too_big.status_code == 507
        assert "SCLIB_DISK_RESERVE" in too_big.json()["detail"]
        started = []
        while True:
            r = _large_initiate(server, seen, f"part{len(started)}.bin", 8 * MIB)
            if r.status_code == 507:
                break
            assert r.status_code == 200, r.text
            started.append(r.json())
            assert len(started) < 10
        assert len(started) >= 2
        # tus uploads of a known length too
        assert _tus_create(server, seen, "t.bin", 30 * MIB).status_code == 507

        # another program fills the disk up to 2 MiB, inside the reserve
        _fill(small_disk / "junk", leave=2 * MIB)
        # what was reserved stays usable: the first started upload completes
        up = started[0]
        payload = os.urandom(8 * MIB)
        for i in range(up["total_chunks"]):
            piece = payload[i * MIB : (i + 1) * MIB]
            r = httpx.post(
                f"{server.url}/api/upload/large/chunk/{up['upload_id']}/{i}",
                content=piece,
                headers={
                    **server.headers(),
                    "Content-Type": "application/octet-stream",
                    "X-Chunk-Hash": "blake3:" + blake3.blake3(piece).hexdigest(),
                },
            )
            seen.note("large chunk", r)
            assert r.status_code == 200, r.text
        done = seen.note(
            "large complete",
            httpx.post(
                f"{server.url}/api/upload/large/complete/{up['upload_id']}",
                headers=server.headers(),
            ),
        )
        assert done.status_code in (200, 507), done.text

        # bytes with no room: a streamed one-request upload and a tus PATCH
        r = _one_request(server, seen, "late.bin", os.urandom(6 * MIB), chunked=True)
        assert r.status_code == 507
        created = _tus_create(server, seen, "deferred.bin", None)
        if created.status_code == 201:
            patch = httpx.patch(
                server.url + created.headers["location"].replace(server.url, ""),
                content=os.urandom(6 * MIB),
                headers={
                    **server.headers(),
                    "Tus-Resumable": "1.0.0",
                    "Upload-Offset": "0",
                    "Content-Type": "application/offset+octet-stream",
                },
            )
            seen.note("tus patch", patch)
            assert patch.status_code == 507

        # the earlier file is intact, and reading and cancelling still work
        assert hashlib.sha256(kept.read_bytes()).digest() == (
            hashlib.sha256(first).digest()
        )
        listed = seen.note(
            "jobs", httpx.get(f"{server.url}/api/v1/jobs", headers=server.headers())
        )
        assert listed.status_code == 200
        cancel = seen.note(
            "large cancel",
            httpx.delete(
                f"{server.url}/api/upload/large/cancel/{started[-1]['upload_id']}",
                headers=server.headers(),
            ),
        )
        assert cancel.status_code == 200, cancel.text

        # the disk fills to the last byte: what must write answers 507, not 500
        _fill(small_disk / "junk2")
        r = _tus_create(server, seen, "nothing-left.bin", None)
        assert r.status_code == 507, r.text

        # the operator frees the space the unfinished uploads hold
        env = {
            **os.environ,
            "SCLIB_DATA_DIR": str(data_dir),
            "SCLIB_SECRET_KEY": "x" * 40,
        }
        expire = subprocess.run(
            [sys.executable, "-m", "sclib", "uploads", "expire", *EXPIRE_ALL],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert expire.returncode == 0, expire.stderr
        assert "removed" in expire.stdout
        assert not [
            p for p in (data_dir / "tmp" / "uploads").iterdir() if p.is_dir()
        ] or all(
            not any(c.name == "data" for c in p.iterdir())
            for p in (data_dir / "tmp" / "uploads").iterdir()
        )
        again = _one_request(server, seen, "after.bin", os.urandom(MIB))
        assert again.status_code == 200, again.text
        assert hashlib.sha256(kept.read_bytes()).digest() == (
            hashlib.sha256(first).digest()
        )
    finally:
        server.stop()
    print("answers seen:", dict(seen.codes))  # for the closing note (pytest -s)
    assert any(status == 507 for _, status in seen.codes)
