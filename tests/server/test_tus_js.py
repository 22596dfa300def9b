"""The real tus-js-client (Node.js) against a real ``sclib serve`` process.

The server reads tus ``PATCH`` bodies straight from the socket (the data plane,
``sclib/server/dataplane.py``); these tests prove the JavaScript reference client
still uploads through it: in one go over kept-alive connections, resumed by a
second ``Upload`` from the server's offset, and in three parallel partial uploads
joined by a final upload (the concatenation extension). Each stored file is the
source, byte for byte (BLAKE3), and each upload job completes.

``tests/server/js/tus_upload.mjs`` does the uploading and prints a JSON line with
the upload URL, the last answer's ``X-Job-Id`` and ``X-Dataset-Uuid``, and every
request it made. The client is pinned in ``tests/server/js/package-lock.json``;
install it with ``npm ci --prefix tests/server/js``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from blake3 import blake3

from tests.server.live import LiveServer

JS_DIR = Path(__file__).parent / "js"
SCRIPT = JS_DIR / "tus_upload.mjs"
NODE = shutil.which("node")

if NODE is None:
    _MISSING: str | None = "node (Node.js) is not installed"
elif not (JS_DIR / "node_modules" / "tus-js-client").is_dir():
    _MISSING = "tus-js-client is not installed: run npm ci --prefix tests/server/js"
else:
    _MISSING = None
if _MISSING is not None and os.environ.get("CI_REQUIRE_TUS_JS") == "1":
    # .ci/run installs it: in CI a missing client fails, it never skips
    raise RuntimeError(f"CI_REQUIRE_TUS_JS=1 but {_MISSING}")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(_MISSING is not None, reason=_MISSING or ""),
]

KiB = 1024
MiB = 1024**2
SIZE = 5 * MiB + 123_457  # six PATCHes of 1 MiB, the last one short
ALICE = "alice@example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    live = LiveServer(tmp_path_factory.mktemp("tus-js") / "data").start()
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(autouse=True)
def no_tracebacks(server: LiveServer) -> Iterator[None]:
    """Whatever a test does, the server logs no traceback meanwhile."""
    assert server.log_path is not None
    start = server.log_path.stat().st_size
    yield
    with open(server.log_path, "rb") as f:
        f.seek(start)
        logged = f.read().decode(errors="replace")
    assert "Traceback" not in logged, logged


# -- helpers ---------------------------------------------------------------------------


def source(tmp_path: Path, name: str, size: int = SIZE) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / name
    path.write_bytes(data)
    return path, data


def upload(
    live: LiveServer,
    path: Path,
    mode: str,
    *,
    chunk_size: int = MiB,
    input_kind: str = "stream",
) -> dict[str, Any]:
    """Run ``tus_upload.mjs``; its JSON report (the server log if it fails)."""
    assert NODE is not None
    cmd = [
        NODE,
        str(SCRIPT),
        live.url + "/files/",
        live.token(ALICE),
        str(path),
        str(chunk_size),
        mode,
        input_kind,
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, (
        f"tus-js-client failed ({done.returncode}):\n{done.stderr}\n"
        f"server log:\n{live.log()}"
    )
    report: dict[str, Any] = json.loads(done.stdout)
    return report


def requests_of(
    report: dict[str, Any], method: str, **match: Any
) -> list[dict[str, Any]]:
    return [
        r
        for r in report["requests"]
        if r["method"] == method and all(r[k] == v for k, v in match.items())
    ]


def wait_for_job(live: LiveServer, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(
            f"{live.url}/api/upload/status/{job_id}", headers=live.headers(ALICE)
        )
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def check_committed(
    live: LiveServer, report: dict[str, Any], path: Path, data: bytes
) -> None:
    """The last answer named the job and the dataset; the job completes; the stored
    file is the source, byte for byte; HEAD on the upload names the same job."""
    assert report["offset"] == report["size"] == len(data), report
    job_id, dataset_uuid = report["jobId"], report["datasetUuid"]
    assert job_id and dataset_uuid, report
    assert wait_for_job(live, job_id)["status"] == "completed"
    stored = live.data_dir / "upload" / dataset_uuid / path.name
    assert blake3(stored.read_bytes()).hexdigest() == blake3(data).hexdigest()
    head = httpx.head(
        report["url"], headers={**live.headers(ALICE), "Tus-Resumable": "1.0.0"}
    )
    assert head.status_code == 200, head.headers
    assert head.headers["upload-offset"] == str(len(data))
    assert head.headers["x-job-id"] == job_id


# -- tests -----------------------------------------------------------------------------


@pytest.mark.parametrize("input_", ["stream", "buffer"])
def test_plain_upload_in_1_mib_chunks(
    server: LiveServer, tmp_path: Path, input_: str
) -> None:
    """One POST, then 1 MiB PATCHes one after the other (from an fs.ReadStream or a
    Buffer), each answered 204 with the next offset; every byte is sent once."""
    path, data = source(tmp_path, f"plain-{input_}.raw")
    report = upload(server, path, "plain", input_kind=input_)
    assert [r["method"] for r in report["requests"]] == ["POST"] + ["PATCH"] * 6
    offsets = [0, *range(MiB, SIZE, MiB), SIZE]
    for r, start, end in zip(
        requests_of(report, "PATCH"), offsets[:-1], offsets[1:], strict=True
    ):
        assert (r["status"], r["uploadOffset"], r["responseOffset"]) == (
            204,
            str(start),
            str(end),
        )
    assert report["bytesSent"] == SIZE
    assert report["status"] == 204
    check_committed(server, report, path, data)


def test_resume_continues_from_the_servers_offset(
    server: LiveServer, tmp_path: Path
) -> None:
    """The first Upload stops after one 1 MiB PATCH; a second Upload finds it in
    its URL storage, HEADs it, gets offset 1 MiB and sends only the rest."""
    path, data = source(tmp_path, "resumed.raw")
    report = upload(server, path, "resume")
    first = [r for r in report["requests"] if r["upload"] == "first"]
    assert [(r["method"], r["status"]) for r in first] == [
        ("POST", 201),
        ("PATCH", 204),
    ]
    assert report["previousUrl"] == report["firstUrl"] == report["url"]
    second = [r for r in report["requests"] if r["upload"] == "second"]
    assert second[0]["method"] == "HEAD" and second[0]["status"] == 200
    assert report["headOffset"] == report["resumedAt"] == MiB
    assert not requests_of(report, "POST", upload="second")  # no new upload
    patches = requests_of(report, "PATCH", upload="second")
    assert len(patches) == math.ceil((SIZE - MiB) / MiB)
    assert report["bytesSent"] == SIZE  # each byte once over both Uploads
    check_committed(server, report, path, data)


def test_parallel_uploads_are_concatenated(server: LiveServer, tmp_path: Path) -> None:
    """parallelUploads: 3 makes three partial uploads (POSTs and PATCHes carrying
    ``Upload-Concat: partial``, sent at the same time) and one final upload naming
    them in order; the final's 201 names the job, and the file is whole."""
    path, data = source(tmp_path, "joined.raw")
    report = upload(server, path, "parallel")
    parts = requests_of(report, "POST", uploadConcat="partial")
    assert len(parts) == 3
    assert all(r["status"] == 201 for r in parts)
    patches = requests_of(report, "PATCH")
    assert patches
    assert all(r["status"] == 204 for r in patches)
    assert report["bytesSent"] == SIZE
    finals = [
        r
        for r in requests_of(report, "POST")
        if (r["uploadConcat"] or "").startswith("final;")
    ]
    assert len(finals) == 1
    assert finals[0]["status"] == 201
    assert len(finals[0]["uploadConcat"].removeprefix("final;").split()) == 3
    assert report["status"] == 201
    check_committed(server, report, path, data)
