"""The seed's upload routes and the large-file protocol, against a real server."""

from __future__ import annotations

import hashlib
import os
import socket
import time
from pathlib import Path
from typing import Any

import blake3
import httpx
import pytest

from sclib.transfers.hashing import chunk_cv
from tests import hashing_modes
from tests.server.live import LiveServer

pytestmark = pytest.mark.integration

FIELDS = {"dataset_name": "Sample", "sensor": "TIFF"}


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def file_b3(path: Path) -> str:
    return blake3.blake3(path.read_bytes()).hexdigest()


def wait_job(server: LiveServer, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{server.url}/api/upload/status/{job_id}", headers=server.headers()
        )
        r.raise_for_status()
        body: dict[str, Any] = r.json()
        if body["status"] in ("completed", "failed", "cancelled"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish: {body}")


def stored_files(server: LiveServer) -> list[Path]:
    """Every file under the data folder's dataset area."""
    return sorted(p for p in (server.data_dir / "upload").rglob("*") if p.is_file())


def all_files(server: LiveServer) -> set[Path]:
    return {p for p in server.data_dir.parent.rglob("*") if p.is_file()}


def initiate(
    server: LiveServer, data: bytes, chunk_size: int = 64 * 1024, **extra: Any
) -> dict[str, Any]:
    body = {
        "filename": "cube.raw",
        "file_size": len(data),
        "chunk_size": chunk_size,
        **FIELDS,
        **extra,
    }
    r = httpx.post(
        f"{server.url}/api/upload/large/initiate", json=body, headers=server.headers()
    )
    assert r.status_code == 200, r.text
    result: dict[str, Any] = r.json()
    return result


def send_chunk(
    server: LiveServer,
    upload_id: str,
    index: int,
    chunk: bytes,
    *,
    seed_form: bool = False,
    digest: str | None = None,
    email: str = "alice@example.org",
) -> httpx.Response:
    url = f"{server.url}/api/upload/large/chunk/{upload_id}/{index}"
    if seed_form:
        return httpx.post(
            url,
            files={"chunk": ("blob", chunk)},
            data={"chunk_hash": digest or hashlib.sha256(chunk).hexdigest()},
            headers=server.headers(email),
        )
    return httpx.post(
        url,
        content=chunk,
        headers={
            **server.headers(email),
            "Content-Type": "application/octet-stream",
            "X-Chunk-Hash": "blake3:" + (digest or b3(chunk)),
        },
    )


def test_standard_upload_lands_verified_in_the_dataset_folder(
    live_server: LiveServer,
) -> None:
    """POST /api/upload/upload streams the file into upload/<uuid>/<relative_path>/,
    answers with the seed's keys, and its job verifies the stored file."""
    data = os.urandom(300_000)
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("scan.tif", data)},
        data={
            **FIELDS,
            "relative_path": "day1/raw",
            "tags": "a, b",
            "convert": "false",
        },
        headers=live_server.headers(),
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert {"job_id", "status", "message", "estimated_duration", "upload_type"} <= set(
        body
    )
    assert body["upload_type"] == "standard"
    final = wait_job(live_server, body["job_id"])
    assert final["status"] == "completed"
    assert final["progress_percentage"] == 100.0
    assert final["bytes_total"] == len(data)
    path = live_server.data_dir / "upload" / body["dataset_uuid"] / "day1/raw/scan.tif"
    assert file_b3(path) == b3(data) == body["file_blake3"]
    assert stored_files(live_server) == [path]
    job = httpx.get(
        f"{live_server.url}/api/v1/jobs/{body['job_id']}",
        headers=live_server.headers(),
    ).json()
    assert job["parameters"]["dataset"]["tags"] == ["a", "b"]
    assert job["owner"] == "alice@example.org"
    assert job["result"]["files"][0]["blake3"] == b3(data)


def test_seed_local_upload_route_is_the_same(live_server: LiveServer) -> None:
    """/api/upload/local/upload takes the same fields and gives the same answer."""
    r = httpx.post(
        f"{live_server.url}/api/upload/local/upload",
        files={"file": ("a.nc", b"netcdf-ish")},
        data={**FIELDS, "sensor": "NETCDF", "is_public": "true"},
        headers=live_server.headers(),
    )
    assert r.status_code == 200, r.text
    assert wait_job(live_server, r.json()["job_id"])["status"] == "completed"


@pytest.mark.parametrize("seed_form", [True, False], ids=["multipart-sha256", "raw"])
def test_large_protocol_round_trip(live_server: LiveServer, seed_form: bool) -> None:
    """Chunks in any order, status and resume along the way, complete verifies the
    whole file (SHA-256 given at initiate) and is idempotent."""
    data = os.urandom(5 * 64 * 1024 + 1234)
    info = initiate(live_server, data, file_hash=hashlib.sha256(data).hexdigest())
    up, size, total = info["upload_id"], info["chunk_size"], info["total_chunks"]
    assert total == 6
    for i in (5, 0, 3, 1):
        r = send_chunk(
            live_server, up, i, data[i * size : (i + 1) * size], seed_form=seed_form
        )
        assert r.status_code == 200, r.text
    # the same chunk again is harmless
    assert send_chunk(live_server, up, 0, data[:size], seed_form=seed_form).is_success
    resume = httpx.get(
        f"{live_server.url}/api/upload/large/resume/{up}", headers=live_server.headers()
    ).json()
    assert resume["missing_chunks"] == [2, 4] and resume["can_resume"] is True
    status = httpx.get(
        f"{live_server.url}/api/upload/large/status/{up}", headers=live_server.headers()
    ).json()
    # the original's shape: the chunks that arrived, as a sorted list
    assert (status["uploaded_chunks"], status["total_chunks"]) == ([0, 1, 3, 5], 6)
    assert status["uploaded_chunk_count"] == 4
    assert status["is_complete"] is False
    assert stored_files(live_server) == []  # nothing visible before completion
    for i in (2, 4):
        assert send_chunk(
            live_server, up, i, data[i * size : (i + 1) * size]
        ).is_success
    first = httpx.post(
        f"{live_server.url}/api/upload/large/complete/{up}",
        headers=live_server.headers(),
    )
    assert first.status_code == 200, first.text
    again = httpx.post(
        f"{live_server.url}/api/upload/large/complete/{up}",
        headers=live_server.headers(),
    )
    assert again.json() == first.json()
    result = first.json()
    path = live_server.data_dir / "upload" / result["dataset_uuid"] / "cube.raw"
    assert file_b3(path) == b3(data) == result["file_blake3"]
    assert wait_job(live_server, result["job_id"])["status"] == "completed"
    assert not list((live_server.data_dir / "tmp" / "uploads").iterdir())


def test_add_to_existing_puts_a_second_file_in_the_same_dataset(
    live_server: LiveServer,
) -> None:
    """dataset_identifier + add_to_existing adds files to the caller's dataset;
    another user cannot add to it (404)."""
    first = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("one.bin", b"1" * 10)},
        data=FIELDS,
        headers=live_server.headers(),
    ).json()
    uuid = first["dataset_uuid"]
    extra = {"dataset_identifier": uuid, "add_to_existing": "true"}
    second = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("two.bin", b"2" * 10)},
        data={**FIELDS, **extra},
        headers=live_server.headers(),
    )
    assert second.status_code == 200 and second.json()["dataset_uuid"] == uuid
    other = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("three.bin", b"3" * 10)},
        data={**FIELDS, **extra},
        headers=live_server.headers("mallory@example.org"),
    )
    assert other.status_code == 404
    names = sorted(p.name for p in (live_server.data_dir / "upload" / uuid).iterdir())
    assert names == ["one.bin", "two.bin"]


# -- the bad-input matrix ----------------------------------------------------------


def _problem(r: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["code"]
    for word in words:
        assert word in body["detail"], body
    if status == 404:
        assert body["error"] == "Not found" and body["detail"].startswith("404: ")
    return body


def test_bad_chunks_are_refused_and_never_recorded(live_server: LiveServer) -> None:
    """Checksum mismatch, a chunk too long or too short, an index out of range,
    completing early, a wrong whole-file hash: each a 400, as the original
    answered (a missing hash header: 422); each leaves the chunk missing and
    nothing committed."""
    data = os.urandom(3 * 64 * 1024)
    info = initiate(live_server, data, file_hash=hashlib.sha256(b"other").hexdigest())
    up, size = info["upload_id"], info["chunk_size"]
    chunk0 = data[:size]
    _problem(send_chunk(live_server, up, 0, chunk0, digest="0" * 64), 400, "blake3")
    _problem(
        send_chunk(live_server, up, 0, chunk0, seed_form=True, digest="0" * 64),
        400,
        "sha256",
    )
    _problem(send_chunk(live_server, up, 0, chunk0 + b"x"), 400, "larger")
    _problem(send_chunk(live_server, up, 0, chunk0[:-1]), 400, "expected")
    _problem(send_chunk(live_server, up, 3, chunk0), 400, "chunk_index")
    _problem(send_chunk(live_server, up, -1, chunk0), 400)
    r = httpx.post(
        f"{live_server.url}/api/upload/large/chunk/{up}/0",
        content=chunk0,
        headers={**live_server.headers(), "Content-Type": "application/octet-stream"},
    )
    _problem(r, 400, "X-Chunk-Hash")
    resume = httpx.get(
        f"{live_server.url}/api/upload/large/resume/{up}", headers=live_server.headers()
    ).json()
    assert resume["missing_chunks"] == [0, 1, 2]
    complete = f"{live_server.url}/api/upload/large/complete/{up}"
    _problem(httpx.post(complete, headers=live_server.headers()), 400, "missing")
    for i in range(3):
        assert send_chunk(
            live_server, up, i, data[i * size : (i + 1) * size]
        ).is_success
    _problem(httpx.post(complete, headers=live_server.headers()), 400, "sha256")
    assert stored_files(live_server) == []


def test_chunks_sent_with_chaining_values(live_server: LiveServer) -> None:
    """The server offers blake3-cv chunk digests (it has sclib_blake3tree): a
    chunk's chaining value is checked where it belongs, the same bytes with the
    value of another offset are a 400, the seed's multipart form does not take
    them (400, the original's code for a bad chunk), and the completed file has
    the plain BLAKE3 of its bytes."""
    hashing_modes.require_tree()
    data = os.urandom(3 * 64 * 1024 - 5)
    info = initiate(live_server, data)
    assert info["chunk_hashes"] == ["sha256", "blake3", "blake3-cv"]
    up, size = info["upload_id"], info["chunk_size"]
    url = f"{live_server.url}/api/upload/large/chunk/{up}"

    def send(index: int, chunk: bytes, cv: bytes) -> httpx.Response:
        return httpx.post(
            f"{url}/{index}",
            content=chunk,
            headers={
                **live_server.headers(),
                "Content-Type": "application/octet-stream",
                "X-Chunk-Hash": f"blake3-cv:{cv.hex()}",
            },
        )

    chunks = [data[i * size : (i + 1) * size] for i in range(3)]
    _problem(send(1, chunks[1], chunk_cv(chunks[1], 0)), 400, "blake3-cv")
    seed = httpx.post(
        f"{url}/1",
        files={"chunk": ("blob", chunks[1])},
        data={"chunk_hash": "blake3-cv:" + chunk_cv(chunks[1], size).hex()},
        headers=live_server.headers(),
    )
    _problem(seed, 400, "chunk_hash")
    for i, chunk in enumerate(chunks):
        assert send(i, chunk, chunk_cv(chunk, i * size)).is_success
    done = httpx.post(
        f"{live_server.url}/api/upload/large/complete/{up}",
        json={"file_blake3": b3(data)},
        headers=live_server.headers(),
    )
    assert done.status_code == 200, done.text
    assert done.json()["file_blake3"] == b3(data)
    # chunks that are not whole BLAKE3 subtrees cannot have chaining values
    odd = initiate(live_server, data, chunk_size=100_000)
    assert odd["chunk_hashes"] == ["sha256", "blake3"]
    r = httpx.post(
        f"{live_server.url}/api/upload/large/chunk/{odd['upload_id']}/0",
        content=data[:100_000],
        headers={
            **live_server.headers(),
            "Content-Type": "application/octet-stream",
            "X-Chunk-Hash": "blake3-cv:" + chunk_cv(data[:1024], 0).hex(),
        },
    )
    _problem(r, 400, "chunk_hash")


def test_a_request_sent_again_with_its_idempotency_key_is_stored_once(
    live_server: LiveServer,
) -> None:
    """POST /api/upload/upload with an Idempotency-Key, sent again (its answer
    was lost): the same answer (job, dataset, upload), one stored file, one job.
    The key with another file is a 422 that stores nothing; another user's same
    key is a separate upload; a malformed key is a 422 naming the header."""
    data = os.urandom(50_000)
    url = f"{live_server.url}/api/upload/upload"

    def send(body: bytes, key: str, email: str = "alice@example.org") -> httpx.Response:
        return httpx.post(
            url,
            files={"file": ("scan.tif", body)},
            data=FIELDS,
            headers={**live_server.headers(email), "Idempotency-Key": key},
        )

    first = send(data, "attempt-1")
    assert first.status_code == 200, first.text
    again = send(data, "attempt-1")
    assert again.status_code == 200, again.text
    same = ("job_id", "dataset_uuid", "upload_id", "file_blake3", "file_size")
    assert {k: again.json()[k] for k in same} == {k: first.json()[k] for k in same}
    assert len(stored_files(live_server)) == 1
    _problem(send(os.urandom(50_000), "attempt-1"), 422, "Idempotency-Key")
    _problem(send(data, "bad key!"), 422, "Idempotency-Key")
    assert len(stored_files(live_server)) == 1
    other = send(data, "attempt-1", email="bob@example.org")
    assert other.status_code == 200, other.text
    assert other.json()["job_id"] != first.json()["job_id"]
    assert len(stored_files(live_server)) == 2
    jobs = httpx.get(
        f"{live_server.url}/api/v1/jobs", headers=live_server.headers()
    ).json()
    uploads = [j for j in jobs["jobs"] if j["job_type"] == "upload"]
    assert [j["job_id"] for j in uploads] == [first.json()["job_id"]]


def test_unknown_and_foreign_ids_are_404_with_the_seed_body(
    live_server: LiveServer,
) -> None:
    """Unknown job or upload ids, and another user's, all look the same: 404."""
    h = live_server.headers()
    for path in (
        "/api/upload/status/0123",
        "/api/upload/large/status/0123",
        "/api/upload/large/resume/0123",
        "/api/v1/jobs/0123",
    ):
        _problem(httpx.get(live_server.url + path, headers=h), 404)
    _problem(httpx.post(live_server.url + "/api/upload/cancel/0123", headers=h), 404)
    up = initiate(live_server, b"x" * 10)["upload_id"]
    job = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("f.bin", b"abc")},
        data=FIELDS,
        headers=h,
    ).json()["job_id"]
    bob = live_server.headers("bob@example.org")
    for path in (
        f"/api/upload/status/{job}",
        f"/api/v1/jobs/{job}",
        f"/api/upload/large/status/{up}",
    ):
        _problem(httpx.get(live_server.url + path, headers=bob), 404)
    _problem(send_chunk(live_server, up, 0, b"x" * 10, email="bob@example.org"), 404)
    _problem(httpx.post(f"{live_server.url}/api/upload/cancel/{job}", headers=bob), 404)
    # an admin sees it
    admin = live_server.headers("ops@example.org", admin=True)
    assert httpx.get(f"{live_server.url}/api/v1/jobs/{job}", headers=admin).is_success


@pytest.mark.parametrize(
    ("fields", "filename", "words"),
    [
        ({"sensor": "TIFF"}, "a.bin", ["dataset_name", "required"]),
        ({"dataset_name": "x"}, "a.bin", ["sensor", "required"]),
        ({**FIELDS, "sensor": "CAMERA"}, "a.bin", ["sensor", "CAMERA"]),
        ({**FIELDS, "convert": "maybe"}, "a.bin", ["convert"]),
        ({**FIELDS, "user_email": "nope"}, "a.bin", ["user_email"]),
        ({**FIELDS, "relative_path": "../../escape"}, "a.bin", ["relative_path"]),
        ({**FIELDS, "relative_path": "/etc"}, "a.bin", ["relative_path", "absolute"]),
        ({**FIELDS, "relative_path": "a\\..\\b"}, "a.bin", ["relative_path"]),
        (FIELDS, "../../escape.bin", ["filename"]),
        (FIELDS, "..", ["filename"]),
    ],
)
def test_bad_fields_are_422_naming_the_field_and_leave_nothing(
    live_server: LiveServer, fields: dict[str, str], filename: str, words: list[str]
) -> None:
    """Missing or bad fields and escaping paths: 422 naming the field; no file is
    written anywhere, staging included."""
    before = all_files(live_server)
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": (filename, b"payload" * 100)},
        data=fields,
        headers=live_server.headers(),
    )
    _problem(r, 422, *words)
    after = {p for p in all_files(live_server) - before if "sclib.db" not in p.name}
    assert not [p for p in after if not p.name.endswith(".log")]
    assert stored_files(live_server) == []
    assert not list((live_server.data_dir / "tmp" / "uploads").iterdir())


def test_large_initiate_rejects_escaping_names(live_server: LiveServer) -> None:
    """A filename with a separator, or relative_path leaving the dataset: 422."""
    for extra in (
        {"filename": "../x.bin"},
        {"filename": "a/b.bin"},
        {"relative_path": "ok/../../x"},
    ):
        body = {"filename": "x.bin", "file_size": 10, **FIELDS, **extra}
        r = httpx.post(
            f"{live_server.url}/api/upload/large/initiate",
            json=body,
            headers=live_server.headers(),
        )
        _problem(r, 422)


def test_auth_is_required_and_identity_comes_from_the_token(
    live_server: LiveServer,
) -> None:
    """No token: 401 with WWW-Authenticate. A user_email that is not the caller's:
    403, unless the token has the admin role."""
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("a.bin", b"x")},
        data=FIELDS,
    )
    _problem(r, 401)
    assert r.headers["www-authenticate"] == "Bearer"
    _problem(httpx.get(f"{live_server.url}/api/v1/jobs"), 401)
    bad = {"Authorization": "Bearer not-a-token"}
    _problem(httpx.get(f"{live_server.url}/api/v1/jobs", headers=bad), 401)
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("a.bin", b"x")},
        data={**FIELDS, "user_email": "bob@example.org"},
        headers=live_server.headers(),
    )
    _problem(r, 403, "user_email")
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("a.bin", b"x")},
        data={**FIELDS, "user_email": "bob@example.org"},
        headers=live_server.headers("ops@example.org", admin=True),
    )
    assert r.status_code == 200
    job = httpx.get(
        f"{live_server.url}/api/v1/jobs/{r.json()['job_id']}",
        headers=live_server.headers("bob@example.org"),
    )
    assert job.json()["owner"] == "bob@example.org"  # the admin acted for bob
    assert stored_files(live_server)[0].name == "a.bin"


def test_body_that_is_not_multipart_is_refused(live_server: LiveServer) -> None:
    """A JSON body on the multipart route: 422 saying what is expected."""
    r = httpx.post(
        f"{live_server.url}/api/upload/upload",
        json={"file": "x"},
        headers=live_server.headers(),
    )
    _problem(r, 422, "multipart/form-data")


def test_service_routes(live_server: LiveServer) -> None:
    """/, /health, /health/large-files, limits, sources, estimate-time answer."""
    u, h = live_server.url, live_server.headers()
    root = httpx.get(u + "/").json()
    assert root["docs"] == "/docs"
    for name, path in root["endpoints"].items():  # every listed route answers
        assert httpx.get(u + path, headers=h).status_code != 404, name
    assert httpx.get(u + "/health").json()["status"] == "healthy"
    assert httpx.get(u + "/health/large-files").json()["active_uploads"] == 0
    limits = httpx.get(u + "/api/upload/limits", headers=h).json()
    assert limits["standard_upload_limit"] == 100 * 1024**2
    large = httpx.get(u + "/api/upload/large/limits", headers=h).json()
    assert large.pop("recommended_for_files_larger_than_mb") == 100
    assert large == limits
    sources = httpx.get(u + "/api/upload/supported-sources", headers=h).json()
    assert {"local", "s3", "gcs", "google_drive", "url"} <= set(sources["sources"])
    assert "4D_NEXUS" in sources["sensors"]
    est = httpx.get(
        u + "/api/upload/estimate-time", params={"file_size": 300_000_000}, headers=h
    ).json()
    assert est["upload_type"] == "chunked"
    assert est["total_chunks"] == -(-300_000_000 // limits["chunk_size"])
    assert httpx.get(u + "/docs").status_code == 200
    assert (
        "/api/upload/large/initiate" in httpx.get(u + "/openapi.json").json()["paths"]
    )


def test_upload_jobs_list_and_cancel(live_server: LiveServer) -> None:
    """/api/upload/jobs lists the caller's upload jobs; asking for another user's
    is 403; cancelling a finished job is 404, as the original answered ("Job not
    found or already completed"), with sclib's error code."""
    h = live_server.headers()
    job = httpx.post(
        f"{live_server.url}/api/upload/upload",
        files={"file": ("a.bin", b"x")},
        data=FIELDS,
        headers=h,
    ).json()["job_id"]
    wait_job(live_server, job)
    listed = httpx.get(f"{live_server.url}/api/upload/jobs", headers=h).json()
    assert [j["job_id"] for j in listed["jobs"]] == [job]
    done = httpx.get(
        f"{live_server.url}/api/upload/jobs",
        params={"user_id": "alice@example.org", "status": "completed"},
        headers=h,
    ).json()
    assert done["count"] == 1
    r = httpx.get(
        f"{live_server.url}/api/upload/jobs",
        params={"user_id": "bob@example.org"},
        headers=h,
    )
    _problem(r, 403)
    assert (
        httpx.get(
            f"{live_server.url}/api/upload/jobs",
            headers=live_server.headers("bob@example.org"),
        ).json()["jobs"]
        == []
    )
    body = _problem(
        httpx.post(f"{live_server.url}/api/upload/cancel/{job}", headers=h), 404
    )
    assert body["code"] == "invalid_job_state"


def test_sclib_upload_one_liner(live_server: LiveServer, tmp_path: Path) -> None:
    """sclib.upload() uploads a file and sclib.upload_folder() a folder, and
    both follow the jobs to the end; a folder given to upload() is refused with
    the name of the function that takes it; a progress callback gets fractions."""
    import sclib
    from sclib.errors import InvalidInput

    single = tmp_path / "one.raw"
    single.write_bytes(os.urandom(1000))
    fractions: list[float] = []
    status = sclib.upload(
        single,
        live_server.url,
        token=live_server.token(),
        dataset_name="One",
        sensor="OTHER",
        progress=fractions.append,
    )
    assert status.status == "completed"
    assert fractions and fractions[-1] == 1.0
    started = sclib.upload(
        single,
        base_url=live_server.url,
        token=live_server.token(),
        sensor="OTHER",
        wait=False,
        progress=False,
    )
    assert started.job_id
    folder = tmp_path / "many"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.raw").write_bytes(b"a" * 10)
    (folder / "sub" / "b.raw").write_bytes(b"b" * 10)
    with pytest.raises(InvalidInput, match="upload_folder"):
        sclib.upload(folder, live_server.url, token=live_server.token())
    statuses = sclib.upload_folder(
        folder,
        live_server.url,
        token=live_server.token(),
        sensor="OTHER",
        progress=False,
    )
    assert [s.status for s in statuses] == ["completed", "completed"]


def test_a_client_gone_mid_chunk_is_no_error(live_server: LiveServer) -> None:
    """A client killed while its multipart chunk was on the wire (the original
    large-file client SIGKILLed mid-upload): the server logs no error or
    traceback, keeps nothing of that chunk, and takes it again in full."""
    data = os.urandom(3 * 64 * 1024)
    info = initiate(live_server, data)
    up = info["upload_id"]
    chunk = data[: 64 * 1024]
    boundary = "sclibtestboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="chunk_hash"\r\n\r\n'
        f"{hashlib.sha256(chunk).hexdigest()}\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="chunk"; filename="blob"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    body_length = len(head) + len(chunk) + len(f"\r\n--{boundary}--\r\n")
    request = (
        f"POST /api/upload/large/chunk/{up}/0 HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{live_server.port}\r\n"
        f"Authorization: {live_server.headers()['Authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {body_length}\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", live_server.port)) as sock:
        sock.sendall(request + head + chunk[: len(chunk) // 2])
        time.sleep(0.3)  # the server is reading the chunk when the client dies
    time.sleep(0.5)
    status = httpx.get(
        f"{live_server.url}/api/upload/large/status/{up}",
        headers=live_server.headers(),
    ).json()
    assert status["uploaded_chunks"] == []
    for i in range(3):
        piece = data[i * 64 * 1024 : (i + 1) * 64 * 1024]
        assert send_chunk(live_server, up, i, piece).status_code == 200
    assert live_server.log_path is not None
    log = live_server.log_path.read_text(errors="replace")
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
