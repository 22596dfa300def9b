"""tus 1.0.0 at ``/files/``, against a real ``sclib serve`` process on 127.0.0.1.

tuspy (the reference Python tus client) uploads, resumes and finishes uploads;
raw httpx requests and raw sockets check the protocol's corners: status codes,
checksums, deferred lengths, termination, ownership, interrupted bodies,
overlapping writers, a server SIGKILLed mid-upload, and CORS for browsers.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from blake3 import blake3
from tusclient import client as tus_client
from tusclient.request import TusRequest

from tests.server.live import LiveServer

pytestmark = pytest.mark.integration

MiB = 1024**2
MAX_UPLOAD = 32 * MiB
OCTET = "application/offset+octet-stream"
ALICE = "alice@example.org"
BOB = "bob@example.org"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One server for the protocol checks (a 32 MiB upload limit)."""
    live = LiveServer(
        tmp_path_factory.mktemp("tus") / "data",
        env={"SCLIB_MAX_UPLOAD_SIZE": str(MAX_UPLOAD)},
    ).start()
    try:
        yield live
    finally:
        live.stop()


# -- helpers ---------------------------------------------------------------------------


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def metadata(**values: str) -> str:
    return ",".join(f"{k} {b64(v)}" if v else k for k, v in values.items())


DATASET = {"dataset_name": "tus scans", "sensor": "TIFF"}


def tus_headers(live: LiveServer, email: str = ALICE, **more: str) -> dict[str, str]:
    return {**live.headers(email), "Tus-Resumable": "1.0.0", **more}


def tus(response: httpx.Response, status: int) -> httpx.Response:
    """Check the status and that the answer carries ``Tus-Resumable``."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers.get("tus-resumable") == "1.0.0", response.headers
    return response


def create(
    live: LiveServer,
    length: int | None,
    *,
    email: str = ALICE,
    filename: str = "scan.raw",
    **fields: str,
) -> str:
    """A new upload's URL."""
    headers = tus_headers(live, email)
    if length is None:
        headers["Upload-Defer-Length"] = "1"
    else:
        headers["Upload-Length"] = str(length)
    headers["Upload-Metadata"] = metadata(filename=filename, **(fields or DATASET))
    r = tus(httpx.post(live.url + "/files/", headers=headers), 201)
    location = r.headers["location"]
    assert location.startswith(live.url + "/files/")
    return location


def patch(
    live: LiveServer,
    url: str,
    offset: int,
    body: bytes,
    email: str = ALICE,
    **more: str,
) -> httpx.Response:
    headers = tus_headers(
        live, email, **{"Upload-Offset": str(offset), "Content-Type": OCTET, **more}
    )
    return httpx.patch(url, headers=headers, content=body, timeout=30)


def head(live: LiveServer, url: str, email: str = ALICE) -> httpx.Response:
    return httpx.head(url, headers=tus_headers(live, email))


def offset_of(live: LiveServer, url: str) -> int:
    r = tus(head(live, url), 200)
    return int(r.headers["upload-offset"])


def wait_for_offset(live: LiveServer, url: str, want: int, timeout: float = 5) -> None:
    deadline = time.monotonic() + timeout
    while (got := offset_of(live, url)) != want:
        assert time.monotonic() < deadline, f"offset {got}, expected {want}"
        time.sleep(0.05)


def patch_when_free(
    live: LiveServer, url: str, offset: int, body: bytes, **more: str
) -> httpx.Response:
    """PATCH, retrying while an earlier (broken-off) request still holds the lock."""
    deadline = time.monotonic() + 5
    while True:
        r = patch(live, url, offset, body, **more)
        if r.status_code != 423 or time.monotonic() > deadline:
            return r
        time.sleep(0.05)


def wait_for_job(live: LiveServer, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = httpx.get(f"{live.url}/api/upload/status/{job_id}", headers=live.headers())
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def b3(data: bytes) -> str:
    return blake3(data).hexdigest()


def stored(live: LiveServer, dataset_uuid: str, filename: str = "scan.raw") -> Path:
    return live.data_dir / "upload" / dataset_uuid / filename


def check_committed(
    live: LiveServer, response: httpx.Response, data: bytes, filename: str = "scan.raw"
) -> None:
    """The last answer names the job; the job completes; the stored file is the
    source, byte for byte (BLAKE3)."""
    job_id = response.headers["x-job-id"]
    dataset_uuid = response.headers["x-dataset-uuid"]
    assert wait_for_job(live, job_id)["status"] == "completed"
    assert b3(stored(live, dataset_uuid, filename).read_bytes()) == b3(data)


def open_patch(
    live: LiveServer, url: str, offset: int, content_length: int, **more: str
) -> socket.socket:
    """A PATCH whose headers are sent and whose body is not (yet)."""
    path = httpx.URL(url).raw_path.decode()
    headers = tus_headers(
        live,
        **{
            "Upload-Offset": str(offset),
            "Content-Type": OCTET,
            "Content-Length": str(content_length),
            **more,
        },
    )
    lines = [f"PATCH {path} HTTP/1.1", f"Host: 127.0.0.1:{live.port}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    sock = socket.create_connection(("127.0.0.1", live.port))
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    return sock


def sha1_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()  # noqa: S324


# -- tuspy -----------------------------------------------------------------------------


def test_tuspy_uploads_a_file_in_chunks(
    live_server: LiveServer, tmp_path: Path
) -> None:
    """tuspy uploads 4 MiB in 1 MiB PATCHes (with sha1 checksums); the last answer
    names the job, which completes, and the stored file has the source's BLAKE3."""
    data = os.urandom(4 * MiB + 123)
    client = tus_client.TusClient(
        live_server.url + "/files/", headers=live_server.headers()
    )
    uploader = client.uploader(
        file_stream=io.BytesIO(data),
        chunk_size=MiB,
        metadata={"filename": "scan.raw", **DATASET},
        upload_checksum=True,
    )
    uploader.upload()
    last = uploader.request
    assert last is not None
    assert int(last.response_headers["upload-offset"]) == len(data)
    job_id = last.response_headers["x-job-id"]
    dataset_uuid = last.response_headers["x-dataset-uuid"]
    assert wait_for_job(live_server, job_id)["status"] == "completed"
    assert b3(stored(live_server, dataset_uuid).read_bytes()) == b3(data)
    r = tus(head(live_server, uploader.url), 200)
    assert r.headers["x-job-id"] == job_id
    assert "upload-expires" not in r.headers  # finished uploads do not expire


def test_tuspy_resumes_with_a_new_uploader(
    server: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three chunks with one uploader, the rest with a new uploader given the same
    URL: it starts at the server's offset, so each byte is sent once."""
    sent: list[int] = []
    perform = TusRequest.perform

    def counting(self: TusRequest) -> None:
        sent.append(self._content_length)
        perform(self)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(TusRequest, "perform", counting)
    data = os.urandom(3 * MiB + 17)
    client = tus_client.TusClient(server.url + "/files/", headers=server.headers())
    first = client.uploader(
        file_stream=io.BytesIO(data),
        chunk_size=512 * 1024,
        metadata={"filename": "scan.raw", **DATASET},
    )
    for _ in range(3):
        first.upload_chunk()  # type: ignore[no-untyped-call]
    assert first.offset == 3 * 512 * 1024

    second = client.uploader(
        file_stream=io.BytesIO(data), url=first.url, chunk_size=MiB
    )
    assert second.offset == first.offset  # from HEAD
    second.upload()
    assert sum(sent) == len(data)
    assert second.request is not None
    job_id = second.request.response_headers["x-job-id"]
    dataset_uuid = second.request.response_headers["x-dataset-uuid"]
    assert wait_for_job(server, job_id)["status"] == "completed"
    assert b3(stored(server, dataset_uuid).read_bytes()) == b3(data)


# -- durability and interruptions ------------------------------------------------------


def test_resume_after_the_server_is_killed(live_server: LiveServer) -> None:
    """Half the file, SIGKILL, restart: HEAD gives the durable offset and the rest
    completes the same upload, byte for byte."""
    data = os.urandom(2 * MiB + 1)
    half = len(data) // 2
    url = create(live_server, len(data))
    assert tus(patch(live_server, url, 0, data[:half]), 204).headers[
        "upload-offset"
    ] == str(half)
    live_server.kill()
    live_server.start()
    assert offset_of(live_server, url) == half
    done = tus(patch(live_server, url, half, data[half:]), 204)
    assert done.headers["upload-offset"] == str(len(data))
    check_committed(live_server, done, data)


@pytest.fixture(params=["false", "true"], ids=["cached", "direct"])
def direct_server(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[LiveServer]:
    """``sclib serve`` with ``SCLIB_DIRECT_IO`` off (the default) and on."""
    live = LiveServer(
        tmp_path / "data", env={"SCLIB_DIRECT_IO": str(request.param)}
    ).start()
    try:
        yield live
    finally:
        live.stop()


def test_a_server_killed_mid_patch_resumes_from_its_last_checkpoint(
    direct_server: LiveServer,
) -> None:
    """One long PATCH (no checksum): the server records a durable offset every
    64 MiB while the body streams in (each flush runs beside the next writes;
    with ``SCLIB_DIRECT_IO``, up to three writes run behind the body). SIGKILLed
    mid-body, the restarted server gives at least the last recorded offset, and
    the rest completes the upload byte for byte (the job checks the BLAKE3
    merged from the pieces' chaining values against the stored file)."""
    from sclib.transfers.staging import CHECKPOINT

    live_server = direct_server

    data = os.urandom(2 * CHECKPOINT + 40 * MiB)
    url = create(live_server, len(data))
    sock = open_patch(live_server, url, 0, len(data))
    sent = 2 * CHECKPOINT + 20 * MiB
    sock.sendall(data[:sent])
    deadline = time.monotonic() + 30
    while (seen := offset_of(live_server, url)) < 2 * CHECKPOINT:
        assert time.monotonic() < deadline, f"offset {seen} after {sent} bytes"
        time.sleep(0.05)
    live_server.kill()
    sock.close()
    live_server.start()
    offset = offset_of(live_server, url)
    assert 2 * CHECKPOINT <= offset <= sent
    done = tus(patch_when_free(live_server, url, offset, data[offset:]), 204)
    check_committed(live_server, done, data)


def test_a_body_that_breaks_off_keeps_what_arrived(server: LiveServer) -> None:
    """A PATCH whose client goes away mid-body (no checksum) keeps the bytes that
    arrived; the lock is released and the upload finishes from there."""
    data = os.urandom(MiB)
    part = 300 * 1024
    url = create(server, len(data))
    sock = open_patch(server, url, 0, len(data))
    sock.sendall(data[:part])
    time.sleep(0.3)  # let the server read them
    sock.close()
    wait_for_offset(server, url, part)
    done = tus(patch_when_free(server, url, part, data[part:]), 204)
    check_committed(server, done, data)


def test_a_broken_off_body_with_a_checksum_keeps_nothing(server: LiveServer) -> None:
    """With Upload-Checksum the bytes of a broken-off body cannot be checked, so
    none are kept: the offset stays where it was."""
    data = os.urandom(MiB)
    url = create(server, len(data))
    sock = open_patch(
        server, url, 0, len(data), **{"Upload-Checksum": "sha1 " + sha1_b64(data)}
    )
    sock.sendall(data[: 300 * 1024])
    time.sleep(0.3)
    sock.close()
    r = tus(patch_when_free(server, url, 0, data[:10]), 204)  # lock released
    assert r.headers["upload-offset"] == "10"


def test_overlapping_patches_get_423(server: LiveServer) -> None:
    """While one PATCH is writing, a second one on the same upload is refused with
    423 (and Retry-After); the data stays correct."""
    data = os.urandom(MiB)
    part = 200 * 1024
    url = create(server, len(data))
    sock = open_patch(server, url, 0, len(data))
    try:
        sock.sendall(data[:part])
        time.sleep(0.2)
        r = tus(patch(server, url, 0, data), 423)
        assert r.headers["retry-after"] == "1"
        assert r.json()["code"] == "upload_busy"
    finally:
        time.sleep(0.2)
        sock.close()
    wait_for_offset(server, url, part)
    done = tus(patch_when_free(server, url, part, data[part:]), 204)
    check_committed(server, done, data)


# -- the protocol ----------------------------------------------------------------------


def test_options_needs_no_token(server: LiveServer) -> None:
    """OPTIONS (no token, no Tus-Resumable) is 204 with what the server supports."""
    for path in ("/files/", "/files/anything"):
        r = httpx.options(server.url + path)
        assert r.status_code == 204
        assert r.headers["tus-version"] == "1.0.0"
        extensions = r.headers["tus-extension"].split(",")
        for name in ("creation", "creation-with-upload", "creation-defer-length"):
            assert name in extensions
        for name in ("termination", "expiration", "checksum"):
            assert name in extensions
        assert r.headers["tus-max-size"] == str(MAX_UPLOAD)
        assert {"sha1", "sha256", "md5"} <= set(
            r.headers["tus-checksum-algorithm"].split(",")
        )


def test_tus_resumable_is_required(server: LiveServer) -> None:
    """A request without Tus-Resumable: 1.0.0 is 412 with Tus-Version, before auth."""
    url = create(server, 10)
    r = tus(httpx.head(url, headers=server.headers()), 412)
    assert r.headers["tus-version"] == "1.0.0"
    r = tus(
        httpx.post(
            server.url + "/files/",
            headers={"Tus-Resumable": "0.2.2", "Upload-Length": "1"},
        ),
        412,
    )
    assert r.headers["tus-version"] == "1.0.0"
    assert r.json()["code"] == "unsupported_tus_version"


def test_no_token_is_401(server: LiveServer) -> None:
    """Without a bearer token every tus request but OPTIONS is 401."""
    url = create(server, 10)
    bare = {"Tus-Resumable": "1.0.0"}
    tus(httpx.post(server.url + "/files/", headers={**bare, "Upload-Length": "1"}), 401)
    tus(httpx.head(url, headers=bare), 401)
    r = httpx.patch(
        url, headers={**bare, "Upload-Offset": "0", "Content-Type": OCTET}, content=b"x"
    )
    tus(r, 401)
    tus(httpx.delete(url, headers=bare), 401)


def test_creation_head_and_expiry(server: LiveServer) -> None:
    """POST answers 201 with an absolute Location, Upload-Offset 0, Upload-Expires
    in the future and the dataset uuid; HEAD echoes length and metadata, no-store."""
    meta = metadata(filename="scan.raw", filetype="image/tiff", flag="", **DATASET)
    r = tus(
        httpx.post(
            server.url + "/files/",
            headers=tus_headers(
                server, **{"Upload-Length": "100", "Upload-Metadata": meta}
            ),
        ),
        201,
    )
    assert r.headers["upload-offset"] == "0"
    assert len(r.headers["x-dataset-uuid"]) == 32
    expires = parsedate_to_datetime(r.headers["upload-expires"])
    assert expires > datetime.now(UTC)
    h = tus(head(server, r.headers["location"]), 200)
    assert h.headers["upload-offset"] == "0"
    assert h.headers["upload-length"] == "100"
    assert h.headers["upload-metadata"] == meta
    assert h.headers["cache-control"] == "no-store"
    assert "upload-expires" in h.headers
    assert "x-job-id" not in h.headers


def test_wrong_offset_is_409(server: LiveServer) -> None:
    """A PATCH at another offset than the upload's is 409 and changes nothing."""
    url = create(server, 20)
    tus(patch(server, url, 0, b"0123456789"), 204)
    r = tus(patch(server, url, 5, b"abcde"), 409)
    assert r.json()["code"] == "upload_conflict"
    assert offset_of(server, url) == 10


def test_wrong_content_type_is_415(server: LiveServer) -> None:
    """A PATCH body must be application/offset+octet-stream."""
    url = create(server, 10)
    r = tus(
        patch(server, url, 0, b"0123456789", **{"Content-Type": "application/json"}),
        415,
    )
    assert r.headers["content-type"] == "application/problem+json"
    assert offset_of(server, url) == 0


def test_checksums(server: LiveServer) -> None:
    """A matching sha1/sha256/md5 checksum is 204; a mismatch is 460 and the offset
    stays; an unsupported algorithm or a malformed digest is 400."""
    data = os.urandom(3000)
    url = create(server, len(data))
    bad = "sha1 " + sha1_b64(b"something else")
    r = tus(patch(server, url, 0, data[:1000], **{"Upload-Checksum": bad}), 460)
    assert r.json()["code"] == "checksum_mismatch"
    assert offset_of(server, url) == 0
    good = "sha1 " + sha1_b64(data[:1000])
    assert (
        tus(
            patch(server, url, 0, data[:1000], **{"Upload-Checksum": good}), 204
        ).headers["upload-offset"]
        == "1000"
    )
    sha256 = base64.b64encode(hashlib.sha256(data[1000:2000]).digest()).decode()
    tus(
        patch(
            server,
            url,
            1000,
            data[1000:2000],
            **{"Upload-Checksum": "sha256 " + sha256},
        ),
        204,
    )
    for header in (
        "crc32 AAAAAA==",
        "sha1 not-base64!",
        "sha1 " + b64("short"),
        "sha1",
    ):
        tus(patch(server, url, 2000, data[2000:], **{"Upload-Checksum": header}), 400)
    assert offset_of(server, url) == 2000
    md5 = base64.b64encode(hashlib.md5(data[2000:]).digest()).decode()  # noqa: S324
    done = tus(
        patch(server, url, 2000, data[2000:], **{"Upload-Checksum": "md5 " + md5}), 204
    )
    check_committed(server, done, data)


def test_a_body_longer_than_the_upload_is_refused(server: LiveServer) -> None:
    """Bytes past Upload-Length are 413, with or without Content-Length, and
    nothing is kept or committed."""
    url = create(server, 100)
    tus(patch(server, url, 0, b"x" * 101), 413)

    def chunked() -> Iterator[bytes]:
        yield b"y" * 60
        yield b"y" * 60

    headers = tus_headers(server, **{"Upload-Offset": "0", "Content-Type": OCTET})
    tus(httpx.patch(url, headers=headers, content=chunked()), 413)
    h = tus(head(server, url), 200)
    assert h.headers["upload-offset"] == "0"
    assert not stored(server, h.headers["x-dataset-uuid"]).exists()


def test_upload_length_above_the_limit_is_413(server: LiveServer) -> None:
    """Upload-Length above SCLIB_MAX_UPLOAD_SIZE is refused at creation."""
    headers = tus_headers(
        server,
        **{
            "Upload-Length": str(MAX_UPLOAD + 1),
            "Upload-Metadata": metadata(filename="big", **DATASET),
        },
    )
    r = tus(httpx.post(server.url + "/files/", headers=headers), 413)
    assert r.json()["code"] == "too_large"


def test_creation_needs_a_length(server: LiveServer) -> None:
    """Neither or both of Upload-Length and Upload-Defer-Length is 400, as are
    malformed lengths and metadata."""
    meta = metadata(filename="a", **DATASET)
    post = server.url + "/files/"
    for extra in (
        {},
        {"Upload-Length": "10", "Upload-Defer-Length": "1"},
        {"Upload-Defer-Length": "2"},
        {"Upload-Length": "-1"},
        {"Upload-Length": "ten"},
    ):
        headers = tus_headers(server, **{"Upload-Metadata": meta, **extra})
        tus(httpx.post(post, headers=headers), 400)
    for bad_meta in (
        "filename",
        "filename !!!",
        "filename YQ== extra",
        "filename YQ==,filename YQ==",
    ):
        headers = tus_headers(
            server, **{"Upload-Length": "1", "Upload-Metadata": bad_meta}
        )
        r = httpx.post(post, headers=headers)
        assert r.status_code in (400, 422), r.text  # "filename" alone: empty name


def test_defer_length(server: LiveServer) -> None:
    """Upload-Defer-Length: 1 at creation; the length comes with a later PATCH,
    and the upload completes when the offset reaches it."""
    data = os.urandom(5000)
    url = create(server, None)
    h = tus(head(server, url), 200)
    assert h.headers["upload-defer-length"] == "1"
    assert "upload-length" not in h.headers
    tus(patch(server, url, 0, data[:2000]), 204)
    r = tus(patch(server, url, 2000, data[2000:3000], **{"Upload-Length": "1000"}), 409)
    assert "below" in r.json()["detail"]
    done = tus(
        patch(server, url, 2000, data[2000:], **{"Upload-Length": str(len(data))}), 204
    )
    check_committed(server, done, data)
    assert tus(head(server, url), 200).headers["upload-length"] == str(len(data))


def test_creation_with_upload(server: LiveServer) -> None:
    """A POST with a body writes it from offset 0; the whole file in the POST
    completes the upload at once. An empty file completes on creation."""
    data = os.urandom(4000)
    headers = tus_headers(
        server,
        **{
            "Upload-Length": str(len(data)),
            "Upload-Metadata": metadata(filename="scan.raw", **DATASET),
            "Content-Type": OCTET,
        },
    )
    part = tus(
        httpx.post(server.url + "/files/", headers=headers, content=data[:1000]), 201
    )
    assert part.headers["upload-offset"] == "1000"
    url = part.headers["location"]
    check_committed(server, tus(patch(server, url, 1000, data[1000:]), 204), data)

    whole = tus(httpx.post(server.url + "/files/", headers=headers, content=data), 201)
    assert whole.headers["upload-offset"] == str(len(data))
    check_committed(server, whole, data)

    empty = tus_headers(
        server,
        **{
            "Upload-Length": "0",
            "Upload-Metadata": metadata(filename="empty.raw", **DATASET),
        },
    )
    r = tus(httpx.post(server.url + "/files/", headers=empty), 201)
    check_committed(server, r, b"", "empty.raw")

    wrong = {**headers, "Content-Type": "text/plain"}
    tus(httpx.post(server.url + "/files/", headers=wrong, content=data), 415)


def test_completed_upload(server: LiveServer) -> None:
    """Once complete, HEAD names the job; more PATCHes and DELETE are 409."""
    url = create(server, 4)
    done = tus(patch(server, url, 0, b"abcd"), 204)
    h = tus(head(server, url), 200)
    assert h.headers["x-job-id"] == done.headers["x-job-id"]
    assert h.headers["upload-offset"] == "4"
    tus(patch(server, url, 4, b""), 409)
    tus(httpx.delete(url, headers=tus_headers(server)), 409)


def test_termination(server: LiveServer) -> None:
    """DELETE is 204 and removes the bytes; afterwards the upload is 404."""
    url = create(server, 100)
    tus(patch(server, url, 0, b"x" * 50), 204)
    upload_id = url.rsplit("/", 1)[1]
    staging = server.data_dir / "tmp" / "uploads" / upload_id
    assert staging.exists()
    tus(httpx.delete(url, headers=tus_headers(server)), 204)
    assert not staging.exists()
    tus(head(server, url), 404)
    tus(patch(server, url, 50, b"x" * 50), 404)
    tus(httpx.delete(url, headers=tus_headers(server)), 404)


def test_other_users_uploads_are_404(server: LiveServer) -> None:
    """Bob cannot see, write or terminate Alice's upload; an admin can see it."""
    url = create(server, 10)
    tus(head(server, url, BOB), 404)
    tus(patch(server, url, 0, b"0123456789", BOB), 404)
    tus(httpx.delete(url, headers=tus_headers(server, BOB)), 404)
    admin = {**server.headers("root@example.org", admin=True), "Tus-Resumable": "1.0.0"}
    assert httpx.head(url, headers=admin).status_code == 200
    assert offset_of(server, url) == 0
    tus(head(server, server.url + "/files/0123456789abcdef"), 404)


@pytest.mark.parametrize(
    "name", ["../evil.txt", "a/b.txt", "/etc/passwd", "..", "a\\b"]
)
def test_unsafe_filenames_are_422(server: LiveServer, name: str) -> None:
    """A filename that is a path is refused at creation; nothing is written outside
    the data folder."""
    headers = tus_headers(
        server,
        **{"Upload-Length": "4", "Upload-Metadata": metadata(filename=name, **DATASET)},
    )
    r = tus(httpx.post(server.url + "/files/", headers=headers), 422)
    assert "filename" in r.json()["detail"]
    assert not (server.data_dir / "evil.txt").exists()
    assert not (server.data_dir.parent / "evil.txt").exists()
    assert not (server.data_dir / "upload" / "evil.txt").exists()


def test_dataset_fields_are_validated(server: LiveServer) -> None:
    """Dataset fields in Upload-Metadata go through the seed routes' checks: a
    missing or unknown sensor, or a missing filename, is 422 naming the field;
    acting for another user is 403."""
    post = server.url + "/files/"

    def attempt(meta: str) -> httpx.Response:
        headers = tus_headers(server, **{"Upload-Length": "4", "Upload-Metadata": meta})
        return httpx.post(post, headers=headers)

    r = tus(attempt(metadata(filename="a.raw", dataset_name="d")), 422)
    assert "sensor" in r.json()["detail"]
    r = tus(attempt(metadata(filename="a.raw", dataset_name="d", sensor="CAMERA")), 422)
    assert "sensor" in r.json()["detail"]
    r = tus(attempt(metadata(**DATASET)), 422)
    assert "filename" in r.json()["detail"]
    r = tus(attempt(metadata(filename="a.raw", **DATASET, convert="maybe")), 422)
    assert "convert" in r.json()["detail"]
    tus(attempt(metadata(filename="a.raw", **DATASET, user_email=BOB)), 403)
    fields = {**DATASET, "tags": "a,b", "relative_path": "run1/raw", "convert": "false"}
    url = create(server, 3, filename="x.raw", **fields)
    done = tus(patch(server, url, 0, b"abc"), 204)
    job_id = done.headers["x-job-id"]
    assert wait_for_job(server, job_id)["status"] == "completed"
    path = stored(server, done.headers["x-dataset-uuid"], "run1/raw/x.raw")
    assert path.read_bytes() == b"abc"


def test_method_override(server: LiveServer) -> None:
    """POST with X-HTTP-Method-Override: PATCH writes, DELETE terminates."""
    url = create(server, 10)
    headers = tus_headers(
        server,
        **{
            "X-HTTP-Method-Override": "PATCH",
            "Upload-Offset": "0",
            "Content-Type": OCTET,
        },
    )
    r = tus(httpx.post(url, headers=headers, content=b"01234"), 204)
    assert r.headers["upload-offset"] == "5"
    override = tus_headers(server, **{"X-HTTP-Method-Override": "DELETE"})
    tus(httpx.post(url, headers=override), 204)
    tus(head(server, url), 404)
    tus(
        httpx.post(
            url, headers=tus_headers(server, **{"X-HTTP-Method-Override": "GET"})
        ),
        400,
    )


def test_cors_for_browsers(tmp_path: Path) -> None:
    """With SCLIB_CORS_ORIGINS, a preflight from that origin is allowed and the
    answers expose the tus headers (Location, Upload-Offset, X-Job-Id)."""
    origin = "http://example.test"
    live = LiveServer(tmp_path / "data", env={"SCLIB_CORS_ORIGINS": origin}).start()
    try:
        r = httpx.options(
            live.url + "/files/",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": (
                    "authorization,tus-resumable,upload-length,upload-metadata"
                ),
            },
        )
        assert r.status_code == 200, r.text
        assert r.headers["access-control-allow-origin"] == origin
        assert "POST" in r.headers["access-control-allow-methods"]
        assert "PATCH" in r.headers["access-control-allow-methods"]
        headers = tus_headers(
            live,
            **{
                "Origin": origin,
                "Upload-Length": "1",
                "Upload-Metadata": metadata(filename="a", **DATASET),
            },
        )
        r = tus(httpx.post(live.url + "/files/", headers=headers), 201)
        assert r.headers["access-control-allow-origin"] == origin
        exposed = {
            h.strip().lower()
            for h in r.headers["access-control-expose-headers"].split(",")
        }
        assert {
            "location",
            "upload-offset",
            "upload-length",
            "tus-resumable",
        } <= exposed
        assert {"x-job-id", "x-dataset-uuid", "upload-expires"} <= exposed
        r = httpx.options(
            live.url + "/files/",
            headers={
                "Origin": "http://evil.test",
                "Access-Control-Request-Method": "POST",
            },
        )
        assert r.status_code == 400
    finally:
        live.stop()


# -- concatenation ---------------------------------------------------------------------


def create_partial(live: LiveServer, data: bytes, email: str = ALICE) -> str:
    """A partial upload holding ``data`` (no dataset fields: the final names them)."""
    headers = tus_headers(
        live,
        email,
        **{
            "Upload-Length": str(len(data)),
            "Upload-Concat": "partial",
            "Content-Type": OCTET,
        },
    )
    r = tus(httpx.post(live.url + "/files/", headers=headers, content=data), 201)
    assert r.headers["upload-offset"] == str(len(data))
    assert "x-job-id" not in r.headers  # a part is never committed on its own
    return str(r.headers["location"])


def create_final(
    live: LiveServer, parts: list[str], filename: str, email: str = ALICE
) -> httpx.Response:
    headers = tus_headers(
        live,
        email,
        **{
            "Upload-Concat": "final;" + " ".join(parts),
            "Upload-Metadata": metadata(filename=filename, **DATASET),
        },
    )
    return httpx.post(live.url + "/files/", headers=headers, timeout=30)


def test_concatenation_joins_parallel_parts(server: LiveServer) -> None:
    """Three partial uploads (one sent in two PATCHes) joined by a final upload
    become one file in the dataset, in the order the final names them, verified
    and handed to an upload job; HEAD reports Upload-Concat on both kinds; the
    parts' bytes are gone afterwards and a final naming them again is 409."""
    options = tus(httpx.options(server.url + "/files/"), 204)
    assert "concatenation" in options.headers["tus-extension"].split(",")
    pieces = [os.urandom(300_000), os.urandom(5), os.urandom(123_457)]
    urls = [create_partial(server, pieces[0]), create_partial(server, pieces[1])]
    headers = tus_headers(
        server, **{"Upload-Length": str(len(pieces[2])), "Upload-Concat": "partial"}
    )
    third = tus(httpx.post(server.url + "/files/", headers=headers), 201)
    url = third.headers["location"]
    tus(patch(server, url, 0, pieces[2][:1000]), 204)
    assert tus(head(server, url), 200).headers["upload-concat"] == "partial"
    tus(patch(server, url, 1000, pieces[2][1000:]), 204)
    urls.append(url)
    order = [urls[2], urls[0], urls[1]]  # absolute URLs and paths both work
    named = [order[0], httpx.URL(order[1]).path, order[2]]
    final = tus(create_final(server, named, "joined.raw"), 201)
    data = pieces[2] + pieces[0] + pieces[1]
    assert final.headers["upload-offset"] == str(len(data))
    check_committed(server, final, data, "joined.raw")
    h = tus(head(server, final.headers["location"]), 200)
    assert h.headers["upload-length"] == str(len(data))
    paths = [httpx.URL(u).path for u in order]
    assert h.headers["upload-concat"] == "final;" + " ".join(paths)
    for u in urls:
        upload_id = u.rsplit("/", 1)[1]
        assert not (server.data_dir / "tmp" / "uploads" / upload_id).exists()
    again = tus(create_final(server, urls, "again.raw"), 409)
    assert "already concatenated" in again.json()["detail"]
    forbidden = tus(patch(server, final.headers["location"], len(data), b"x"), 403)
    assert forbidden.json()["code"] == "upload_conflict"  # not an auth problem


def test_concatenation_refuses_bad_requests_and_keeps_the_parts(
    server: LiveServer,
) -> None:
    """An unfinished part (this server does not offer concatenation-unfinished),
    another user's part, a plain upload, a body or an Upload-Length on the final,
    and a malformed header are refused with a message; no final upload is left
    and the parts can still be joined afterwards."""
    done = create_partial(server, b"0123456789")
    headers = tus_headers(
        server, **{"Upload-Length": "100", "Upload-Concat": "partial"}
    )
    unfinished = tus(httpx.post(server.url + "/files/", headers=headers), 201)
    r = tus(create_final(server, [done, unfinished.headers["location"]], "x.raw"), 409)
    assert "not complete" in r.json()["detail"]
    bobs = create_partial(server, b"bob's bytes", BOB)
    tus(create_final(server, [done, bobs], "x.raw"), 404)
    plain = create(server, 4)
    r = tus(create_final(server, [done, plain], "x.raw"), 422)
    assert "not a partial upload" in r.json()["detail"]
    tus(create_final(server, [done, done], "x.raw"), 422)
    tus(create_final(server, ["http://elsewhere.example/x/y"], "x.raw"), 400)
    with_length = tus_headers(
        server,
        **{
            "Upload-Concat": f"final;{done}",
            "Upload-Length": "10",
            "Upload-Metadata": metadata(filename="x.raw", **DATASET),
        },
    )
    tus(httpx.post(server.url + "/files/", headers=with_length), 400)
    tus(
        httpx.post(
            server.url + "/files/",
            headers=tus_headers(server, **{"Upload-Concat": "sideways"}),
        ),
        400,
    )
    before = set((server.data_dir / "tmp" / "uploads").iterdir())
    joined = tus(create_final(server, [done], "ten.raw"), 201)
    check_committed(server, joined, b"0123456789", "ten.raw")
    after = set((server.data_dir / "tmp" / "uploads").iterdir())
    assert after <= before  # nothing left behind by the refused finals


def test_an_admin_joins_only_the_users_parts_or_their_own(server: LiveServer) -> None:
    """An admin creating a final upload for Alice (``user_email`` in the metadata)
    may join Alice's parts and the admin's own into Alice's dataset, but never
    Bob's: Bob's part is 404 and keeps its bytes."""
    root = "root@example.org"
    admin = {**server.headers(root, admin=True), "Tus-Resumable": "1.0.0"}
    alices = create_partial(server, b"alice-")
    roots = tus(
        httpx.post(
            server.url + "/files/",
            headers={
                **admin,
                "Upload-Length": "5",
                "Upload-Concat": "partial",
                "Content-Type": OCTET,
            },
            content=b"root!",
        ),
        201,
    ).headers["location"]
    bobs = create_partial(server, b"bob's", BOB)

    def final(parts: list[str], name: str) -> httpx.Response:
        meta = metadata(filename=name, user_email=ALICE, **DATASET)
        headers = {
            **admin,
            "Upload-Concat": "final;" + " ".join(parts),
            "Upload-Metadata": meta,
        }
        return httpx.post(server.url + "/files/", headers=headers, timeout=30)

    tus(final([alices, bobs], "stolen.raw"), 404)
    bob_id = bobs.rsplit("/", 1)[1]
    assert (server.data_dir / "tmp" / "uploads" / bob_id / "data").exists()
    assert tus(head(server, bobs, BOB), 200).headers["upload-offset"] == "5"
    joined = tus(final([alices, roots], "joined.raw"), 201)
    check_committed(server, joined, b"alice-root!", "joined.raw")
    job = httpx.get(
        f"{server.url}/api/v1/jobs/{joined.headers['x-job-id']}",
        headers=server.headers(ALICE),
    )
    assert job.status_code == 200 and job.json()["owner"] == ALICE


def test_concatenation_urls_may_carry_a_query_or_trailing_slash_and_parts_may_be_empty(
    server: LiveServer,
) -> None:
    """Part URLs as clients send them: with a query string, a fragment or a
    trailing slash; zero-length parts are complete at once and join (an all-empty
    final is an empty file); Upload-Metadata on a partial upload is kept and
    echoed by HEAD."""
    a = create_partial(server, b"first|")
    b = create_partial(server, b"")
    headers = tus_headers(
        server,
        **{
            "Upload-Length": "6",
            "Upload-Concat": "partial",
            "Content-Type": OCTET,
            "Upload-Metadata": metadata(filename="piece.bin"),
        },
    )
    c = tus(httpx.post(server.url + "/files/", headers=headers, content=b"second"), 201)
    c_url = c.headers["location"]
    assert tus(head(server, c_url), 200).headers["upload-metadata"] == metadata(
        filename="piece.bin"
    )
    named = [a + "?token=x", httpx.URL(b).path + "/", c_url + "#part"]
    joined = tus(create_final(server, named, "parts.raw"), 201)
    check_committed(server, joined, b"first|second", "parts.raw")
    empty = tus(create_final(server, [create_partial(server, b"")], "none.raw"), 201)
    check_committed(server, empty, b"", "none.raw")
